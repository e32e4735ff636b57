"""Model cards: what a model is, what it expects and how it was made, as JSON beside its weights.

A card (``card.json`` in a model folder) is built by :func:`build_card` from the files the
trainers write — ``training.json`` (options, seed, split, history, validation scores,
versions, the model it was fine-tuned from) and ``config.json`` (StarDist's or opsef's U-Net
architecture) — and from the training images it names, when they can be found (object size
and pixel size).  Nothing in a card is typed by hand: :func:`write_cards` regenerates the
cards of every model folder, and :func:`card_is_current` tells whether a written card still
equals what the builder gives now (the test of the bundled cards).

Fields (``card_version`` 2):

- ``name``, ``backend`` (``stardist``/``cellpose``/``unet``), ``dims`` (2 or 3), ``variant``;
- ``sha256``: :func:`opsef_core.models.file_checksum` of the model (the value run records
  hold; the card itself is left out of it), ``files`` and ``size_bytes``;
- ``training_data``: training and validation image names, their folder when found, and the
  number of objects;
- ``expects``: ``pixel_size`` (µm per axis, of the training images) and ``object_diameter_px``
  (median equivalent diameter of the training objects, in pixels; for Cellpose the network's
  ``diam_mean``, the size it segments at scale 1);
- ``recommended``: segmenter parameters to use it with (thresholds from ``thresholds.json``);
- ``validation``: the scores the trainer recorded on its validation images;
- ``test`` (version 2): scores recorded on images never trained or validated on — ``heldout``
  (a named stack, e.g. the 3D demo models' ``noncleared/spheroid_00``) and ``unseen_test`` (a
  generator seed never drawn for training, e.g. the spheroid model's) — with the ``targets``
  they are held to; empty when the trainer recorded none;
- ``training``: how it was trained (options, seed, epochs run, wall time, versions, ``init``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputFileError
from ..models import CARD_NAME, file_checksum

__all__ = [
    "CARD_VERSION",
    "build_card",
    "card_is_current",
    "detect_backend",
    "model_files",
    "model_folders",
    "object_diameter",
    "read_card",
    "write_card",
    "write_cards",
]

logger = logging.getLogger(__name__)

CARD_VERSION = 2
#: files of a model folder that are descriptions, not weights
_META = {CARD_NAME, "training.json", "config.json", "thresholds.json", "README.md"}
#: training-record keys copied into the card's ``training`` section when present
_TRAINING_KEYS = ("seed", "epochs_run", "best_epoch", "best_val_loss", "stopped_by", "wall_time_s",
                  "n_parameters", "opsef_version", "versions", "weights_dtype", "created", "finished")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputFileError(f"unreadable JSON: {exc}", path) from None
    return data if isinstance(data, dict) else None


def detect_backend(path: str | Path) -> str | None:
    """The segmentation backend a model file or folder belongs to, or None when it is not a model.

    Parameters
    ----------
    path : path
        A model folder (``config.json``/``training.json``/weights) or a weights file.

    Returns
    -------
    str or None
        ``"stardist"`` (``config.json`` with ``n_rays``), ``"unet"`` (``config.json`` of format
        ``opsef-unet``), ``"cellpose"`` (a ``.pth`` or a Cellpose cache file, or a folder whose
        ``training.json`` says so), else None.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in (".pth", ".pt", "") and not path.name.startswith("."):
            return "cellpose"
        return None
    if not path.is_dir():
        return None
    config = _read_json(path / "config.json") or {}
    training = _read_json(path / "training.json") or {}
    if config.get("format") == "opsef-unet":
        return "unet"
    if "n_rays" in config:
        return "stardist"
    if training.get("backend") in ("stardist", "cellpose", "unet"):
        return training["backend"]
    if (path / "weights.pth").is_file():
        return "cellpose"
    return None


def object_diameter(labels: list[np.ndarray]) -> float | None:
    """Median equivalent diameter of every object of some label images, in pixels.

    2D: ``2 sqrt(area / pi)``; 3D: ``(6 volume / pi)^(1/3)`` (voxels, not scaled by anisotropy).

    Returns
    -------
    float or None
        None when the labels hold no object.
    """
    sizes = []
    ndim = None
    for lab in labels:
        counts = np.bincount(np.asarray(lab, dtype=np.int64).ravel())[1:]
        sizes.extend(counts[counts > 0].tolist())
        ndim = np.ndim(lab)
    if not sizes:
        return None
    m = float(np.median(sizes))
    return round(2 * np.sqrt(m / np.pi) if ndim == 2 else (6 * m / np.pi) ** (1 / 3), 2)


def _find_training_files(names: list[str], roots: list[Path]) -> list[tuple[Path, Path]]:
    """``(image, label)`` files of training names (``stem`` or ``condition/stem``) under ``roots``.

    A name is found as ``<root>/**/[condition/]images/<stem>.tif*`` with the label file of the same
    name in the sibling ``labels`` folder; names found nowhere or in several places are skipped.
    """
    out = []
    for name in names:
        parts = name.split("/")
        stem, cond = parts[-1], parts[:-1]
        hits = []
        for root in roots:
            if not root.is_dir():
                continue
            pattern = "/".join(["**", *cond, "images", f"{stem}.tif*"])
            for img in root.glob(pattern):
                lab = img.parent.parent / "labels" / img.name
                if lab.is_file():
                    hits.append((img, lab))
        if len(set(hits)) == 1:
            out.append(hits[0])
    return out


def _data_section(folder: Path, training: dict, roots: list[Path]) -> tuple[dict, dict]:
    """The card's ``training_data`` and the measured part of ``expects``."""
    from .. import io

    train = training.get("train_names") or training.get("train") or []
    val = training.get("val_names") or training.get("validation") or []
    data = dict(training.get("data") or {})
    section: dict[str, Any] = {"train": list(train), "validation": list(val)}
    if data.get("images"):
        section["images"], section["labels"] = data.get("images"), data.get("labels")
    expects: dict[str, Any] = {"pixel_size": data.get("pixel_size"),
                               "object_diameter_px": data.get("object_diameter_px")}
    if expects["object_diameter_px"] is None and (train or val):
        files = _find_training_files(list(train) + list(val), roots)
        if files:
            try:
                labels = [io.read_labels(lab) for _, lab in files]
                expects["object_diameter_px"] = object_diameter(labels)
                section["n_objects"] = int(sum(len(np.unique(lab)) - (lab.min() == 0) for lab in labels))
                section.setdefault("images", _common_folder([img.parent for img, _ in files], roots))
                ps = io.read_image(files[0][0]).pixel_size
                expects["pixel_size"] = expects["pixel_size"] or (dict(ps) if ps else None)
            except Exception as exc:  # noqa: BLE001 - a card must not fail on one unreadable file
                logger.warning("%s: training images not measured (%s)", folder, exc)
    return section, expects


def _common_folder(folders: list[Path], roots: list[Path]) -> str:
    """The folder holding all ``images`` folders, relative to the root it lies in."""
    import os

    common = Path(os.path.commonpath([str(f) for f in folders]))
    if common.name == "images":
        common = common.parent
    for root in roots:
        try:
            return (Path(root.name) / common.relative_to(root)).as_posix()
        except ValueError:
            continue
    return common.as_posix()


def model_files(path: str | Path) -> tuple[list[str], int]:
    """A model's files (a folder's, its card left out; or the file itself) and their total bytes."""
    path = Path(path)
    if not path.is_dir():
        return [path.name], int(path.stat().st_size)
    files = sorted(p.name for p in path.iterdir() if p.is_file() and p.name != CARD_NAME)
    return files, int(sum((path / f).stat().st_size for f in files))


def build_card(path: str | Path, *, data_roots: list[str | Path] | None = None,
               source: str | None = None) -> dict:
    """Build the card of one model (file or folder) from its own files.

    Parameters
    ----------
    path : path
        A model folder or a weights file (a Cellpose cache file).
    data_roots : list of path, optional
        Folders searched for the training images ``training.json`` names (to measure object
        and pixel size); default: the repository's ``demo_data/``.
    source : str, optional
        Where the model was found (``project``, ``cache``, ``path``); not written to ``card.json``.

    Returns
    -------
    dict
        The card (see the module docstring).

    Raises
    ------
    InputFileError
        The path is not a model of a known backend, or one of its JSON files is unreadable.
    """
    path = Path(path)
    backend = detect_backend(path)
    if backend is None:
        raise InputFileError("not a StarDist, Cellpose or U-Net model (no config.json/training.json/"
                             "weights found)", path)
    roots = [Path(r) for r in data_roots] if data_roots is not None else \
        [Path(__file__).resolve().parents[2] / "demo_data"]
    is_dir = path.is_dir()
    config = (_read_json(path / "config.json") if is_dir else None) or {}
    training = (_read_json(path / "training.json") if is_dir else None) or {}
    thresholds = (_read_json(path / "thresholds.json") if is_dir else None) or {}
    files, size = model_files(path)
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": path.name,
        "backend": backend,
        "dims": None,
        "variant": None,
        "sha256": file_checksum(path),
        "files": files,
        "size_bytes": int(size),
    }
    if source is not None:
        card["source"] = source
    recommended: dict[str, Any] = {"model": path.name}
    if backend == "stardist":
        card["dims"] = int(config.get("n_dim", training.get("dims", 2)))
        card["variant"] = f"{config.get('n_rays')} rays, grid {config.get('grid')}"
        thr = thresholds or training.get("thresholds") or {}
        if thr:
            recommended.update(prob_thresh=round(float(thr["prob"]), 4), nms_thresh=round(float(thr["nms"]), 4))
    elif backend == "unet":
        card["dims"] = int(config.get("dims", 2))
        card["variant"] = config.get("variant")
    else:
        card["dims"] = 2
        card["variant"] = "CPnet"
    data, expects = _data_section(path, training, roots) if is_dir else ({}, {"pixel_size": None,
                                                                               "object_diameter_px": None})
    if backend == "cellpose" and training.get("diam_mean") is not None:
        # the network's own size convention: objects of diam_mean px at scale 1
        expects["object_diameter_px"] = round(float(training["diam_mean"]), 2)
    card["training_data"] = data
    card["expects"] = expects
    card["recommended"] = recommended
    card["validation"] = {k: v for k, v in training.items() if k.startswith("validation_")}
    if "best_val_loss" in training:
        card["validation"]["best_val_loss"] = training["best_val_loss"]
    card["test"] = {k: training[k] for k in ("heldout", "unseen_test", "targets") if isinstance(training.get(k), dict)}
    card["training"] = None if not training else {
        "options": training.get("params", {}),
        "init": training.get("init", training.get("initial_weights")),
        **{k: training[k] for k in _TRAINING_KEYS if k in training},
    }
    if card["training"] is not None and "seed" not in card["training"]:
        card["training"]["seed"] = (training.get("params") or {}).get("seed")
    return card


def model_folders(root: str | Path) -> list[Path]:
    """Model folders directly inside ``root`` (those :func:`detect_backend` recognises), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
            and detect_backend(p) is not None]


def write_card(folder: str | Path, **kwargs) -> Path:
    """Build and write ``card.json`` into a model folder (atomically); returns its path."""
    from ..record import atomic_write_json

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError("cards are written into model folders", folder)
    path = folder / CARD_NAME
    atomic_write_json(path, build_card(folder, **kwargs))
    return path


def write_cards(root: str | Path, **kwargs) -> list[Path]:
    """Write the card of every model folder in ``root`` (e.g. the project's ``models/``)."""
    return [write_card(f, **kwargs) for f in model_folders(root)]


def read_card(path: str | Path) -> dict | None:
    """The ``card.json`` of a model folder, or None when it has none."""
    path = Path(path)
    return _read_json(path / CARD_NAME) if path.is_dir() else None


def card_is_current(folder: str | Path, **kwargs) -> bool:
    """Whether a folder's written card equals the card :func:`build_card` gives now."""
    written = read_card(folder)
    return written is not None and json.loads(json.dumps(build_card(folder, **kwargs))) == written
