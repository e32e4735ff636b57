"""Cellpose backend, model lookup and training (cellpose 3.1.1.2, CPU, bundled demo model)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import opsef_core
from opsef_core.errors import ConfigError, ModelNotFoundError, SegmentationError
from opsef_core.evaluate import match, pool
from opsef_core.image import Image
from opsef_core.models import resolve_model
from opsef_core.segment import get_segmenter

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "cellpose_demo"
NUCLEI = REPO / "demo_data" / "nuclei2d"


@pytest.fixture(scope="module")
def seg():
    return get_segmenter("cellpose")


@pytest.fixture(scope="module")
def crop():
    """A 128x128 crop of a demo nuclei image and its truth."""
    img = tifffile.imread(NUCLEI / "images" / "nuclei_01.tif")[:128, :128]
    lab = tifffile.imread(NUCLEI / "labels" / "nuclei_01.tif")[:128, :128]
    return Image.from_array(img, "YX", pixel_size={"Y": 0.5, "X": 0.5}, name="nuclei_01_crop"), lab


@pytest.fixture(scope="module")
def base_params():
    return {"model": str(DEMO_MODEL), "device": "cpu"}


class _RunNetCounter:
    """Counts calls of cellpose's network pass (``CellposeModel._run_net``) while active."""

    def __init__(self):
        self.calls = 0

    def __enter__(self):
        from cellpose.models import CellposeModel

        self._orig = CellposeModel._run_net
        counter = self

        def counting(model, *a, **k):
            counter.calls += 1
            return counter._orig(model, *a, **k)

        CellposeModel._run_net = counting
        return self

    def __exit__(self, *exc):
        from cellpose.models import CellposeModel

        CellposeModel._run_net = self._orig


@pytest.fixture(scope="module")
def counted_prediction(seg, crop, base_params):
    seg.model(seg.params(base_params))  # load outside the count
    with _RunNetCounter() as counter:
        pred = seg.predict(crop[0], seg.params(base_params))
    return pred, counter


@pytest.fixture(scope="module")
def prediction(counted_prediction):
    return counted_prediction[0]


# ----------------------------------------------------------------------------- parameters
def test_params_validation_and_network_key(seg):
    with pytest.raises(ConfigError, match="diameter or scale_factor"):
        seg.params({"diameter": 20, "scale_factor": 1.5})
    with pytest.raises(ConfigError, match="normalize"):
        seg.params({"normalize": (99, 1)})
    with pytest.raises(ConfigError, match="flow_thresh"):
        seg.params({"flow_thresh": 0.4})
    base = seg.network_key({"model": "m"})
    # decoding parameters do not change the network pass ...
    assert seg.network_key({"model": "m", "flow_threshold": 0.9, "cellprob_threshold": -2,
                            "min_size": 3, "stitch_threshold": 0.5, "niter": 50}) == base
    # ... network parameters do
    for change in ({"diameter": 12.0}, {"scale_factor": 2.0}, {"channel": 1}, {"do_3D": True},
                   {"normalize": (2, 98)}, {"model": "other"}):
        assert seg.network_key({"model": "m", **change}) != base


def test_channel_choice_errors(seg, base_params):
    two = Image.from_array(np.zeros((2, 64, 64), np.uint16), "CYX", channel_names=["dna", "actin"])
    with pytest.raises(SegmentationError, match="2 channels.*'channel'"):
        seg.predict(two, seg.params(base_params))
    with pytest.raises(SegmentationError, match="do_3D needs a Z stack"):
        seg.predict(two, seg.params({**base_params, "channel": "dna", "do_3D": True}))
    plane = Image.from_array(np.zeros((64, 64), np.uint16), "YX")
    with pytest.raises(SegmentationError, match="no C axis"):
        seg.predict(plane, seg.params({**base_params, "nuclear_channel": 1}))
    x, kw = seg.network_input(two, seg.params({**base_params, "channel": "actin", "nuclear_channel": "dna"}))
    assert x.shape == (64, 64, 2) and kw["channels"] == [1, 2] and kw["channel_axis"] == 2


# ----------------------------------------------------------------------------- model lookup
def test_named_model_offline_fails_fast(tmp_path, monkeypatch):
    import cellpose.models  # noqa: F401  (import time is not the point of this test)

    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cp"))
    monkeypatch.setenv("OPSEF_MODELS_DIR", str(tmp_path / "project"))
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("cellpose", "nuclei")
    assert time.perf_counter() - t0 < 5.0
    msg = str(info.value)
    assert "nucleitorch_0" in msg and "Download failed" in msg
    # not a cellpose name: no download attempt, still a clear error
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model("cellpose", "no_such_model")
    # a weights file in the Cellpose folder under cellpose's file name is found
    (tmp_path / "cp").mkdir(exist_ok=True)
    (tmp_path / "cp" / "cyto2torch_0").write_bytes(b"weights")
    found = resolve_model("cellpose", "cyto2")
    assert found.source == "cache" and found.path.name == "cyto2torch_0"


def test_demo_model_is_small_float16_and_documented():
    weights = DEMO_MODEL / "weights.pth"
    assert weights.is_file() and weights.stat().st_size < 15e6
    import torch

    sd = torch.load(weights, map_location="cpu", weights_only=True)
    assert sd["output.2.weight"].dtype == torch.float16
    rec = json.loads((DEMO_MODEL / "training.json").read_text())
    assert rec["weights_dtype"] == "float16" and rec["params"]["n_epochs"] >= 50
    assert len(rec["train_losses"]) == rec["params"]["n_epochs"]
    assert rec["train_losses"][-1] < rec["train_losses"][0]


# ----------------------------------------------------------------------------- network pass / decode
def test_prediction_arrays(prediction, crop):
    assert prediction["dP"].shape == (2, 128, 128) and prediction["dP"].dtype == np.float32
    assert prediction["cellprob"].shape == (128, 128) and prediction["cellprob"].dtype == np.float32


@pytest.mark.parametrize("flow, cellprob, diameter", [(0.4, 0.0, None), (0.8, -1.0, 12.0)])
def test_decode_equals_cellpose_eval_exactly(seg, crop, prediction, base_params, flow, cellprob, diameter):
    """decode(predict) reproduces the public one-call ``model.eval`` masks exactly."""
    p = seg.params({**base_params, "flow_threshold": flow, "cellprob_threshold": cellprob,
                    "diameter": diameter})
    pred = prediction if diameter is None else seg.predict(crop[0], p)
    ours = seg.decode(pred, crop[0], p)
    model = seg.model(p)
    # our diameter=None means "objects are diam_mean wide" (eval's None would use diam_labels)
    masks, _, _ = model.eval(np.asarray(crop[0].data), channels=[0, 0], flow_threshold=flow,
                             cellprob_threshold=cellprob, diameter=diameter or float(model.diam_mean))
    assert ours.shape == (128, 128) and ours.dtype == np.int32
    assert ours.max() > 5
    np.testing.assert_array_equal(ours, masks)


def test_flow_threshold_sweep_follows_the_flows_once_per_cellprob_threshold(seg, crop, base_params, monkeypatch):
    """The dynamics are shared across flow_threshold/min_size; every setting still equals eval."""
    import cellpose.dynamics as dyn

    img = crop[0]
    pred = seg.predict(img, seg.params(base_params))
    calls = []
    real = dyn.follow_flows
    monkeypatch.setattr(dyn, "follow_flows", lambda *a, **k: calls.append(1) or real(*a, **k))
    grid = [(f, c, m) for c in (0.0, -1.0) for f in (0.2, 0.4, 0.8) for m in (15, 40)]
    ours = {s: seg.decode(pred, img, seg.params({**base_params, "flow_threshold": s[0], "cellprob_threshold": s[1],
                                                 "min_size": s[2]})) for s in grid}
    assert len(calls) == 2  # one per cellprob_threshold, not 12
    monkeypatch.undo()
    model = seg.model(seg.params(base_params))
    for (f, c, m), lab in ours.items():
        if m == 40 and f != 0.4:
            continue  # keep the reference calls few; min_size is checked at flow 0.4
        masks = model.eval(np.asarray(img.data), channels=[0, 0], flow_threshold=f, cellprob_threshold=c,
                           min_size=m, diameter=float(model.diam_mean))[0]
        np.testing.assert_array_equal(lab, masks, err_msg=str((f, c, m)))
    assert (ours[(0.8, 0.0, 15)] > 0).sum() >= (ours[(0.2, 0.0, 15)] > 0).sum()


def test_threshold_sweep_runs_network_once(seg, crop, base_params, counted_prediction):
    pred, counter = counted_prediction
    img, truth = crop
    settings = [(0.4, 0.0), (0.2, 0.0), (0.8, 0.0), (0.4, -2.0), (0.4, 2.0)]
    with counter:
        results = {s: seg.decode(pred, img, seg.params({**base_params, "flow_threshold": s[0],
                                                        "cellprob_threshold": s[1]})) for s in settings}
    assert counter.calls == 1  # the one network pass of predict; five decodes add none
    # a higher cell-probability threshold keeps fewer foreground pixels
    fg = {s: int((lab > 0).sum()) for s, lab in results.items()}
    assert fg[(0.4, -2.0)] > fg[(0.4, 0.0)] > fg[(0.4, 2.0)]
    # the default setting finds the crop's nuclei (objects cut by the crop edge are the misses;
    # the F1 floor on whole images is test_demo_model_f1_on_demo_data)
    assert match(truth, results[(0.4, 0.0)], 0.5).f1 >= 0.6


def test_scale_factor_equals_diameter(seg, crop, base_params):
    model = seg.model(seg.params(base_params))
    s = 0.8
    p_scale = seg.params({**base_params, "scale_factor": s})
    p_diam = seg.params({**base_params, "diameter": float(model.diam_mean) / s})
    a = seg.predict(crop[0], p_scale)
    b = seg.predict(crop[0], p_diam)
    assert float(a["rescale"]) == pytest.approx(s) and float(b["rescale"]) == pytest.approx(s)
    np.testing.assert_allclose(a["dP"], b["dP"], atol=1e-5)
    np.testing.assert_array_equal(seg.decode(a, crop[0], p_scale), seg.decode(b, crop[0], p_diam))


@pytest.mark.slow
def test_demo_model_f1_on_demo_data(seg, base_params):
    """Pooled F1@0.5 of the bundled demo model on the held-out demo images >= 0.7."""
    rec = json.loads((DEMO_MODEL / "training.json").read_text())
    names = rec["val_names"] + rec["train_names"][:1]
    results = []
    for name in names:
        img = Image.from_array(tifffile.imread(NUCLEI / "images" / f"{name}.tif"), "YX")
        truth = tifffile.imread(NUCLEI / "labels" / f"{name}.tif")
        labels = seg.segment(img, base_params)
        assert labels.shape == truth.shape
        results.append(match(truth, labels, 0.5))
    pooled = pool(results)
    assert pooled["f1"] >= 0.7, pooled


# 3D (do_3D) and stitched stacks: tests/test_decode_equality.py (equal to model.eval, private
# cellpose methods forbidden while decoding)


@pytest.mark.slow
def test_tiny_training_gives_loadable_model(tmp_path, seg):
    from opsef_core.train.cellpose import train_cellpose
    from opsef_core.train.data import TrainingPairs

    imgs, labs, names = [], [], []
    for i in range(3):
        imgs.append(tifffile.imread(NUCLEI / "images" / f"nuclei_0{i}.tif")[:96, :96])
        labs.append(tifffile.imread(NUCLEI / "labels" / f"nuclei_0{i}.tif")[:96, :96])
        names.append(f"n{i}")
    out = train_cellpose(TrainingPairs(imgs, labs, names), tmp_path / "tiny", epochs=2, batch_size=2,
                         bsize=64, val_fraction=0.34, seed=3, device="cpu")
    rec = json.loads((out / "training.json").read_text())
    assert rec["params"]["seed"] == 3 and len(rec["train_losses"]) == 2
    assert len(rec["train_names"]) == 2 and len(rec["val_names"]) == 1
    assert rec["versions"]["cellpose"] == "3.1.1.2" and rec["wall_time_s"] > 0
    assert rec["opsef_version"] is not None and rec["opsef_version"] == opsef_core.__version__
    assert 5 < rec["diam_mean"] < 40
    with pytest.raises(ConfigError, match="exists"):
        train_cellpose(TrainingPairs(imgs, labs, names), out, epochs=1)
    img = Image.from_array(imgs[0], "YX")
    labels = seg.segment(img, {"model": str(out), "device": "cpu"})
    assert labels.shape == (96, 96) and labels.dtype == np.int32
    assert seg.describe_model({"model": str(out)})["checksum"] == \
        resolve_model("cellpose", out).checksum
