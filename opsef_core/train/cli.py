"""The ``opsef train`` subcommand: train StarDist, Cellpose or the U-Net on image/label folders.

::

    opsef train {stardist,cellpose,unet} --images DIR --labels DIR --out DIR
                [--dims 2|3] [--epochs N] [--val-fraction F] [--seed S] [--channel C]
                [--pretrained NAME] [--variant 3class|distance]
                [--augment flips,rot90,intensity,gaussian,poisson] [--overwrite]

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

__all__ = ["BACKENDS", "AUGMENTATIONS", "add_arguments", "parse_augment", "train_from_args", "cmd_train"]

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
                        "cellpose (2D CPnet, from scratch or --pretrained), unet (opsef's PyTorch U-Net)")
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of training images")
    p.add_argument("--labels", required=True, type=Path, metavar="DIR",
                   help="folder of label images with the same file names (0 = background)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="model folder to write (its name is the model's name; put it under models/ "
                        "to use it by name)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D or 3D network (default 2)")
    p.add_argument("--epochs", type=int, metavar="N", default=None,
                   help="training epochs (default: the trainer's default)")
    p.add_argument("--val-fraction", type=float, metavar="F", default=0.2,
                   help="fraction of image pairs held out for validation (default 0.2)")
    p.add_argument("--seed", type=int, metavar="S", default=0, help="seed of the split, augmentation and weights")
    p.add_argument("--channel", metavar="C", default=None,
                   help="channel (index or name) of multichannel images to train on")
    p.add_argument("--pretrained", metavar="NAME", default=None,
                   help="cellpose only: fine-tune this model (name under models/ or path) instead of "
                        "starting from random weights")
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
    if args.pretrained is not None and args.backend != "cellpose":
        raise ConfigError(f"--pretrained is only supported for cellpose (the {args.backend} trainer starts "
                          "from random weights)")
    if args.variant != "3class" and args.backend != "unet":
        raise ConfigError("--variant applies to unet only")
    if args.backend == "cellpose" and args.dims != 2:
        raise ConfigError("cellpose training takes 2D images (--dims 2); segment 3D stacks slice by slice "
                          "or with StarDist 3D")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out must be a folder (the model folder to write)", out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError("model folder exists and is not empty; choose another --out or pass --overwrite", out)


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
    common = dict(val_fraction=args.val_fraction, seed=args.seed, augmentation=augmentation)
    if args.backend == "unet":
        from .unet import train_unet

        kw = dict(common, variant=args.variant, dims=args.dims)
        if args.epochs is not None:
            kw["epochs"] = args.epochs
        return Path(train_unet(pairs, out, **kw))
    if args.backend == "stardist":
        from .stardist import train_stardist

        kw = dict(common, dims=args.dims, overwrite=True)  # existence was checked above
        if args.epochs is not None:
            kw["epochs"] = args.epochs
        return Path(train_stardist(pairs, out, **kw))
    from .cellpose import train_cellpose

    kw = dict(common, pretrained=args.pretrained, overwrite=True)
    if args.epochs is not None:
        kw["n_epochs"] = args.epochs
    return Path(train_cellpose(pairs, out, **kw))


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
