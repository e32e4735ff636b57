"""Streamed run items: read region by region, OME-Zarr labels, measured tile by tile.

An item is *streamed* (:func:`opsef_core.run.item.streams`) when ``outputs.labels_format`` is
``"ome-zarr"``, or ``"auto"`` with ``execution.tiling`` and an image above
``OutputsConfig.OME_ZARR_MIN_PIXELS``.  Nothing of the image's size is then held in memory:

1. the input stays lazy (dask over a tiled TIFF / OME-TIFF store);
2. the pipeline runs per tile on tile + halo (:class:`opsef_core.tiling.stream.TiledPipeline`),
   its whole-image statistics and the backend's normalisation percentiles computed once per
   image and recorded (``tile_statistics``, ``tile_normalization``);
3. the network runs once per tile per network key; every sweep setting decodes from it and is
   stitched into its own OME-Zarr label pyramid, ``labels/<item>__<combination>.ome.zarr``
   (:func:`opsef_core.tiling.segment_tiled_image`);
4. measurements are taken per tile, for the objects each tile owns (the tile whose inner region
   holds the object's bounding-box centre: each object exactly once), on the input's pixels;
   ImageJ ROI sets are traced the same way (:func:`opsef_core.export.write_roi_zip_tiled`);
5. overlays and the montage come from the first pyramid level at most ``PREVIEW_SIDE`` pixels
   across;
6. with ground truth, the labels are scored slab by slab against it
   (:func:`opsef_core.evaluate.image_metrics_blockwise`: the whole-image metrics exactly; the
   ground truth itself is read whole).

Post-processing runs tile by tile too (:func:`postprocess_tiles`: holes, size limits, border
removal and measurement ranges are rules on one object at a time) into
``labels_filtered/<item>__<combination>.ome.zarr``; its whole-image options (``smooth_radius``,
``keep_largest``, ``class_mask``) are refused (a config error for ``"ome-zarr"``, the
combination's ``error`` for ``"auto"``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from pathlib import Path

import numpy as np

from ..errors import OpsefError, SegmentationError
from .item import (
    SLICES_NOT_TILED,
    _err,
    _overlay_rgb,
    _reraise_write_failure,
    _write_png,
    load_input,
    seam_error,
)
from .plan import Combination

__all__ = ["PREVIEW_SIDE", "measure_tiles", "run_pipeline_streamed"]

logger = logging.getLogger(__name__)

#: overlays and montage panels are drawn at the first pyramid level at most this many pixels across
PREVIEW_SIDE = 1024


def run_pipeline_streamed(ctx, combos: list[Combination], results: dict) -> tuple[np.ndarray, dict]:
    """One pipeline and every segmenter setting on a streamed item; returns the montage row
    (a downsampled display plane and downsampled labels per setting)."""
    item = ctx.item
    panels: dict[str, np.ndarray | None] = {c.setting_id: None for c in combos}
    groups: dict[tuple, list[Combination]] = {}
    for c in combos:
        groups.setdefault((c.network_key, c.slices), []).append(c)
    factor = None
    for group in groups.values():
        if group[0].slices:
            for c in group:
                results[c.id].error = SLICES_NOT_TILED
            continue
        try:
            outcomes = _segment(ctx, group, results)
        except Exception as exc:  # noqa: BLE001
            _reraise_write_failure(exc)
            if not isinstance(exc, OpsefError):
                logger.error("%s / %s streamed segmentation failed:\n%s", item.id, group[0].id,
                             traceback.format_exc())
            for c in group:
                results[c.id].error = f"tiled segmentation: {_err(exc)}"
            continue
        for gi, (c, (store, info)) in enumerate(zip(group, outcomes)):
            res = results[c.id]
            res.network_reused = gi > 0
            try:
                preview, factor = _finish(ctx, res, store, info)
                panels[c.setting_id] = preview
            except Exception as exc:  # noqa: BLE001
                _reraise_write_failure(exc)
                if not isinstance(exc, OpsefError):
                    logger.error("%s / %s failed:\n%s", item.id, c.id, traceback.format_exc())
                res.error = _err(exc)
    if not (ctx.config.outputs.montage and any(p is not None for p in panels.values())):
        return None, panels
    return _preview_plane(ctx.image, factor or _preview_factor(ctx.image)), panels


def _segment(ctx, group: list[Combination], results: dict) -> list:
    """Settings sharing a network key, tile by tile into one OME-Zarr store each."""
    from functools import partial

    from ..tiling import segment_tiled_image
    from ..tiling.images import tile_client

    tiling = ctx.config.execution.tiling
    outs = [ctx.run_dir / "labels" / f"{results[c.id].name}.ome.zarr" for c in group]
    for out in outs:  # a resumed item redoes its own earlier, unfinished output (never another run's)
        if out.exists():
            logger.info("%s: replacing this run's earlier output %s", ctx.item.id, out.name)
            shutil.rmtree(out)
    t0 = time.perf_counter()
    outcomes = segment_tiled_image(ctx.image, group[0].backend, group[0].params, tile_shape=tiling.tile_shape,
                                   overlap=tiling.overlap, progress=False, return_info=True,
                                   settings=[c.params for c in group], pipeline=group[0].pipeline_spec,
                                   out=outs, max_sample=tiling.max_sample, client=tile_client(),
                                   loader=partial(load_input, ctx.config, ctx.item, lazy=True))
    seconds = round(time.perf_counter() - t0, 4)
    n = int(outcomes[0][1]["n_tiles"])
    ctx.counts["preprocess"] += 1
    ctx.counts["network"] += n
    ctx.counts["decode"] += n * len(group)
    for c, out, (_, info) in zip(group, outs, outcomes):
        res = results[c.id]
        res.t_network_s, res.t_decode_s = seconds, 0.0  # preprocessing, passes and decodings, timed together
        res.labels_path = f"labels/{out.name}"
        res.extra.update(streamed=True, tiles=n, tile_normalization=info["normalization"],
                         tile_large_objects=int(info.get("n_large", 0)),
                         preprocess_halo="x".join(map(str, info["halo"])),
                         tile_statistics=json.dumps(info["statistics"]) if info["statistics"] else None)
    return outcomes


def _finish(ctx, res, store, info) -> tuple[np.ndarray, int]:
    """Check, measure, preview and score one setting's stitched store."""
    from ..tiling import plan_tiles

    config, image = ctx.config, ctx.image
    tiling = config.execution.tiling
    seams = seam_error(info, tiling.overlap)
    if seams:
        raise SegmentationError(seams)
    tiles = plan_tiles(tuple(store.shape), tiling.tile_shape, tiling.overlap)
    if config.postprocess is not None:  # the raw labels stay; the filtered ones go beside them, as for TIFF items
        res.labels_filtered_path = f"labels_filtered/{res.name}.ome.zarr"
        out = ctx.run_dir / res.labels_filtered_path
        if out.exists():  # a resumed item redoes its own unfinished output
            shutil.rmtree(out)
        store, n_raw = postprocess_tiles(store, out, image, tiles, config.postprocess)
    cols = {**ctx.item.columns(), **res.combination.columns()}
    if "time_s" in (image.metadata or {}):
        cols["time_s"] = image.metadata["time_s"]
    table, n_objects = measure_tiles(store, image, tiles, extra=cols, channel_ratios=[
        tuple(r) for r in config.outputs.channel_ratios], measure=config.outputs.measurements)
    if config.postprocess is not None:
        res.n_objects_filtered, res.n_objects = n_objects, n_raw
    else:
        res.n_objects = n_objects
    if table is not None:
        ctx.measurements.append(table)
    if config.outputs.rois:
        from ..export import write_roi_zip_tiled

        write_roi_zip_tiled(ctx.run_dir / "rois" / f"{res.name}.zip", store, tiles)
    factor = _preview_factor(image)
    preview = None
    if config.outputs.overlays or config.outputs.montage:
        preview = _preview_labels(ctx.run_dir / (res.labels_filtered_path or res.labels_path), factor)
    if config.outputs.overlays:
        _write_png(ctx.run_dir / "overlays" / f"{res.name}.png", _overlay_rgb(_preview_plane(image, factor), preview))
        res.extra["overlay_downsampled"] = factor
    if ctx.gt is not None:
        _score(ctx, res, store, cols)
    res.status = "done"
    return preview, factor


def postprocess_tiles(raw, out, image, tiles, config):
    """Post-process stitched labels tile by tile into a new OME-Zarr label pyramid ``out``.

    Each tile reads its outer region of ``raw``, post-processes the objects it owns
    (:func:`opsef_core.postprocess.postprocess_owned`: each object's whole-image fate) and writes
    them, with their filled holes, into ``out`` (built in a temporary folder, renamed when
    complete).  Returns the new level 0 and the number of objects in ``raw`` (counted on the way:
    each object once, by its owner).

    Raises
    ------
    SegmentationError
        The config has options that need the whole label image (``smooth_radius``,
        ``keep_largest``, ``class_mask``).
    """
    import zarr

    from ..io.ngff import LabelPyramidWriter
    from ..postprocess import PostprocessConfig, postprocess_owned, whole_image_options
    from ..tiling.images import _WindowedOut
    from ..tiling.stream import read_region

    config = config if isinstance(config, PostprocessConfig) else PostprocessConfig.model_validate(config)
    bad = whole_image_options(config)
    if bad:
        raise SegmentationError(f"postprocess {', '.join(bad)} need(s) the whole label image, so they cannot run "
                                "on a streamed (OME-Zarr) item: set outputs.labels_format 'tiff' or drop them")
    shape = tuple(raw.shape)
    n_raw = 0
    writer = LabelPyramidWriter(out, shape, image.spatial_axes, image.pixel_size, chunks=tuple(raw.chunks))
    try:
        window = _WindowedOut(writer.array)
        for tile in tiles:
            lab = np.asarray(raw[tile.outer])
            owned_ids = tile.owned(lab)
            n_raw += int(owned_ids.sum())
            owned = owned_ids[lab]
            block = image.with_data(read_region(image.data, (Ellipsis, *tile.outer)))
            post = postprocess_owned(np.where(owned, lab, 0), block, config, origin=tile.origin, shape=shape)
            window.load(tile.outer)
            holes = (lab == 0) & (post > 0)
            window.buf[owned] = post[owned]
            window.buf[holes] = post[holes]
            window.dirty = True
        window.flush()
        writer.commit(source_image=str(image.source) if image.source else None)
    except BaseException:
        writer.abort()
        raise
    return zarr.open_array(str(Path(out) / "s0"), mode="r"), n_raw


def measure_tiles(store, image, tiles, *, extra: dict, channel_ratios=(), measure: bool = True):
    """Per-object measurements of a stitched label store, tile by tile.

    Each tile reads its outer region of the labels and of the input image; the objects it
    *owns* (bounding-box centre in its inner region) are measured there and their coordinates
    moved to the image's frame.  Every object is owned by exactly one tile, so the table has
    one row per object and never needs the whole label image in memory.

    Returns
    -------
    (pandas.DataFrame or None, int)
        The table (None when ``measure`` is False) and the number of objects.
    """
    import pandas as pd

    from ..measure import measure_objects, shift_to_image
    from ..tiling.stream import read_region

    axes = image.spatial_axes
    parts, n = [], 0
    for tile in tiles:
        lab = np.asarray(store[tile.outer])
        owned = tile.owned(lab)
        k_owned = int(owned.sum())
        n += k_owned
        if not measure or k_owned == 0:
            continue
        mine = np.where(owned[lab], lab, 0)
        block = image.with_data(read_region(image.data, (Ellipsis, *tile.outer)))
        parts.append(shift_to_image(measure_objects(mine, block, extra=extra, channel_ratios=channel_ratios),
                                    tile.origin, block))
    if not measure:
        return None, n
    if not parts:
        empty = np.zeros((1,) * len(axes), np.int32)
        return measure_objects(empty, image.with_data(np.asarray(image.data[(Ellipsis,) + (slice(0, 1),) * len(axes)])),
                               extra=extra, channel_ratios=channel_ratios), 0
    return pd.concat(parts, ignore_index=True).sort_values("label", kind="stable").reset_index(drop=True), n


def _preview_factor(image) -> int:
    """The pyramid's downsampling (a power of 2) at which Y and X are at most ``PREVIEW_SIDE``."""
    side, f = max(image.size("Y"), image.size("X")), 1
    while -(-side // f) > PREVIEW_SIDE:
        f *= 2
    return f


def _preview_plane(image, factor: int) -> np.ndarray:
    """Channel 0 of the input, every ``factor``-th pixel in Y and X (read chunk by chunk)."""
    data = image.sel(c=0).data if "C" in image.axes else image.data
    step = (slice(None),) * (data.ndim - 2) + (slice(None, None, factor),) * 2
    return np.asarray(data[step])


def _preview_labels(path, factor: int) -> np.ndarray:
    from ..io.ngff import read_label_pyramid

    level = int(np.log2(factor))
    arr, _ = read_label_pyramid(path, level=level)
    return np.asarray(arr[...])


def _score(ctx, res, store, cols: dict) -> None:
    """Score a streamed item against its ground truth, slab by slab (the labels never whole in memory)."""
    from .. import evaluate

    shape = tuple(store.shape)
    if ctx.gt.shape != shape:
        res.error = f"not scored: ground truth {ctx.item.ground_truth} has shape {ctx.gt.shape}, labels {shape}"
        return
    ctx.metrics.append({**cols, "scored_per_plane": False,
                        **evaluate.image_metrics_blockwise(ctx.gt, store, ctx.config.evaluation.thresholds)})
    res.scored = True
