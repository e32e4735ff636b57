"""Tests of opsef_core.export: edge-traced ImageJ ROIs, round trips, AnnotatorJ layout, reimport."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import roifile
import tifffile

from opsef_core import export
from opsef_core.errors import ConfigError, InputFileError


@pytest.fixture(scope="module")
def nuclei():
    """Real nuclei ground truth shipped with stardist (512x512, 125+ objects)."""
    from stardist.data import test_image_nuclei_2d

    img, lab = test_image_nuclei_2d(return_mask=True)
    return img, lab


def shoelace(xy):
    x, y = xy[:, 0].astype(float), xy[:, 1].astype(float)
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def per_object_iou(a, b):
    out = {}
    for lab in np.unique(a)[1:]:
        m, n = a == lab, b == lab
        out[int(lab)] = np.count_nonzero(m & n) / np.count_nonzero(m | n)
    return out


def test_round_trip_real_nuclei_is_exact(tmp_path, nuclei):
    _, lab = nuclei
    path = export.write_roi_zip(tmp_path / "nuclei.zip", lab)
    rois = roifile.roiread(path)
    assert len(rois) >= len(np.unique(lab)) - 1
    names = {r.name for r in rois}
    assert names == {f"{v:04d}" for v in np.unique(lab)[1:]}
    back = export.read_roi_zip(path, lab.shape)
    ious = per_object_iou(lab, back)
    assert min(ious.values()) >= 0.9
    assert np.array_equal(back, lab)  # edge tracing: every object comes back pixel for pixel


def test_polygons_lie_on_pixel_edges():
    lab = np.zeros((30, 30), np.uint16)
    from skimage.draw import disk

    lab[disk((14, 15), 9)] = 3
    lab[2:5, 20:28] = 8
    rois = {r.name: r for r in export.labels_to_rois(lab)}
    for name, value in (("0003", 3), ("0008", 8)):
        xy = rois[name].coordinates()
        assert np.issubdtype(xy.dtype, np.integer)  # vertices are pixel corners
        # a polygon through pixel corners encloses exactly the object's pixels: area == count
        # (a contour through pixel centres would be ~half a pixel smaller all round)
        assert shoelace(xy) == np.count_nonzero(lab == value)
    rect = rois["0008"].coordinates()
    assert sorted(map(tuple, rect)) == [(20, 2), (20, 5), (28, 2), (28, 5)]  # 4 corners only


def test_holes_and_parts_documented_behaviour(tmp_path):
    lab = np.zeros((20, 20), np.uint16)
    lab[2:10, 2:10] = 1
    lab[5:7, 5:7] = 0  # hole: filled on export
    lab[12:15, 12:15] = 2
    lab[16:18, 16:18] = 2  # second part of object 2
    lab[11, 11] = 2  # touches the part only diagonally: a third part
    path = export.write_roi_zip(tmp_path / "x.zip", lab)
    names = [r.name for r in roifile.roiread(path)]
    assert names.count("0002") == 3 and names.count("0001") == 1
    assert len(zipfile.ZipFile(path).namelist()) == 4  # unique entries
    back = export.read_roi_zip(path, lab.shape)
    expected = lab.copy()
    expected[5:7, 5:7] = 1
    assert np.array_equal(back, expected)


def test_3d_rois_have_positions_and_names(tmp_path):
    lab = np.zeros((3, 16, 16), np.uint16)
    lab[0, 2:6, 2:6] = 4
    lab[1, 3:8, 3:8] = 4
    lab[2, 10:14, 10:14] = 12
    path = export.write_roi_zip(tmp_path / "s.zip", lab)
    rois = roifile.roiread(path)
    got = {(r.name, r.z_position, r.position) for r in rois}
    assert got == {("0001-0004", 1, 1), ("0002-0004", 2, 2), ("0003-0012", 3, 3)}
    assert np.array_equal(export.read_roi_zip(path, lab.shape), lab)
    # a ROI without slice position cannot be placed in 3D
    flat = tmp_path / "flat.zip"
    export.write_roi_zip(flat, lab[0])
    with pytest.raises(InputFileError, match="slice"):
        export.read_roi_zip(flat, lab.shape)


def test_empty_labels_give_valid_empty_zip(tmp_path):
    path = export.write_roi_zip(tmp_path / "e.zip", np.zeros((8, 8), np.uint8))
    assert zipfile.is_zipfile(path) and zipfile.ZipFile(path).namelist() == []
    assert export.read_roi_zip(path, (8, 8)).max() == 0


def test_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        export.read_roi_zip(tmp_path / "missing.zip", (4, 4))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(InputFileError, match="bad.zip"):
        export.read_roi_zip(bad, (4, 4))
    with pytest.raises(ConfigError):
        export.write_roi_zip(tmp_path / "x.roi", np.ones((4, 4), np.uint8))
    with pytest.raises(InputFileError, match="non-integer"):
        export.write_roi_zip(tmp_path / "f.zip", np.full((4, 4), 1.5, np.float32))


def test_annotatorj_layout_and_reimport_after_editing(tmp_path, nuclei):
    img, lab = nuclei
    img2, lab2 = img[:256, :256], lab[:256, :256]
    out = tmp_path / "aj"
    written = export.annotatorj_folder(out, [("n1", img), ("n2", img2)], [lab, lab2])
    assert written["n1"]["image"] == out / "n1.tif"
    assert written["n1"]["rois"] == out / "nuclei" / "n1_ROIs.zip"
    assert written["n2"]["mask"] == out / "masks" / "n2.tif"
    assert np.array_equal(tifffile.imread(out / "n1.tif"), img)
    assert np.array_equal(tifffile.imread(out / "masks" / "n2.tif"), lab2)

    # "edit in AnnotatorJ": delete one object, draw a new rectangle with an ImageJ default name
    zpath = out / "nuclei" / "n2_ROIs.zip"
    rois = roifile.roiread(zpath)
    removed = rois.pop(0)
    corners = np.array([[200, 200], [230, 200], [230, 220], [200, 220]])
    new = roifile.ImagejRoi.frompoints(corners, name="0210-0215")  # ImageJ default y-x name
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for r in [*rois, new]:
            zf.writestr(f"{r.name}.roi", r.tobytes())
    zpath.write_bytes(buf.getvalue())

    labels = export.reimport(out)  # folder: edited ROI sets win over masks/
    assert set(labels) == {"n1", "n2"}
    assert np.array_equal(labels["n1"], lab)
    edited = labels["n2"]
    assert edited.shape == lab2.shape  # shape taken from masks/n2.tif
    gone = int(removed.name)
    assert not np.any(edited == gone)
    newlab = int(edited[210, 215])
    assert newlab > lab2.max() and np.count_nonzero(edited == newlab) == 30 * 20
    keep = (lab2 != gone) & (edited != newlab)
    assert np.array_equal(edited[keep], lab2[keep])

    # single files
    assert np.array_equal(export.reimport(out / "masks" / "n2.tif"), lab2)
    assert export.reimport(zpath).shape == lab2.shape
    with pytest.raises(ConfigError, match="shape"):
        lone = tmp_path / "lone_ROIs.zip"
        lone.write_bytes(zpath.read_bytes())
        export.reimport(lone)
