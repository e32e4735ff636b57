"""Workflow behind ``notebooks/debris_brightfield``: one spheroid per brightfield image, among debris.

The science is in :mod:`opsef_core.science.spheroid` (readouts) and
:func:`opsef_core.evaluate.spheroid_metrics` / :func:`~opsef_core.evaluate.spheroid_summary`
(``docs/definitions.md#single-spheroid-metrics``); the segmentation is a run of the run engine
(:func:`opsef_core.run.execute`).  This module strings them together for a time series laid
out as ``DATA/images/*_tNN.tif`` with single-spheroid truth masks in ``DATA/labels/`` (same
file names):

* :func:`pipeline_spec` / :func:`spheroid_pipeline` — the study's preprocessing as a run-config
  pipeline (``{"name", "steps"}``) / a :class:`~opsef_core.preprocess.Pipeline`: optional
  rescaling (1/2 was best; the engine maps the labels back to the input grid), inversion (the
  spheroid is dark on a bright field), optional rolling-ball background subtraction (off by
  default: :data:`DEFAULT_PIPELINE` is what the spheroid U-Net was trained on);
* :data:`DEFAULT_SETTINGS` — the settings compared by default: :data:`SPHEROID_UNET`, the
  bundled spheroid U-Net ``models/spheroid_debris_unet`` (binary spheroid vs background,
  trained at half resolution on :mod:`opsef_core.testing.debris` images by
  ``scripts/train_spheroid_model.py``; probability threshold 0.5), and the classical Otsu
  threshold (:data:`CLASSICAL_OTSU`) beside it for comparison;
* :func:`usable_settings` — the segmenter settings whose models can be found (a missing model
  would stop the whole run before its first image);
* :func:`run_config` — the run config (a plain dict, the schema of ``configs/``) of the
  notebook's parameters: one pipeline, the settings compared as ``segmenters``, the
  single-spheroid post-processing (``postprocess.smooth_radius``: the largest object's outer
  contour), ground truth, measurements; ``configs/debris_brightfield.json`` is this config
  on the demo data;
* :func:`execute_run` — validate and run it; the run folder holds ``run.json`` (``opsef run``
  repeats it), ``labels/`` (input grid), ``labels_working/`` (half resolution),
  ``labels_filtered/`` (post-processed), ``summary.csv``, ``measurements.csv`` (µm),
  ``metrics.csv``;
* :func:`read_run` — the run's items (images, truth, time index ``tNN`` of each file name) and
  post-processed labels per setting, read back from the run folder (nothing is re-segmented);
* :func:`evaluate_series` / :func:`evaluate_run` — per image and setting: the largest object's
  readouts in µm (area, perimeter, equivalent diameter, volume of the sphere of that diameter,
  circularity) and, with truth, JCD, RDD, RCD, invalid/ambiguous flags and the average radial
  error; per setting: means, standard deviations, ISF/ASF with binomial standard errors;
* :func:`choose_setting` — the setting with the lowest mean Jaccard distance;
* :func:`preprocessed_image` — one preprocessed image as the run saved it (for the explorer);
* :func:`copy_labels` — the chosen setting's label images into another folder;
* plots: :func:`plot_growth` (diameter and volume over time, prediction vs truth),
  :func:`plot_overlays` (the chosen result on every image), :func:`plot_settings`
  (settings side by side, via :func:`opsef_core.viz.montage`).
"""

from __future__ import annotations

import copy
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, InputFileError, OpsefError, RunFolderError
from ..run.execute import execute_config
from ..viz import new_figure

__all__ = [
    "load_series",
    "pipeline_spec",
    "spheroid_pipeline",
    "usable_settings",
    "run_config",
    "execute_run",
    "read_run",
    "evaluate_series",
    "evaluate_run",
    "choose_setting",
    "preprocessed_image",
    "copy_labels",
    "plot_growth",
    "plot_overlays",
    "plot_settings",
    "time_index",
    "smooth_largest",
    "SPHEROID_UNET",
    "CLASSICAL_OTSU",
    "DEFAULT_SETTINGS",
    "DEFAULT_PIPELINE",
    "DEFAULT_SMOOTH_RADIUS",
    "explorer_setting",
]

log = logging.getLogger(__name__)

_TIME = re.compile(r"(?:^|[_\-.])t(\d+)(?=$|[_\-.])", re.IGNORECASE)

#: readout columns of the per-image table (prediction; ``*_true`` for the truth)
READOUTS = ("area", "perimeter", "diameter", "volume", "circularity")

#: the bundled spheroid U-Net (``models/spheroid_debris_unet``, trained by
#: ``scripts/train_spheroid_model.py`` as the study did): spheroid probability thresholded at
#: 0.5 (the ``unet`` backend's foreground ``1 - p_background``), objects under 250 px of the
#: working (half) resolution dropped — a third of the smallest spheroid the model is meant for
#: (radius 30 px of the input grid: ~700 px at half resolution); the largest object's outer
#: contour is the run's post-processing (:data:`DEFAULT_SMOOTH_RADIUS`).
SPHEROID_UNET = {"name": "spheroid_unet", "backend": "unet",
                 "params": {"model": "spheroid_debris_unet", "prob_threshold": 0.5, "instances": "watershed",
                            "min_size": 250}}
#: the classical comparison: Otsu threshold of the smoothed, inverted image
CLASSICAL_OTSU = {"name": "classical_otsu", "backend": "classical",
                  "params": {"threshold": "otsu", "sigma": 2.0, "h": 0.0, "min_size": 100}}
#: the settings the notebook and :func:`default_settings` compare (the U-Net first)
DEFAULT_SETTINGS = (SPHEROID_UNET, CLASSICAL_OTSU)
#: the pipeline the spheroid U-Net was trained for (:func:`pipeline_spec` arguments)
DEFAULT_PIPELINE = {"scale": 0.5, "invert": True, "background_radius": None}
#: ``postprocess.smooth_radius`` by default (input-grid pixels): the largest object's holes
#: filled and opened with a disk of this radius, which cuts debris attached by a neck; chosen
#: on the validation images of the generator (seed 1402: mean JCD 0.092 with 6, 0.087 with 12)
DEFAULT_SMOOTH_RADIUS = 12
METRICS = ("invalid", "ambiguous", "jcd", "rdd", "rcd", "radial_error_um")


def time_index(path: str | Path) -> int:
    """The time index ``NN`` of a file name holding ``_tNN`` (e.g. ``bf_t03.tif`` → 3).

    Raises
    ------
    InputFileError
        The name holds no (or more than one) ``tNN`` token.
    """
    stem = Path(path).name.split(".")[0]
    hits = _TIME.findall(stem)
    if len(hits) != 1:
        raise InputFileError(f"file name must carry one time index like '_t03' (found {len(hits)})", path)
    return int(hits[0])


def load_series(data_dir: str | Path, max_images: int | None = None, require_truth: bool = True) -> list[dict]:
    """Read a brightfield time series and its single-spheroid truth.

    Parameters
    ----------
    data_dir : path
        Folder with ``images/`` and (optionally) ``labels/`` holding files of the same names.
    max_images : int, optional
        Keep the first ``max_images`` time points (demo scale).
    require_truth : bool
        Raise when an image has no truth file (False: ``truth`` is None).

    Returns
    -------
    list of dict
        Sorted by time: ``name``, ``time``, ``path``, ``image`` (:class:`Image`, ``YX``),
        ``truth`` (``YX`` labels or None).

    Raises
    ------
    EmptyFolderError
        No image in ``data_dir/images``.
    InputFileError
        A name without time index, a 3D or multichannel image, a truth of another shape.
    """
    from .. import io

    data_dir = Path(data_dir)
    paths = io.discover(data_dir / "images")
    items = []
    for p in paths:
        img = io.read_image(p)
        if img.spatial_axes != "YX" or "C" in img.axes or "T" in img.axes:
            raise InputFileError(f"expected a single-channel 2D (YX) brightfield image, got axes {img.axes!r}", p)
        gt_path = data_dir / "labels" / p.name
        truth = None
        if gt_path.is_file():
            truth = io.read_labels(gt_path)
            if truth.shape != img.shape:
                raise InputFileError(f"truth of shape {truth.shape} does not fit the image {img.shape} ({p.name})",
                                     gt_path)
        elif require_truth:
            raise InputFileError(f"no truth mask for {p.name}", gt_path)
        items.append({"name": img.name, "time": time_index(p), "path": str(p), "image": img, "truth": truth})
    items.sort(key=lambda d: (d["time"], d["name"]))
    if max_images is not None:
        items = items[: int(max_images)]
    log.info("loaded %d brightfield images from %s", len(items), data_dir)
    return items


# ----------------------------------------------------------------------------- the run config
def pipeline_spec(scale: float = 0.5, invert: bool = True, background_radius: float | None = None,
                  extra_steps: Sequence[Mapping] = ()) -> dict:
    """The preprocessing of the treated-spheroid study as a run-config pipeline.

    Parameters
    ----------
    scale : float
        Resampling factor (``rescale`` step; the study found 1/2 best among 1/4, 1/2, 3/4, 1);
        1 = none.  The run engine segments at this working resolution and maps the labels back
        to the input grid (nearest neighbour).
    invert : bool
        Invert intensities (dark spheroid → bright object for the segmenters).
    background_radius : float, optional
        Rolling-ball radius in pixels **after** rescaling (larger than the spheroid's
        radius); None (default, :data:`DEFAULT_PIPELINE`: what the spheroid U-Net was trained
        on) = no background subtraction.  A ball smaller than the spheroid hollows it out; the
        classical settings on the demo data used 50.
    extra_steps : list of dict
        More steps ``{"name": ..., "params": {...}}`` appended at the end.

    Returns
    -------
    dict
        ``{"name": "x0.5_inv", "steps": [{"name", "params"}, ...]}`` (``x0.5_inv_rb50`` with a
        rolling ball of radius 50)
        (:class:`opsef_core.config.PipelineConfig`).

    Raises
    ------
    ConfigError
        ``scale`` outside (0, 4], a malformed extra step.
    """
    if not 0 < scale <= 4:
        raise ConfigError(f"scale must lie in (0, 4], got {scale}")
    steps: list[dict] = []
    if scale != 1:
        steps.append({"name": "rescale", "params": {"factor": float(scale)}})
    if invert:
        steps.append({"name": "invert", "params": {}})
    if background_radius:
        steps.append({"name": "rolling_ball", "params": {"radius": float(background_radius)}})
    for i, st in enumerate(extra_steps):
        if not isinstance(st, Mapping) or "name" not in st:
            raise ConfigError(f"extra_steps[{i}] must be a dict with 'name' and optional 'params', got {st!r}")
        steps.append({"name": str(st["name"]), "params": dict(st.get("params") or {})})
    name = f"x{scale:g}" + ("_inv" if invert else "") + (f"_rb{background_radius:g}" if background_radius else "")
    return {"name": name, "steps": steps}


def spheroid_pipeline(scale: float = 0.5, invert: bool = True, background_radius: float | None = None,
                      extra_steps: Sequence[Mapping] = ()):
    """:func:`pipeline_spec` as an opsef :class:`~opsef_core.preprocess.Pipeline`.

    Returns
    -------
    opsef_core.preprocess.Pipeline
    """
    from ..preprocess import Pipeline

    return Pipeline.from_dict(pipeline_spec(scale, invert, background_radius, extra_steps))


def _check_settings(settings: Sequence[Mapping]) -> list[dict]:
    """Settings as run-config segmenter entries (``name``, ``backend``, ``params``, ``sweep``)."""
    out, names = [], set()
    for i, s in enumerate(settings):
        if not isinstance(s, Mapping) or "name" not in s or "backend" not in s:
            raise ConfigError(f"settings[{i}] must be a dict with 'name', 'backend' and optional 'params' "
                              f"(and 'sweep'), got {s!r}")
        unknown = set(s) - {"name", "backend", "params", "sweep"}
        if unknown:
            raise ConfigError(f"settings[{i}]: unknown key(s) {sorted(unknown)}; use name, backend, params, sweep")
        if s["name"] in names:
            raise ConfigError(f"settings[{i}]: the name {s['name']!r} is used twice")
        names.add(s["name"])
        entry = {"name": str(s["name"]), "backend": str(s["backend"]), "params": copy.deepcopy(dict(s.get("params") or {}))}
        if s.get("sweep"):
            entry["sweep"] = copy.deepcopy(dict(s["sweep"]))
        out.append(entry)
    if not out:
        raise ConfigError("no segmenter settings given")
    return out


def usable_settings(settings: Sequence[Mapping]) -> tuple[list[dict], list[dict]]:
    """Split the settings into those whose model can be found and those that cannot.

    The run engine checks every model before the first image (a missing one stops the run),
    so a setting whose model is not installed is left out of the config here and reported.

    Returns
    -------
    usable : list of dict
        Segmenter entries (as :func:`run_config` takes them).
    skipped : list of dict
        ``{"name", "backend", "model", "reason"}`` per left-out setting (logged as a warning).

    Raises
    ------
    ConfigError
        Malformed settings, or none usable.
    """
    from .quickstart import usable_models

    usable, skipped = usable_models(_check_settings(settings))
    return [{k: v for k, v in e.items() if k != "sweep" or v} for e in usable], skipped


def run_config(data_dir: str | Path, settings: Sequence[Mapping] = DEFAULT_SETTINGS, *, scale: float = 0.5,
               invert: bool = True, background_radius: float | None = None,
               smooth_radius: int | None = DEFAULT_SMOOTH_RADIUS,
               keep_largest: bool = False,
               max_images: int | None = None, extra_steps: Sequence[Mapping] = (), overlays: bool = False,
               save_preprocessed: bool = True, name: str = "debris-brightfield", description: str | None = None,
               seed: int = 0) -> dict:
    """The run config of the debris study: one pipeline × the compared settings, on a time series.

    Parameters
    ----------
    data_dir : path
        Folder with ``images/`` and ``labels/`` (truth of the same names; used when it exists).
        A relative path stays relative: it resolves against the folder the config is run from
        (:func:`execute_run`'s ``base_dir``) or, saved as a file, against the file's folder.
    settings : list of dict
        Segmenter entries ``{"name", "backend", "params"[, "sweep"]}``; each becomes a
        ``segmenters`` entry (its combinations: ``p1-<pipeline>__s<k>-<name>``).  Default
        :data:`DEFAULT_SETTINGS`: the bundled spheroid U-Net (:data:`SPHEROID_UNET`) and the
        classical Otsu threshold beside it.
    scale, invert, background_radius, extra_steps
        The pipeline (:func:`pipeline_spec`).
    smooth_radius : int or None
        ``postprocess.smooth_radius``: the largest object's holes filled and opened with a
        disk of this radius (pixels of the input grid, 0 = holes filled only; None = off),
        other objects kept (the *ambiguous spheroid* call counts them).
    keep_largest : bool
        ``postprocess.keep_largest``: drop every object but the largest (the ambiguous
        fraction is then 0 by construction).
    max_images : int, optional
        ``inputs.limit``: the first images by name (demo scale; None = all).
    overlays : bool
        Write the engine's overlay PNGs.
    save_preprocessed : bool
        Keep the preprocessed images (``preprocessed/``; the notebook's explorer reads one).
    name, description, seed
        Recorded in the config (``name`` is the run folder's stem).

    Returns
    -------
    dict
        A run config (``schema_version``, ``name``, ``description``, ``inputs``,
        ``pipelines``, ``segmenters``, ``postprocess``, ``outputs``, ``evaluation``, ``seed``).

    Raises
    ------
    ConfigError
        Malformed settings, a bad scale, ``max_images`` < 1.
    """
    segmenters = _check_settings(settings)
    if max_images is not None and int(max_images) < 1:
        raise ConfigError(f"max_images must be at least 1 (or None for all), got {max_images}")
    data_dir = Path(data_dir)
    inputs: dict[str, Any] = {"path": (data_dir / "images").as_posix(), "include": ["*.tif", "*.tiff"],
                              "ground_truth": (data_dir / "labels").as_posix(), "label_suffix": ""}
    if max_images is not None:
        inputs["limit"] = int(max_images)
    postprocess: dict[str, Any] = {}
    if smooth_radius is not None:
        postprocess["smooth_radius"] = int(smooth_radius)
    if keep_largest:
        postprocess["keep_largest"] = True
    pipeline = pipeline_spec(scale, invert, background_radius, extra_steps)
    return {
        "schema_version": 1,
        "name": name,
        "description": description or (
            "Single spheroids in brightfield among debris (treated-spheroid study): preprocessing "
            f"{pipeline['name']} (" + ", ".join(st["name"] for st in pipeline["steps"]) + "), the segmenter "
            "settings side by side, labels mapped back to the input grid, the largest object's outer "
            "contour (postprocess.smooth_radius), scored against the single-spheroid truth"),
        "inputs": inputs,
        "pipelines": [pipeline],
        "segmenters": segmenters,
        "postprocess": postprocess,
        "outputs": {"overlays": bool(overlays), "montage": False, "rois": False, "measurements": True,
                    "save_preprocessed": bool(save_preprocessed)},
        "evaluation": {"rank_by": "f1@0.5"},
        "seed": int(seed),
    }


execute_run = execute_config  # the engine's one way to run a config dict


# ----------------------------------------------------------------------------- reading the run
def _run_config(run_dir: Path):
    from ..config import load_config

    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunFolderError("no run.json: not a run folder", run_dir)
    return load_config(path).resolved()


def _setting_names(summary: pd.DataFrame) -> dict[str, str]:
    """``{combination: study setting name}``: the segmenter's name when it gives one setting,
    else the setting id; prefixed by the pipeline when the run has several."""
    combos = summary.drop_duplicates("combination")
    n_pipes = combos["pipeline"].nunique()
    per_seg = combos.groupby(["pipeline", "segmenter"])["setting"].transform("nunique")
    out = {}
    for (_, row), n in zip(combos.iterrows(), per_seg):
        base = str(row["segmenter"]) if n == 1 else str(row["setting"])
        out[str(row["combination"])] = f"{row['pipeline']}/{base}" if n_pipes > 1 else base
    return out


def _item_time(file: str, t: Any) -> int:
    try:
        return time_index(file)
    except InputFileError:
        if t is not None and not (isinstance(t, float) and math.isnan(t)):
            return int(t)  # a time-lapse file: the item's time point
        raise


def read_run(run_dir: str | Path, which: str = "filtered") -> dict:
    """The images, truth and label images of a debris run, read back from its folder.

    Parameters
    ----------
    run_dir : path
        A run folder of :func:`execute_run` (or of ``opsef run`` on such a config).
    which : {"filtered", "labels", "working"}
        ``labels_filtered/`` (post-processed: the study's spheroids; the default), ``labels/``
        (raw, on the input grid) or ``labels_working/`` (raw, at the pipeline's resolution).

    Returns
    -------
    dict
        ``series``: per item, in time order, ``name`` (item id), ``time`` (the ``tNN`` of the
        file name), ``file``, ``path``, ``image`` (:class:`Image` as the engine read it: pixel
        size in µm; None when it cannot be read, e.g. the item that failed), ``truth`` (labels or
        None); ``labels``: ``{setting: [label image per item,
        None where the combination failed]}``; ``paths``: the same with the label files'
        paths relative to the run folder; ``failures``: the same with the error of each failed
        combination; ``combinations``: ``{setting: combination id}``;
        ``errors``: ``{setting: first error}`` of failed combinations; ``seconds``:
        ``{setting: network + decoding seconds over the items}`` (a shared network pass counted
        once); ``run_dir``.

    Raises
    ------
    RunFolderError
        No ``run.json`` / ``summary.csv``, or a label file listed in ``summary.csv`` is missing.
    """
    from .. import io
    from ..run import load_input, plan_items

    run_dir = Path(run_dir)
    if which not in ("filtered", "labels", "working"):
        raise ConfigError(f"which={which!r}: use 'filtered', 'labels' or 'working'")
    config = _run_config(run_dir)
    summary_path = run_dir / "summary.csv"
    if not summary_path.is_file():
        raise RunFolderError("no summary.csv in the run folder (unfinished run?)", run_dir)
    summary = pd.read_csv(summary_path, dtype={"image": str, "combination": str, "error": object})
    if which == "filtered" and config.postprocess is None:
        which = "labels"
    items = {it.id: it for it in plan_items(config)}
    names = _setting_names(summary)
    first = summary.drop_duplicates("image")
    series = []
    for _, row in first.iterrows():
        it = items.get(str(row["image"]))
        if it is None:
            raise RunFolderError(f"item {row['image']!r} of summary.csv is not among the run's inputs now", run_dir)
        try:
            image = load_input(config, it)
        except OpsefError as exc:  # the run reported this item as failed; its rows say why
            log.warning("cannot read %s again: %s", it.path, exc)
            image = None
        truth = np.asarray(io.read_labels(it.ground_truth)) if it.ground_truth else None
        series.append({"name": it.id, "time": _item_time(str(row["file"]), row.get("t")),
                       "file": str(row["file"]), "path": it.path, "image": image, "truth": truth})
    order = sorted(range(len(series)), key=lambda i: (series[i]["time"], series[i]["name"]))
    series = [series[i] for i in order]
    index = {s["name"]: i for i, s in enumerate(series)}
    labels: dict[str, list] = {}
    paths: dict[str, list] = {}
    failures: dict[str, list] = {}
    combinations: dict[str, str] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for combo, setting in names.items():
        labels[setting] = [None] * len(series)
        paths[setting] = [None] * len(series)
        failures[setting] = [None] * len(series)
        combinations[setting] = combo
        seconds[setting] = 0.0
    for _, row in summary.iterrows():
        setting = names[str(row["combination"])]
        if row["status"] != "done":
            errors.setdefault(setting, str(row["error"]))
            failures[setting][index[str(row["image"])]] = str(row["error"])
            continue
        rel = {"filtered": f"labels_filtered/{row['image']}__{row['combination']}.tif",
               "labels": row["labels"],
               "working": row["labels_working"] if isinstance(row["labels_working"], str) else row["labels"]}[which]
        path = run_dir / str(rel)
        if not path.is_file():
            raise RunFolderError(f"label image {rel} of summary.csv is missing", run_dir)
        labels[setting][index[str(row["image"])]] = np.asarray(io.read_labels(path))
        paths[setting][index[str(row["image"])]] = str(rel)
        reused = row.get("network_reused")
        reused = isinstance(reused, (bool, np.bool_)) and bool(reused) or str(reused) == "True"
        net = 0.0 if reused or pd.isna(row.get("t_network_s")) else float(row["t_network_s"])
        seconds[setting] += net + (0.0 if pd.isna(row.get("t_decode_s")) else float(row["t_decode_s"]))
    for setting, msg in errors.items():
        log.error("setting %r failed on some images: %s", setting, msg)
    return {"series": series, "labels": labels, "paths": paths, "failures": failures,
            "combinations": combinations, "errors": errors,
            "seconds": seconds, "run_dir": run_dir}


def evaluate_series(series: Sequence[dict], labels: Mapping[str, Sequence], diameter: str = "equivalent",
                    perimeter: str = "crofton", errors: Mapping[str, str | Sequence] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readouts and single-spheroid metrics per image and setting, and their summary per setting.

    Parameters
    ----------
    series : list of dict
        Items with ``name``, ``time``, ``image`` (pixel size in µm) and ``truth`` (from
        :func:`read_run` or :func:`load_series`).
    labels : dict
        ``{setting: [label image per item, or None where it failed]}`` (from :func:`read_run`).
    diameter, perimeter : str
        See :func:`opsef_core.evaluate.spheroid_metrics` (defaults: equivalent-circle
        diameter, Crofton perimeter).
    errors : dict, optional
        ``{setting: message}`` or ``{setting: [message or None per item]}`` (``failures`` of
        :func:`read_run`), written into the ``error`` column of failed rows.

    Returns
    -------
    per_image : DataFrame
        One row per (setting, image), none left out: ``setting, image, time, status``
        (``done``/``failed``), ``error``, ``n_objects`` and the prediction's ``area, perimeter,
        diameter, volume, circularity`` (µm, µm², µm³); with truth also ``*_true``, ``invalid,
        ambiguous, jcd, rdd, rcd, radial_error_um``.  Failed rows hold NaN readouts.
    summary : DataFrame
        One row per setting: ``n_images`` (scored), ``n_failed`` and, with truth, the
        :func:`~opsef_core.evaluate.spheroid_summary` columns (means, sample SDs, ISF/ASF with
        binomial SEs; over the scored images); without truth the mean readouts.  A setting
        that failed everywhere has NaN statistics.
    """
    from ..evaluate import spheroid_metrics, spheroid_summary
    from ..science.spheroid import largest_object, readouts

    errors = dict(errors or {})
    rows, summary = [], []
    for name, labs in labels.items():
        labs = [None] * len(series) if labs is None else list(labs)
        if len(labs) != len(series):
            raise ConfigError(f"setting {name!r} has {len(labs)} label images for {len(series)} images")
        metrics, readout_rows, n_failed = [], [], 0
        msgs = errors.get(name)
        msgs = [msgs] * len(series) if msgs is None or isinstance(msgs, str) else list(msgs)
        for item, lab, msg in zip(series, labs, msgs):
            row: dict[str, Any] = {"setting": name, "image": item["name"], "time": item["time"]}
            if lab is None:
                n_failed += 1
                row.update(status="failed", error=msg or "no labels")
                rows.append(row)
                continue
            row.update(status="done", error=None)
            ps = item["image"].pixel_size
            px = ps["X"] if ps["X"] == ps["Y"] else {"Y": ps["Y"], "X": ps["X"]}
            if item["truth"] is not None:
                m = spheroid_metrics(item["truth"], lab, px, diameter=diameter, perimeter=perimeter)
                metrics.append(m)
                row.update({k.removesuffix("_pred"): v for k, v in m.items()})
            else:
                mask, n = largest_object(lab)
                r = readouts(mask, px, diameter=diameter)
                row.update(n_objects=n, **{k: r[k] for k in READOUTS})
            readout_rows.append(row)
            rows.append(row)
        srow: dict[str, Any] = {"setting": name}
        n_done = len(labs) - n_failed
        if metrics and len(metrics) == n_done:
            srow.update(spheroid_summary(metrics))
        else:
            srow["n_images"] = n_done
            for k in ("diameter", "volume", "circularity"):
                srow[f"{k}_mean"] = float(np.mean([r[k] for r in readout_rows])) if readout_rows else math.nan
        srow["n_failed"] = n_failed
        summary.append(srow)
    return pd.DataFrame(rows), pd.DataFrame(summary)


def evaluate_run(run_dir: str | Path, diameter: str = "equivalent", perimeter: str = "crofton"
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`evaluate_series` on a run's post-processed labels (:func:`read_run`).

    Returns
    -------
    per_image, summary : DataFrame
        As :func:`evaluate_series`, ``per_image`` with the ``combination`` and ``labels``
        (``labels_filtered/...`` relative to the run folder) of each row, ``summary`` with the
        ``combination`` and ``seconds`` of each setting.
    """
    run = read_run(run_dir)
    per_image, summary = evaluate_series(run["series"], run["labels"], diameter=diameter, perimeter=perimeter,
                                         errors=run["failures"])
    per_image.insert(1, "combination", per_image["setting"].map(run["combinations"]))
    index = {item["name"]: i for i, item in enumerate(run["series"])}
    per_image["labels"] = [run["paths"][st][index[img]] for st, img in zip(per_image["setting"], per_image["image"])]
    summary.insert(1, "combination", summary["setting"].map(run["combinations"]))
    summary["seconds"] = summary["setting"].map(run["seconds"])
    return per_image, summary


def choose_setting(summary: pd.DataFrame, chosen: str = "best", by: str = "jcd_mean") -> str:
    """The setting to report: ``chosen`` itself, or with ``"best"`` the lowest ``by`` (mean JCD).

    ``"best"`` ranks only the settings that were scored on every image (``n_failed`` 0).

    Raises
    ------
    ConfigError
        ``chosen`` is not a setting of the summary, or "best" without a ``by`` column or
        without a setting scored on every image.
    """
    names = list(summary["setting"]) if len(summary) else []
    if chosen != "best":
        if chosen not in names:
            raise ConfigError(f"chosen setting {chosen!r} is not among the evaluated settings {names}")
        return chosen
    if by not in summary.columns or summary[by].isna().all():
        raise ConfigError(f"cannot pick the best setting: no {by!r} column (no truth?); name one instead")
    ok = summary[summary[by].notna()]
    if "n_failed" in ok.columns:
        ok = ok[ok["n_failed"].fillna(0) == 0]
    if ok.empty:
        raise ConfigError(f"cannot pick the best setting: every setting failed on some image; name one of {names}")
    return str(ok.sort_values(by, kind="stable")["setting"].iloc[0])


#: sliders of the notebook's explorer per backend: decoding parameters only (one network pass)
EXPLORER_SLIDERS = {
    "unet": {"prob_threshold": (0.1, 0.9, 0.1), "min_size": (0, 400, 50)},
    "classical": {"threshold": (0.2, 0.8, 0.05), "min_size": (0, 400, 50)},
}


def explorer_setting(settings: Sequence[Mapping]) -> tuple[dict, dict] | None:
    """The setting the notebook's threshold explorer shows, and its sliders.

    The first U-Net setting (its probability threshold re-decoded from one cached network
    pass), else the first classical one (its fixed threshold); None when there is neither.

    Returns
    -------
    (dict, dict) or None
        The segmenter entry and ``{parameter: (min, max, step)}`` (:data:`EXPLORER_SLIDERS`).
    """
    for backend in ("unet", "classical"):
        for s in settings:
            if s.get("backend") == backend:
                return dict(s), dict(EXPLORER_SLIDERS[backend])
    return None


def smooth_largest(labels: np.ndarray, radius: int = 0) -> np.ndarray:
    """The largest object's outer contour (holes filled, opened with a disk); other objects kept.

    The run engine applies it as ``postprocess.smooth_radius``; this is
    :func:`opsef_core.postprocess.smooth_largest` (one implementation).
    """
    from ..postprocess import smooth_largest as _smooth

    return _smooth(labels, radius)


def preprocessed_image(run_dir: str | Path, image: int | str = 0):
    """One preprocessed image as the run saved it (``outputs.save_preprocessed``).

    Parameters
    ----------
    run_dir : path
    image : int or str
        Position in the run's time order (:func:`read_run`) or item id.

    Returns
    -------
    Image

    Raises
    ------
    RunFolderError
        The run kept no preprocessed images (``save_preprocessed`` off) or not this one.
    """
    from .. import io

    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.csv"
    if not summary_path.is_file():
        raise RunFolderError("no summary.csv in the run folder", run_dir)
    summary = pd.read_csv(summary_path, dtype={"image": str})
    first = summary.drop_duplicates("image")
    ids = sorted(first["image"], key=lambda i: (_item_time(str(first.loc[first["image"] == i, "file"].iloc[0]),
                                                           first.loc[first["image"] == i, "t"].iloc[0]), i))
    if isinstance(image, (int, np.integer)):
        if not ids:
            raise RunFolderError("the run has no items", run_dir)
        item = ids[min(max(int(image), 0), len(ids) - 1)]
    else:
        if image not in ids:
            raise ConfigError(f"image {image!r} is not an item of the run; items are {ids}")
        item = image
    found = sorted((run_dir / "preprocessed").glob(f"{item}__p1-*.ome.tif"))
    if not found:
        raise RunFolderError(f"no preprocessed image of {item} (run with outputs.save_preprocessed)", run_dir)
    return io.read_image(found[0])


def copy_labels(run_dir: str | Path, setting: str, dest: str | Path) -> list[Path]:
    """Copy one setting's post-processed label images of a run to ``dest/<item>.tif``.

    Returns
    -------
    list of Path
        The copies, in the run's time order.

    Raises
    ------
    ConfigError
        ``setting`` is not a setting of the run, or failed on some image.
    """
    run = read_run(run_dir)
    if setting not in run["paths"]:
        raise ConfigError(f"setting {setting!r} is not a setting of the run; settings are {list(run['paths'])}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for item, rel in zip(run["series"], run["paths"][setting]):
        if rel is None:
            raise ConfigError(f"setting {setting!r} has no labels for {item['name']}: {run['errors'].get(setting)}")
        out.append(Path(shutil.copyfile(Path(run_dir) / rel, dest / f"{item['name']}.tif")))
    return out


# ----------------------------------------------------------------------------- plots
def plot_growth(per_image: pd.DataFrame, setting: str):
    """Equivalent diameter (µm) and volume (µm³) over the time index, prediction vs truth.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes (diameter, volume).
    """
    df = per_image[per_image["setting"] == setting].sort_values("time")
    if df.empty:
        raise ConfigError(f"no rows for setting {setting!r}")
    fig = new_figure((9, 3.6))
    axes = fig.subplots(1, 2)
    for ax, col, unit in ((axes[0], "diameter", "µm"), (axes[1], "volume", "µm³")):
        ax.plot(df["time"], df[col], "o-", color="tab:blue", label=f"prediction ({setting})")
        if f"{col}_true" in df.columns:
            ax.plot(df["time"], df[f"{col}_true"], "s--", color="black", label="truth")
        ax.set_xlabel("time index")
        ax.set_ylabel(f"{col} ({unit})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.suptitle("Spheroid growth: equivalent diameter and sphere volume", fontsize=10)
    fig.tight_layout()
    return fig


def plot_overlays(series: Sequence[dict], labels: Sequence[np.ndarray], title: str = "", ncols: int = 3):
    """The largest predicted object (cyan) and the truth (magenta) on every image.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image.
    """
    from ..science.spheroid import largest_object
    from ..viz import overlay

    n = len(series)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = new_figure((3.0 * ncols, 3.1 * nrows + 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, item, lab in zip(axes, series, labels):
        if lab is None or item["image"] is None:  # a failed combination: an empty panel that says so
            ax.set_title(f"{item['name']} (t={item['time']}): failed", fontsize=8)
            continue
        img = np.asarray(item["image"].data)
        mask, nobj = largest_object(lab)
        rgb = overlay(img, mask.astype(np.int32), color="cyan", thickness=2)
        if item["truth"] is not None:
            truth_rgb = overlay(img, (np.asarray(item["truth"]) > 0).astype(np.int32), color="magenta")
            edge = np.all(truth_rgb == np.array([255, 0, 255], np.uint8), axis=-1)
            rgb[edge] = truth_rgb[edge]
        ax.imshow(rgb)
        ax.set_title(f"{item['name']} (t={item['time']}), {nobj} object(s)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title or "largest predicted object (cyan) vs truth (magenta)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_settings(series: Sequence[dict], labels: Mapping[str, Sequence], max_images: int = 3):
    """Settings side by side (columns) on the first images (rows), with :func:`opsef_core.viz.montage`."""
    from ..viz import montage

    rows: dict[str, Any] = {}
    for i, item in enumerate(series[:max_images]):
        if item["image"] is None:  # an item the run could not read (failed in every setting)
            continue
        rows[f"{item['name']} (t={item['time']})"] = (
            np.asarray(item["image"].data), {name: (None if labs is None or labs[i] is None else labs[i])
                                              for name, labs in labels.items()})
    return montage(rows, suptitle="segmenter settings side by side (all objects; the largest is the spheroid)")
