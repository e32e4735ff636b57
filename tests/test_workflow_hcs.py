"""Library code of the hcs_channels notebook: inputs, the fusion run config, the power-set table from a
run, its styling and plots; the run repeats from its run.json with identical labels."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core.errors import ConfigError, InputFileError
from opsef_core.fusion import FUSION_METHODS, channel_power_set
from opsef_core.workflows import hcs
from nbhelpers import rerun_engine_run

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "demo_data" / "hcs_channels"
NAMES = ["nuclei_cyto", "cytoplasm", "mito", "membrane"]


def test_load_fields_with_crop(tmp_path):
    fields = hcs.load_fields(DATA, max_images=1, crop=[32, 160, 0, 96])
    f = fields[0]
    assert f["image"].shape == (4, 128, 96) and f["image"].channel_names[0] == "nuclei_cyto"
    for target in ("nuclei", "cells"):
        lab = f["truth"][target]
        assert lab.shape == (128, 96)
        ids = np.unique(lab[lab > 0])
        np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))  # relabelled after the crop
    with pytest.raises(ConfigError, match="does not fit"):
        hcs.load_fields(DATA, max_images=1, crop=[0, 300, 0, 10])
    with pytest.raises(InputFileError, match="organelles"):
        hcs.load_fields(DATA, targets=["organelles"], max_images=1)


def test_prepare_inputs_writes_cropped_copies_with_channel_names(tmp_path):
    from opsef_core import io

    assert hcs.prepare_inputs(DATA, tmp_path / "unused") == DATA  # no crop: the data itself
    dest = hcs.prepare_inputs(DATA, tmp_path / "in", max_images=2, crop=[10, 74, 20, 100])
    files = sorted(p.name for p in (dest / "images").iterdir())
    assert files == ["hcs_00.tif", "hcs_01.tif"]
    img = io.read_image(dest / "images" / "hcs_01.tif")
    assert img.shape == (4, 64, 80) and list(img.channel_names) == NAMES and img.pixel_size["X"] == 0.5
    np.testing.assert_array_equal(img.data, tifffile.imread(DATA / "images" / "hcs_01.tif")[:, 10:74, 20:100])
    for target in ("nuclei", "cells"):
        lab = tifffile.imread(dest / "labels" / target / "hcs_01.tif")
        assert lab.shape == (64, 80) and lab.max() == len(np.unique(lab)) - 1
    with pytest.raises(ConfigError, match="already holds"):
        hcs.prepare_inputs(DATA, dest, crop=[0, 10, 0, 10])


def test_fusion_config_sweeps_the_power_set_and_matches_the_bundled_config():
    from opsef_core.config import config_from_dict, load_config
    from opsef_core.run import plan

    cfg = hcs.fusion_config("../demo_data/hcs_channels", "nuclei", {"model": "cellpose_demo", "diameter": 17.0},
                            NAMES)
    seg = cfg["segmenters"][0]
    assert seg["backend"] == "fusion" and seg["params"]["network_channels"] == NAMES
    assert seg["sweep"]["channels"] == [list(s) for s in channel_power_set(NAMES)]
    assert seg["sweep"]["method"] == list(FUSION_METHODS)
    assert cfg["inputs"]["ground_truth"] == "../demo_data/hcs_channels/labels/nuclei"
    combos = plan(config_from_dict(cfg))
    assert len(combos) == 15 * 4 and len({c.network_key for c in combos}) == 1
    # configs/hcs_channels.json is the notebook's config on the whole demo data (nuclei), cells its twin
    for target, name, diameter in (("nuclei", "hcs_channels.json", 17.0), ("cells", "hcs_channels_cells.json", 43.0)):
        bundled = load_config(REPO / "configs" / name)
        built = hcs.fusion_config("../demo_data/hcs_channels", target,
                                  {"model": "cellpose_demo", "diameter": diameter}, NAMES)
        got = bundled.model_dump(mode="json")
        want = config_from_dict(built).model_dump(mode="json")
        got.pop("description"), want.pop("description")
        assert got == want, name
        assert bundled.resolve(bundled.inputs.path) == DATA / "images"
    with pytest.raises(ConfigError, match="channels"):
        hcs.fusion_config(DATA, "nuclei", {"model": "m", "channel": 0}, NAMES)
    with pytest.raises(ConfigError, match="unknown fusion"):
        hcs.fusion_config(DATA, "nuclei", {}, NAMES, methods=["average"])
    with pytest.raises(ConfigError, match="at least one channel"):
        hcs.fusion_config(DATA, "nuclei", {}, [])


def _long_table(rng):
    combos = ["+".join(c) for c in channel_power_set(["a", "b", "c"])]
    rows = [{"image": img, "target": "nuclei", "channels": c, "method": m, "f1": float(rng.uniform(0, 0.8))}
            for img in ("i0", "i1") for c in combos for m in ("flow_average", "staple")]
    return pd.DataFrame(rows), combos


def test_score_table_best_cell_and_plots():
    rng = np.random.default_rng(3)
    scores, combos = _long_table(rng)
    scores.loc[(scores["channels"] == "a+c") & (scores["method"] == "staple"), "f1"] = 0.95
    table = hcs.score_table(scores, "nuclei")
    assert list(table.index) == combos and list(table.columns) == ["flow_average", "staple"]
    # mean over the two images, computed independently
    sub = scores[(scores["channels"] == "b") & (scores["method"] == "flow_average")]["f1"]
    assert table.loc["b", "flow_average"] == pytest.approx(sub.mean())
    assert hcs.best_cell(table) == ("a+c", "staple", pytest.approx(0.95))
    html = hcs.style_table(table, caption="nuclei").to_html()
    assert "border: 3px solid black" in html and "0.950" in html
    fig = hcs.plot_heatmap({"nuclei": table, "cells": table})
    assert len(fig.axes) == 3  # two heat maps and the colour bar
    with pytest.raises(ConfigError):
        hcs.score_table(scores, "cells")
    # a combination not scored on one image keeps its row, with no mean
    scores.loc[(scores["channels"] == "b") & (scores["method"] == "staple") & (scores["image"] == "i1"), "f1"] = np.nan
    table = hcs.score_table(scores, "nuclei")
    assert list(table.index) == combos and np.isnan(table.loc["b", "staple"])
    assert "–" in hcs.style_table(table).to_html()


# ----------------------------------------------------------------------------- the run
@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "models" / "cellpose_demo").exists(), reason="models/cellpose_demo not built yet")
def test_hcs_run_table_and_rerun_from_run_json(tmp_path, monkeypatch):
    """One cropped field, 3 channels (7 subsets) x 4 methods; `run.json` repeats it from elsewhere."""
    from opsef_core import io

    channels = ["nuclei_cyto", "cytoplasm", "mito"]
    data = hcs.prepare_inputs(DATA, tmp_path / "inputs", targets=["nuclei"], max_images=1, crop=[48, 144, 48, 144])
    cfg = hcs.fusion_config(data, "nuclei", {"model": "cellpose_demo", "diameter": 17.0}, channels)
    run_dir = hcs.run_fusion(cfg, out=tmp_path / "runs")
    item = json.loads((run_dir / "items" / "hcs_00.json").read_text())
    assert item["status"] == "done" and item["counts"]["network"] == 1 and item["counts"]["decode"] == 28

    scores = hcs.fusion_scores({"nuclei": run_dir})
    table = hcs.score_table(scores, "nuclei")
    want_rows = ["+".join(s) for s in channel_power_set(channels)]
    assert list(table.index) == want_rows and list(table.columns) == list(FUSION_METHODS)
    assert np.isfinite(table.to_numpy()).all() and ((table >= 0) & (table <= 1)).all().all()
    # the table's cells are metrics.csv's f1@0.5, combination by combination
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) == 28 and set(metrics["combination"]) == set(scores["combination"])
    row = metrics[metrics["param_method"] == "staple"].iloc[-1]
    assert table.loc["nuclei_cyto+cytoplasm+mito", "staple"] == pytest.approx(row["f1@0.5"])
    combo, _, best = hcs.best_cell(table)
    assert "nuclei_cyto" in combo and best > 0.5  # the nuclei model finds the nuclei in the nuclear channel

    view = hcs.subset_view(run_dir, combo)
    assert list(view["labels"]) == list(FUSION_METHODS) and view["truth"].shape == (96, 96)
    fig = hcs.plot_examples(view, "nuclei")
    assert len(fig.axes) >= 6  # input, truth and the four methods
    # the subset explorer: the run's own parameters, one network pass, every method equal to the run's labels
    ex = hcs.subset_explorer(run_dir, combo, method="staple")
    assert ex.state["matches_run"] and ex.state["n_predict"] == 1 and ex.state["channels"] == combo.split("+")
    for m in FUSION_METHODS:
        np.testing.assert_array_equal(ex.update(method=m), view["labels"][m])
    assert ex.state["n_predict"] == 1

    # `opsef run RUN/run.json` from another working directory: identical label images
    again = rerun_engine_run(run_dir / "run.json", tmp_path / "again", tmp_path / "elsewhere")
    first = pd.read_csv(run_dir / "summary.csv")
    second = pd.read_csv(again / "summary.csv")
    assert list(second["combination"]) == list(first["combination"]) and (second["status"] == "done").all()
    assert io.read_labels(again / second["labels"].iloc[0]).max() > 0
    pd.testing.assert_frame_equal(hcs.score_table(hcs.fusion_scores({"nuclei": again}), "nuclei"), table)
