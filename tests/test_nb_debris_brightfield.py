"""The debris_brightfield notebook runs headless on the demo data and re-runs from its record."""

import json

import pandas as pd
import pytest

from nbhelpers import check_outputs, execute, execute_cli

pytestmark = [pytest.mark.slow, pytest.mark.notebook]

MAIN = ["record.json", "spheroid_metrics.csv", "spheroid_summary.csv", "growth.csv", "settings_montage.png",
        "growth_curve.png", "overlays.png", "threshold_explorer.png"]


def test_debris_brightfield_notebook(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    folder = execute("debris_brightfield", tmp_path / "a")  # the notebook's own settings
    prov = check_outputs(folder, MAIN)
    assert "spheroid_summary.csv" in prov["outputs"]
    record = json.loads((folder / "record.json").read_text())
    names = ["classical_otsu", "classical_li", "unet_demo"]
    assert record["scale"] == 0.5 and [s["name"] for s in record["settings"]] == names
    per_image = pd.read_csv(folder / "spheroid_metrics.csv")
    summary = pd.read_csv(folder / "spheroid_summary.csv")
    assert len(per_image) == 3 * 6 and set(summary["setting"]) == set(names)
    # a working segmentation of the demo spheroids: small Jaccard distance, no invalid spheroid,
    # diameters growing with the time index (radius 38 + 6 t px in the generator)
    assert summary["jcd_mean"].min() < 0.15
    assert (summary["isf"] == 0).all() and ((summary["asf"] >= 0) & (summary["asf"] <= 1)).all()
    growth = pd.read_csv(folder / "growth.csv")
    assert growth["diameter_true"].is_monotonic_increasing and growth["diameter"].is_monotonic_increasing
    assert len(list((folder / "labels").glob("*.tif"))) == 6
    # re-run from the record with papermill's command line (papermill -f record.json): identical tables
    again = execute_cli("debris_brightfield", tmp_path / "b", record=folder / "record.json")
    pd.testing.assert_frame_equal(pd.read_csv(again / "spheroid_summary.csv").drop(columns="seconds"),
                                  summary.drop(columns="seconds"))
    pd.testing.assert_frame_equal(pd.read_csv(again / "spheroid_metrics.csv"), per_image)
