"""Tiled segmentation with any backend: seams, 2D/3D, zarr output, lazy input, overlap, normalisation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from opsef_core.errors import ConfigError, SegmentationError
from opsef_core.image import Image
from opsef_core.segment import get_segmenter
from opsef_core.tiling import global_percentiles, segment_tiled_image, strided_sample
from opsef_core.tiling import plan_tiles

# 8-bit camera image: offset-subtracted background clipped at 0, nuclei saturating at 255 in their
# centres.  Every tile then holds 0 and 255, so the classical backend's per-tile min/max
# normalisation (it takes no fixed limits) is the same in every tile, and only stitching is tested.
PARAMS = {"sigma": 0.0, "normalize": None, "threshold": 0.35, "h": 1.0, "min_size": 10}


def _nuclei(shape, centres, radii, rng):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    img = rng.normal(2.0, 6.0, shape).astype(np.float32)
    for c, r in zip(centres, radii):
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        img += 420.0 * np.exp(-d2 / (2 * (0.6 * r) ** 2)) * (d2 <= r * r)
    return np.clip(img, 0, 255).astype(np.uint8)


def _seam_centres(shape, tile_shape, overlap, rng, n_random):
    """Nuclei on every seam and tile corner of the plan, plus random ones (no two overlapping)."""
    tiles = plan_tiles(shape, tile_shape, overlap)
    seams = [sorted({t.inner[d].start for t in tiles} - {0}) for d in range(len(shape))]
    cands = []
    for d, cuts in enumerate(seams):
        for cut in cuts:
            for _ in range(4):
                c = [rng.uniform(12, n - 12) for n in shape]
                c[d] = cut + rng.uniform(-3, 3)
                cands.append(c)
    if all(seams):
        for corner in np.array(np.meshgrid(*seams, indexing="ij")).reshape(len(shape), -1).T:
            cands.append(list(corner + rng.uniform(-2, 2, len(shape))))
    cands += [[rng.uniform(12, n - 12) for n in shape] for _ in range(n_random)]
    centres, radii = [], []
    for c in cands:
        r = rng.uniform(5, 8)
        if all(np.linalg.norm(np.subtract(c, o)) > r + ro - 1 for o, ro in zip(centres, radii)):
            centres.append(c)
            radii.append(r)
    return centres, radii, tiles


def assert_same_objects(a, b):
    """Same objects, pixel set for pixel set (labels may be numbered differently)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    pairs = np.unique(np.stack([a, b]), axis=1)
    fg = (pairs[0] > 0) | (pairs[1] > 0)
    p = pairs[:, fg]
    assert (p > 0).all(), "an object of one result is (partly) background in the other"
    assert len(np.unique(p[0])) == p.shape[1] == len(np.unique(p[1])), "objects split or merged differently"


@pytest.fixture(scope="module")
def image2d():
    rng = np.random.default_rng(7)
    shape, tile, ov = (384, 352), 160, 32
    centres, radii, tiles = _seam_centres(shape, tile, ov, rng, 60)
    data = _nuclei(shape, centres, radii, rng)
    for t in tiles:  # precondition of the exact comparison (see PARAMS)
        assert data[t.outer].min() == 0 and data[t.outer].max() == 255
    img = Image.from_array(data, "YX", pixel_size={"Y": 0.5, "X": 0.5}, name="seams2d")
    return img, tile, ov, len(centres)


def test_tiled_equals_whole_2d(image2d):
    img, tile, ov, n = image2d
    whole = get_segmenter("classical").segment(img, PARAMS)
    tiled, info = segment_tiled_image(img, "classical", PARAMS, tile_shape=tile, overlap=ov,
                                      progress=False, return_info=True)
    assert info["n_tiles"] == len(plan_tiles(img.shape, tile, ov)) > 4 and info["normalization"] == "per-tile"
    assert tiled.shape == whole.shape and tiled.dtype == np.int32
    assert len(np.unique(whole)) - 1 >= 0.9 * n
    assert_same_objects(whole, tiled)
    assert info["n_large"] == 0 and info["n_cut_candidates"] == 0


def test_tiled_equals_whole_3d():
    rng = np.random.default_rng(3)
    shape, tile, ov = (44, 96, 96), (34, 60, 60), (12, 16, 16)
    centres, radii, tiles = _seam_centres(shape, tile, ov, rng, 20)
    data = _nuclei(shape, centres, radii, rng)
    img = Image.from_array(data, "ZYX", pixel_size={"Z": 1.0, "Y": 1.0, "X": 1.0})
    whole = get_segmenter("classical").segment(img, PARAMS)
    tiled = segment_tiled_image(img, "classical", PARAMS, tile_shape=tile, overlap=ov, progress=False)
    assert len({t.index[0] for t in tiles}) > 1 and len(tiles) >= 8  # split along Z, Y and X
    assert len(np.unique(whole)) - 1 >= 0.9 * len(centres)
    assert_same_objects(whole, tiled)


def test_zarr_output_and_lazy_tiff_input(image2d, tmp_path):
    import zarr

    from opsef_core.io import read_image, write_ome_tiff

    img, tile, ov, _ = image2d
    reference = segment_tiled_image(img, "classical", PARAMS, tile_shape=tile, overlap=ov, progress=False)
    path = write_ome_tiff(tmp_path / "big.ome.tif", img)
    assert not isinstance(read_image(path, lazy=True).data, np.ndarray)  # dask: read tile by tile
    out = tmp_path / "labels.zarr"
    res = segment_tiled_image(path, "classical", PARAMS, tile_shape=tile, overlap=ov, out=out, progress=False)
    assert isinstance(res, zarr.Array)
    back = zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_array_equal(back, reference)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp folder renamed
    with pytest.raises(ConfigError, match="exists"):
        segment_tiled_image(path, "classical", PARAMS, tile_shape=tile, overlap=ov, out=out, progress=False)


def test_overlap_smaller_than_objects_warns(caplog):
    rng = np.random.default_rng(1)
    shape = (200, 200)
    centres = [(100, 100), (40, 60), (150, 40)]
    data = _nuclei(shape, centres, [30, 12, 12], rng)  # one 60-px nucleus across the seam
    img = Image.from_array(data, "YX")
    with caplog.at_level(logging.WARNING, logger="opsef_core.tiling.images"):
        _, info = segment_tiled_image(img, "classical", PARAMS, tile_shape=120, overlap=16,
                                      progress=False, return_info=True)
    assert info["n_large"] + info["n_cut_candidates"] >= 1
    msg = [r.getMessage() for r in caplog.records if "overlap" in r.getMessage() and "cut" in r.getMessage()]
    assert msg and str(info["n_large"]) in msg[0]


def test_global_normalisation_limits_reach_every_tile():
    """A backend with ``normalize_limits`` gets the same whole-image limits in every tile."""
    from typing import Union

    from opsef_core.segment.base import Segmenter, SegmenterParams, register_segmenter

    seen = []

    class _P(SegmenterParams):
        channel: Union[int, str, None] = None
        normalize: tuple[float, float] = (1.0, 99.0)
        normalize_limits: Union[tuple[float, float], None] = None

    @register_segmenter
    class _Recorder(Segmenter):
        name = "_tiled_recorder"
        Params = _P

        def predict(self, image, params):
            seen.append(params.normalize_limits)
            return {"x": np.asarray(image.data)}

        def decode(self, prediction, image, params):
            return np.zeros(prediction["x"].shape, np.int32)

    rng = np.random.default_rng(5)
    data = rng.gamma(2.0, 50.0, (300, 300)).astype(np.float32)
    data[:100] *= 10  # one bright region: per-tile percentiles would differ a lot
    img = Image.from_array(data, "YX")
    segment_tiled_image(img, "_tiled_recorder", {}, tile_shape=128, overlap=16, progress=False)
    lo, hi = np.percentile(data, (1.0, 99.0))
    assert len(seen) == len(plan_tiles(data.shape, 128, 16)) and len(set(seen)) == 1
    assert seen[0][0] == pytest.approx(lo, rel=0.05) and seen[0][1] == pytest.approx(hi, rel=0.05)


def test_stardist_gets_prenormalised_tiles():
    """StarDist takes ``normalize=False``: tiles are pre-normalised with whole-image limits."""
    from opsef_core.tiling.images import _normalization_plan

    seg = get_segmenter("stardist")
    rng = np.random.default_rng(2)
    data = rng.gamma(2.0, 50.0, (2500, 2500)).astype(np.float32)
    params, limits, mode = _normalization_plan(seg, {"normalize": (1.0, 99.8)}, data, None)
    assert mode == "global" and params["normalize"] is False
    assert limits == pytest.approx(tuple(np.percentile(data, (1.0, 99.8))), rel=0.02)
    assert strided_sample(data, 1_000_000).shape == (834, 834)
    assert global_percentiles(data, (50, 50))[0] == pytest.approx(np.median(data), rel=0.02)


def test_stardist_tiles_are_one_network_call_each(monkeypatch):
    """A StarDist tile is one network pass (the tile bounds memory): without it StarDist's own
    guess would cut a 640² tile into 2x2 calls; a given ``n_tiles`` is kept."""
    from opsef_core.segment import stardist_backend

    seen = []
    real = stardist_backend.network_pass
    monkeypatch.setattr(stardist_backend, "network_pass", lambda m, x, n: seen.append(n) or real(m, x, n))
    rng = np.random.default_rng(3)
    img = Image.from_array(rng.gamma(2.0, 50.0, (700, 700)).astype(np.float32), "YX")
    segment_tiled_image(img, "stardist", {"model": "stardist2d_demo"}, tile_shape=640, overlap=64, progress=False)
    n = len(plan_tiles((700, 700), 640, 64))
    model = stardist_backend.load_stardist_model("stardist2d_demo")
    assert stardist_backend.guess_n_tiles(model, np.zeros((640, 640), np.float32)) != (1, 1)
    assert seen == [(1, 1)] * n
    seen.clear()
    segment_tiled_image(img, "stardist", {"model": "stardist2d_demo", "n_tiles": (2, 1)}, tile_shape=640,
                        overlap=64, progress=False)
    assert seen == [(2, 1)] * n


def test_bad_inputs_raise_our_errors():
    img = Image.from_array(np.zeros((2, 64, 64), np.uint8), "CYX")
    with pytest.raises(SegmentationError, match="2 channels"):
        segment_tiled_image(img, "classical", PARAMS, tile_shape=32, overlap=4, progress=False)
    with pytest.raises(ConfigError, match="twice the overlap"):
        segment_tiled_image(img, "classical", PARAMS, tile_shape=32, overlap=20, channel=1, progress=False)
    with pytest.raises(ConfigError, match="unknown segmenter"):
        segment_tiled_image(img, "nope", {}, channel=0, progress=False)


@pytest.mark.parametrize("backend", ["classical", "cellpose", "unet"])
def test_backends_with_limits_get_whole_image_percentiles(backend):
    """Classical, Cellpose and the U-Net take ``normalize_limits``: tiles share the global limits."""
    from opsef_core.segment import get_segmenter
    from opsef_core.tiling.images import _normalization_plan, global_percentiles

    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 50.0, (300, 300)).astype(np.float32)
    seg = get_segmenter(backend)
    params = {"normalize": (2.0, 98.0)}
    out, pre, mode = _normalization_plan(seg, params, data, None)
    assert mode == "global" and pre is None
    lo, hi = global_percentiles(data, (2.0, 98.0))
    assert out["normalize_limits"] == (lo, hi)
    assert np.isclose(lo, np.percentile(data, 2.0), rtol=0.05) and np.isclose(hi, np.percentile(data, 98.0), rtol=0.05)
    validated = seg.params(out)
    assert validated.normalize_limits == (lo, hi)


def test_classical_normalize_limits_replace_the_image_percentiles():
    """Fixed limits give the same intensity map on a crop as on the whole image (no re-stretching)."""
    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter

    rng = np.random.default_rng(4)
    data = rng.normal(100.0, 20.0, (128, 128)).astype(np.float32)
    data[:, 64:] += 200.0  # the right half is brighter: per-crop percentiles would differ
    seg = get_segmenter("classical")
    p = seg.params({"sigma": 0.0, "normalize_limits": (50.0, 350.0)})
    whole = seg.predict(Image(data, axes="YX"), p)["intensity"]
    crop = seg.predict(Image(data[:, :64].copy(), axes="YX"), p)["intensity"]
    np.testing.assert_allclose(crop, whole[:, :64], atol=1e-6)
    expected = np.clip((data[:, :64] - 50.0) / 300.0, 0, 1)
    np.testing.assert_allclose(crop, expected, atol=1e-5)
    with pytest.raises(Exception, match="normalize_limits"):
        seg.params({"normalize_limits": (5.0, 1.0)})
