"""The debris_brightfield notebook runs headless on the demo data through the run engine and re-runs from its records."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nbhelpers import check_outputs, execute, execute_cli

pytestmark = [pytest.mark.slow, pytest.mark.notebook]

MAIN = ["record.json", "engine_run.json", "spheroid_metrics.csv", "spheroid_summary.csv", "growth.csv",
        "settings_montage.png", "growth_curve.png", "overlays.png", "threshold_explorer.png"]


def _labels(run_dir: Path, sub: str) -> dict:
    return {p.name: tifffile.imread(p) for p in sorted((run_dir / sub).glob("*.tif"))}


def test_debris_brightfield_notebook(tmp_path):
    for sub in ("a", "b", "c", "elsewhere"):
        (tmp_path / sub).mkdir()
    folder = execute("debris_brightfield", tmp_path / "a")  # the notebook's own settings
    prov = check_outputs(folder, MAIN)
    assert "spheroid_summary.csv" in prov["outputs"]
    record = json.loads((folder / "record.json").read_text())
    names = ["spheroid_unet", "classical_otsu"]  # the notebook's defaults: the bundled spheroid U-Net first
    assert record["scale"] == 0.5 and [s["name"] for s in record["settings"]] == names
    # the segmentation is the engine's run, inside the notebook's run folder
    run_dir = folder / json.loads((folder / "engine_run.json").read_text())["run_folder"]
    engine = json.loads((run_dir / "run.json").read_text())
    assert [s["name"] for s in engine["config"]["segmenters"]] == names
    assert engine["config"]["postprocess"] == {"smooth_radius": record["smooth_radius"]}
    assert [s["name"] for s in engine["config"]["pipelines"][0]["steps"]] == ["rescale", "invert"]
    assert engine["config"]["segmenters"][0]["params"]["model"] == "spheroid_debris_unet"
    summary_csv = pd.read_csv(run_dir / "summary.csv")
    assert len(summary_csv) == len(names) * 6 and (summary_csv["status"] == "done").all()
    per_image = pd.read_csv(folder / "spheroid_metrics.csv")
    summary = pd.read_csv(folder / "spheroid_summary.csv")
    assert len(per_image) == len(names) * 6 and set(summary["setting"]) == set(names)
    assert not per_image.duplicated(["image", "setting"]).any() and (per_image["status"] == "done").all()
    # every row names the run's label image it was computed from
    assert all((run_dir / p).is_file() for p in per_image["labels"])
    # a working segmentation of the demo spheroids: small Jaccard distance, no invalid spheroid,
    # diameters growing with the time index (radius 38 + 6 t px in the generator)
    assert summary["jcd_mean"].min() < 0.15
    assert (summary["isf"] == 0).all() and ((summary["asf"] >= 0) & (summary["asf"] <= 1)).all()
    growth = pd.read_csv(folder / "growth.csv")
    assert growth["diameter_true"].is_monotonic_increasing and growth["diameter"].is_monotonic_increasing
    chosen = _labels(folder, "labels")
    assert len(chosen) == 6
    combo = per_image.loc[per_image["setting"] == growth["setting"].iloc[0], "combination"].iloc[0]
    np.testing.assert_array_equal(chosen["bf_t03.tif"],
                                  tifffile.imread(run_dir / "labels_filtered" / f"bf_t03__{combo}.tif"))

    # the engine's run.json repeats the segmentation with `opsef run`, from another folder: identical labels
    cli = Path(sys.executable).with_name("opsef")
    done = subprocess.run([str(cli), "run", str(run_dir / "run.json"), "--out", str(tmp_path / "c"),
                           "--no-progress"], cwd=tmp_path / "elsewhere", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    again_run = Path(done.stdout.strip().splitlines()[-1])
    for sub in ("labels", "labels_filtered"):
        first, second = _labels(run_dir, sub), _labels(again_run, sub)
        assert len(first) == len(names) * 6 and list(first) == list(second), sub
        for name in first:
            np.testing.assert_array_equal(second[name], first[name], err_msg=f"{sub}/{name}")

    # re-run the notebook from its record with papermill's command line (papermill -f record.json): identical tables
    again = execute_cli("debris_brightfield", tmp_path / "b", record=folder / "record.json")
    pd.testing.assert_frame_equal(pd.read_csv(again / "spheroid_summary.csv").drop(columns="seconds"),
                                  summary.drop(columns="seconds"))
    pd.testing.assert_frame_equal(pd.read_csv(again / "spheroid_metrics.csv"), per_image)
