"""Labels edited in AnnotatorJ/Fiji are measured and scored like any other result (API and CLI)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
import roifile
import tifffile

from opsef_core import export
from opsef_core.cli import main
from opsef_core.curation import measure_curated
from opsef_core.errors import InputFileError
from opsef_core.measure import measure_objects

PIXEL = 0.25


def _scene(rng):
    yy, xx = np.mgrid[:96, :96]
    lab = np.zeros((96, 96), np.uint16)
    for i, (cy, cx) in enumerate([(20, 20), (20, 70), (60, 30), (70, 75)], start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = i
    img = (50 + 40 * lab + rng.normal(0, 3, lab.shape)).clip(0).astype(np.uint16)
    return img, lab


@pytest.fixture
def edited(tmp_path):
    """An AnnotatorJ folder whose ROI set was edited: object 1 deleted, a 10x12 px rectangle added."""
    img, lab = _scene(np.random.default_rng(0))
    out = tmp_path / "aj"
    export.annotatorj_folder(out, [("cells", img)], [lab])
    # calibrate the image like a microscope file (AnnotatorJ keeps the image as it was)
    tifffile.imwrite(out / "cells.tif", img, imagej=True, resolution=(1 / PIXEL, 1 / PIXEL),
                     metadata={"unit": "um", "axes": "YX"})
    zpath = out / "nuclei" / "cells_ROIs.zip"
    rois = [r for r in roifile.roiread(zpath) if int(r.name) != 1]
    corners = np.array([[80, 5], [90, 5], [90, 17], [80, 17]])  # x, y: 10 wide, 12 high
    rois.append(roifile.ImagejRoi.frompoints(corners, name="added"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for r in rois:
            zf.writestr(f"{r.name}.roi", r.tobytes())
    zpath.write_bytes(buf.getvalue())
    truth = tmp_path / "truth"
    truth.mkdir()
    tifffile.imwrite(truth / "cells.tif", lab)
    return out, truth, img, lab


def test_edited_rois_are_measured_in_physical_units_and_scored(edited):
    out, truth, img, lab = edited
    meas, metrics = measure_curated(out, ground_truth=truth)
    assert set(meas["image"]) == {"cells"} and (meas["source"] == "curated").all()
    assert len(meas) == 4  # 3 kept + 1 drawn
    # the same numbers as measuring the re-imported labels directly with the calibrated image
    from opsef_core.io import read_image

    relabelled = export.reimport(out)["cells"]
    ref = measure_objects(relabelled, read_image(out / "cells.tif"))
    np.testing.assert_allclose(meas.sort_values("label")["area"].to_numpy(), ref["area"].to_numpy())
    drawn = meas.loc[meas["area"].idxmin()]
    assert drawn["area"] == pytest.approx(10 * 12 * PIXEL**2)  # µm², from the image's calibration
    kept = meas.drop(index=meas["area"].idxmin())
    assert kept["intensity_mean"].between(50 + 40 * 2 - 5, 50 + 40 * 4 + 5).all()  # truth objects 2-4
    assert drawn["intensity_mean"] == pytest.approx(50, abs=2)  # the rectangle lies on background
    # against the unedited truth: 3 of 4 truth objects found, 1 extra
    row = metrics.iloc[0]
    assert row["image"] == "cells" and row["n_true"] == 4 and row["n_pred"] == 4
    assert row["tp@0.5"] == 3 and row["fp@0.5"] == 1 and row["fn@0.5"] == 1
    assert row["f1@0.5"] == pytest.approx(0.75)


def test_cli_writes_tables_and_never_overwrites(edited, tmp_path, capsys):
    out, truth, _, _ = edited
    table = tmp_path / "curated.csv"
    assert main(["measure", str(out), "--gt", str(truth), "--out", str(table)]) == 0
    printed = capsys.readouterr().out
    assert "4 objects in 1 images" in printed and "0.750" in printed
    assert len(pd.read_csv(table)) == 4
    assert pd.read_csv(tmp_path / "curated.metrics.csv")["f1@0.5"].iloc[0] == pytest.approx(0.75)
    before = table.read_bytes()
    assert main(["measure", str(out), "--out", str(table)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(table) in err[0] and "never overwritten" in err[0]
    assert table.read_bytes() == before


def test_missing_image_or_truth_and_bad_shapes(edited, tmp_path, caplog):
    out, truth, img, lab = edited
    # without the image: pixel units, no intensities, and a warning
    (out / "cells.tif").unlink()
    meas, metrics = measure_curated(out / "nuclei" / "cells_ROIs.zip")
    assert metrics is None and "intensity_mean" not in meas.columns
    assert meas["area"].min() == pytest.approx(120)
    assert "pixel units" in caplog.text
    with pytest.raises(InputFileError, match="no ground truth"):
        measure_curated(out, ground_truth=tmp_path)
    tifffile.imwrite(out / "cells.tif", img[:50])
    with pytest.raises(InputFileError, match="does not fit"):
        measure_curated(out)
    with pytest.raises(InputFileError, match="not found"):
        measure_curated(tmp_path / "nothing_here")
