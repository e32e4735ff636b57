"""notebooks/spheroid_clearing executed headless on the demo data, then re-run from its record."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from nbhelpers import check_outputs, execute, widget_views

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_spheroid_clearing_notebook_runs_and_reruns_from_record(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    folder = execute("spheroid_clearing", tmp_path / "a")
    check_outputs(folder, ["clearing_profiles.csv", "clearing_along_depth.png", "band_comparison.csv",
                           "segmentation_along_depth.csv", "segmentation_along_depth.png",
                           "counts_along_depth.png", "transfer_matrix.csv", "transfer_matrix.png",
                           "transfer_training.csv", "segmentation_runs.json", "transfer_runs.json"])
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
    # the segmentation went through the engine: one run folder per condition inside the notebook's
    runs = json.loads((folder / "segmentation_runs.json").read_text())
    assert sorted(runs) == ["cleared", "noncleared"]
    for cond, rel in runs.items():
        run_dir = folder / rel
        assert json.loads((run_dir / "run.json").read_text())["config"]["segmenters"][0]["slices"] is True
        summary = pd.read_csv(run_dir / "summary.csv")
        assert (summary["status"] == "done").all()
        assert set(summary["segmenter"]) == set(seg.loc[seg["condition"] == cond, "model"])
    # one live depth explorer per segmented stack (record["segment_images"] per condition)
    stacks = seg[["condition", "image"]].drop_duplicates()
    assert len(stacks) == 2 * record["segment_images"]
    check_outputs(folder, [f"depth_{c}_{i}.png" for c, i in stacks.itertuples(index=False)])
    assert widget_views(tmp_path / "a" / "spheroid_clearing.executed.ipynb", "wc.depth_explorers(") == len(stacks)
    transfer = json.loads((folder / "transfer_runs.json").read_text())
    assert sorted(transfer) == ["cleared", "noncleared"]
    matrix = pd.read_csv(folder / "transfer_matrix.csv")
    assert len(matrix) == 4 and matrix[["pixel_f1", "aji", "f1@0.5"]].stack().between(0, 1).all()

    again = execute("spheroid_clearing", tmp_path / "b", record=folder / "record.json")
    pd.testing.assert_frame_equal(pd.read_csv(again / "clearing_profiles.csv"), prof)
    rerun = pd.read_csv(again / "segmentation_along_depth.csv")
    pd.testing.assert_frame_equal(rerun.drop(columns="seconds"), seg.drop(columns="seconds"))  # timings differ
    again_runs = json.loads((again / "segmentation_runs.json").read_text())
    for cond, rel in runs.items():
        a, b = pd.read_csv(folder / rel / "summary.csv"), pd.read_csv(again / again_runs[cond] / "summary.csv")
        for la, lb in zip(a["labels"], b["labels"]):
            np.testing.assert_array_equal(tifffile.imread(folder / rel / la),
                                          tifffile.imread(again / again_runs[cond] / lb))
