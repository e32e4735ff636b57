"""The ``opsef models`` subcommand: list the models with their cards, score them on labelled data.

::

    opsef models [list] [PATH ...] [--json] [--no-caches]
    opsef models evaluate --images I --labels L [--models NAME|PATH ...] [--grid]
                          [--out DIR] [--channel C] [--limit N] [--device auto|cpu|cuda]
    opsef models cards [--check] [DIR]
    opsef models export-bioimageio MODEL --out PKG.zip [--backend unet|stardist] [--image I]
                                   [--crop N ...] [--channel C] [--test]

``list`` (the default) prints one line per model found in the project's ``models/`` (folders,
weight files and bioimage.io package zips), the Cellpose and StarDist caches and the paths given
(``--json``: the full cards; the score column is the held-out or unseen-test score where one was
recorded, else the validation score).  ``evaluate``
runs the models through the run engine and prints the run folder (holding
``leaderboard.csv`` and ``leaderboard.png``) as its last line.  ``cards`` (re)writes the
``card.json`` of every model folder in ``DIR`` (default: the project's ``models/``); with
``--check`` it writes nothing and exits 2 naming the first stale card.  ``export-bioimageio``
writes a U-Net or StarDist model as a bioimage.io package (:mod:`opsef_core.zoo.bioimageio`),
validated with bioimageio.spec, and prints its path as the last line (``--test``: also reproduce
its test outputs from its weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_arguments", "cmd_models"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``opsef models`` arguments (with its ``list``/``evaluate``/``cards`` actions)."""
    sub = p.add_subparsers(dest="action", metavar="{list,evaluate,cards,export-bioimageio}")
    ls = sub.add_parser("list", help="list the models found, with their cards (the default)")
    ls.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                    help="more model folders/files, or folders of model folders")
    for q in (p, ls):
        q.add_argument("--json", action="store_true", help="print the full cards as JSON")
        q.add_argument("--no-caches", action="store_true",
                       help="skip the Cellpose (~/.cellpose/models) and StarDist (~/.keras/models) caches")
    ev = sub.add_parser("evaluate", help="score models on labelled images; writes a leaderboard into a run folder")
    ev.add_argument("--images", required=True, type=Path, metavar="I", help="image file or folder")
    ev.add_argument("--labels", required=True, type=Path, metavar="L",
                    help="folder of ground-truth label images with the images' file names")
    ev.add_argument("--models", nargs="+", metavar="MODEL", default=None,
                    help="names (as 'opsef models' lists them) or paths (default: every model of the "
                         "images' dimensionality)")
    ev.add_argument("--grid", action="store_true",
                    help="sweep each backend's threshold over a small grid instead of the recommended value")
    ev.add_argument("--out", type=Path, default=Path("runs"), metavar="DIR",
                    help="parent of the new run folder (default runs/)")
    ev.add_argument("--channel", default=None, metavar="C", help="channel (index or name) to segment")
    ev.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where networks run")
    cards = sub.add_parser("cards", help="(re)write card.json of every model folder")
    cards.add_argument("folder", nargs="?", type=Path, default=None, metavar="DIR",
                       help="folder of model folders (default: the project's models/)")
    cards.add_argument("--check", action="store_true", help="write nothing; exit 2 if a card is stale")
    bx = sub.add_parser("export-bioimageio", help="write a U-Net or StarDist model as a bioimage.io package (zip)")
    bx.add_argument("model", metavar="MODEL", help="model name (as 'opsef models' lists it) or folder")
    bx.add_argument("--out", required=True, type=Path, metavar="PKG.zip", help="the package to write")
    bx.add_argument("--backend", choices=("unet", "stardist"), default=None,
                    help="the model's backend (default: detected from the folder)")
    bx.add_argument("--image", type=Path, default=None, metavar="I",
                    help="image for the test tensors and cover (default: the card's first validation image)")
    bx.add_argument("--crop", type=int, nargs="+", default=None, metavar="N",
                    help="test crop size per spatial axis, or one for all (default 128x128, 3D 16x64x64)")
    bx.add_argument("--channel", default=None, metavar="C", help="channel (index or name) of the test image")
    bx.add_argument("--test", action="store_true",
                    help="also reproduce the package's test outputs from its weights (exit 2 if they differ)")


def _cmd_list(args: argparse.Namespace) -> int:
    from .listing import find_models, format_models

    found = find_models(getattr(args, "paths", None) or (), caches=not args.no_caches)
    print(json.dumps(found, indent=2) if args.json else format_models(found))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_models

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    channel = args.channel
    if isinstance(channel, str) and channel.lstrip("-").isdigit():
        channel = int(channel)
    run_dir = evaluate_models(args.images, args.labels, models=args.models, out=args.out, grid=args.grid,
                              channel=channel, limit=args.limit, device=args.device)
    import pandas as pd

    board = pd.read_csv(run_dir / "leaderboard.csv")
    for _, r in board.iterrows():
        print(f"{r['rank']!s:>3}  {r['model']:<24} {r['backend']:<9} f1@0.5 {r['f1@0.5_mean']:.3f}"
              f"  ({r['setting']})")
    print(run_dir)
    return 0


def _cmd_cards(args: argparse.Namespace) -> int:
    from ..errors import OpsefError
    from ..models import project_models_dir
    from .cards import card_is_current, model_folders, write_cards

    folder = args.folder or project_models_dir()
    if args.check:
        for f in model_folders(folder):
            if not card_is_current(f):
                raise OpsefError("card.json is missing or stale; run 'opsef models cards'", f / "card.json")
        print(f"every card in {folder} is current")
        return 0
    for path in write_cards(folder):
        print(path)
    return 0


def _cmd_export_bioimageio(args: argparse.Namespace) -> int:
    from .bioimageio import export_bioimageio, validate_package

    channel = args.channel
    if isinstance(channel, str) and channel.lstrip("-").isdigit():
        channel = int(channel)
    crop = None if args.crop is None else (args.crop[0] if len(args.crop) == 1 else tuple(args.crop))
    out = export_bioimageio(args.model, args.out, backend=args.backend, image=args.image, crop=crop,
                            channel=channel, test=args.test)
    summary = validate_package(out)
    print(f"bioimage.io {summary['format_version']}: {summary['status']}" + ("; test outputs reproduced"
                                                                             if args.test else ""))
    print(out)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``opsef models``: dispatch to list (default), evaluate, cards or export-bioimageio."""
    if args.action == "export-bioimageio":
        return _cmd_export_bioimageio(args)
    if args.action == "evaluate":
        return _cmd_evaluate(args)
    if args.action == "cards":
        return _cmd_cards(args)
    return _cmd_list(args)


def register() -> None:
    """Register ``models`` with the ``opsef`` command (called from :mod:`opsef_core.cli`)."""
    from ..cli import register_subcommand

    register_subcommand(
        "models", "list the models found with their cards; 'models evaluate' scores them on labelled data",
        add_arguments, cmd_models,
        "Lists every model in the project's models/, the Cellpose and StarDist caches and the paths "
        "given, each with its card (backend, 2D/3D, training data, expected pixel and object size, "
        "validation scores, checksum, training). 'opsef models evaluate --images I --labels L' runs the "
        "models through the run engine and writes leaderboard.csv and leaderboard.png into a new run "
        "folder, printed as the last line. 'opsef models export-bioimageio MODEL --out PKG.zip' writes "
        "a U-Net or StarDist model as a bioimage.io package, usable as a model in run configs.")


register()
