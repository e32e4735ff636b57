"""Overlays of label contours on images, the grid montage, and depth-profile plots.

Display conventions (so results can be judged by eye as correct / under- /
over-segmented / failed):

- contours are the *inner* boundaries of each object
  (:func:`skimage.segmentation.find_boundaries`, ``mode="inner"``), one pixel
  thick by default, so touching objects show two lines;
- 3D images and labels are shown as their **middle z slice** by default
  (``projection="max"`` gives a maximum-intensity projection of the image and
  a maximum projection of the labels instead);
- in a montage every panel of a row uses the same intensity limits
  (percentiles computed once per row).

Figures are made by :func:`new_figure` (matplotlib's Agg canvas, no display needed,
no pyplot state) and saved atomically as PNG by :func:`save_figure`; the other modules
(widgets, analysis, ranking, workflows) make and save their figures with these two.
Such a figure is not shown by Jupyter's inline backend (a bare ``Figure`` as a cell's
value prints as ``<Figure size ...>``): notebooks show figures with
:meth:`opsef_core.notebook.NotebookRun.show` (save, then display the PNG), which uses
:func:`figure_png` / :func:`display_png`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .image import to_display

__all__ = ["to_plane", "overlay", "montage", "depth_profile_plot", "new_figure", "save_figure", "figure_png",
           "display_png", "label_colors", "png_bytes", "save_png", "PNG_COMPRESS_LEVEL"]

logger = logging.getLogger(__name__)

#: zlib level of every PNG opsef writes (figures and RGB arrays).  Level 3 encodes overlays and
#: montages 2–2.5x faster than the libraries' default 6, at sizes within a few per cent of it
#: (often smaller: PIL's adaptive row filters suit mid levels); measured in ``benchmarks/overhead.py``.
PNG_COMPRESS_LEVEL = 3


def to_plane(array: np.ndarray, projection: str = "middle", labels: bool = False) -> np.ndarray:
    """Reduce a ``ZYX`` array to ``YX`` for display (``YX`` arrays are returned as they are).

    Parameters
    ----------
    array : ndarray
        ``YX`` or ``ZYX``.
    projection : {"middle", "max"}
        The middle z slice, or the maximum along z.
    labels : bool
        Unused for "middle"; documented for symmetry (labels are max-projected
        the same way as images, which can merge objects of different planes).
    """
    a = np.asarray(array)
    if a.ndim == 2:
        return a
    if a.ndim != 3:
        raise ValueError(f"expected a YX or ZYX array, got {a.ndim} dimensions")
    if projection == "middle":
        return a[a.shape[0] // 2]
    if projection == "max":
        return a.max(axis=0)
    raise ValueError(f"projection must be 'middle' or 'max', got {projection!r}")


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` bright, distinct-ish RGB colours (float in [0, 1]), reproducible for a seed."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895 + rng.random()) % 1.0
    import matplotlib.colors as mcolors

    hsv = np.stack([hues, np.full(n, 0.85), np.full(n, 1.0)], axis=1)
    return mcolors.hsv_to_rgb(hsv) if n else np.zeros((0, 3))


def overlay(
    image2d: np.ndarray,
    labels: np.ndarray | None,
    color: Sequence[float] | str | None = None,
    thickness: int = 1,
    limits: tuple[float, float] | None = None,
    projection: str = "middle",
) -> np.ndarray:
    """Draw the contours of labelled objects on a grey image.

    Parameters
    ----------
    image2d : ndarray
        ``YX`` image (``ZYX`` is reduced with ``projection``).
    labels : ndarray or None
        Integer labels with the image's shape (None: the image only).
    color : RGB tuple in [0, 1], matplotlib colour name, or None
        One colour for every contour; None gives each object its own colour.
    thickness : int
        Contour thickness in pixels (boundaries dilated by ``thickness - 1``).
    limits : (float, float), optional
        Display intensity limits (default: 1st and 99.8th percentiles).
    projection : {"middle", "max"}
        How 3D inputs are shown.

    Returns
    -------
    ndarray of uint8, shape (Y, X, 3)
    """
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    img = to_plane(image2d, projection)
    grey = to_display(img, limits=limits)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None:
        lab = to_plane(labels, projection, labels=True)
        if lab.shape != img.shape:
            raise ValueError(f"labels shape {lab.shape} differs from image shape {img.shape}")
        lab = np.asarray(lab).astype(np.int64, copy=False)
        edges = find_boundaries(lab, mode="inner")
        edge_labels = np.where(edges, lab, 0)
        if thickness > 1:
            edge_labels = dilation(edge_labels, disk(thickness - 1))
        mask = edge_labels > 0
        if color is None:
            ids = np.unique(edge_labels[mask])
            palette = label_colors(len(ids))
            lut = np.zeros((int(ids.max()) + 1 if ids.size else 1, 3))
            lut[ids] = palette
            rgb[mask] = lut[edge_labels[mask]]
        else:
            import matplotlib.colors as mcolors

            rgb[mask] = np.asarray(mcolors.to_rgb(color))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _save_figure_to(fig, fh, dpi: int) -> None:
    fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight",
                pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically (temporary file, then rename)."""
    from .io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        _save_figure_to(fig, fh, dpi)
    return path


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (the same rendering as :func:`save_figure`)."""
    import io as _io

    buf = _io.BytesIO()
    _save_figure_to(fig, buf, dpi)
    return buf.getvalue()


def _write_png(rgb: np.ndarray, fh) -> None:
    from PIL import Image as _PIL

    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"a PNG is written from a uint8 (Y, X[, 3|4]) array, not {a.dtype} {a.shape}")
    _PIL.fromarray(a).save(fh, format="png", compress_level=PNG_COMPRESS_LEVEL)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB(A) or grey ``uint8`` array (e.g. from :func:`overlay`) as PNG bytes."""
    import io as _io

    buf = _io.BytesIO()
    _write_png(rgb, buf)
    return buf.getvalue()


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB(A) or grey ``uint8`` array as a PNG file, atomically; returns the path."""
    from .io import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        _write_png(rgb, fh)
    return path


def display_png(png) -> None:
    """Display a PNG (bytes, or a figure rendered with :func:`figure_png`) as an ``image/png`` output.

    Does nothing outside IPython (a script, a test without a kernel).
    """
    try:
        from IPython import get_ipython
        from IPython.display import Image as _PNG
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is pinned with the notebooks
        return
    if get_ipython() is None:
        return
    data = png if isinstance(png, (bytes, bytearray)) else figure_png(png)
    display(_PNG(data=bytes(data), format="png"))


def new_figure(figsize: tuple[float, float], *, layout: str | None = None):
    """A matplotlib figure on its own Agg canvas: the one way opsef makes figures.

    The figure is not registered with ``pyplot`` (no global state, nothing to close, no
    memory growth in loops, works without a display); it can be saved with
    :func:`save_figure` (or ``fig.savefig``); a notebook shows it with
    :meth:`opsef_core.notebook.NotebookRun.show` (not as a cell's bare value, which Jupyter
    prints as ``<Figure size ...>``).

    Parameters
    ----------
    figsize : (float, float)
        Width and height in inches.
    layout : {None, "constrained", "tight", "compressed"}, optional
        matplotlib layout engine; None (default) keeps matplotlib's default (no engine).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=tuple(figsize), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def montage(
    rows: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray | None]]],
    titles: Mapping[str, str] | None = None,
    path: str | Path | None = None,
    show_input: bool = True,
    panel_size: float = 2.6,
    percentiles: tuple[float, float] = (1.0, 99.8),
    projection: str = "middle",
    suptitle: str | None = None,
):
    """The grid montage: rows = preprocessing pipelines, columns = segmenter settings.

    Parameters
    ----------
    rows : dict
        ``{pipeline: (display image, {setting: labels or None})}``; None marks a
        failed segmentation (the panel says "failed").  Columns are the union
        of settings in the order first seen.
    titles : dict, optional
        ``{setting: column title}`` (e.g. with parameters); the object count of
        each panel is appended.
    path : str or Path, optional
        Save the figure there as PNG (atomically).
    show_input : bool
        Add a first column with the row's image without contours.
    panel_size : float
        Inches per panel.
    percentiles : (float, float)
        Display limits, computed once per row over that row's image.
    projection : {"middle", "max"}
        How 3D images and labels are shown.
    suptitle : str, optional
        Figure title (e.g. the image name).

    Returns
    -------
    matplotlib.figure.Figure
    """
    titles = dict(titles or {})
    settings: list[str] = []
    for _, (_, by_setting) in rows.items():
        for s in by_setting:
            if s not in settings:
                settings.append(s)
    ncols = len(settings) + (1 if show_input else 0)
    nrows = max(len(rows), 1)
    fig = new_figure((panel_size * max(ncols, 1), panel_size * nrows + (0.4 if suptitle else 0)))
    axes = fig.subplots(nrows, max(ncols, 1), squeeze=False)
    for r, (pipeline, (image, by_setting)) in enumerate(rows.items()):
        plane = to_plane(image, projection)
        finite = np.asarray(plane, dtype=np.float32)
        finite = finite[np.isfinite(finite)]
        limits = tuple(np.percentile(finite, percentiles)) if finite.size else (0.0, 1.0)
        col = 0
        if show_input:
            ax = axes[r, 0]
            ax.imshow(overlay(plane, None, limits=limits))
            ax.set_title("input", fontsize=8)
            col = 1
        for c, setting in enumerate(settings):
            ax = axes[r, col + c]
            labels = by_setting.get(setting, None)
            head = titles.get(setting, setting)
            if labels is None:
                ax.imshow(overlay(plane, None, limits=limits), alpha=0.4)
                ax.text(0.5, 0.5, "failed", transform=ax.transAxes, ha="center", va="center",
                        color="red", fontsize=12, fontweight="bold")
                ax.set_title(f"{head}\nfailed", fontsize=7, color="red")
            else:
                n = int(len(np.unique(labels[labels > 0]))) if np.any(labels) else 0
                ax.imshow(overlay(plane, labels, limits=limits, projection=projection))
                ax.set_title(f"{head}\nn={n}", fontsize=7)
        axes[r, 0].set_ylabel(pipeline, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def depth_profile_plot(
    df,
    x: str = "depth_percent",
    y: str | Sequence[str] = "snr",
    group: str | None = "condition",
    path: str | Path | None = None,
    xlabel: str | None = None,
    band: tuple[float, float] | None = (70.0, 100.0),
):
    """Plot quantities along depth (e.g. SNR/CNR per slice), one line per group.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per slice (and group).
    x : str
        Depth column (e.g. percent of maximum diameter).
    y : str or list of str
        Column(s) to plot; one panel each.
    group : str, optional
        Column whose values give one line each (None: a single line).
    path : str or Path, optional
        Save as PNG (atomically).
    xlabel : str, optional
        Axis label (default: ``x``).
    band : (float, float), optional
        Shade this x range (the 70-100 % comparison band of the clearing study).

    Returns
    -------
    matplotlib.figure.Figure
    """
    ys = [y] if isinstance(y, str) else list(y)
    missing = [c for c in [x, *ys] + ([group] if group else []) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table (columns: {list(df.columns)})")
    fig = new_figure((4.5 * len(ys), 3.2))
    axes = fig.subplots(1, len(ys), squeeze=False)[0]
    groups = df.groupby(group, sort=True) if group else [(None, df)]
    for ax, col in zip(axes, ys):
        for key, sub in groups:
            sub = sub.sort_values(x)
            ax.plot(sub[x], sub[col], marker=".", label=str(key) if key is not None else None)
        if band is not None:
            ax.axvspan(*band, color="0.9", zorder=0)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(col)
        if group:
            ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
