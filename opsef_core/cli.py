"""The ``opsef`` command.

Subcommands: ``run``, ``plan``, ``info``, ``evaluate``, ``demo`` (and any
added with :func:`register_subcommand`, e.g. ``train``).  Every subcommand is
one small function taking the parsed arguments and returning an exit status.

Errors caused by the user's input (:class:`~opsef_core.errors.OpsefError`)
end with exit status 2 and one line on stderr naming the file; anything else
is a bug and keeps its traceback.  Logging is quiet by default (WARNING);
``-v`` shows progress messages (INFO), ``-vv`` debugging (DEBUG).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import ConfigError, OpsefError

__all__ = ["main", "build_parser", "register_subcommand", "demo_config_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subcommand:
    """A CLI subcommand: its name, one-line help, argument set-up and handler."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    description: str = ""


_SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                        handler: Callable[[argparse.Namespace], int], description: str = "") -> None:
    """Add a subcommand to ``opsef`` (e.g. ``train`` from another module).

    Parameters
    ----------
    name : str
        The subcommand (``opsef NAME ...``).
    help : str
        One line shown by ``opsef --help``.
    add_arguments : callable
        ``f(parser)`` adding the subcommand's arguments.
    handler : callable
        ``f(args) -> int`` doing the work; returns the exit status.
    description : str
        Longer text for ``opsef NAME --help``.
    """
    _SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, handler, description)


# ---------------------------------------------------------------------- helpers
def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else (logging.INFO if verbosity == 1 else logging.DEBUG)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    # third-party chatter (TensorFlow C++ logs are silenced through the environment, see main)
    for noisy in ("tensorflow", "absl", "cellpose", "h5py", "matplotlib", "PIL", "numba"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def demo_config_path() -> Path:
    """The quickstart config: ``$OPSEF_DEMO_CONFIG`` or ``configs/demo.json`` of the repository.

    Raises
    ------
    ConfigError
        When the file does not exist.
    """
    env = os.environ.get("OPSEF_DEMO_CONFIG")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "configs" / "demo.json"
    if not path.is_file():
        raise ConfigError("demo config not found (set OPSEF_DEMO_CONFIG or run from a repository checkout)",
                          path)
    return path


def _execute(args: argparse.Namespace, config_path: Path | None) -> int:
    from .config import load_config
    from .run import execute

    config = None
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if config_path is not None:
        config = load_config(config_path)
        if getattr(args, "limit", None):
            config = config.copy_with(**{"inputs.limit": args.limit})
    elif getattr(args, "limit", None):
        raise ConfigError("--limit cannot change a resumed run")
    from .record import read_record
    from .run.execute import exit_status

    run_dir = execute(config, out=args.out, resume=getattr(args, "resume", None), workers=args.workers,
                      scheduler=args.scheduler, progress=not args.no_progress and sys.stderr.isatty(),
                      command_line=["opsef", *args.argv], accept_changes=args.accept_changes,
                      allow_large=args.allow_large)
    summary = ranking_summary(Path(run_dir))
    if summary:
        print(summary)
    status = exit_status(run_dir)
    if status:
        record = read_record(run_dir)
        bad = [it.id for it in record.items if it.status != "done"]
        print(f"opsef: {record.status}: {len(bad)} of {len(record.items)} items not fully done "
              f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); see summary.csv; "
              f"finish with: opsef run --resume {run_dir}", file=sys.stderr)
    print(run_dir)
    return status


def ranking_summary(run_dir: Path, top: int = 5) -> str:
    """The best combinations of a run with ground truth, as printed after ``opsef run``.

    Parameters
    ----------
    run_dir : Path
        A run folder; its ``ranking.csv`` (written when ground truth exists) is read.
    top : int
        How many combinations to list overall.

    Returns
    -------
    str
        Two small tables: the best combination of each segmenter, then the ``top`` best
        overall (rank, mean and std of the ranking metric over images, pipeline and
        segmenter setting); ``""`` when the run has no ranking.
    """
    import pandas as pd

    path = Path(run_dir) / "ranking.csv"
    if not path.is_file():
        return ""
    table = pd.read_csv(path)
    mean_cols = [c for c in table.columns if c.endswith("_mean")]
    if table.empty or not mean_cols:
        return ""
    metric = mean_cols[0][: -len("_mean")]
    unscored = table[table[mean_cols[0]].isna()]
    table = table[table[mean_cols[0]].notna()].reset_index(drop=True)
    if table.empty:
        return f"no combination could be scored ({len(unscored)} not scored: see not_scored in {path})"
    n_images = int(table["n_images"].max()) if "n_images" in table.columns else None
    cols = ("pipeline", "setting") if "setting" in table.columns else ("pipeline", "segmenter", "params")

    def line(row) -> str:
        std = row.get(f"{metric}_std")
        std_txt = "" if pd.isna(std) else f" +/- {std:.3f}"
        label = " | ".join(str(row[c]) for c in cols if c in table.columns)
        return f"  {int(row['rank']):>3}. {metric}={row[mean_cols[0]]:.3f}{std_txt}  {label}"

    over = f" over {n_images} image{'s' if n_images != 1 else ''}" if n_images else " over images"
    lines = []
    shown = table.head(top)
    if "segmenter" in table.columns and table["segmenter"].nunique() > 1:
        lines.append(f"best combination of each segmenter by mean {metric}{over}:")
        best = table.sort_values("rank", kind="stable").drop_duplicates("segmenter")
        lines += [line(row) for _, row in best.iterrows()]
    if not ("segmenter" in table.columns and table["segmenter"].nunique() > 1
            and table["segmenter"].nunique() == len(table)):  # else the list above says it all
        lines.append(f"best {len(shown)} of {len(table)} combinations by mean {metric}{over}:")
        lines += [line(row) for _, row in shown.iterrows()]
    partly = table[table["n_images"] < table["n_images_expected"]] if "n_images_expected" in table.columns \
        else table.iloc[:0]
    if len(partly):
        lines.append(f"{len(partly)} combination(s) scored on fewer images than asked: see not_scored in {path}")
    if len(unscored):
        lines.append(f"not scored: {len(unscored)} combination(s) "
                     f"({', '.join(map(str, unscored['combination'].head(3)))}"
                     f"{', ...' if len(unscored) > 3 else ''}): see not_scored in {path}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--workers 0`` is refused, not read as the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", default=None,
                   help="parent folder of the new run folder (default: ./runs)")
    p.add_argument("--workers", type=_positive_int, metavar="N", default=None,
                   help="run images on a local dask cluster of N worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run images on a running dask scheduler, e.g. tcp://host:8786 "
                        "(a dask-jobqueue SLURMCluster's address on HPC)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-large", action="store_true",
                   help="run a grid of more than 10,000 combinations (refused by default)")
    p.add_argument("--accept-changes", action="store_true",
                   help="re-run a run.json or resume although input, truth or model files changed since "
                        "the record (the new checksums are recorded)")
    p.add_argument("--limit", type=int, metavar="N", default=None,
                   help="only the first N images (for exploring a grid quickly)")


# ---------------------------------------------------------------------- run
def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, metavar="CONFIG.json",
                   help="a run config, or the run.json of an earlier run to repeat it in a new folder")
    _add_run_options(p)
    p.add_argument("--resume", metavar="RUN_DIR", type=Path, default=None,
                   help="finish an interrupted run in its folder: images already done are skipped")


def cmd_run(args: argparse.Namespace) -> int:
    """``opsef run``: execute a config (or re-run a run.json); prints the run folder last."""
    if args.config is None and args.resume is None:
        raise ConfigError("give a CONFIG.json, or --resume RUN_DIR")
    return _execute(args, args.config)


# ---------------------------------------------------------------------- plan
def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, metavar="CONFIG.json", help="the run config to expand")
    p.add_argument("--allow-large", action="store_true",
                   help="list a grid of more than 10,000 combinations too")


def cmd_plan(args: argparse.Namespace) -> int:
    """``opsef plan``: print the combinations a config expands to, without running."""
    from .config import load_config
    from .run import plan_table

    print(plan_table(load_config(args.config), allow_large=args.allow_large))
    return 0


# ---------------------------------------------------------------------- info
def _args_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE", help="an image file (TIFF, OME-TIFF, .lif)")


def cmd_info(args: argparse.Namespace) -> int:
    """``opsef info``: series, axes, shape, dtype, pixel sizes and channels of a file."""
    from . import io

    if hasattr(io, "format_info"):
        print(io.format_info(args.file))
    else:
        print(json.dumps(io.list_scenes(args.file), indent=2, default=str))
    return 0


# ---------------------------------------------------------------------- evaluate
def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predicted label images")
    p.add_argument("--gt", required=True, type=Path, metavar="DIR",
                   help="folder of ground-truth label images (matched by file name)")
    p.add_argument("--json", action="store_true", help="print JSON (per image and pooled) instead of a table")
    p.add_argument("--threshold", type=float, default=0.5, help="IoU threshold shown in the table (default 0.5)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``opsef evaluate``: match label images by name and print metrics."""
    from . import evaluate

    per_image, summary = evaluate.evaluate_folders(args.pred, args.gt)
    if args.json:
        print(json.dumps({"per_image": json.loads(per_image.to_json(orient="records")), "summary": summary},
                         indent=2, default=str))
    else:
        print(evaluate.format_evaluation(per_image, summary, threshold=args.threshold))
    return 0


# ---------------------------------------------------------------------- measure
def _args_measure(p: argparse.ArgumentParser) -> None:
    p.add_argument("annotations", type=Path, metavar="LABELS",
                   help="edited labels: an AnnotatorJ folder (<type>/<name>_ROIs.zip), a folder of label "
                        "TIFFs or ROI zips, or one label TIFF / ROI zip")
    p.add_argument("--images", type=Path, metavar="DIR", default=None,
                   help="folder with <name>.tif for each annotated image (default: the annotation folder)")
    p.add_argument("--gt", type=Path, metavar="DIR", default=None,
                   help="ground-truth label folder: also score the edited labels (metrics CSV beside --out)")
    p.add_argument("--out", type=Path, metavar="FILE.csv", required=True,
                   help="measurements table to write (never overwritten); with --gt also FILE.metrics.csv")
    p.add_argument("--ratio", nargs=2, action="append", metavar=("A", "B"), default=[],
                   help="add ratio_A_B = mean A / mean B per object (repeatable)")


def cmd_measure(args: argparse.Namespace) -> int:
    """``opsef measure``: measure (and score) labels edited in Fiji/AnnotatorJ like a run's result."""
    from . import io
    from .curation import measure_curated
    from .errors import RunFolderError

    out = args.out
    metrics_path = out.with_name(out.stem + ".metrics.csv")
    for path in (out, metrics_path) if args.gt else (out,):
        if path.exists():
            raise RunFolderError("exists already; results are never overwritten, choose another --out", path)
    meas, metrics = measure_curated(args.annotations, images=args.images, ground_truth=args.gt,
                                    channel_ratios=[tuple(r) for r in args.ratio])
    io.write_table(out, meas)
    print(f"{len(meas)} objects in {meas['image'].nunique()} images -> {out}")
    if metrics is not None:
        io.write_table(metrics_path, metrics)
        cols = [c for c in ("image", "n_true", "n_pred", "f1@0.5", "aji") if c in metrics.columns]
        print(metrics[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"metrics -> {metrics_path}")
    return 0


# ---------------------------------------------------------------------- demo
def _args_demo(p: argparse.ArgumentParser) -> None:
    _add_run_options(p)


def cmd_demo(args: argparse.Namespace) -> int:
    """``opsef demo``: run configs/demo.json on the bundled demo data; prints the run folder last."""
    return _execute(args, demo_config_path())


register_subcommand(
    "run", "execute a run config (or repeat a recorded run.json); prints the run folder", _args_run, cmd_run,
    "Reads every input image, applies each preprocessing pipeline once, runs every segmenter setting, "
    "and writes a NEW run folder (labels/, overlays/, montage/, summary.csv, measurements.csv, "
    "metrics.csv with ground truth, run.json). The run folder's path is the last line printed.")
register_subcommand("plan", "list the combinations a config expands to, without running", _args_plan, cmd_plan)
register_subcommand("info", "print a file's series, axes, shape, dtype, pixel sizes and channels",
                    _args_info, cmd_info)
register_subcommand("evaluate", "match label images by file name against ground truth and print metrics",
                    _args_evaluate, cmd_evaluate)
register_subcommand("measure", "measure (and score) labels edited in Fiji or AnnotatorJ like a run's result",
                    _args_measure, cmd_measure,
                    "Re-imports edited ROI sets or label images, pairs each with its image by name, writes one "
                    "row per object in physical units and, with --gt, the matching metrics per image.")
register_subcommand("demo", "run the quickstart config on the bundled demo data; prints the run folder",
                    _args_demo, cmd_demo,
                    "Runs configs/demo.json (or $OPSEF_DEMO_CONFIG) and prints the run folder last.")
from .train import cli as _train_cli  # noqa: E402,F401 - registers ``opsef train``
from .zoo import cli as _zoo_cli  # noqa: E402,F401 - registers ``opsef models``


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    def verbose(default):
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("-v", "--verbose", action="count", default=default,
                            help="more messages on stderr (-v: progress, -vv: debugging)")
        return common

    parser = argparse.ArgumentParser(
        prog="opsef", parents=[verbose(0)],
        description="opsef: deep-learning instance segmentation of microscopy images, "
                    "preprocessing and models compared side by side.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"opsef {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in _SUBCOMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help,
                           parents=[verbose(argparse.SUPPRESS)])
        cmd.add_arguments(p)
        p.set_defaults(handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``opsef`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; 2 on bad input or config, a changed input or model on re-run/resume, or a
        run folder that cannot be written (one line on stderr); for ``opsef run``: 3 when some
        items or combinations failed, 4 when every item failed; 130 Ctrl-C, 143 SIGTERM.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except OpsefError as exc:
        print(f"opsef: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        from .run.integrity import RunTerminated

        if isinstance(exc, RunTerminated):
            print("opsef: terminated (SIGTERM); finish with opsef run --resume RUN_DIR", file=sys.stderr)
            return 143
        print("opsef: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
