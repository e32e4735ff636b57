"""Train opsef's PyTorch U-Net (``3class`` or ``distance``) on image/label pairs.

Targets come from the instance labels:

- ``3class``: background 0, boundary 1 (:func:`skimage.segmentation.find_boundaries`
  with ``mode="inner"``), interior 2; loss = cross entropy weighted by inverse
  class frequency (background dominates), weights normalised to mean 1, capped at 10.
  ``boundary="anisotropic"`` (3D stacks with few slices per object): the boundary is found in
  each YX slice, plus the faces along Z where two objects touch, so that thin objects keep an
  interior to seed them (the 3D inner boundary covers most of a 3-4-slice nucleus);
- ``distance``: per-object Chebyshev (chessboard) distance to the background
  (:func:`scipy.ndimage.distance_transform_cdt`, each object alone, so touching
  objects are separated); loss = mean squared error.

Each epoch draws random patches (augmented with :func:`opsef_core.train.data.augment`)
from the training images and computes the loss on whole validation images;
the weights with the lowest validation loss are kept.  The model folder gets
``config.json``, ``weights.pt`` (float16) and ``training.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io.atomic import atomic_write
from .data import (Augmentation, EarlyStopping, TrainingPairs, augment, resolve_init, split_indices,
                   take_deprecated, training_provenance)

__all__ = ["train_unet", "train_demo_unet", "train_demo_unet3d", "make_targets", "class_weights", "choose_decoding",
           "store_decoding"]

logger = logging.getLogger(__name__)


def _per_object_distance(labels: np.ndarray, sampling=None) -> np.ndarray:
    """Distance of every object pixel to the nearest pixel outside that object.

    ``sampling`` None: chessboard distance, the image border counting as outside.  Else the
    Euclidean distance with voxel size ``sampling``, the image border counting as inside (objects
    cut by it keep their depth).
    """
    from scipy import ndimage as ndi

    out = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        m = labels[sl] == i
        if sampling is None:
            d = ndi.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[(slice(1, -1),) * m.ndim]
        else:
            d = ndi.distance_transform_edt(m, sampling=sampling)
        out[sl][m] = d[m]
    return out


def make_targets(labels: np.ndarray, variant: str, *,
                 boundary: Literal["3d", "anisotropic"] = "3d", sampling=None) -> np.ndarray:
    """Training target of one label image.

    Parameters
    ----------
    labels : ndarray of int
        Instance labels (``YX`` or ``ZYX``).
    variant : {"3class", "distance"}
    boundary : {"3d", "anisotropic"}
        ``3class``: the inner boundary in all axes (``"3d"``), or (``ZYX`` labels) in each YX
        slice plus the Z faces between touching objects (``"anisotropic"``).
    sampling : sequence of float, optional
        ``distance``: voxel size per axis (e.g. ``(4, 1, 1)`` for a Z step of 4 pixels); the
        target is then each object's Euclidean distance to the background in those units
        (:func:`scipy.ndimage.distance_transform_edt`), so anisotropic stacks get round distance
        peaks.  None: the chessboard distance in voxels.

    Returns
    -------
    ndarray
        ``3class``: int64 classes (0 background, 1 boundary, 2 interior);
        ``distance``: float32 distance (0 on background).
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    if boundary not in ("3d", "anisotropic"):
        raise ConfigError(f"unknown boundary {boundary!r}; use '3d' or 'anisotropic'")
    if variant == "3class":
        t = (labels > 0).astype(np.int64) * 2
        if boundary == "3d" or labels.ndim != 3:
            t[find_boundaries(labels, mode="inner") & (labels > 0)] = 1
            return t
        for z in range(labels.shape[0]):
            t[z][find_boundaries(labels[z], mode="inner") & (labels[z] > 0)] = 1
        lo, hi = labels[:-1], labels[1:]
        touch = (lo != hi) & (lo > 0) & (hi > 0)
        t[:-1][touch] = 1
        t[1:][touch] = 1
        return t
    if variant == "distance":
        if sampling is not None:
            sampling = tuple(float(v) for v in sampling)
            if len(sampling) != labels.ndim or min(sampling) <= 0:
                raise ConfigError(f"sampling {sampling} must have {labels.ndim} positive values")
            return _per_object_distance(labels.astype(np.int64), sampling)
        return _per_object_distance(labels.astype(np.int64))
    raise ConfigError(f"unknown U-Net variant {variant!r}; use '3class' or 'distance'")


def class_weights(targets: list[np.ndarray], n_classes: int = 3, cap: float = 10.0) -> np.ndarray:
    """Inverse class frequencies over ``targets``, normalised to mean 1 and capped at ``cap``."""
    counts = np.zeros(n_classes, np.float64)
    for t in targets:
        counts += np.bincount(t.ravel(), minlength=n_classes)[:n_classes]
    w = counts.sum() / np.maximum(counts, 1.0) / n_classes
    w = np.minimum(w / w.mean(), cap)
    return (w / w.mean()).astype(np.float32)


def _random_patch(img, tgt, patch, rng):
    """A random crop of ``patch`` (reflect-padded when the image is smaller)."""
    pads = [(0, max(0, p - s)) for p, s in zip(patch, tgt.shape)]
    if any(p[1] for p in pads):
        img = np.pad(img, pads, mode="reflect")
        tgt = np.pad(tgt, pads, mode="constant")
    start = [int(rng.integers(0, s - p + 1)) for s, p in zip(tgt.shape, patch)]
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    return img[sl], tgt[sl]


def train_unet(
    pairs: TrainingPairs,
    out_dir: str | Path,
    variant: Literal["3class", "distance"] = "3class",
    dims: int = 2,
    epochs: int = 40,
    patch_size: int | tuple[int, ...] = 128,
    batch_size: int = 8,
    val_fraction: float = 0.2,
    seed: int = 0,
    augmentation: Augmentation | None = None,
    patience: int | None = None,
    learning_rate: float | None = None,
    depth: int = 3,
    filters: int = 16,
    normalize: tuple[float, float] = (1.0, 99.8),
    steps_per_epoch: int | None = None,
    device: str = "auto",
    max_time_s: float | None = None,
    init: str | Path | None = None,
    boundary: Literal["3d", "anisotropic"] = "3d",
    loss_weights: tuple[float, float, float] | None = None,
    sampling=None,
    decoding: dict | None = None,
    **deprecated,
) -> Path:
    """Train a U-Net from scratch, or fine-tune one (``init``), and write a model folder.

    Parameters
    ----------
    pairs : TrainingPairs
        Single-channel images (``YX`` for ``dims=2``, ``ZYX`` for ``dims=3``) and labels.
    out_dir : path
        Model folder to write (``config.json``, ``weights.pt``, ``training.json``).
    variant : {"3class", "distance"}
        Output head and loss (see the module docstring).
    dims : {2, 3}
        2D or 3D network.
    epochs : int
        Maximum number of epochs.
    patch_size : int or tuple of int
        Training patch edge (per spatial axis or one value); rounded up to a
        multiple of ``2**depth``.
    batch_size : int
        Patches per optimisation step.
    val_fraction : float
        Fraction of pairs held out for validation (at least one; with a single
        pair it is used for both).
    seed : int
        Seeds ``torch.manual_seed`` and ``numpy.random.default_rng``.
    augmentation : Augmentation, optional
        Augmentation options (defaults of :class:`Augmentation`).
    patience : int, optional
        Stop after this many epochs without a lower validation loss (default 10).
    learning_rate : float, optional
        Adam learning rate (cosine-annealed to 5 % over ``epochs``; default 3e-3).
    depth, filters : int
        Architecture (see :func:`opsef_core.unet.model.build_unet`); with ``init`` the
        init model's architecture is used.
    normalize : (float, float)
        Percentiles mapped to 0 and 1 (stored in the config and used at inference); with
        ``init`` the init model's.
    steps_per_epoch : int, optional
        Default: enough patches to cover the training images once.
    device : {"auto", "cpu", "cuda"}
        Where to train.
    max_time_s : float, optional
        Stop after the epoch that exceeds this wall time (recorded in ``training.json``).
    init : str or path, optional
        Model to fine-tune (a name under ``models/`` or a model folder, resolved by
        :func:`opsef_core.train.data.resolve_init`): its architecture, variant, dims and
        normalisation are kept and its weights are the starting point.  Recorded in
        ``training.json`` (``init``: name, path, sha256).
    boundary : {"3d", "anisotropic"}
        ``3class`` targets' boundary (see :func:`make_targets`); recorded in the config.
    loss_weights : (float, float, float), optional
        ``3class``: cross-entropy weights of background, boundary and interior (normalised to
        mean 1); default the inverse class frequencies of :func:`class_weights`.  The weights
        shift the predicted probabilities that the backend's decoding thresholds.
    sampling : sequence of float or list of them, optional
        ``distance``: voxel size of the targets' Euclidean distance (see :func:`make_targets`),
        one for every pair or a list with one per pair; None = chessboard distance.
    decoding : dict, optional
        Decoding defaults stored in ``config.json`` (``decoding``) and used by the ``unet``
        backend for every parameter a caller leaves unset (e.g. ``{"h": 2.0, "min_size": 30}``);
        see :class:`opsef_core.segment.unet_backend.UNetParams`.
    **deprecated
        Old names, accepted with a ``DeprecationWarning``: ``lr`` (``learning_rate``),
        ``early_stopping_patience`` (``patience``).

    Returns
    -------
    pathlib.Path
        The model folder.

    Raises
    ------
    ConfigError
        Bad variant, dims, or images that do not fit ``dims``.
    """
    import torch

    from ..segment.device import resolve_device
    from ..segment.unet_backend import normalize_percentile
    from ..unet.io import save_unet
    from ..unet.model import build_unet, count_parameters

    t0 = time.perf_counter()
    opts = take_deprecated("train_unet", deprecated, {"lr": "learning_rate",
                                                      "early_stopping_patience": "patience"},
                           {"learning_rate": learning_rate, "patience": patience})
    learning_rate = 3e-3 if opts["learning_rate"] is None else float(opts["learning_rate"])
    patience = 10 if opts["patience"] is None else int(opts["patience"])
    if epochs < 1 or batch_size < 1 or patience < 1 or not learning_rate > 0:
        raise ConfigError(f"need epochs >= 1, batch_size >= 1, patience >= 1 and learning_rate > 0 "
                          f"(got {epochs}, {batch_size}, {patience}, {learning_rate})")
    init_path, init_record, init_state = None, None, None
    if init is not None:
        from ..unet.io import load_unet

        init_path, init_record = resolve_init("unet", init)
        loaded = load_unet(init_path)
        icfg = loaded.config
        variant, dims = icfg["variant"], int(icfg["dims"])
        depth, filters = int(icfg["depth"]), int(icfg["filters"])
        normalize = tuple(icfg.get("normalize", normalize))
        init_state = loaded.net.state_dict()
        logger.info("fine-tuning %s (%s %dD, depth %d, %d filters)", init_path, variant, dims, depth, filters)
    if variant not in ("3class", "distance"):
        raise ConfigError(f"unknown U-Net variant {variant!r}; use '3class' or 'distance'")
    if dims not in (2, 3):
        raise ConfigError(f"dims must be 2 or 3, got {dims}")
    if len(pairs) == 0:
        raise ConfigError("no training pairs")
    for img, lab, name in zip(pairs.images, pairs.labels, pairs.names):
        if np.ndim(img) != dims or np.shape(img) != np.shape(lab):
            raise ConfigError(f"training pair {name!r}: image shape {np.shape(img)} and labels "
                              f"{np.shape(lab)} do not fit a {dims}D single-channel U-Net "
                              "(select one channel when loading the pairs)")
    aug = augmentation or Augmentation()
    mult = 2 ** depth
    patch = (patch_size,) * dims if isinstance(patch_size, int) else tuple(patch_size)
    if len(patch) != dims:
        raise ConfigError(f"patch_size {patch_size} does not have {dims} values")
    patch = tuple(int(math.ceil(p / mult) * mult) for p in patch)

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    dev = resolve_device(device, "torch")
    train_idx, val_idx = split_indices(len(pairs), val_fraction, seed)
    images = [normalize_percentile(im, *normalize) for im in pairs.images]
    if sampling is not None and variant != "distance":
        raise ConfigError("sampling applies to the 'distance' variant only")
    if sampling is not None and np.ndim(sampling[0]) == 0:
        per_pair = [sampling] * len(pairs)
    else:
        per_pair = [None] * len(pairs) if sampling is None else list(sampling)
    if len(per_pair) != len(pairs):
        raise ConfigError(f"sampling has {len(per_pair)} entries for {len(pairs)} pairs")
    if decoding is not None:
        from ..segment.unet_backend import check_decoding

        decoding = check_decoding(decoding, variant)
    targets = [make_targets(lab, variant, boundary=boundary, sampling=smp)
               for lab, smp in zip(pairs.labels, per_pair)]
    train_i = [images[i] for i in train_idx]
    train_t = [targets[i] for i in train_idx]
    if steps_per_epoch is None:
        px = sum(t.size for t in train_t)
        steps_per_epoch = max(1, int(math.ceil(px / np.prod(patch) / batch_size)))

    net = build_unet(dims=dims, variant=variant, in_channels=1, depth=depth, filters=filters)
    if init_state is not None:
        net.load_state_dict(init_state)
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=learning_rate * 0.05)
    if variant == "3class":
        if loss_weights is None:
            weights = class_weights(train_t)
        else:
            weights = np.asarray(loss_weights, np.float32)
            if weights.shape != (3,) or not (weights > 0).all():
                raise ConfigError(f"loss_weights must be 3 positive numbers, got {loss_weights}")
            weights = weights / weights.mean()
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights).to(dev))
    else:
        weights = None
        loss_fn = torch.nn.MSELoss()

    def to_batch(xs, ys):
        x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32)).to(dev)
        y = torch.from_numpy(np.stack(ys)).to(dev)
        return x, (y.long() if variant == "3class" else y.float()[:, None])

    def val_loss() -> float:
        from ..unet.model import pad_to_multiple

        net.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for i in val_idx:
                x, _ = pad_to_multiple(images[i], mult, range(dims))
                y, _ = pad_to_multiple(targets[i], mult, range(dims))
                xb, yb = to_batch([x], [y])
                total += float(loss_fn(net(xb), yb)) * targets[i].size
                n += targets[i].size
        return total / max(n, 1)

    history, stop = [], EarlyStopping(patience, max_time_s=max_time_s, t0=t0)
    logger.info("training %s %dD U-Net (%d parameters) on %d/%d pairs, %d steps/epoch, device %s",
                variant, dims, count_parameters(net), len(train_idx), len(val_idx), steps_per_epoch, dev)
    for epoch in tqdm(range(epochs), desc="U-Net epochs", leave=False):
        net.train()
        losses = []
        for _ in range(steps_per_epoch):
            xs, ys = [], []
            for _ in range(batch_size):
                k = int(rng.integers(len(train_i)))
                x, y = _random_patch(train_i[k], train_t[k], patch, rng)
                x, y = augment(x, y, rng, aug)
                xs.append(x)
                ys.append(y)
            xb, yb = to_batch(xs, ys)
            loss = loss_fn(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        vl = val_loss()
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": vl,
                        "wall_s": round(time.perf_counter() - t0, 2)})
        logger.info("epoch %d: train %.4f val %.4f", epoch + 1, history[-1]["train_loss"], vl)
        if stop.step(vl, net):
            break
    best, best_state, stopped = stop.best, stop.best_state, stop.stopped

    out_dir = Path(out_dir)
    wall = time.perf_counter() - t0
    params = {"variant": variant, "dims": dims, "epochs": epochs, "patch_size": list(patch),
              "batch_size": batch_size, "val_fraction": val_fraction, "seed": seed,
              "augmentation": aug.model_dump(mode="json"), "patience": patience,
              "learning_rate": learning_rate, "init": None if init is None else str(init), "depth": depth,
              "filters": filters, "normalize": list(normalize),
              "steps_per_epoch": steps_per_epoch, "device": dev, "max_time_s": max_time_s,
              "boundary": boundary, "loss_weights": None if loss_weights is None else list(loss_weights),
              "sampling": None if sampling is None else [None if v is None else [float(x) for x in v]
                                                         for v in per_pair],
              "decoding": decoding}
    record = {
        "backend": "unet",
        "dims": dims,
        "params": params,
        "init": init_record,
        "train_names": [pairs.names[i] for i in train_idx],
        "val_names": [pairs.names[i] for i in val_idx],
        "class_weights": None if weights is None else weights.tolist(),
        "history": history,
        "best_epoch": int(np.argmin([h["val_loss"] for h in history]) + 1),
        "best_val_loss": best,
        "stopped_by": stopped,
        "wall_time_s": round(wall, 2),
        "n_parameters": count_parameters(net),
        **training_provenance(("torch", "numpy", "scikit-image", "scipy")),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    config = {"format": "opsef-unet", "format_version": 1, "variant": variant, "dims": dims,
              "depth": depth, "filters": filters, "in_channels": 1,
              "classes": ["background", "boundary", "interior"] if variant == "3class" else ["distance"],
              "normalize": list(normalize),
              **({"boundary": boundary} if variant == "3class" and boundary != "3d" else {}),
              **({"decoding": decoding} if decoding else {}),
              "training": {k: record[k] for k in ("best_epoch", "best_val_loss", "wall_time_s", "train_names",
                                                  "val_names", "finished")} | {"seed": seed}}
    save_unet(out_dir, best_state, config)
    with atomic_write(out_dir / "training.json", "w") as fh:
        json.dump(record, fh, indent=2)
    logger.info("wrote %s (best epoch %d, val loss %.4f, %.0f s)", out_dir, record["best_epoch"], best, wall)
    return out_dir


def _demo_pairs(folder: Path) -> TrainingPairs:
    """The nuclei2d demo pairs (read with :func:`load_pairs` when opsef's readers are available)."""
    from .data import load_pairs

    try:
        return load_pairs(folder / "images", folder / "labels")
    except ImportError:  # opsef_core.io readers missing: the demo files are plain YX TIFFs
        import tifffile

        files = sorted((folder / "images").glob("*.tif"))
        return TrainingPairs([tifffile.imread(f) for f in files],
                             [tifffile.imread(folder / "labels" / f.name) for f in files],
                             [f.stem for f in files])


DEMO_TRAINING = dict(variant="3class", dims=2, epochs=30, patch_size=96, batch_size=8, val_fraction=0.25,
                     seed=0, patience=30, learning_rate=5e-3, depth=3, filters=8,
                     steps_per_epoch=6, device="cpu")


def train_demo_unet(repo_root: str | Path) -> Path:
    """Train the bundled demo model ``models/unet2d_demo`` (3class, 2D) on ``demo_data/nuclei2d``.

    Parameters
    ----------
    repo_root : path
        Repository root holding ``demo_data/`` and ``models/``.

    Returns
    -------
    pathlib.Path
        The model folder.
    """
    repo_root = Path(repo_root)
    pairs = _demo_pairs(repo_root / "demo_data" / "nuclei2d")
    return train_unet(pairs, repo_root / "models" / "unet2d_demo", **DEMO_TRAINING)


DEMO_TRAINING_3D = dict(variant="3class", dims=3, epochs=100, patch_size=(16, 64, 64), batch_size=2,
                        val_fraction=0.25, seed=0, patience=25, learning_rate=5e-3, depth=2, filters=8,
                        steps_per_epoch=6, device="cpu")


def train_demo_unet3d(repo_root: str | Path) -> Path:
    """Train ``models/unet3d_demo`` (3class, 3D) on the ``demo_data/spheroid_clearing`` stacks.

    Both conditions (cleared and non-cleared) are pooled; one stack is held out for validation
    (recorded in ``training.json``).

    Parameters
    ----------
    repo_root : path
        Repository root holding ``demo_data/`` and ``models/``.

    Returns
    -------
    pathlib.Path
        The model folder.
    """
    from .data import load_pairs

    repo_root = Path(repo_root)
    root = repo_root / "demo_data" / "spheroid_clearing"
    parts = [load_pairs(root / cond / "images", root / cond / "labels") for cond in ("cleared", "noncleared")]
    pairs = TrainingPairs([i for p in parts for i in p.images], [lab for p in parts for lab in p.labels],
                          [f"{cond}/{n}" for cond, p in zip(("cleared", "noncleared"), parts) for n in p.names])
    out = train_unet(pairs, repo_root / "models" / "unet3d_demo", **DEMO_TRAINING_3D)
    _record_validation_f1(out, pairs)
    return out


def _record_validation_f1(model_dir: Path, pairs: TrainingPairs) -> None:
    """Add ``validation_f1@0.5`` (seeded-watershed instances, pooled) to ``training.json``."""
    from ..evaluate import match, pool
    from ..image import Image
    from ..record import atomic_write_json
    from ..segment import get_segmenter

    rec_path = Path(model_dir) / "training.json"
    rec = json.loads(rec_path.read_text())
    seg = get_segmenter("unet")
    params = seg.params({"model": str(model_dir), "device": "cpu"})
    by_name = dict(zip(pairs.names, zip(pairs.images, pairs.labels)))
    matchings = []
    for name in rec.get("val_names", []):
        img, lab = by_name[name]
        axes = "ZYX" if np.asarray(img).ndim == 3 else "YX"
        matchings.append(match(lab, seg.segment(Image.from_array(np.asarray(img), axes), params), 0.5))
    if matchings:
        rec["validation_f1@0.5"] = float(pool(matchings)["f1"])
        atomic_write_json(rec_path, rec)


def choose_decoding(model_dir: str | Path, pairs: TrainingPairs, grid, *, iou: float = 0.5,
                    device: str = "cpu") -> tuple[dict, list[dict]]:
    """Choose a model's decoding parameters on validation pairs (one network pass per pair).

    Parameters
    ----------
    model_dir : path
        U-Net model folder.
    pairs : TrainingPairs
        Validation images and labels (never the data the model is to be scored on).
    grid : iterable of dict
        Decoding settings (keys of :data:`opsef_core.segment.unet_backend.DECODING_KEYS`).
    iou : float
        IoU threshold of the F1 score.
    device : str
        Where the network runs.

    Returns
    -------
    best : dict
        The setting with the highest mean F1 over the pairs (each pair counts alike; ties go to
        the earlier setting).
    table : list of dict
        Every setting with its per-pair F1 (``f1``), their mean (``mean_f1``) and the pooled F1
        (``pooled_f1``).
    """
    from ..evaluate import match, pool
    from ..image import Image
    from ..segment import get_segmenter

    seg = get_segmenter("unet")
    base = {"model": str(model_dir), "device": device}
    passes = []
    for img, lab in zip(pairs.images, pairs.labels):
        image = Image.from_array(np.asarray(img), "ZYX" if np.ndim(img) == 3 else "YX")
        passes.append((image, lab, seg.predict(image, seg.params(base))))
    table = []
    for setting in grid:
        params = seg.params({**base, **setting})
        ms = [match(lab, seg.decode(pred, image, params), iou) for image, lab, pred in passes]
        f1 = [float(m.f1) for m in ms]
        table.append({**setting, "f1": dict(zip(pairs.names, f1)), "mean_f1": float(np.mean(f1)),
                      "pooled_f1": float(pool(ms)["f1"])})
    if not table:
        raise ConfigError("choose_decoding: empty grid")
    best = max(range(len(table)), key=lambda i: (table[i]["mean_f1"], -i))
    chosen = {k: v for k, v in table[best].items() if k not in ("f1", "mean_f1", "pooled_f1")}
    logger.info("decoding chosen on %s: %s (mean F1@%.2f %.3f)", pairs.names, chosen, iou, table[best]["mean_f1"])
    return chosen, table


def store_decoding(model_dir: str | Path, decoding: dict, **record) -> dict:
    """Store decoding defaults in a model's ``config.json`` (``decoding``; the ``unet`` backend's
    defaults from then on) and in its ``training.json`` (``decoding``, with ``record``).

    Returns
    -------
    dict
        The checked decoding values.

    Raises
    ------
    ConfigError
        Keys that do not apply to the model's variant, or invalid values.
    """
    from ..record import atomic_write_json
    from ..segment.unet_backend import check_decoding
    from ..unet.io import CONFIG_NAME

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / CONFIG_NAME).read_text())
    decoding = check_decoding(dict(decoding), cfg["variant"])
    cfg["decoding"] = decoding
    atomic_write_json(model_dir / CONFIG_NAME, cfg)
    rec_path = model_dir / "training.json"
    if rec_path.is_file():
        rec = json.loads(rec_path.read_text())
        rec["decoding"] = {"values": decoding, **record}
        atomic_write_json(rec_path, rec)
    return decoding
