"""Run folders and JSON records for the parameterised notebooks.

Every notebook in ``notebooks/`` has a cell tagged ``parameters`` holding
plain values, followed by::

    run = start_notebook_run("fucci_3d", globals_subset, out_root=OUT_ROOT)

which validates the parameters (plain JSON values only), creates a new run
folder (never an existing one) and writes

- ``record.json`` — exactly the parameters, so ``papermill NOTEBOOK OUT -f
  RUN/record.json`` repeats the run;
- ``provenance.json`` — notebook name, opsef version and commit, package
  versions, Python, platform, start time (and end time after
  :meth:`NotebookRun.finish`), and the figures and tables written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["NotebookRun", "start_notebook_run", "check_plain", "new_run_folder"]

logger = logging.getLogger(__name__)


def check_plain(value: Any, where: str = "parameters") -> None:
    """Raise :class:`ConfigError` unless ``value`` is made of plain JSON values.

    Plain values are None, bool, int, finite float, str, and lists/dicts of them
    (dict keys must be strings): what papermill can inject and JSON can hold.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is not a string")
            check_plain(v, f"{where}.{k}")
        return
    raise ConfigError(f"{where}: {type(value).__name__} is not a plain value (use numbers, strings, lists, dicts)")


def new_run_folder(root: str | Path, stem: str) -> Path:
    """Create and return a new folder ``root/stem-YYYYmmdd-HHMMSS[-n]`` (never an existing one).

    The same folders as the run engine's (:func:`opsef_core.run.create_run_folder`, UTC time).
    """
    from .run.folder import create_run_folder

    return create_run_folder(root, stem)


@dataclass
class NotebookRun:
    """A notebook's run folder and its records.

    Attributes
    ----------
    notebook : str
        Notebook name.
    folder : Path
        The new run folder.
    params : dict
        The validated parameters (as written to ``record.json``).
    outputs : list of str
        Files written through :meth:`show` / :meth:`save_figure` / :meth:`save_table` /
        :meth:`save_json`.
    """

    notebook: str
    folder: Path
    params: dict
    outputs: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """Path of a file inside the run folder (sub-folders are created)."""
        p = self.folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as PNG in the run folder (atomically) and list it."""
        from .viz import save_figure

        path = save_figure(fig, self.path(name if name.endswith(".png") else f"{name}.png"), dpi=dpi)
        self._note(path)
        return path

    def show(self, fig, name: str | None = None, dpi: int = 110) -> None:
        """Show a figure in the notebook as a PNG image, saved in the run folder.

        The one way the notebooks show a figure. ``fig`` is a matplotlib figure (saved as
        ``name``.png with :meth:`save_figure`, then the saved file is displayed) or the path
        of a PNG already written (a run folder's montage or overlay: displayed as it is).
        The output is an ``image/png`` output in Jupyter, JupyterLab and papermill alike —
        a bare ``Figure`` drawn without pyplot (:func:`opsef_core.viz.new_figure`) as a
        cell's value would show only as the text ``<Figure size ...>``. Outside IPython the
        figure is only saved. Returns nothing, so a cell ending with ``run.show(...)`` shows the
        image once (the saved file is listed in ``provenance.json``; :meth:`save_figure` returns
        its path).
        """
        from .viz import display_png

        if isinstance(fig, (str, Path)):
            path = Path(fig)
        else:
            if not name:
                raise ValueError("NotebookRun.show: give the figure a name (the PNG's file name)")
            path = self.save_figure(fig, name, dpi=dpi)
        display_png(path.read_bytes())

    def save_table(self, df, name: str) -> Path:
        """Save a pandas DataFrame as CSV in the run folder (atomically) and list it."""
        from .record import atomic_write_text

        path = self.path(name if name.endswith(".csv") else f"{name}.csv")
        atomic_write_text(path, df.to_csv(index=False))
        self._note(path)
        return path

    def save_json(self, data: Any, name: str) -> Path:
        """Save JSON-serialisable data in the run folder (atomically) and list it."""
        from .record import atomic_write_json

        path = self.path(name if name.endswith(".json") else f"{name}.json")
        atomic_write_json(path, data)
        self._note(path)
        return path

    def _note(self, path: Path) -> None:
        rel = str(path.relative_to(self.folder))
        if rel not in self.outputs:
            self.outputs.append(rel)
        self._write_provenance()

    def _write_provenance(self) -> None:
        from .record import atomic_write_json

        self.provenance["outputs"] = list(self.outputs)
        atomic_write_json(self.folder / "provenance.json", self.provenance)

    def finish(self) -> Path:
        """Stamp the end time in ``provenance.json``; returns the run folder."""
        self.provenance["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._write_provenance()
        logger.info("notebook run written to %s", self.folder)
        return self.folder


def start_notebook_run(notebook: str, params: dict, out_root: str | Path | None = None) -> NotebookRun:
    """Validate notebook parameters, create a new run folder and write its records.

    Parameters
    ----------
    notebook : str
        The notebook's name (used in the folder name and provenance).
    params : dict
        The values of the ``parameters`` cell; plain JSON values only.
    out_root : path, optional
        Where run folders go (default: ``params["out_root"]`` or ``runs/``).

    Returns
    -------
    NotebookRun

    Raises
    ------
    ConfigError
        When a parameter is not a plain value.
    """
    from . import __version__
    from .record import atomic_write_json, git_commit, package_versions

    check_plain(params, where=f"{notebook} parameters")
    root = Path(out_root or params.get("out_root") or "runs")
    folder = new_run_folder(root, notebook)
    atomic_write_json(folder / "record.json", params)
    provenance = {
        "notebook": notebook,
        "opsef_version": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cwd": os.getcwd(),
        "rerun": f"papermill notebooks/{notebook}.ipynb OUT.ipynb -k python3 -f {folder / 'record.json'}",
    }
    run = NotebookRun(notebook=notebook, folder=folder, params=json.loads(json.dumps(params)),
                      provenance=provenance)
    run._write_provenance()
    return run
