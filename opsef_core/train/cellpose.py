"""Train or fine-tune a Cellpose (3.1.1.2, CPnet) model on image/label pairs.

:func:`train_cellpose` wraps ``cellpose.train.train_seg`` and writes a model *folder*::

    out_dir/
        weights.pth     state dict (float16 weights when ``half=True``; read by
                        ``CellposeModel(pretrained_model=out_dir / "weights.pth")`` and by
                        the opsef ``cellpose`` backend with ``model=str(out_dir)``)
        training.json   parameters, seed, losses, sizes, versions, wall time, checksum

:func:`train_demo_cellpose` trains ``models/cellpose_demo`` on ``demo_data/nuclei2d``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError, SegmentationError
from .data import (Augmentation, TrainingPairs, augment, resolve_init, split_indices, take_deprecated,
                   training_provenance)

__all__ = ["train_cellpose", "train_demo_cellpose", "to_cellpose_input", "WEIGHTS_NAME"]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "weights.pth"


def to_cellpose_input(image: np.ndarray, channels: Optional[Sequence[Optional[int]]] = None) -> np.ndarray:
    """Turn a ``YX`` or ``CYX`` training image into Cellpose's 2-channel ``(2, Y, X)`` float32 input.

    Parameters
    ----------
    image : ndarray
        ``YX`` (one channel) or ``CYX`` (channel axis first, as :func:`load_pairs` gives).
    channels : (int, int or None), optional
        ``(channel to segment, nuclear channel or None)`` indices into the C axis; required
        for ``CYX`` with more than one channel.

    Returns
    -------
    ndarray
        ``(2, Y, X)``: the segmented channel and the nuclear channel (zeros when none).
    """
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        if channels not in (None, (0, None), [0, None]):
            raise ConfigError(f"channels {channels} given for a single-channel YX training image")
        main, nuc = a, None
    elif a.ndim == 3:
        if channels is None:
            if a.shape[0] != 1:
                raise ConfigError(f"training images have {a.shape[0]} channels (CYX {a.shape}); "
                                  "choose channels=(segment, nuclear or None)")
            channels = (0, None)
        main = a[channels[0]]
        nuc = a[channels[1]] if len(channels) > 1 and channels[1] is not None else None
    else:
        raise ConfigError(f"Cellpose training takes 2D images (YX or CYX), got shape {a.shape}")
    return np.stack([main, np.zeros_like(main) if nuc is None else nuc])


def _median_diameter(labels: list[np.ndarray]) -> float:
    """Median equivalent-circle diameter of all objects (pixels)."""
    areas = []
    for lab in labels:
        counts = np.bincount(np.asarray(lab, dtype=np.int64).ravel())[1:]
        areas.extend(counts[counts > 0].tolist())
    if not areas:
        raise SegmentationError("the training labels contain no objects")
    return float(np.sqrt(4 * np.median(areas) / np.pi))


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _halve_state_dict(path_in: Path, path_out: Path) -> None:
    """Save the state dict with float16 weights (scalars such as ``diam_mean`` stay float32)."""
    import torch

    sd = torch.load(path_in, map_location="cpu", weights_only=True)
    half = {k: (v.half() if v.is_floating_point() and v.numel() > 1 else v) for k, v in sd.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path_out.name}.", suffix=".tmp", dir=path_out.parent)
    os.close(fd)
    torch.save(half, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path_out)


def _check_loads(weights: Path, reference_sd: dict, device) -> None:
    """Load ``weights`` with cellpose's normal path and compare the parameters to ``reference_sd``."""
    import torch
    from cellpose.models import CellposeModel

    model = CellposeModel(gpu=False, pretrained_model=os.fspath(weights), device=device, nchan=2)
    loaded = model.net.state_dict()
    for k, ref in reference_sd.items():
        got = loaded[k].detach().cpu()
        ref = ref.detach().cpu()
        if ref.is_floating_point() and ref.numel() > 1:
            ref = ref.half().float()
        if not torch.allclose(got.float(), ref.float(), rtol=0, atol=0):
            raise RuntimeError(f"cellpose did not read {k} of {weights} back unchanged")


def train_cellpose(
    pairs: TrainingPairs,
    out_dir: str | Path,
    init: Optional[str] = None,
    epochs: Optional[int] = None,
    learning_rate: float = 0.005,
    weight_decay: float = 1e-5,
    batch_size: int = 8,
    patch_size: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    patience: Optional[int] = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    augmentation: Optional[Augmentation] = None,
    augment_copies: int = 1,
    channels: Optional[Sequence[Optional[int]]] = None,
    min_train_masks: int = 1,
    diam_mean: Optional[float] = None,
    nimg_per_epoch: Optional[int] = None,
    rescale: bool = True,
    half: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    **deprecated,
) -> Path:
    """Train a Cellpose CPnet (from no weights or fine-tuning) with ``cellpose.train.train_seg``.

    Parameters
    ----------
    pairs : TrainingPairs
        2D images (``YX`` or ``CYX``) and label images.
    out_dir : path
        Model folder to create (``weights.pth`` + ``training.json``).
    init : str, optional
        None trains from random weights; a model name (``"nuclei"``, ``"cellpose_demo"``) or
        path fine-tunes it (resolved with :func:`opsef_core.train.data.resolve_init`; recorded
        in ``training.json`` as ``init``: name, path, sha256).
    epochs, learning_rate, weight_decay, batch_size
        Passed to ``train_seg`` (``n_epochs``, default 100; AdamW; the learning rate warms up
        linearly over the first 10 epochs, so from no weights use at least ~50 epochs, and a
        short fine-tune needs a larger ``learning_rate``).
    patch_size : int, optional
        Training patch edge in pixels (cellpose's ``bsize``, default 128).
    steps_per_epoch : int, optional
        Optimisation steps per epoch: ``nimg_per_epoch = steps_per_epoch * batch_size``
        images are drawn per epoch (give one of the two).
    patience : int, optional
        Not supported: ``cellpose.train.train_seg`` has no early stopping (a value is
        refused with :class:`ConfigError` rather than ignored).
    val_fraction : float
        Fraction of pairs held out for the validation loss (seeded split).
    seed : int
        Seeds the split, the augmentation and the weight initialisation (cellpose itself
        seeds its batch order with the epoch number).
    augmentation : Augmentation, optional
        Extra augmentation (intensity, noise, flips) applied to ``augment_copies`` copies of
        each training image before training; cellpose adds random rotation, scaling and
        flips to every batch itself.
    augment_copies : int
        Number of augmented copies per training image (with ``augmentation``).
    channels : (int, int or None), optional
        Channel to segment and nuclear channel of ``CYX`` training images.
    min_train_masks : int
        Training images with fewer objects are dropped (cellpose's rule).
    diam_mean : float, optional
        Object diameter the network works at (new models only; default: the median
        diameter of the training objects, so ``diameter=None`` at inference means "objects
        as large as in training").
    nimg_per_epoch : int, optional
        Images drawn per epoch (default: the number of training images).
    rescale : bool
        Rescale training objects to ``diam_mean`` (cellpose's ``rescale``).
    half : bool
        Store the weights as float16 (verified to load back through cellpose).
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    overwrite : bool
        Replace an existing model folder.
    **deprecated
        Old names, accepted with a ``DeprecationWarning``: ``pretrained`` (``init``),
        ``n_epochs`` (``epochs``), ``bsize`` (``patch_size``).

    Returns
    -------
    Path
        The model folder.

    Raises
    ------
    ConfigError
        Bad parameters, or ``out_dir`` exists and ``overwrite`` is false.
    """
    opts = take_deprecated("train_cellpose", deprecated,
                           {"pretrained": "init", "n_epochs": "epochs", "bsize": "patch_size"},
                           {"init": init, "epochs": epochs, "patch_size": patch_size})
    init = opts["init"]
    n_epochs = 100 if opts["epochs"] is None else int(opts["epochs"])
    bsize = 128 if opts["patch_size"] is None else int(opts["patch_size"])
    if patience is not None:
        raise ConfigError("cellpose training has no early stopping (cellpose.train.train_seg): leave "
                          "patience/--patience unset and choose epochs")
    if steps_per_epoch is not None:
        if nimg_per_epoch is not None:
            raise ConfigError("give steps_per_epoch or nimg_per_epoch, not both")
        if steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        nimg_per_epoch = int(steps_per_epoch) * int(batch_size)
    import torch
    from cellpose import train as cp_train
    from cellpose.models import CellposeModel

    from ..segment.cellpose_backend import cellpose_weights_file
    from ..segment.device import resolve_device

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError("model folder exists already; choose another or pass overwrite=True", out_dir)
    if len(pairs) == 0:
        raise ConfigError("no training pairs")
    if n_epochs < 1 or batch_size < 1 or bsize < 32:
        raise ConfigError(f"need epochs >= 1, batch_size >= 1, patch_size >= 32 "
                          f"(got {n_epochs}, {batch_size}, {bsize})")
    for img, lab in zip(pairs.images, pairs.labels):
        if np.asarray(lab).ndim != 2:
            raise ConfigError(f"Cellpose training takes 2D label images, got shape {np.shape(lab)}")
    t0 = time.time()
    dev = torch.device(resolve_device(device, framework="torch"))
    rng = np.random.default_rng(seed)
    train_idx, val_idx = split_indices(len(pairs), val_fraction, seed)
    train_x = [to_cellpose_input(pairs.images[i], channels) for i in train_idx]
    train_y = [np.asarray(pairs.labels[i]).astype(np.int32) for i in train_idx]
    if augmentation is not None and augment_copies > 0:
        for i in range(len(train_x)):
            for _ in range(augment_copies):
                a, b = augment(train_x[i], train_y[i], rng, augmentation, channel_axis=0)
                train_x.append(a)
                train_y.append(b)
    val_x = [to_cellpose_input(pairs.images[i], channels) for i in val_idx]
    val_y = [np.asarray(pairs.labels[i]).astype(np.int32) for i in val_idx]
    if set(val_idx) == set(train_idx):
        val_x, val_y = None, None

    pretrained_path, init_record = None, None
    if init is not None:
        init_path, init_record = resolve_init("cellpose", init)
        pretrained_path = cellpose_weights_file(init_path)
    if diam_mean is None:
        diam_mean = round(_median_diameter(train_y), 1)
    normalize = {"normalize": True, "percentile": (1.0, 99.0), "lowhigh": None, "norm3D": True,
                 "sharpen_radius": 0, "smooth_radius": 0, "tile_norm_blocksize": 0,
                 "tile_norm_smooth3D": 1, "invert": False}
    params = dict(init=init, init_weights=str(pretrained_path) if pretrained_path else None,
                  epochs=n_epochs, learning_rate=learning_rate, weight_decay=weight_decay,
                  batch_size=batch_size, patch_size=bsize, steps_per_epoch=steps_per_epoch,
                  patience=None, val_fraction=val_fraction, seed=seed,
                  augmentation=augmentation.model_dump() if augmentation else None,
                  augment_copies=augment_copies if augmentation else 0,
                  channels=list(channels) if channels is not None else None,
                  min_train_masks=min_train_masks, diam_mean=diam_mean, nimg_per_epoch=nimg_per_epoch,
                  rescale=rescale, half=half, device=str(dev), normalize_percentiles=[1.0, 99.0])
    logger.info("training cellpose on %d images (%d validation), %d epochs", len(train_x),
                len(val_idx), n_epochs)

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".cellpose-train-", dir=out_dir))
    np_state = np.random.get_state()  # cellpose seeds numpy's global generator per epoch
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if pretrained_path is not None:
                model = CellposeModel(gpu=False, pretrained_model=os.fspath(pretrained_path), device=dev,
                                      nchan=2)
            else:
                model = CellposeModel(gpu=False, pretrained_model=False, diam_mean=float(diam_mean),
                                      device=dev, nchan=2)
            path, train_losses, test_losses = cp_train.train_seg(
                model.net, train_data=train_x, train_labels=train_y, test_data=val_x, test_labels=val_y,
                channels=None, normalize=normalize, batch_size=batch_size, learning_rate=learning_rate,
                weight_decay=weight_decay, n_epochs=n_epochs, save_path=os.fspath(work),
                save_every=n_epochs + 1, nimg_per_epoch=nimg_per_epoch, rescale=rescale, bsize=bsize,
                min_train_masks=min_train_masks, model_name="model")
        weights = out_dir / WEIGHTS_NAME
        if half:
            _halve_state_dict(Path(path), weights)
        else:
            os.replace(path, weights)
        _check_loads(weights, model.net.state_dict(), dev)
    finally:
        np.random.set_state(np_state)
        shutil.rmtree(work, ignore_errors=True)

    from ..models import file_checksum

    evaluated = [i for i in range(n_epochs) if i == 5 or i % 10 == 0]
    record = {
        "backend": "cellpose",
        "weights": WEIGHTS_NAME,
        "weights_sha256": file_checksum(weights),
        "weights_dtype": "float16" if half else "float32",
        "params": params,
        "init": init_record,
        "seed": seed,
        "diam_mean": float(model.net.diam_mean.item()),
        "diam_labels": float(model.net.diam_labels.item()),
        "train_names": [pairs.names[i] for i in train_idx],
        "val_names": [pairs.names[i] for i in val_idx] if val_x is not None else [],
        "n_train_images": len(train_x),
        "train_losses": [float(v) for v in train_losses],
        "val_losses": {str(i): float(test_losses[i]) for i in evaluated} if val_x is not None else {},
        **training_provenance(("cellpose", "torch", "numpy")),
        "wall_time_s": round(time.time() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(out_dir / "training.json", record)
    logger.info("cellpose model written to %s (%.1f s)", out_dir, record["wall_time_s"])
    return out_dir


def train_demo_cellpose(repo_root: str | Path, n_epochs: int = 60, seed: int = 0) -> Path:
    """Train the bundled demo model ``models/cellpose_demo`` on ``demo_data/nuclei2d``.

    Parameters
    ----------
    repo_root : path
        Repository root holding ``demo_data/`` and ``models/``.
    n_epochs : int
        Training epochs (from no weights; at least ~50).
    seed : int
        Seed of the split and initialisation.

    Returns
    -------
    Path
        ``models/cellpose_demo`` (float16 ``weights.pth`` and ``training.json``).
    """
    from .data import load_pairs

    root = Path(repo_root)
    pairs = load_pairs(root / "demo_data" / "nuclei2d" / "images", root / "demo_data" / "nuclei2d" / "labels")
    return train_cellpose(pairs, root / "models" / "cellpose_demo", epochs=n_epochs, seed=seed,
                          batch_size=8, patch_size=128, nimg_per_epoch=8, val_fraction=0.25,
                          overwrite=True, device="cpu")


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    root = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
    logger.info("wrote %s", train_demo_cellpose(root))
