"""The ``opsef models`` subcommand: list the models with their cards, score them on labelled data.

::

    opsef models [list] [PATH ...] [--json] [--no-caches]
    opsef models evaluate --images I --labels L [--models NAME|PATH ...] [--grid]
                          [--out DIR] [--channel C] [--limit N] [--device auto|cpu|cuda]
    opsef models cards [--check] [DIR]

``list`` (the default) prints one line per model found in the project's ``models/``, the
Cellpose and StarDist caches and the paths given (``--json``: the full cards).  ``evaluate``
runs the models through the run engine and prints the run folder (holding
``leaderboard.csv`` and ``leaderboard.png``) as its last line.  ``cards`` (re)writes the
``card.json`` of every model folder in ``DIR`` (default: the project's ``models/``); with
``--check`` it writes nothing and exits 2 naming the first stale card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_arguments", "cmd_models"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``opsef models`` arguments (with its ``list``/``evaluate``/``cards`` actions)."""
    sub = p.add_subparsers(dest="action", metavar="{list,evaluate,cards}")
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


def cmd_models(args: argparse.Namespace) -> int:
    """``opsef models``: dispatch to list (default), evaluate or cards."""
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
        "folder, printed as the last line.")


register()
