"""Library code of the hcs_channels notebook: fields, the power-set score table, its styling and plots."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opsef_core.errors import ConfigError, InputFileError
from opsef_core.fusion import channel_power_set
from opsef_core.workflows import hcs

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "demo_data" / "hcs_channels"


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


@pytest.fixture(scope="module")
def random_cellpose(tmp_path_factory):
    """A CPnet with random weights (no pretrained model needed) to test the mechanics only."""
    import torch
    from cellpose.resnet_torch import CPnet

    path = tmp_path_factory.mktemp("cp") / "cp_random"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        CPnet([2, 32, 64, 128, 256], 3, 3).save_model(str(path))
    return str(path)


@pytest.mark.slow
def test_fusion_scores_run_the_network_once_per_channel(random_cellpose, monkeypatch):
    from opsef_core.segment import get_segmenter

    seg = get_segmenter("cellpose")
    calls = []
    original = type(seg).predict
    monkeypatch.setattr(type(seg), "predict", lambda self, image, p: calls.append(p.channel) or original(self, image, p))
    fields = hcs.load_fields(DATA, max_images=1, crop=[0, 64, 0, 64])
    params = {"model": random_cellpose, "diameter": 30.0}
    scores = hcs.fusion_scores(fields, {"nuclei": params, "cells": params},
                               channels=["nuclei_cyto", "membrane"], methods=["flow_average", "pixel_vote"])
    # same network setting for both targets: one pass per channel in all
    assert sorted(calls) == [0, 3]
    assert len(scores) == 2 * 3 * 2  # targets x subsets x methods
    assert set(scores["channels"]) == {"nuclei_cyto", "membrane", "nuclei_cyto+membrane"}
    assert scores["f1"].between(0, 1).all()
    lab = hcs.segment_subset(fields[0], ["nuclei_cyto", "membrane"], "pixel_vote", params)
    assert lab.shape == (64, 64) and len(calls) == 4  # segment_subset without a cache re-runs


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "models" / "cellpose_demo").exists(), reason="models/cellpose_demo not built yet")
def test_fusion_scores_demo_model_finds_nuclei():
    fields = hcs.load_fields(DATA, max_images=1, crop=[48, 208, 48, 208])
    scores = hcs.fusion_scores(fields, {"nuclei": {"model": "cellpose_demo", "diameter": 17.0}},
                               channels=["nuclei_cyto", "mito"], methods=["flow_average", "majority_vote"])
    table = hcs.score_table(scores, "nuclei")
    assert table.loc["nuclei_cyto", "flow_average"] > 0.5
