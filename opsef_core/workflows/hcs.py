"""Workflow behind ``notebooks/hcs_channels``: segmenting from channel subsets and fusing them.

The science is in :mod:`opsef_core.fusion` (``docs/definitions.md#channel-fusion``): Cellpose is
run on every channel alone (one network pass per channel and network setting), and every
non-empty channel subset is segmented by Cellpose flow averaging, pixel voting, majority
voting and STAPLE.  The segmentation goes through the run engine: the ``fusion`` backend
(:mod:`opsef_core.segment.fusion_backend`) with a sweep over ``channels`` (the power set)
× ``method`` is a run config, one per target, that ``opsef run`` executes and repeats; the
study's tables and figures read the run folders.

Data: multichannel (``CYX``) high-content-screening fields laid out as ``DATA/images/*.tif``
with instance truth per target in ``DATA/labels/<target>/`` (same file names).

* :func:`load_fields`, :func:`crop_image` — read (and crop) fields and their truth;
* :func:`prepare_inputs` — the data folder a run reads: the data itself, or cropped copies
  of the first fields (demo scale; the run engine reads whole files);
* :func:`fusion_config` — the run config of one target (``configs/hcs_channels.json`` is
  the nuclei one on the whole demo data), :func:`run_fusion` executes it;
* :func:`fusion_scores` — the long table (image, target, channel subset, method, F1 at IoU
  0.5) from the runs' ``metrics.csv`` and ``run.json``, every combination present;
* :func:`score_table` — the study's table: rows = channel combinations, columns = fusion
  methods (mean over images), :func:`best_cell` its best entry;
* :func:`style_table` — a pandas Styler with the best combination highlighted;
* :func:`plot_heatmap` — the same table as an annotated heat map (best cell outlined);
* :func:`subset_view`, :func:`plot_examples` — the run's fused labels of one channel subset
  next to the truth;
* :func:`subset_explorer` — pick channel subsets and methods live: single-channel masks next
  to the fused one, decoded from one Cellpose pass per channel
  (:func:`opsef_core.widgets.fusion_explorer`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, InputFileError, RunFolderError
from ..run.execute import execute_config

__all__ = [
    "TARGETS",
    "load_fields",
    "crop_image",
    "prepare_inputs",
    "fusion_config",
    "run_fusion",
    "fusion_scores",
    "score_table",
    "best_cell",
    "style_table",
    "plot_heatmap",
    "subset_label",
    "subset_view",
    "subset_explorer",
    "plot_examples",
]

log = logging.getLogger(__name__)

#: the truth sub-folders of the demo data
TARGETS = ("nuclei", "cells")


# ----------------------------------------------------------------------------- fields
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


def load_fields(data_dir: str | Path, targets: Sequence[str] = TARGETS,
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
        ``name``, ``path``, ``image`` (:class:`Image` with a C axis), ``truth`` ``{target: YX labels}``.

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
        fields.append({"name": img.name, "path": p, "image": img, "truth": truth})
    log.info("loaded %d fields from %s", len(fields), data_dir)
    return fields


def prepare_inputs(data_dir: str | Path, dest: str | Path, targets: Sequence[str] = TARGETS,
                   max_images: int | None = None, crop: Sequence[int] | None = None) -> Path:
    """The data folder a fusion run reads: ``data_dir`` itself, or cropped copies.

    The run engine segments whole files, so a crop (demo scale) is made here: the first
    ``max_images`` fields and their truth, cropped, are written under ``dest`` with the
    layout of ``data_dir`` (``images/`` as OME-TIFF keeping channel names and pixel size,
    ``labels/<target>/`` relabelled 1..n).  The run records their checksums like any input.

    Parameters
    ----------
    data_dir : path
        ``images/`` and ``labels/<target>/``.
    dest : path
        Where the cropped copies go (a new or empty folder; used only with ``crop``).
    targets : list of str
        Truth sub-folders to copy.
    max_images : int, optional
        Fields to copy (all when None); without a crop the run's ``inputs.limit`` does this.
    crop : [y0, y1, x0, x1], optional
        Window in pixels; None: no copy, ``data_dir`` is returned.

    Returns
    -------
    Path
        The data folder for :func:`fusion_config`.

    Raises
    ------
    ConfigError
        A bad crop, or ``dest`` already holds images.
    """
    if crop is None:
        return Path(data_dir)
    from .. import io

    dest = Path(dest)
    if (dest / "images").is_dir() and any((dest / "images").iterdir()):
        raise ConfigError(f"prepare_inputs: {dest / 'images'} already holds files; give a new folder")
    for field in load_fields(data_dir, targets=targets, max_images=max_images, crop=crop):
        name = Path(field["path"]).name
        io.write_ome_tiff(dest / "images" / name, field["image"])
        for target, lab in field["truth"].items():
            io.write_labels(dest / "labels" / target / name, lab, pixel_size=field["image"].pixel_size, axes="YX")
    log.info("cropped inputs %s written to %s", list(crop), dest)
    return dest


# ----------------------------------------------------------------------------- the run config
def fusion_config(data_dir: str | Path, target: str, cellpose_params: Mapping, channels: Sequence[int | str],
                  methods: Sequence[str] | None = None, max_images: int | None = None,
                  name: str | None = None, seed: int = 0) -> dict:
    """The run config scoring every channel subset × fusion method for one target.

    One ``fusion`` segmenter (:mod:`opsef_core.segment.fusion_backend`) with the Cellpose
    parameters, ``network_channels = channels`` and a sweep over ``channels`` (every
    non-empty subset, :func:`opsef_core.fusion.channel_power_set`) × ``method``: the run
    makes one Cellpose pass per image and channel and decodes every combination from it.

    Parameters
    ----------
    data_dir : path
        ``images/`` and ``labels/<target>/`` (kept as given: relative paths resolve against
        the config's folder, or the ``base_dir`` of :func:`run_fusion`).
    target : str
        Truth sub-folder scored against (``nuclei``, ``cells``).
    cellpose_params : dict
        Cellpose parameters (model, diameter, thresholds; no channel).
    channels : list of int or str
        The channels combined (names read best in the tables).
    methods : list of str, optional
        Fusion methods (default all of :data:`opsef_core.fusion.FUSION_METHODS`).
    max_images : int, optional
        Only the first images (``inputs.limit``).
    name : str, optional
        Config name, the run folder's stem (default ``hcs-<target>``).
    seed : int
        Recorded in the config.

    Returns
    -------
    dict
        A run config (only tables and labels are written: no overlays, montage, ROIs or
        measurements).

    Raises
    ------
    ConfigError
        No channel or method, an unknown method, or a channel parameter in ``cellpose_params``.
    """
    from ..fusion import FUSION_METHODS, channel_power_set

    methods = list(FUSION_METHODS if methods is None else methods)
    if not methods:
        raise ConfigError("methods: give at least one fusion method")
    bad = [m for m in methods if m not in FUSION_METHODS]
    if bad:
        raise ConfigError(f"unknown fusion method(s) {bad}; use {list(FUSION_METHODS)}")
    channels = list(channels)
    if not channels:
        raise ConfigError("channels: give at least one channel")
    params = dict(cellpose_params)
    chosen = [k for k in ("channel", "nuclear_channel", "channels", "network_channels") if k in params]
    if chosen:
        raise ConfigError(f"cellpose parameters for {target!r} choose channels {chosen}: remove them, the "
                          "channels come from the 'channels' parameter")
    params["network_channels"] = channels
    data_dir = Path(data_dir)
    inputs: dict = {"path": str(data_dir / "images"), "include": ["*.tif", "*.tiff"],
                    "ground_truth": str(data_dir / "labels" / target)}
    if max_images is not None:
        inputs["limit"] = int(max_images)
    return {
        "schema_version": 1,
        "name": name or f"hcs-{target}",
        "description": (f"HCS channel fusion ({target}): Cellpose on every channel alone, every non-empty "
                        f"channel subset fused by {', '.join(methods)}, scored against the {target} truth"),
        "inputs": inputs,
        "pipelines": [{"name": "raw", "steps": []}],
        "segmenters": [{"name": "fusion", "backend": "fusion", "params": params,
                        "sweep": {"channels": [list(s) for s in channel_power_set(channels)], "method": methods}}],
        "outputs": {"overlays": False, "montage": False, "rois": False, "measurements": False},
        "evaluation": {"rank_by": "f1@0.5"},
        "seed": int(seed),
    }


run_fusion = execute_config  # the engine's one way to run a config dict


# ----------------------------------------------------------------------------- reading runs
def _read_csv(run_dir: Path, name: str) -> pd.DataFrame:
    path = Path(run_dir) / name
    if not path.is_file():
        raise RunFolderError(f"no {name} in the run folder", run_dir)
    return pd.read_csv(path)


def _fusion_combinations(run_dir: Path) -> dict[str, dict]:
    """``{combination id: validated params}`` of the run's fusion settings (from run.json)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunFolderError("no run.json in the run folder", run_dir)
    record = json.loads(path.read_text(encoding="utf-8"))
    combos = {c["id"]: c["params"] for c in record.get("combinations", []) if c.get("backend") == "fusion"}
    if not combos:
        raise RunFolderError("the run has no fusion combination", run_dir)
    return combos


def subset_label(channels: Sequence | None) -> str:
    """The table's name of a channel subset: the channels joined with ``+`` (``all`` for None)."""
    return "all" if channels is None else "+".join(str(c) for c in channels)


def fusion_scores(runs: Mapping[str, str | Path]) -> pd.DataFrame:
    """F1 at IoU 0.5 of every channel subset and fusion method, per image and target, from runs.

    Parameters
    ----------
    runs : dict
        ``{target: run folder}`` of fusion runs (:func:`run_fusion`).

    Returns
    -------
    DataFrame
        Long table, one row per (target, image, combination) of the runs, none left out:
        ``target, image, combination, channels`` (``a+b``), ``n_channels, method, f1``
        (``f1@0.5`` of ``metrics.csv``; NaN, with a warning, where a combination failed or
        was not scored), ``status, error, labels`` (from ``summary.csv``).

    Raises
    ------
    RunFolderError
        A run folder without its tables, or without fusion combinations.
    """
    if not runs:
        raise ConfigError("no run to read: give {target: run folder}")
    frames = []
    for target, run_dir in runs.items():
        run_dir = Path(run_dir)
        combos = _fusion_combinations(run_dir)
        summary = _read_csv(run_dir, "summary.csv")
        summary = summary[summary["combination"].isin(combos)]
        cols = ["image", "combination", "f1@0.5"]
        metrics = pd.read_csv(run_dir / "metrics.csv")[cols] if (run_dir / "metrics.csv").is_file() \
            else pd.DataFrame(columns=cols)
        df = summary[["image", "combination", "status", "error", "labels"]].merge(
            metrics, on=["image", "combination"], how="left")
        params = df["combination"].map(combos)
        df.insert(0, "target", target)
        df.insert(3, "channels", [subset_label(p["channels"]) for p in params])
        df.insert(4, "n_channels", [len(p["channels"]) if p["channels"] else np.nan for p in params])
        df.insert(5, "method", [p["method"] for p in params])
        df = df.rename(columns={"f1@0.5": "f1"})
        missing = df[df["f1"].isna()]
        for _, r in missing.iterrows():
            log.warning("%s / %s / %s %s: not scored (%s: %s)", target, r["image"], r["channels"], r["method"],
                        r["status"], r["error"])
        frames.append(df[["target", "image", "combination", "channels", "n_channels", "method", "f1", "status",
                          "error", "labels"]])
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- the study's table
def score_table(scores: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows = channel combinations (power-set order), columns = methods; mean F1 over images.

    A combination not scored on some image (NaN) has a NaN mean: it stays in the table.

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
    table = (df.groupby(["channels", "method"], sort=False)["f1"]
             .agg(lambda s: float(s.mean()) if s.notna().all() else np.nan).unstack("method"))
    return table.reindex(index=order, columns=methods).rename_axis(index="channels", columns=None)


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

    styler = table.style.format("{:.3f}", na_rep="–").background_gradient(cmap="viridis", vmin=0.0, vmax=1.0,
                                                                         axis=None)
    styler = styler.apply(mark, axis=None)
    if caption:
        styler = styler.set_caption(caption)
    return styler


def plot_heatmap(tables: Mapping[str, pd.DataFrame], title: str = "F1 at IoU 0.5"):
    """One annotated heat map per target (rows = channel subsets, columns = methods), best cell outlined.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per table plus one colour bar.
    """
    from matplotlib.patches import Rectangle

    from ..viz import new_figure

    if not tables:
        raise ConfigError("no score table to plot")
    n = len(tables)
    nrows = max(len(t) for t in tables.values())
    fig = new_figure((4.2 * n + 0.8, 0.32 * nrows + 1.6))
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


# ----------------------------------------------------------------------------- examples
def subset_view(run_dir: str | Path, channels: str | Sequence, image: str | None = None) -> dict:
    """One image of a fusion run with its truth and the run's labels of one channel subset.

    Parameters
    ----------
    run_dir : path
        A fusion run folder.
    channels : str or list
        The subset, as named in the tables (``"nuclei_cyto+mito"``) or as a list.
    image : str, optional
        Image id (default: the run's first image).

    Returns
    -------
    dict
        ``name`` (image id), ``image`` (the input :class:`Image`), ``truth`` (labels or None),
        ``channels`` (the subset's name) and ``labels`` ``{method: label image}`` read from
        the run's ``labels/`` (every method the run has for the subset, in run order).

    Raises
    ------
    RunFolderError
        Unknown image, or no finished segmentation of that subset.
    """
    from .. import io
    from ..config import load_config
    from ..run import load_input, plan_items

    run_dir = Path(run_dir)
    name = channels if isinstance(channels, str) else subset_label(channels)
    combos = _fusion_combinations(run_dir)
    summary = _read_csv(run_dir, "summary.csv")
    config = load_config(run_dir / "run.json")
    items = {it.id: it for it in plan_items(config)}
    image = image or str(summary["image"].iloc[0])
    if image not in items:
        raise RunFolderError(f"image {image!r} is not part of the run; images: {sorted(items)}", run_dir)
    rows = summary[(summary["image"].astype(str) == image) & (summary["status"] == "done")
                   & summary["combination"].map(lambda c: c in combos and subset_label(combos[c]["channels"]) == name)]
    if rows.empty:
        raise RunFolderError(f"no finished segmentation of the channel subset {name!r} of {image}", run_dir)
    labels = {combos[r["combination"]]["method"]: io.read_labels(run_dir / r["labels"]) for _, r in rows.iterrows()}
    item = items[image]
    truth = io.read_labels(item.ground_truth) if item.ground_truth else None
    return {"name": image, "image": load_input(config, item.path), "truth": truth, "channels": name,
            "labels": labels}


def subset_explorer(run_dir: str | Path, channels: str | Sequence, method: str | None = None,
                    image: str | None = None, interactive: bool = True):
    """A channel-subset explorer on one image of a fusion run (single-channel vs fused masks).

    :func:`opsef_core.widgets.fusion_explorer` with the run's own fusion parameters (its
    Cellpose model, diameter, thresholds and ``network_channels``): one Cellpose pass per
    channel, then every subset and method the user picks is only decoded
    (:func:`opsef_core.fusion.fuse`).  The explorer's first result is checked against the
    run's label image of the same subset and method.

    Parameters
    ----------
    run_dir : path
        A fusion run folder.
    channels : str or list
        The subset shown first (``"nuclei_cyto+mito"`` as in the tables, or a list).
    method : str, optional
        The method shown first (default: the first the run has for the subset).
    image : str, optional
        Image id (default: the run's first image).
    interactive : bool
        Build the widget.

    Returns
    -------
    Explorer
        ``state["matches_run"]``: whether the explorer's decoding equals the run's labels.

    Raises
    ------
    RunFolderError
        Unknown image or subset (see :func:`subset_view`).
    """
    from ..widgets import fusion_explorer

    view = subset_view(run_dir, channels, image=image)
    method = method or next(iter(view["labels"]))
    if method not in view["labels"]:
        raise RunFolderError(f"the run has no {method!r} fusion of {view['channels']}; methods: "
                             f"{list(view['labels'])}", run_dir)
    combos = _fusion_combinations(Path(run_dir))
    params = next(p for p in combos.values()
                  if subset_label(p["channels"]) == view["channels"] and p["method"] == method)
    ex = fusion_explorer(view["image"], params, channels=view["channels"].split("+"), method=method,
                         truth=view["truth"], interactive=interactive)
    ex.state["matches_run"] = bool(np.array_equal(ex.state["labels"], view["labels"][method]))
    if not ex.state["matches_run"]:
        log.warning("%s: the explorer's %s fusion of %s differs from the run's labels", view["name"], method,
                    view["channels"])
    return ex


def plot_examples(view: dict, target: str):
    """Fused labels next to the truth on the field's first channel, via :func:`opsef_core.viz.montage`.

    Parameters
    ----------
    view : dict
        From :func:`subset_view`.
    target : str
        Named in the titles.
    """
    from ..viz import montage

    img = view["image"]
    plane = np.asarray(img.sel(c=0).data if "C" in img.axes else img.data)
    panels = {} if view.get("truth") is None else {"truth": view["truth"]}
    panels.update({f"{m} ({view['channels']})": lab for m, lab in view["labels"].items()})
    return montage({f"{view['name']} ({target})": (plane, panels)}, panel_size=3.0,
                   suptitle=f"{target}: fused segmentations vs truth")
