"""Where the kit keeps generated data, checkpoints and figures.

Everything lives under one home folder:

    $MTK_HOME if set; else the source checkout (the folder holding pyproject.toml
    next to this package, for an editable install); else ~/.cache/mtk.
    The test session always sets MTK_HOME to a fresh temporary folder (conftest.py).

    data/      generated datasets (SynthVOCA), never committed
    runs/      checkpoints and training logs (runs/smoke/ in smoke mode)
    figures/   every figure and table the notebooks write (committed)

Smoke mode (`MTK_SMOKE=1`, set by the test configuration) makes every notebook
small enough for CI; its checkpoints and figures go under runs/smoke/ so that a
test run never overwrites the real figures.
"""
from __future__ import annotations

import os
from pathlib import Path


def checkout() -> Path | None:
    """The source checkout this package runs from (it holds pyproject.toml and notebooks/), or None
    for a non-editable install. Notebooks are read from here whatever MTK_HOME says."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() and (root / "mtk").is_dir() else None


def home() -> Path:
    env = os.environ.get("MTK_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return checkout() or Path.home() / ".cache" / "mtk"


def smoke() -> bool:
    """True when MTK_SMOKE=1: notebooks and presets shrink to CI size."""
    return os.environ.get("MTK_SMOKE", "0") not in ("", "0", "false", "False")


def data_dir() -> Path:
    return home() / "data"


def runs_dir() -> Path:
    return home() / "runs" / "smoke" if smoke() else home() / "runs"


def figures_dir() -> Path:
    env = os.environ.get("MTK_FIGURES")
    d = Path(env) if env else (home() / "runs" / "smoke" / "figures" if smoke() else home() / "figures")
    d.mkdir(parents=True, exist_ok=True)
    return d
