"""Train StarDist2D / StarDist3D models on image/label pairs.

:func:`train_stardist` writes a StarDist model folder (``config.json``,
``weights_best.h5``, ``thresholds.json`` as stardist writes them) plus
``training.json`` (parameters, seed, split, history, thresholds, versions,
wall time, validation F1).  :func:`train_demo_stardist` trains the two small
demo models shipped in ``models/`` from ``demo_data/``.

Early stopping: stardist 0.9.2 keeps its Keras callbacks in
``model.callbacks`` after ``prepare_for_training()``; an
``EarlyStopping(monitor="val_loss")`` callback is appended there.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputFileError
from .data import (Augmentation, TrainingPairs, augment, resolve_init, split_indices, take_deprecated,
                   training_provenance)

__all__ = ["train_stardist", "train_demo_stardist", "default_patch_size"]

logger = logging.getLogger(__name__)


def default_patch_size(shapes: Sequence[tuple], dims: int, grid: tuple, depth: int) -> tuple:
    """Largest patch (at most 256² in 2D, 32x96x96 in 3D) that fits every image and the U-Net.

    Each side is a multiple of ``grid[i] * 2**depth`` (what StarDist requires).
    """
    cap = (256, 256) if dims == 2 else (32, 96, 96)
    smallest = np.min(np.array(shapes), axis=0)
    out = []
    for i in range(dims):
        div = int(grid[i]) * 2 ** int(depth)
        side = (min(cap[i], int(smallest[i])) // div) * div
        if side < div:
            raise ConfigError(f"images are too small along axis {i} ({smallest[i]} px) for a patch "
                              f"divisible by {div} (grid {grid}, depth {depth})")
        out.append(side)
    return tuple(out)


def _check_pairs(pairs: TrainingPairs, dims: int) -> None:
    if len(pairs) == 0:
        raise ConfigError("no training pairs")
    for img, lab, name in zip(pairs.images, pairs.labels, pairs.names):
        if np.ndim(img) != dims:
            raise InputFileError(f"StarDist {dims}D training needs single-channel {dims}D images; "
                                 f"{name!r} has shape {np.shape(img)}", name)
        if np.shape(lab) != np.shape(img):
            raise InputFileError(f"labels {np.shape(lab)} and image {np.shape(img)} differ in shape", name)


def train_stardist(
    pairs: TrainingPairs,
    out_dir: str | Path,
    dims: int = 2,
    n_rays: int = 32,
    grid: tuple | None = None,
    epochs: int = 100,
    steps_per_epoch: int = 50,
    patch_size: tuple | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    augmentation: Augmentation | None = None,
    early_stopping: bool = True,
    patience: int = 20,
    optimize_thresholds: bool = True,
    overwrite: bool = False,
    normalize: tuple[float, float] = (1.0, 99.8),
    init: str | Path | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    threshold_search: dict | None = None,
    **config,
) -> Path:
    """Train a StarDist model from scratch, or fine-tune one (``init``), and write its folder.

    Parameters
    ----------
    pairs : TrainingPairs
        Single-channel ``YX`` (dims=2) or ``ZYX`` (dims=3) images with integer labels.
    out_dir : path
        Model folder to create (its name is the model name for ``models/``).
    dims : {2, 3}
        StarDist2D or StarDist3D.
    n_rays : int
        Number of rays (3D: golden-spiral rays adapted to the labels' anisotropy).
    grid : tuple, optional
        Output grid; default ``(2, 2)`` in 2D and ``(1, 2, 2)`` in 3D.
    epochs, steps_per_epoch : int
        Training length.
    patch_size : int or tuple, optional
        Training patch (one edge for every axis or one per axis, each a multiple of
        ``grid * 2**unet_n_depth``); default from :func:`default_patch_size`.
    val_fraction : float
        Fraction of pairs held out (split with ``numpy.random.default_rng(seed)``).
    seed : int
        Seeds the split, the augmentation generator and TensorFlow
        (``tf.keras.utils.set_random_seed``).
    augmentation : Augmentation, optional
        Options of :func:`opsef_core.train.data.augment` (flips, rot90, intensity, noise).
    early_stopping : bool
        Stop when the validation loss has not improved for ``patience`` epochs.
    patience : int
        Epochs without improvement before stopping.
    optimize_thresholds : bool
        Tune prob/nms thresholds on the validation set (writes ``thresholds.json``).
    overwrite : bool
        Replace an existing ``out_dir``.
    normalize : (float, float)
        Percentiles for per-image normalisation (the backend's default is the same).
    init : str or path, optional
        Model to fine-tune: a name (``models/``, the Keras cache) or a StarDist model
        folder, whose config (rays, grid, architecture) and ``weights_best.h5`` are the
        starting point (``n_rays``, ``grid`` and architecture fields are then ignored); or a
        weights file (``.h5``) of a model with the config given here (continuing an
        interrupted run).  Recorded in ``training.json`` (``init``: name, path, sha256).
    learning_rate : float, optional
        Adam learning rate (``train_learning_rate``; StarDist's default 3e-4).
    batch_size : int, optional
        Patches per step (``train_batch_size``; StarDist's default 4).
    threshold_search : dict, optional
        Keyword arguments of StarDist's ``optimize_thresholds`` (``nms_threshs``,
        ``iou_threshs``, ``optimize_kwargs``), e.g. a shorter search for 3D models, whose NMS
        is slow; default StarDist's search.  Recorded in ``training.json``.
    **config
        Further ``Config2D``/``Config3D`` fields (``unet_n_depth``,
        ``unet_n_filter_base``, ``train_reduce_lr``, ...).  ``initial_weights`` is the
        deprecated name of ``init`` (a ``DeprecationWarning``).

    Returns
    -------
    pathlib.Path
        The model folder.

    Raises
    ------
    ConfigError
        Bad dims, an existing ``out_dir`` without ``overwrite``, unknown config fields.
    InputFileError
        Images that are not single-channel ``dims``-D or labels of another shape.
    """
    if "initial_weights" in config:
        init = take_deprecated("train_stardist", {"initial_weights": config.pop("initial_weights")},
                               {"initial_weights": "init"}, {"init": init})["init"]
    if learning_rate is not None:
        config["train_learning_rate"] = float(learning_rate)
    if batch_size is not None:
        config["train_batch_size"] = int(batch_size)
    if epochs < 1 or steps_per_epoch < 1 or patience < 1:
        raise ConfigError(f"need epochs >= 1, steps_per_epoch >= 1 and patience >= 1 "
                          f"(got {epochs}, {steps_per_epoch}, {patience})")
    init_path, init_record, init_config = None, None, None
    if init is not None:
        init_path, init_record = resolve_init("stardist", init)
        if init_path.is_dir():
            cfg_file = init_path / "config.json"
            if not cfg_file.is_file() or not (init_path / "weights_best.h5").is_file():
                raise ConfigError("a StarDist model folder to fine-tune needs config.json and weights_best.h5",
                                  init_path)
            init_config = json.loads(cfg_file.read_text())
            if "n_rays" not in init_config or "grid" not in init_config:
                raise ConfigError(f"init model {init!r} is not a StarDist model (its config.json has no "
                                  "n_rays/grid)", init_path)
            init_dims = int(init_config.get("n_dim", 2))
            if init_dims != dims:
                raise ConfigError(f"the init model is StarDist{init_dims}D but dims is {dims} "
                                  f"(pass --dims {init_dims})", init_path)
            grid = tuple(init_config["grid"])
            n_rays = int(init_config["n_rays"])
            config["unet_n_depth"] = int(init_config.get("unet_n_depth", 3))
    if dims not in (2, 3):
        raise ConfigError(f"dims must be 2 or 3, got {dims}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConfigError("model folder exists (pass overwrite=True to replace it)", out_dir)
    _check_pairs(pairs, dims)
    grid = tuple(grid) if grid is not None else ((2, 2) if dims == 2 else (1, 2, 2))
    if len(grid) != dims:
        raise ConfigError(f"grid {grid} needs {dims} values")
    t0 = time.perf_counter()

    import tensorflow as tf
    from csbdeep.utils import normalize as csb_normalize

    from stardist import calculate_extents, fill_label_holes
    from stardist.matching import matching_dataset

    tf.keras.utils.set_random_seed(seed)
    X = [csb_normalize(np.asarray(x, np.float32), normalize[0], normalize[1], axis=None) for x in pairs.images]
    Y = [fill_label_holes(np.asarray(y)) for y in pairs.labels]
    trn, val = split_indices(len(X), val_fraction, seed)
    X_trn, Y_trn = [X[i] for i in trn], [Y[i] for i in trn]
    X_val, Y_val = [X[i] for i in val], [Y[i] for i in val]

    depth = int(config.get("unet_n_depth", 3 if dims == 2 else 2))
    config.setdefault("unet_n_depth", depth)
    if patch_size is None:
        patch_size = default_patch_size([x.shape for x in X], dims, grid, depth)
    elif np.ndim(patch_size) == 0:
        patch_size = (int(patch_size),) * dims
    if len(patch_size) != dims:
        raise ConfigError(f"patch_size {patch_size} does not have {dims} values")
    cfg_kwargs = dict(n_channel_in=1, grid=grid, train_patch_size=tuple(patch_size), train_epochs=epochs,
                      train_steps_per_epoch=steps_per_epoch, train_tensorboard=False, **config)
    if dims == 2:
        from stardist.models import Config2D, StarDist2D

        cls = StarDist2D
        try:
            cfg = Config2D(n_rays=n_rays, **cfg_kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid StarDist config: {exc}") from None
    else:
        from stardist import Rays_GoldenSpiral
        from stardist.models import Config3D, StarDist3D

        cls = StarDist3D
        extents = calculate_extents(Y_trn)
        anisotropy = tuple(float(a) for a in np.max(extents) / extents)
        try:
            cfg = Config3D(rays=Rays_GoldenSpiral(n_rays, anisotropy=anisotropy), anisotropy=anisotropy,
                           **cfg_kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid StarDist config: {exc}") from None
    bad = cfg.is_valid(True)
    if not bad[0]:
        raise ConfigError(f"invalid StarDist config values: {', '.join(bad[1])}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    work = tmp / out_dir.name
    rng = np.random.default_rng(seed)
    aug_opts = augmentation or Augmentation()

    def augmenter(x, y):
        return augment(x, y, rng, aug_opts)

    log = _io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            if init_config is not None:
                # the init model's folder, with this run's training fields, loaded as stardist loads models
                work.mkdir()
                fine = dict(init_config)
                fine.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()
                             if k.startswith("train_")})
                fine.update(train_patch_size=list(patch_size), train_epochs=epochs,
                            train_steps_per_epoch=steps_per_epoch, train_tensorboard=False)
                (work / "config.json").write_text(json.dumps(fine))
                shutil.copy2(init_path / "weights_best.h5", work / "weights_best.h5")
                if (init_path / "thresholds.json").is_file():
                    shutil.copy2(init_path / "thresholds.json", work / "thresholds.json")
                model = cls(None, name=work.name, basedir=str(tmp))
            else:
                model = cls(cfg, name=work.name, basedir=str(tmp))
                if init_path is not None:
                    model.keras_model.load_weights(str(init_path))
            model.prepare_for_training()
            if early_stopping:
                model.callbacks.append(tf.keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=patience, restore_best_weights=False))
            hist = model.train(X_trn, Y_trn, validation_data=(X_val, Y_val), augmenter=augmenter,
                               epochs=epochs, steps_per_epoch=steps_per_epoch, seed=seed)
            thresholds = None
            if optimize_thresholds:
                thresholds = model.optimize_thresholds(X_val, Y_val, **(threshold_search or {}))
            else:
                thresholds = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}
            Y_pred = [model.predict_instances(x, show_tile_progress=False)[0] for x in X_val]
        val_stats = matching_dataset(Y_val, Y_pred, thresh=0.5, show_progress=False)
        for extra in ("weights_last.h5", "weights_now.h5", "logs"):
            p = work / extra
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        record = {
            "backend": "stardist",
            "dims": dims,
            "params": {"n_rays": n_rays, "grid": list(grid), "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                       "patch_size": list(patch_size), "val_fraction": val_fraction, "early_stopping": early_stopping,
                       "patience": patience, "optimize_thresholds": optimize_thresholds,
                       "threshold_search": threshold_search,
                       "init": None if init is None else str(init), "seed": seed,
                       "learning_rate": float(model.config.train_learning_rate),
                       "batch_size": int(model.config.train_batch_size),
                       "normalize": list(normalize), "augmentation": aug_opts.model_dump(mode="json"),
                       "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}},
            "seed": seed,
            "init": init_record,
            "train": [pairs.names[i] for i in trn],
            "validation": [pairs.names[i] for i in val],
            "epochs_run": len(next(iter(history.values()), [])),
            "history": history,
            "thresholds": {k: float(v) for k, v in dict(thresholds).items()},
            "validation_f1@0.5": float(val_stats.f1),
            "validation_matching@0.5": {k: float(getattr(val_stats, k)) for k in
                                        ("tp", "fp", "fn", "precision", "recall", "f1", "mean_true_score")},
            **training_provenance(("stardist", "csbdeep", "tensorflow-cpu", "tensorflow", "keras", "numpy")),
            "wall_time_s": round(time.perf_counter() - t0, 2),
        }
        (work / "training.json").write_text(json.dumps(record, indent=2))
        logger.debug("stardist training output:\n%s", log.getvalue()[-5000:])
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("trained StarDist%dD in %.1f s (val F1@0.5 %.3f): %s", dims, record["wall_time_s"],
                record["validation_f1@0.5"], out_dir)
    return out_dir


def _read_tiff_pairs(image_dir: Path, label_dir: Path, axes: str, channel: int | None = None) -> TrainingPairs:
    """Read demo TIFF pairs whose axes are known (written by demo_data/make_demo_data.py)."""
    import tifffile

    images, labels, names = [], [], []
    for path in sorted(image_dir.glob("*.tif")):
        lab_path = label_dir / path.name
        if not lab_path.exists():
            continue
        with tifffile.TiffFile(path) as tf_:
            series_axes = tf_.series[0].axes
            data = tf_.series[0].asarray()
        if channel is not None:
            if "C" not in series_axes:
                raise InputFileError(f"expected a C axis, file axes are {series_axes}", path)
            data = np.take(data, channel, axis=series_axes.index("C"))
            series_axes = series_axes.replace("C", "")
        if series_axes != axes:
            raise InputFileError(f"expected axes {axes}, file has {series_axes}", path)
        images.append(data)
        labels.append(tifffile.imread(lab_path))
        names.append(path.stem)
    if not images:
        raise InputFileError("no image/label pairs", image_dir)
    return TrainingPairs(images, labels, names)


def train_demo_stardist(repo_root: str | Path, which: Sequence[str] = ("2d", "3d"), seed: int = 0) -> dict:
    """Train the demo models ``models/stardist2d_demo`` and ``models/stardist3d_demo``.

    2D: ``demo_data/nuclei2d`` (8 synthetic 256² images), 32 rays, grid 2x2,
    U-Net depth 3.  3D: ``demo_data/spheroid_clearing/{cleared,noncleared}``
    (4 stacks 32x128x128, Z step 4x the pixel size), 48 rays, grid 1x2x2,
    depth 2, 16 filters.

    Parameters
    ----------
    repo_root : path
        Repository root (holding ``demo_data/`` and ``models/``).
    which : sequence of {"2d", "3d"}
        Models to train.
    seed : int
        Training seed.

    Returns
    -------
    dict
        ``{"2d": Path, "3d": Path}`` for the models trained.
    """
    root = Path(repo_root)
    out = {}
    if "2d" in which:
        d = root / "demo_data" / "nuclei2d"
        pairs = _read_tiff_pairs(d / "images", d / "labels", "YX")
        out["2d"] = train_stardist(pairs, root / "models" / "stardist2d_demo", dims=2, n_rays=32, grid=(2, 2),
                                   epochs=40, steps_per_epoch=25, val_fraction=0.25, seed=seed,
                                   overwrite=True, unet_n_depth=3, train_batch_size=4,
                                   train_reduce_lr={"factor": 0.5, "patience": 10, "min_delta": 0})
    if "3d" in which:
        parts = []
        for cond in ("cleared", "noncleared"):
            d = root / "demo_data" / "spheroid_clearing" / cond
            p = _read_tiff_pairs(d / "images", d / "labels", "ZYX")
            p.names = [f"{cond}/{n}" for n in p.names]
            parts.append(p)
        pairs = TrainingPairs(sum((p.images for p in parts), []), sum((p.labels for p in parts), []),
                              sum((p.names for p in parts), []))
        out["3d"] = train_stardist(pairs, root / "models" / "stardist3d_demo", dims=3, n_rays=48, grid=(1, 2, 2),
                                   epochs=80, steps_per_epoch=15, patch_size=(32, 64, 64), val_fraction=0.25,
                                   seed=seed, overwrite=True, unet_n_depth=2, unet_n_filter_base=16,
                                   train_batch_size=2,
                                   train_reduce_lr={"factor": 0.5, "patience": 10, "min_delta": 0})
    return out


if __name__ == "__main__":  # pragma: no cover - convenience entry point
    import argparse

    ap = argparse.ArgumentParser(description="Train the StarDist demo models.")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]))
    ap.add_argument("--which", nargs="+", default=["2d", "3d"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for k, v in train_demo_stardist(args.root, args.which).items():
        print(k, v)
