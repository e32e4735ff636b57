"""Tests of the preprocessing steps (opsef_core.preprocess): shapes, dtypes, values against
direct scikit-image / scipy calls or hand-computed expectations, per channel / time point mapping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import color, exposure, filters, morphology, restoration

from opsef_core import reshape
from opsef_core.errors import AxesError, ConfigError
from opsef_core.image import Image
from opsef_core.preprocess import apply_step, available_steps, get_step

# ----------------------------------------------------------------------------- data

DTYPE_TOP = {np.uint8: 220, np.uint16: 3000, np.float32: 0.9}


def nuclei(shape, dtype=np.uint16, seed=0, n=10):
    """Synthetic nuclei: bright ellipsoids on a background ramp with Poisson noise."""
    rng = np.random.default_rng(seed)
    grids = np.indices(shape, dtype=np.float64)
    img = np.zeros(shape)
    for _ in range(n):
        centre = [rng.uniform(0.1 * s, 0.9 * s) for s in shape]
        radius = rng.uniform(3, 6)
        d2 = sum(((g - c) / (radius * (0.5 if len(shape) == 3 and i == 0 else 1.0))) ** 2
                 for i, (g, c) in enumerate(zip(grids, centre)))
        img += 100.0 * (d2 <= 1)
    img += 20 + 15 * grids[-1] / shape[-1]  # background ramp
    img = rng.poisson(img).astype(np.float64)
    img = img / img.max() * DTYPE_TOP[dtype]
    return img.astype(dtype) if dtype is np.float32 else np.rint(img).astype(dtype)


def as_image(arr, axes, **ps):
    return Image.from_array(arr, axes, pixel_size=ps or None, name="synthetic")


# parameters used for each step in the generic test (small radii keep it fast)
GENERIC = {
    "median": {"radius": 1},
    "mean": {"size": 3},
    "gaussian": {"sigma": 1.0},
    "unsharp": {"radius": 1.0, "amount": 1.5},
    "subtract_constant": {"value": 25},
    "rolling_ball": {"radius": 5},
    "tophat": {"radius": 3},
    "z_project": {"method": "max"},
    "clahe": {"clip_limit": 0.02},
    "gamma": {"gamma": 0.5},
    "normalize_percentile": {},
    "edges": {"method": "sobel"},
    "invert": {},
    "clip": {"low": 10, "high": 200},
    "bin": {"factors": 2, "reduce": "mean"},
    "rescale": {"factor": 0.5},
}
F32 = np.dtype(np.float32)
EXPECTED_DTYPE = {  # the documented output dtype for an input dtype
    **{k: (lambda dt: dt) for k in GENERIC},
    "clahe": lambda dt: F32,
    "gamma": lambda dt: F32,
    "normalize_percentile": lambda dt: F32,
    "edges": lambda dt: F32,
    "bin": lambda dt: F32,
}


def expected_shape(step, shape, axes):
    if step == "z_project":
        return tuple(n for n, a in zip(shape, axes) if a != "Z")
    if step in ("bin", "rescale"):
        return tuple(n // 2 if a in "YX" else n for n, a in zip(shape, axes))
    return shape


# ----------------------------------------------------------------------------- generic


def test_every_listed_step_is_registered():
    names = set(available_steps())
    assert set(GENERIC) | {"colour_deconvolution"} <= names
    assert get_step("rolling_ball").per_plane and get_step("rolling_ball").dims == "2d"
    assert get_step("z_project").dims == "3d-to-2d"
    assert get_step("colour_deconvolution").requires_rgb


CASES = [
    (step, ndim, dtype)
    for step in sorted(GENERIC)
    for ndim in (2, 3)
    for dtype in (np.uint8, np.uint16, np.float32)
    if not (step == "z_project" and ndim == 2)  # needs Z: see test_z_project_errors
]


@pytest.mark.parametrize("step,ndim,dtype", CASES)
def test_step_shape_axes_dtype_and_input_untouched(step, ndim, dtype):
    shape = (6, 40, 44) if ndim == 3 else (40, 44)
    axes = "ZYX" if ndim == 3 else "YX"
    arr = nuclei(shape, dtype)
    before = arr.copy()
    img = as_image(arr, axes, Z=2.0, Y=0.5, X=0.5) if ndim == 3 else as_image(arr, axes, Y=0.5, X=0.5)
    out = apply_step(img, step, **GENERIC[step])
    assert isinstance(out, Image)
    assert out.axes == (axes.replace("Z", "") if step == "z_project" else axes)
    assert out.shape == expected_shape(step, shape, axes)
    assert out.dtype == EXPECTED_DTYPE[step](np.dtype(dtype))
    assert np.isfinite(np.asarray(out.data, dtype=np.float64)).all()
    np.testing.assert_array_equal(arr, before)  # input not modified
    assert not np.shares_memory(np.asarray(out.data), arr)
    if step in ("clahe", "gamma", "normalize_percentile"):
        assert out.data.min() >= 0 and out.data.max() <= 1 and out.data.max() > 0.9


# ----------------------------------------------------------------------------- values


def test_median_equals_skimage_2d_and_3d():
    a2 = nuclei((40, 40), np.uint8)
    out = apply_step(as_image(a2, "YX"), "median", radius=2).data
    np.testing.assert_array_equal(out, filters.median(a2, morphology.disk(2)))
    a3 = nuclei((5, 30, 30), np.uint16)
    out3 = apply_step(as_image(a3, "ZYX"), "median", radius=1).data
    np.testing.assert_array_equal(out3, filters.median(a3, morphology.ball(1)))
    box = apply_step(as_image(a2, "YX"), "median", radius=1, footprint="square").data
    np.testing.assert_array_equal(box, ndi.median_filter(a2, size=3, mode="nearest"))


def test_mean_matches_hand_computed_box_mean():
    a = nuclei((30, 30), np.uint16)
    out = apply_step(as_image(a, "YX"), "mean", size=3).data
    for y, x in [(5, 7), (15, 15), (20, 3)]:
        assert out[y, x] == int(np.rint(a[y - 1 : y + 2, x - 1 : x + 2].astype(float).mean()))


def test_gaussian_isotropic_and_anisotropic_against_skimage():
    a = nuclei((40, 40), np.float32)
    out = apply_step(as_image(a, "YX"), "gaussian", sigma=2.0).data
    np.testing.assert_allclose(out, filters.gaussian(a.astype(np.float64), sigma=2.0), rtol=1e-5, atol=1e-6)
    a3 = nuclei((6, 32, 32), np.uint16)
    img3 = as_image(a3, "ZYX", Z=2.0, Y=0.5, X=0.5)
    aniso = apply_step(img3, "gaussian", sigma=2.0, anisotropic=True).data
    ref = filters.gaussian(a3.astype(np.float64), sigma=(0.5, 2.0, 2.0), preserve_range=True)
    np.testing.assert_array_equal(aniso, np.rint(ref).astype(np.uint16))
    per_axis = apply_step(img3, "gaussian", sigma=[0.5, 2.0, 2.0]).data
    np.testing.assert_array_equal(per_axis, aniso)
    with pytest.raises(ConfigError, match="3 spatial axes"):
        apply_step(img3, "gaussian", sigma=[1.0, 1.0])


def test_unsharp_matches_formula():
    a = nuclei((40, 40), np.float32)
    out = apply_step(as_image(a, "YX"), "unsharp", radius=1.5, amount=2.0).data
    f = a.astype(np.float64)
    ref = f + 2.0 * (f - ndi.gaussian_filter(f, 1.5, mode="reflect"))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    u8 = apply_step(as_image(nuclei((40, 40), np.uint8), "YX"), "unsharp", amount=5.0).data
    assert u8.dtype == np.uint8 and u8.max() == 255 and u8.min() == 0  # clipped, not wrapped


def test_subtract_constant_clips_unsigned_at_zero():
    a = np.array([[0, 10, 30, 255]], dtype=np.uint8)
    out = apply_step(as_image(a, "YX"), "subtract_constant", value=20).data
    np.testing.assert_array_equal(out, [[0, 0, 10, 235]])
    f = apply_step(as_image(a.astype(np.float32), "YX"), "subtract_constant", value=20).data
    np.testing.assert_array_equal(f, [[-20, -10, 10, 235]])


def test_rolling_ball_equals_skimage_and_is_per_plane():
    a = nuclei((3, 36, 36), np.uint16)
    out = apply_step(as_image(a, "ZYX"), "rolling_ball", radius=6).data
    for z in range(3):
        plane = a[z].astype(np.float64)
        ref = np.rint(plane - restoration.rolling_ball(plane, radius=6)).astype(np.uint16)
        np.testing.assert_array_equal(out[z], ref)
    # noiseless spots on a linear ramp: the ramp goes, the spots stay
    yy, xx = np.mgrid[:40, :40]
    spots = sum(((yy - cy) ** 2 + (xx - cx) ** 2 <= 9) for cy, cx in [(10, 10), (25, 30), (30, 12)])
    ramp = (50 + 0.5 * xx + 100 * spots).astype(np.uint16)
    flat = apply_step(as_image(ramp, "YX"), "rolling_ball", radius=8).data
    inner = (slice(5, -5), slice(5, -5))
    assert np.abs(flat[inner][spots[inner] == 0].astype(float)).max() <= 2
    assert np.abs(flat[spots == 1].astype(float) - 100).max() <= 2


def test_tophat_3d_equals_skimage_white_tophat():
    a = nuclei((6, 30, 30), np.uint16)
    out = apply_step(as_image(a, "ZYX"), "tophat", radius=2).data
    np.testing.assert_array_equal(out, morphology.white_tophat(a, morphology.ball(2)))


def test_z_project_sum_of_16_bit_values_near_max_does_not_wrap():
    rng = np.random.default_rng(3)
    a = rng.integers(65500, 65536, size=(12, 8, 9)).astype(np.uint16)
    img = as_image(a, "ZYX", Z=3.0, Y=0.4, X=0.4)
    s = apply_step(img, "z_project", method="sum")
    assert s.axes == "YX" and s.pixel_size == {"Y": 0.4, "X": 0.4}
    assert s.dtype == np.uint32
    exact = [[sum(int(v) for v in a[:, y, x]) for x in range(9)] for y in range(8)]
    np.testing.assert_array_equal(s.data, np.array(exact))
    assert s.data.min() > 12 * 65499
    m = apply_step(img, "z_project", method="mean")
    assert m.dtype == np.float32
    np.testing.assert_allclose(m.data, np.array(exact) / 12, rtol=1e-6)
    mx = apply_step(img, "z_project", method="max")
    assert mx.dtype == np.uint16 and (mx.data == a.max(0)).all()
    med = apply_step(img, "z_project", method="median", z_start=2, z_stop=7)
    assert med.dtype == np.uint16
    np.testing.assert_array_equal(med.data, np.median(a[2:7], axis=0).astype(np.uint16))


def test_z_project_errors():
    img2d = as_image(nuclei((20, 20)), "YX")
    with pytest.raises(AxesError, match="Z axis"):
        apply_step(img2d, "z_project")
    img3d = as_image(nuclei((4, 20, 20)), "ZYX")
    with pytest.raises(AxesError, match="outside the 4 planes"):
        apply_step(img3d, "z_project", z_start=2, z_stop=9)
    with pytest.raises(ConfigError, match="z_stop"):
        apply_step(img3d, "z_project", z_start=3, z_stop=2)


def test_clahe_equals_skimage_2d_and_3d():
    a = nuclei((64, 64), np.uint16)
    out = apply_step(as_image(a, "YX"), "clahe", kernel_size=16, clip_limit=0.02).data
    ref = exposure.equalize_adapthist(a, kernel_size=16, clip_limit=0.02)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    a3 = nuclei((8, 32, 32), np.uint8)
    out3 = apply_step(as_image(a3, "ZYX"), "clahe").data
    np.testing.assert_allclose(out3, exposure.equalize_adapthist(a3), atol=1e-6)


def test_edges_against_skimage_and_roberts_per_plane():
    a = nuclei((36, 36), np.uint16)
    out = apply_step(as_image(a, "YX"), "edges", method="scharr").data
    np.testing.assert_allclose(out, filters.scharr(a.astype(np.float64)), rtol=1e-5)
    a3 = nuclei((3, 30, 30), np.uint8)
    rob = apply_step(as_image(a3, "ZYX"), "edges", method="roberts").data
    for z in range(3):
        np.testing.assert_allclose(rob[z], filters.roberts(a3[z].astype(np.float64)), rtol=1e-5)
    sob3 = apply_step(as_image(a3, "ZYX"), "edges", method="sobel").data
    np.testing.assert_allclose(sob3, filters.sobel(a3.astype(np.float64)), rtol=1e-5)


def test_invert_is_dtype_aware():
    u16 = np.array([[0, 1, 1000, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(apply_step(as_image(u16, "YX"), "invert").data, [[65535, 65534, 64535, 0]])
    assert apply_step(as_image(u16, "YX"), "invert").dtype == np.uint16
    f = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(apply_step(as_image(f, "YX"), "invert").data, [[1.0, 0.75, 0.0]])
    i16 = np.array([[-5, 0, 20]], dtype=np.int16)
    np.testing.assert_array_equal(apply_step(as_image(i16, "YX"), "invert").data, [[20, 15, -5]])
    big = np.array([[10.0, 30.0, 110.0]], dtype=np.float32)
    np.testing.assert_allclose(apply_step(as_image(big, "YX"), "invert").data, [[110.0, 90.0, 10.0]])


def test_gamma_on_normalised_data():
    a = nuclei((30, 30), np.uint8)
    out = apply_step(as_image(a, "YX"), "gamma", gamma=0.5, normalise="dtype").data
    np.testing.assert_allclose(out, (a / 255.0) ** 0.5, rtol=1e-6)
    np.testing.assert_allclose(out * 255, exposure.adjust_gamma(a, 0.5), atol=1.0)
    mm = apply_step(as_image(a, "YX"), "gamma", gamma=2.0).data  # default: the data's own min..max
    u = (a - float(a.min())) / (float(a.max()) - a.min())
    np.testing.assert_allclose(mm, u**2, rtol=1e-6, atol=1e-7)


def test_clip_modes():
    a = np.array([[0, 3, 5, 9, 250]], dtype=np.uint8)
    z = apply_step(as_image(a, "YX"), "clip", low=5, mode="zero_below").data
    np.testing.assert_array_equal(z, [[0, 0, 5, 9, 250]])
    c = apply_step(as_image(a, "YX"), "clip", low=5, high=200).data
    np.testing.assert_array_equal(c, [[5, 5, 5, 9, 200]])
    with pytest.raises(ConfigError, match="high"):
        apply_step(as_image(a, "YX"), "clip", low=5, high=2)


def test_normalize_percentile_hand_computed():
    a = nuclei((40, 40), np.uint16)
    out = apply_step(as_image(a, "YX"), "normalize_percentile", low=2, high=98, clip=False).data
    lo, hi = np.percentile(a, [2, 98])
    np.testing.assert_allclose(out, (a - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    const = apply_step(as_image(np.full((8, 8), 7, np.uint8), "YX"), "normalize_percentile").data
    assert (const == 0).all()


def test_bin_reduces_and_updates_pixel_size():
    a = nuclei((4, 21, 20), np.uint16)
    img = as_image(a, "ZYX", Z=2.0, Y=0.3, X=0.3)
    m = apply_step(img, "bin", factors=2)
    assert m.shape == (4, 10, 10) and m.pixel_size == {"Z": 2.0, "Y": 0.6, "X": 0.6}
    blocks = a[:, :20, :].reshape(4, 10, 2, 10, 2).astype(np.float64)
    np.testing.assert_allclose(m.data, blocks.mean(axis=(2, 4)), rtol=1e-6)
    s = apply_step(img, "bin", factors={"Z": 2, "Y": 2, "X": 2}, reduce="sum")
    assert s.shape == (2, 10, 10) and s.pixel_size == {"Z": 4.0, "Y": 0.6, "X": 0.6}
    assert s.dtype == np.uint32
    ref = a[:, :20].reshape(2, 2, 10, 2, 10, 2).astype(np.int64).sum(axis=(1, 3, 5))
    np.testing.assert_array_equal(s.data, ref)
    mx = apply_step(img, "bin", factors={"y": 3, "x": 2}, reduce="max")
    assert mx.dtype == np.uint16 and mx.shape == (4, 7, 10)
    assert mx.data[0, 0, 0] == a[0, :3, :2].max()
    with pytest.raises(AxesError, match="Z"):
        apply_step(as_image(a[0], "YX"), "bin", factors={"Z": 2})


def test_rescale_updates_pixel_size_and_values():
    a = nuclei((3, 20, 30), np.uint16)
    img = as_image(a, "ZYX", Z=2.0, Y=0.5, X=0.5)
    half = apply_step(img, "rescale", factor=0.5)
    assert half.shape == (3, 10, 15) and half.dtype == np.uint16
    assert half.pixel_size == {"Z": 2.0, "Y": 1.0, "X": 1.0}
    up = apply_step(img, "rescale", factor={"Y": 2, "X": 2}, order=0)
    np.testing.assert_array_equal(up.data, a.repeat(2, axis=1).repeat(2, axis=2))
    assert up.pixel_size == {"Z": 2.0, "Y": 0.25, "X": 0.25}


GEOMETRY_CASES = [
    ("rescale", {"factor": 0.5}, lambda im: reshape.rescale(im, 0.5)),
    ("rescale", {"factor": {"Y": 2, "X": 1.5}, "order": 3},
     lambda im: reshape.rescale(im, {"Y": 2, "X": 1.5}, order=3)),
    ("rescale", {"factor": 0.4, "order": 0}, lambda im: reshape.rescale(im, 0.4, order=0)),
    ("rescale", {"factor": 0.5, "anti_aliasing": False}, lambda im: reshape.rescale(im, 0.5, anti_aliasing=False)),
    ("bin", {"factors": 2}, lambda im: reshape.bin_image(im, 2, crop=True)),
    ("bin", {"factors": {"Y": 3, "X": 2}, "reduce": "sum"},
     lambda im: reshape.bin_image(im, {"Y": 3, "X": 2}, "sum", crop=True)),
    ("bin", {"factors": 3, "reduce": "max"}, lambda im: reshape.bin_image(im, 3, "max", crop=True)),
]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("step,params,direct", GEOMETRY_CASES)
def test_geometry_steps_are_the_reshape_functions(step, params, direct, dtype):
    """One resampling code path: the steps give exactly what opsef_core.reshape gives."""
    data = np.stack([nuclei((4, 21, 26), np.uint16, seed=s) for s in range(2)]).astype(dtype)
    img = Image.from_array(data, "CZYX", pixel_size={"Z": 2.0, "Y": 0.3, "X": 0.3})
    out, ref = apply_step(img, step, **params), direct(img)
    assert out.dtype == ref.dtype and out.shape == ref.shape and out.pixel_size == ref.pixel_size
    np.testing.assert_array_equal(out.data, ref.data)
    if step == "rescale" or params.get("reduce") == "max":
        assert out.dtype == np.dtype(dtype)


def test_rescale_step_uses_an_edge_boundary():
    from skimage.transform import resize

    ramp = np.tile(np.arange(0, 100, 10, dtype=np.float32), (6, 1))
    up = apply_step(as_image(ramp, "YX"), "rescale", factor=2).data
    np.testing.assert_allclose(up, resize(ramp, (12, 20), order=1, mode="edge", preserve_range=True), rtol=1e-6)
    assert up[0, 0] == 0  # a mirror boundary gives 2.5 here


def _hed_image():
    """RGB image made from a known haematoxylin map (no eosin, no DAB)."""
    yy, xx = np.mgrid[:48, :48]
    h = np.zeros((48, 48))
    for cy, cx, r in [(12, 12, 6), (30, 20, 8), (20, 38, 5)]:
        h[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    h = 0.3 * ndi.gaussian_filter(h, 1.0)  # realistic density: dark but not saturated in 8 bit
    hed = np.stack([h, np.zeros_like(h), np.zeros_like(h)], axis=-1)
    return h, color.hed2rgb(hed)


def test_colour_deconvolution_recovers_haematoxylin():
    h, rgb = _hed_image()
    img = as_image((rgb * 255).round().astype(np.uint8), "YXC", Y=0.25, X=0.25)
    assert img.axes == "CYX"
    out = apply_step(img, "colour_deconvolution", stain="haematoxylin")
    assert out.axes == "YX" and out.dtype == np.float32 and out.channel_names == ()
    assert np.corrcoef(out.data.ravel(), h.ravel())[0, 1] > 0.98
    eos = apply_step(img, "colour_deconvolution", stain="eosin").data
    assert np.abs(eos).max() < 0.1 * out.data.max()
    ihc = color.rgb2hed(rgb)  # direct call, same input convention
    np.testing.assert_allclose(
        apply_step(as_image(rgb.astype(np.float32), "YXC"), "colour_deconvolution", stain="dab").data,
        ihc[..., 2], atol=1e-4,
    )
    vol = np.stack([rgb, rgb[::-1]]).astype(np.float32)  # a 2-plane RGB stack, axes ZYXC
    out3 = apply_step(as_image(vol, "ZYXC"), "colour_deconvolution")
    assert out3.axes == "ZYX" and out3.shape == (2, 48, 48)
    np.testing.assert_allclose(out3.data[1], color.rgb2hed(rgb[::-1])[..., 0], atol=1e-4)
    with pytest.raises(AxesError, match="RGB"):
        apply_step(as_image(nuclei((2, 20, 20)), "CYX"), "colour_deconvolution")


# ----------------------------------------------------------------------------- mapping over T and C


def test_steps_map_over_time_and_channels():
    data = np.stack([np.stack([nuclei((4, 24, 24), np.uint16, seed=10 * t + c) * (c + 1) for c in range(2)])
                     for t in range(2)])
    ps = {"Z": 1.5, "Y": 0.5, "X": 0.5}
    img = Image.from_array(data, "TCZYX", pixel_size=ps, channel_names=("dna", "gfp"))
    cases = [
        ("normalize_percentile", {}),
        ("median", {"radius": 1}),
        ("rolling_ball", {"radius": 4}),
        ("z_project", {"method": "sum"}),
        ("rescale", {"factor": 0.5}),
    ]
    for step, params in cases:
        out = apply_step(img, step, **params)
        assert out.channel_names == ("dna", "gfp")
        for t in range(2):
            for c in range(2):
                single = as_image(data[t, c], "ZYX", Z=1.5, Y=0.5, X=0.5)
                ref = apply_step(single, step, **params)
                np.testing.assert_array_equal(out.spatial(t=t, c=c), ref.data)


def test_dask_input_is_computed_per_channel():
    da = pytest.importorskip("dask.array")
    a = np.stack([nuclei((30, 30), np.uint16, seed=s) for s in range(3)])
    img = Image.from_array(da.from_array(a, chunks=(1, 30, 30)), "CYX")
    out = apply_step(img, "gaussian", sigma=1.0)
    ref = apply_step(Image.from_array(a, "CYX"), "gaussian", sigma=1.0)
    np.testing.assert_array_equal(out.data, ref.data)


def test_get_step_typo_lists_available_names():
    with pytest.raises(ConfigError) as exc:
        get_step("medain")
    msg = str(exc.value)
    assert "'medain'" in msg and "did you mean 'median'" in msg and "rolling_ball" in msg
