"""Workflow behind ``notebooks/fucci_3d``: 3D nuclei, FUCCI phase calls, 3D measurements.

The science is in :mod:`opsef_core.science.fucci`
(``docs/definitions.md#fucci-phase-calls``); this module strings it together for data laid out as
``DATA/images/<name>.tif`` (``CZYX``: nuclear stain, red, green),
``DATA/labels/<name>.tif`` (3D truth nuclei, optional) and
``DATA/phases/<name>.csv`` (columns ``label,phase``, optional).

The segmentation is an ordinary run of the run engine (``docs/architecture.md``, "One spine"):

* :func:`load_fucci` — the image, truth labels and truth phases;
* :func:`fucci_pipeline` — the study's chain with :mod:`opsef_core.preprocess` steps
  (values below a small threshold set to zero, gamma, CLAHE, median, then the white top-hat
  artefact suppression ``subtract_tophat``: the top-hat of a small ball *is* the small bright
  artefacts; it is subtracted); :func:`preprocess` applies it for display (and returns what the
  top-hat removed), :func:`before_after_figure` shows it;
* :func:`run_config` — the run config (a plain dict, the schema of ``configs/demo.json``): the
  pipeline, the models compared (each segmenting the nuclear channel through its own ``channel``
  parameter, so ``measurements.csv`` keeps every channel's intensities), ground truth when
  there is some; :func:`run_fucci` executes it with :func:`opsef_core.run.execute` (models that
  cannot be found are left out and listed);
* :func:`segmentation_table`, :func:`scores_from_run`, :func:`run_labels`,
  :func:`shape_table` — read the run folder (``summary.csv``, ``metrics.csv``, ``labels/``,
  ``measurements.csv``); :func:`score_models` scores label images held in memory;
* :func:`phase_table` / :func:`truth_phase_table` — per-nucleus red/green and
  phase calls with recorded thresholds (on the run's labels); :func:`phase_scatter` plots them.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, EmptyFolderError, InputFileError, RunFolderError
from ..viz import new_figure
from ..widgets import PHASE_COLOURS

__all__ = [
    "CHANNELS",
    "load_fucci",
    "fucci_pipeline",
    "preprocess",
    "before_after_figure",
    "run_config",
    "run_fucci",
    "segmentation_table",
    "scores_from_run",
    "run_labels",
    "run_image",
    "shape_table",
    "score_models",
    "labels_figure",
    "busiest_slice",
    "phase_table",
    "truth_phase_table",
    "phase_scatter",
    "confusion_figure",
    "radial_figure",
    "shape_figure",
]

log = logging.getLogger(__name__)

#: default channel names: nuclear stain, red (Cdt1), green (Geminin)
CHANNELS = ("hoechst", "cdt1_red", "geminin_green")
#: shape columns of ``measurements.csv`` joined to the phase table (µm, µm³)
SHAPE_COLUMNS = ("volume", "equivalent_diameter", "sphericity", "surface_area")


# ----------------------------------------------------------------------------- loading
def load_fucci(data_dir, name: str | None = None, channels: Sequence[str] = CHANNELS) -> dict:
    """Read one FUCCI stack with its truth labels and phases.

    Parameters
    ----------
    data_dir : path
        Folder with ``images/`` (and optionally ``labels/``, ``phases/``).
    name : str, optional
        File stem to read (default: the first image).
    channels : (str, str, str)
        Names of the nuclear, red and green channels (checked against the file).

    Returns
    -------
    dict
        ``name``, ``image`` (Image, ``CZYX``), ``labels`` (ndarray or None),
        ``phases`` (DataFrame ``label, phase`` or None), ``channels``.

    Raises
    ------
    EmptyFolderError, InputFileError
        No image, an image without the three channels in Z, labels of the
        wrong shape, or a phase table without ``label``/``phase``.
    """
    from ..io import discover, read_image, read_labels

    data_dir = Path(data_dir)
    files = discover(data_dir / "images")
    if name is not None:
        files = [f for f in files if f.stem == name or f.name == name]
        if not files:
            raise EmptyFolderError(f"no image named {name!r}", data_dir / "images")
    f = files[0]
    img = read_image(f)
    if img.spatial_axes != "ZYX" or "C" not in img.axes:
        raise InputFileError(f"expected a multichannel ZYX stack (CZYX), got axes {img.axes}", f)
    img = img.sel(t=0) if "T" in img.axes else img
    names = list(img.channel_names)
    for ch in channels:
        if ch not in names:
            raise InputFileError(f"channel {ch!r} not in the file's channels {names}", f)
    out = {"name": f.stem, "image": img, "labels": None, "phases": None, "channels": list(channels)}
    lab_path = data_dir / "labels" / f.name
    if lab_path.is_file():
        lab = read_labels(lab_path)
        if lab.shape != img.spatial(c=0).shape:
            raise InputFileError(f"labels shape {lab.shape} differs from the image's {img.spatial(c=0).shape}",
                                 lab_path)
        out["labels"] = lab
    ph_path = data_dir / "phases" / f"{f.stem}.csv"
    if ph_path.is_file():
        ph = pd.read_csv(ph_path)
        if not {"label", "phase"} <= set(ph.columns):
            raise InputFileError(f"phase table needs columns label,phase; has {list(ph.columns)}", ph_path)
        out["phases"] = ph
    return out


# ----------------------------------------------------------------------------- preprocessing
def fucci_pipeline(zero_below: float = 0.0, gamma: float = 1.0, clahe_clip: float = 0.01,
                   clahe_kernel: int | None = None, median_radius: int = 1, artefact_radius: int = 0,
                   name: str = "fucci3d"):
    """The study's preprocessing chain as an :class:`opsef_core.preprocess.Pipeline`.

    Steps: ``clip`` (``zero_below``: values below ``zero_below`` become 0),
    ``gamma``, ``clahe`` (3D on a stack), ``median`` (ball of ``median_radius``),
    ``subtract_tophat`` (ball of ``artefact_radius``: bright structures that the
    ball does not fit into, the 2×2×2 artefacts for radius 1, are removed).
    A zero ``zero_below``, ``median_radius`` or ``artefact_radius`` leaves that step out.

    Returns
    -------
    Pipeline
        ``pipeline.to_dict()`` is the ``pipelines`` entry of the run config.
    """
    from ..preprocess import Pipeline

    steps = []
    if zero_below > 0:
        steps.append({"name": "clip", "params": {"low": float(zero_below), "mode": "zero_below"}})
    steps.append({"name": "gamma", "params": {"gamma": float(gamma)}})
    steps.append({"name": "clahe", "params": {"clip_limit": float(clahe_clip), "kernel_size": clahe_kernel}})
    if median_radius > 0:
        steps.append({"name": "median", "params": {"radius": int(median_radius)}})
    if artefact_radius > 0:
        steps.append({"name": "subtract_tophat", "params": {"radius": int(artefact_radius)}})
    return Pipeline(name, steps)


def _as_pipeline(pipeline):
    from ..preprocess import Pipeline

    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, dict):
        return Pipeline.from_dict(pipeline)
    raise ConfigError(f"pipeline must be a Pipeline or a {{'name', 'steps'}} dict, got {pipeline!r}")


def preprocess(image, pipeline):
    """Apply ``pipeline`` as the run does (for display), with what its artefact step removed.

    Parameters
    ----------
    image : Image
        ``CZYX`` stack.
    pipeline : Pipeline or dict
        From :func:`fucci_pipeline` (or the run config's ``pipelines`` entry); applied to
        every channel.

    Returns
    -------
    (Image, Image)
        The processed image (what the segmenters of the run see) and the removed artefact
        map: the image before the last ``subtract_tophat`` step minus the processed image
        (zeros without that step).
    """
    from ..image import Image
    from ..preprocess import Pipeline

    pipeline = _as_pipeline(pipeline)
    spec = pipeline.to_dict()
    steps = spec["steps"]
    last = max((i for i, s in enumerate(steps) if s["name"] == "subtract_tophat"), default=None)
    proc = pipeline.apply(image)
    data = np.asarray(proc.data, np.float32)
    if last is None:
        art = np.zeros_like(data)
    else:
        before = Pipeline(spec["name"], steps[:last]).apply(image)
        art = np.clip(np.asarray(before.data, np.float32) - data, 0, None)
    removed = Image.from_array(art, proc.axes, pixel_size=dict(proc.pixel_size),
                               channel_names=list(proc.channel_names), source=image.source,
                               name=f"{image.name}_artefacts")
    return proc, removed


def busiest_slice(labels_or_none, nz: int) -> int:
    """The z slice with the most labelled pixels (the middle slice without labels)."""
    if labels_or_none is not None and np.any(labels_or_none):
        return int(np.argmax((labels_or_none > 0).sum(axis=(1, 2))))
    return nz // 2


def before_after_figure(raw, processed, artefacts=None, z: int | None = None):
    """One row per channel: raw slice, processed slice (and removed artefacts, max projection)."""
    nz = raw.spatial(c=0).shape[0]
    z = nz // 2 if z is None else int(z)
    names = list(raw.channel_names)
    ncol = 3 if artefacts is not None else 2
    fig = new_figure((3 * ncol, 3 * len(names)))
    axes = fig.subplots(len(names), ncol, squeeze=False)
    for i, ch in enumerate(names):
        a = np.asarray(raw.spatial(c=i)[z])
        b = np.asarray(processed.spatial(c=i)[z])
        axes[i][0].imshow(a, cmap="gray", vmin=np.percentile(a, 1), vmax=np.percentile(a, 99.8))
        axes[i][1].imshow(b, cmap="gray", vmin=np.percentile(b, 1), vmax=np.percentile(b, 99.8))
        axes[i][0].set_title(f"{ch}: raw z={z}", fontsize=8)
        axes[i][1].set_title(f"{ch}: processed", fontsize=8)
        if artefacts is not None:
            axes[i][2].imshow(np.asarray(artefacts.spatial(c=i)).max(axis=0), cmap="magma")
            axes[i][2].set_title(f"{ch}: removed (top-hat, max proj.)", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the run
def _image_patterns(image_name: str | None) -> list[str]:
    if image_name is None:
        return ["*.tif", "*.tiff"]
    if Path(image_name).suffix.lower() in (".tif", ".tiff"):
        return [str(image_name)]
    return [f"{image_name}.tif", f"{image_name}.tiff", f"{image_name}.ome.tif"]


def run_config(data_dir: str | Path, models: Sequence[dict], pipeline, channels: Sequence[str] = CHANNELS,
               image_name: str | None = None, ground_truth: bool | None = None,
               base_dir: str | Path | None = None, name: str = "fucci_3d", seed: int = 0) -> dict:
    """The run config of the FUCCI study: one pipeline × the models compared, on the nuclear channel.

    Parameters
    ----------
    data_dir : path
        Folder with ``images/`` (and ``labels/`` for scoring); written into the config as given
        (relative paths resolve against ``base_dir`` when the config runs, against the config
        file's folder when it is saved and run with ``opsef run``).
    models : list of dict
        Segmenter entries ``{"name", "backend", "params", "sweep"}`` (``sweep`` optional).  The
        nuclear channel is set as each backend's ``channel`` parameter unless the entry sets
        one; ``inputs.channel`` stays unset, so the run measures every channel.
    pipeline : Pipeline or dict
        From :func:`fucci_pipeline`.
    channels : (str, str, str)
        Nuclear, red and green channel names; the nuclear one is segmented.
    image_name : str, optional
        Only this image of ``images/`` (file stem or name); default every image.
    ground_truth : bool, optional
        Score against ``labels/``; default: when ``base_dir/data_dir/labels`` exists.
    base_dir : path, optional
        Folder ``data_dir`` is relative to (default the working directory), only to look for
        ``labels/``.
    name, seed : optional
        Config name (the run folder's stem) and seed.

    Returns
    -------
    dict
        ``schema_version, name, description, inputs, pipelines, segmenters, outputs,
        evaluation, seed``.

    Raises
    ------
    ConfigError
        No models, a malformed entry, repeated names, or fewer than three channels.
    """
    from ..segment import get_segmenter
    from .quickstart import _check_entry

    if len(channels) != 3:
        raise ConfigError(f"channels must name the nuclear, red and green channels, got {list(channels)}")
    if not models:
        raise ConfigError("models: give at least one segmenter entry {'name', 'backend', 'params'}")
    nuc = channels[0]
    segmenters = []
    for i, raw in enumerate(models):
        entry = _check_entry(raw, i)
        seg = get_segmenter(entry["backend"])
        if "channel" in seg.Params.model_fields and "channel" not in entry["params"]:
            entry["params"] = {**entry["params"], "channel": nuc}
        if not entry["sweep"]:
            entry.pop("sweep")
        segmenters.append(entry)
    data = Path(str(data_dir))
    inputs: dict[str, Any] = {"path": (data / "images").as_posix(), "include": _image_patterns(image_name)}
    if ground_truth is None:
        root = Path(base_dir) if base_dir is not None else Path.cwd()
        ground_truth = (data if data.is_absolute() else root / data).joinpath("labels").is_dir()
    if ground_truth:
        inputs["ground_truth"] = (data / "labels").as_posix()
    return {
        "schema_version": 1,
        "name": name,
        "description": (f"FUCCI 3D: the study's 3D preprocessing, then {len(segmenters)} 3D segmenters "
                        f"({', '.join(s['name'] for s in segmenters)}) on the nuclear channel {nuc!r}; "
                        "every channel measured per nucleus (red/green for the phase calls)"
                        + ("; scored against the truth nuclei" if ground_truth else "")),
        "inputs": inputs,
        "pipelines": [copy.deepcopy(_as_pipeline(pipeline).to_dict())],
        "segmenters": segmenters,
        "outputs": {"overlays": False, "montage": True, "rois": False, "measurements": True},
        "evaluation": {"thresholds": [0.5, 0.75, 0.9], "rank_by": "f1@0.5"},
        "seed": int(seed),
    }


def run_fucci(config: dict, out: str | Path, base_dir: str | Path | None = None) -> tuple[Path, list[dict]]:
    """Run the config with the run engine, leaving out models that cannot be found.

    Parameters
    ----------
    config : dict
        From :func:`run_config` (or ``configs/fucci_3d.json``).
    out : path
        Parent of the run folder.
    base_dir : path, optional
        Folder relative paths in the config resolve against (default the working directory).

    Returns
    -------
    (Path, list of dict)
        The run folder (``run.json``, ``summary.csv``, ``labels/``, ``measurements.csv``,
        ``metrics.csv`` with truth) and the models left out (``name, backend, model,
        reason``; see :func:`opsef_core.workflows.quickstart.usable_models`).
    """
    from ..run.execute import execute_config
    from .quickstart import usable_models

    usable, skipped = usable_models(config["segmenters"])
    cfg = {**config, "segmenters": [{k: v for k, v in s.items() if k != "sweep" or v} for s in usable]}
    return execute_config(cfg, out=out, base_dir=base_dir), skipped


def _read_csv(run_dir: Path, name: str) -> pd.DataFrame:
    path = Path(run_dir) / name
    if not path.is_file():
        raise RunFolderError(f"no {name} in the run folder", run_dir)
    return pd.read_csv(path)


def _first_image(summary: pd.DataFrame, image: str | None) -> str:
    images = list(dict.fromkeys(summary["image"].astype(str)))
    if image is None:
        return images[0]
    if image not in images:
        raise RunFolderError(f"image {image!r} is not part of the run; images: {images}")
    return image


def segmentation_table(run_dir: str | Path, skipped: Sequence[dict] = (), image: str | None = None) -> pd.DataFrame:
    """One row per model of the run (one image): ``model, backend, combination, status,
    n_objects, seconds, error``; models left out by :func:`run_fucci` as ``status = "missing"``."""
    summary = _read_csv(Path(run_dir), "summary.csv")
    image = _first_image(summary, image)
    rows = summary[summary["image"].astype(str) == image]
    secs = pd.Series(0.0, index=rows.index)
    for col in ("t_network_s", "t_decode_s"):  # network pass (shared ones counted per model) + decoding
        if col in rows.columns:
            secs = secs + pd.to_numeric(rows[col], errors="coerce").fillna(0.0)
    error = rows["error"].astype(object)
    out = pd.DataFrame({"model": rows["segmenter"].astype(str), "backend": rows["backend"].astype(str),
                        "combination": rows["combination"].astype(str), "status": rows["status"].astype(str),
                        "n_objects": rows["n_objects"].fillna(0).astype(int), "seconds": secs.round(2),
                        "error": error.where(error.notna(), "").astype(str)})
    missing = pd.DataFrame([{"model": s["name"], "backend": s["backend"], "combination": "", "status": "missing",
                             "n_objects": 0, "seconds": np.nan, "error": s["reason"]} for s in skipped],
                           columns=out.columns)
    return pd.concat([out, missing], ignore_index=True) if len(missing) else out.reset_index(drop=True)


def scores_from_run(run_dir: str | Path, image: str | None = None) -> pd.DataFrame:
    """Each model's labels scored against the truth, from the run's ``metrics.csv``.

    Returns
    -------
    DataFrame
        ``model, combination, n_true, n_pred, tp, fp, fn, precision, recall, f1@0.5, mean_iou, aji``
        (the columns of :func:`score_models`), best F1 first.

    Raises
    ------
    RunFolderError
        The run has no ``metrics.csv`` (no ground truth).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise RunFolderError("no metrics.csv in the run folder: the run had no ground truth", run_dir)
    m = _read_csv(run_dir, "metrics.csv")
    image = _first_image(m, image)
    m = m[m["image"].astype(str) == image]
    out = pd.DataFrame({"model": m["segmenter"].astype(str), "combination": m["combination"].astype(str),
                        "n_true": m["n_true"].astype(int), "n_pred": m["n_pred"].astype(int),
                        "tp": m["tp@0.5"].astype(int), "fp": m["fp@0.5"].astype(int),
                        "fn": m["fn@0.5"].astype(int), "precision": m["precision@0.5"],
                        "recall": m["recall@0.5"], "f1@0.5": m["f1@0.5"],
                        "mean_iou": m["mean_matched_score@0.5"], "aji": m["aji"]})
    return out.sort_values("f1@0.5", ascending=False, kind="stable").reset_index(drop=True)


def run_labels(run_dir: str | Path, image: str | None = None) -> dict[str, np.ndarray]:
    """``{model: ZYX labels}`` of one image, read from the run's ``labels/`` (finished models only)."""
    from .. import io

    run_dir = Path(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    image = _first_image(summary, image)
    rows = summary[(summary["image"].astype(str) == image) & (summary["status"] == "done")]
    return {str(r["segmenter"]): np.asarray(io.read_labels(run_dir / str(r["labels"]))) for _, r in rows.iterrows()}


def run_image(run_dir: str | Path, image: str | None = None):
    """The input image of one run item as the run read it (every channel), via its ``run.json``."""
    from ..config import load_config
    from ..run import load_input, plan_items

    run_dir = Path(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    image = _first_image(summary, image)
    config = load_config(run_dir / "run.json")
    items = {it.id: it for it in plan_items(config.resolved())}
    return load_input(config.resolved(), items[image])


def shape_table(run_dir: str | Path, model: str, image: str | None = None,
                columns: Sequence[str] = SHAPE_COLUMNS) -> pd.DataFrame:
    """``label`` and the 3D shape ``columns`` (µm, µm³) of one model's nuclei, from ``measurements.csv``."""
    run_dir = Path(run_dir)
    meas = _read_csv(run_dir, "measurements.csv")
    image = _first_image(meas, image)
    sel = meas[(meas["image"].astype(str) == image) & (meas["segmenter"].astype(str) == model)]
    missing = [c for c in columns if c not in meas.columns]
    if missing:
        raise RunFolderError(f"measurements.csv has no column(s) {missing}", run_dir)
    return sel[["label", *columns]].reset_index(drop=True)


def score_models(truth, results: dict) -> pd.DataFrame:
    """F1, precision, recall at IoU 0.5 and AJI of label images held in memory against the truth.

    (The run's own scores are in its ``metrics.csv``: :func:`scores_from_run`.)

    Returns
    -------
    DataFrame
        ``model, n_true, n_pred, tp, fp, fn, precision, recall, f1@0.5, mean_iou, aji``, best F1 first.
    """
    from ..evaluate import aji, match

    if truth is None:
        raise ConfigError("no truth labels to score against")
    rows = []
    for name, lab in results.items():
        m = match(truth, lab, 0.5)
        rows.append({"model": name, "n_true": m.n_true, "n_pred": m.n_pred, "tp": m.tp, "fp": m.fp,
                     "fn": m.fn, "precision": m.precision, "recall": m.recall, "f1@0.5": m.f1,
                     "mean_iou": m.mean_matched_score, "aji": float(aji(truth, lab))})
    return pd.DataFrame(rows).sort_values("f1@0.5", ascending=False, kind="stable").reset_index(drop=True)


def labels_figure(image2d, results: dict, truth=None, z: int | None = None):
    """Contours of each model's labels on one slice (truth first when given)."""
    from ..viz import overlay

    panels = ([("truth", truth)] if truth is not None else []) + list(results.items())
    nz = image2d.shape[0]
    z = busiest_slice(truth, nz) if z is None else int(z)
    fig = new_figure((2.8 * len(panels), 3))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, lab) in zip(axes[0], panels):
        ax.imshow(overlay(image2d[z], lab[z]))
        ax.set_title(f"{name} (z={z})", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- phases
def _centroids(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    if not ids.size:
        return np.zeros((0, labels.ndim))
    return np.asarray(ndi.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids)).reshape(-1, labels.ndim)


def phase_table(labels, image, red_channel, green_channel, *, red_threshold="otsu", green_threshold="otsu",
                background_percentile: float = 50.0, norm_percentile: float = 99.0) -> pd.DataFrame:
    """Per-nucleus normalised red/green intensities and phase calls.

    Wraps :func:`opsef_core.science.fucci.nucleus_intensities` and
    :func:`opsef_core.science.fucci.call_phases` (columns ``red``, ``green``); the
    thresholds used are in ``attrs["thresholds"]`` and ``attrs["threshold_methods"]``.

    Parameters
    ----------
    labels : ndarray
        ``ZYX`` nuclei.
    image : Image
        ``CZYX`` image the intensities come from (use the raw data: background
        correction is done per channel from the pixels outside nuclei).
    red_channel, green_channel : int or str
    red_threshold, green_threshold : "otsu" or float
        On the normalised values (1 ≈ a bright nucleus).
    background_percentile, norm_percentile : float
        See :func:`opsef_core.science.fucci.nucleus_intensities`.

    Returns
    -------
    DataFrame
    """
    from ..science.fucci import call_phases, nucleus_intensities

    red = image.spatial(c=red_channel)
    green = image.spatial(c=green_channel)
    df = nucleus_intensities(labels, red, green, background_percentile=background_percentile,
                             norm_percentile=norm_percentile)
    return call_phases(df, red_threshold, green_threshold)


def truth_phase_table(truth_labels, phases: pd.DataFrame) -> pd.DataFrame:
    """Truth phases with the truth nuclei's centroids (pixels), for :func:`opsef_core.science.fucci.phase_accuracy`.

    Raises
    ------
    ConfigError
        When a labelled nucleus has no phase or a phase row has no nucleus.
    """
    ids = np.unique(truth_labels)
    ids = ids[ids > 0]
    missing = sorted(set(ids.tolist()) ^ set(phases["label"].astype(int).tolist()))
    if missing:
        raise ConfigError(f"truth labels and phase table disagree on labels {missing[:10]}")
    c = _centroids(truth_labels, ids)
    df = pd.DataFrame({"label": ids, **{f"centroid_{a}": c[:, i] for i, a in enumerate("zyx"[-truth_labels.ndim:])}})
    return df.merge(phases[["label", "phase"]], on="label", how="left")


_PHASE_COLOURS = PHASE_COLOURS  # one palette for the figures and the phase explorer


def phase_scatter(df: pd.DataFrame, title: str = ""):
    """Red vs green per nucleus, coloured by phase, with the two threshold lines."""
    fig = new_figure((4.4, 4))
    ax = fig.subplots()
    for ph, col in _PHASE_COLOURS.items():
        sub = df[df["phase"].astype(str) == ph]
        ax.scatter(sub["red"], sub["green"], c=col, s=22, edgecolors="k", linewidths=0.3,
                   label=f"{ph} ({len(sub)})")
    th = df.attrs.get("thresholds", {})
    meth = df.attrs.get("threshold_methods", {})
    if "red" in th:
        ax.axvline(th["red"], color="tab:red", ls="--", lw=1, label=f"red thr {th['red']:.2f} ({meth.get('red')})")
    if "green" in th:
        ax.axhline(th["green"], color="tab:green", ls="--", lw=1,
                   label=f"green thr {th['green']:.2f} ({meth.get('green')})")
    ax.set_xlabel("red (Cdt1), normalised")
    ax.set_ylabel("green (Geminin), normalised")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(confusion: pd.DataFrame, title: str = ""):
    """Heat map of a phase confusion matrix (rows truth, columns predicted)."""
    fig = new_figure((4.2, 3.8))
    ax = fig.subplots()
    a = confusion.to_numpy()
    ax.imshow(a, cmap="Blues")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, str(a[i, j]), ha="center", va="center", color="w" if a[i, j] > a.max() / 2 else "k")
    ax.set_xticks(range(a.shape[1]), confusion.columns, rotation=30)
    ax.set_yticks(range(a.shape[0]), confusion.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def radial_figure(radial: pd.DataFrame):
    """Stacked bars of phase fractions per radial bin (from :func:`opsef_core.science.fucci.radial_distribution`)."""
    fig = new_figure((5, 3.2))
    ax = fig.subplots()
    mids = (radial["r_min"] + radial["r_max"]) / 2
    width = (radial["r_max"] - radial["r_min"]).to_numpy() * 0.9
    bottom = np.zeros(len(radial))
    for ph, col in _PHASE_COLOURS.items():
        v = radial[f"fraction_{ph}"].fillna(0).to_numpy()
        ax.bar(mids, v, width=width, bottom=bottom, color=col, label=ph)
        bottom += v
    for x, n in zip(mids, radial["n"]):
        ax.text(x, 1.02, f"n={n}", ha="center", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("distance from the centre (µm)")
    ax.set_ylabel("fraction of nuclei")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def shape_figure(df: pd.DataFrame, columns=("volume", "sphericity")):
    """Box plots of 3D measurements per phase."""
    fig = new_figure((4 * len(columns), 3.2))
    axes = fig.subplots(1, len(columns), squeeze=False)
    phases = [p for p in _PHASE_COLOURS if (df["phase"].astype(str) == p).any()]
    for ax, col in zip(axes[0], columns):
        data = [df.loc[df["phase"].astype(str) == p, col].dropna().to_numpy() for p in phases]
        ax.boxplot(data, tick_labels=phases)
        ax.set_ylabel(col)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig
