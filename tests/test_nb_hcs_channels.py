"""The hcs_channels notebook runs headless on the demo data through the run engine and re-runs from its
record; its run folders hold a run.json each."""

import json

import pandas as pd
import pytest
from nbhelpers import REPO, check_outputs, execute, widget_views

pytestmark = [pytest.mark.slow, pytest.mark.notebook]

MAIN = ["record.json", "config_nuclei.json", "config_cells.json", "runs.json", "fusion_scores.csv",
        "f1_nuclei.csv", "f1_cells.csv", "best.json", "f1_heatmap.png", "fusion_examples.png", "f1_nuclei.html",
        "fusion_explorer.png", "fusion_explorer.json"]


@pytest.mark.skipif(not (REPO / "models" / "cellpose_demo").exists(),
                    reason="models/cellpose_demo not built yet (scripts train it)")
def test_hcs_channels_notebook(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    folder = execute("hcs_channels", tmp_path / "a")
    prov = check_outputs(folder, MAIN)
    assert "f1_heatmap.png" in prov["outputs"]
    record = json.loads((folder / "record.json").read_text())
    assert record["channels"] == ["nuclei_cyto", "cytoplasm", "mito", "membrane"]
    # one engine run per target inside the notebook's run folder, each with its record and tables
    runs = json.loads((folder / "runs.json").read_text())
    assert sorted(runs) == ["cells", "nuclei"]
    for target, name in runs.items():
        run_dir = folder / name
        assert (run_dir / "run.json").is_file() and (run_dir / "metrics.csv").is_file()
        recorded = json.loads((run_dir / "run.json").read_text())
        saved = json.loads((folder / f"config_{target}.json").read_text())
        assert recorded["config"]["segmenters"][0]["sweep"] == saved["segmenters"][0]["sweep"]
        assert recorded["config"]["inputs"]["path"] == saved["inputs"]["path"] == str(folder.resolve() / "inputs"
                                                                                     / "images")
        assert len(pd.read_csv(run_dir / "metrics.csv")) == 15 * len(record["methods"])
    nuclei = pd.read_csv(folder / "f1_nuclei.csv")
    # the power set of 4 channels: 15 rows; one column per fusion method
    assert len(nuclei) == 15 and list(nuclei.columns) == ["channels"] + record["methods"]
    values = nuclei[record["methods"]].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    best = json.loads((folder / "best.json").read_text())
    # the nuclei model finds the nuclei in the nuclear channel
    assert best["nuclei"]["f1"] == pytest.approx(values.max()) and best["nuclei"]["f1"] > 0.5
    assert "nuclei_cyto" in best["nuclei"]["channels"]
    # the channel-subset explorer starts at the best cell, decoded from one pass, equal to the run's labels
    explorer = json.loads((folder / "fusion_explorer.json").read_text())
    assert "+".join(explorer["channels"]) == best["nuclei"]["channels"] and explorer["method"] == best["nuclei"]["method"]
    assert explorer["matches_run"] is True and explorer["n_predict"] == 1
    assert explorer["f1"]["fused"] == pytest.approx(best["nuclei"]["f1"])
    assert widget_views(tmp_path / "a" / "hcs_channels.executed.ipynb", "hcs.subset_explorer(") == 1
    again = execute("hcs_channels", tmp_path / "b", record=folder / "record.json")
    pd.testing.assert_frame_equal(pd.read_csv(again / "f1_nuclei.csv"), nuclei)
    pd.testing.assert_frame_equal(pd.read_csv(again / "f1_cells.csv"), pd.read_csv(folder / "f1_cells.csv"))
