"""Tiled segmentation of large images with any registered segmenter.

:func:`segment_tiled_image` reads the input lazily (a path is opened with
``io.read_image(..., lazy=True)``: dask over tifffile's zarr store; numpy,
memmap, zarr and dask arrays are used as given), cuts it into overlapping
tiles (:func:`opsef_core.tiling.plan_tiles`), runs the backend's network pass
and decoding on one tile at a time and stitches the labels with
:func:`opsef_core.tiling.stitch_labels`, optionally straight into a ``.zarr``
store on disk, so peak memory depends on the tile size, not the image size.

Overlap
-------
The overlap must exceed the largest object diameter, plus a context margin
for learned models (their receptive field: 16-32 px is typical).  It is
checked while stitching: objects owned by a tile whose extent reaches the
overlap, and objects that touch a tile's outer border while spanning the
whole overlap strip (so they may be cut in every tile), are counted and a
``logging`` warning gives the counts.  It is never silent.

Normalisation
-------------
Normalising each tile on its own percentiles stretches tiles with few
objects (background noise becomes "objects" for a deep-learning model).  The
backend's normalisation percentiles are therefore computed once, on a
strided (downsampled) view of the whole image, and the same absolute limits
are used for every tile:

* a backend whose parameters have a ``normalize_limits`` field (absolute
  intensities mapped to 0 and 1) gets the limits there;
* a backend that accepts ``normalize=False`` ("input already normalised",
  StarDist) gets tiles pre-normalised with the global limits;
* any other backend normalises each tile itself: a warning says so, and
  :func:`segment_tiled_image` with ``return_info=True`` reports
  ``normalization="per-tile"``.

The classical, Cellpose and U-Net backends take ``normalize_limits``; StarDist
takes pre-normalised tiles.  An *automatic* threshold of the classical backend
(Otsu, Li, ...) is still computed per tile: give a fixed ``threshold`` for
results that do not depend on the tiling.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..distributed import trim_heap
from ..errors import ConfigError, OpsefError, SegmentationError
from ..image import Image
from .grid import _Stitcher, plan_tiles

__all__ = ["global_percentiles", "segment_tiled_image", "strided_sample"]

logger = logging.getLogger(__name__)

#: largest number of pixels read for the global normalisation statistics
MAX_SAMPLE = 4_000_000


def _load(image: Image | str | Path, scene, t, channel, backend: str) -> Image:
    """Open a path lazily and select one time point and channel (spatial image)."""
    from ..errors import AxesError

    if not isinstance(image, Image):
        from ..io import read_image

        image = read_image(image, scene=scene, lazy=True)
    try:
        img = image.sel(t=t if "T" in image.axes else None)
        if "C" in img.axes:
            if channel is None:
                if img.n_channels > 1:
                    raise SegmentationError(
                        f"tiled {backend}: the image has {img.n_channels} channels "
                        f"{list(img.channel_names)}; choose one with channel=", image.source)
                channel = 0
            img = img.sel(c=channel)
        elif channel not in (None, 0, "0"):
            raise SegmentationError(
                f"tiled {backend}: channel {channel!r} requested but the image has no C axis", image.source)
    except AxesError as exc:
        raise SegmentationError(f"tiled {backend}: {exc.message}", image.source) from None
    if img.spatial_axes not in ("YX", "ZYX") or img.data.ndim != len(img.spatial_axes):
        raise SegmentationError(f"tiled {backend}: unsupported axes {img.axes!r}", image.source)
    return img


def strided_sample(data: Any, max_pixels: int = MAX_SAMPLE, block_bytes: int = 64 * 2**20) -> np.ndarray:
    """A strided (downsampled) in-memory view of a possibly lazy array.

    Parameters
    ----------
    data : array-like
        numpy, memmap, zarr or dask array.
    max_pixels : int
        Upper bound on the number of sampled pixels.
    block_bytes : int
        Size of the slabs (along the first axis) read at a time.

    Returns
    -------
    ndarray
        ``data[::s0, ::s1, ...]`` with the same stride on every axis,
        chosen so that at most ``max_pixels`` pixels are kept.
    """
    from .stream import sample_stride

    shape = tuple(int(n) for n in data.shape)
    total = int(np.prod(shape))
    stride = sample_stride(shape, max_pixels)
    row_bytes = max(1, total // max(shape[0], 1)) * np.dtype(data.dtype).itemsize
    rows = max(stride, (block_bytes // row_bytes) // stride * stride)
    parts = []
    for start in range(0, shape[0], rows):
        block = np.asarray(data[start:min(start + rows, shape[0])])
        parts.append(block[(slice(None, None, stride),) * block.ndim])
    return np.concatenate(parts, axis=0)


def global_percentiles(data: Any, percentiles: tuple[float, float],
                       max_pixels: int = MAX_SAMPLE, *, name: str | None = None,
                       source=None) -> tuple[float, float]:
    """Intensity percentiles of the finite pixels of a whole (possibly lazy) image, from a strided sample.

    NaN and inf pixels are ignored (:func:`opsef_core.segment.normalize.finite_percentiles`,
    the rule of every backend); each tile's backend then sets them to the background.

    Parameters
    ----------
    data : array-like
        Spatial image.
    percentiles : (float, float)
        Low and high percentiles (0..100).
    max_pixels : int
        Sample size bound (see :func:`strided_sample`).
    name, source : optional
        Image name and file, for the error message.

    Returns
    -------
    (float, float)
        The intensities at those percentiles.

    Raises
    ------
    SegmentationError
        When the sample has no finite pixel.
    """
    from ..segment.normalize import finite_percentiles

    sample = strided_sample(data, max_pixels).astype(np.float32, copy=False)
    lo, hi = finite_percentiles(sample, percentiles, name=name, source=source)
    return float(lo), float(hi)


def _normalization_plan(seg, params: dict, data, source, stream=None) -> tuple[dict, tuple | None, str]:
    """Decide how tiles are normalised; returns (params, pre-normalisation limits or None, mode).

    The global percentiles are taken of what the backend itself normalises: the pipeline's
    output (``stream``, a :class:`~opsef_core.tiling.stream.TiledPipeline`, computed region by
    region with its halo), and for a backend that smooths before normalising (classical
    ``sigma``) that smoothed array (``normalization_source``), so tiled and whole-image runs
    use the same limits.
    """
    fields = seg.Params.model_fields
    pct = params.get("normalize", fields["normalize"].default if "normalize" in fields else None)
    if "normalize_limits" in fields and params.get("normalize_limits") is not None:
        return params, None, "fixed (given)"
    if pct is None and hasattr(seg, "normalize_percentiles"):  # e.g. the U-Net's training percentiles
        pct = seg.normalize_percentiles(params)
    if not (isinstance(pct, (tuple, list)) and len(pct) == 2):
        logger.warning("tiled %s: normalize=%r has no percentiles to fix globally; each tile is "
                       "normalised by the backend itself", seg.name, pct)
        return params, None, "per-tile"
    fixed = "normalize_limits" in fields
    if not fixed:
        try:
            seg.params({**params, "normalize": False})
        except (ConfigError, OpsefError):
            logger.warning(
                "tiled %s: the backend takes no fixed normalisation limits, so every tile is normalised on its "
                "own percentiles %s (tiles with few objects get stretched); image %s",
                seg.name, tuple(pct), source)
            return params, None, "per-tile"
    note = ""
    if stream is not None and (stream.steps or hasattr(seg, "normalization_source")):
        transform = halo = None
        if hasattr(seg, "normalization_source"):
            def transform(block):
                src = seg.normalization_source(stream.image.with_data(block), params)
                return block if src is None else src
            halo = seg.normalization_halo(params, stream.image.spacing)
        data, stride = stream.sample(transform=transform, transform_halo=halo)
        if stride > 1:
            note = f" (every {stride}th pixel along each axis)"
    lo, hi = global_percentiles(data, tuple(float(v) for v in pct), source=source)
    logger.info("tiled %s: global normalisation limits %.4g..%.4g (percentiles %s)%s",
                seg.name, lo, hi, tuple(pct), note)
    if fixed:
        return {**params, "normalize_limits": (lo, hi)}, None, "global" + note
    return {**params, "normalize": False}, (lo, hi), "global" + note


def _open_store(out: str | Path, shape: tuple, tiles, image: Image):
    """A new label store for tiled output: ``(level-0 array, commit() -> opened result, abort())``.

    ``.ome.zarr``: an OME-Zarr label pyramid (:class:`opsef_core.io.ngff.LabelPyramidWriter`,
    the image's pixel size as scale); other ``.zarr``: one zarr array.  Either is built in a
    temporary sibling folder and renamed when complete.
    """
    import zarr

    from ..io.ngff import LabelPyramidWriter

    out = Path(out)
    if out.suffix != ".zarr":
        raise ConfigError(f"tiled output must be a .zarr folder, got {out}")
    if out.exists():
        raise ConfigError(f"tiled output {out} exists already; choose a new path")
    inner = [max(s.stop - s.start for s in (t.inner[d] for t in tiles)) for d in range(len(shape))]
    chunks = tuple(int(min(n, max(64, min(c, 1024)))) for n, c in zip(shape, inner))
    if out.name.lower().endswith(".ome.zarr"):
        writer = LabelPyramidWriter(out, shape, image.spatial_axes, image.pixel_size, chunks=chunks)

        def commit():
            writer.commit(source_image=str(image.source) if image.source else None)
            return zarr.open_array(str(out / "s0"), mode="r")

        return writer.array, commit, writer.abort
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    arr = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype="int32", fill_value=0)

    def commit_plain():
        os.replace(tmp, out)
        return zarr.open_array(str(out), mode="r")

    return arr, commit_plain, lambda: shutil.rmtree(tmp, ignore_errors=True)


class _WindowedOut:
    """Write-back window over a zarr output: one tile's outer region is held in memory.

    The stitcher reads and writes the output many times per tile; against a
    zarr store each access is a chunk round trip, so the tile's region is
    loaded once (:meth:`load`), edited in memory and written back once
    (:meth:`flush`).  Accesses outside the window go to the store directly.
    """

    def __init__(self, arr):
        self.arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype
        self.window = None
        self.buf = None
        self.dirty = False

    def load(self, window: tuple) -> None:
        self.flush()
        self.window = window
        self.buf = np.array(self.arr[window])

    def flush(self) -> None:
        if self.window is not None and self.dirty:
            self.arr[self.window] = self.buf
        self.dirty = False

    def _local(self, key):
        if self.window is None or not isinstance(key, tuple) or len(key) != len(self.shape):
            return None
        out = []
        for k, w in zip(key, self.window):
            if not isinstance(k, slice) or k.step not in (None, 1) or k.start < w.start or k.stop > w.stop:
                return None
            out.append(slice(k.start - w.start, k.stop - w.start))
        return tuple(out)

    def __getitem__(self, key):
        local = self._local(key)
        if local is not None:
            return self.buf[local]
        self.flush()
        return self.arr[key]

    def __setitem__(self, key, value) -> None:
        local = self._local(key)
        if local is not None:
            self.buf[local] = value
            self.dirty = True
            return
        self.flush()
        self.arr[key] = value
        if self.window is not None:
            self.buf = np.array(self.arr[self.window])


def _segment_tile(seg, img: Image, stream, limits, p, decodings, outer: tuple, index: tuple) -> list:
    """One tile: preprocess tile + halo, one network pass, one decoding per setting."""
    from ..segment.base import check_input

    block = stream.block(outer)
    if limits is not None:
        lo, hi = limits
        block = (block.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-20))
    tile_img = img.with_data(block, name=f"{img.name}_tile{'_'.join(map(str, index))}")
    try:
        check_input(tile_img, seg.name)
        pred = seg.predict(tile_img, p)
        return [np.asarray(seg.decode(pred, tile_img, d)) for d in decodings]
    except OpsefError:
        raise
    except Exception as exc:  # backend failure: name the image and tile
        raise SegmentationError(f"tiled {seg.name}: tile {index} failed ({type(exc).__name__}: {exc})",
                                img.source) from exc


#: per worker process: the images (and their tiled pipelines) tile tasks have opened
_WORKER_IMAGES: dict = {}

_TILE_CLIENT = contextvars.ContextVar("opsef_tile_client", default=None)


def tile_client():
    """The dask client streamed run items send their tiles to (None: tiles run in this process)."""
    return _TILE_CLIENT.get()


@contextlib.contextmanager
def use_tile_client(client):
    """Within the block, streamed run items run their tiles as tasks on ``client``."""
    token = _TILE_CLIENT.set(client)
    try:
        yield client
    finally:
        _TILE_CLIENT.reset(token)


def _tile_task(spec: tuple, backend: str, limits, p, decodings, outer: tuple, index: tuple) -> list:
    """A tile on a dask worker: open the image once per worker (``spec``'s loader), apply the
    pipeline with the statistics fixed by the caller, segment; returns the label tiles."""
    import dask

    from ..segment import get_segmenter
    from .stream import TiledPipeline

    loader, scene, t, channel, pipeline, fixed = spec
    key = repr(spec)
    seg = get_segmenter(backend)
    with dask.config.set(scheduler="synchronous"):  # read here, not through the cluster
        if key not in _WORKER_IMAGES:
            if len(_WORKER_IMAGES) > 4:
                _WORKER_IMAGES.clear()
            img = _load(loader(), scene, t, channel, backend)
            stream = TiledPipeline(img, pipeline)
            stream.fix_statistics(fixed)
            _WORKER_IMAGES[key] = (img, stream)
        img, stream = _WORKER_IMAGES[key]
        out = _segment_tile(seg, img, stream, limits, p, decodings, outer, index)
    trim_heap()  # the worker's tile temporaries, back to the system
    return out


def _local_reads(func):
    """Run ``func`` with dask's synchronous scheduler: lazy regions of the image are read in this
    process, also when a distributed client is the default (tiles go to it explicitly)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import dask

        with dask.config.set(scheduler="synchronous"):
            return func(*args, **kwargs)

    return wrapper


@_local_reads
def segment_tiled_image(
    image: Image | str | Path,
    segmenter: str,
    params: dict | None = None,
    tile_shape: int | tuple = 1024,
    overlap: int | tuple = 64,
    channel: int | str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    *,
    scene: int | str | None = None,
    t: int = 0,
    return_info: bool = False,
    settings: Sequence[dict] | None = None,
    pipeline: Any = None,
    max_sample: int = MAX_SAMPLE,
    client=None,
    loader=None,
):
    """Segment a (large) image tile by tile with any backend and stitch the labels.

    Parameters
    ----------
    image : Image or path
        An :class:`Image` (numpy, memmap, zarr or dask data) or a file path,
        opened lazily with ``io.read_image(path, lazy=True)``.
    segmenter : str
        Backend name (``classical``, ``stardist``, ``cellpose``, ``unet``, ...).
    params : dict, optional
        Backend parameters (validated by the backend; ``channel`` is taken
        from here when ``channel`` is not given).
    tile_shape : int or tuple
        Largest tile (outer region) per spatial axis (``YX`` or ``ZYX``).
    overlap : int or tuple
        Context on each side of a tile; must exceed the largest object
        diameter (plus a context margin for learned models).
    channel : int or str, optional
        Channel to segment (required for multi-channel images).
    out : path or sequence of paths, optional
        New ``.zarr`` folders, one per setting: labels are written into them tile by tile
        (temporary folder renamed when complete, so a failed run leaves no partial output
        under that name).  A name ending ``.ome.zarr`` gets an OME-Zarr (NGFF) label
        pyramid with the image's pixel size as its scale
        (:class:`opsef_core.io.ngff.LabelPyramidWriter`).  Default: in-memory int32 arrays.
    progress : bool
        Show a tqdm progress bar over tiles.
    scene : int or str, optional
        Scene of a multi-scene file (paths only).
    t : int
        Time point of a time series.
    settings : sequence of dict, optional
        A sweep: parameter sets that share one network pass (they differ in decoding parameters
        only, e.g. StarDist ``prob_thresh``).  The network runs once per tile and every setting
        decodes from it and gets its own stitched label image (in memory, or in its own ``out``
        store).  Returns a list, one result per setting.
    pipeline : Pipeline or dict, optional
        Preprocessing applied tile by tile: each tile is read with the halo its steps need
        and the result equals the whole-image pipeline's (:class:`~opsef_core.tiling.stream.
        TiledPipeline`; steps that need the whole image other than ``normalize_percentile``
        are refused).
    max_sample : int
        Largest number of pixels whole-image statistics are computed from (percentiles of the
        pipeline's output, strided on the image grid above it).
    client : distributed.Client, optional
        Run the tiles as dask tasks on its workers (with ``loader``): each worker opens the image
        itself and keeps its models; this process computes the statistics and stitches, in tile
        order, so the labels equal the serial result.
    loader : callable, optional
        A picklable function with no arguments returning the (lazy) :class:`Image` as given
        (e.g. ``functools.partial(io.read_image, path, lazy=True)``); needed with ``client``.
    return_info : bool
        Also return a dict with ``n_tiles``, ``normalization`` (``"global"``,
        ``"fixed (given)"`` or ``"per-tile"``), ``limits``, ``n_objects``,
        ``n_large`` (objects whose extent reaches the overlap),
        ``n_cut_candidates`` (border objects spanning the overlap strip), ``halo`` (the
        pipeline's, per axis) and ``statistics`` (whole-image statistics fixed for it).

    Returns
    -------
    ndarray or zarr.Array
        Stitched int32 labels in the image's spatial shape (a read-only
        zarr array when ``out`` is given); ``(labels, info)`` with ``return_info``.

    Raises
    ------
    SegmentationError
        Unsupported axes, a missing channel choice, or a backend failure on a tile.
    ConfigError
        Bad tile shape/overlap, bad parameters, or an existing output path.
    """
    from scipy.ndimage import find_objects
    from tqdm.auto import tqdm

    from ..segment import get_segmenter

    seg = get_segmenter(segmenter)
    params = dict(params or {})
    if channel is None and params.get("channel") is not None:
        channel = params["channel"]
    if "channel" in seg.Params.model_fields:
        params["channel"] = None
    if client is not None and loader is None and not isinstance(image, Image):
        from functools import partial

        from ..io import read_image

        loader = partial(read_image, image, scene=scene, lazy=True)
    img = _load(image, scene, t, channel, seg.name)
    shape = tuple(int(n) for n in img.data.shape)
    if "n_tiles" in seg.Params.model_fields and params.get("n_tiles") is None:
        # the tile already bounds the pass's memory: one network call per tile (StarDist's own
        # sub-tiling of a 1152² tile into 3x3 doubled the pass's time)
        params["n_tiles"] = (1,) * len(shape)
    from .stream import TiledPipeline

    stream = TiledPipeline(img, pipeline, max_sample=max_sample)
    stream.fix_statistics()  # once, here: tiles (and dask workers) only apply them
    tiles = plan_tiles(shape, tile_shape, overlap)
    ov = tuple(int(o) for o in (overlap if not np.isscalar(overlap) else (overlap,) * len(shape)))
    split = [len({tl.inner[d].start for tl in tiles}) > 1 for d in range(len(shape))]
    seg.params(params)  # validate before any work
    params, limits, mode = _normalization_plan(seg, params, img.data, img.source, stream=stream)
    stream.drop_sample()  # every statistic is fixed now; the tiles only apply them
    changes = {k: v for k, v in params.items() if k in ("normalize", "normalize_limits", "channel", "n_tiles")}
    decodings = [seg.params(params)]
    if settings is not None:  # a sweep sharing one network pass: each setting with the same normalisation
        if not settings:
            raise ConfigError("settings: give at least one parameter set")
        decodings = []
        for s in settings:
            sp = {**dict(s), **changes}
            if seg.network_key(sp) != seg.network_key(params):
                raise ConfigError(f"tiled sweep: setting {dict(s)} needs another network pass than the first "
                                  "(only decoding parameters may differ)")
            decodings.append(seg.params(sp))
    outs = None if out is None else ([out] if isinstance(out, (str, Path)) else list(out))
    if outs is not None and len(outs) != len(decodings):
        raise ConfigError(f"out= gives {len(outs)} store(s) for {len(decodings)} setting(s): give one per setting")
    p = decodings[0]
    logger.info("tiled %s on %s %s: %d tiles of at most %s, overlap %s, normalisation %s, %d decoding(s) per tile",
                seg.name, img.name, shape, len(tiles), tile_shape, overlap, mode, len(decodings))

    stats = [{"large": 0, "cut": 0, "objects": 0} for _ in decodings]

    def check(tile, labels, st):
        low_open = [o.start > 0 for o in tile.outer]
        high_open = [o.stop < n for o, n in zip(tile.outer, shape)]
        for sl in find_objects(labels):
            if sl is None:
                continue
            ext = [s.stop - s.start for s in sl]
            big = any(sp and e >= o for e, o, sp in zip(ext, ov, split))
            touches = any((s.start == 0 and lo) or (s.stop == n and hi)
                          for s, n, lo, hi in zip(sl, labels.shape, low_open, high_open))
            if touches:
                st["cut"] += int(big)
                continue
            if tile.owns(sl):
                st["objects"] += 1
                st["large"] += int(big)

    def serial_tiles():
        for tile in tqdm(tiles, desc=f"tiles ({seg.name})", disable=not progress):
            yield _segment_tile(seg, img, stream, limits, p, decodings, tile.outer, tile.index)

    def distributed_tiles():
        """Tiles as dask tasks on ``client``'s workers (each opens the image once with ``loader``
        and keeps its models), at most two per worker in flight, results in plan order."""
        from collections import deque

        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        spec = (loader, scene, t, channel, pipeline, dict(stream._limits))
        queue, it = deque(), iter(tiles)

        def submit_next():
            tile = next(it, None)
            if tile is not None:
                queue.append(client.submit(_tile_task, spec, seg.name, limits, p, decodings, tile.outer,
                                           tile.index, pure=False))

        for _ in range(2 * n_workers):
            submit_next()
        for _ in tqdm(tiles, desc=f"tiles ({seg.name}, dask)", disable=not progress):
            out_tiles = queue.popleft().result()
            submit_next()
            yield out_tiles

    def tile_labels():
        """Per tile: one network pass, one decoding per setting (a list of label tiles)."""
        source = distributed_tiles() if client is not None and loader is not None else serial_tiles()
        for tile, out_tiles in zip(tiles, source):
            for labels, st in zip(out_tiles, stats):
                check(tile, labels, st)
            yield out_tiles

    stores = [] if outs is None else [_open_store(o, shape, tiles, img) for o in outs]
    windows = [_WindowedOut(arr) for arr, _, _ in stores]
    stitchers = [_Stitcher(shape, out=w) for w in windows] if stores else [_Stitcher(shape) for _ in decodings]
    try:
        for tile, labels in zip(tiles, tile_labels()):
            for w in windows:
                w.load(tile.outer)  # also writes the previous tile's region back
            for stitcher, lab in zip(stitchers, labels):
                stitcher.add(tile, lab)
            del labels
            trim_heap()  # the tile's temporaries, back to the system: the peak stays one tile's
        for w in windows:
            w.flush()
        results = [commit() for _, commit, _ in stores] if stores else [st.result() for st in stitchers]
    except BaseException:
        for _, _, abort in stores:
            abort()
        raise
    for st in stats:
        if st["large"] or st["cut"]:
            logger.warning(
                "tiled %s on %s: %d object(s) reach the overlap %s and %d object(s) at tile borders span "
                "the whole overlap strip: they may be cut or duplicated at seams; increase the overlap above "
                "the largest object diameter (plus context)", seg.name, img.name, st["large"], ov, st["cut"])
    infos = [{"n_tiles": len(tiles), "normalization": mode, "limits": limits, "n_objects": st["objects"],
              "n_large": st["large"], "n_cut_candidates": st["cut"], "tile_shape": tile_shape, "overlap": ov,
              "halo": stream.halo, "statistics": list(stream.statistics.values())}
             for st in stats]
    if settings is not None:
        return list(zip(results, infos)) if return_info else results
    return (results[0], infos[0]) if return_info else results[0]
