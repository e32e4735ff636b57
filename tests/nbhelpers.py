"""Helpers to execute the parameterised notebooks headless and check what they wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def parameters_cell(nb) -> int:
    """Index of the cell tagged ``parameters`` (exactly one must exist)."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb.metadata.get('name', '?')}: {len(tagged)} cells tagged 'parameters'"
    return tagged[0]


def execute(name: str, out_root: Path, parameters: dict | None = None, record: Path | None = None,
            timeout: int = 900) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill; return the run folder it created.

    Parameters given in ``record`` (a ``record.json`` of an earlier run) are
    passed like ``papermill -f record.json``; ``parameters`` override them.
    ``out_root`` is always set so each execution writes under a test folder.
    """
    import papermill as pm

    params = json.loads(Path(record).read_text()) if record else {}
    params.update(parameters or {})
    params["out_root"] = str(out_root)
    before = set(out_root.glob("*")) if out_root.exists() else set()
    env_backup = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        pm.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"),
            str(out_root / f"{name}.executed.ipynb"),
            parameters=params,
            kernel_name="python3",
            cwd=str(NOTEBOOKS),
            progress_bar=False,
            execution_timeout=timeout,
        )
    finally:
        if env_backup is None:
            os.environ.pop("MPLBACKEND", None)
    check_figures(out_root / f"{name}.executed.ipynb")
    new = sorted(p for p in set(out_root.glob("*")) - before if p.is_dir())
    assert len(new) == 1, f"{name}: expected one new run folder under {out_root}, found {new}"
    folder = new[0]
    assert (folder / "record.json").is_file(), f"{name}: no record.json in {folder}"
    assert (folder / "provenance.json").is_file(), f"{name}: no provenance.json in {folder}"
    return folder


def check_figures(executed: Path) -> int:
    """Assert that every figure of an executed notebook is an ``image/png`` output; return their number.

    No output (display, result or printed text) may be a matplotlib figure's text form
    ``<Figure size ...>`` (what Jupyter shows for a bare Figure drawn without pyplot), and every
    cell calling ``run.show(...)`` outside a block (an ``if``) must have an ``image/png`` output.
    """
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    n_png = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        pngs = 0
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] if out.get("output_type") == "stream" else []
            data = out.get("data", {})
            texts.append(data.get("text/plain", ""))
            texts = ["".join(t) if isinstance(t, list) else t for t in texts]
            assert not any("<Figure size" in t for t in texts), \
                f"{executed.name}, cell {i}: a figure shown as text, not as an image:\n{cell.source}"
            pngs += "image/png" in data
        if any(line.startswith("run.show(") for line in cell.source.splitlines()):
            assert pngs, f"{executed.name}, cell {i}: run.show(...) displayed no image/png:\n{cell.source}"
        n_png += pngs
    assert n_png, f"{executed.name}: no image/png output at all"
    return n_png


def execute_cli(name: str, out_root: Path, record: Path, timeout: int = 900) -> Path:
    """Re-run ``notebooks/<name>.ipynb`` from a record exactly as README shows it, with papermill's CLI.

    ``papermill -k python3 -f record.json -p out_root OUT notebook.ipynb executed.ipynb``, run
    from ``notebooks/`` in a subprocess; returns the run folder it created.
    """
    import subprocess
    import sys

    out_root.mkdir(parents=True, exist_ok=True)
    before = set(out_root.glob("*"))
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", "--no-progress-bar", "-f", str(record),
           "-p", "out_root", str(out_root), f"{name}.ipynb", str(out_root / f"{name}.executed.ipynb")]
    done = subprocess.run(cmd, cwd=NOTEBOOKS, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, f"papermill CLI failed ({done.returncode}):\n{done.stderr[-3000:]}"
    check_figures(out_root / f"{name}.executed.ipynb")
    new = sorted(p for p in set(out_root.glob("*")) - before if p.is_dir())
    assert len(new) == 1, f"{name}: expected one new run folder under {out_root}, found {new}"
    return new[0]


def check_outputs(folder: Path, expected: list[str]) -> dict:
    """Assert that every expected file exists and is non-empty; return provenance.json."""
    prov = json.loads((folder / "provenance.json").read_text())
    for rel in expected:
        path = folder / rel
        assert path.is_file() and path.stat().st_size > 0, f"{folder.name}: missing or empty {rel}"
    assert "finished" in prov, f"{folder.name}: notebook did not reach its final cell"
    return prov


def rerun_engine_run(run_json: Path, out_root: Path, elsewhere: Path) -> Path:
    """``opsef run RUN/run.json`` from another working directory; asserts identical label images.

    Every label TIFF of the recorded run (``labels/``, ``labels_filtered/``, ``labels_working/``)
    must exist in the new run with the same pixels.  Returns the new run folder.
    """
    import contextlib
    import io as _io

    import numpy as np
    import tifffile

    from opsef_core.cli import main

    run_json = Path(run_json).resolve()
    elsewhere.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    buf = _io.StringIO()
    try:
        os.chdir(elsewhere)
        with contextlib.redirect_stdout(buf):
            rc = main(["run", str(run_json), "--out", str(out_root)])
    finally:
        os.chdir(cwd)
    assert rc == 0, f"opsef run {run_json} exited {rc}"
    new = Path(buf.getvalue().strip().splitlines()[-1])
    old = run_json.parent
    files = sorted(p.relative_to(old) for d in ("labels", "labels_filtered", "labels_working")
                   for p in (old / d).glob("*.tif"))
    assert files, f"{old}: no label images to compare"
    for rel in files:
        np.testing.assert_array_equal(tifffile.imread(new / rel), tifffile.imread(old / rel), err_msg=str(rel))
    return new


def widget_views(executed, containing: str) -> int:
    """How many live widgets (ipywidgets view outputs) the cells whose source contains ``containing``
    displayed in an executed notebook (progress bars of other cells are widgets too)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    return sum("application/vnd.jupyter.widget-view+json" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" and containing in cell.source
               for out in cell.get("outputs", []))
