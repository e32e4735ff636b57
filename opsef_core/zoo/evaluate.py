"""``opsef models evaluate``: which model for my data — score every model on labelled images.

:func:`evaluate_models` builds one run config whose segmenters are the models (each at its
recommended scale and thresholds from its card, or over a small threshold grid), runs it with
the run engine (:func:`opsef_core.run.execute_config`: recorded, cached and verified like every
run), then reads the run's ``ranking.csv`` and ``metrics.csv`` and writes the leaderboard into
the same run folder: ``leaderboard.csv`` (one row per model, its best setting first) and
``leaderboard.png``.

Scale: the median equivalent diameter of the ground-truth objects is compared with the object
size the model expects (its card's ``expects.object_diameter_px``).  StarDist gets
``scale = expected / measured``; Cellpose gets ``diameter = measured`` (the backend rescales by
``diam_mean / diameter``); opsef's U-Net has no scale parameter and runs at scale 1 (the
leaderboard says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EmptyFolderError, InputFileError
from .cards import object_diameter
from .listing import find_models, is_model, model_card

__all__ = ["BACKENDS", "GRID", "evaluate_models", "plot_leaderboard", "segmenter_entry", "select_models"]

logger = logging.getLogger(__name__)

BACKENDS = ("stardist", "cellpose", "unet")
#: the small grid of ``--grid``: one network pass per model and image, several decodings
GRID = {"stardist": {"prob_thresh": [0.3, 0.5, 0.7]},
        "cellpose": {"cellprob_threshold": [-1.0, 0.0, 1.0]},
        "unet": {"prob_threshold": [0.3, 0.5, 0.7]}}
#: per-image metrics averaged into the leaderboard besides the ranking metric
_EXTRA_METRICS = ("precision@0.5", "recall@0.5", "panoptic_quality@0.5", "aji", "pixel_f1")


def _data_facts(images: Path, labels: Path, channel, include: Sequence[str], limit: int | None) -> dict:
    """Dimensionality and median object diameter (px) of the labelled data."""
    from .. import io

    files = io.discover(images, include=tuple(include)) if images.is_dir() else [images]
    if not files:
        raise EmptyFolderError(f"no image matching {list(include)}", images)
    files = files[:limit] if limit else files
    img = io.read_image(files[0])
    if channel is not None:
        img = img.sel(c=channel)
    dims = 3 if "Z" in img.spatial_axes else 2
    gt = []
    for f in files[:8]:
        cands = sorted(labels.glob(Path(f).stem + ".tif*"))
        if cands:
            gt.append(io.read_labels(cands[0]))
    if not gt:
        raise InputFileError(f"no label image matches the images by file name (e.g. {Path(files[0]).name})", labels)
    return {"dims": dims, "object_diameter_px": object_diameter(gt), "n_images": len(files)}


def select_models(models: Sequence[str] | None, dims: int) -> list[dict]:
    """The cards of the models to score.

    Parameters
    ----------
    models : sequence of str, optional
        Model names (as ``opsef models`` lists them) or paths; None: every model found whose
        backend is StarDist, Cellpose or the U-Net and whose dimensionality is ``dims``.
    dims : {2, 3}
        The data's dimensionality.

    Raises
    ------
    ConfigError
        A name no listed model has, or a model of the wrong dimensionality.
    """
    if models is None:
        chosen = [c for c in find_models() if c["backend"] in BACKENDS and c.get("dims") == dims]
        if not chosen:
            raise ConfigError(f"no {dims}D model found (opsef models lists them)")
        return chosen
    known = find_models()
    chosen = []
    for spec in models:
        p = Path(spec).expanduser()
        if p.exists() and is_model(p):
            card = {**model_card(p)[0], "path": str(p.resolve()), "source": "path"}
        else:
            hits = [c for c in known if c["name"] == spec]
            if not hits:
                names = ", ".join(sorted({c["name"] for c in known}))
                raise ConfigError(f"--models: no model {spec!r}; found: {names}")
            card = hits[0]
        if card.get("dims") != dims:
            raise ConfigError(f"--models: {spec!r} is a {card.get('dims')}D model but the images are {dims}D")
        chosen.append(card)
    return chosen


def segmenter_entry(card: dict, data_diameter: float | None, *, grid: bool = False, name: str | None = None) -> dict:
    """The run-config segmenter entry of one model: recommended parameters, scale, optional grid.

    Parameters
    ----------
    card : dict
        The model's card with its ``path``.
    data_diameter : float, optional
        Median object diameter of the data (px); None keeps scale 1.
    grid : bool
        Sweep the backend's threshold over :data:`GRID` instead of the recommended value.
    name : str, optional
        Segmenter name (default: the card's name).
    """
    backend = card["backend"]
    params: dict[str, Any] = {k: v for k, v in (card.get("recommended") or {}).items() if k != "model"}
    params["model"] = str(Path(card["path"]).resolve())
    expected = (card.get("expects") or {}).get("object_diameter_px")
    if data_diameter and expected:
        if backend == "stardist":
            params["scale"] = round(float(expected) / float(data_diameter), 4)
        elif backend == "cellpose":
            params["diameter"] = round(float(data_diameter), 3)
    sweep = {}
    if grid:
        sweep = {k: list(v) for k, v in GRID[backend].items()}
        for k in sweep:
            params.pop(k, None)
    return {"name": name or card["name"], "backend": backend, "params": params, "sweep": sweep}


def _unique_names(cards: list[dict]) -> list[str]:
    names, seen = [], {}
    for c in cards:
        base = c["name"]
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{c.get('source', 'path')}{seen[base]}")
    return names


def evaluate_models(
    images: str | Path,
    labels: str | Path,
    *,
    models: Sequence[str] | None = None,
    out: str | Path = "runs",
    grid: bool = False,
    channel: int | str | None = None,
    include: Sequence[str] = ("*.tif", "*.tiff"),
    limit: int | None = None,
    device: str = "auto",
) -> Path:
    """Score models on labelled images through the run engine and write a leaderboard.

    Parameters
    ----------
    images : path
        An image file or a folder of images.
    labels : path
        Folder of ground-truth label images matched by file name.
    models : sequence of str, optional
        Names or paths (default: every model of the data's dimensionality found by
        :func:`~opsef_core.zoo.listing.find_models`).
    out : path
        Parent folder of the new run folder.
    grid : bool
        Sweep each backend's threshold (:data:`GRID`) instead of the recommended one.
    channel : int or str, optional
        Channel to segment in multichannel images.
    include : sequence of str
        Glob patterns of image files in ``images``.
    limit : int, optional
        Only the first images (sorted by name).
    device : {"auto", "cpu", "cuda"}
        Where the networks run.

    Returns
    -------
    Path
        The run folder (``run.json``, ``ranking.csv``, ``metrics.csv``, ``leaderboard.csv``,
        ``leaderboard.png``).

    Raises
    ------
    InputFileError, EmptyFolderError, ConfigError, ModelNotFoundError
        Missing folders, no matching ground truth, unknown models, as the run engine raises.
    """
    from .. import io
    from ..run import execute_config

    images, labels = Path(images), Path(labels)
    for p, what in ((images, "--images"), (labels, "--labels")):
        if not p.exists():
            raise InputFileError(f"{what} does not exist", p)
    if not labels.is_dir():
        raise InputFileError("--labels must be a folder of label images", labels)
    facts = _data_facts(images, labels, channel, include, limit)
    cards = select_models(models, facts["dims"])
    names = _unique_names(cards)
    entries = [segmenter_entry(c, facts["object_diameter_px"], grid=grid, name=n) for c, n in zip(cards, names)]
    config = {
        "name": "models_evaluate",
        "description": f"opsef models evaluate: {len(entries)} models on {images} "
                       f"(median object diameter {facts['object_diameter_px']} px)"
                       + (", threshold grid" if grid else ", recommended settings"),
        "inputs": {"path": str(images.resolve()), "include": list(include), "channel": channel,
                   "ground_truth": str(labels.resolve()), "limit": limit},
        "pipelines": [{"name": "raw", "steps": []}],
        "segmenters": entries,
        "outputs": {"overlays": False, "montage": False, "rois": False, "measurements": False},
        "evaluation": {"rank_by": "f1@0.5"},
        "execution": {"device": device},
    }
    run_dir = Path(execute_config(config, out=out))
    board = _leaderboard(run_dir, cards, names, entries, facts)
    io.write_table(run_dir / "leaderboard.csv", board)
    fig = plot_leaderboard(board, path=run_dir / "leaderboard.png")
    fig.clear()
    logger.info("leaderboard of %d models written to %s", len(board), run_dir)
    return run_dir


def _leaderboard(run_dir: Path, cards: list[dict], names: list[str], entries: list[dict], facts: dict):
    import pandas as pd

    ranking_path = run_dir / "ranking.csv"
    if not ranking_path.is_file():
        raise InputFileError("the run wrote no ranking.csv (no image had ground truth)", run_dir)
    ranking = pd.read_csv(ranking_path)
    metrics = pd.read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else pd.DataFrame()
    by = "f1@0.5"
    rows = []
    for card, name, entry in zip(cards, names, entries):
        mine = ranking[ranking["segmenter"].astype(str) == name]
        scored = mine[mine["n_images"] > 0]
        best = scored.sort_values(f"{by}_mean", ascending=False, kind="stable").iloc[0] if len(scored) \
            else (mine.iloc[0] if len(mine) else None)
        row: dict[str, Any] = {
            "model": name, "backend": card["backend"], "dims": card.get("dims"),
            "setting": None if best is None else best.get("setting"),
            f"{by}_mean": np.nan if best is None else best.get(f"{by}_mean"),
            f"{by}_std": np.nan if best is None else best.get(f"{by}_std"),
            "n_images": 0 if best is None else int(best.get("n_images", 0)),
            "n_images_expected": facts["n_images"] if best is None else int(best.get("n_images_expected", 0)),
            "not_scored": "" if best is None or pd.isna(best.get("not_scored")) else best.get("not_scored"),
        }
        if best is not None and len(metrics) and "combination" in metrics.columns:
            sel = metrics[metrics["combination"].astype(str) == str(best["combination"])]
            for m in _EXTRA_METRICS:
                if m in sel.columns:
                    row[f"{m}_mean"] = float(pd.to_numeric(sel[m], errors="coerce").mean())
        row.update({
            "scale": entry["params"].get("scale", 1.0) if card["backend"] != "cellpose" else None,
            "diameter": entry["params"].get("diameter"),
            "model_object_diameter_px": (card.get("expects") or {}).get("object_diameter_px"),
            "data_object_diameter_px": facts["object_diameter_px"],
            "params": json.dumps(entry["params"], sort_keys=True),
            "sweep": json.dumps(entry["sweep"], sort_keys=True),
            "settings_tried": len(mine),
            "sha256": card["sha256"], "path": card["path"],
        })
        rows.append(row)
    board = pd.DataFrame(rows)
    board = board.sort_values(f"{by}_mean", ascending=False, kind="stable", na_position="last")
    board.insert(0, "rank", board[f"{by}_mean"].rank(ascending=False, method="min").astype("Int64"))
    return board.reset_index(drop=True)


def plot_leaderboard(board, path: str | Path | None = None, metric: str = "f1@0.5"):
    """Bar chart of each model's best mean ``metric`` (± sd over images), best first.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..viz import new_figure, save_figure

    fig = new_figure((max(4.0, 0.9 * len(board) + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    vals = board[f"{metric}_mean"].astype(float).fillna(0.0).to_numpy()
    err = board[f"{metric}_std"].astype(float).fillna(0.0).to_numpy()
    colors = {"stardist": "tab:blue", "cellpose": "tab:orange", "unet": "tab:green"}
    ax.bar(range(len(board)), vals, yerr=err, capsize=3, color=[colors.get(b, "tab:gray") for b in board["backend"]])
    ax.set_xticks(range(len(board)), [f"{m}\n({b})" for m, b in zip(board["model"], board["backend"])],
                  fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{metric} (mean over images)")
    ax.set_title("opsef models evaluate: best setting per model")
    for i, v in enumerate(vals):
        ax.text(i, v / 2 if v > 0.1 else v + 0.02, f"{v:.2f}", ha="center", fontsize=9,
                color="white" if v > 0.1 else "black")
    if path is not None:
        save_figure(fig, path)
    return fig
