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
