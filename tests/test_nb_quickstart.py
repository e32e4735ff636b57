"""Execute notebooks/00_quickstart headless on the demo data, check what it wrote, re-run it
from its record and get the same tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile
from nbhelpers import REPO, check_outputs, execute, rerun_engine_run, widget_views

MAIN = ["record.json", "models.json", "explore_config.json", "montages.png", "ranking.csv", "chosen.json",
        "final_config.json", "final_metrics.csv", "object_filter.png", "objects.csv", "embedding.csv",
        "embedding.png", "export_ranges.json"]


def _n_settings(entries: list[dict], scale_factors=(1.0,)) -> int:
    """Settings of the grid: each entry's sweep, times the scale factors for StarDist and Cellpose."""
    return sum(math.prod(len(v) for v in e.get("sweep", {}).values())
               * (len(scale_factors) if e["backend"] in ("stardist", "cellpose") else 1) for e in entries)


@pytest.mark.slow
@pytest.mark.notebook
def test_quickstart_runs_and_reruns_from_record(tmp_path):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    folder = execute("00_quickstart", tmp_path / "first")
    check_outputs(folder, MAIN)
    record = json.loads((folder / "record.json").read_text())
    assert record["choose"] == "auto" and record["n_explore_images"] == 2
    assert len(record["pipelines"]) == 4

    # the grid: every pipeline x every usable model setting, on 2 images, ranked
    usable = json.loads((folder / "models.json").read_text())["usable"]
    assert {"classical"} <= {m["backend"] for m in usable}
    ranking = pd.read_csv(folder / "ranking.csv")
    assert len(record["scale_factors"]) == 2  # the grid explores scale factors too
    assert len(ranking) == 4 * _n_settings(usable, record["scale_factors"])
    assert (ranking["n_images"] == 2).all()
    assert ranking["f1@0.5_mean"].between(0, 1).all()
    assert ranking["f1@0.5_mean"].is_monotonic_decreasing
    assert ranking["f1@0.5_mean"].iloc[0] > 0.7  # classical alone reaches ~0.8 on these nuclei
    chosen = json.loads((folder / "chosen.json").read_text())
    assert chosen["combination"] == ranking["combination"].iloc[0]
    assert chosen["score"] == pytest.approx(ranking["f1@0.5_mean"].iloc[0])

    # the chosen combination on all 8 images; truth counts checked against the label files
    metrics = pd.read_csv(folder / "final_metrics.csv")
    gt_files = sorted((REPO / "demo_data" / "nuclei2d" / "labels").glob("*.tif"))
    assert list(metrics["image"]) == [p.stem for p in gt_files]
    assert (metrics["status"] == "done").all()
    assert list(metrics["n_true"]) == [len(np.unique(tifffile.imread(p))) - 1 for p in gt_files]
    assert (metrics["n_pred"] == metrics["n_objects"]).all()
    assert 0.6 < metrics["f1@0.5"].mean() <= 1.0

    # the explorers: one threshold explorer per model of the grid (its static sweep saved), the
    # object filter over every image; all live in the executed notebook (plus the montage browser)
    from opsef_core.widgets import DECODING_SLIDERS

    explored = [m["name"] for m in usable if m["backend"] in DECODING_SLIDERS]
    assert {"stardist", "cellpose", "unet"} <= {m["backend"] for m in usable}  # the demo models ship
    check_outputs(folder, [f"thresholds_{name}.png" for name in explored])
    executed = tmp_path / "first" / "00_quickstart.executed.ipynb"
    assert widget_views(executed, "qs.threshold_explorers(") == len(explored)
    assert widget_views(executed, "widgets.object_filter(") == 1
    # the export used the object filter's ranges: filter_ranges until a slider moves
    assert json.loads((folder / "export_ranges.json").read_text()) == record["filter_ranges"]

    # object filtering: the kept flags follow the ranges; ROI zips hold exactly the kept objects
    objects = pd.read_csv(folder / "objects.csv")
    assert len(objects) == metrics["n_objects"].sum()
    inside = np.ones(len(objects), bool)
    for col, (lo, hi) in record["filter_ranges"].items():
        inside &= objects[col].between(lo, hi).to_numpy()
    assert (objects["kept"].to_numpy() == inside).all()
    assert 0 < objects["kept"].sum() < len(objects)
    from opsef_core.export import read_roi_zip

    first = metrics["image"].iloc[0]
    rois = read_roi_zip(folder / "rois" / f"{first}.zip", (256, 256))
    assert len(np.unique(rois[rois > 0])) == int(objects[(objects["image"] == first)]["kept"].sum())

    embedding = pd.read_csv(folder / "embedding.csv")
    assert len(embedding) == objects["kept"].sum()
    assert set(embedding["cluster"]) == {0, 1, 2}
    assert np.isfinite(embedding[["PC1", "PC2", "tSNE1", "tSNE2"]].to_numpy()).all()

    # repeat from the record: a new folder with the same tables
    again = execute("00_quickstart", tmp_path / "second", record=folder / "record.json")
    assert again != folder
    check_outputs(again, MAIN)
    for table in ("final_metrics.csv", "ranking.csv", "objects.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(again / table), pd.read_csv(folder / table))

    # the notebook's final segmentation is an engine run: `opsef run RUN/run.json` from another
    # folder repeats it with identical labels
    finals = [p for p in folder.glob("*/run.json") if "final" in p.parent.name]
    assert len(finals) == 1, sorted(folder.glob("*/run.json"))
    rerun_engine_run(finals[0], tmp_path / "reruns", tmp_path / "elsewhere")
