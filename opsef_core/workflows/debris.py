"""Workflow behind ``notebooks/debris_brightfield``: one spheroid per brightfield image, among debris.

The science is in :mod:`opsef_core.spheroid` (readouts) and
:func:`opsef_core.evaluate.spheroid_metrics` / :func:`~opsef_core.evaluate.spheroid_summary`
(``SCIENCE.md``, "Single-spheroid metrics"); this module strings them together for a
time series laid out as ``DATA/images/*_tNN.tif`` with single-spheroid truth masks in
``DATA/labels/`` (same file names):

* :func:`load_series` — read the images (and truth) and the time index ``tNN`` of each file name;
* :func:`spheroid_pipeline` — the study's preprocessing: optional rescaling (1/2 was best),
  inversion (the spheroid is dark on a bright field), rolling-ball background subtraction;
* :func:`segment_series` — several segmenter settings side by side on the preprocessed
  images (one network pass per image and setting), labels brought back to the original
  pixel grid (nearest neighbour) so they are compared with the truth at full resolution;
* :func:`evaluate_series` — per image and setting: the largest object's readouts in µm
  (area, perimeter, equivalent diameter, volume of the sphere of that diameter, circularity)
  and, with truth, JCD, RDD, RCD, invalid/ambiguous flags and the average radial error;
  per setting: means, standard deviations, ISF/ASF with binomial standard errors;
* :func:`choose_setting` — the setting with the lowest mean Jaccard distance;
* plots: :func:`plot_growth` (diameter and volume over time, prediction vs truth),
  :func:`plot_overlays` (the chosen result on every image), :func:`plot_settings`
  (settings side by side, via :func:`opsef_core.viz.montage`).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import ConfigError, InputFileError, OpsefError

__all__ = [
    "load_series",
    "spheroid_pipeline",
    "segment_series",
    "evaluate_series",
    "choose_setting",
    "plot_growth",
    "plot_overlays",
    "plot_settings",
    "time_index",
    "smooth_largest",
]

log = logging.getLogger(__name__)

_TIME = re.compile(r"(?:^|[_\-.])t(\d+)(?=$|[_\-.])", re.IGNORECASE)


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


def spheroid_pipeline(scale: float = 0.5, invert: bool = True, background_radius: float | None = 50.0,
                      extra_steps: Sequence[Mapping] = ()):
    """The preprocessing of the treated-spheroid study as an opsef :class:`Pipeline`.

    Parameters
    ----------
    scale : float
        Resampling factor (the study found 1/2 best among 1/4, 1/2, 3/4, 1); 1 = none.
    invert : bool
        Invert intensities (dark spheroid → bright object for the segmenters).
    background_radius : float, optional
        Rolling-ball radius in pixels **after** rescaling (larger than the spheroid's
        radius); None = no background subtraction.
    extra_steps : list of dict
        More steps ``{"name": ..., "params": {...}}`` appended at the end.

    Returns
    -------
    opsef_core.preprocess.Pipeline
    """
    from ..preprocess import Pipeline, Step

    if not 0 < scale <= 4:
        raise ConfigError(f"scale must lie in (0, 4], got {scale}")
    steps = []
    if scale != 1:
        steps.append(Step("rescale", {"factor": float(scale)}))
    if invert:
        steps.append(Step("invert", {}))
    if background_radius:
        steps.append(Step("rolling_ball", {"radius": float(background_radius)}))
    for s in extra_steps:
        steps.append(Step(s["name"], dict(s.get("params", {}))))
    name = "x{:g}".format(scale) + ("_inv" if invert else "") + (f"_rb{background_radius:g}" if background_radius else "")
    return Pipeline(name, steps)


def _check_settings(settings: Sequence[Mapping]) -> list[dict]:
    out, names = [], set()
    for i, s in enumerate(settings):
        if not isinstance(s, Mapping) or "name" not in s or "backend" not in s:
            raise ConfigError(f"settings[{i}] must be a dict with 'name', 'backend' and optional 'params', got {s!r}")
        if s["name"] in names:
            raise ConfigError(f"settings[{i}]: the name {s['name']!r} is used twice")
        names.add(s["name"])
        out.append({"name": str(s["name"]), "backend": str(s["backend"]), "params": dict(s.get("params") or {})})
    if not out:
        raise ConfigError("no segmenter settings given")
    return out


def smooth_largest(labels: np.ndarray, radius: int = 0) -> np.ndarray:
    """Fill the holes of the largest object and open it with a disk (outer contour, no debris spurs).

    The other objects are kept (minus the pixels the smoothed spheroid covers), so the
    object count used for the *ambiguous spheroid* call does not change.  The smoothed
    spheroid keeps its largest connected component.

    Parameters
    ----------
    labels : ndarray
        ``YX`` label image.
    radius : int
        Opening radius in pixels (0 = holes filled only).

    Returns
    -------
    ndarray
        Label image of the same dtype.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import disk, opening

    from ..spheroid import largest_object

    lab = np.asarray(labels)
    mask, n = largest_object(lab)
    if n == 0:
        return lab.copy()
    ident = int(lab[mask][0])
    smooth = ndi.binary_fill_holes(mask)
    if radius > 0:
        smooth = opening(smooth, disk(int(radius)))
        if smooth.any():
            smooth, _ = largest_object(smooth)
        else:  # the opening removed everything: keep the filled object
            smooth = ndi.binary_fill_holes(mask)
    out = np.where(lab == ident, 0, lab)
    out[smooth] = ident
    return out.astype(lab.dtype)


def segment_series(series: Sequence[dict], pipeline, settings: Sequence[Mapping],
                   keep_going: bool = True, smooth_radius: int = 0) -> dict:
    """Segment every image with every setting, on the preprocessed image.

    Parameters
    ----------
    series : list of dict
        From :func:`load_series`.
    pipeline : Pipeline
        Preprocessing (applied once per image, shared by the settings).
    settings : list of dict
        ``{"name": column name, "backend": "classical" | "unet" | "cellpose" | "stardist",
        "params": {...}}``.
    keep_going : bool
        A setting failing with an opsef error (e.g. a model that is not installed) is
        recorded as failed (labels None, ``errors[name]`` holds the message, logged as an
        error) instead of stopping the run.
    smooth_radius : int
        When > 0, :func:`smooth_largest` with this radius (pixels at the original
        resolution) is applied to every result (the study took the outer contour).

    Returns
    -------
    dict
        ``labels``: ``{setting: [labels per image at the original resolution, or None]}``;
        ``preprocessed``: the preprocessed images; ``errors``: ``{setting: message}``;
        ``seconds``: ``{setting: total segmentation time}``.
    """
    from ..reshape import rescale_labels
    from ..segment import get_segmenter

    settings = _check_settings(settings)
    labels: dict[str, list] = {s["name"]: [] for s in settings}
    errors: dict[str, str] = {}
    seconds = {s["name"]: 0.0 for s in settings}
    pre_images = []
    for item in tqdm(series, desc="images", leave=False):
        pre = pipeline.apply(item["image"])
        pre_images.append(pre)
        for s in settings:
            name = s["name"]
            if name in errors:
                labels[name].append(None)
                continue
            t0 = time.perf_counter()
            try:
                seg = get_segmenter(s["backend"])
                lab = np.asarray(seg.segment(pre, s["params"]))
            except OpsefError as exc:
                if not keep_going:
                    raise
                errors[name] = f"{type(exc).__name__}: {exc}"
                log.error("setting %r failed on %s: %s", name, item["name"], errors[name])
                labels[name].append(None)
                continue
            seconds[name] += time.perf_counter() - t0
            lab = rescale_labels(lab, item["image"].shape)
            if smooth_radius > 0:
                lab = smooth_largest(lab, smooth_radius)
            labels[name].append(lab)
    return {"labels": labels, "preprocessed": pre_images, "errors": errors, "seconds": seconds}


def evaluate_series(series: Sequence[dict], labels: Mapping[str, Sequence], diameter: str = "equivalent",
                    perimeter: str = "crofton") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readouts and single-spheroid metrics per image and setting, and their summary per setting.

    Parameters
    ----------
    series : list of dict
        From :func:`load_series` (pixel sizes from the images, in µm).
    labels : dict
        ``{setting: [labels per image or None]}`` (from :func:`segment_series`);
        failed settings (None) are skipped.
    diameter, perimeter : str
        See :func:`opsef_core.evaluate.spheroid_metrics` (defaults: equivalent-circle
        diameter, Crofton perimeter).

    Returns
    -------
    per_image : DataFrame
        One row per (setting, image): ``setting, image, time, n_objects`` and the
        prediction's ``area, perimeter, diameter, volume, circularity`` (µm, µm², µm³);
        with truth also ``*_true``, ``invalid, ambiguous, jcd, rdd, rcd, radial_error_um``.
    summary : DataFrame
        One row per setting: ``n_images`` and, with truth, the
        :func:`~opsef_core.evaluate.spheroid_summary` columns (means, sample SDs, ISF/ASF
        with binomial SEs); without truth the mean readouts.
    """
    from ..evaluate import spheroid_metrics, spheroid_summary
    from ..spheroid import largest_object, readouts

    rows, summary = [], []
    for name, labs in labels.items():
        if labs is None or any(lab is None for lab in labs):
            continue
        if len(labs) != len(series):
            raise ConfigError(f"setting {name!r} has {len(labs)} label images for {len(series)} images")
        metrics = []
        for item, lab in zip(series, labs):
            ps = item["image"].pixel_size
            px = ps["X"] if ps["X"] == ps["Y"] else {"Y": ps["Y"], "X": ps["X"]}
            row = {"setting": name, "image": item["name"], "time": item["time"]}
            if item["truth"] is not None:
                m = spheroid_metrics(item["truth"], lab, px, diameter=diameter, perimeter=perimeter)
                metrics.append(m)
                row.update({k.removesuffix("_pred"): v for k, v in m.items()})
            else:
                mask, n = largest_object(lab)
                r = readouts(mask, px, diameter=diameter)
                row.update(n_objects=n, **{k: r[k] for k in ("area", "perimeter", "diameter", "volume", "circularity")})
            rows.append(row)
        srow = {"setting": name}
        if metrics and len(metrics) == len(labs):
            srow.update(spheroid_summary(metrics))
        else:
            srow["n_images"] = len(labs)
            for k in ("diameter", "volume", "circularity"):
                srow[f"{k}_mean"] = float(np.mean([r[k] for r in rows if r["setting"] == name]))
        summary.append(srow)
    return pd.DataFrame(rows), pd.DataFrame(summary)


def choose_setting(summary: pd.DataFrame, chosen: str = "best", by: str = "jcd_mean") -> str:
    """The setting to report: ``chosen`` itself, or with ``"best"`` the lowest ``by`` (mean JCD).

    Raises
    ------
    ConfigError
        ``chosen`` is not a setting of the summary, or "best" without a ``by`` column.
    """
    names = list(summary["setting"]) if len(summary) else []
    if chosen != "best":
        if chosen not in names:
            raise ConfigError(f"chosen setting {chosen!r} is not among the evaluated settings {names}")
        return chosen
    if by not in summary.columns or summary[by].isna().all():
        raise ConfigError(f"cannot pick the best setting: no {by!r} column (no truth?); name one instead")
    return str(summary.sort_values(by, kind="stable")["setting"].iloc[0])


# ----------------------------------------------------------------------------- plots
def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


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
    fig = _new_figure((9, 3.6))
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
    from ..spheroid import largest_object
    from ..viz import overlay

    n = len(series)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _new_figure((3.0 * ncols, 3.1 * nrows + 0.3))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, item, lab in zip(axes, series, labels):
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
        rows[f"{item['name']} (t={item['time']})"] = (
            np.asarray(item["image"].data), {name: (None if labs is None or labs[i] is None else labs[i])
                                              for name, labs in labels.items()})
    return montage(rows, suptitle="segmenter settings side by side (all objects; the largest is the spheroid)")
