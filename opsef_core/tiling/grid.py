"""Tiles with overlap, and seamless stitching of per-tile label images.

Planning
--------
:func:`plan_tiles` cuts each axis into ``k`` *inner* regions of near-equal
size that partition the image exactly; each tile's *outer* region is its
inner region grown by ``overlap`` on every side (clipped at the image
border), and is never larger than ``tile_shape``.

Stitching rule
--------------
Each tile is segmented on its outer region.  From a tile, an object is a
*candidate* only if it does not touch the tile's outer border (borders that
are the image border do not count): an object touching it may be cut.  The
object's anchor is the centre of its bounding box; the tile whose inner
region contains the anchor is its *owner*.  Candidates are pasted tile by
tile into the output:

* a candidate whose IoU with an already pasted object is > 0.5 is the same
  object: it is dropped, except that the owner's version replaces a version
  pasted by a non-owner;
* otherwise it gets a new global label and is pasted on background pixels
  only (pixels of earlier objects are never overwritten).

So every object is kept whole and exactly once provided **the overlap exceeds
the largest object diameter** (strictly, its radius suffices for a
deterministic segmenter; the diameter also gives learned segmenters the
context they need).  For a segmenter that treats every pixel the same way
(threshold + connected components) the stitched result equals the
whole-image result object for object.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ConfigError, SegmentationError

__all__ = ["Tile", "plan_tiles", "stitch_labels", "segment_tiled"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tile:
    """One tile of a tiling plan.

    Attributes
    ----------
    index : tuple of int
        Position of the tile in the tile grid.
    outer : tuple of slice
        Region read and segmented (inner region plus overlap context).
    inner : tuple of slice
        Region this tile owns; inner regions of a plan never overlap and
        cover the image exactly.
    origin : tuple of int
        Start of ``outer`` (global coordinates of the tile array's pixel 0).
    """

    index: tuple
    outer: tuple
    inner: tuple
    origin: tuple

    @property
    def shape(self) -> tuple:
        """Shape of the outer region."""
        return tuple(s.stop - s.start for s in self.outer)

    @property
    def inner_local(self) -> tuple:
        """The inner region in coordinates of the outer region."""
        return tuple(slice(i.start - o, i.stop - o) for i, o in zip(self.inner, self.origin))

    def owns(self, bbox: tuple) -> bool:
        """Whether this tile owns the object whose bounding box is ``bbox`` (slices in the outer
        region's coordinates): its anchor, the bounding box's centre, lies in the inner region.
        Every object of a stitched image has exactly one owner."""
        return all(i.start <= (s.start + s.stop - 1) // 2 + o < i.stop
                   for i, s, o in zip(self.inner, bbox, self.origin))

    def owned(self, labels: np.ndarray) -> np.ndarray:
        """Per label id of ``labels`` (this tile's outer region), whether this tile owns it
        (a boolean array indexed by label; 0 is never owned)."""
        from scipy.ndimage import find_objects

        out = np.zeros(int(labels.max()) + 1 if labels.size else 1, bool)
        for k, sl in enumerate(find_objects(labels), start=1):
            out[k] = sl is not None and self.owns(sl)
        return out


def _per_axis(value, ndim: int, name: str) -> tuple:
    if np.isscalar(value):
        return (int(value),) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ConfigError(f"{name} {value} has {len(value)} values for a {ndim}-D image")
    return value


def _axis_bounds(n: int, t: int, o: int) -> list[int]:
    if n <= t:
        return [0, n]
    step = t - 2 * o
    k = -(-(n - 2 * o) // step)  # ceil: border tiles also own their overlap strip
    return [0] + [o + (i * (n - 2 * o)) // k for i in range(1, k)] + [n]


def plan_tiles(shape: Sequence[int], tile_shape: int | Sequence[int], overlap: int | Sequence[int]) -> list[Tile]:
    """Plan overlapping tiles over an image.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape, e.g. ``(Y, X)`` or ``(Z, Y, X)``.
    tile_shape : int or sequence of int
        Largest outer tile size per axis (what the segmenter sees).
    overlap : int or sequence of int
        Context added on each side of a tile's inner region (>= 0); must be
        less than half of ``tile_shape``.  For seamless stitching it must
        exceed the largest object diameter.

    Returns
    -------
    list of Tile
        In C order of their grid index.  An axis not longer than ``tile_shape``
        is one tile; otherwise it is cut into the fewest inner regions of
        near-equal size such that no outer region exceeds ``tile_shape``.

    Raises
    ------
    ConfigError
        Negative overlap, non-positive sizes, or ``tile_shape <= 2 * overlap``.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    tile_shape = _per_axis(tile_shape, ndim, "tile_shape")
    overlap = _per_axis(overlap, ndim, "overlap")
    for n, t, o in zip(shape, tile_shape, overlap):
        if n < 1 or t < 1:
            raise ConfigError(f"image shape {shape} and tile_shape {tile_shape} must be positive")
        if o < 0:
            raise ConfigError(f"overlap must be >= 0, got {overlap}")
        if t <= 2 * o:
            raise ConfigError(f"tile_shape {tile_shape} must exceed twice the overlap {overlap}")
    bounds = [_axis_bounds(n, t, o) for n, t, o in zip(shape, tile_shape, overlap)]
    tiles = []
    for index in itertools.product(*(range(len(b) - 1) for b in bounds)):
        inner = tuple(slice(b[i], b[i + 1]) for b, i in zip(bounds, index))
        outer = tuple(slice(max(0, s.start - o), min(n, s.stop + o)) for s, o, n in zip(inner, overlap, shape))
        tiles.append(Tile(index=tuple(index), outer=outer, inner=inner, origin=tuple(s.start for s in outer)))
    return tiles


class _Stitcher:
    """Incremental implementation of the stitching rule (see module docstring)."""

    def __init__(self, shape: tuple, out=None):
        self.shape = tuple(shape)
        self.out = np.zeros(self.shape, np.int32) if out is None else out
        if tuple(self.out.shape) != self.shape:
            raise SegmentationError(f"output shape {tuple(self.out.shape)} differs from image shape {self.shape}")
        self.next_label = 1
        self.area: dict[int, int] = {}
        self.bbox: dict[int, tuple] = {}
        self.owned: dict[int, bool] = {}

    def add(self, tile: Tile, labels: np.ndarray) -> None:
        """Paste one tile's candidates (see the module docstring).

        Most candidates overlap no pasted object: they get their new labels in object order and
        are pasted together, with one lookup; only those that overlap pasted objects go through
        the IoU rule one by one.  The labels are those of pasting every candidate in turn.
        """
        from scipy.ndimage import find_objects
        from skimage.segmentation import relabel_sequential

        labels = np.asarray(labels)
        if labels.shape != tile.shape:
            raise SegmentationError(f"tile {tile.index}: labels of shape {labels.shape}, expected {tile.shape}")
        if labels.dtype.kind not in "iub":
            raise SegmentationError(f"tile {tile.index}: labels must be integers, got {labels.dtype}")
        labels = relabel_sequential(labels.astype(np.int64, copy=False))[0]
        low_open = [o.start > 0 for o in tile.outer]
        high_open = [o.stop < n for o, n in zip(tile.outer, self.shape)]
        region = np.array(self.out[tile.outer])
        objects = find_objects(labels)
        sizes = np.bincount(labels.ravel(), minlength=len(objects) + 1)
        overlaps = np.zeros(len(objects) + 1, bool)  # objects touching a pixel pasted before
        overlaps[np.unique(labels[region > 0])] = True
        fresh = np.zeros(len(objects) + 1, np.int64)  # new label of each non-overlapping candidate
        for lab, sl in enumerate(objects, start=1):
            if sl is None:
                continue
            if any((s.start == 0 and lo) or (s.stop == n and hi)
                   for s, n, lo, hi in zip(sl, labels.shape, low_open, high_open)):
                continue  # may be cut by the tile border
            gsl = tuple(slice(s.start + o, s.stop + o) for s, o in zip(sl, tile.origin))
            owner = tile.owns(sl)
            if not overlaps[lab]:  # on background only: a new object, pasted whole below
                label = self.next_label
                self.next_label += 1
                fresh[lab] = label
                self.area[label] = int(sizes[lab])
                self.bbox[label] = gsl
                self.owned[label] = owner
                continue
            mask = labels[sl] == lab
            size = int(sizes[lab])
            sub = region[sl]
            ids, counts = np.unique(sub[mask], return_counts=True)
            best, best_iou = 0, 0.0
            for e, c in zip(ids.tolist(), counts.tolist()):
                if e == 0:
                    continue
                iou = c / (size + self.area[e] - c)
                if iou > best_iou:
                    best, best_iou = e, iou
            if best_iou > 0.5:
                if not owner or self.owned[best]:
                    continue  # the same object, already pasted
                # the owner's version replaces a non-owner's
                local = self._within(self.bbox[best], tile)
                if local is not None:  # the old version lies in this tile's region: clear it there
                    r = region[local]
                    r[r == best] = 0
                else:
                    self.out[tile.outer] = region
                    old = np.array(self.out[self.bbox[best]])
                    old[old == best] = 0
                    self.out[self.bbox[best]] = old
                    region = np.array(self.out[tile.outer])
                sub = region[sl]
                label = best
            else:
                label = self.next_label
                self.next_label += 1
            free = mask & (sub == 0)
            n_free = int(free.sum())
            if n_free == 0:
                continue
            sub[free] = label
            self.area[label] = n_free
            self.bbox[label] = gsl
            self.owned[label] = owner
        pasted = fresh[labels]
        keep = pasted > 0
        region[keep] = pasted[keep]
        self.out[tile.outer] = region

    @staticmethod
    def _within(bbox: tuple, tile: Tile) -> tuple | None:
        """``bbox`` (global slices) in the coordinates of ``tile``'s outer region, or None when
        it reaches outside that region."""
        out = []
        for b, o in zip(bbox, tile.outer):
            if b.start < o.start or b.stop > o.stop:
                return None
            out.append(slice(b.start - o.start, b.stop - o.start))
        return tuple(out)

    def result(self):
        n = len(self.area)
        if self.next_label - 1 != n:
            logger.debug("stitching: %d labels issued, %d objects kept", self.next_label - 1, n)
        return self.out


def stitch_labels(tiles: Sequence[Tile], tile_labels: Iterable[np.ndarray], shape: Sequence[int], out=None):
    """Stitch per-tile label images into one label image without cutting or duplicating objects.

    Parameters
    ----------
    tiles : sequence of Tile
        The plan the labels were computed on (:func:`plan_tiles`).
    tile_labels : iterable of ndarray
        One label image per tile, shaped like ``tile.outer`` (may be a generator).
    shape : sequence of int
        Shape of the whole image.
    out : array-like, optional
        Output array (numpy or zarr, integer, zero-filled); a new ``int32``
        numpy array by default.

    Returns
    -------
    ndarray or the given ``out``
        Globally unique labels (1..n, possibly with gaps).  See the module
        docstring for the rule; it needs overlap > largest object diameter.

    Raises
    ------
    SegmentationError
        Labels whose shape does not match their tile, or a mismatched ``out``.
    """
    stitcher = _Stitcher(tuple(int(n) for n in shape), out)
    tiles = list(tiles)
    count = 0
    for tile, labels in zip(tiles, tile_labels):
        stitcher.add(tile, labels)
        count += 1
    if count != len(tiles):
        raise SegmentationError(f"{count} tile label images given for {len(tiles)} tiles")
    return stitcher.result()


def segment_tiled(array, segment_fn: Callable[[np.ndarray], np.ndarray], tile_shape, overlap,
                  out=None, progress: bool = True):
    """Segment a large image tile by tile and stitch the labels.

    Parameters
    ----------
    array : array-like
        Spatial (``YX`` or ``ZYX``) image: numpy, a tifffile memmap, a zarr
        array or a dask array.  Only one tile's outer region is read into
        memory at a time.
    segment_fn : callable
        ``segment_fn(tile_array) -> labels`` of the same shape.
    tile_shape, overlap : int or sequence of int
        See :func:`plan_tiles`; overlap must exceed the largest object diameter.
    out : array-like, optional
        Integer output, e.g. a zarr array for incremental writes, so peak
        memory depends on the tile size only.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ndarray or the given ``out``
        Stitched labels.
    """
    from tqdm.auto import tqdm

    shape = tuple(int(n) for n in array.shape)
    tiles = plan_tiles(shape, tile_shape, overlap)
    logger.info("segmenting %s in %d tiles of at most %s (overlap %s)", shape, len(tiles), tile_shape, overlap)

    def labels_iter():
        for tile in tqdm(tiles, desc="tiles", disable=not progress):
            block = np.asarray(array[tile.outer])
            yield segment_fn(block)

    return stitch_labels(tiles, labels_iter(), shape, out=out)
