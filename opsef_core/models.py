"""Model registry: resolve a model name or path to files on disk, with a checksum.

Search order for a name ``spec`` of backend ``B``:

1. an explicit path (absolute, relative to the working directory, or containing a
   path separator) — it must exist;
2. the project's model folder (``$OPSEF_MODELS_DIR`` or ``<repo>/models``):
   ``<dir>/<spec>`` as a folder or a file with any suffix;
3. backend-specific places registered with :func:`register_search` (the
   user's Cellpose and StarDist caches, for example);
4. a backend-specific *fetcher* registered with :func:`register_fetcher`: the
   library's real download path for named pretrained models, which fails fast
   without network.

When none of these gives a file, :class:`~opsef_core.errors.ModelNotFoundError`
names the model, every place looked at, and how to provide the weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelNotFoundError

__all__ = [
    "ResolvedModel",
    "resolve_model",
    "register_search",
    "register_fetcher",
    "project_models_dir",
    "file_checksum",
    "CARD_NAME",
]

logger = logging.getLogger(__name__)

_SEARCH: dict[str, list[Callable[[str], list[Path]]]] = {}
_FETCH: dict[str, Callable[[str], Path | None]] = {}
_HINTS: dict[str, str] = {}
_CHECKSUMS: dict[tuple, str] = {}

#: the model card file beside a model's weights (see :mod:`opsef_core.zoo.cards`)
CARD_NAME = "card.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A model found on disk.

    Attributes
    ----------
    backend : str
        Segmentation backend the model belongs to.
    name : str
        The name or path the user gave.
    path : Path
        File or folder holding the weights.
    checksum : str
        SHA-256 of the file (or of every file of the folder, in sorted order).
    source : str
        Where it was found: ``"path"``, ``"project"``, ``"cache"`` or ``"download"``.
    """

    backend: str
    name: str
    path: Path
    checksum: str
    source: str

    def to_dict(self) -> dict:
        """JSON-serialisable form for run records."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def project_models_dir() -> Path:
    """The project's model folder: ``$OPSEF_MODELS_DIR`` or ``models/`` at the repository root."""
    env = os.environ.get("OPSEF_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "models"


def register_search(backend: str, finder: Callable[[str], list[Path]], hint: str | None = None) -> None:
    """Add a function that lists candidate paths for a model name of ``backend``.

    Parameters
    ----------
    backend : str
        Backend name (``"cellpose"``, ``"stardist"``, ...).
    finder : callable
        ``finder(name) -> list[Path]``; the first existing path wins.
    hint : str, optional
        Text telling the user how to provide such a model (shown in errors).
    """
    _SEARCH.setdefault(backend, []).append(finder)
    if hint:
        _HINTS[backend] = hint


def register_fetcher(backend: str, fetcher: Callable[[str], Path | None]) -> None:
    """Register the library's download path for named pretrained models of ``backend``.

    ``fetcher(name)`` returns the downloaded file, None when the name is not a
    pretrained model of the library, and raises when the download fails.
    """
    _FETCH[backend] = fetcher


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted).

    A folder's ``card.json`` (the model card, :mod:`opsef_core.zoo`) is description, not
    model: it is left out, so writing or refreshing a card keeps the checksum runs recorded.

    Results are cached per (path, each file's mtime and size), so repeated runs do not re-hash.
    """
    from .record import _files, sha256

    path = Path(path)
    files = _files(path, (CARD_NAME,))
    # key on every file's (name, mtime, size): a folder's own mtime does not change when a
    # file inside it is rewritten
    stats = tuple((f.as_posix(), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    key = (str(path.resolve()), stats)
    if key not in _CHECKSUMS:
        _CHECKSUMS[key] = sha256(path, exclude=(CARD_NAME,))
    return _CHECKSUMS[key]


def looks_like_path(spec: str) -> bool:
    """Whether a model spec names a file or folder (a separator, ``.`` first, absolute, or a ``.zip``
    bioimage.io package), not a name."""
    return (os.sep in spec or "/" in spec or spec.startswith(".") or Path(spec).is_absolute()
            or spec.lower().endswith(".zip"))


def _project_candidates(spec: str) -> list[Path]:
    root = project_models_dir()
    out = [root / spec]
    if root.is_dir():
        out += sorted(p for p in root.glob(f"{spec}.*"))
    return out


def resolve_model(backend: str, spec: str | Path, download: bool = True) -> ResolvedModel:
    """Find the weights of a model given by name or path.

    Parameters
    ----------
    backend : str
        Backend name; selects the registered cache locations and fetcher.
    spec : str or Path
        A model name (``"nuclei"``, ``"stardist2d_demo"``) or a path.
    download : bool
        Whether to try the library's download for named pretrained models.

    Returns
    -------
    ResolvedModel

    Raises
    ------
    ModelNotFoundError
        When the model is nowhere on disk and cannot be downloaded; the message
        lists every place looked at and how to provide the model.
    """
    spec = str(spec)
    looked: list[str] = []
    candidate = Path(spec).expanduser()
    if candidate.exists():
        return ResolvedModel(backend, spec, candidate.resolve(), file_checksum(candidate), "path")
    if looks_like_path(spec):
        raise ModelNotFoundError(f"{backend} model path does not exist", candidate)
    groups = [("project", _project_candidates)] + [("cache", f) for f in _SEARCH.get(backend, [])]
    for source, finder in groups:
        for path in finder(spec):
            looked.append(str(path))
            if path.exists():
                return ResolvedModel(backend, spec, path.resolve(), file_checksum(path), source)
    fetch_error = None
    if download and backend in _FETCH:
        try:
            path = _FETCH[backend](spec)
        except Exception as exc:  # network errors come in many types
            fetch_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            path = None
        if path is not None and Path(path).exists():
            return ResolvedModel(backend, spec, Path(path).resolve(), file_checksum(path), "download")
    msg = f"{backend} model {spec!r} not found. Looked in: {', '.join(looked) or '(nowhere)'}."
    if fetch_error:
        msg += f" Download failed ({fetch_error})."
    msg += " " + _HINTS.get(
        backend, f"Put the model under {project_models_dir()}/{spec} or give its path."
    )
    raise ModelNotFoundError(msg)
