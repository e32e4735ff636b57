"""The debris and quickstart notebooks as a person meets them: JupyterLab in headless Chromium.

Starts JupyterLab on 127.0.0.1 (a free port, a token) over a temporary folder holding copies of
``notebooks/debris_brightfield.ipynb`` and ``notebooks/00_quickstart.ipynb`` whose ``parameters``
cells get small values appended (papermill-style: the later assignment wins) — fewer images and
models, so both run in about a minute — and whose ``out_root`` points into the temporary folder.
Playwright (the pip package, sync API) drives Debian's ``chromium`` (``/usr/bin/chromium``;
Playwright's own browser downloads are impossible here): open each notebook, *Run > Run All
Cells* from the menu, wait for every cell to finish and the kernel to be idle, then check that

- every figure is an image: each cell calling ``run.show(...)`` has an ``<img>`` in its output
  area, and no output reads ``<Figure size ...>``;
- no widget shows "Error displaying widget" (the ipywidgets front end is installed and matches);
- dragging an explorer's slider changes the displayed image (the widget's PNG is re-drawn by the
  kernel: the ``<img>``'s ``src`` and its pixels change).

Without chromium (or Playwright) the test is skipped, except in CI (``CI=true``), where it fails:
``.ci/run`` / ``make test`` install chromium when it is absent.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from nbhelpers import NOTEBOOKS, REPO, parameters_cell

pytestmark = [pytest.mark.slow, pytest.mark.notebook]

CHROMIUM = os.environ.get("OPSEF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
NB = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook in front
RUN_TIMEOUT_S = 150  # one notebook, Run All to idle (about 30-60 s here on 2 cores)

DEMO = REPO / "demo_data"
CLASSICAL = {"threshold": "otsu", "sigma": 2.0, "h": 0.0, "min_size": 100}

# small values appended to the parameters cells (the notebooks' own defaults stay as they are)
FAST = {
    "debris_brightfield": {
        "data_dir": str(DEMO / "debris_brightfield"),
        "max_images": 2,
        "settings": [{"name": "classical_otsu", "backend": "classical", "params": CLASSICAL},
                     {"name": "classical_li", "backend": "classical", "params": {**CLASSICAL, "threshold": "li"}}],
    },
    "00_quickstart": {
        "data_dir": str(DEMO / "nuclei2d" / "images"),
        "ground_truth_dir": str(DEMO / "nuclei2d" / "labels"),
        "n_explore_images": 1,
        "pipelines": [{"name": "raw", "steps": []},
                      {"name": "gaussian", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}}]}],
        "models": [{"name": "classical", "backend": "classical", "params": {"sigma": 1.0, "min_size": 20},
                    "sweep": {"h": [1.0, 2.0]}}],
        "scale_factors": [1.0],
    },
}


def _require(ok: bool, why: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{why}: in CI the browser test must run (.ci/run installs chromium and the pinned playwright)")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:  # loopback only
        return json.loads(r.read())


def _fast_copy(name: str, dest: Path, out_root: Path) -> list[int]:
    """Copy ``notebooks/<name>.ipynb`` to ``dest`` with fast parameters; return the indices (among
    code cells) of the cells that call ``run.show(...)`` outside a block."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    i = parameters_cell(nb)
    values = {**FAST[name], "out_root": str(out_root)}
    nb.cells[i].source += "\n# browser test: small values\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb.metadata.pop("jupytext", None)  # a plain copy, not paired with a text file
    nbformat.write(nb, dest / f"{name}.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    return [k for k, c in enumerate(code) if any(line.startswith("run.show(") for line in c.source.splitlines())]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 over a temporary folder; yields (base url, token, root, out_root)."""
    _require(Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK),
             f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require(False, "the playwright package is not installed (make install)")
    tmp = tmp_path_factory.mktemp("browser")
    root, out_root, settings = tmp / "notebooks", tmp / "runs", tmp / "lab-settings"
    for d in (root, out_root, settings):
        d.mkdir()
    # settings: every cell in the page (no windowing), no news/update pop-ups
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    shows = {name: _fast_copy(name, root, out_root) for name in FAST}

    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab"] if jupyter.is_file() else [sys.executable, "-m", "jupyterlab"]
    cmd += ["--no-browser", f"--IdentityProvider.token={token}", "--ServerApp.ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--LabApp.extension_manager=readonly",
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # a person's kernel: the inline backend
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
               PYTHONUNBUFFERED="1")
    log = open(tmp / "jupyterlab.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get_json(f"{base}/api/status?token={token}")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "out_root": out_root, "shows": shows, "tmp": tmp}
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _kernel_idle(lab, name: str) -> bool:
    sessions = _get_json(f"{lab['base']}/api/sessions?token={lab['token']}")
    states = [s["kernel"]["execution_state"] for s in sessions if s["path"].endswith(f"{name}.ipynb")]
    return bool(states) and all(st == "idle" for st in states)


def _shutdown_kernels(lab) -> None:
    for s in _get_json(f"{lab['base']}/api/sessions?token={lab['token']}"):
        req = urllib.request.Request(f"{lab['base']}/api/sessions/{s['id']}?token={lab['token']}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()  # loopback only


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(f"{NB} .jp-CodeCell .jp-InputPrompt",
                                     "els => els.map(e => e.textContent.trim())")


def _outputs_text(page) -> str:
    return "\n".join(page.locator(f"{NB} .jp-OutputArea-output").all_inner_texts())


def _run_all(page, lab, name: str) -> float:
    """Open the notebook, wait for its kernel, Run > Run All Cells, wait for the end; return seconds."""
    page.goto(f"{lab['base']}/lab/tree/{name}.ipynb?reset&token={lab['token']}")
    page.wait_for_selector(f"{NB} .jp-CodeCell", timeout=60_000)
    deadline = time.monotonic() + 60
    while not _kernel_idle(lab, name):
        assert time.monotonic() < deadline, f"{name}: the kernel never became idle"
        time.sleep(0.5)
    n_code = len(_prompts(page))
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator(".lm-Menu").get_by_role("menuitem", name="Run All Cells", exact=True).click()
    start = time.monotonic()
    idle_since = None
    while True:
        time.sleep(1.0)
        prompts = _prompts(page)
        done = len(prompts) == n_code and all(p[1:-2].isdigit() for p in prompts)  # "[12]:"
        idle = _kernel_idle(lab, name) and not any("*" in p for p in prompts)
        if done and idle:
            return time.monotonic() - start
        idle_since = (idle_since or time.monotonic()) if idle else None
        if idle_since and time.monotonic() - idle_since > 15:  # stopped with cells left: an error
            page.screenshot(path=str(lab["tmp"] / f"{name}.png"), full_page=True)
            pytest.fail(f"{name}: Run All stopped with prompts {prompts}:\n{_outputs_text(page)[-4000:]}")
        if time.monotonic() - start > RUN_TIMEOUT_S:
            page.screenshot(path=str(lab["tmp"] / f"{name}.png"), full_page=True)
            pytest.fail(f"{name}: not done after {RUN_TIMEOUT_S} s; prompts {prompts}")


def _check_page(page, lab, name: str) -> None:
    text = _outputs_text(page)
    assert "<Figure size" not in text, f"{name}: a figure is shown as text, not as an image"
    assert "Traceback" not in text, f"{name}: an error in the outputs:\n{text[-3000:]}"
    assert "Error displaying widget" not in page.locator("body").inner_text(), f"{name}: a widget failed to render"
    cells = page.locator(f"{NB} .jp-CodeCell")
    for k in lab["shows"][name]:
        imgs = cells.nth(k).locator(".jp-OutputArea-output img")
        assert imgs.count() >= 1, f"{name}: code cell {k} calls run.show(...) but shows no image"
        assert imgs.first.evaluate("img => img.complete && img.naturalWidth > 0"), f"{name}: cell {k}: broken image"
    assert page.locator(f"{NB} .jp-OutputArea-output .widget-slider").count() >= 1, f"{name}: no slider shown"


def _drag_slider_changes_image(page, name: str, explorer, fraction: float) -> None:
    """Drag the first handle of the explorer's first slider by ``fraction`` of the track; the image must change."""
    image = explorer.locator("img.widget-image").first
    image.scroll_into_view_if_needed()
    before_src, before_png = image.get_attribute("src"), image.screenshot()
    info_before = explorer.locator(".widget-html").first.inner_text()
    track = explorer.locator(".widget-slider .noUi-target").first
    handle = explorer.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    t, h = track.bounding_box(), handle.bounding_box()
    x, y = h["x"] + h["width"] / 2, h["y"] + h["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + fraction * t["width"], y, steps=8)
    page.mouse.up()
    deadline = time.monotonic() + 30
    while image.get_attribute("src") == before_src:
        assert time.monotonic() < deadline, f"{name}: moving the slider did not change the image"
        time.sleep(0.3)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.screenshot() != before_png, f"{name}: the image was re-sent but looks the same"
    assert explorer.locator(".widget-html").first.inner_text() != info_before, f"{name}: the text did not follow"


def test_debris_and_quickstart_in_jupyterlab(lab, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    seconds = {}
    try:
        # debris: the threshold explorer (one pass, re-decoded on every slider move)
        seconds["debris_brightfield"] = _run_all(page, lab, "debris_brightfield")
        _check_page(page, lab, "debris_brightfield")
        explorer = page.locator(f"{NB} .jp-OutputArea-output .widget-vbox").filter(
            has=page.locator("img.widget-image")).last
        _drag_slider_changes_image(page, "debris_brightfield", explorer, fraction=0.35)
        page.screenshot(path=str(lab["tmp"] / "debris_brightfield.png"), full_page=True)
        _shutdown_kernels(lab)

        # quickstart: the object filter (raise the area slider's lower end: objects turn red)
        seconds["00_quickstart"] = _run_all(page, lab, "00_quickstart")
        _check_page(page, lab, "00_quickstart")
        explorer = page.locator(f"{NB} .jp-OutputArea-output .widget-vbox").filter(
            has=page.locator(".widget-slider")).filter(has=page.locator("img.widget-image")).last
        _drag_slider_changes_image(page, "00_quickstart", explorer, fraction=0.15)
        page.screenshot(path=str(lab["tmp"] / "00_quickstart.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(lab["tmp"] / "failure.png"), full_page=True)
        raise
    finally:
        context.close()
    print(f"run all, seconds: {seconds}")
    # the notebooks wrote their run folders where out_root pointed
    assert {p.name.split("-")[0] for p in lab["out_root"].iterdir()} >= {"debris_brightfield", "00_quickstart"}
