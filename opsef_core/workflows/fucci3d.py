"""Workflow behind ``notebooks/fucci_3d``: 3D nuclei, FUCCI phase calls, 3D measurements.

The science is in :mod:`opsef_core.fucci` (``SCIENCE.md``, "FUCCI cell-cycle
phase"); this module strings it together for data laid out as
``DATA/images/<name>.tif`` (``CZYX``: nuclear stain, red, green),
``DATA/labels/<name>.tif`` (3D truth nuclei, optional) and
``DATA/phases/<name>.csv`` (columns ``label,phase``, optional):

* :func:`load_fucci` — the image, truth labels and truth phases;
* :func:`preprocess` — the study's chain with :mod:`opsef_core.preprocess` steps
  (values below a small threshold set to zero, gamma, CLAHE, median) followed by
  white top-hat artefact suppression (the top-hat of a small ball *is* the small
  bright artefacts; it is subtracted); :func:`before_after_figure` shows it;
* :func:`segment_models` / :func:`score_models` — several 3D segmenters, scored
  against the truth (F1@0.5, AJI);
* :func:`phase_table` / :func:`truth_phase_table` — per-nucleus red/green and
  phase calls with recorded thresholds; :func:`phase_scatter` plots them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import ConfigError, EmptyFolderError, InputFileError

__all__ = [
    "load_fucci",
    "fucci_pipeline",
    "preprocess",
    "before_after_figure",
    "segment_models",
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


# ----------------------------------------------------------------------------- loading
def load_fucci(data_dir, name: str | None = None, channels=("hoechst", "cdt1_red", "geminin_green")) -> dict:
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
                   clahe_kernel: int | None = None, median_radius: int = 1):
    """The study's preprocessing chain as an :class:`opsef_core.preprocess.Pipeline`.

    Steps: ``clip`` (``zero_below``: values below ``zero_below`` become 0),
    ``gamma``, ``clahe`` (3D on a stack), ``median`` (ball of ``median_radius``).
    A zero ``zero_below`` or ``median_radius`` leaves that step out.

    Returns
    -------
    Pipeline
    """
    from ..preprocess import Pipeline

    steps = []
    if zero_below > 0:
        steps.append({"name": "clip", "params": {"low": float(zero_below), "mode": "zero_below"}})
    steps.append({"name": "gamma", "params": {"gamma": float(gamma)}})
    steps.append({"name": "clahe", "params": {"clip_limit": float(clahe_clip), "kernel_size": clahe_kernel}})
    if median_radius > 0:
        steps.append({"name": "median", "params": {"radius": int(median_radius)}})
    return Pipeline("fucci3d", steps)


def preprocess(image, pipeline, artefact_radius: int = 1):
    """Apply ``pipeline``, then subtract the white top-hat of a small ball (artefact suppression).

    Parameters
    ----------
    image : Image
        ``CZYX`` stack.
    pipeline : Pipeline
        From :func:`fucci_pipeline` (applied to every channel).
    artefact_radius : int
        Ball radius of the white top-hat: bright structures that a ball of this
        radius does not fit into (the 2×2×2 artefacts for radius 1) are removed.
        0 skips the step.

    Returns
    -------
    (Image, Image)
        The processed image and the removed artefact map (zeros when skipped).
    """
    from ..image import Image
    from ..preprocess.pipeline import apply_step

    proc = pipeline.apply(image)
    data = np.asarray(proc.data, np.float32)
    if artefact_radius > 0:
        art = np.asarray(apply_step(proc, "tophat", radius=int(artefact_radius)).data, np.float32)
    else:
        art = np.zeros_like(data)
    clean = np.clip(data - art, 0, None)

    def wrap(a, suffix):
        return Image.from_array(a, proc.axes, pixel_size=dict(proc.pixel_size),
                                channel_names=list(proc.channel_names), source=image.source,
                                name=f"{image.name}{suffix}")

    return wrap(clean, ""), wrap(art, "_artefacts")


def busiest_slice(labels_or_none, nz: int) -> int:
    """The z slice with the most labelled pixels (the middle slice without labels)."""
    if labels_or_none is not None and np.any(labels_or_none):
        return int(np.argmax((labels_or_none > 0).sum(axis=(1, 2))))
    return nz // 2


def before_after_figure(raw, processed, artefacts=None, z: int | None = None):
    """One row per channel: raw slice, processed slice (and removed artefacts, max projection)."""
    import matplotlib.pyplot as plt

    nz = raw.spatial(c=0).shape[0]
    z = nz // 2 if z is None else int(z)
    names = list(raw.channel_names)
    ncol = 3 if artefacts is not None else 2
    fig, axes = plt.subplots(len(names), ncol, figsize=(3 * ncol, 3 * len(names)), squeeze=False)
    for i, ch in enumerate(names):
        a = raw.spatial(c=i)[z]
        b = processed.spatial(c=i)[z]
        axes[i][0].imshow(a, cmap="gray", vmin=np.percentile(a, 1), vmax=np.percentile(a, 99.8))
        axes[i][1].imshow(b, cmap="gray", vmin=np.percentile(b, 1), vmax=np.percentile(b, 99.8))
        axes[i][0].set_title(f"{ch}: raw z={z}", fontsize=8)
        axes[i][1].set_title(f"{ch}: processed", fontsize=8)
        if artefacts is not None:
            axes[i][2].imshow(artefacts.spatial(c=i).max(axis=0), cmap="magma")
            axes[i][2].set_title(f"{ch}: removed (top-hat, max proj.)", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- segmentation
def segment_models(image, models: dict, channel) -> tuple[dict, pd.DataFrame]:
    """Segment the nuclear channel of a ``CZYX`` image with several models.

    Parameters
    ----------
    image : Image
        ``CZYX`` (preprocessed) stack.
    models : dict
        ``{name: {"backend": str, "params": dict}}``; ``channel`` is added to
        ``params``.  A model that cannot be found is skipped (warning; listed in
        the returned table with ``status = "missing"``).  Several names may
        share one backend and model but differ in decoding (e.g. the U-Net with
        ``instances`` ``watershed`` vs ``connected_components``): the network
        pass is then run once.
    channel : int or str
        The nuclear channel.

    Returns
    -------
    (dict, DataFrame)
        ``{name: ZYX labels}`` and a table ``model, backend, status, seconds, n_objects, message``.
    """
    from ..errors import ModelNotFoundError
    from ..segment import get_segmenter

    if not isinstance(models, dict) or not models:
        raise ConfigError("models must be a non-empty dict {name: {'backend': ..., 'params': {...}}}")
    results, rows, cache = {}, [], {}
    for name, spec in tqdm(models.items(), desc="3D segmentation", leave=False):
        if not isinstance(spec, dict) or "backend" not in spec or set(spec) - {"backend", "params"}:
            raise ConfigError(f"model {name!r}: give {{'backend': str, 'params': dict}}, got {spec!r}")
        seg = get_segmenter(spec["backend"])
        p = seg.params({**(spec.get("params") or {}), "channel": channel})
        key = seg.network_key(p)
        t0 = time.perf_counter()
        try:
            if key not in cache:
                cache[key] = seg.predict(image, p)
            lab = np.asarray(seg.decode(cache[key], image, p), np.int32)
        except ModelNotFoundError as exc:
            log.warning("model %s skipped: %s", name, exc)
            rows.append({"model": name, "backend": spec["backend"], "status": "missing", "seconds": np.nan,
                         "n_objects": 0, "message": str(exc)})
            continue
        results[name] = lab
        rows.append({"model": name, "backend": spec["backend"], "status": "ok",
                     "seconds": round(time.perf_counter() - t0, 2),
                     "n_objects": int(np.unique(lab[lab > 0]).size), "message": ""})
    return results, pd.DataFrame(rows)


def score_models(truth, results: dict) -> pd.DataFrame:
    """F1, precision, recall at IoU 0.5 and AJI of each model's labels against the truth.

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
    import matplotlib.pyplot as plt

    from ..viz import overlay

    panels = ([("truth", truth)] if truth is not None else []) + list(results.items())
    nz = image2d.shape[0]
    z = busiest_slice(truth, nz) if z is None else int(z)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3), squeeze=False)
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


def phase_table(labels, image, red_channel, green_channel, red_threshold="otsu", green_threshold="otsu",
                background_percentile: float = 50.0, norm_percentile: float = 99.0) -> pd.DataFrame:
    """Per-nucleus normalised red/green intensities and phase calls.

    Wraps :func:`opsef_core.fucci.nucleus_intensities` and
    :func:`opsef_core.fucci.call_phases` (columns ``red``, ``green``); the
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
        See :func:`opsef_core.fucci.nucleus_intensities`.

    Returns
    -------
    DataFrame
    """
    from ..fucci import call_phases, nucleus_intensities

    red = image.spatial(c=red_channel)
    green = image.spatial(c=green_channel)
    df = nucleus_intensities(labels, red, green, background_percentile=background_percentile,
                             norm_percentile=norm_percentile)
    return call_phases(df, red_threshold, green_threshold)


def truth_phase_table(truth_labels, phases: pd.DataFrame) -> pd.DataFrame:
    """Truth phases with the truth nuclei's centroids (pixels), for :func:`opsef_core.fucci.phase_accuracy`.

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


_PHASE_COLOURS = {"G1": "tab:red", "S/G2/M": "tab:green", "G1/S": "gold", "unlabeled": "0.5"}


def phase_scatter(df: pd.DataFrame, title: str = ""):
    """Red vs green per nucleus, coloured by phase, with the two threshold lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.4, 4))
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
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
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
    """Stacked bars of phase fractions per radial bin (from :func:`opsef_core.fucci.radial_distribution`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
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
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    phases = [p for p in _PHASE_COLOURS if (df["phase"].astype(str) == p).any()]
    for ax, col in zip(axes[0], columns):
        data = [df.loc[df["phase"].astype(str) == p, col].dropna().to_numpy() for p in phases]
        ax.boxplot(data, tick_labels=phases)
        ax.set_ylabel(col)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig
