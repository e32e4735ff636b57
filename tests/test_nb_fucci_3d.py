"""notebooks/fucci_3d executed headless on the demo data, then re-run from its record."""

import json

import numpy as np
import pandas as pd
import pytest
from nbhelpers import check_outputs, execute, widget_views

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


def test_fucci_3d_notebook_runs_and_reruns_from_record(tmp_path):
    import tifffile

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    folder = execute("fucci_3d", tmp_path / "a")
    check_outputs(folder, ["preprocessing.png", "segmentations.png", "scores.csv", "nuclei.csv",
                           "phase_scatter.png", "phase_fractions.csv", "radial_distribution.csv",
                           "radial_distribution.png", "shape_by_phase.png", "confusion.png",
                           "phase_accuracy.csv", "thresholds.json", "pipeline.json", "run_config.json"])
    record = json.loads((folder / "record.json").read_text())
    assert record["red_threshold"] == "otsu" and "classical" in [m["name"] for m in record["models"]]
    # the segmentation is a run of the engine inside the notebook's run folder
    (run_json,) = folder.glob("fucci_3d-*/run.json")
    run_dir = run_json.parent
    engine = json.loads(run_json.read_text())
    assert engine["kind"] == "opsef-run-record" and engine["status"] == "completed"
    assert engine["config"]["pipelines"] == [json.loads((folder / "pipeline.json").read_text())]
    summary = pd.read_csv(run_dir / "summary.csv")
    scores = pd.read_csv(folder / "scores.csv").set_index("model")
    assert scores.loc["classical", "n_true"] == 26
    assert scores["f1@0.5"].max() >= 0.85 and scores["aji"].between(0, 1).all()
    metrics = pd.read_csv(run_dir / "metrics.csv").set_index("segmenter")
    np.testing.assert_allclose(scores["f1@0.5"], metrics.loc[scores.index, "f1@0.5"])
    runs = pd.read_csv(folder / "segmentation_runs.csv").set_index("model")
    # every model of the notebook ran (the demo models ship with the repository) and was scored
    expected = {"classical", "stardist3d_demo", "cellpose_demo_3D", "unet3d_watershed", "unet3d_connected"}
    assert set(runs.index) == expected and (runs["status"] == "done").all(), runs["status"].to_dict()
    assert set(summary["segmenter"]) == expected
    assert set(scores.index) == expected and (scores["n_pred"] > 0).all()
    # the two U-Net decodings share one network pass
    unet = summary[summary["backend"] == "unet"]
    assert sorted(unet["network_reused"].astype(bool)) == [False, True]
    # the 3D models (StarDist, Cellpose, the 3D U-Net with either instance rule) find most nuclei
    assert scores.loc["stardist3d_demo", "f1@0.5"] >= 0.7 and scores.loc["cellpose_demo_3D", "f1@0.5"] >= 0.7
    assert scores.loc[["unet3d_watershed", "unet3d_connected"], "f1@0.5"].min() >= 0.7
    nuclei = pd.read_csv(folder / "nuclei.csv")
    chosen = nuclei["model"].iloc[0]
    assert len(nuclei) == scores.loc[chosen, "n_pred"]
    assert (nuclei["volume"] > 0).all() and nuclei["sphericity"].between(0.5, 1.1).all()
    # the phase calls are on the run's own label image
    rel = summary.loc[summary["segmenter"] == chosen, "labels"].iloc[0]
    labels = tifffile.imread(run_dir / rel)
    assert sorted(nuclei["label"]) == sorted(np.unique(labels[labels > 0]).tolist())
    fractions = pd.read_csv(folder / "phase_fractions.csv")
    assert fractions["fraction"].sum() == pytest.approx(1.0) and len(fractions) == 4
    acc = pd.read_csv(folder / "phase_accuracy.csv").set_index("nuclei")
    assert acc.loc["truth labels", "accuracy"] >= 0.9 and acc.loc[chosen, "accuracy"] >= 0.8
    thr = json.loads((folder / "thresholds.json").read_text())
    assert 0 < thr["thresholds"]["red"] < 1 and thr["threshold_methods"]["green"] == "otsu"

    # the phase explorer starts at the thresholds used and counts the same phases; it is live
    check_outputs(folder, ["phase_explorer.png", "phase_explorer.json"])
    explorer = json.loads((folder / "phase_explorer.json").read_text())
    assert explorer["thresholds"] == pytest.approx(thr["thresholds"])
    assert explorer["counts"] == dict(zip(fractions["phase"], fractions["count"]))
    assert widget_views(tmp_path / "a" / "fucci_3d.executed.ipynb", "widgets.phase_explorer(") == 1

    again = execute("fucci_3d", tmp_path / "b", record=folder / "record.json",
                    parameters={"models": [m for m in record["models"] if m["backend"] != "cellpose"]})
    # without Cellpose 3D (the slow one on a CPU) the best model and its nuclei are the same
    pd.testing.assert_frame_equal(pd.read_csv(again / "nuclei.csv"), nuclei)
