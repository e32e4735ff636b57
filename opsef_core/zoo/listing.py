"""Find every model opsef can use: the project's ``models/``, the Cellpose and StarDist caches, paths given.

Places, in this order (the order :func:`opsef_core.models.resolve_model` searches names):

1. ``project``: model folders (and ``.pth``/``.pt`` files) in
   :func:`opsef_core.models.project_models_dir` (``$OPSEF_MODELS_DIR`` or ``models/``);
2. ``cache``: Cellpose's model folder (``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``;
   its files) and the Keras caches where StarDist keeps downloads (``$KERAS_HOME`` and
   ``~/.keras``: ``models/StarDist2D|StarDist3D/<name>/`` folders holding a ``config.json``);
3. ``path``: each path given — a model folder or file, or a folder of model folders.

Each model comes with its card: the ``card.json`` beside the weights when there is one (and it
is current), else one built on the spot by :func:`opsef_core.zoo.cards.build_card`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputFileError
from .cards import build_card, card_is_current, detect_backend, model_folders, read_card

__all__ = ["find_models", "format_models"]

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


def _candidates(paths: Iterable[str | Path], caches: bool) -> list[tuple[Path, str]]:
    from ..models import project_models_dir

    found: list[tuple[Path, str]] = []
    project = project_models_dir()
    found += [(p, "project") for p in model_folders(project)]
    if project.is_dir():
        found += [(p, "project") for p in sorted(project.iterdir())
                  if p.is_file() and p.suffix.lower() in (".pth", ".pt")]
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
        if detect_backend(p) is not None:
            found.append((p, "path"))
            continue
        inside = model_folders(p) if p.is_dir() else []
        if not inside:
            raise InputFileError("not a model, nor a folder of model folders", p)
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
        ``card_file`` (``"card.json"`` when read from the folder's current card, else
        ``"built"``).

    Raises
    ------
    InputFileError
        A given path that does not exist or holds no model.
    """
    out = []
    for path, source in _candidates(paths, caches):
        try:
            written = read_card(path)
            if written is not None and card_is_current(path, data_roots=data_roots):
                card, how = written, "card.json"
            else:
                card, how = build_card(path, data_roots=data_roots), "built"
        except InputFileError as exc:
            logger.warning("skipped %s: %s", path, exc)
            continue
        out.append({**card, "path": str(path), "source": source, "card_file": how})
    return out


def _fmt_size(expects: dict) -> str:
    d = expects.get("object_diameter_px")
    ps = expects.get("pixel_size") or {}
    px = "x".join(f"{v:g}" for v in ps.values()) + " µm" if ps else "? µm"
    return f"{d:g} px @ {px}" if d is not None else f"? px @ {px}"


def _fmt_score(validation: dict) -> str:
    for key in ("validation_f1@0.5",):
        if isinstance(validation.get(key), (int, float)):
            return f"F1@0.5 {validation[key]:.3f}"
    if isinstance(validation.get("best_val_loss"), (int, float)):
        return f"val loss {validation['best_val_loss']:.3f}"
    return "-"


def format_models(cards: list[dict]) -> str:
    """A plain-text table of models (one line each) for ``opsef models``."""
    if not cards:
        return "no models found"
    rows = [("name", "backend", "dims", "source", "objects (expects)", "validation", "sha256", "path")]
    for c in cards:
        rows.append((c["name"], c["backend"], f"{c.get('dims')}D", c["source"], _fmt_size(c.get("expects", {})),
                     _fmt_score(c.get("validation", {})), c["sha256"][:12], c["path"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths)) + "  " + str(r[-1])
                     for r in rows)
