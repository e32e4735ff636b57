"""The run record: ``run.json``, everything needed to know and repeat what a run did.

:class:`RunRecord` (pydantic, ``schema_version``) holds the config as given and
its resolved paths, the opsef version and git commit, Python, platform and
package versions (read with :mod:`importlib.metadata`, nothing heavy is
imported), input files with sizes and SHA-256 checksums, the models used,
the seed, UTC timestamps, the status of every item and the command line.
It is written as JSON only (atomically), never pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RunFolderError

__all__ = [
    "RECORD_SCHEMA_VERSION",
    "RECORD_KIND",
    "InputFile",
    "ItemStatus",
    "RunRecord",
    "new_record",
    "package_versions",
    "git_commit",
    "sha256",
    "utc_now",
    "write_record",
    "read_record",
    "atomic_write_text",
    "atomic_write_json",
]

logger = logging.getLogger(__name__)

RECORD_SCHEMA_VERSION = 1
RECORD_KIND = "opsef-run-record"
PACKAGES = (
    "opsef-core", "numpy", "scipy", "scikit-image", "scikit-learn", "pandas", "tifffile", "roifile",
    "pydantic", "dask", "matplotlib", "torch", "tensorflow-cpu", "tensorflow", "keras", "csbdeep",
    "stardist", "cellpose", "readlif",
)


# ---------------------------------------------------------------------- atomic writes
@contextmanager
def _atomic(path: Path, mode: str) -> Iterator[Any]:
    """:func:`opsef_core.io.atomic_write` (imported lazily: io imports readers)."""
    from .io import atomic_write

    with atomic_write(path, mode=mode) as fh:
        yield fh


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    with _atomic(path, "w") as fh:
        fh.write(text)
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------- environment
def utc_now() -> str:
    """The current time as an ISO 8601 string in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out), without importing them."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(path: str | Path | None = None, timeout: float = 5.0) -> str | None:
    """``git rev-parse HEAD`` of the checkout holding ``path`` (this package by default), or None."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = res.stdout.strip()
    return out if res.returncode == 0 and len(out) == 40 else None


def _files(path: Path, exclude: tuple = ()) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.relative_to(path).as_posix() not in exclude)


def file_size(path: str | Path) -> int:
    """Bytes of a file, or of every file in a folder (a zarr store)."""
    return sum(f.stat().st_size for f in _files(Path(path)))


def sha256(path: str | Path, chunk: int = 1 << 20, *, exclude: tuple = ()) -> str:
    """SHA-256 hex digest of a file, read in chunks; of a folder (a zarr store, a model folder),
    the digest of its files' relative paths and contents in sorted order (``exclude``: relative
    paths left out; ``__pycache__`` is never read).  Model checksums are this digest too
    (:func:`opsef_core.models.file_checksum`, cached)."""
    h = hashlib.sha256()
    path = Path(path)
    files = _files(path, tuple(exclude))
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode("utf-8"))
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------- the record
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputFile(_Model):
    """An input (or ground-truth) file with its size and checksum (None when unreadable)."""

    path: str
    size: int | None = None
    sha256: str | None = None
    role: Literal["input", "ground_truth", "class_mask"] = "input"


class ItemStatus(_Model):
    """The outcome of one item (one image with every combination)."""

    id: str
    image: str
    path: str
    series: str | None = None
    t: int | None = None
    status: Literal["pending", "done", "partial", "failed", "skipped"] = "pending"
    error: str | None = None
    n_combinations: int = 0
    n_failed: int = 0
    resumed: bool = False


class RunRecord(_Model):
    """Everything ``run.json`` records about a run.

    Attributes
    ----------
    schema_version, kind : int, str
        Format of this record (``kind`` lets :func:`~opsef_core.config.load_config`
        recognise a record given in place of a config).
    config : dict
        The run config as given (paths unresolved).
    config_path : str, optional
        The config file the run was started from.
    resolved_paths : dict
        The config's paths resolved to absolute paths (and the base folder).
    run_dir : str
        The run folder.
    opsef_version, git_commit, python, platform, packages
        Software that produced the run.
    inputs : list of InputFile
        Input and ground-truth files with sizes and SHA-256 checksums.
    combinations : list of dict
        The plan: id, pipeline, segmenter, backend, parameters, network key.
    models : list of dict
        ``describe_model`` of every segmenter setting (name, path, checksum).
    seed : int
    started, finished : str
        ISO timestamps in UTC (finished is None while running).
    config_sha256 : str, optional
        SHA-256 of ``config`` (canonical JSON): a resume refuses a config edited in this file.
    status : str
        ``running``, ``completed`` (every item done), ``completed_with_errors`` (some items or
        combinations failed), ``interrupted`` (Ctrl-C or SIGTERM; finish it with ``resume``) or
        ``failed`` (every item failed, or the run stopped: see ``error``).
    error : str, optional
        Why the run is ``failed`` or ``interrupted``.
    changes_accepted : list of str
        Differences from an earlier record accepted with ``--accept-changes`` (a re-run or
        resume whose inputs or models changed), one line each.
    items : list of ItemStatus
    command_line : list of str
    execution : dict
        Workers and scheduler actually used.
    """

    schema_version: int = RECORD_SCHEMA_VERSION
    kind: Literal["opsef-run-record"] = RECORD_KIND
    config: dict[str, Any]
    config_sha256: str | None = None
    config_path: str | None = None
    resolved_paths: dict[str, str | None] = Field(default_factory=dict)
    run_dir: str
    opsef_version: str
    git_commit: str | None = None
    python: str = Field(default_factory=lambda: sys.version.split()[0])
    platform: str = Field(default_factory=platform.platform)
    packages: dict[str, str] = Field(default_factory=package_versions)
    inputs: list[InputFile] = Field(default_factory=list)
    combinations: list[dict[str, Any]] = Field(default_factory=list)
    models: list[dict[str, Any]] = Field(default_factory=list)
    seed: int = 0
    started: str = Field(default_factory=utc_now)
    finished: str | None = None
    status: Literal["running", "completed", "completed_with_errors", "interrupted", "failed"] = "running"
    error: str | None = None
    changes_accepted: list[str] = Field(default_factory=list)
    items: list[ItemStatus] = Field(default_factory=list)
    command_line: list[str] = Field(default_factory=lambda: list(sys.argv))
    execution: dict[str, Any] = Field(default_factory=dict)
    resumed: list[str] = Field(default_factory=list)

    def item(self, item_id: str) -> ItemStatus | None:
        """The status entry of an item, or None."""
        return next((it for it in self.items if it.id == item_id), None)


def new_record(config, run_dir: Path, combinations: list[dict], models: list[dict],
               inputs: list[InputFile], command_line: list[str] | None = None,
               execution: dict | None = None) -> RunRecord:
    """Build the record of a starting run.

    Parameters
    ----------
    config : RunConfig
        The config being executed.
    run_dir : Path
        The new run folder.
    combinations, models : list of dict
        The plan and the model descriptions.
    inputs : list of InputFile
        Files with checksums.
    command_line : list of str, optional
        Defaults to ``sys.argv``.
    execution : dict, optional
        Workers/scheduler in effect.
    """
    from . import __version__
    from .run.integrity import config_digest

    data = config.model_dump(mode="json")
    return RunRecord(
        config=data,
        config_sha256=config_digest(data),
        config_path=str(config.source) if config.source else None,
        resolved_paths=config.resolved_paths(),
        run_dir=str(Path(run_dir).resolve()),
        opsef_version=__version__,
        git_commit=git_commit(),
        inputs=inputs,
        combinations=combinations,
        models=models,
        seed=config.seed,
        command_line=list(command_line) if command_line is not None else list(sys.argv),
        execution=execution or {},
    )


def write_record(record: RunRecord, run_dir: str | Path) -> Path:
    """Write ``run.json`` into ``run_dir`` atomically."""
    return atomic_write_text(Path(run_dir) / "run.json", record.model_dump_json(indent=2) + "\n")


def read_record(path: str | Path) -> RunRecord:
    """Read a run record from ``run.json`` or from a run folder.

    Raises
    ------
    RunFolderError
        When the file is missing or is not a valid run record.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    if not path.is_file():
        raise RunFolderError("no run.json here: not an opsef run folder", path.parent)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunRecord.model_validate(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"run.json is not valid JSON ({exc})", path) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise RunFolderError(f"not a valid run record ({loc}: {first['msg']})", path) from None
