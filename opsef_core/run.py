"""Plan and execute a run: every image × every (pipeline, segmenter setting) combination.

:func:`plan` expands a :class:`~opsef_core.config.RunConfig` into
:class:`Combination` objects (pipelines × segmenter settings, sweeps expanded
as Cartesian products).  :func:`execute` creates a new run folder and processes
the images one *item* (one image with all its combinations) at a time:

1. read the image, select time point / channel / z range;
2. apply each pipeline **once** and re-use the result for every segmenter;
3. group the settings by :meth:`Segmenter.network_key`: one network pass per
   (image, pipeline, key), one decoding per setting (sweeps re-use the pass);
4. write raw labels, filtered labels (when post-processing is configured),
   overlays, the montage, ROI zips, per-item measurements and metrics
   (overlays, ROIs, measurements and metrics use the filtered labels when
   post-processing is configured; the montage always shows the raw labels);
5. write the item's done-marker ``items/<id>.json`` **last**.

At the end the per-item results are gathered into ``summary.csv``,
``measurements.csv``, ``metrics.csv``, ``ranking.csv`` and ``ranking.png``,
and ``run.json`` (:mod:`opsef_core.record`) is completed.  Resuming a run
(``resume=RUN_FOLDER``) skips every item with a valid done-marker (failed items
are retried).

:func:`run_item` is a pure function of (config, item, combinations, run
folder) returning a JSON-serialisable dict, so items can be distributed (e.g.
with ``dask.distributed``): :func:`_map_items` runs them serially, or on a
local dask cluster / a remote scheduler (``workers`` > 1 or ``scheduler``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .config import RunConfig, expand_sweep, load_config, segmenter_defaults
from .errors import AxesError, ConfigError, InputFileError, OpsefError, RunFolderError, SegmentationError

__all__ = [
    "Combination",
    "Item",
    "plan",
    "plan_items",
    "plan_table",
    "execute",
    "run_item",
    "create_run_folder",
]

logger = logging.getLogger(__name__)

ITEMS_DIR = "items"
RANK_GROUP = ("pipeline", "segmenter", "setting", "combination")
_SAFE = re.compile(r"[^A-Za-z0-9.+-]+")


# ---------------------------------------------------------------------- plan
def slug(text: Any) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``.``, ``+``, ``-``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        number = f"{text:g}" if isinstance(text, float) else str(text)
        return ("-" if number.startswith("-") else "") + slug(number.lstrip("-"))  # keep the sign: -1 != 1
    if isinstance(text, (list, tuple)):
        return "x".join(slug(t) for t in text) or "x"
    return _SAFE.sub("-", str(text)).strip("-") or "x"


def _short_names(keys: list[str]) -> dict[str, str]:
    """Short names for swept parameters: the first word unless two keys share it."""
    first = {k: k.split("_")[0] or k for k in keys}
    counts = {v: list(first.values()).count(v) for v in first.values()}
    return {k: (first[k] if counts[first[k]] == 1 else k.replace("_", "")) for k in keys}


@dataclass(frozen=True)
class Combination:
    """One (pipeline, segmenter setting) pair of a run.

    Attributes
    ----------
    id : str
        Stable, file-name-safe id, e.g. ``p1-median__s2-classical_h2``.
    pipeline : str
        Pipeline name; ``pipeline_index`` is its 1-based position.
    pipeline_spec : dict
        The pipeline as in the config (``{"name", "steps"}``).
    setting_id : str
        The segmenter-setting part of the id (``s2-classical_h2``), the montage column.
    segmenter, backend : str
        The segmenter entry's name and its backend.
    params : dict
        Validated backend parameters (defaults filled in, JSON types).
    sweep : dict
        The swept values of this setting (empty without a sweep).
    network_key : str
        Settings with the same key share one network pass per image and pipeline.
    """

    id: str
    pipeline_index: int
    pipeline: str
    pipeline_spec: dict
    setting_index: int
    setting_id: str
    segmenter: str
    backend: str
    params: dict
    sweep: dict
    network_key: str

    @property
    def title(self) -> str:
        """Human-readable setting: segmenter name and swept values."""
        vals = ", ".join(f"{k}={v}" for k, v in self.sweep.items())
        return f"{self.segmenter}" + (f" ({vals})" if vals else "")

    def as_dict(self) -> dict:
        """JSON-serialisable description (recorded in run.json)."""
        return asdict(self)


def plan(config: RunConfig) -> list[Combination]:
    """Expand a config into its combinations: pipelines × segmenter settings.

    Parameters
    ----------
    config : RunConfig
        A validated config.

    Returns
    -------
    list of Combination
        Pipelines in config order, then settings in config order (sweeps
        expanded as Cartesian products in key order).

    Raises
    ------
    ConfigError
        When a backend or a parameter is unknown.
    """
    from .segment import get_segmenter

    settings = []
    index = 0
    for s in config.segmenters:
        seg = get_segmenter(s.backend)
        short = _short_names(list(s.sweep))
        for values in expand_sweep(s.sweep):
            index += 1
            params = seg.params({**segmenter_defaults(config, seg), **s.params, **values}).model_dump(mode="json")
            suffix = "".join(f"_{short[k]}{slug(v)}" for k, v in values.items())
            setting_id = f"s{index}-{slug(s.name)}{suffix}"
            settings.append((index, setting_id, s, params, values, seg.network_key(params)))
    combos = []
    for pi, p in enumerate(config.pipelines, start=1):
        pid = f"p{pi}-{slug(p.name)}"
        for index, setting_id, s, params, values, key in settings:
            combos.append(Combination(
                id=f"{pid}__{setting_id}", pipeline_index=pi, pipeline=p.name,
                pipeline_spec=p.model_dump(mode="json"), setting_index=index, setting_id=setting_id,
                segmenter=s.name, backend=s.backend, params=params, sweep=dict(values), network_key=key))
    return combos


@dataclass(frozen=True)
class Item:
    """One input image: the unit of work, resumption and distribution.

    Attributes
    ----------
    id : str
        File-name-safe image name (unique within the run).
    path : str
        Absolute path of the image file.
    ground_truth : str, optional
        Absolute path of its ground-truth label image (None: none found/configured).
    """

    id: str
    path: str
    ground_truth: str | None = None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _find_ground_truth(gt_dir: Path, image_path: Path, suffix: str) -> Path | None:
    stem = _stem(image_path)
    candidates = [gt_dir / image_path.name] if not suffix else []
    candidates += [gt_dir / f"{stem}{suffix}{ext}" for ext in (".tif", ".tiff", ".ome.tif", ".png")]
    return next((c for c in candidates if c.is_file()), None)


def plan_items(config: RunConfig) -> list[Item]:
    """The images a config reads, with their ground truth.

    Raises
    ------
    InputFileError
        When ``inputs.path`` does not exist.
    EmptyFolderError
        When a folder has no file matching the patterns.
    ConfigError
        When the ground-truth folder does not exist.
    """
    from . import io

    src = config.resolve(config.inputs.path)
    if not src.exists():
        raise InputFileError("input path does not exist (inputs.path in the config)", src)
    if src.is_dir():
        files = io.discover(src, include=tuple(config.inputs.include), exclude=tuple(config.inputs.exclude))
    else:
        files = [src]
    if config.inputs.limit:
        files = files[: config.inputs.limit]
    gt_dir = config.resolve(config.inputs.ground_truth)
    if gt_dir is not None and not gt_dir.is_dir():
        raise ConfigError("ground-truth folder does not exist (inputs.ground_truth)", gt_dir)
    items, seen = [], set()
    for f in files:
        base = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9._+-]+", "-", _stem(Path(f)))).strip("-_") or "image"
        iid, n = base, 2
        while iid in seen:
            iid, n = f"{base}-{n}", n + 1
        seen.add(iid)
        gt = _find_ground_truth(gt_dir, Path(f), config.inputs.label_suffix) if gt_dir else None
        if gt_dir is not None and gt is None:
            logger.warning("no ground truth for %s in %s", f, gt_dir)
        items.append(Item(id=iid, path=str(Path(f).resolve()), ground_truth=str(gt) if gt else None))
    return items


def plan_table(config: RunConfig) -> str:
    """The text ``opsef plan`` prints: images, combinations and their product."""
    combos = plan(config)
    try:
        items = plan_items(config)
        n_img = str(len(items))
    except OpsefError as exc:
        items, n_img = [], f"? ({exc})"
    lines = [f"config: {config.source or '(in memory)'}",
             f"inputs: {config.resolve(config.inputs.path)}"]
    w = max(len(c.id) for c in combos)
    wp = max(len("pipeline"), *(len(c.pipeline) for c in combos))
    wb = max(len("backend"), *(len(c.backend) for c in combos))
    lines.append(f"{'#':>3}  {'combination':<{w}}  {'pipeline':<{wp}}  {'backend':<{wb}}  swept parameters")
    for i, c in enumerate(combos, start=1):
        sweep = ", ".join(f"{k}={v}" for k, v in c.sweep.items()) or "-"
        lines.append(f"{i:>3}  {c.id:<{w}}  {c.pipeline:<{wp}}  {c.backend:<{wb}}  {sweep}")
    n_keys = len({(c.pipeline, c.network_key) for c in combos})
    lines.append(f"{len(config.pipelines)} pipelines x {len(combos) // len(config.pipelines)} segmenter "
                 f"settings = {len(combos)} combinations ({n_keys} network passes per image)")
    total = len(items) * len(combos) if items else "?"
    lines.append(f"{n_img} images x {len(combos)} combinations = {total} items")
    return "\n".join(lines)


# ---------------------------------------------------------------------- run folder
def create_run_folder(out: str | Path, stem: str, now: datetime | None = None) -> Path:
    """Create a new run folder ``<out>/<stem>-YYYYmmdd-HHMMSS[-n]``, never re-using one.

    The folder is created with :func:`os.mkdir` (which fails if it exists);
    on a collision a suffix ``-2``, ``-3``, ... is added.

    Raises
    ------
    RunFolderError
        When the parent folder cannot be created or written.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the output folder ({exc.strerror})", out) from None
    base = f"{slug(stem)}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10000):
        path = out / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder ({exc.strerror})", path) from None
    raise RunFolderError("too many run folders with the same name", out)


# ---------------------------------------------------------------------- one item
def _exec_params(params: dict, base_dir: Path) -> dict:
    """Parameters with relative paths (e.g. a model folder) resolved against the config's folder."""
    out = {}
    for k, v in params.items():
        if isinstance(v, str) and ("/" in v or v.startswith(".")) and not Path(v).is_absolute():
            cand = (base_dir / v)
            if cand.exists():
                v = str(cand.resolve())
        out[k] = v
    return out


def load_input(config: RunConfig, path: str | Path):
    """Read an input image and apply the config's selection (time point, channel, z range, overrides).

    Returns
    -------
    Image
        In memory, without a T axis; without a C axis when a channel is
        selected or the image has one channel.
    """
    from . import io

    inp = config.inputs
    img = io.read_image(path, scene=inp.scene, axes=inp.axes)
    if inp.pixel_size:
        ps = {**img.pixel_size, **{a: v for a, v in inp.pixel_size.items() if a in img.spatial_axes}}
        img = replace(img, pixel_size=ps, calibrated=True)
    if "T" in img.axes:
        img = img.sel(t=inp.time_point)
    elif inp.time_point not in (0, -1):
        raise AxesError(f"time_point={inp.time_point} requested but the image has no T axis", path)
    if inp.channel is not None:
        img = img.sel(c=inp.channel)
    elif "C" in img.axes and img.n_channels == 1:
        img = img.sel(c=0)
    if inp.z_range is not None:
        if "Z" not in img.axes:
            raise AxesError(f"z_range={list(inp.z_range)} requested but the image has no Z axis", path)
        img = img.sel(z=slice(*inp.z_range))
    return img.compute()


def _display_plane(image) -> np.ndarray:
    """The spatial array shown in overlays: channel 0 of multichannel images."""
    return np.asarray(image.sel(c=0).data if "C" in image.axes else image.data)


def _err(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, OpsefError) else f"{type(exc).__name__}: {exc}"


def _metric_row(gt: np.ndarray, labels: np.ndarray, thresholds: list[float]) -> dict:
    """Metrics of one prediction (:func:`opsef_core.evaluate.image_metrics`: ``f1@0.5``, ..., ``aji``)."""
    from . import evaluate

    return evaluate.image_metrics(gt, labels, thresholds)


def _postprocess(config: RunConfig, labels: np.ndarray, image) -> tuple[np.ndarray, Any]:
    """Apply the configured post-processing; returns (filtered labels, table of kept objects)."""
    from . import postprocess

    cfg = postprocess.PostprocessConfig.model_validate(config.postprocess)
    filtered, table = postprocess.apply_postprocess(labels, image, cfg)
    return np.asarray(filtered), table


def run_item(config: RunConfig, item: Item, combinations: list[Combination], run_dir: str | Path) -> dict:
    """Process one image with every combination and write its outputs.

    A pure function of its arguments (plus the files it reads): it writes
    only below ``run_dir`` and returns its results, so it can run in another
    process or on a dask worker.  Errors are caught: a failing image or
    combination is reported in the result, never raised.

    Parameters
    ----------
    config : RunConfig
    item : Item
    combinations : list of Combination
        From :func:`plan`.
    run_dir : str or Path
        The run folder (``labels/``, ``overlays/``, ... are created as needed).

    Returns
    -------
    dict
        ``id``, ``image``, ``path``, ``status`` (``done``, ``partial`` or
        ``failed``), ``error``, ``summary`` (one row per combination),
        ``metrics`` (one row per combination when ground truth exists),
        ``measurements`` (relative path of the item's table or None),
        ``counts`` (pipelines applied, network passes, decodings).
    """
    from . import io
    from .record import atomic_write_json

    run_dir = Path(run_dir)
    out = config.outputs
    result: dict[str, Any] = {"id": item.id, "image": item.id, "path": item.path, "status": "done",
                              "error": None, "summary": [], "metrics": [], "measurements": None,
                              "counts": {"preprocess": 0, "network": 0, "decode": 0}}

    def base_row(c: Combination) -> dict:
        return {"image": item.id, "combination": c.id, "pipeline": c.pipeline, "segmenter": c.segmenter,
                "backend": c.backend, "setting": c.setting_id,
                "params": json.dumps(c.params, sort_keys=True, separators=(",", ":")),
                **{f"param_{k}": v for k, v in c.sweep.items()},
                "status": "failed", "error": None, "n_objects": None, "n_objects_filtered": None,
                "t_preprocess_s": None, "t_network_s": None, "t_decode_s": None, "network_reused": None,
                "labels": None}

    rows = {c.id: base_row(c) for c in combinations}
    try:
        image = load_input(config, item.path)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        if not isinstance(exc, OpsefError):
            logger.error("reading %s failed:\n%s", item.path, traceback.format_exc())
        msg = _err(exc)
        logger.warning("skipping %s: %s", item.path, msg)
        for r in rows.values():
            r["error"] = msg
        result.update(status="failed", error=msg, summary=list(rows.values()))
        return _finish_item(run_dir, result, atomic_write_json)

    gt = None
    if item.ground_truth:
        try:
            gt = np.asarray(io.read_labels(item.ground_truth))
            z_range = config.inputs.z_range
            if z_range is not None and gt.ndim == 3 and "Z" in image.axes and gt.shape[0] > image.size("Z"):
                gt = gt[slice(*z_range)]  # the same sub-stack as the image
        except OpsefError as exc:
            logger.warning("ground truth unusable: %s", exc)
            result["error"] = f"ground truth: {exc}"

    from .preprocess import Pipeline
    from .segment import get_segmenter
    from .segment.base import check_input

    measurements = []
    montage_rows: dict[str, tuple[np.ndarray, dict]] = {}
    by_pipeline: dict[int, list[Combination]] = {}
    for c in combinations:
        by_pipeline.setdefault(c.pipeline_index, []).append(c)

    for pi, combos in by_pipeline.items():
        t0 = time.perf_counter()
        try:
            pre = Pipeline.from_dict(combos[0].pipeline_spec).apply(image)
            result["counts"]["preprocess"] += 1
        except Exception as exc:  # noqa: BLE001
            msg = f"preprocessing {combos[0].pipeline!r}: {_err(exc)}"
            logger.warning("%s: %s", item.id, msg)
            for c in combos:
                rows[c.id]["error"] = msg
            montage_rows[combos[0].pipeline] = (_display_plane(image), {c.setting_id: None for c in combos})
            continue
        t_pre = time.perf_counter() - t0
        if out.save_preprocessed:
            io.write_ome_tiff(run_dir / "preprocessed" / f"{item.id}__p{pi}-{slug(combos[0].pipeline)}.ome.tif",
                              pre)
        display = _display_plane(pre)
        panels: dict[str, np.ndarray | None] = {}
        groups: dict[str, list[Combination]] = {}
        for c in combos:
            groups.setdefault(c.network_key, []).append(c)
        tiling = config.execution.tiling
        try:
            tiled = tiling is not None and _needs_tiles(pre, tiling.tile_shape)
        except ConfigError as exc:  # a tile shape that does not fit this image: its combinations fail
            for c in combos:
                rows[c.id]["error"] = _err(exc)
                panels[c.setting_id] = None
            montage_rows[combos[0].pipeline] = (display, panels)
            continue
        for key, group in groups.items():
            if tiled:
                def labels_of(c, gi):
                    return _segment_tiled(config, item, c, pre, rows[c.id], t_pre, result)
            else:
                seg = get_segmenter(group[0].backend)
                p0 = seg.params(_exec_params(group[0].params, config.base_dir))
                t1 = time.perf_counter()
                try:
                    check_input(pre, seg.name)
                    pred = seg.predict(pre, p0)
                    result["counts"]["network"] += 1
                except Exception as exc:  # noqa: BLE001
                    msg = f"{group[0].backend} network pass: {_err(exc)}"
                    logger.warning("%s / %s: %s", item.id, combos[0].pipeline, msg)
                    for c in group:
                        rows[c.id]["error"] = msg
                        panels[c.setting_id] = None
                    continue
                t_net = time.perf_counter() - t1

                def labels_of(c, gi, seg=seg, pred=pred, t_net=t_net):
                    row = rows[c.id]
                    row.update(t_preprocess_s=round(t_pre, 4), t_network_s=round(t_net, 4), network_reused=gi > 0)
                    t2 = time.perf_counter()
                    labels = np.asarray(seg.decode(pred, pre, seg.params(_exec_params(c.params, config.base_dir))))
                    result["counts"]["decode"] += 1
                    row["t_decode_s"] = round(time.perf_counter() - t2, 4)
                    return labels

            for gi, c in enumerate(group):
                try:
                    labels = labels_of(c, gi)
                    _write_outputs(config, run_dir, item, c, image, pre, display, labels, gt, rows[c.id],
                                   measurements, result)
                    panels[c.setting_id] = labels
                    rows[c.id]["status"] = "done"
                except Exception as exc:  # noqa: BLE001
                    if not isinstance(exc, OpsefError):
                        logger.error("%s / %s failed:\n%s", item.id, c.id, traceback.format_exc())
                    rows[c.id]["error"] = _err(exc)
                    panels[c.setting_id] = None
        montage_rows[combos[0].pipeline] = (display, panels)

    if out.montage and montage_rows:
        try:
            from .viz import montage

            titles = {c.setting_id: c.title for c in combinations}
            fig = montage(montage_rows, titles=titles, path=run_dir / "montage" / f"{item.id}.png",
                          suptitle=item.id)
            fig.clear()
        except Exception as exc:  # noqa: BLE001
            logger.error("montage of %s failed: %s", item.id, _err(exc))
            result["error"] = f"montage: {_err(exc)}"
    if measurements:
        import pandas as pd

        rel = f"{ITEMS_DIR}/{item.id}.measurements.csv"
        io.write_table(run_dir / rel, pd.concat(measurements, ignore_index=True))
        result["measurements"] = rel
    result["summary"] = list(rows.values())
    n_failed = sum(r["status"] != "done" for r in rows.values())
    result["status"] = "done" if n_failed == 0 else ("failed" if n_failed == len(rows) else "partial")
    return _finish_item(run_dir, result, atomic_write_json)


def _needs_tiles(image, tile_shape) -> bool:
    """Whether an image's spatial extent exceeds one tile along some axis."""
    spatial = [image.size(a) for a in image.spatial_axes]
    tiles = [tile_shape] * len(spatial) if isinstance(tile_shape, int) else list(tile_shape)
    if len(tiles) != len(spatial):
        raise ConfigError(f"execution.tiling.tile_shape {tile_shape} needs one value per spatial axis "
                          f"({image.spatial_axes})", image.source)
    return any(s > t for s, t in zip(spatial, tiles))


def _segment_tiled(config, item, c, pre, row, t_pre, result):
    """One combination segmented tile by tile; fills the summary row and returns the labels.

    Raises
    ------
    SegmentationError
        The tiled segmentation failed (the cause is logged when it is not an opsef error).
    """
    from .tiled import segment_tiled_image

    tiling = config.execution.tiling
    t0 = time.perf_counter()
    try:
        labels, info = segment_tiled_image(pre, c.backend, _exec_params(c.params, config.base_dir),
                                           tile_shape=tiling.tile_shape, overlap=tiling.overlap,
                                           progress=False, return_info=True)
    except Exception as exc:  # noqa: BLE001
        if not isinstance(exc, OpsefError):
            logger.error("%s / %s tiled segmentation failed:\n%s", item.id, c.id, traceback.format_exc())
        raise SegmentationError(f"tiled segmentation: {_err(exc)}") from exc
    n = int(info["n_tiles"])
    result["counts"]["network"] += n
    result["counts"]["decode"] += n
    row.update(t_preprocess_s=round(t_pre, 4), t_network_s=round(time.perf_counter() - t0, 4),
               t_decode_s=0.0, network_reused=False, tiles=n, tile_normalization=info["normalization"],
               tile_large_objects=int(info.get("n_large", 0)))
    if info.get("n_large"):
        logger.warning("%s / %s: %d objects reach the tile overlap %s; raise execution.tiling.overlap",
                       item.id, c.id, info["n_large"], tiling.overlap)
    return np.asarray(labels)


def _write_outputs(config, run_dir, item, c, image, pre, display, labels, gt, row, measurements, result):
    """Write everything one combination produces (labels, overlay, ROIs) and collect its tables."""
    from . import io

    out = config.outputs
    if labels.shape != tuple(pre.shape[-labels.ndim:]) or labels.ndim != len(pre.spatial_axes):
        raise ValueError(f"segmenter returned labels of shape {labels.shape} for an image of "
                         f"spatial shape {pre.shape[-len(pre.spatial_axes):]}")
    name = f"{item.id}__{c.id}"
    io.write_labels(run_dir / "labels" / f"{name}.tif", labels, pixel_size=pre.pixel_size,
                    axes=pre.spatial_axes)
    row["labels"] = f"labels/{name}.tif"
    row["n_objects"] = int(len(np.unique(labels[labels > 0])))
    # measure on the selected input (all its channels) when the shapes agree, else on the preprocessed image
    meas_image = image if image.shape[-labels.ndim:] == labels.shape and len(image.spatial_axes) == labels.ndim \
        else pre
    final, table, classes = labels, None, None
    if config.postprocess is not None:
        final, table = _postprocess(config, labels, meas_image)
        io.write_labels(run_dir / "labels_filtered" / f"{name}.tif", final, pixel_size=pre.pixel_size,
                        axes=pre.spatial_axes)
        row["n_objects_filtered"] = int(len(np.unique(final[final > 0])))
        if table is not None and "class" in getattr(table, "columns", ()):
            classes = table[[c for c in ("label", "class", "class_fraction") if c in table.columns]]
            _write_classes(run_dir, name, table)
            _write_class_labels(run_dir, name, final, classes, pre)
            for cls, n in classes["class"].value_counts(sort=False).items():
                row[f"n_class_{cls}"] = int(n)
    if out.overlays:
        _write_png(run_dir / "overlays" / f"{name}.png", _overlay_rgb(display, final))
    if out.rois:
        from .export import write_roi_zip

        write_roi_zip(run_dir / "rois" / f"{name}.zip", final)
    if out.measurements:
        from .measure import measure_objects

        extra = {"image": item.id, "combination": c.id, "pipeline": c.pipeline, "segmenter": c.segmenter,
                 "backend": c.backend, "params": row["params"], **{f"param_{k}": v for k, v in c.sweep.items()}}
        ratios = [tuple(r) for r in out.channel_ratios]
        if table is None:
            measured = measure_objects(final, meas_image, extra=extra, channel_ratios=ratios)
        else:  # post-processing measured the kept objects on the same image already
            from .measure import add_channel_ratios, add_constant_columns

            kept = table.drop(columns=[c for c in ("class", "class_fraction") if c in table.columns])
            measured = add_constant_columns(add_channel_ratios(kept.reset_index(drop=True), ratios,
                                                               source=meas_image.source), extra)
        if classes is not None:
            measured = measured.merge(classes, on="label", how="left")
        measurements.append(measured)
    if gt is not None:
        if gt.shape != labels.shape:
            row["error"] = f"not evaluated: ground truth {item.ground_truth} has shape {gt.shape}, labels {labels.shape}"
            logger.warning("%s / %s: %s", item.id, c.id, row["error"])
        else:
            mrow = {"image": item.id, "combination": c.id, "pipeline": c.pipeline, "segmenter": c.segmenter,
                    "backend": c.backend, "setting": c.setting_id, "params": row["params"],
                    **{f"param_{k}": v for k, v in c.sweep.items()}}
            mrow.update(_metric_row(gt, final, config.evaluation.thresholds))
            result["metrics"].append(mrow)


#: the deep-learning library that runs each backend's network (for the device record)
_FRAMEWORK = {"cellpose": "torch", "unet": "torch", "stardist": "tensorflow"}


def _device_entry(backend: str, params: Any) -> dict:
    """``device_requested`` and the ``device`` it resolves to here, for backends that have one.

    With a remote scheduler the workers may see other devices than this machine: then the
    resolution fails here (``cuda`` asked, no GPU seen) and ``device`` is recorded as None.
    """
    requested = getattr(params, "device", None)
    if requested is None or backend not in _FRAMEWORK:
        return {}
    from .segment.device import resolve_device

    try:
        used = resolve_device(requested, _FRAMEWORK[backend])
    except SegmentationError as exc:
        logger.warning("%s: %s (recording the device as unresolved)", backend, exc)
        used = None
    return {"device_requested": requested, "device": used, "framework": _FRAMEWORK[backend]}


def _write_classes(run_dir: Path, name: str, table: Any) -> None:
    """Object classes from post-processing (``label``, ``class`` columns) as ``classes/<name>.csv``."""
    from . import io

    cols = [c for c in ("label", "class") if c in table.columns]
    io.write_table(run_dir / "classes" / f"{name}.csv", table[cols])


def _write_class_labels(run_dir: Path, name: str, labels: np.ndarray, classes: Any, image: Any) -> None:
    """One label image per class, ``labels_classes/<class>/<name>.tif`` (other classes' objects removed)."""
    from . import io
    from .postprocess import class_labels

    for cls, lab in class_labels(labels, classes).items():
        io.write_labels(run_dir / "labels_classes" / slug(cls) / f"{name}.tif", lab, pixel_size=image.pixel_size,
                        axes=image.spatial_axes)


def _overlay_rgb(display: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from .viz import overlay

    return overlay(display, labels)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import matplotlib.image as mimage

    from .io import atomic_write

    with atomic_write(path, "wb") as fh:
        mimage.imsave(fh, rgb, format="png")


def _finish_item(run_dir: Path, result: dict, write_json: Callable) -> dict:
    """Write the item's done-marker (last, atomically) and return the result."""
    write_json(run_dir / ITEMS_DIR / f"{result['id']}.json", result)
    return result


# ---------------------------------------------------------------------- execution
def _map_items(func: Callable[[Item], dict], items: list[Item], workers: int, scheduler: str | None,
               progress: bool, lost: Callable[[Item, str], dict] | None = None) -> Iterator[dict]:
    """Run ``func`` on every item and yield results as they finish.

    Serially in this process for one worker and no scheduler; otherwise on
    dask (:mod:`opsef_core.distributed`): a local cluster of ``workers``
    processes, or the running scheduler at ``scheduler`` (the run folder and
    inputs must then be on storage all workers share).  Each worker process
    keeps its own segmenter instances, so a model loads once per worker.
    ``func`` catches an image's errors itself; an item whose worker is lost
    becomes ``lost(item, message)`` (a failed result).
    """
    from tqdm.auto import tqdm

    if ((workers or 1) <= 1 or len(items) <= 1) and not scheduler:  # no cluster for one image
        for it in tqdm(items, desc="images", unit="image", disable=not progress):
            yield func(it)
        return
    if not items:
        return
    from .distributed import get_client, iter_items

    with get_client(workers=None if scheduler else min(int(workers), len(items)), scheduler=scheduler) as client:
        for res in iter_items(func, items, client, progress=progress, desc="images"):
            if res.ok:
                yield res.value
            else:
                it = items[res.index]
                logger.error("%s: lost on its dask worker: %s", it.id, res.error)
                if lost is None:
                    raise RunFolderError(f"item {it.id} failed on its dask worker: {res.error}")
                yield lost(it, res.error)


def _file_entry(path: str, role: str):
    from .record import InputFile, sha256

    try:
        return InputFile(path=path, size=os.path.getsize(path), sha256=sha256(path), role=role)
    except OSError:
        return InputFile(path=path, role=role)


def _load_marker(run_dir: Path, item: Item) -> dict | None:
    path = run_dir / ITEMS_DIR / f"{item.id}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if data.get("id") != item.id or data.get("status") not in ("done", "partial"):
        return None
    return data


def execute(
    config: RunConfig | str | Path | None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    command_line: list[str] | None = None,
) -> Path:
    """Run a config and write a new run folder (or finish an interrupted one).

    Parameters
    ----------
    config : RunConfig, path or None
        The config (or a config/run.json file).  May be None with ``resume``
        (the recorded config is used).
    out : str or Path, optional
        Parent of the run folder (default ``runs/`` in the working directory).
    resume : str or Path, optional
        An existing run folder to finish: items with a done-marker are skipped.
    workers, scheduler : optional
        Override ``execution.workers`` / ``execution.scheduler``: with more
        than one worker or a scheduler address, images run on dask (see
        :func:`_map_items`); results are identical to a serial run.
    progress : bool
        Show a progress bar over images.
    command_line : list of str, optional
        Recorded in run.json (default ``sys.argv``).

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    ConfigError, InputFileError, EmptyFolderError, ModelNotFoundError, RunFolderError
        Before any image is processed, for a bad config, input path, model or
        run folder.  Errors of single images are recorded, not raised.
    """
    from .record import ItemStatus, new_record, read_record, utc_now, write_record

    if isinstance(config, (str, Path)):
        config = load_config(config)
    record = None
    if resume is not None:
        run_dir = Path(resume)
        record = read_record(run_dir)
        recorded = load_config(run_dir / "run.json")
        if config is not None and config.model_dump(mode="json") != recorded.model_dump(mode="json"):
            raise RunFolderError("the config differs from the one recorded in run.json; "
                                 "resume without a config or start a new run", run_dir)
        config = recorded
    if config is None:
        raise ConfigError("no config given (pass a config, or resume=RUN_FOLDER)")
    workers = workers or config.execution.workers
    scheduler = scheduler or config.execution.scheduler

    combos = plan(config)
    items = plan_items(config)
    models = []
    from .segment import get_segmenter

    seen_models = set()
    for c in combos:
        if (c.segmenter, c.network_key) in seen_models:
            continue
        seen_models.add((c.segmenter, c.network_key))
        seg = get_segmenter(c.backend)
        p = seg.params(_exec_params(c.params, config.base_dir))
        desc = seg.describe_model(p)
        models.append({"segmenter": c.segmenter, "setting": c.setting_id, **desc, **_device_entry(c.backend, p)})

    if record is None:
        run_dir = create_run_folder(out if out is not None else Path.cwd() / "runs", config.stem)
        inputs = [_file_entry(it.path, "input") for it in items]
        inputs += [_file_entry(it.ground_truth, "ground_truth") for it in items if it.ground_truth]
        record = new_record(config, run_dir, [c.as_dict() for c in combos], models, inputs,
                            command_line=command_line, execution={"workers": workers, "scheduler": scheduler})
        record.items = [ItemStatus(id=it.id, image=it.id, path=it.path, n_combinations=len(combos))
                        for it in items]
    else:
        record.status = "running"
        record.finished = None
        record.resumed.append(utc_now())
    write_record(record, run_dir)
    logger.info("run folder %s: %d images x %d combinations", run_dir, len(items), len(combos))

    results: dict[str, dict] = {}
    todo = []
    for it in items:
        marker = _load_marker(run_dir, it) if resume is not None else None
        if marker is not None:
            results[it.id] = marker
            st = record.item(it.id)
            if st is not None:
                st.resumed = True
        else:
            todo.append(it)
    if resume is not None:
        logger.info("resuming %s: %d of %d items already done", run_dir, len(items) - len(todo), len(items))

    def _one(it: Item) -> dict:
        return run_item(config, it, combos, run_dir)

    def _lost(it: Item, msg: str) -> dict:
        rows = [{"image": it.id, "combination": c.id, "pipeline": c.pipeline, "segmenter": c.segmenter,
                 "backend": c.backend, "setting": c.setting_id, "status": "failed", "error": msg}
                for c in combos]
        return {"id": it.id, "image": it.id, "path": it.path, "status": "failed", "error": msg,
                "summary": rows, "metrics": [], "measurements": None,
                "counts": {"preprocess": 0, "network": 0, "decode": 0}}

    try:
        for res in _map_items(_one, todo, workers, scheduler, progress, lost=_lost):
            results[res["id"]] = res
            st = record.item(res["id"])
            if st is None:
                st = ItemStatus(id=res["id"], image=res["image"], path=res["path"], n_combinations=len(combos))
                record.items.append(st)
            st.status = res["status"]
            st.error = res["error"]
            st.n_failed = sum(r["status"] != "done" for r in res["summary"])
            write_record(record, run_dir)
    except BaseException as exc:
        record.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        record.finished = utc_now()
        write_record(record, run_dir)
        raise

    ordered = [results[it.id] for it in items if it.id in results]
    _write_tables(config, run_dir, ordered, progress)
    record.finished = utc_now()
    record.status = "completed" if all(r["status"] == "done" for r in ordered) else "completed_with_errors"
    write_record(record, run_dir)
    n_bad = sum(r["status"] != "done" for r in ordered)
    if n_bad:
        logger.warning("%d of %d images had failures; see summary.csv", n_bad, len(ordered))
    return run_dir


def _write_tables(config: RunConfig, run_dir: Path, results: list[dict], progress: bool) -> None:
    """Gather per-item results into summary.csv, measurements.csv, metrics.csv and the ranking."""
    import pandas as pd

    from . import io

    summary = pd.DataFrame([r for res in results for r in res["summary"]])
    io.write_table(run_dir / "summary.csv", summary)
    if config.outputs.measurements:
        parts = [pd.read_csv(run_dir / res["measurements"]) for res in results if res.get("measurements")]
        if parts:
            io.write_table(run_dir / "measurements.csv", pd.concat(parts, ignore_index=True))
    metrics = [m for res in results for m in res.get("metrics", [])]
    if metrics:
        from . import evaluate

        mdf = pd.DataFrame(metrics)
        io.write_table(run_dir / "metrics.csv", mdf)
        ranking = evaluate.rank(mdf, by=config.evaluation.rank_by, group=RANK_GROUP)
        io.write_table(run_dir / "ranking.csv", ranking)
        try:
            fig = evaluate.plot_ranking(ranking, path=run_dir / "ranking.png")
            fig.clear()
        except Exception as exc:  # noqa: BLE001 - a plot must not lose the run's tables
            logger.error("ranking plot failed: %s", _err(exc))
