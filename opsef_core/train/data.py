"""Training data shared by every trainer: image/label pairs, splits, augmentation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, EmptyFolderError, InputFileError
from ..io.naming import file_stem

__all__ = ["TrainingPairs", "load_pairs", "split_indices", "Augmentation", "augment", "OPTION_NAMES",
           "take_deprecated", "resolve_init", "EarlyStopping"]

logger = logging.getLogger(__name__)

#: the one vocabulary of training options every trainer and ``opsef train`` use
OPTION_NAMES = ("init", "epochs", "learning_rate", "patch_size", "steps_per_epoch", "batch_size",
                "val_fraction", "patience", "seed")


def take_deprecated(trainer: str, given: dict, renames: dict[str, str], values: dict) -> dict:
    """Move deprecated keyword arguments of a trainer onto their new names.

    Parameters
    ----------
    trainer : str
        The trainer's name (for messages), e.g. ``"train_unet"``.
    given : dict
        The extra keyword arguments the trainer received (``**deprecated``).
    renames : dict
        ``{old name: new name}``.
    values : dict
        The values of the new names as passed (``None`` = not given); updated and returned.

    Returns
    -------
    dict
        ``values`` with every old name's value under its new name.

    Raises
    ------
    ConfigError
        An unknown keyword, or an old and a new name given together.

    Warns
    -----
    DeprecationWarning
        Once per old name used.
    """
    import warnings

    unknown = [k for k in given if k not in renames]
    if unknown:
        raise ConfigError(f"{trainer}: unknown option(s) {unknown}; the options are "
                          f"{', '.join(OPTION_NAMES)} and the trainer's own (see its docstring)")
    for old, value in given.items():
        new = renames[old]
        warnings.warn(f"{trainer}({old}=...) is deprecated; use {new}=...", DeprecationWarning, stacklevel=3)
        if values.get(new) is not None:
            raise ConfigError(f"{trainer}: give {new!r} only ({old!r} is its deprecated name)")
        values[new] = value
    return values


def resolve_init(backend: str, init: str | Path | None) -> tuple[Path | None, dict | None]:
    """Find the model a fine-tuning starts from, as run configs find models.

    Parameters
    ----------
    backend : {"stardist", "cellpose", "unet"}
        The trainer's backend (selects the caches searched besides ``models/``).
    init : str or path, optional
        A model name (``"stardist2d_demo"``) or a path; None trains from random weights.

    Returns
    -------
    (Path or None, dict or None)
        The model's file or folder and the record ``training.json`` keeps:
        ``{"name", "path", "sha256", "source"}``.

    Raises
    ------
    ModelNotFoundError
        The model is nowhere (the message lists the places looked at).
    """
    import importlib

    from ..models import resolve_model

    if init is None:
        return None, None
    try:  # registers the backend's cache folders with the resolver
        importlib.import_module(f"..segment.{backend}_backend", __package__)
    except ImportError:  # pragma: no cover - the backend's library is missing
        pass
    found = resolve_model(backend, init, download=False)
    return found.path, {"name": str(init), "path": str(found.path), "sha256": found.checksum,
                        "source": found.source}


@dataclass
class TrainingPairs:
    """Images and their label images, matched by file name.

    Attributes
    ----------
    images : list of ndarray
        Spatial arrays (``YX`` or ``ZYX``), or ``CYX``/``CZYX`` for multichannel input.
    labels : list of ndarray
        Integer label arrays with the images' spatial shape.  Checked on construction by
        :func:`opsef_core.measure.check_labels` (the one label rule: integral floats become
        int64, booleans int32; fractions, NaN and negative values are refused, naming the pair).
    names : list of str
        File stems, in the same order.
    """

    images: list
    labels: list
    names: list

    def __post_init__(self):
        from ..measure import check_labels

        if not len(self.images) == len(self.labels) == len(self.names):
            raise ConfigError(f"{len(self.images)} images, {len(self.labels)} label images and "
                              f"{len(self.names)} names: they must pair up")
        self.labels = [check_labels(lab, ndim=None, source=name, what="training labels")
                       for lab, name in zip(self.labels, self.names)]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> "TrainingPairs":
        """Pairs at the given indices."""
        return TrainingPairs([self.images[i] for i in indices], [self.labels[i] for i in indices],
                             [self.names[i] for i in indices])


def load_pairs(
    image_dir: str | Path,
    label_dir: str | Path,
    pattern: str = "*.tif*",
    channel: int | str | None = None,
    label_suffix: str = "",
) -> TrainingPairs:
    """Load image/label pairs from two folders, matched by file stem.

    Parameters
    ----------
    image_dir, label_dir : path
        Folders of images and of label images.  A label file matches an image
        when its stem equals the image stem plus ``label_suffix``.
    pattern : str
        Glob for the image files.
    channel : int or str, optional
        Channel to keep from multichannel images (all channels when None).
    label_suffix : str
        Extra text at the end of label stems (e.g. ``"_labels"``).

    Returns
    -------
    TrainingPairs

    Raises
    ------
    EmptyFolderError
        When no image has a matching label file.
    InputFileError
        When an image and its labels differ in spatial shape.
    """
    from ..io import read_image, read_labels

    image_dir, label_dir = Path(image_dir), Path(label_dir)
    labels_by_stem = {file_stem(p): p for p in Path(label_dir).glob("*.tif*")}
    images, labels, names = [], [], []
    for path in sorted(image_dir.glob(pattern)):
        stem = file_stem(path)
        lab_path = labels_by_stem.get(stem + label_suffix)
        if lab_path is None:
            logger.warning("%s: no label image in %s, skipped", path, label_dir)
            continue
        img = read_image(path)
        if channel is not None:
            img = img.sel(c=channel)
        img = img.sel(t=0)
        lab = read_labels(lab_path)
        spatial_shape = tuple(img.size(a) for a in img.spatial_axes)
        if tuple(lab.shape) != spatial_shape:
            raise InputFileError(
                f"label image shape {lab.shape} differs from the image's spatial shape {spatial_shape} "
                f"({path.name})", lab_path)
        images.append(np.asarray(img.data))
        labels.append(np.asarray(lab))
        names.append(stem)
    if not images:
        raise EmptyFolderError(f"no image matching {pattern!r} has a label file in {label_dir}", image_dir)
    return TrainingPairs(images, labels, names)


def training_provenance(packages: Sequence[str] = ()) -> dict:
    """The version fields every ``training.json`` carries (one helper for all trainers).

    Parameters
    ----------
    packages : sequence of str
        Distribution names whose installed versions are recorded besides opsef's
        (absent ones are left out).

    Returns
    -------
    dict
        ``{"opsef_version": opsef_core.__version__, "versions": {"python": ..., "opsef-core": ...,
        <package>: ...}}`` — ``opsef_version`` is the value a run record stores (never null);
        the package versions come from :func:`opsef_core.record.package_versions`.
    """
    import platform

    from .. import __version__
    from ..record import package_versions

    names = tuple(dict.fromkeys(("opsef-core", *packages)))
    return {"opsef_version": __version__,
            "versions": {"python": platform.python_version(), **package_versions(names)}}


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Shuffle ``range(n)`` with a seeded generator and split it into train and validation.

    At least one item goes to each side when ``n >= 2``; with ``n == 1`` the
    single item is used for both (and a warning is logged).
    """
    if n < 1:
        raise ValueError("no training pairs")
    if n == 1:
        logger.warning("only one training pair: it is used for validation too")
        return [0], [0]
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


class Augmentation(BaseModel):
    """Augmentation options, each applied with probability ``probability``."""

    model_config = ConfigDict(extra="forbid")

    flips: bool = True
    rotations90: bool = True
    intensity_scale: tuple[float, float] | None = (0.8, 1.2)
    gaussian_noise: float = Field(0.0, ge=0, description="noise sigma, relative to the image's std")
    poisson_noise: bool = False
    probability: float = Field(0.5, ge=0, le=1)


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            options: Augmentation | None = None, channel_axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment one image/label pair (same geometric transform for both).

    Parameters
    ----------
    image : ndarray
        Spatial array; with ``channel_axis`` set, that axis is a channel axis.
    labels : ndarray
        Labels with the image's spatial shape.
    rng : numpy.random.Generator
        Source of randomness (seeded by the caller).
    options : Augmentation, optional
        Which augmentations to apply.
    channel_axis : int, optional
        Axis of ``image`` holding channels (must be 0 when given).

    Returns
    -------
    (ndarray, ndarray)
        Augmented float32 image and labels.
    """
    o = options or Augmentation()
    img = np.asarray(image, dtype=np.float32)
    lab = np.asarray(labels)
    off = 1 if channel_axis is not None else 0
    ndim = lab.ndim
    yx = (ndim - 2, ndim - 1)
    if o.flips:
        for ax in yx:
            if rng.random() < o.probability:
                img = np.flip(img, ax + off)
                lab = np.flip(lab, ax)
    if o.rotations90 and rng.random() < o.probability and lab.shape[-1] == lab.shape[-2]:
        k = int(rng.integers(1, 4))
        img = np.rot90(img, k, axes=(yx[0] + off, yx[1] + off))
        lab = np.rot90(lab, k, axes=yx)
    if o.intensity_scale and rng.random() < o.probability:
        img = img * float(rng.uniform(*o.intensity_scale))
    if o.gaussian_noise > 0 and rng.random() < o.probability:
        img = img + rng.normal(0, o.gaussian_noise * (float(img.std()) or 1.0), img.shape).astype(np.float32)
    if o.poisson_noise and rng.random() < o.probability:
        lo = float(img.min())
        scale = 255.0 / max(float(img.max()) - lo, 1e-6)
        img = rng.poisson((img - lo) * scale).astype(np.float32) / scale + lo
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


class EarlyStopping:
    """Early stopping on a validation score (lower is better) that keeps the best weights.

    ``step(score, net)`` after each epoch: a better score stores a CPU copy of ``net``'s weights
    (:attr:`best_state`); ``patience`` epochs in a row without one, or ``max_time_s`` seconds since
    ``t0``, end training (:attr:`stopped` says why: ``"epochs"``, ``"early_stopping"``,
    ``"max_time_s"``).  Shared by the U-Net trainer and the training recipes in ``scripts/``.
    """

    def __init__(self, patience: int, *, max_time_s: float | None = None, t0: float | None = None):
        import math
        import time

        self.patience, self.max_time_s = int(patience), max_time_s
        self.t0 = time.perf_counter() if t0 is None else t0
        self.best, self.best_state, self.stale, self.stopped = math.inf, None, 0, "epochs"

    def step(self, score: float, net) -> bool:
        """Record one epoch's score; True when training should stop."""
        import time

        improved = score < self.best
        if improved:
            self.best, self.stale = score, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            self.stale += 1
            if self.stale >= self.patience:
                self.stopped = "early_stopping"
                return True
        if self.max_time_s is not None and time.perf_counter() - self.t0 > self.max_time_s:
            self.stopped = "max_time_s"
            return True
        return False

