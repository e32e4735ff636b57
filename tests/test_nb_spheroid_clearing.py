"""notebooks/spheroid_clearing executed headless on the demo data, then re-run from its record."""

import json

import pandas as pd
import pytest

from nbhelpers import check_outputs, execute

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_spheroid_clearing_notebook_runs_and_reruns_from_record(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    folder = execute("spheroid_clearing", tmp_path / "a")
    check_outputs(folder, ["clearing_profiles.csv", "clearing_along_depth.png", "band_comparison.csv",
                           "segmentation_along_depth.csv", "segmentation_along_depth.png",
                           "counts_along_depth.png", "transfer_matrix.csv", "transfer_matrix.png",
                           "transfer_training.csv"])
    record = json.loads((folder / "record.json").read_text())
    assert record["conditions"] == ["cleared", "noncleared"]
    prof = pd.read_csv(folder / "clearing_profiles.csv")
    assert len(prof) == 2 * record["max_images"] * 32
    assert prof["percent_max_diameter"].between(0, 100).all() and (prof["depth_pct"] == 100).any()
    band = pd.read_csv(folder / "band_comparison.csv").set_index("condition")
    assert band.loc["cleared", "cnr_fr_mean"] > band.loc["noncleared", "cnr_fr_mean"]
    seg = pd.read_csv(folder / "segmentation_along_depth.csv")
    assert "classical" in set(seg["model"])
    assert seg["pixel_f1"].between(0, 1).all() and seg["aji"].between(0, 1).all()
    classical = seg[(seg["model"] == "classical") & (seg["n_true"] > 5)]
    assert classical["pixel_f1"].mean() > 0.5
    matrix = pd.read_csv(folder / "transfer_matrix.csv")
    assert len(matrix) == 4 and matrix[["pixel_f1", "aji", "f1@0.5"]].stack().between(0, 1).all()

    again = execute("spheroid_clearing", tmp_path / "b", record=folder / "record.json")
    pd.testing.assert_frame_equal(pd.read_csv(again / "clearing_profiles.csv"), prof)
    rerun = pd.read_csv(again / "segmentation_along_depth.csv")
    pd.testing.assert_frame_equal(rerun.drop(columns="seconds"), seg.drop(columns="seconds"))  # timings differ
