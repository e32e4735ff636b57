"""TIFF / ImageJ / OME-TIFF reading: axes, calibration, channel names, lazy reading, errors."""

import numpy as np
import pytest
import tifffile

from opsef_core import io
from opsef_core.errors import AxesError, InputFileError, UnsupportedFormatError


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_imagej_hyperstack_axes_calibration_labels(tmp_path, rng):
    data = rng.integers(0, 60000, (2, 3, 2, 24, 40), dtype=np.uint16)  # TZCYX
    p = tmp_path / "hyper.tif"
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TZCYX", "unit": "micron", "spacing": 1.5, "finterval": 2.0,
                               "Labels": ["DAPI", "GFP"] * 6})
    im = io.read_image(p)
    assert im.axes == "TCZYX" and im.shape == (2, 2, 3, 24, 40)
    np.testing.assert_array_equal(im.data, data.transpose(0, 2, 1, 3, 4))
    assert im.pixel_size == pytest.approx({"Z": 1.5, "Y": 0.25, "X": 0.25})
    assert im.calibrated and im.channel_names == ("DAPI", "GFP") and im.time_interval == 2.0
    lazy = io.read_image(p, lazy=True)
    assert type(lazy.data).__name__ == "Array"  # dask
    np.testing.assert_array_equal(lazy.spatial(t=1, c=1), data[1, :, 1])


def test_imagej_nm_unit_is_converted(tmp_path):
    p = tmp_path / "nm.tif"
    tifffile.imwrite(p, np.zeros((4, 16, 16), np.uint8), imagej=True, resolution=(1 / 65.0, 1 / 65.0),
                     metadata={"axes": "ZYX", "unit": "nm", "spacing": 200.0})
    im = io.read_image(p)
    assert im.pixel_size == pytest.approx({"Z": 0.2, "Y": 0.065, "X": 0.065})


def test_ome_tiff_two_series_units_and_names(tmp_path, rng):
    a = rng.integers(0, 255, (2, 3, 20, 30), dtype=np.uint8)
    b = rng.integers(0, 255, (10, 12), dtype=np.uint8)
    p = tmp_path / "multi.ome.tif"
    with tifffile.TiffWriter(p, ome=True) as w:
        w.write(a, metadata={"axes": "CZYX", "Name": "first", "PhysicalSizeX": 300, "PhysicalSizeXUnit": "nm",
                             "PhysicalSizeY": 300, "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 1.0,
                             "Channel": {"Name": ["nuclei", "membrane"]}})
        w.write(b, metadata={"axes": "YX", "Name": "second"})
    scenes = io.list_scenes(p)
    assert [s["name"] for s in scenes] == ["first", "second"]
    assert scenes[0]["shape"] == [2, 3, 20, 30] and scenes[0]["pixel_size"] == pytest.approx(
        {"X": 0.3, "Y": 0.3, "Z": 1.0})
    im = io.read_image(p, scene="first")
    assert im.channel_names == ("nuclei", "membrane") and im.pixel_size["X"] == pytest.approx(0.3)
    np.testing.assert_array_equal(im.data, a)
    second = io.read_image(p, scene=1)
    np.testing.assert_array_equal(second.data, b)
    assert not second.calibrated and second.scene == "second"
    assert [x.name for x in io.read_scenes(p)] == ["multi_first", "multi_second"]
    text = io.format_info(p)
    assert "nuclei, membrane" in text and "Z=1, Y=0.3, X=0.3" in text and "scene 1: second" in text


def test_rgb_samples_become_channels_and_uncalibrated(tmp_path, rng):
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, rgb, photometric="rgb")
    im = io.read_image(p)
    assert im.axes == "CYX" and im.shape == (3, 20, 30) and not im.calibrated
    np.testing.assert_array_equal(im.data, rgb.transpose(2, 0, 1))


def test_centimetre_resolution_unit(tmp_path):
    p = tmp_path / "cm.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint16), resolution=(20000.0, 10000.0), resolutionunit="CENTIMETER")
    im = io.read_image(p)
    assert im.calibrated and im.pixel_size == pytest.approx({"Y": 1.0, "X": 0.5})


def test_unknown_stack_needs_axes_override(tmp_path, rng):
    data = rng.integers(0, 255, (5, 16, 18), dtype=np.uint8)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, data)  # tifffile calls the planes 'Q': unknown
    with pytest.raises(AxesError, match="axes=") as exc:
        io.read_image(p)
    assert "stack.tif" in str(exc.value)
    assert io.list_scenes(p)[0]["problem"]  # info still works
    assert io.read_image(p, axes="TYX").axes == "TYX"
    im = io.read_image(p, axes="ZYX")
    np.testing.assert_array_equal(im.data, data)
    with pytest.raises(AxesError, match="4 letters but the data has 3"):
        io.read_image(p, axes="CZYX")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="not found") as exc:
        io.read_image(tmp_path / "missing.tif")
    assert "missing.tif" in str(exc.value)
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image\n" * 10)
    with pytest.raises(InputFileError, match="notes.tif: not a readable TIFF"):
        io.read_image(text)
    with pytest.raises(UnsupportedFormatError, match="'.png'"):
        io.read_image(tmp_path / "picture.png")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.ones((64, 64), np.uint16))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(InputFileError, match="cut.tif") as exc:
        io.read_image(cut)
    assert "truncated" in str(exc.value) or "TIFF" in str(exc.value)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.ones((5, 64, 64), np.uint16), compression="zlib")  # IFDs after the data
    half = tmp_path / "half.tif"
    half.write_bytes(stack.read_bytes()[: stack.stat().st_size // 2])
    with pytest.raises(InputFileError, match="half.tif: damaged or truncated"):
        io.read_image(half, axes="ZYX")
    with pytest.raises(InputFileError, match="scene 3 out of range: the file has 1 series"):
        io.read_image(good, scene=3)
    with pytest.raises(InputFileError, match="no scene named 'nope'"):
        io.read_image(good, scene="nope")


def test_read_labels_accepts_integer_floats_rejects_intensity(tmp_path):
    lab = np.zeros((20, 20), np.float32)
    lab[2:6, 2:6] = 70000
    p = tmp_path / "lab_float.tif"
    tifffile.imwrite(p, lab, imagej=True)
    out = io.read_labels(p)
    assert out.dtype.kind == "u" and out.max() == 70000 and (out > 0).sum() == 16
    q = tmp_path / "intensity.tif"
    tifffile.imwrite(q, lab + 0.5, imagej=True)
    with pytest.raises(InputFileError, match="non-integer"):
        io.read_labels(q)
    r = tmp_path / "twochan.tif"
    tifffile.imwrite(r, np.zeros((2, 8, 8), np.uint16), imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(InputFileError, match="along C"):
        io.read_labels(r)
