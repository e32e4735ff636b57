"""Library code of the debris_brightfield notebook: loading, segmentation side by side, spheroid metrics."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from opsef_core.errors import ConfigError, InputFileError
from opsef_core.spheroid import largest_object, readouts
from opsef_core.workflows import debris

DATA = Path(__file__).resolve().parents[1] / "demo_data" / "debris_brightfield"


def test_time_index():
    assert debris.time_index("bf_t03.tif") == 3
    assert debris.time_index("/x/well_B2_t12.ome.tif") == 12
    with pytest.raises(InputFileError, match="time index"):
        debris.time_index("spheroid.tif")


def test_load_series_sorted_and_checked(tmp_path):
    series = debris.load_series(DATA, max_images=3)
    assert [s["time"] for s in series] == [0, 1, 2]
    assert all(s["image"].shape == s["truth"].shape == (256, 256) for s in series)
    (tmp_path / "images").mkdir()
    shutil.copy(DATA / "images" / "bf_t00.tif", tmp_path / "images" / "bf_t00.tif")
    with pytest.raises(InputFileError, match="bf_t00"):
        debris.load_series(tmp_path)
    assert debris.load_series(tmp_path, require_truth=False)[0]["truth"] is None


def test_smooth_largest_keeps_other_objects():
    lab = np.zeros((120, 120), np.int32)
    lab[disk((60, 60), 30)] = 1
    lab[60, 90:104] = 1  # a one-pixel spur of debris
    lab[50:54, 50:54] = 0  # a hole
    lab[5:9, 5:9] = 2  # a separate debris particle
    out = debris.smooth_largest(lab, radius=3)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[60, 100] == 0 and out[52, 52] == 1
    before = readouts(lab == 1)["circularity"]
    after = readouts(out == 1)["circularity"]
    assert after > before and after == pytest.approx(1.0, abs=0.05)


def test_segment_and_evaluate_two_settings():
    series = debris.load_series(DATA, max_images=2)
    pipe = debris.spheroid_pipeline(scale=0.5, background_radius=50)
    assert [s.name for s in pipe.steps] == ["rescale", "invert", "rolling_ball"]
    settings = [{"name": "otsu", "backend": "classical", "params": {"threshold": "otsu", "sigma": 2.0, "h": 0}},
                {"name": "missing", "backend": "unet", "params": {"model": "no_such_model_here"}}]
    res = debris.segment_series(series, pipe, settings, smooth_radius=6)
    assert "missing" in res["errors"] and "no_such_model_here" in res["errors"]["missing"]
    labs = res["labels"]["otsu"]
    assert all(lab.shape == (256, 256) for lab in labs)  # back at the original resolution
    per_image, summary = debris.evaluate_series(series, res["labels"])
    assert list(summary["setting"]) == ["otsu"] and len(per_image) == 2
    row = per_image.iloc[1]
    # independent reference: the largest object's equivalent diameter from its pixel count (2 µm pixels)
    mask, n = largest_object(labs[1])
    assert row["n_objects"] == n
    assert row["diameter"] == pytest.approx(np.sqrt(4 * mask.sum() * 4.0 / np.pi))
    assert row["volume"] == pytest.approx(np.pi * row["diameter"] ** 3 / 6)
    inter, union = np.sum(mask & (series[1]["truth"] > 0)), np.sum(mask | (series[1]["truth"] > 0))
    assert row["jcd"] == pytest.approx(1 - inter / union)
    assert summary["jcd_mean"].iloc[0] < 0.15 and summary["isf"].iloc[0] == 0
    assert debris.choose_setting(summary) == "otsu"
    with pytest.raises(ConfigError):
        debris.choose_setting(summary, "missing")
    assert len(debris.plot_growth(per_image, "otsu").axes) == 2
    assert len([a for a in debris.plot_overlays(series, labs).axes if a.get_visible()]) == 2
    assert len(debris.plot_settings(series, res["labels"]).axes) == 2 * 3


def test_bad_settings():
    with pytest.raises(ConfigError):
        debris.segment_series([], debris.spheroid_pipeline(), [{"backend": "classical"}])
    with pytest.raises(ConfigError):
        debris.spheroid_pipeline(scale=0)
