"""Tiling plans and seamless stitching: tiled segmentation equals whole-image segmentation."""

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from opsef_core.errors import ConfigError, SegmentationError
from opsef_core.tiling import plan_tiles, segment_tiled, stitch_labels


def _coverage(shape, tiles, attr):
    count = np.zeros(shape, np.int32)
    for t in tiles:
        count[getattr(t, attr)] += 1
    return count


@pytest.mark.parametrize("shape,tile,overlap", [((100, 230), 64, 10), ((37, 50, 61), (20, 32, 32), (4, 6, 6)),
                                                ((30, 40), 64, 8), ((200, 200), 50, 0)])
def test_plan_covers_exactly_with_requested_overlap(shape, tile, overlap):
    tiles = plan_tiles(shape, tile, overlap)
    nd = len(shape)
    tile = (tile,) * nd if np.isscalar(tile) else tile
    overlap = (overlap,) * nd if np.isscalar(overlap) else overlap
    assert (_coverage(shape, tiles, "inner") == 1).all()  # inner regions partition the image
    for t in tiles:
        assert all(n <= m for n, m in zip(t.shape, tile))
        assert t.origin == tuple(s.start for s in t.outer)
        for ax in range(nd):
            i, o = t.inner[ax], t.outer[ax]
            assert o.start == max(0, i.start - overlap[ax]) and o.stop == min(shape[ax], i.stop + overlap[ax])
            assert i.stop - i.start >= (tile[ax] - 2 * overlap[ax]) // 2 or shape[ax] <= tile[ax]
        np.testing.assert_array_equal(np.arange(np.prod(shape)).reshape(shape)[t.outer][t.inner_local],
                                      np.arange(np.prod(shape)).reshape(shape)[t.inner])
    if nd == 2 and shape == (100, 230):
        assert len({t.index[0] for t in tiles}) == 2 and len({t.index[1] for t in tiles}) == 5


def test_plan_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="exceed twice the overlap"):
        plan_tiles((100, 100), 20, 10)
    with pytest.raises(ConfigError, match="overlap must be >= 0"):
        plan_tiles((100, 100), 20, -1)
    with pytest.raises(ConfigError, match="3 values for a 2-D image"):
        plan_tiles((100, 100), (20, 20, 20), 2)


def _objects(shape, radius_range, n, rng, seam_points):
    """Binary image with non-touching discs/balls, some centred on given seam points."""
    grid = np.indices(shape)
    img = np.zeros(shape, np.float32)
    centres = list(seam_points) + [tuple(rng.integers(0, s) for s in shape) for _ in range(n)]
    placed = []
    for c in centres:
        r = rng.uniform(*radius_range)
        if any(np.linalg.norm(np.subtract(c, pc)) < r + pr + 2 for pc, pr in placed):
            continue
        placed.append((c, r))
        dist2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
        img[dist2 <= r * r] = 1.0
    return img, len(placed)


def _segment(a):
    return ndi.label(np.asarray(a) > 0.5)[0]


def _same_objects(a, b):
    """True when two label images hold the same set of pixel sets (labels may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def _seam_points(tiles, shape):
    pts = set()
    for t in tiles:
        pts.add(tuple(min(s.stop, n - 1) for s, n in zip(t.inner, shape)))
    return sorted(pts)


def test_stitch_2d_equals_whole_image():
    rng = np.random.default_rng(0)
    shape, tile, overlap = (180, 260), 72, 18  # largest disc diameter 17 < overlap
    tiles = plan_tiles(shape, tile, overlap)
    img, n = _objects(shape, (3, 8.5), 150, rng, _seam_points(tiles, shape))
    whole = _segment(img)
    crossing = sum(
        1 for sl in ndi.find_objects(whole)
        if any(any(s.start < i.stop <= s.stop - 1 for s, i in zip(sl, t.inner)) for t in tiles))
    assert n > 60 and crossing > 10  # the test really has objects across seams
    stitched = stitch_labels(tiles, (_segment(img[t.outer]) for t in tiles), shape)
    assert stitched.max() == whole.max()
    assert _same_objects(stitched, whole)


def test_stitch_3d_equals_whole_image_dask_in_zarr_out(tmp_path):
    rng = np.random.default_rng(1)
    shape, tile, overlap = (40, 56, 56), (32, 40, 40), 12  # largest ball diameter 11 < overlap
    tiles = plan_tiles(shape, tile, overlap)
    assert len({t.index[0] for t in tiles}) == 2
    img, n = _objects(shape, (2.5, 5.5), 100, rng, _seam_points(tiles, shape))
    whole = _segment(img)
    assert n > 30 and len(tiles) == 8
    out = zarr.open_array(tmp_path / "labels.zarr", mode="w", shape=shape, chunks=(20, 28, 28), dtype="int32")
    seen = []

    def seg(block):
        seen.append(block.shape)
        return _segment(block)

    result = segment_tiled(da.from_array(img, chunks=(20, 32, 32)), seg, tile, overlap, out=out, progress=False)
    assert result is out and len(seen) == len(tiles)
    assert max(np.prod(s) for s in seen) <= np.prod(tile)  # only a tile is ever materialised
    stitched = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]
    assert _same_objects(stitched, whole)


def test_duplicates_resolved_by_iou_and_owner_kept():
    """Two tiles segment the same object slightly differently: one copy is kept, the owner's."""
    shape = (40, 60)
    tiles = plan_tiles(shape, (40, 40), 10)  # two tiles along X, inner split at x=30
    assert len(tiles) == 2
    obj = np.zeros(shape, np.int32)
    obj[15:25, 24:34] = 1  # bbox centre x=28 -> owned by the left tile
    left = obj[tiles[0].outer].copy()
    right = obj[tiles[1].outer].copy()
    right[right.nonzero()[0][0], right.nonzero()[1][0]] = 0  # right tile misses one pixel
    for order in ([0, 1], [1, 0]):
        ts = [tiles[i] for i in order]
        labs = [(left, right)[i] for i in order]
        out = stitch_labels(ts, labs, shape)
        assert len(np.unique(out[out > 0])) == 1
        np.testing.assert_array_equal(out > 0, obj > 0)  # the owner's (complete) version
    with pytest.raises(SegmentationError, match="expected"):
        stitch_labels(tiles, [left, right[:, :5]], shape)
