"""The ``opsef train`` subcommand: train StarDist, Cellpose or the U-Net on image/label folders.

::

    opsef train {stardist,cellpose,unet} --images DIR --labels DIR --out DIR
                [--init MODEL] [--epochs N] [--learning-rate LR] [--patch-size P]
                [--steps-per-epoch N] [--batch-size N] [--val-fraction F] [--patience N]
                [--seed S] [--dims 2|3] [--channel C] [--variant 3class|distance]
                [--augment flips,rot90,intensity,gaussian,poisson] [--overwrite]

One vocabulary for every backend: each option maps 1:1 to the trainer's keyword of the
same name (``--learning-rate`` -> ``learning_rate``, see
:data:`opsef_core.train.data.OPTION_NAMES`); an option left out keeps the trainer's
default.  ``--init MODEL`` fine-tunes a model (a name resolved like run configs resolve
models, :func:`opsef_core.models.resolve_model`, or a path); ``--pretrained`` is its
deprecated alias (cellpose only, as before).

Images and labels are matched by file name (:func:`opsef_core.train.data.load_pairs`).
``--out`` is the model folder to write; its name is the model's name, so a
folder under the project's ``models/`` is found by the segmenters by that name.
The model folder's path is printed as the last line.  Bad input (missing or
empty folders, an existing model folder without ``--overwrite``, options the
backend does not take) ends with exit status 2 and one line on stderr naming
the file (raised as :class:`~opsef_core.errors.OpsefError` and reported by
:func:`opsef_core.cli.main`).

The trainers (:func:`opsef_core.train.stardist.train_stardist`,
:func:`opsef_core.train.cellpose.train_cellpose`,
:func:`opsef_core.train.unet.train_unet`) are imported only when a backend is
chosen, so ``opsef train --help`` loads neither TensorFlow nor torch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EmptyFolderError, InputFileError

__all__ = ["BACKENDS", "AUGMENTATIONS", "add_arguments", "parse_augment", "vocabulary_options", "train_from_args",
           "cmd_train"]

logger = logging.getLogger(__name__)

BACKENDS = ("stardist", "cellpose", "unet")
#: names accepted by ``--augment`` (comma-separated); ``none`` switches every augmentation off
AUGMENTATIONS = ("flips", "rot90", "intensity", "gaussian", "poisson", "noise")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``opsef train`` arguments to a parser.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    """
    p.add_argument("backend", choices=BACKENDS, metavar="{stardist,cellpose,unet}",
                   help="which network to train: stardist (2D/3D star-convex polygons), "
                        "cellpose (2D CPnet), unet (opsef's PyTorch U-Net); each from scratch or --init")
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of training images")
    p.add_argument("--labels", required=True, type=Path, metavar="DIR",
                   help="folder of label images with the same file names (0 = background)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="model folder to write (its name is the model's name; put it under models/ "
                        "to use it by name)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D or 3D network (default 2)")
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="fine-tune this model instead of starting from random weights: a model name "
                        "(models/, the Cellpose/StarDist caches) or a path; its architecture is kept")
    p.add_argument("--epochs", type=int, metavar="N", default=None,
                   help="training epochs (default: the trainer's default)")
    p.add_argument("--learning-rate", type=float, metavar="LR", default=None,
                   help="optimiser learning rate (default: the trainer's; cellpose warms up over 10 epochs)")
    p.add_argument("--patch-size", type=int, nargs="+", metavar="P", default=None,
                   help="training patch edge in pixels, one value or one per axis (cellpose: one value)")
    p.add_argument("--steps-per-epoch", type=int, metavar="N", default=None,
                   help="optimisation steps per epoch (default: the trainer's)")
    p.add_argument("--batch-size", type=int, metavar="N", default=None, help="patches per step")
    p.add_argument("--val-fraction", type=float, metavar="F", default=0.2,
                   help="fraction of image pairs held out for validation (default 0.2)")
    p.add_argument("--patience", type=int, metavar="N", default=None,
                   help="early stopping: epochs without a better validation loss (stardist, unet)")
    p.add_argument("--seed", type=int, metavar="S", default=0, help="seed of the split, augmentation and weights")
    p.add_argument("--channel", metavar="C", default=None,
                   help="channel (index or name) of multichannel images to train on")
    p.add_argument("--pretrained", metavar="NAME", default=None,
                   help="deprecated alias of --init (cellpose only)")
    p.add_argument("--variant", choices=("3class", "distance"), default="3class",
                   help="unet only: 3-class (background/boundary/interior) or distance regression")
    p.add_argument("--augment", metavar="LIST", default=None,
                   help="comma-separated augmentations from flips, rot90, intensity (x0.8-1.2), "
                        "gaussian (sigma 0.1 x the image's std; 'noise' is an alias), poisson "
                        "(shot noise at 255 counts full scale), each applied with probability 0.5; "
                        "or 'none' (default: the trainer's default set)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")


def parse_augment(text: str | None):
    """Turn the ``--augment`` text into an :class:`~opsef_core.train.data.Augmentation`.

    Parameters
    ----------
    text : str or None
        Comma-separated names from :data:`AUGMENTATIONS`, or ``"none"``.  None keeps the
        trainer's default.

    Returns
    -------
    Augmentation or None

    Raises
    ------
    ConfigError
        An unknown name.
    """
    from .data import Augmentation

    if text is None:
        return None
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["none"]:
        names = []
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise ConfigError(f"--augment: unknown augmentation(s) {bad}; choose from {','.join(AUGMENTATIONS)} "
                          "or 'none'")
    return Augmentation(flips="flips" in names, rotations90="rot90" in names,
                        intensity_scale=(0.8, 1.2) if "intensity" in names else None,
                        gaussian_noise=0.1 if {"gaussian", "noise"} & set(names) else 0.0,
                        poisson_noise="poisson" in names)


def _check_folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputFileError(f"{what} folder does not exist", path)
    if not path.is_dir():
        raise InputFileError(f"{what} must be a folder", path)
    if not any(p.is_file() for p in path.iterdir()):
        raise EmptyFolderError(f"{what} folder is empty", path)
    return path


def _check_options(args: argparse.Namespace) -> None:
    if args.pretrained is not None:
        if args.backend != "cellpose":
            raise ConfigError(f"--pretrained is the deprecated cellpose alias of --init; use --init with "
                              f"{args.backend}")
        if args.init is not None:
            raise ConfigError("give --init only (--pretrained is its deprecated alias)")
        import warnings

        warnings.warn("opsef train --pretrained is deprecated; use --init", DeprecationWarning, stacklevel=2)
        logger.warning("--pretrained is deprecated; use --init")
        args.init = args.pretrained
    if args.variant != "3class" and args.backend != "unet":
        raise ConfigError("--variant applies to unet only")
    if args.backend == "cellpose" and args.dims != 2:
        raise ConfigError("cellpose training takes 2D images (--dims 2); segment 3D stacks slice by slice "
                          "or with StarDist 3D")
    if args.backend == "cellpose" and args.patience is not None:
        raise ConfigError("--patience: cellpose training has no early stopping (cellpose.train.train_seg); "
                          "choose --epochs")
    if args.backend == "cellpose" and args.patch_size is not None and len(args.patch_size) != 1:
        raise ConfigError(f"--patch-size: cellpose takes one value (square patches), got {args.patch_size}")
    for opt in ("epochs", "steps_per_epoch", "batch_size", "patience"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            raise ConfigError(f"--{opt.replace('_', '-')} must be at least 1, got {value}")
    if args.patch_size is not None and (any(p < 8 for p in args.patch_size)
                                        or len(args.patch_size) not in (1, args.dims)):
        raise ConfigError(f"--patch-size needs 1 or {args.dims} values of at least 8 px, got {args.patch_size}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out must be a folder (the model folder to write)", out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError("model folder exists and is not empty; choose another --out or pass --overwrite", out)


def vocabulary_options(args: argparse.Namespace) -> dict:
    """The shared training options given on the command line, as trainer keywords.

    Options left out are not in the dict, so each trainer keeps its own default.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by :func:`add_arguments` (after the option checks).

    Returns
    -------
    dict
        ``{"init": ..., "epochs": ..., "learning_rate": ..., "patch_size": ..., ...}``.
    """
    out: dict[str, Any] = {"val_fraction": args.val_fraction, "seed": args.seed}
    for name in ("init", "epochs", "learning_rate", "steps_per_epoch", "batch_size", "patience"):
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    if args.patch_size is not None:
        patch = list(args.patch_size)
        out["patch_size"] = patch[0] if len(patch) == 1 else tuple(patch)
    return out


def train_from_args(args: argparse.Namespace) -> Path:
    """Load the pairs and call the backend's trainer with the parsed options.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by :func:`add_arguments`.

    Returns
    -------
    Path
        The model folder written.

    Raises
    ------
    InputFileError, EmptyFolderError, ConfigError
        Missing/empty folders, no matching pairs, bad option combinations.
    """
    from .data import load_pairs

    _check_options(args)
    images = _check_folder(Path(args.images), "--images")
    labels = _check_folder(Path(args.labels), "--labels")
    augmentation = parse_augment(args.augment)
    channel: Any = args.channel
    if isinstance(channel, str) and channel.lstrip("-").isdigit():
        channel = int(channel)
    pairs = load_pairs(images, labels, channel=channel)
    for img, lab, name in zip(pairs.images, pairs.labels, pairs.names):
        if img.ndim != args.dims:
            raise InputFileError(
                f"image {name!r} has {img.ndim} dimensions {img.shape} but --dims is {args.dims}"
                + (" (select a channel with --channel)" if img.ndim > args.dims else ""), images / name)
    logger.info("training %s on %d pairs from %s", args.backend, len(pairs), images)
    out = Path(args.out)
    common = dict(vocabulary_options(args), augmentation=augmentation)
    if args.backend == "unet":
        from .unet import train_unet

        folder = Path(train_unet(pairs, out, **common, variant=args.variant, dims=args.dims))
    elif args.backend == "stardist":
        from .stardist import train_stardist

        # existence was checked above
        folder = Path(train_stardist(pairs, out, **common, dims=args.dims, overwrite=True))
    else:
        from .cellpose import train_cellpose

        folder = Path(train_cellpose(pairs, out, **common, overwrite=True))
    _record_data(folder, images, labels, pairs, channel)
    return folder


def _record_data(folder: Path, images: Path, labels: Path, pairs, channel) -> None:
    """Add the training data (folders, pixel size, object size) to ``training.json`` and write the card."""
    import json

    from .. import io
    from ..record import atomic_write_json
    from ..zoo.cards import object_diameter, write_card

    rec_path = folder / "training.json"
    rec = json.loads(rec_path.read_text())
    first = next(iter(sorted(p for p in images.iterdir() if p.is_file())), None)
    pixel_size = None
    try:
        pixel_size = dict(io.read_image(first).pixel_size or {}) or None if first is not None else None
    except Exception as exc:  # noqa: BLE001 - the calibration is a description, training is done
        logger.warning("%s: pixel size not read (%s)", first, exc)
    rec["data"] = {"images": str(images), "labels": str(labels), "channel": channel, "n_pairs": len(pairs),
                   "pixel_size": pixel_size, "object_diameter_px": object_diameter(pairs.labels)}
    atomic_write_json(rec_path, rec)
    write_card(folder)


def cmd_train(args: argparse.Namespace) -> int:
    """``opsef train``: train a model and print its folder as the last line.

    Returns
    -------
    int
        0 on success (errors of the user's input propagate as ``OpsefError``; ``opsef``
        turns them into exit status 2).
    """
    folder = train_from_args(args)
    print(folder)
    return 0


def register() -> None:
    """Register ``train`` with the ``opsef`` command (called from :mod:`opsef_core.cli`)."""
    from ..cli import register_subcommand

    register_subcommand(
        "train", "train StarDist, Cellpose or the U-Net on image/label folders; prints the model folder",
        add_arguments, cmd_train,
        "Trains a model from folders of images and label images matched by file name and writes a "
        "model folder (weights, config, training.json with parameters, split, history and versions). "
        "The model folder's path is the last line printed; bad folders exit with status 2.")


register()
