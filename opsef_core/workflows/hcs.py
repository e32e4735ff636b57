"""Workflow behind ``notebooks/hcs_channels``: segmenting from channel subsets and fusing them.

The science is in :mod:`opsef_core.fusion` (``SCIENCE.md``, "Channel fusion"): Cellpose is
run on every channel alone (one cached network pass per channel and network setting), and
every non-empty channel subset is segmented by Cellpose flow averaging, pixel voting,
majority voting and STAPLE.  This module strings it together for multichannel (``CYX``)
high-content-screening fields laid out as ``DATA/images/*.tif`` with instance truth per
target in ``DATA/labels/<target>/`` (same file names):

* :func:`load_fields` — read the fields and their truth, optionally a crop (demo scale);
* :func:`fusion_scores` — F1 at IoU 0.5 for every (image, target, channel subset, method),
  a long table (:func:`opsef_core.fusion.fusion_table` per image and target);
* :func:`score_table` — the study's table: rows = channel combinations, columns = fusion
  methods (mean over images), :func:`best_cell` its best entry;
* :func:`style_table` — a pandas Styler with the best combination highlighted;
* :func:`plot_heatmap` — the same table as an annotated heat map (best cell outlined);
* :func:`plot_examples` — the fused labels of one channel subset next to the truth.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import ConfigError, InputFileError

__all__ = [
    "load_fields",
    "crop_image",
    "fusion_scores",
    "score_table",
    "best_cell",
    "style_table",
    "plot_heatmap",
    "segment_subset",
    "plot_examples",
]

log = logging.getLogger(__name__)


def crop_image(image, labels: Mapping[str, np.ndarray], crop: Sequence[int] | None):
    """Crop an image and its truth labels to ``[y0, y1, x0, x1]`` (pixels; None = whole field).

    Raises
    ------
    ConfigError
        The crop is not four integers inside the image with y0 < y1 and x0 < x1.
    """
    if crop is None:
        return image, dict(labels)
    try:
        y0, y1, x0, x1 = (int(v) for v in crop)
    except (TypeError, ValueError):
        raise ConfigError(f"crop must be [y0, y1, x0, x1], got {crop!r}")
    ny, nx = image.size("Y"), image.size("X")
    if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
        raise ConfigError(f"crop {list(crop)} does not fit the field of {ny}x{nx} pixels ({image.name})")
    data = np.asarray(image.data)[..., y0:y1, x0:x1]
    from skimage.segmentation import relabel_sequential

    labs = {k: relabel_sequential(np.asarray(v)[y0:y1, x0:x1])[0] for k, v in labels.items()}
    return image.with_data(data), labs


def load_fields(data_dir: str | Path, targets: Sequence[str] = ("nuclei", "cells"),
                max_images: int | None = None, crop: Sequence[int] | None = None) -> list[dict]:
    """Read multichannel fields and their truth label images per target.

    Parameters
    ----------
    data_dir : path
        Folder with ``images/`` (``CYX`` files with channel names) and ``labels/<target>/``.
    targets : list of str
        Truth sub-folders to read (``nuclei``, ``cells``).
    max_images : int, optional
        Keep the first images (demo scale).
    crop : [y0, y1, x0, x1], optional
        Crop every field (and its truth) to this window.

    Returns
    -------
    list of dict
        ``name``, ``image`` (:class:`Image` with a C axis), ``truth`` ``{target: YX labels}``.

    Raises
    ------
    EmptyFolderError
        No image found.
    InputFileError
        An image without several channels, a missing or misshapen truth file.
    """
    from .. import io

    data_dir = Path(data_dir)
    fields = []
    paths = io.discover(data_dir / "images")
    if max_images is not None:
        paths = paths[: int(max_images)]
    for p in paths:
        img = io.read_image(p)
        if "C" not in img.axes or img.n_channels < 2 or img.spatial_axes != "YX":
            raise InputFileError(f"expected a multichannel 2D field (CYX), got axes {img.axes!r}", p)
        if "T" in img.axes:
            img = img.sel(t=0)
        truth = {}
        for target in targets:
            gp = data_dir / "labels" / target / p.name
            if not gp.is_file():
                raise InputFileError(f"no {target} truth for {p.name}", gp)
            lab = io.read_labels(gp)
            if lab.shape != img.shape[-2:]:
                raise InputFileError(f"{target} truth of shape {lab.shape} does not fit {img.shape[-2:]}", gp)
            truth[target] = lab
        img, truth = crop_image(img, truth, crop)
        fields.append({"name": img.name, "image": img, "truth": truth})
    log.info("loaded %d fields from %s", len(fields), data_dir)
    return fields


def fusion_scores(fields: Sequence[dict], cellpose_params: Mapping[str, Mapping],
                  methods: Sequence[str] | None = None, channels: Sequence[int | str] | None = None) -> pd.DataFrame:
    """F1 at IoU 0.5 of every channel subset and fusion method, per image and target.

    Parameters
    ----------
    fields : list of dict
        From :func:`load_fields`.
    cellpose_params : dict
        ``{target: Cellpose parameters}`` (model, diameter, thresholds); one entry per
        target to score.  The network runs once per (image, channel, network setting):
        targets sharing the network parameters share the passes.
    methods : list of str, optional
        Fusion methods (default all of :data:`opsef_core.fusion.FUSION_METHODS`).
    channels : list of int or str, optional
        Channels to combine (default all).

    Returns
    -------
    DataFrame
        Long table: ``image, target, channels, n_channels, method, f1, seconds``
        (``seconds``: time of that image and target, network passes included).
    """
    from ..fusion import FUSION_METHODS, fusion_table

    methods = list(methods or FUSION_METHODS)
    if not cellpose_params:
        raise ConfigError("cellpose_params is empty: give {target: parameters} for at least one target")
    rows = []
    for field in tqdm(fields, desc="fields", leave=False):
        cache: dict = {}
        for target, params in cellpose_params.items():
            if target not in field["truth"]:
                raise ConfigError(f"no {target!r} truth loaded for {field['name']}; targets are {list(field['truth'])}")
            t0 = time.perf_counter()
            table = fusion_table(field["image"], field["truth"][target], channels=channels, methods=methods,
                                 params=dict(params), cache=cache)
            dt = time.perf_counter() - t0
            for combo, row in table.iterrows():
                for m in methods:
                    rows.append({"image": field["name"], "target": target, "channels": combo,
                                 "n_channels": combo.count("+") + 1, "method": m, "f1": float(row[m]),
                                 "seconds": dt})
    return pd.DataFrame(rows)


def score_table(scores: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows = channel combinations (power-set order), columns = methods; mean F1 over images.

    Raises
    ------
    ConfigError
        No rows for ``target``.
    """
    df = scores[scores["target"] == target]
    if df.empty:
        raise ConfigError(f"no scores for target {target!r}; targets are {sorted(scores['target'].unique())}")
    order = list(dict.fromkeys(df["channels"]))
    methods = list(dict.fromkeys(df["method"]))
    table = df.pivot_table(index="channels", columns="method", values="f1", aggfunc="mean")
    return table.loc[order, methods].rename_axis(index="channels", columns=None)


def best_cell(table: pd.DataFrame) -> tuple[str, str, float]:
    """``(channel combination, method, F1)`` of the highest entry (first in table order on ties)."""
    values = table.to_numpy(float)
    if not np.isfinite(values).any():
        raise ConfigError("the score table holds no finite value")
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    return str(table.index[i]), str(table.columns[j]), float(values[i, j])


def style_table(table: pd.DataFrame, caption: str = ""):
    """A pandas Styler: values to 3 decimals, a colour scale, the best cell bold and outlined."""
    combo, method, _ = best_cell(table)

    def mark(data: pd.DataFrame) -> pd.DataFrame:
        css = pd.DataFrame("", index=data.index, columns=data.columns)
        css.loc[combo, method] = "font-weight: bold; border: 3px solid black"
        return css

    styler = table.style.format("{:.3f}").background_gradient(cmap="viridis", vmin=0.0, vmax=1.0, axis=None)
    styler = styler.apply(mark, axis=None)
    if caption:
        styler = styler.set_caption(caption)
    return styler


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_heatmap(tables: Mapping[str, pd.DataFrame], title: str = "F1 at IoU 0.5"):
    """One annotated heat map per target (rows = channel subsets, columns = methods), best cell outlined.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per table plus one colour bar.
    """
    from matplotlib.patches import Rectangle

    if not tables:
        raise ConfigError("no score table to plot")
    n = len(tables)
    nrows = max(len(t) for t in tables.values())
    fig = _new_figure((4.2 * n + 0.8, 0.32 * nrows + 1.6))
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for ax, (target, table) in zip(axes, tables.items()):
        vals = table.to_numpy(float)
        im = ax.imshow(vals, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(vals.shape[1]), [c.replace("_", "\n") for c in table.columns], fontsize=7)
        ax.set_yticks(range(vals.shape[0]), table.index, fontsize=7)
        for (i, j), v in np.ndenumerate(vals):
            ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if (not np.isfinite(v) or v < 0.6) else "black")
        combo, method, best = best_cell(table)
        i, j = list(table.index).index(combo), list(table.columns).index(method)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_title(f"{target}: best {combo} / {method} = {best:.3f}", fontsize=8)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="F1@0.5")
    fig.suptitle(title, fontsize=10)
    return fig


def segment_subset(field: dict, channels: Sequence[int | str], method: str, params: Mapping,
                   cache: dict | None = None) -> np.ndarray:
    """Labels of one channel subset fused by one method (as scored by :func:`fusion_scores`)."""
    from ..fusion import channel_predictions, fuse

    image = field["image"]
    chans = [image.channel_index(c) for c in channels]
    preds = channel_predictions(image, chans, dict(params), cache)
    return fuse(preds, chans, method, dict(params))


def plot_examples(field: dict, results: Mapping[str, np.ndarray], target: str):
    """Fused labels next to the truth on the field's first channel, via :func:`opsef_core.viz.montage`."""
    from ..viz import montage

    img = np.asarray(field["image"].sel(c=0).data)
    panels = {"truth": field["truth"][target], **dict(results)}
    return montage({f"{field['name']} ({target})": (img, panels)}, panel_size=3.0,
                   suptitle=f"{target}: fused segmentations vs truth")
