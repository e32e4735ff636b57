"""Writers: label TIFFs (Fiji-compatible metadata), OME-TIFF round trip, CSV tables, atomicity."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from opsef_core import io
from opsef_core.errors import AxesError, InputFileError
from opsef_core.image import Image


def _labels_2d():
    lab = np.zeros((60, 90), np.int32)
    for i, (r, c) in enumerate([(15, 20), (30, 50), (45, 75)], start=1):
        lab[disk((r, c), 8, shape=lab.shape)] = i
    return lab


def test_write_labels_uint16_imagej_calibrated_with_lut(tmp_path):
    lab = _labels_2d()
    p = io.write_labels(tmp_path / "labels.tif", lab, pixel_size={"Y": 0.4, "X": 0.4})
    with tifffile.TiffFile(p) as tif:
        assert tif.is_imagej and tif.series[0].dtype == np.uint16 and tif.series[0].axes == "YX"
        ij = tif.imagej_metadata
        assert ij["unit"] == "um" and ij["min"] == 0 and ij["max"] == 3
        lut = np.asarray(ij["LUTs"]).reshape(-1, 3, 256)[0]  # one LUT for the one channel
        assert lut.shape == (3, 256) and lut[:, 0].tolist() == [0, 0, 0] and lut[:, 1:4].min(axis=0).max() > 0
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.4)
        np.testing.assert_array_equal(tif.asarray(), lab)
    back = io.read_labels(p)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, lab)
    assert io.read_image(p).pixel_size == pytest.approx({"Y": 0.4, "X": 0.4})
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left behind


def test_write_labels_above_65535_is_uint32_hyperstack(tmp_path):
    lab = np.zeros((3, 30, 40), np.int64)
    lab[1, 5:12, 5:12] = 70_000
    lab[2, 20:25, 20:30] = 5
    p = io.write_labels(tmp_path / "big.tif", lab, pixel_size=(2.0, 0.5, 0.5))
    with tifffile.TiffFile(p) as tif:
        assert tif.is_imagej and tif.series[0].dtype == np.uint32 and tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["spacing"] == 2.0 and tif.imagej_metadata["slices"] == 3
        assert "LUTs" in tif.imagej_metadata
    back = io.read_labels(p)
    np.testing.assert_array_equal(back, lab)
    assert io.read_image(p).pixel_size == pytest.approx({"Z": 2.0, "Y": 0.5, "X": 0.5})


def test_write_labels_rejects_bad_input(tmp_path):
    with pytest.raises(InputFileError, match="bad.tif: labels holds non-integer values"):
        io.write_labels(tmp_path / "bad.tif", np.full((4, 4), 0.5))
    # the one label rule: whole-number floats are labels (written as integers)
    io.write_labels(tmp_path / "float" / "f.tif", np.full((4, 4), 3.0))
    assert io.read_labels(tmp_path / "float" / "f.tif").dtype == np.uint16
    with pytest.raises(InputFileError, match="negative"):
        io.write_labels(tmp_path / "neg.tif", -np.ones((4, 4), np.int32))
    with pytest.raises(AxesError, match="give axes="):
        io.write_labels(tmp_path / "4d.tif", np.zeros((2, 2, 4, 4), np.uint8))
    with pytest.raises(AxesError, match="2 pixel sizes given for spatial axes ZYX"):
        io.write_labels(tmp_path / "ps.tif", np.zeros((2, 4, 4), np.uint8), pixel_size=(1, 1))
    assert [p.name for p in tmp_path.iterdir()] == ["float"]
    p = io.write_labels(tmp_path / "t.tif", np.ones((2, 4, 5), np.uint8), axes="TYX")
    assert io.read_image(p).axes == "TYX"


def test_ome_tiff_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, (2, 2, 4, 16, 24), dtype=np.uint16)
    image = Image.from_array(data, "TCZYX", pixel_size={"Z": 2.0, "Y": 0.3, "X": 0.3},
                             channel_names=("DAPI", "actin"), name="cells", time_interval=60.0)
    p = io.write_ome_tiff(tmp_path / "cells.ome.tif", image)
    back = io.read_image(p)
    assert back.axes == "TCZYX" and back.channel_names == ("DAPI", "actin")
    assert back.pixel_size == pytest.approx(image.pixel_size) and back.time_interval == pytest.approx(60.0)
    np.testing.assert_array_equal(back.data, data)
    assert back.name == "cells"


def test_write_table_csv_and_empty(tmp_path):
    df = pd.DataFrame({"label": [1, 2], "area_um2": [3.5, 7.25], "image": ["a", "b"]})
    p = io.write_table(tmp_path / "m.csv", df)
    pd.testing.assert_frame_equal(pd.read_csv(p), df)
    empty = pd.DataFrame(columns=["label", "area_um2"])
    q = io.write_table(tmp_path / "sub" / "empty.csv", empty)
    back = pd.read_csv(q)
    assert list(back.columns) == ["label", "area_um2"] and len(back) == 0


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_write(p, mode="w") as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["x.txt"]
    with io.atomic_write(p, mode="w") as fh:
        fh.write("new")
    assert p.read_text() == "new"


def test_deferred_sync_replaces_per_file_fsync_by_one_filesystem_sync(tmp_path, monkeypatch):
    """Inside deferred_sync files are still atomic, not fsync-ed one by one: one sync at the end."""
    import os

    from opsef_core.io import atomic

    fsyncs, syncs = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    real_sync = atomic.sync_filesystem
    monkeypatch.setattr(atomic, "sync_filesystem", lambda folder: (syncs.append(Path(folder)), real_sync(folder)))
    with atomic.atomic_write(tmp_path / "plain.bin") as fh:
        fh.write(b"x")
    assert len(fsyncs) == 1 and syncs == []  # outside a block: one fsync per file
    with atomic.deferred_sync(tmp_path):
        for k in range(5):
            with atomic.atomic_write(tmp_path / "sub" / f"f{k}.bin") as fh:
                fh.write(bytes([k]) * 10)
        assert syncs == []
        atomic.sync_deferred()
        assert syncs == [tmp_path]
        atomic.sync_deferred()  # nothing pending: no second sync
        with atomic.atomic_write(tmp_path / "marker.json", "w") as fh:
            fh.write("{}")
    assert len(fsyncs) == 1 and syncs == [tmp_path, tmp_path]  # and the marker, at the block's end
    assert [(tmp_path / "sub" / f"f{k}.bin").read_bytes() for k in range(5)] == [bytes([k]) * 10 for k in range(5)]
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(RuntimeError), atomic.deferred_sync(tmp_path):  # a failing block still syncs
        with atomic.atomic_write(tmp_path / "g.bin") as fh:
            fh.write(b"y")
        raise RuntimeError("boom")
    assert len(syncs) == 3 and (tmp_path / "g.bin").read_bytes() == b"y"
    real_sync(tmp_path)  # the real syncfs/os.sync works here


def test_sync_filesystem_names_the_folder_when_it_cannot_be_opened(tmp_path):
    from opsef_core.io.atomic import sync_filesystem

    with pytest.raises(InputFileError, match="missing"):
        sync_filesystem(tmp_path / "missing")
