"""Leica .lif reading, checked against files written by opsef_core.testing.write_lif and against readlif."""

import numpy as np
import pytest

from opsef_core import io
from opsef_core.errors import AxesError, InputFileError
from opsef_core.testing import write_lif


@pytest.fixture(scope="module")
def lif_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4096, (2, 3, 20, 30), dtype=np.uint16)  # CZYX, 12-bit in 16
    b = rng.integers(0, 256, (4, 1, 1, 10, 12), dtype=np.uint8)  # TCZYX, a time series
    m = rng.integers(0, 256, (2, 1, 1, 1, 8, 9), dtype=np.uint8)  # MTCZYX mosaic of 2 tiles
    path = tmp_path_factory.mktemp("lif") / "experiment.lif"
    write_lif(path, [
        dict(name="stack", data=a, pixel_size={"X": 0.2, "Y": 0.2, "Z": 1.5},
             channel_names=["DAPI", "GFP"], bit_depth=12),
        dict(name="movie", data=b, pixel_size={"X": 0.5, "Y": 0.5}, time_interval=30.0),
        dict(name="tiles", data=m, pixel_size={"X": 1.0, "Y": 1.0}, mosaic=True),
    ])
    return path, a, b, m


def test_series_read_bit_exact_with_calibration(lif_file):
    path, a, b, m = lif_file
    scenes = io.list_scenes(path)
    assert [s["name"] for s in scenes] == ["stack", "movie", "tiles"]
    assert scenes[0]["axes"] == "CZYX" and scenes[0]["shape"] == [2, 3, 20, 30] and scenes[2]["n_tiles"] == 2
    im = io.read_image(path)
    assert im.axes == "CZYX" and im.dtype == np.uint16 and im.n_channels == 2
    np.testing.assert_array_equal(im.data, a)
    assert im.pixel_size == pytest.approx({"Z": 1.5, "Y": 0.2, "X": 0.2}) and im.calibrated
    assert im.channel_names == ("DAPI", "GFP") and im.metadata["bit_depth"] == [12, 12]
    mov = io.read_image(path, scene="movie")
    assert mov.axes == "TYX" and mov.dtype == np.uint8 and mov.time_interval == pytest.approx(30.0)
    np.testing.assert_array_equal(mov.data, b[:, 0, 0])
    assert mov.pixel_size == pytest.approx({"Y": 0.5, "X": 0.5})
    lazy = io.read_image(path, scene=0, lazy=True)
    assert isinstance(lazy.data, np.memmap)
    np.testing.assert_array_equal(lazy.spatial(c=1), a[1])


def test_agrees_with_readlif_planes(lif_file):
    """Independent reference: readlif's own plane reader (Pillow) on the same file."""
    from readlif.reader import LifFile

    path, a, b, m = lif_file
    lif = LifFile(str(path))
    im = io.read_image(path, scene=0)
    for z in range(3):
        for c in range(2):
            np.testing.assert_array_equal(np.array(lif.get_image(0).get_frame(z=z, c=c)), im.data[c, z])
    np.testing.assert_array_equal(np.array(lif.get_image(1).get_frame(t=3)), b[3, 0, 0])
    np.testing.assert_array_equal(np.array(lif.get_image(2).get_frame(m=1)), m[1, 0, 0, 0])


def test_mosaic_tiles_and_read_scenes(lif_file):
    path, a, b, m = lif_file
    with pytest.raises(InputFileError, match="mosaic of 2 tiles; pass tile="):
        io.read_image(path, scene="tiles")
    tile = io.read_image(path, scene="tiles", tile=1)
    np.testing.assert_array_equal(tile.data, m[1, 0, 0, 0])
    images = io.read_scenes(path)
    assert [i.scene for i in images] == ["stack", "movie", "tiles [tile 0]", "tiles [tile 1]"]
    assert "mosaic: 2 tiles" in io.format_info(path)


def test_axes_override_and_errors(lif_file, tmp_path):
    path, a, b, m = lif_file
    as_z = io.read_image(path, scene="movie", axes="ZYX")
    assert as_z.axes == "ZYX" and as_z.shape == (4, 10, 12)
    with pytest.raises(AxesError, match="experiment.lif"):
        io.read_image(path, scene="movie", axes="YX")
    with pytest.raises(InputFileError, match="scene 5 out of range: the file has 3 series"):
        io.read_image(path, scene=5)
    with pytest.raises(InputFileError, match="no scene named 'other'"):
        io.read_image(path, scene="other")
    fake = tmp_path / "fake.lif"
    fake.write_text("not a lif")
    with pytest.raises(InputFileError, match="fake.lif: not a Leica LIF file"):
        io.read_image(fake)
    cut = tmp_path / "cut.lif"
    cut.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InputFileError, match="cut.lif"):
        io.read_scenes(cut)
    with pytest.raises(InputFileError, match="file not found"):
        io.list_scenes(tmp_path / "none.lif")
