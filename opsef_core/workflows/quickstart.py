"""Workflow behind ``notebooks/00_quickstart``: explore a grid, pick the best, run it, look at objects.

The OpSeF way of working (``docs/definitions.md#opsef-conventions``): try a few
conceptually different preprocessing pipelines with several models on a couple
of images, look at the montage, rank the combinations against ground truth,
then run the chosen combination on the whole folder and study the objects.

* :func:`usable_models` — keep the model entries whose weights exist (the demo
  models are trained by ``scripts/train_demo_models.py``), say which were skipped;
* :func:`explore_config` — the run config (a plain dict, as in ``configs/``) of
  pipelines × models × scale factors on the first ``n_images`` images;
* :func:`execute_config` — validate a config dict and run it with
  :func:`opsef_core.run.execute` (relative paths resolve against ``base_dir``);
* :func:`choose_combination` — the best ranked combination (``"auto"``) or a
  given combination id, checked against the run;
* :func:`final_config` — the chosen (pipeline, segmenter setting) alone, on every image;
* :func:`final_metrics` — per-image objects and metrics of the final run;
* :func:`run_items` — every image of a run as the engine reads it, with its truth;
  :func:`threshold_explorers` — one decoding-threshold explorer per model of the grid
  (StarDist prob/nms, Cellpose cellprob/flow, U-Net probability, classical h), on any
  image of the run (one cached network pass per image);
* :func:`run_view` — the objects, labels and images of every image of a final run (what
  the object filter spans);
* :func:`filter_and_export` — filter objects by measured ranges (e.g. the object
  filter's current ``state["ranges"]``) and write one ImageJ/Fiji ROI zip per image
  (:func:`opsef_core.export.write_roi_zip`);
* :func:`embed_objects`, :func:`plot_embedding` — PCA and t-SNE of the kept
  objects' shape/intensity features, coloured by k-means cluster.

Scale factors multiply the image size before the network (OpSeF convention):
they are swept as the ``scale`` parameter of ``stardist`` and the
``scale_factor`` of ``cellpose``; ``classical`` and ``unet`` have none.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, ModelNotFoundError, RunFolderError
from ..run.execute import execute_config

__all__ = [
    "SCALE_KEYS",
    "FEATURES",
    "usable_models",
    "explore_config",
    "execute_config",
    "choose_combination",
    "final_config",
    "final_metrics",
    "item_view",
    "run_items",
    "run_view",
    "threshold_explorers",
    "filter_and_export",
    "embed_objects",
    "plot_embedding",
]

log = logging.getLogger(__name__)

#: backend -> name of its scale-factor parameter
SCALE_KEYS = {"stardist": "scale", "cellpose": "scale_factor"}
#: measurement columns used for PCA / t-SNE / clustering (those present are used)
FEATURES = ("area", "perimeter", "circularity", "solidity", "eccentricity", "major_axis_length",
            "minor_axis_length", "intensity_mean", "intensity_std")
METRIC_COLUMNS = ("n_true", "n_pred", "precision@0.5", "recall@0.5", "f1@0.5", "accuracy@0.5",
                  "panoptic_quality@0.5", "aji", "pixel_f1")


# ----------------------------------------------------------------------------- the grid
def _check_entry(entry: Any, i: int) -> dict:
    if not isinstance(entry, dict) or "backend" not in entry:
        raise ConfigError(f"models[{i}] must be a dict with at least 'backend' (and 'name', 'params', "
                          f"'sweep'), got {entry!r}")
    unknown = set(entry) - {"name", "backend", "params", "sweep"}
    if unknown:
        raise ConfigError(f"models[{i}]: unknown key(s) {sorted(unknown)}; use name, backend, params, sweep")
    out = copy.deepcopy(entry)
    out.setdefault("name", out["backend"])
    out.setdefault("params", {})
    out.setdefault("sweep", {})
    return out


def usable_models(models: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Split model entries into those whose weights can be found and those that cannot.

    Parameters
    ----------
    models : list of dict
        Segmenter entries ``{"name", "backend", "params", "sweep"}`` (as in a run
        config); ``params["model"]`` (or the backend's default model) is looked up with
        :func:`opsef_core.models.resolve_model`.  Backends without a model
        (``classical``) are always usable.

    Returns
    -------
    usable : list of dict
        Entries (with ``name``, ``params``, ``sweep`` filled in).
    skipped : list of dict
        ``{"name", "backend", "model", "reason"}`` for each entry whose model is missing
        (logged as a warning: train it with ``scripts/train_demo_models.py`` or
        ``opsef train``).

    Raises
    ------
    ConfigError
        A malformed entry, an unknown backend or a bad parameter.
    """
    from ..models import resolve_model
    from ..segment import get_segmenter

    usable, skipped = [], []
    for i, raw in enumerate(models):
        entry = _check_entry(raw, i)
        seg = get_segmenter(entry["backend"])
        if "model" not in seg.Params.model_fields:
            usable.append(entry)
            continue
        model = entry["params"].get("model", seg.Params.model_fields["model"].default)
        try:
            resolve_model(entry["backend"], model)
        except ModelNotFoundError as exc:
            reason = " ".join(str(exc).split())
            log.warning("model %r (%s) not found, left out of the grid: %s", model, entry["backend"], reason)
            skipped.append({"name": entry["name"], "backend": entry["backend"], "model": model, "reason": reason})
            continue
        usable.append(entry)
    if not usable:
        raise ConfigError("none of the models can be used: " + "; ".join(s["reason"] for s in skipped))
    return usable, skipped


def explore_config(
    data_dir: str,
    ground_truth_dir: str | None,
    pipelines: Sequence[dict],
    models: Sequence[dict],
    scale_factors: Sequence[float] = (1.0,),
    n_images: int | None = 2,
    seed: int = 0,
    name: str = "explore",
) -> dict:
    """The exploration run config: pipelines × models × scale factors on a few images.

    Parameters
    ----------
    data_dir : str
        Folder of input images (relative paths: relative to where the config is run from).
    ground_truth_dir : str or None
        Folder of ground-truth labels with the images' file names (None or ``""``: no
        ranking, choose by eye).
    pipelines : list of dict
        ``{"name", "steps": [{"name", "params"}]}`` (see :mod:`opsef_core.preprocess`).
    models : list of dict
        Segmenter entries (see :func:`usable_models`); their own ``sweep`` (e.g. thresholds)
        is kept.
    scale_factors : list of float
        Image scale factors swept for backends that have one (:data:`SCALE_KEYS`) unless the
        entry sets or sweeps that parameter itself; ``[1.0]`` leaves them at 1.
    n_images : int or None
        Only the first ``n_images`` images (sorted by name); None: all.
    seed : int
        Recorded in the config.
    name : str
        Config name (the run folder's stem).

    Returns
    -------
    dict
        A run config (validate with :func:`opsef_core.config.config_from_dict`).  Only the
        montage is written (no overlays, ROIs or measurements: this is for choosing).

    Raises
    ------
    ConfigError
        No pipelines or models, bad scale factors or ``n_images``.
    """
    if not pipelines:
        raise ConfigError("pipelines: give at least one pipeline (an empty 'steps' list is the raw image)")
    if not models:
        raise ConfigError("models: give at least one model entry")
    scales = [float(s) for s in scale_factors]
    if not scales or any(not s > 0 for s in scales):
        raise ConfigError(f"scale_factors must be a non-empty list of positive numbers, got {list(scale_factors)}")
    if n_images is not None and int(n_images) < 1:
        raise ConfigError(f"n_explore_images must be at least 1, got {n_images}")
    segmenters = []
    for i, raw in enumerate(models):
        entry = _check_entry(raw, i)
        key = SCALE_KEYS.get(entry["backend"])
        if key and key not in entry["params"] and key not in entry["sweep"] and scales != [1.0]:
            entry["sweep"] = {key: scales, **entry["sweep"]}
        segmenters.append(entry)
    inputs: dict[str, Any] = {"path": str(data_dir), "include": ["*.tif", "*.tiff"]}
    if ground_truth_dir:
        inputs["ground_truth"] = str(ground_truth_dir)
    if n_images is not None:
        inputs["limit"] = int(n_images)
    return {
        "schema_version": 1,
        "name": name,
        "description": "quickstart exploration: pipelines x models x scale factors on a few images",
        "inputs": inputs,
        "pipelines": copy.deepcopy(list(pipelines)),
        "segmenters": segmenters,
        "outputs": {"overlays": False, "montage": True, "rois": False, "measurements": False},
        "evaluation": {"rank_by": "f1@0.5"},
        "seed": int(seed),
    }


# ----------------------------------------------------------------------------- choosing
def _read_csv(run_dir: Path, name: str) -> pd.DataFrame:
    path = Path(run_dir) / name
    if not path.is_file():
        raise RunFolderError(f"no {name} in the run folder", run_dir)
    return pd.read_csv(path)


def choose_combination(run_dir: str | Path, choose: str = "auto") -> dict:
    """Pick a combination of an exploration run.

    Parameters
    ----------
    run_dir : path
        The exploration run folder.
    choose : str
        ``"auto"``: the best ranked by ``ranking.csv`` (needs ground truth); otherwise a
        combination id as shown in the montage titles, ``summary.csv`` and ``ranking.csv``
        (e.g. ``"p2-median-clahe__s3-stardist"``).

    Returns
    -------
    dict
        ``combination``, ``pipeline``, ``segmenter``, ``setting``, ``how`` (``"auto"`` or
        ``"given"``) and ``score`` (mean F1@0.5 over the explored images, None without
        ground truth).

    Raises
    ------
    ConfigError
        An unknown id, ``"auto"`` without ground truth, or only failed combinations.
    """
    run_dir = Path(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    ids = list(dict.fromkeys(summary["combination"].astype(str)))
    ranking = pd.read_csv(run_dir / "ranking.csv") if (run_dir / "ranking.csv").is_file() else None
    if choose == "auto":
        if ranking is None or ranking.empty:
            raise ConfigError("choose='auto' needs ground truth to rank the combinations; look at the montage "
                              f"and set choose to one of {ids}")
        ok = set(summary.loc[summary["status"] == "done", "combination"].astype(str))
        ranked = ranking[ranking["combination"].astype(str).isin(ok)]
        if ranked.empty:
            raise ConfigError(f"every combination failed in {run_dir}; see summary.csv")
        row = ranked.iloc[0]
        how = "auto"
    else:
        if choose not in ids:
            raise ConfigError(f"choose={choose!r} is not a combination of the exploration run; use 'auto' or "
                              f"one of {ids}")
        row = summary[summary["combination"].astype(str) == choose].iloc[0]
        if ranking is not None:
            match = ranking[ranking["combination"].astype(str) == choose]
            row = match.iloc[0] if len(match) else row
        how = "given"
    score = row.get("f1@0.5_mean") if hasattr(row, "get") else None
    return {"combination": str(row["combination"]), "pipeline": str(row["pipeline"]),
            "segmenter": str(row["segmenter"]), "setting": str(row["setting"]), "how": how,
            "score": None if score is None or pd.isna(score) else float(score)}


def final_config(explore: dict, combination: str, name: str = "final") -> dict:
    """The config running one combination of an exploration config on every image.

    Parameters
    ----------
    explore : dict
        The exploration config (from :func:`explore_config`).
    combination : str
        A combination id of that config (see :func:`choose_combination`).
    name : str
        Config name.

    Returns
    -------
    dict
        Same inputs without the image limit, the chosen pipeline, the chosen segmenter
        setting (swept values fixed), overlays and measurements on.

    Raises
    ------
    ConfigError
        When ``combination`` is not one of the config's combinations.
    """
    from ..config import config_from_dict
    from ..run import plan

    combos = {c.id: c for c in plan(config_from_dict(explore, where="exploration config"))}
    if combination not in combos:
        raise ConfigError(f"combination {combination!r} is not in the exploration config; known: {list(combos)}")
    c = combos[combination]
    entry = next(s for s in explore["segmenters"] if s["name"] == c.segmenter)
    inputs = {k: v for k, v in explore["inputs"].items() if k != "limit"}
    return {
        "schema_version": 1,
        "name": name,
        "description": f"quickstart: the chosen combination {combination} on every image",
        "inputs": inputs,
        "pipelines": [c.pipeline_spec],
        "segmenters": [{"name": c.segmenter, "backend": c.backend,
                        "params": {**entry.get("params", {}), **c.sweep}}],
        "outputs": {"overlays": True, "montage": False, "rois": False, "measurements": True},
        "evaluation": {"rank_by": explore.get("evaluation", {}).get("rank_by", "f1@0.5")},
        "seed": explore.get("seed", 0),
    }


def final_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per image of a final run: object count and, with ground truth, the metrics.

    Returns
    -------
    pandas.DataFrame
        ``image, combination, n_objects`` and, when ``metrics.csv`` exists, ``n_true, n_pred,
        precision@0.5, recall@0.5, f1@0.5, accuracy@0.5, panoptic_quality@0.5, aji, pixel_f1``
        (values rounded to 6 decimals; no timings, so a re-run gives the same table).
    """
    run_dir = Path(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    out = summary[["image", "combination", "status", "n_objects"]].copy()
    if (run_dir / "metrics.csv").is_file():
        metrics = pd.read_csv(run_dir / "metrics.csv")
        cols = [c for c in METRIC_COLUMNS if c in metrics.columns]
        out = out.merge(metrics[["image", "combination", *cols]], on=["image", "combination"], how="left")
    return out.round(6).reset_index(drop=True)


# ----------------------------------------------------------------------------- objects
def _labels_path(run_dir: Path, summary: pd.DataFrame, image: str) -> Path:
    rows = summary[(summary["image"].astype(str) == image) & (summary["status"] == "done")]
    if rows.empty:
        raise RunFolderError(f"no finished segmentation of image {image!r}", run_dir)
    rel = str(rows.iloc[0]["labels"])
    filtered = run_dir / rel.replace("labels/", "labels_filtered/", 1)
    return filtered if filtered.is_file() else run_dir / rel


def item_view(run_dir: str | Path, image: str | None = None):
    """An image of a final run with its labels and measurements (what the object filter shows).

    Parameters
    ----------
    run_dir : path
        The final run folder.
    image : str, optional
        Image id (default: the first image).

    Returns
    -------
    (pandas.DataFrame, ndarray, Image)
        The image's rows of ``measurements.csv``, its label image and the input image.
    """
    from .. import io
    from ..config import load_config
    from ..run import load_input

    run_dir = Path(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    table = _read_csv(run_dir, "measurements.csv")
    image = image or str(summary["image"].iloc[0])
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    paths = {it["id"]: it["path"] for it in record.get("items", [])}
    if image not in paths:
        raise RunFolderError(f"image {image!r} is not part of the run; images: {sorted(paths)}", run_dir)
    config = load_config(run_dir / "run.json")
    img = load_input(config, paths[image])
    labels = io.read_labels(_labels_path(run_dir, summary, image))
    return table[table["image"].astype(str) == image].reset_index(drop=True), labels, img


def run_items(run_dir: str | Path) -> list[dict]:
    """Every item of a run as the engine reads it, with its ground truth.

    Parameters
    ----------
    run_dir : path
        A run folder (``run.json``).

    Returns
    -------
    list of dict
        ``{"id", "image" (Image, in memory), "truth" (labels or None)}`` in the run's order.

    Raises
    ------
    RunFolderError
        No ``run.json`` in the folder.
    """
    from .. import io
    from ..config import load_config
    from ..run import load_input, plan_items

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise RunFolderError("no run.json in the run folder", run_dir)
    config = load_config(run_dir / "run.json")
    out = []
    for item in plan_items(config.resolved()):
        img = load_input(config, item)
        img = replace(img, data=np.asarray(img.data), name=item.id)
        truth = io.read_labels(item.ground_truth) if item.ground_truth else None
        out.append({"id": item.id, "image": img, "truth": truth})
    return out


def threshold_explorers(run_dir: str | Path, models: Sequence[dict], *, pipeline: str | None = None,
                        sliders: dict | None = None, backends: Sequence[str] | None = None,
                        interactive: bool = True) -> dict:
    """One decoding-threshold explorer per model entry, on every image of a run.

    Each is a :func:`opsef_core.widgets.parameter_explorer` over the run's images (an image
    selector) with the backend's decoding sliders (:data:`opsef_core.widgets.DECODING_SLIDERS`:
    StarDist ``prob_thresh``/``nms_thresh``, Cellpose ``cellprob_threshold``/``flow_threshold``,
    U-Net ``prob_threshold``, classical ``h``/``min_size``).  The network runs once per image,
    when the image is first selected; moving a slider only decodes.

    Parameters
    ----------
    run_dir : path
        A run folder (e.g. the exploration run): its images and ground truth.
    models : list of dict
        Segmenter entries (``name``, ``backend``, ``params``, ``sweep``); a swept parameter
        starts at its first value.
    pipeline : str, optional
        Name of one of the run's pipelines applied before the network (default: the first).
    sliders : dict, optional
        ``{backend: {parameter: (min, max, step)}}`` replacing the defaults.
    backends : list of str, optional
        Only entries of these backends (default: every backend with sliders).
    interactive : bool
        Build the widgets.

    Returns
    -------
    dict
        ``{entry name: Explorer}`` (empty when no entry has a backend with sliders).

    Raises
    ------
    ConfigError
        An unknown pipeline name, or a malformed model entry.
    """
    from ..config import load_config
    from ..preprocess import Pipeline
    from ..widgets import DECODING_SLIDERS, parameter_explorer

    run_dir = Path(run_dir)
    items = run_items(run_dir)
    config = load_config(run_dir / "run.json")
    specs = [p.model_dump(mode="json") for p in config.pipelines]
    names = [s["name"] for s in specs]
    if pipeline is None:
        spec = specs[0] if specs else {"name": "raw", "steps": []}
    elif pipeline in names:
        spec = specs[names.index(pipeline)]
    else:
        raise ConfigError(f"pipeline {pipeline!r} is not a pipeline of the run; pipelines are {names}")
    pipe = Pipeline.from_dict(spec)
    table = {**DECODING_SLIDERS, **(sliders or {})}
    images = {it["id"]: it["image"] for it in items}
    truths = {it["id"]: it["truth"] for it in items if it["truth"] is not None}
    out = {}
    for i, raw in enumerate(models):
        entry = _check_entry(raw, i)
        if entry["backend"] not in table or (backends is not None and entry["backend"] not in backends):
            continue
        params = {**entry["params"], **{k: v[0] for k, v in entry["sweep"].items() if isinstance(v, list) and v}}
        out[entry["name"]] = parameter_explorer(images, entry["backend"], params, sliders=table[entry["backend"]],
                                                truth=truths or None, preprocess=pipe.apply if len(pipe) else None,
                                                interactive=interactive)
        log.info("%s: threshold explorer on %d image(s), pipeline %s", entry["name"], len(images), spec["name"])
    return out


def run_view(run_dir: str | Path):
    """Every image of a final run with its labels and measurements (what the object filter spans).

    Parameters
    ----------
    run_dir : path
        The final run folder (``measurements.csv``, ``summary.csv``, label images).

    Returns
    -------
    (pandas.DataFrame, dict, dict)
        ``measurements.csv`` (rows of the finished images), ``{image: labels}`` (the filtered
        labels when the run wrote them, as :func:`filter_and_export` reads them) and
        ``{image: Image}``.
    """
    from .. import io

    run_dir = Path(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    table = _read_csv(run_dir, "measurements.csv")
    done = list(dict.fromkeys(summary.loc[summary["status"] == "done", "image"].astype(str)))
    images = {it["id"]: it["image"] for it in run_items(run_dir) if it["id"] in done}
    labels = {image: io.read_labels(_labels_path(run_dir, summary, image)) for image in done}
    table = table[table["image"].astype(str).isin(done)].reset_index(drop=True)
    return table, labels, images


def filter_and_export(run_dir: str | Path, ranges: dict, roi_dir: str | Path) -> tuple[pd.DataFrame, list[Path]]:
    """Filter every image's objects by measured ranges and write one ROI zip per image.

    Parameters
    ----------
    run_dir : path
        The final run folder (``measurements.csv``, ``summary.csv``, label images).
    ranges : dict
        ``{column: [min, max]}`` on ``measurements.csv`` columns (``None`` leaves a side
        open), applied with :func:`opsef_core.postprocess.filter_objects`.
    roi_dir : path
        Folder for ``<image>.zip`` (ImageJ ROI sets of the kept objects).

    Returns
    -------
    objects : pandas.DataFrame
        ``measurements.csv`` with a boolean ``kept`` column.
    zips : list of Path
        The ROI zips written (images with no kept object get none).

    Raises
    ------
    ConfigError
        A range on an unknown column, or min > max.
    """
    from .. import io
    from ..export import write_roi_zip
    from ..postprocess import filter_objects

    run_dir, roi_dir = Path(run_dir), Path(roi_dir)
    summary = _read_csv(run_dir, "summary.csv")
    table = _read_csv(run_dir, "measurements.csv")
    ranges = {k: (v[0], v[1]) for k, v in dict(ranges or {}).items()}
    kept_mask = np.zeros(len(table), bool)
    zips = []
    for image in dict.fromkeys(summary.loc[summary["status"] == "done", "image"].astype(str)):
        sel = (table["image"].astype(str) == image).to_numpy()
        labels = io.read_labels(_labels_path(run_dir, summary, image))
        filtered, kept = filter_objects(labels, ranges, table=table[sel].reset_index(drop=True))
        kept_mask[sel] = table.loc[sel, "label"].isin(kept["label"]).to_numpy()
        if len(kept):
            zips.append(write_roi_zip(roi_dir / f"{image}.zip", filtered))
        log.info("%s: kept %d of %d objects", image, len(kept), int(sel.sum()))
    return table.assign(kept=kept_mask), zips


def embed_objects(table: pd.DataFrame, columns: Sequence[str] | None = None, n_clusters: int = 3,
                  seed: int = 0, perplexity: float = 30.0) -> pd.DataFrame:
    """PCA, t-SNE and k-means clusters of objects on their shape and intensity features.

    Parameters
    ----------
    table : pandas.DataFrame
        Objects (e.g. the kept rows of :func:`filter_and_export`).
    columns : list of str, optional
        Feature columns (default: those of :data:`FEATURES` present in the table).
    n_clusters : int
        k-means clusters (reduced to the number of objects when fewer).
    seed : int
        Seeds t-SNE and k-means.
    perplexity : float
        t-SNE perplexity (clipped for small tables by :func:`opsef_core.analysis.tsne`).

    Returns
    -------
    pandas.DataFrame
        ``image, label`` (when present), ``PC1, PC2, tSNE1, tSNE2, cluster``; rows with a
        missing feature are dropped.  ``.attrs`` holds the features and the PCA's explained
        variance ratio.

    Raises
    ------
    ConfigError
        Fewer than 4 objects or no feature column.
    """
    from .. import analysis

    cols = list(columns) if columns else [c for c in FEATURES if c in table.columns]
    if not cols:
        raise ConfigError(f"no feature columns for the embedding; table columns: {list(table.columns)}")
    data = table.dropna(subset=cols)
    if len(data) < 4:
        raise ConfigError(f"the embedding needs at least 4 objects with features, got {len(data)}")
    pcs = analysis.pca(data, cols, n_components=2)
    emb = analysis.tsne(data, cols, perplexity=perplexity, seed=seed)
    clusters = analysis.cluster(data, cols, n_clusters=min(n_clusters, len(data)), seed=seed)
    keys = [c for c in ("image", "label") if c in data.columns]
    out = pd.concat([data[keys], pcs, emb, clusters], axis=1).reset_index(drop=True)
    out.attrs.update(features=cols, explained_variance_ratio=pcs.attrs.get("explained_variance_ratio"),
                     perplexity=emb.attrs.get("perplexity"))
    return out


def plot_embedding(embedding: pd.DataFrame):
    """PCA and t-SNE scatter plots side by side, coloured by cluster.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .. import analysis
    from ..viz import new_figure

    fig = new_figure((10, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    df = embedding.assign(cluster=embedding["cluster"].astype(str))
    analysis.scatter(df, "PC1", "PC2", color_by="cluster", ax=ax1)
    evr = embedding.attrs.get("explained_variance_ratio")
    if evr:
        ax1.set_xlabel(f"PC1 ({100 * evr[0]:.0f} % of variance)")
        ax1.set_ylabel(f"PC2 ({100 * evr[1]:.0f} % of variance)")
    ax1.set_title("PCA")
    analysis.scatter(df, "tSNE1", "tSNE2", color_by="cluster", ax=ax2)
    ax2.set_title("t-SNE")
    return fig
