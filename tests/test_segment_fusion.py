"""The ``fusion`` segmenter backend: channel fusion as a run-config segmenter.

Decoding equals :func:`opsef_core.fusion.fuse` on the same channel predictions, and a sweep over
channel subsets × methods shares one network pass per image in a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core import fusion
from opsef_core.errors import ConfigError, SegmentationError
from opsef_core.image import Image
from opsef_core.segment import available_segmenters, get_segmenter

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "cellpose_demo"
HCS = REPO / "demo_data" / "hcs_channels"
NAMES = ["nuclei_cyto", "cytoplasm", "mito", "membrane"]
needs_model = pytest.mark.skipif(not DEMO_MODEL.exists(), reason="models/cellpose_demo not built yet")


# ----------------------------------------------------------------------------- parameters (no network)
def test_registered_and_params_validated():
    assert "fusion" in available_segmenters()
    seg = get_segmenter("fusion")
    p = seg.params({"channels": ["a", "b"], "method": "staple", "model": "m", "diameter": 17})
    assert p.channels == ["a", "b"] and p.method == "staple" and p.network_channels is None
    assert p.cellpose()["diameter"] == 17.0 and "channel" not in p.cellpose()
    for bad, match in [({"method": "average"}, "method"), ({"channels": []}, "channels"),
                       ({"channels": ["a", "a"]}, "repeat"), ({"diameter": 17, "scale_factor": 2}, "either"),
                       ({"channels": ["c"], "network_channels": ["a", "b"]}, "not among"),
                       ({"channel": 0}, "channel")]:
        with pytest.raises(ConfigError, match=match):
            seg.params(bad)


def test_wrapped_cellpose_fields_keep_the_cellpose_defaults_and_bounds():
    from opsef_core.segment.cellpose_backend import CellposeParams
    from opsef_core.segment.fusion_backend import CELLPOSE_FIELDS, FusionParams

    for k in CELLPOSE_FIELDS:
        a, b = FusionParams.model_fields[k], CellposeParams.model_fields[k]
        assert a.default == b.default and repr(a.metadata) == repr(b.metadata), k
    # every Cellpose parameter is wrapped except the channel choice
    assert set(CellposeParams.model_fields) - set(CELLPOSE_FIELDS) == {"channel", "nuclear_channel",
                                                                       "normalize_limits"}


def test_network_key_ignores_channel_subset_and_method():
    seg = get_segmenter("fusion")
    base = {"model": "m", "diameter": 17.0}
    keys = {seg.network_key({**base, "channels": ch, "method": m, "cellprob_threshold": t})
            for ch in (["a"], ["a", "b"], None) for m in fusion.FUSION_METHODS for t in (0.0, -1.0)}
    assert len(keys) == 1
    assert seg.network_key({**base, "diameter": 30.0}) not in keys
    assert seg.network_key({**base, "network_channels": ["a", "b"]}) not in keys


def test_pack_unpack_round_trip():
    from opsef_core.segment.fusion_backend import pack_predictions, unpack_predictions

    preds = {c: {"dP": np.full((2, 3, 3), c, np.float32), "cellprob": np.zeros((3, 3), np.float32),
                 "rescale": np.asarray(1.5)} for c in (0, 2, 11)}
    back = unpack_predictions(pack_predictions(preds))
    assert sorted(back) == [0, 2, 11]
    for c in preds:
        assert set(back[c]) == {"dP", "cellprob", "rescale"} and back[c]["dP"] is preds[c]["dP"]


def test_config_validation_and_plan_of_a_fusion_sweep(tmp_path):
    from opsef_core.config import load_config
    from opsef_core.run import plan, plan_table

    cfg = {"inputs": {"path": str(HCS / "images"), "ground_truth": str(HCS / "labels" / "nuclei")},
           "pipelines": [{"name": "raw"}],
           "segmenters": [{"name": "fusion", "backend": "fusion", "params": {"model": "cellpose_demo"},
                           "sweep": {"channels": [["nuclei_cyto"], ["nuclei_cyto", "mito"]],
                                     "method": ["flow_average", "staple"]}}]}
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(cfg))
    combos = plan(load_config(path))
    assert len(combos) == 4 and len({c.network_key for c in combos}) == 1
    assert [c.sweep for c in combos][1] == {"channels": ["nuclei_cyto"], "method": "staple"}
    assert "(1 network passes per" in plan_table(load_config(path))
    bad = {**cfg, "segmenters": [{**cfg["segmenters"][0], "sweep": {"method": ["flow_average", "vote"]}}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="sweep.method"):
        load_config(path)


# ----------------------------------------------------------------------------- with the demo model
@pytest.fixture(scope="module")
def field():
    """A 96x96 crop of an HCS demo field (4 channels) and its nuclei truth."""
    data = tifffile.imread(HCS / "images" / "hcs_00.tif")[:, 48:144, 48:144]
    gt = tifffile.imread(HCS / "labels" / "nuclei" / "hcs_00.tif")[48:144, 48:144]
    img = Image.from_array(data, "CYX", pixel_size={"Y": 0.5, "X": 0.5}, channel_names=NAMES, name="hcs_00_crop")
    return img, gt


PARAMS = {"model": str(DEMO_MODEL), "diameter": 17.0, "device": "cpu"}


@pytest.mark.slow
@needs_model
def test_decode_equals_fuse_on_the_same_channel_predictions(field):
    img, _ = field
    seg = get_segmenter("fusion")
    pool = ["nuclei_cyto", "mito"]
    pred = seg.predict(img, seg.params({**PARAMS, "network_channels": pool}))
    assert list(pred["channels"]) == [0, 2]
    direct = fusion.channel_predictions(img, [0, 2], PARAMS)  # independent network passes
    n_found = 0
    for channels in (["nuclei_cyto"], ["nuclei_cyto", "mito"], [2, 0]):
        idx = [img.channel_index(c) for c in channels]
        for method in fusion.FUSION_METHODS:
            p = seg.params({**PARAMS, "channels": channels, "method": method, "network_channels": pool})
            got = seg.decode(pred, img, p)
            want = fusion.fuse(direct, idx, method, PARAMS)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want, err_msg=f"{channels} {method}")
            n_found += int(got.max() > 0)
    assert n_found >= 4  # the nuclear channel finds nuclei: the comparison is not between empty images
    # one channel, flow averaging: the cellpose backend's own decoding
    cp = get_segmenter("cellpose")
    np.testing.assert_array_equal(
        seg.decode(pred, img, seg.params({**PARAMS, "channels": [0], "network_channels": pool})),
        cp.decode(direct[0], img, cp.params({**PARAMS, "channel": 0})))
    with pytest.raises(SegmentationError, match="no network pass"):
        seg.decode(pred, img, seg.params({**PARAMS, "channels": ["membrane"]}))  # not predicted
    with pytest.raises(SegmentationError, match="no C axis"):
        seg.predict(img.sel(c=0), seg.params(PARAMS))


@pytest.mark.slow
@needs_model
def test_channel_subset_sweep_shares_the_network_passes(field, tmp_path, monkeypatch):
    """A run over 3 subsets x 2 methods: one network pass (4 Cellpose passes), six decodings."""
    from opsef_core import io
    from opsef_core.config import config_from_dict
    from opsef_core.run import execute

    img, gt = field
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    io.write_ome_tiff(tmp_path / "images" / "f0.tif", img)
    io.write_labels(tmp_path / "labels" / "f0.tif", gt)
    cp = get_segmenter("cellpose")
    calls = []
    original = type(cp).predict
    monkeypatch.setattr(type(cp), "predict", lambda self, image, p: calls.append(p.channel) or original(self, image, p))
    subsets = [["nuclei_cyto"], ["mito"], ["nuclei_cyto", "mito"]]
    cfg = config_from_dict({
        "name": "fusion-sweep",
        "inputs": {"path": str(tmp_path / "images"), "ground_truth": str(tmp_path / "labels")},
        "pipelines": [{"name": "raw"}],
        "segmenters": [{"name": "fusion", "backend": "fusion",
                        "params": {**PARAMS, "network_channels": ["nuclei_cyto", "mito"]},
                        "sweep": {"channels": subsets, "method": ["flow_average", "majority_vote"]}}],
        "outputs": {"overlays": False, "montage": False, "measurements": False}})
    run_dir = execute(cfg, out=tmp_path / "runs", progress=False)
    assert sorted(calls) == [0, 2]  # one Cellpose pass per network channel
    item = json.loads((run_dir / "items" / "f0.json").read_text())
    assert item["status"] == "done"
    assert item["counts"]["network"] == 1 and item["counts"]["decode"] == 6
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary["network_reused"]) == [False] + [True] * 5
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) == 6 and metrics["f1@0.5"].between(0, 1).all()
    # the run's labels are the fusion of the same per-channel predictions
    direct = fusion.channel_predictions(img, [0, 2], PARAMS)
    for _, row in summary.iterrows():
        params = json.loads(row["params"])
        idx = [NAMES.index(c) for c in params["channels"]]
        want = fusion.fuse(direct, idx, params["method"], PARAMS)
        np.testing.assert_array_equal(io.read_labels(run_dir / row["labels"]), want, err_msg=row["combination"])
