"""Test configuration shared by the unit tests and the notebooks (nbval kernels inherit os.environ).

Every test session runs in a fresh temporary MTK_HOME: datasets, checkpoints and smoke figures are
generated inside it and removed at the end, so a fresh clone and a rerun behave the same and nothing
left in the checkout's data/ or runs/ can make a test pass. (To keep that folder between local runs,
trading isolation for speed, set MTK_TEST_HOME to a folder of your own; CI never does.)
"""
import os
import shutil
import tempfile

os.environ.setdefault("MTK_SMOKE", "1")          # every notebook runs its small CI configuration
os.environ.setdefault("HF_HUB_OFFLINE", "1")     # no 30 s hub lookups: the machines have no hub access
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

_TEMP_HOME = None


def pytest_configure(config):
    global _TEMP_HOME
    keep = os.environ.get("MTK_TEST_HOME")
    if keep:
        os.environ["MTK_HOME"] = keep
    else:
        _TEMP_HOME = tempfile.mkdtemp(prefix="mtk-test-home-")
        os.environ["MTK_HOME"] = _TEMP_HOME
    os.environ.pop("MTK_FIGURES", None)          # smoke figures go under the session's home too


def pytest_report_header(config):
    return f"mtk: MTK_HOME={os.environ['MTK_HOME']} ({'kept' if _TEMP_HOME is None else 'fresh, removed at exit'})"


def pytest_unconfigure(config):
    if _TEMP_HOME is not None:
        shutil.rmtree(_TEMP_HOME, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """nbval reads a cell's outputs only after the cell has finished, allowing a fixed 5 s for each message; after
    a cell that trained for a minute or more (a fresh smoke comparison) the first message can take longer, and the
    cell is reported as failed though it ran. Each message gets 60 s (a cell's own run time stays bounded by
    --nbval-cell-timeout)."""
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = 60
