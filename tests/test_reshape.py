"""Sub-stacks, rescaling (pixel sizes, dtype, no x/y swap), label resizing, binning."""

import numpy as np
import pytest
from skimage.draw import disk

from opsef_core import reshape
from opsef_core.errors import AxesError
from opsef_core.image import Image


def _volume():
    data = np.arange(2 * 10 * 12 * 16, dtype=np.uint16).reshape(2, 10, 12, 16)
    return Image.from_array(data, "CZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5})


def test_substack():
    im = _volume()
    sub = reshape.substack(im, 2, 9, 3)
    assert sub.shape == (2, 3, 12, 16) and sub.pixel_size["Z"] == 6.0
    np.testing.assert_array_equal(sub.data, im.data[:, 2:9:3])
    assert reshape.substack(im, -2).shape[1] == 2
    with pytest.raises(AxesError, match="selects nothing"):
        reshape.substack(im, 20, 30)
    with pytest.raises(AxesError, match="needs a Z axis"):
        reshape.substack(im.sel(z=0), 0, 1)


def test_rescale_non_square_keeps_orientation_and_dtype():
    img = np.zeros((40, 100), np.uint16)
    img[5:15, 60:90] = 1000  # a bright bar near the top right
    im = Image.from_array(img, "YX", pixel_size={"Y": 0.2, "X": 0.2})
    half = reshape.rescale(im, 0.5)
    assert half.shape == (20, 50) and half.dtype == np.uint16
    assert half.pixel_size == pytest.approx({"Y": 0.4, "X": 0.4})
    ys, xs = np.nonzero(half.data > 500)
    assert 2 <= ys.mean() <= 8 and 30 <= xs.mean() <= 45
    aniso = reshape.rescale(_volume(), {"Z": 2.0, "X": 0.5})
    assert aniso.shape == (2, 20, 12, 8)
    assert aniso.pixel_size == pytest.approx({"Z": 1.0, "Y": 0.5, "X": 1.0})
    flt = reshape.rescale(im, 2.0, preserve_dtype=False)
    assert flt.dtype == np.float32 and flt.data.max() == pytest.approx(1000, rel=1e-3)
    with pytest.raises(AxesError, match="spatial axes are YX"):
        reshape.rescale(im, {"Z": 2})


def test_rescale_labels_nearest_no_new_values():
    lab = np.zeros((50, 70), np.uint32)
    lab[disk((20, 20), 10, shape=lab.shape)] = 7
    lab[disk((30, 50), 12, shape=lab.shape)] = 100_000
    for shape in [(37, 91), (100, 140), (25, 35)]:
        out = reshape.rescale_labels(lab, shape)
        assert out.shape == shape and out.dtype == lab.dtype
        assert set(np.unique(out)) == {0, 7, 100_000}
    up = reshape.rescale_labels(lab, (100, 140))
    np.testing.assert_array_equal(up[::2, ::2], lab)
    with pytest.raises(AxesError):
        reshape.rescale_labels(lab, (10, 10, 10))


def test_bin_image_against_reshape_reference():
    im = _volume()
    data = im.data.astype(np.int64)
    ref = data.reshape(2, 5, 2, 4, 3, 4, 4)
    mean = reshape.bin_image(im, {"Z": 2, "Y": 3, "X": 4})
    np.testing.assert_allclose(mean.data, ref.mean(axis=(2, 4, 6)))
    assert mean.pixel_size == pytest.approx({"Z": 4.0, "Y": 1.5, "X": 2.0})
    np.testing.assert_array_equal(reshape.bin_image(im, {"Z": 2, "Y": 3, "X": 4}, "sum").data,
                                  ref.sum(axis=(2, 4, 6)))
    mx = reshape.bin_image(im, {"Z": 2, "Y": 3, "X": 4}, "max")
    assert mx.dtype == np.uint16
    np.testing.assert_array_equal(mx.data, ref.max(axis=(2, 4, 6)))
    with pytest.raises(AxesError, match="size 16 along X is not divisible by the bin factor 5"):
        reshape.bin_image(im, {"X": 5})
    cropped = reshape.bin_image(im, {"X": 5}, crop=True)
    assert cropped.shape == (2, 10, 12, 3)


# ----------------------------------------------------------------------------- one resampling rule


def test_rescale_boundary_is_edge_not_mirror():
    from skimage.transform import resize

    ramp = np.tile(np.arange(0, 100, 10, dtype=np.float32), (6, 1))  # 6 x 10, grows along X
    im = Image.from_array(ramp, "YX", pixel_size={"Y": 1.0, "X": 1.0})
    up = reshape.rescale(im, 2.0).data
    np.testing.assert_allclose(up, resize(ramp, (12, 20), order=1, mode="edge", preserve_range=True,
                                          anti_aliasing=False), rtol=1e-6)
    # the first output column lies half a source pixel left of the border: it repeats the edge pixel,
    # a mirror ("reflect") boundary would pull in the second column (0.25 * 10)
    assert up[0, 0] == 0 and up[0, -1] == 90
    mirrored = resize(ramp, (12, 20), order=1, mode="reflect", preserve_range=True, anti_aliasing=False)
    assert mirrored[0, 0] > 0
    # shrinking: the anti-aliasing Gaussian also extends the edge pixel
    big = np.zeros((40, 40), np.float32)
    big[:, :2] = 100.0  # a bright left edge
    small = reshape.rescale(Image.from_array(big, "YX"), 0.25).data
    np.testing.assert_allclose(small, resize(big, (10, 10), order=1, mode="edge", preserve_range=True,
                                             anti_aliasing=True), rtol=1e-5)


def test_rescale_dtype_rules():
    # 32-bit integers are resampled in float64: large labels-like values stay exact
    big = np.array([[4_000_000_001, 7], [3, 4_000_000_003]], np.uint32)
    up = reshape.rescale(Image.from_array(big, "YX"), 2.0, order=0)
    assert up.dtype == np.uint32
    np.testing.assert_array_equal(up.data, big.repeat(2, 0).repeat(2, 1))
    # float64 stays float64 (with and without preserve_dtype)
    f64 = np.linspace(1e9, 1e9 + 1, 64).reshape(8, 8)
    for keep in (True, False):
        out = reshape.rescale(Image.from_array(f64, "YX"), 2.0, order=0, preserve_dtype=keep)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out.data, f64.repeat(2, 0).repeat(2, 1))
    # cubic overshoot at a step edge stays within the input's range (never wrapped around)
    step = np.zeros((8, 8), np.uint8)
    step[:, 4:] = 255
    cub = reshape.rescale(Image.from_array(step, "YX"), 3.0, order=3)
    assert cub.dtype == np.uint8 and cub.data.min() == 0 and cub.data.max() == 255
    assert (cub.data[:, :9] < 20).all()  # below 0 would wrap to ~255 in a bare cast
    flt = reshape.rescale(Image.from_array(step, "YX"), 3.0, order=3, preserve_dtype=False).data
    assert flt.dtype == np.float32 and flt.min() >= 0 and flt.max() <= 255
    # booleans: values > 0.5
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    m = reshape.rescale(Image.from_array(mask, "YX"), 0.5, order=0)
    assert m.dtype == bool and m.data.sum() == 9


def test_rescale_nearest_picks_input_values_and_bad_factors():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (30, 30)).astype(np.uint16) * 1000
    im = Image.from_array(a, "YX")
    down = reshape.rescale(im, 0.3, order=0)  # no anti-aliasing with nearest neighbour
    assert set(np.unique(down.data)) <= set(np.unique(a))
    with pytest.raises(AxesError, match="leaves no pixel"):
        reshape.rescale(im, 0.01)
    vol = reshape.rescale(im, {"Z": 1, "Y": 0.5, "X": 0.5})  # Z named with factor 1 on a plane: fine
    assert vol.shape == (15, 15)


def test_rescale_and_bin_read_dask_one_array_at_a_time():
    da = pytest.importorskip("dask.array")
    im = _volume()
    lazy = im.with_data(da.from_array(np.asarray(im.data), chunks=(1, 10, 12, 16)))
    np.testing.assert_array_equal(reshape.rescale(lazy, 0.5).data, reshape.rescale(im, 0.5).data)
    np.testing.assert_array_equal(reshape.bin_image(lazy, {"Y": 2, "X": 2}).data,
                                  reshape.bin_image(im, {"Y": 2, "X": 2}).data)


def test_bin_image_dtype_rules_and_errors():
    im = _volume()  # uint16
    assert reshape.bin_image(im, 2).pixel_size == pytest.approx({"Z": 2.0, "Y": 1.0, "X": 1.0})
    assert reshape.bin_image(im, 2).dtype == np.float32
    s = reshape.bin_image(im, {"Z": 2, "Y": 2, "X": 2}, "sum")
    assert s.dtype == np.uint32  # narrowest exact sum of 8 uint16 values
    f64 = im.with_data(np.asarray(im.data, np.float64))
    assert reshape.bin_image(f64, 2).dtype == np.float64
    assert reshape.bin_image(f64, 2, "sum").dtype == np.float64
    with pytest.raises(AxesError, match="exceeds the image size"):
        reshape.bin_image(im, {"Z": 11}, crop=True)
    from opsef_core.errors import ConfigError

    with pytest.raises(ConfigError, match="positive integer"):
        reshape.bin_image(im, {"X": 1.5})
    with pytest.raises(ConfigError, match="reduce"):
        reshape.bin_image(im, 2, "median")
