"""Find every model opsef can use: the project's ``models/``, the Cellpose and StarDist caches, paths given.

Places, in this order (the order :func:`opsef_core.models.resolve_model` searches names):

1. ``project``: model folders (and ``.pth``/``.pt`` files, and bioimage.io package zips) in
   :func:`opsef_core.models.project_models_dir` (``$OPSEF_MODELS_DIR`` or ``models/``);
2. ``cache``: Cellpose's model folder (``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``;
   its files) and the Keras caches where StarDist keeps downloads (``$KERAS_HOME`` and
   ``~/.keras``: ``models/StarDist2D|StarDist3D/<name>/`` folders holding a ``config.json``);
3. ``path``: each path given — a model folder or file, a bioimage.io package (zip or folder), or a
   folder of those.

Each model comes with its card (:func:`model_card`): the ``card.json`` beside the weights when there
is one (and it is current), else one built on the spot by :func:`opsef_core.zoo.cards.build_card`;
a package's card is the one it carries (:func:`opsef_core.zoo.bioimageio.package_card`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputFileError, ModelNotFoundError
from .cards import build_card, card_is_current, detect_backend, model_folders, read_card

__all__ = ["find_models", "format_models", "is_model", "model_card"]

logger = logging.getLogger(__name__)

_CELLPOSE_SKIP_SUFFIXES = {".npy", ".json", ".md", ".txt", ".zip", ".log"}


def _cellpose_cache_models(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() not in _CELLPOSE_SKIP_SUFFIXES and "size" not in p.name]


def _stardist_cache_models(root: Path) -> list[Path]:
    out = []
    for cls in ("StarDist2D", "StarDist3D"):
        base = root / "models" / cls
        if not base.is_dir():
            continue
        for cfg in sorted(base.glob("*/config.json")) + sorted(base.glob("*/*/config.json")):
            if detect_backend(cfg.parent) == "stardist":
                out.append(cfg.parent)
    return out


def _packages_in(root: Path) -> list[Path]:
    from .bioimageio import is_package

    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.suffix.lower() == ".zip"
            and p.is_file() and is_package(p)]


def is_model(path: str | Path) -> bool:
    """Whether ``path`` is a model opsef can list: a model folder or file of a backend, or a package."""
    from .bioimageio import is_package

    p = Path(path)
    return detect_backend(p) is not None or (p.exists() and is_package(p))


def model_card(path: str | Path, *, source: str | None = None,
               data_roots: list[str | Path] | None = None) -> tuple[dict, str]:
    """The card of one model and where it came from.

    Parameters
    ----------
    path : path
        A model folder or file, or a bioimage.io package.
    source : str, optional
        Where it was found (``project``/``cache``/``path``), added to the card.
    data_roots : list of path, optional
        Passed to :func:`~opsef_core.zoo.cards.build_card`.

    Returns
    -------
    card : dict
    how : str
        ``"card.json"`` (the folder's current card), ``"package"`` (the card a bioimage.io
        package carries) or ``"built"``.

    Raises
    ------
    InputFileError, ModelNotFoundError
        Not a model, or a package opsef cannot read.
    """
    from .bioimageio import is_package, package_card

    p = Path(path)
    if detect_backend(p) is None and is_package(p):
        card, how = package_card(p), "package"
    else:
        written = read_card(p)
        if written is not None and card_is_current(p, data_roots=data_roots):
            card, how = written, "card.json"
        else:
            card, how = build_card(p, data_roots=data_roots), "built"
    if source is not None:
        card = {**card, "source": source}
    return card, how


def _candidates(paths: Iterable[str | Path], caches: bool) -> list[tuple[Path, str]]:
    from ..models import project_models_dir

    found: list[tuple[Path, str]] = []
    project = project_models_dir()
    found += [(p, "project") for p in model_folders(project)]
    if project.is_dir():
        found += [(p, "project") for p in sorted(project.iterdir())
                  if p.is_file() and p.suffix.lower() in (".pth", ".pt")]
        found += [(p, "project") for p in _packages_in(project)]
    if caches:
        from ..segment.cellpose_backend import cellpose_model_dir
        from ..segment.stardist_backend import keras_cache_dirs

        found += [(p, "cache") for p in _cellpose_cache_models(cellpose_model_dir())]
        for root in keras_cache_dirs():
            found += [(p, "cache") for p in _stardist_cache_models(root)]
    for given in paths:
        p = Path(given).expanduser()
        if not p.exists():
            raise InputFileError("model path does not exist", p)
        if is_model(p):
            found.append((p, "path"))
            continue
        inside = model_folders(p) + _packages_in(p) if p.is_dir() else []
        if not inside:
            raise InputFileError("not a model, nor a folder of model folders or bioimage.io packages", p)
        found += [(q, "path") for q in inside]
    seen, out = set(), []
    for p, source in found:
        key = p.absolute()
        if key not in seen:
            seen.add(key)
            out.append((p, source))
    return out


def find_models(paths: Iterable[str | Path] = (), *, caches: bool = True,
                data_roots: list[str | Path] | None = None) -> list[dict]:
    """List every model found, each with its card.

    Parameters
    ----------
    paths : iterable of path
        Extra model folders/files, or folders of model folders.
    caches : bool
        Also look in the Cellpose and StarDist (Keras) caches.
    data_roots : list of path, optional
        Where :func:`~opsef_core.zoo.cards.build_card` looks for training images of models
        without a current card.

    Returns
    -------
    list of dict
        Cards, each with ``path`` (str), ``source`` (``project``/``cache``/``path``) and
        ``card_file`` (``"card.json"`` when read from the folder's current card, ``"package"``
        for a bioimage.io package's own card, else ``"built"``).  A model found in the project or a
        cache that cannot be read is skipped with a warning naming it.

    Raises
    ------
    InputFileError
        A given path that does not exist or holds no model.
    ModelNotFoundError
        A given path that is a package opsef cannot read.
    """
    out = []
    for path, source in _candidates(paths, caches):
        try:
            card, how = model_card(path, data_roots=data_roots)
        except (InputFileError, ModelNotFoundError) as exc:
            if source == "path":  # a model the user named: say so, do not skip it
                raise
            logger.warning("skipped %s: %s", path, exc)
            continue
        out.append({**card, "path": str(path), "source": source, "card_file": how})
    return out


def _fmt_size(expects: dict) -> str:
    d = expects.get("object_diameter_px")
    ps = expects.get("pixel_size") or {}
    px = "x".join(f"{v:g}" for v in ps.values()) + " µm" if ps else "? µm"
    return f"{d:g} px @ {px}" if d is not None else f"? px @ {px}"


def _fmt_score(card: dict) -> str:
    """The score a user compares models by: a test score (never trained on) before a validation one."""
    test, validation = card.get("test") or {}, card.get("validation") or {}
    held = test.get("heldout") or {}
    if isinstance(held.get("f1@0.5"), (int, float)):
        return f"held-out F1@0.5 {held['f1@0.5']:.3f}"
    unseen = test.get("unseen_test") or {}
    if isinstance(unseen.get("jcd_mean"), (int, float)):
        return f"unseen JCD {unseen['jcd_mean']:.3f}"
    if isinstance(validation.get("validation_f1@0.5"), (int, float)):
        return f"val F1@0.5 {validation['validation_f1@0.5']:.3f}"
    if isinstance(validation.get("validation_jcd"), (int, float)):
        return f"val JCD {validation['validation_jcd']:.3f}"
    if isinstance(validation.get("best_val_loss"), (int, float)):
        return f"val loss {validation['best_val_loss']:.3f}"
    return "-"


def format_models(cards: list[dict]) -> str:
    """A plain-text table of models (one line each) for ``opsef models``."""
    if not cards:
        return "no models found"
    rows = [("name", "backend", "dims", "source", "objects (expects)", "score", "sha256", "path")]
    for c in cards:
        rows.append((c["name"], c["backend"], f"{c.get('dims')}D", c["source"], _fmt_size(c.get("expects", {})),
                     _fmt_score(c), c["sha256"][:12], c["path"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths)) + "  " + str(r[-1])
                     for r in rows)
