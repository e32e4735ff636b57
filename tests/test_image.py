"""The Image model: explicit axes, canonical order, selection, calibration."""

import numpy as np
import pytest

from opsef_core.errors import AxesError, OpsefError
from opsef_core.image import Image, normalise_axes, to_display


def test_from_array_transposes_to_canonical_order():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, size=(5, 3, 7, 9), dtype=np.uint16)  # Z C Y X
    img = Image.from_array(data, "ZCYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.25},
                           channel_names=["dapi", "gfp", "rfp"])
    assert img.axes == "CZYX"
    assert img.shape == (3, 5, 7, 9)
    np.testing.assert_array_equal(img.data[1, 2], data[2, 1])
    assert img.spacing == (2.0, 0.5, 0.25)
    assert img.calibrated and img.is_3d and img.spatial_axes == "ZYX"


def test_rgb_samples_axis_becomes_channels():
    img = Image.from_array(np.zeros((4, 6, 3), np.uint8), "YXS")
    assert img.axes == "CYX" and img.channel_names == ("C0", "C1", "C2")
    assert not img.calibrated and img.pixel_size == {"Y": 1.0, "X": 1.0}


@pytest.mark.parametrize("axes, shape, fragment", [
    ("ZYX", (4, 5), "3 letters but the data has 2"),
    ("YXW", (4, 5, 6), "unknown"),
    ("ZZX", (4, 5, 6), "repeat"),
    ("CZX", (2, 5, 6), "must contain Y and X"),
])
def test_bad_axes_raise_axes_error_naming_the_source(axes, shape, fragment, tmp_path):
    src = tmp_path / "stack.tif"
    with pytest.raises(AxesError, match=fragment) as info:
        Image.from_array(np.zeros(shape), axes, source=src)
    assert "stack.tif" in str(info.value)
    assert isinstance(info.value, OpsefError)


def test_non_canonical_axes_rejected_in_constructor():
    with pytest.raises(AxesError, match="canonical"):
        Image(data=np.zeros((4, 5, 2)), axes="YXC")


def test_selection_by_name_index_and_substack():
    data = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)
    img = Image.from_array(data, "TCZYX", channel_names=["a", "b", "c"])
    plane = img.sel(t=1, c="b", z=2)
    assert plane.axes == "YX"
    np.testing.assert_array_equal(plane.data, data[1, 1, 2])
    sub = img.sel(z=slice(1, 3))
    assert sub.axes == "TCZYX" and sub.size("Z") == 2 and sub.channel_names == ("a", "b", "c")
    np.testing.assert_array_equal(img.spatial(t=0, c=-1), data[0, 2])
    assert [idx for idx, _ in img.iter_spatial()][:2] == [{"T": 0, "C": 0}, {"T": 0, "C": 1}]


def test_selection_errors_are_clear():
    img = Image.from_array(np.zeros((2, 5, 6)), "CYX", channel_names=["dapi", "gfp"])
    with pytest.raises(AxesError, match="no channel named 'rfp'"):
        img.sel(c="rfp")
    with pytest.raises(AxesError, match="out of range"):
        img.sel(c=5)
    with pytest.raises(AxesError, match="no Z axis"):
        img.sel(z=3)
    assert img.sel(z=0).axes == "CYX"  # index 0 on an absent axis is a no-op


def test_wrong_number_of_channel_names():
    with pytest.raises(AxesError, match="2 channel names given for 3 channels"):
        Image.from_array(np.zeros((3, 4, 4)), "CYX", channel_names=["a", "b"])


def test_display_scaling_does_not_touch_data():
    data = np.array([[0, 100], [1000, 65535]], dtype=np.uint16)
    img = Image.from_array(data, "YX")
    shown = img.display(0, 100)
    assert shown.dtype == np.float32 and shown.min() == 0 and shown.max() == 1
    assert img.data.dtype == np.uint16 and img.data[1, 1] == 65535
    assert np.all(to_display(np.full((3, 3), 7.0)) == 0)
    np.testing.assert_allclose(to_display(data, limits=(0, 1000))[1, 0], 1.0)


def test_dask_data_stays_lazy_until_compute():
    da = pytest.importorskip("dask.array")
    lazy = da.zeros((4, 64, 64), chunks=(1, 64, 64), dtype=np.uint16)
    img = Image.from_array(lazy, "ZYX")
    assert isinstance(img.sel(z=1).data, da.Array)
    assert isinstance(img.compute().data, np.ndarray)


def test_normalise_axes_is_case_insensitive():
    assert normalise_axes("zyx", 3) == "ZYX"


def test_negative_pixel_size_rejected():
    with pytest.raises(AxesError, match="positive"):
        Image.from_array(np.zeros((4, 4)), "YX", pixel_size={"X": -1})
