"""One run item: read it, preprocess once per pipeline, segment every setting, write the outputs.

:func:`run_item` is a pure function of (config, item, combinations, run folder) returning a
JSON-serialisable dict, so items can run in other processes or on dask workers.

Geometry: a pipeline may change the grid (rescale, bin, z projection).  Each combination's
labels are made at that *working* resolution; :func:`to_input_grid` maps them back to the
input's grid (nearest neighbour, exact shape) and everything downstream — post-processing,
measurement in physical units, scoring, overlays, ROIs, ``labels/`` — uses the input-grid
labels.  The working-resolution labels are kept in ``labels_working/`` when they differ.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import AxesError, ConfigError, OpsefError, SegmentationError
from .folder import ITEMS_DIR
from .plan import Combination, Item, slug

__all__ = ["CombinationResult", "load_input", "run_item", "streams", "to_input_grid"]

logger = logging.getLogger(__name__)


#: why a ``slices=true`` combination of a tiled config fails (in memory and streamed alike)
SLICES_NOT_TILED = "slices=true with execution.tiling is not supported: segment the planes whole"


def seam_error(info: dict, overlap) -> str | None:
    """The error of a tiled combination whose objects reach the overlap (seams may cut them), or
    None; ``info`` is :func:`opsef_core.tiling.segment_tiled_image`'s."""
    n_big = int(info.get("n_large", 0)) + int(info.get("n_cut_candidates", 0))
    if not n_big:
        return None
    return (f"{n_big} objects reach the tile overlap {overlap}, so seams may cut them; raise "
            "execution.tiling.overlap above the largest object")


def _err(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, OpsefError) else f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- reading
def load_input(config: RunConfig, item: Item | str | Path, *, lazy: bool = False):
    """Read one run item and apply the config's selection (channel, z range, overrides).

    Parameters
    ----------
    config : RunConfig
    item : Item, or a path (its first series, first time point)
    lazy : bool
        Keep the pixels lazy (dask over the file; read region by region by a streamed run).

    Returns
    -------
    Image
        In memory (unless ``lazy``), without a T axis; without a C axis when a channel is selected or the
        image has one channel.  ``metadata["t"]`` holds the time point, and
        ``metadata["time_s"]`` its time in seconds when the file records the interval.
    """
    from .. import io

    if not isinstance(item, Item):
        item = Item(id=str(item), path=str(item))
    inp = config.inputs
    img = io.read_image(item.path, scene=item.scene, axes=inp.axes, lazy=True, tile=item.tile)
    if inp.pixel_size:
        ps = {**img.pixel_size, **{a: v for a, v in inp.pixel_size.items() if a in img.spatial_axes}}
        img = replace(img, pixel_size=ps, calibrated=True)
    meta = dict(img.metadata or {})
    if "T" in img.axes:
        t = 0 if item.t is None else item.t
        if img.time_interval:
            meta["time_s"] = float(t * img.time_interval)
        img = img.sel(t=t)
        meta["t"] = t
    elif item.t not in (None, 0, -1):
        raise AxesError(f"time point {item.t} requested but the image has no T axis", item.path)
    if inp.channel is not None:
        img = img.sel(c=inp.channel)
    elif "C" in img.axes and img.n_channels == 1:
        img = img.sel(c=0)
    if inp.z_range is not None:
        if "Z" not in img.axes:
            raise AxesError(f"z_range={list(inp.z_range)} requested but the image has no Z axis", item.path)
        img = img.sel(z=slice(*inp.z_range))
    if inp.crop:
        img = _crop(img, inp.crop, item.path)
    img = replace(img, metadata=meta)
    return img if lazy else _in_memory(img)


def _in_memory(image):
    """A lazily read item's selected pixels, read here, in this process (on a dask worker the
    default scheduler would be the cluster's, which cannot ship the open file)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        return image.compute()


def _window(shape: dict, crop: dict, source) -> dict:
    """Slices of ``inputs.crop`` per axis, checked against the axes' sizes."""
    out = {}
    for axis, (a, b) in crop.items():
        if axis not in shape:
            raise AxesError(f"inputs.crop names axis {axis}, which the image lacks", source)
        if b > shape[axis]:
            raise AxesError(f"inputs.crop {axis} [{a}, {b}] exceeds the image's {shape[axis]} pixels", source)
        out[axis] = slice(a, b)
    return out


def _crop(image, crop: dict, source):
    """The ``inputs.crop`` window of an image (pixel sizes unchanged)."""
    window = _window(image.sizes, crop, source)
    index = tuple(window.get(a, slice(None)) for a in image.axes)
    return image.with_data(image.data[index])


def crop_labels(labels: np.ndarray, axes: str, crop: dict | None, source) -> np.ndarray:
    """The same ``inputs.crop`` window of a label image with spatial ``axes``."""
    if not crop:
        return labels
    window = _window(dict(zip(axes, labels.shape)), crop, source)
    return labels[tuple(window.get(a, slice(None)) for a in axes)]


def _reraise_write_failure(exc: BaseException) -> None:
    """Re-raise an error that makes the run folder unwritable (disk full, ...): the run must stop
    (and be resumed), not record every later combination as failed one by one."""
    from .integrity import is_write_failure

    if is_write_failure(exc):
        raise exc


def _display_plane(image) -> np.ndarray:
    """The spatial array shown in overlays: channel 0 of multichannel images."""
    return np.asarray(image.sel(c=0).data if "C" in image.axes else image.data)


def _spatial_shape(image) -> tuple[int, ...]:
    return tuple(image.size(a) for a in image.spatial_axes)


def to_input_grid(labels: np.ndarray, working, image) -> tuple[np.ndarray, bool]:
    """Labels made on a pipeline's output mapped back to the input's grid.

    Parameters
    ----------
    labels : ndarray
        Labels on the working grid (the spatial grid of ``working``).
    working : Image
        The pipeline's output.
    image : Image
        The input item.

    Returns
    -------
    labels : ndarray
        On the input's spatial grid restricted to the axes the pipeline kept (a z projection
        keeps YX), by nearest neighbour, exact shape.
    changed : bool
        Whether the grid differed (False: ``labels`` is returned as is).
    """
    from ..reshape import rescale_labels

    kept = [a for a in image.spatial_axes if a in working.spatial_axes]
    target = tuple(image.size(a) for a in kept)
    if len(target) != labels.ndim:
        raise AxesError(f"cannot map labels of axes {working.spatial_axes} to the input's axes "
                        f"{image.spatial_axes}", image.source)
    if tuple(labels.shape) == target:
        return labels, False
    return rescale_labels(labels, target), True


# ---------------------------------------------------------------------- per-combination result
@dataclass
class CombinationResult:
    """What one combination produced for one item: its row of ``summary.csv``.

    ``labels_path`` names the labels on the input grid (scored, measured); ``labels_working_path``
    those on the pipeline's grid when that grid differs.  The arrays themselves are not kept.
    """

    combination: Combination
    item: Item
    status: str = "failed"
    error: str | None = None
    n_objects: int | None = None
    n_objects_filtered: int | None = None
    t_preprocess_s: float | None = None
    t_network_s: float | None = None
    t_decode_s: float | None = None
    network_reused: bool | None = None
    labels_path: str | None = None
    labels_filtered_path: str | None = None
    labels_working_path: str | None = None
    working_shape: str | None = None
    scored: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Output file stem: ``<item>__<combination>``."""
        return f"{self.item.id}__{self.combination.id}"

    def row(self) -> dict:
        """The summary row (JSON types)."""
        c = self.combination
        return {**self.item.columns(), **c.columns(),
                "status": self.status, "error": self.error, "n_objects": self.n_objects,
                "n_objects_filtered": self.n_objects_filtered, "t_preprocess_s": self.t_preprocess_s,
                "t_network_s": self.t_network_s, "t_decode_s": self.t_decode_s,
                "network_reused": self.network_reused, "labels": self.labels_path,
                "labels_filtered": self.labels_filtered_path, "working_shape": self.working_shape,
                "labels_working": self.labels_working_path, "ground_truth": self.item.ground_truth,
                "scored": self.scored, **self.extra}


@dataclass
class _ItemContext:
    """Everything the combinations of one item share."""

    config: RunConfig
    run_dir: Path
    item: Item
    image: Any
    gt: np.ndarray | None
    measurements: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    _gt_planes: np.ndarray | None = None

    def truth_for(self, c: Combination) -> np.ndarray | None:
        """The ground truth a combination is scored against.  A plane-by-plane (``slices``)
        segmentation is scored plane by plane: each truth object's cross-section in each plane
        becomes an object of its own, so matching (pooled over the planes) never compares a
        2D fragment with a whole 3D object."""
        if self.gt is None or not c.slices or self.gt.ndim != 3:
            return self.gt
        if self._gt_planes is None:
            self._gt_planes = _stack_planes(list(self.gt))
        return self._gt_planes
    counts: dict = field(default_factory=lambda: {"preprocess": 0, "network": 0, "decode": 0})


# ---------------------------------------------------------------------- one item
def run_item(config: RunConfig, item: Item, combinations: list[Combination], run_dir: str | Path) -> dict:
    """Process one item with every combination and write its outputs.

    A pure function of its arguments (plus the files it reads): it writes only below
    ``run_dir`` and returns its results, so it can run in another process or on a dask
    worker.  Errors are caught: a failing item or combination is reported in the result,
    never raised.  ``config`` should be :meth:`RunConfig.resolved` (absolute paths).

    Durability: the item's files (each written atomically) reach the disk together, with one
    file-system sync before the done-marker is written and one after it
    (:func:`opsef_core.io.atomic.deferred_sync`), instead of one ``fsync`` per file.

    Returns
    -------
    dict
        ``id``, ``image``, ``path``, ``series``, ``t``, ``status`` (``done``, ``partial`` or
        ``failed``), ``error``, ``summary`` (one row per combination), ``metrics`` (one row per
        scored combination), ``measurements`` (relative path of the item's table or None),
        ``counts`` (pipelines applied, network passes, decodings).
    """
    from ..io.atomic import deferred_sync

    with deferred_sync(run_dir):
        return _run_item(config, item, combinations, Path(run_dir))


def _run_item(config: RunConfig, item: Item, combinations: list[Combination], run_dir: Path) -> dict:
    from .. import io
    from ..io.atomic import sync_deferred
    from ..record import atomic_write_json

    results = {c.id: CombinationResult(c, item) for c in combinations}
    head = {"id": item.id, "image": item.id, "path": item.path, "series": item.series, "t": item.t}

    def finish(status: str, error: str | None, ctx: _ItemContext | None) -> dict:
        res = {**head, "status": status, "error": error, "summary": [r.row() for r in results.values()],
               "metrics": ctx.metrics if ctx else [], "measurements": None,
               "counts": ctx.counts if ctx else {"preprocess": 0, "network": 0, "decode": 0}}
        if ctx is not None and ctx.measurements:
            import pandas as pd

            rel = f"{ITEMS_DIR}/{item.id}.measurements.csv"
            io.write_table(run_dir / rel, pd.concat(ctx.measurements, ignore_index=True))
            res["measurements"] = rel
        sync_deferred()  # the outputs are on disk before the marker that vouches for them
        atomic_write_json(run_dir / ITEMS_DIR / f"{item.id}.json", res)  # the done-marker, last
        return res

    try:
        image = load_input(config, item, lazy=True)
        streamed = streams(config, image)
        if not streamed:
            image = _in_memory(image)  # the file is opened once
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        if not isinstance(exc, OpsefError):
            logger.error("reading %s failed:\n%s", item.path, traceback.format_exc())
        msg = _err(exc)
        logger.warning("skipping %s: %s", item.id, msg)
        for r in results.values():
            r.error = msg
        return finish("failed", msg, None)

    item_error = None
    gt = None
    if item.ground_truth:
        try:
            gt = np.asarray(io.read_labels(item.ground_truth))
            z_range = config.inputs.z_range
            if z_range is not None and gt.ndim == 3 and "Z" in image.axes and gt.shape[0] > image.size("Z"):
                gt = gt[slice(*z_range)]  # the same sub-stack as the image
            gt = crop_labels(gt, "ZYX"[-gt.ndim:], config.inputs.crop, item.ground_truth)
        except OpsefError as exc:
            logger.warning("ground truth unusable: %s", exc)
            item_error = f"ground truth: {exc}"
            for r in results.values():
                r.extra["gt_error"] = item_error
    ctx = _ItemContext(config, run_dir, item, image, gt)

    montage_rows: dict[str, tuple[np.ndarray, dict]] = {}
    by_pipeline: dict[int, list[Combination]] = {}
    for c in combinations:
        by_pipeline.setdefault(c.pipeline_index, []).append(c)
    if streamed:
        import dask

        from .stream import run_pipeline_streamed

        # regions are read here, in this process (a dask worker's default scheduler is the cluster's)
        with dask.config.set(scheduler="synchronous"):
            for combos in by_pipeline.values():
                montage_rows[combos[0].pipeline] = run_pipeline_streamed(ctx, combos, results)
    else:
        for combos in by_pipeline.values():
            montage_rows[combos[0].pipeline] = _run_pipeline(ctx, combos, results)

    montage_rows = {k: v for k, v in montage_rows.items() if v[0] is not None}  # streamed: None without panels
    if config.outputs.montage and montage_rows:
        try:
            from ..viz import montage

            titles = {c.setting_id: c.title for c in combinations}
            fig = montage(montage_rows, titles=titles, path=run_dir / "montage" / f"{item.id}.png",
                          suptitle=item.id)
            fig.clear()
        except Exception as exc:  # noqa: BLE001
            _reraise_write_failure(exc)
            logger.error("montage of %s failed: %s", item.id, _err(exc))
            item_error = f"montage: {_err(exc)}"
    n_failed = sum(r.status != "done" for r in results.values())
    status = "done" if n_failed == 0 else ("failed" if n_failed == len(results) else "partial")
    return finish(status, item_error, ctx)


def _run_pipeline(ctx: _ItemContext, combos: list[Combination], results: dict) -> tuple[np.ndarray, dict]:
    """Apply one pipeline once and run every segmenter setting on it; returns the montage row."""
    from .. import io
    from ..preprocess import Pipeline

    config, item = ctx.config, ctx.item
    panels: dict[str, np.ndarray | None] = {c.setting_id: None for c in combos}
    t0 = time.perf_counter()
    try:
        pre = Pipeline.from_dict(combos[0].pipeline_spec).apply(ctx.image)
        ctx.counts["preprocess"] += 1
    except Exception as exc:  # noqa: BLE001
        _reraise_write_failure(exc)
        msg = f"preprocessing {combos[0].pipeline!r}: {_err(exc)}"
        logger.warning("%s: %s", item.id, msg)
        for c in combos:
            results[c.id].error = msg
        return _display_plane(ctx.image), panels
    t_pre = round(time.perf_counter() - t0, 4)
    if config.outputs.save_preprocessed:
        io.write_ome_tiff(ctx.run_dir / "preprocessed" / f"{item.id}__p{combos[0].pipeline_index}-"
                          f"{slug(combos[0].pipeline)}.ome.tif", pre)
    display = _display_plane(pre)
    tiling = config.execution.tiling
    try:
        tiled = tiling is not None and _needs_tiles(pre, tiling.tile_shape)
    except ConfigError as exc:  # a tile shape that does not fit this image: its combinations fail
        for c in combos:
            results[c.id].error = _err(exc)
        return display, panels
    groups: dict[tuple, list[Combination]] = {}
    for c in combos:
        groups.setdefault((c.network_key, c.slices), []).append(c)
    for group in groups.values():
        for gi, c, labels in _segment_group(ctx, group, pre, tiled, results):
            res = results[c.id]
            res.t_preprocess_s = t_pre
            if gi is not None:
                res.network_reused = gi > 0
            if labels is None:
                continue
            try:
                _write_combination(ctx, res, pre, display, labels)
                panels[c.setting_id] = labels
                res.status = "done"
            except Exception as exc:  # noqa: BLE001
                _reraise_write_failure(exc)
                if not isinstance(exc, OpsefError):
                    logger.error("%s / %s failed:\n%s", item.id, c.id, traceback.format_exc())
                res.error = _err(exc)
    return display, panels


def _segment_group(ctx: _ItemContext, group: list[Combination], pre, tiled: bool, results: dict):
    """Yield ``(index in group, combination, working labels or None)`` for settings sharing a
    network key: one network pass, one decoding per setting (tiled: each setting tile by tile)."""
    from ..segment import get_segmenter
    from ..segment.base import check_input

    item = ctx.item
    if tiled:
        if group[0].slices:
            for c in group:
                results[c.id].error = SLICES_NOT_TILED
                yield None, c, None
            return
        try:
            outcomes = _segment_tiled(ctx, group, pre, results)
        except Exception as exc:  # noqa: BLE001
            _reraise_write_failure(exc)
            for c in group:
                results[c.id].error = _err(exc)
                yield None, c, None
            return
        for gi, (c, labels) in enumerate(zip(group, outcomes)):
            yield gi, c, labels
        return
    seg = get_segmenter(group[0].backend)
    t1 = time.perf_counter()
    try:
        if group[0].slices:
            if "Z" not in pre.axes:
                raise SegmentationError(f"slices=true needs a Z axis; the image has axes {pre.axes}")
            planes = [pre.sel(z=z) for z in range(pre.size("Z"))]
        else:
            planes = [pre]
        preds = []
        for plane in planes:  # one network pass per plane (one for the whole image without slices)
            check_input(plane, seg.name)
            preds.append(seg.predict(plane, seg.params(group[0].params)))
            ctx.counts["network"] += 1
    except Exception as exc:  # noqa: BLE001
        _reraise_write_failure(exc)
        msg = f"{group[0].backend} network pass: {_err(exc)}"
        logger.warning("%s / %s: %s", item.id, group[0].pipeline, msg)
        for c in group:
            results[c.id].error = msg
            yield None, c, None
        return
    t_net = round(time.perf_counter() - t1, 4)
    for gi, c in enumerate(group):
        res = results[c.id]
        res.t_network_s = t_net
        t2 = time.perf_counter()
        try:
            p = seg.params(c.params)
            if group[0].slices:
                labels = _stack_planes([np.asarray(seg.decode(pr, pl, p)) for pr, pl in zip(preds, planes)])
            else:
                labels = np.asarray(seg.decode(preds[0], pre, p))
        except Exception as exc:  # noqa: BLE001
            _reraise_write_failure(exc)
            if not isinstance(exc, OpsefError):
                logger.error("%s / %s decoding failed:\n%s", item.id, c.id, traceback.format_exc())
            res.error = f"decoding: {_err(exc)}"
            yield gi, c, None
            continue
        ctx.counts["decode"] += len(preds)
        res.t_decode_s = round(time.perf_counter() - t2, 4)
        yield gi, c, labels


def _stack_planes(planes: list[np.ndarray]) -> np.ndarray:
    """2D label planes as one ``ZYX`` stack with ids unique over the stack (plane by plane)."""
    out = np.zeros((len(planes), *planes[0].shape), np.int32)
    offset = 0
    for z, lab in enumerate(planes):
        out[z] = np.where(lab > 0, lab.astype(np.int64) + offset, 0)
        offset = max(offset, int(out[z].max()))
    return out


def streams(config: RunConfig, image) -> bool:
    """Whether an item is streamed: read region by region and written as OME-Zarr labels.

    ``outputs.labels_format``: ``"ome-zarr"`` always, ``"tiff"`` never, ``"auto"`` when
    ``execution.tiling`` is set and the item's spatial extent has more than
    ``OutputsConfig.OME_ZARR_MIN_PIXELS`` pixels.
    """
    fmt = config.outputs.labels_format
    if fmt == "tiff" or config.execution.tiling is None:
        return False
    if fmt == "ome-zarr":
        return True
    return int(np.prod(_spatial_shape(image))) > config.outputs.OME_ZARR_MIN_PIXELS


def _needs_tiles(image, tile_shape) -> bool:
    """Whether an image's spatial extent exceeds one tile along some axis."""
    spatial = [image.size(a) for a in image.spatial_axes]
    tiles = [tile_shape] * len(spatial) if isinstance(tile_shape, int) else list(tile_shape)
    if len(tiles) != len(spatial):
        raise ConfigError(f"execution.tiling.tile_shape {tile_shape} needs one value per spatial axis "
                          f"({image.spatial_axes})", image.source)
    return any(s > t for s, t in zip(spatial, tiles))


def _segment_tiled(ctx: _ItemContext, group: list[Combination], pre, results: dict) -> list:
    """Settings sharing a network key segmented tile by tile: one network pass per tile, every
    setting decoded from it and stitched on its own.  Fills each result's timings and tile
    columns; returns one label image per setting (None where that setting failed).

    Raises
    ------
    SegmentationError
        The tiled segmentation failed (the cause is logged when it is not an opsef error).
    """
    from ..tiling import segment_tiled_image

    tiling = ctx.config.execution.tiling
    t0 = time.perf_counter()
    try:
        outcomes = segment_tiled_image(pre, group[0].backend, group[0].params, tile_shape=tiling.tile_shape,
                                       overlap=tiling.overlap, progress=False, return_info=True,
                                       settings=[c.params for c in group])
    except Exception as exc:  # noqa: BLE001
        _reraise_write_failure(exc)
        if not isinstance(exc, OpsefError):
            logger.error("%s / %s tiled segmentation failed:\n%s", ctx.item.id, group[0].id, traceback.format_exc())
        raise SegmentationError(f"tiled segmentation: {_err(exc)}") from exc
    seconds = round(time.perf_counter() - t0, 4)
    n = int(outcomes[0][1]["n_tiles"])
    ctx.counts["network"] += n
    ctx.counts["decode"] += n * len(group)
    out = []
    for c, (labels, info) in zip(group, outcomes):
        res = results[c.id]
        res.t_network_s, res.t_decode_s = seconds, 0.0  # one pass and the decodings, timed together
        res.extra.update(tiles=n, tile_normalization=info["normalization"],
                         tile_large_objects=int(info.get("n_large", 0)))
        seams = seam_error(info, tiling.overlap)
        if seams:  # seams may cut such objects: the result is not trustworthy
            res.error = seams
            out.append(None)
        else:
            out.append(np.asarray(labels))
    return out


# ---------------------------------------------------------------------- outputs of one combination
def _n_objects(labels: np.ndarray) -> int:
    return int(len(np.unique(labels[labels > 0])))


def _write_combination(ctx: _ItemContext, res: CombinationResult, pre, display: np.ndarray,
                       working: np.ndarray) -> None:
    """Write everything one combination produces and collect its measurements and metrics."""
    from .. import io

    config, image, c = ctx.config, ctx.image, res.combination
    out = config.outputs
    if working.ndim != len(pre.spatial_axes) or working.shape != _spatial_shape(pre):
        raise SegmentationError(f"segmenter returned labels of shape {working.shape} for an image of "
                                f"spatial shape {_spatial_shape(pre)}")
    labels, changed = to_input_grid(working, pre, image)
    kept_axes = "".join(a for a in image.spatial_axes if a in pre.spatial_axes)
    grid_ps = {a: image.pixel_size[a] for a in kept_axes if a in image.pixel_size}
    if changed:
        res.working_shape = "x".join(map(str, working.shape))
        res.labels_working_path = f"labels_working/{res.name}.tif"
        io.write_labels(ctx.run_dir / res.labels_working_path, working, pixel_size=pre.pixel_size,
                        axes=pre.spatial_axes)
    res.labels_path = f"labels/{res.name}.tif"
    io.write_labels(ctx.run_dir / res.labels_path, labels, pixel_size=grid_ps, axes=kept_axes)
    res.n_objects = _n_objects(labels)
    # measure on the input (all its channels) where the pipeline kept its axes, else on the
    # pipeline's output brought to the input grid
    meas_image = image if kept_axes == image.spatial_axes else _on_grid(pre, labels.shape, grid_ps)
    final, table, classes = labels, None, None
    if config.postprocess is not None:
        final, table = _postprocess(ctx, labels, meas_image)
        res.labels_filtered_path = f"labels_filtered/{res.name}.tif"
        io.write_labels(ctx.run_dir / res.labels_filtered_path, final, pixel_size=grid_ps, axes=kept_axes)
        res.n_objects_filtered = _n_objects(final)
        if table is not None and "class" in getattr(table, "columns", ()):
            classes = table[[k for k in ("label", "class", "class_fraction") if k in table.columns]]
            io.write_table(ctx.run_dir / "classes" / f"{res.name}.csv",
                           table[[k for k in ("label", "class") if k in table.columns]])
            if out.class_labels:
                _write_class_labels(ctx.run_dir, res.name, final, classes, grid_ps, kept_axes)
            for cls, n in classes["class"].value_counts(sort=False).items():
                res.extra[f"n_class_{cls}"] = int(n)
    if out.overlays:
        _write_png(ctx.run_dir / "overlays" / f"{res.name}.png",
                   _overlay_rgb(_display_plane(meas_image) if changed else display, final))
    if out.rois:
        from ..export import write_roi_zip

        write_roi_zip(ctx.run_dir / "rois" / f"{res.name}.zip", final)
    cols = {**ctx.item.columns(), **c.columns()}
    if "time_s" in (image.metadata or {}):
        cols["time_s"] = image.metadata["time_s"]
    if out.measurements:
        ctx.measurements.append(_measure(config, final, meas_image, table, classes, cols))
    if ctx.gt is not None:
        if ctx.gt.shape != labels.shape:
            res.error = (f"not scored: ground truth {ctx.item.ground_truth} has shape {ctx.gt.shape}, "
                         f"labels {labels.shape}")
            logger.warning("%s / %s: %s", ctx.item.id, c.id, res.error)
        else:
            from .. import evaluate

            truth = ctx.truth_for(c)
            ctx.metrics.append({**cols, "scored_per_plane": truth is not ctx.gt,
                                **evaluate.image_metrics(truth, final, config.evaluation.thresholds)})
            res.scored = True


def _on_grid(pre, shape: tuple, pixel_size: dict):
    """The pipeline's output resampled to the input grid (for measuring after a projection)."""
    from ..reshape import rescale

    spatial = _spatial_shape(pre)
    if spatial == tuple(shape):
        return pre
    factors = {a: n / s for a, n, s in zip(pre.spatial_axes, shape, spatial)}
    out = rescale(pre, factors)
    return replace(out, pixel_size={**out.pixel_size, **pixel_size})


def _postprocess(ctx: _ItemContext, labels: np.ndarray, image) -> tuple[np.ndarray, Any]:
    """Apply the configured post-processing; returns (filtered labels, table of kept objects)."""
    from .. import postprocess

    cfg = postprocess.PostprocessConfig.model_validate(ctx.config.postprocess)
    if cfg.class_mask is not None and cfg.class_mask.folder is not None and ctx.item.class_mask is None:
        raise ConfigError(f"no class mask for item {ctx.item.id} (looked for {ctx.item.id}"
                          f"{cfg.class_mask.suffix}.tif)", cfg.class_mask.folder)
    filtered, table = postprocess.apply_postprocess(labels, image, cfg, class_mask_file=ctx.item.class_mask)
    return np.asarray(filtered), table


def _measure(config: RunConfig, final: np.ndarray, image, table, classes, cols: dict):
    """The per-object table of one combination (re-using post-processing's measurements)."""
    from ..measure import add_channel_ratios, add_constant_columns, measure_objects

    ratios = [tuple(r) for r in config.outputs.channel_ratios]
    if table is None:
        measured = measure_objects(final, image, extra=cols, channel_ratios=ratios)
    else:  # post-processing measured the kept objects on the same image already
        kept = table.drop(columns=[k for k in ("class", "class_fraction") if k in table.columns])
        measured = add_constant_columns(add_channel_ratios(kept.reset_index(drop=True), ratios,
                                                           source=image.source), cols)
    if classes is not None:
        measured = measured.merge(classes, on="label", how="left")
    return measured


def _write_class_labels(run_dir: Path, name: str, labels: np.ndarray, classes: Any, pixel_size: dict,
                        axes: str) -> None:
    """One label image per class, ``labels_classes/<class>/<name>.tif`` (other classes' objects removed)."""
    from .. import io
    from ..postprocess import class_labels

    for cls, lab in class_labels(labels, classes).items():
        io.write_labels(run_dir / "labels_classes" / slug(cls) / f"{name}.tif", lab, pixel_size=pixel_size,
                        axes=axes)


def _overlay_rgb(display: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from ..viz import overlay

    return overlay(display, labels)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from ..viz import save_png

    save_png(rgb, path)
