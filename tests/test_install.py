"""The kit's install surface: environment.yml agrees with pyproject.toml; notebooks are committed stripped."""
import json
import re
import time
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch-cpu": "torch", "pytorch-gpu": "torch", "pytorch": "torch", "pysoundfile": "soundfile"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    for d in env["dependencies"]:
        if isinstance(d, dict):
            pip.update({_name(r): r for r in d["pip"] if not r.startswith("-")})
        elif _name(d) not in ("python", "pip"):
            conda[CONDA_NAMES.get(_name(d), _name(d))] = d
    assert set(conda) | set(pip) == set(pip_deps), "environment.yml and pyproject.toml list different packages"
    # torch must stay pinned so that pip takes the CPU wheel on the build machines
    assert re.search(r"torch[^,]*(==|<=|<)\s*2\.13", pip_deps["torch"]) or "2.13" in pip_deps["torch"]


def test_notebooks_are_committed_stripped():
    nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert nbs, "no notebooks found"
    for nb in nbs:
        d = json.loads(nb.read_text())
        for cell in d["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{nb.name} has outputs"
        assert "widgets" not in d["metadata"], f"{nb.name} carries widget state"


def test_widget_cells_are_marked_for_nbval():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and re.search(r"\.display\(\)|display\(Audio|widgets\.", src):
                assert "NBVAL_IGNORE_OUTPUT" in src, f"{nb.name}: widget cell without # NBVAL_IGNORE_OUTPUT"


def test_reproduce_runs_a_notebook_and_stops_a_hung_cell(tmp_path):
    """`python -m mtk reproduce` executes each notebook into an executed copy; a cell that outlives
    --cell-timeout stops the run with an error naming the notebook (instead of hanging forever)."""
    import nbformat
    import pytest

    from mtk.__main__ import run_notebook

    def notebook(name, source):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        path = tmp_path / name
        nbformat.write(nb, path)
        return path

    ok = notebook("01_ok.ipynb", "print(6 * 7)")
    run_notebook(ok, tmp_path / "out.ipynb", cell_timeout=60)
    cell = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0]
    assert cell.outputs[0]["text"].strip() == "42"

    # an ipywidgets Output capturing a display (notebook 07's audio player): nbclient's stand-in for the
    # Output widget writes to the shell socket while waiting on it, which without `_polled` left the cell
    # waiting for its full timeout in most runs (jupyter/nbclient#312). The executed copy drops the widget state.
    widget = notebook("03_widget.ipynb",
                      "import numpy as np, ipywidgets as w\nfrom IPython.display import display, Audio\n"
                      "out = w.Output()\nwith out:\n"
                      "    display(Audio(np.random.default_rng(0).standard_normal(160000), rate=16000))\n"
                      "display(w.VBox([w.IntSlider(), out]))")
    for _ in range(3):
        t = time.monotonic()
        run_notebook(widget, tmp_path / "out3.ipynb", cell_timeout=60)
        assert time.monotonic() - t < 30, "the Output-widget cell waited for its timeout"
    out3 = nbformat.read(tmp_path / "out3.ipynb", as_version=4)
    assert out3.cells[0].outputs[-1]["output_type"] == "display_data"
    assert "widgets" not in out3.metadata

    hung = notebook("02_hung.ipynb", "import time\ntime.sleep(60)")
    with pytest.raises(SystemExit, match=r"02_hung\.ipynb.*cell timeout \(2 s\).*--only 02"):
        run_notebook(hung, tmp_path / "out2.ipynb", cell_timeout=2)


def _import_graph() -> dict[str, set[str]]:
    """module -> the mtk modules it imports (at the top or inside functions), read from the source."""
    import ast
    mods = {}
    for p in (ROOT / "mtk").rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names]
                # `from . import articulation` imports the submodule; the package only if a name is not one
                names = subs + ([target] if node.module or any(n not in mods for n in subs) else [])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[m] |= {n for n in names if n in mods and n != m}
    return graph


def test_imports_flow_one_way():
    """No import circles in the package, lazy (in-function) imports included."""
    graph = _import_graph()
    assert graph["mtk.train"] >= {"mtk.data", "mtk.losses"} and "mtk.synthvoca" in graph["mtk.data"]  # it sees edges
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import circles: {cycles}"


def test_the_session_runs_in_a_fresh_home():
    """conftest.py points MTK_HOME at a temporary folder: nothing the checkout's data/ or runs/ hold is used."""
    import os

    from mtk import paths
    assert paths.home() != ROOT and paths.home() == Path(os.environ["MTK_HOME"]).resolve()
    assert paths.runs_dir().is_relative_to(paths.home()) and paths.figures_dir().is_relative_to(paths.home())


def test_every_imported_package_is_declared():
    """A fresh `pip install .` must bring every third-party package the kit imports (not one that happens to
    come along with another)."""
    import ast
    import sys
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for r in project["optional-dependencies"]["whisper"]}   # imported only when asked for
    import_name = {"sklearn": "scikit-learn", "yaml": "pyyaml", "imageio_ffmpeg": "imageio-ffmpeg",
                   "espeakng_loader": "espeakng-loader", "mpl_toolkits": "matplotlib"}
    imported = set()
    for py in (ROOT / "mtk").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("mtk", "__future__")}
    missing = sorted(m for m in third_party if import_name.get(m, m).replace("_", "-") not in declared)
    assert not missing, f"imported by mtk but not in pyproject's dependencies: {missing}"


def test_cli_has_a_command_version_and_help_everywhere(capsys):
    import argparse
    import pytest
    from mtk import __main__ as cli
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["mtk"] == "mtk.__main__:main"
    assert (ROOT / "mtk" / "py.typed").exists() and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "preferred-citation" in yaml.safe_load((ROOT / "CITATION.cff").read_text())
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and re.search(r"\d+\.\d+\.\d+", capsys.readouterr().out)
    # every subcommand and every option says what it is for
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == {"animate", "data", "reproduce", "strip-notebooks", "train"}
    helps = {c.dest: c.help for c in subs._choices_actions}
    assert all(helps.get(name) for name in subs.choices), helps
    for name, sub in subs.choices.items():
        for a in sub._actions:
            if not isinstance(a, argparse._HelpAction):
                assert a.help, f"mtk {name}: option {a.dest!r} has no help text"


def test_reproduce_leaves_the_sweeps_to_all(monkeypatch, tmp_path):
    """`mtk reproduce` runs every notebook but the long ones (05, 08, 09); --all runs those too; --only any."""
    from mtk import __main__ as cli
    import os
    ran = []
    monkeypatch.setenv("MTK_HOME", str(tmp_path))
    for var in ("MTK_DEVICE", "MTK_SMOKE", "HF_HUB_OFFLINE", "MPLBACKEND"):    # reproduce sets them: restored after
        monkeypatch.setenv(var, os.environ.get(var, ""))
    monkeypatch.setattr(cli, "cmd_data", lambda args: None)
    monkeypatch.setattr(cli, "run_notebook", lambda nb, out, timeout: ran.append(nb.name[:2]))
    for argv, want in ((["reproduce"], ["01", "02", "03", "04", "06", "07"]),
                       (["reproduce", "--all"], ["01", "02", "03", "04", "05", "06", "07", "08", "09"]),
                       (["reproduce", "--only", "08"], ["08"])):
        ran.clear()
        cli.main(argv + ["--device", "cpu"])
        assert ran == want, argv
