"""The kit's HTML in a real browser: Debian's Chromium driven by Playwright (from PyPI), the network blocked.

Each page the kit writes (k3d views through `viz.save_k3d` and `viz.k3d_html`, and every committed
`figures/*.html`) must open from the file system with no page error, no request leaving the machine, and a
drawn canvas (a fraction of pixels differing from the background). Screenshots go to the test's folder.
Without Chromium or Playwright the tests skip, naming what is missing, unless MTK_REQUIRE_BROWSER=1 (set by
`.ci/run`, which installs Chromium), where they fail instead: CI never passes them silently.
"""
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def _missing(what: str):
    if os.environ.get("MTK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} (MTK_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def head():
    from mtk.synthvoca.template import Template
    return Template.procedural("smoke")


@pytest.fixture(scope="module")
def browser():
    exe = os.environ.get("MTK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _missing("no Chromium: `apt-get install chromium` (as root; `make browser` does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("no Playwright: `pip install playwright` (in the test extras)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


def render(browser, page_path: Path, shot: Path, wait_ms: int = 6000) -> dict:
    """Open a file:// page with every non-file request refused; -> {errors, blocked, drawn (fraction)}."""
    from PIL import Image
    ctx = browser.new_context(viewport={"width": 900, "height": 520})
    blocked, errors = [], []
    ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
              else (blocked.append(route.request.url), route.abort()))
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(page_path.resolve().as_uri())
    page.wait_for_timeout(wait_ms)
    png = page.screenshot()
    ctx.close()
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(png)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(img, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    drawn = float((np.abs(img - background).sum(1) > 30).mean())
    return {"errors": errors, "blocked": blocked, "drawn": drawn}


def test_k3d_pages_the_kit_writes_open_offline(browser, head, tmp_path, monkeypatch):
    import k3d
    from mtk import viz
    monkeypatch.setenv("MTK_FIGURES", str(tmp_path / "figures"))
    T = 3
    gt = np.repeat(head.vertices[None], T, 0)
    pred = gt + 0.001
    pages = {
        "face": viz.save_k3d(viz.k3d_face(head, gt), "face.html"),
        "compare": viz.save_k3d(viz.k3d_compare(head, {"stage 1": pred}, gt=gt), "compare.html"),
    }
    standalone = tmp_path / "standalone.html"
    standalone.write_text(viz.k3d_html(viz.k3d_face(head), autoplay=True))
    pages["standalone"] = standalone
    assert (pages["face"].parent / f"k3d-viewer-{k3d.__version__}.js").exists()
    assert pages["face"].stat().st_size < 200_000 < standalone.stat().st_size     # shared viewer vs inlined
    for name, path in pages.items():
        assert "https://" not in path.read_text().replace("https://requirejs.org", "")   # no CDN anywhere
        res = render(browser, path, tmp_path / "shots" / f"{name}.png")
        assert not res["errors"] and not res["blocked"], (name, res)
        assert res["drawn"] > 0.01, f"{name}: the canvas is blank ({res['drawn']:.4f} of pixels drawn)"


COMMITTED = sorted((ROOT / "figures").glob("*.html"))


@pytest.mark.parametrize("page", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_figure_pages_open_offline(browser, page, tmp_path):
    res = render(browser, page, tmp_path / f"{page.stem}.png")
    assert not res["errors"] and not res["blocked"], res
    assert res["drawn"] > 0.01, f"{page.name}: the page is blank ({res['drawn']:.4f} of pixels drawn)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of notebook 07 (autosave must never touch the checkout), token-less on
    localhost, its kernels inheriting the test session's environment (MTK_SMOKE=1, the session's MTK_HOME)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / "07_interactive_3d.ipynb", root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # JupyterLab 4 renders only the cells in view ("windowing"); render them all, so outputs can be found
    settings = root / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(root / "lab-settings")}
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             "--allow-root", f"--ServerApp.root_dir={root}", "--IdentityProvider.token=",
                             "--ServerApp.password=", "--LabApp.expose_app_in_browser=True",
                             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start; its log: {(root / 'jupyterlab.log').read_text()[-2000:]}")
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)


def test_notebook_07_runs_in_jupyterlab_and_shows_front_facing_faces(browser, lab, tmp_path):
    """A user's path: open notebook 07 in JupyterLab, Run All (smoke mode), see the k3d view drawn."""
    from PIL import Image
    url, root = lab
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    blocked, errors = [], []
    local = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")
    ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local)
              else (blocked.append(route.request.url), route.abort()))
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/lab/tree/07_interactive_3d.ipynb")
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", timeout=120_000)
    page.wait_for_timeout(3000)                                        # the kernel starts
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # done when no cell waits ("[*]") and the last cell has an execution count
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')].map(p => p.textContent.trim());
        return prompts.length > 0 && !prompts.some(p => p.includes('*')) && /\\[\\d+\\]/.test(prompts[prompts.length - 1]);
    }""", timeout=900_000, polling=2000)
    errors_in_outputs = page.evaluate("[...document.querySelectorAll('.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
                                      ".map(e => e.textContent).filter(t => /Traceback|Error/.test(t))")
    page.screenshot(path=str(tmp_path / "notebook07_page.png"), full_page=False)
    canvases = page.locator(".jp-OutputArea canvas")
    assert canvases.count() >= 1, f"no k3d canvas in the notebook's outputs; see {tmp_path / 'notebook07_page.png'}"
    canvas = canvases.first
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(4000)
    shot = tmp_path / "notebook07_k3d.png"
    canvas.screenshot(path=str(shot))
    ctx.close()
    assert not errors and not blocked, {"page errors": errors, "blocked requests": blocked}
    assert not errors_in_outputs, errors_in_outputs
    img = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(img, axis=0, return_counts=True)
    drawn = float((np.abs(img - colours[counts.argmax()]).sum(1) > 30).mean())
    assert drawn > 0.02, f"the k3d view is blank ({drawn:.4f} of its pixels drawn); screenshot {shot}"
