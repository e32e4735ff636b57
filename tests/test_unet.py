"""The U-Net backend and trainer: demo model accuracy, predict/decode split, 3D, distance decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import opsef_core
from opsef_core.errors import ConfigError, ModelNotFoundError, SegmentationError
from opsef_core.image import Image

ROOT = Path(__file__).resolve().parents[1]
NUCLEI = ROOT / "demo_data" / "nuclei2d"
DEMO_MODEL = ROOT / "models" / "unet2d_demo"


def _f1_at(gt: np.ndarray, pred: np.ndarray, thr: float = 0.5) -> float:
    """Minimal instance F1: a pair matches when IoU > thr (unique for thr >= 0.5)."""
    n_gt, n_pred = int(gt.max()), int(pred.max())
    if n_gt == 0 and n_pred == 0:
        return 1.0
    overlap = np.zeros((n_gt + 1, n_pred + 1), np.int64)
    np.add.at(overlap, (gt.ravel(), pred.ravel()), 1)
    inter = overlap[1:, 1:]
    area_gt = overlap.sum(1)[1:, None]
    area_pred = overlap.sum(0)[None, 1:]
    iou = inter / np.maximum(area_gt + area_pred - inter, 1)
    tp = int((iou > thr).sum())
    return 2 * tp / (int((area_gt > 0).sum()) + int((area_pred > 0).sum()))


def _image(arr, axes="YX", **kw):
    ps = {a: 0.5 for a in axes if a in "YX"}
    if "Z" in axes:
        ps["Z"] = 2.0
    return Image.from_array(arr, axes, pixel_size=ps, **kw)


@pytest.fixture(scope="module")
def seg():
    from opsef_core.segment import get_segmenter

    return get_segmenter("unet")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2D 3class model trained for 2 epochs on 2 small crops (loadable, not accurate)."""
    from opsef_core.train.data import TrainingPairs
    from opsef_core.train.unet import train_unet

    imgs = [tifffile.imread(NUCLEI / "images" / f"nuclei_0{i}.tif")[:64, :64] for i in range(2)]
    labs = [tifffile.imread(NUCLEI / "labels" / f"nuclei_0{i}.tif")[:64, :64] for i in range(2)]
    out = tmp_path_factory.mktemp("models") / "tiny"
    return train_unet(TrainingPairs(imgs, labs, ["a", "b"]), out, epochs=2, patch_size=32, batch_size=2,
                      steps_per_epoch=2, depth=2, filters=4, device="cpu", seed=3)


def test_f1_helper_on_a_hand_counted_case():
    gt = np.zeros((30, 60), np.int32)
    gt[2:12, 2:12], gt[2:12, 20:30], gt[15:25, 40:50] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[2:12, 3:13] = 7          # IoU 90/110 with gt 1: match
    pred[2:12, 26:36] = 8         # IoU 40/160 with gt 2: no match
    pred[20:28, 2:10] = 9         # false positive; gt 3 missed
    # tp 1, fp 2, fn 2 -> F1 = 2 / (2 + 2 + 2)
    assert _f1_at(gt, pred) == pytest.approx(2 / 6)
    assert _f1_at(gt, gt) == 1.0 and _f1_at(gt, np.zeros_like(gt)) == 0.0


@pytest.mark.slow
def test_demo_model_segments_demo_nuclei(seg):
    assert (DEMO_MODEL / "config.json").is_file() and (DEMO_MODEL / "weights.pt").is_file()
    assert (DEMO_MODEL / "weights.pt").stat().st_size < 5 * 1024 * 1024
    f1 = []
    for name in ("nuclei_00.tif", "nuclei_03.tif", "nuclei_06.tif"):
        img = _image(tifffile.imread(NUCLEI / "images" / name), source=NUCLEI / "images" / name)
        gt = tifffile.imread(NUCLEI / "labels" / name)
        labels = seg.segment(img, {"model": "unet2d_demo", "device": "cpu"})
        assert labels.shape == gt.shape and labels.dtype == np.int32
        f1.append(_f1_at(gt, labels))
    assert np.mean(f1) >= 0.7, f1
    desc = seg.describe_model({"model": "unet2d_demo"})
    assert desc["variant"] == "3class" and len(desc["checksum"]) == 64


def test_threshold_sweep_reuses_one_network_pass(seg, tiny_model, monkeypatch):
    from opsef_core.segment.unet_backend import UNetSegmenter

    img = _image(tifffile.imread(NUCLEI / "images" / "nuclei_02.tif")[:96, :80])
    calls = {"n": 0}
    original = UNetSegmenter._forward

    def counting(m, x):
        calls["n"] += 1
        return original(m, x)

    monkeypatch.setattr(UNetSegmenter, "_forward", staticmethod(counting))
    base = {"model": str(tiny_model), "device": "cpu"}
    keys = {seg.network_key({**base, "prob_threshold": t}) for t in (0.3, 0.4, 0.5, 0.6, 0.7)}
    assert len(keys) == 1  # decoding parameters do not change the network key
    pred = seg.predict(img, seg.params(base))
    assert calls["n"] == 1
    assert pred["probabilities"].shape == (3, 96, 80)
    np.testing.assert_allclose(pred["probabilities"].sum(0), 1.0, atol=1e-4)
    counts = []
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        lab = seg.decode(pred, img, seg.params({**base, "prob_threshold": t}))
        assert lab.shape == (96, 80)
        counts.append(int((lab > 0).sum()))
    assert calls["n"] == 1
    assert counts == sorted(counts, reverse=True)  # higher threshold, less foreground
    # tiled prediction gives the same maps up to the blending
    tiled = seg.predict(img, seg.params({**base, "tile": 64, "tile_overlap": 16}))
    assert calls["n"] > 2
    assert np.abs(tiled["probabilities"] - pred["probabilities"]).mean() < 0.05


def test_tiny_training_writes_loadable_model(tiny_model):
    from opsef_core.unet.io import load_unet

    cfg = json.loads((tiny_model / "config.json").read_text())
    rec = json.loads((tiny_model / "training.json").read_text())
    assert cfg["variant"] == "3class" and cfg["dims"] == 2 and cfg["depth"] == 2
    assert len(rec["history"]) == 2 and rec["params"]["seed"] == 3
    assert all(np.isfinite(h["val_loss"]) for h in rec["history"])
    assert rec["best_val_loss"] == min(h["val_loss"] for h in rec["history"])
    assert rec["opsef_version"] is not None and rec["opsef_version"] == opsef_core.__version__
    assert rec["versions"]["opsef-core"] == opsef_core.__version__ and "torch" in rec["versions"]
    m = load_unet(tiny_model)
    assert all(p.dtype.is_floating_point and str(p.dtype) == "torch.float32" for p in m.net.parameters())


def test_3class_targets_and_class_weights():
    from opsef_core.train.unet import class_weights, make_targets

    lab = np.zeros((20, 30), np.int32)
    lab[2:10, 2:10] = 1
    lab[2:10, 10:18] = 2  # touching
    t = make_targets(lab, "3class")
    assert set(np.unique(t)) == {0, 1, 2}
    assert t[5, 9] == 1 and t[5, 10] == 1  # both sides of the contact are boundary
    assert t[5, 5] == 2 and t[15, 25] == 0
    w = class_weights([t])
    assert w[0] < w[2] < w[1]  # background most frequent, boundary rarest here
    d = make_targets(lab, "distance")
    assert d[5, 5] == 3 + 1 or d[5, 5] == 4  # chessboard distance to the nearest outside pixel
    assert d[2, 2] == 1 and d[0, 0] == 0 and d[5, 9] == 1 and d[5, 10] == 1


def test_3d_variant_forward_and_decode_shapes(tmp_path, seg):
    import torch

    from opsef_core.unet.io import save_unet
    from opsef_core.unet.model import build_unet

    torch.manual_seed(0)
    for variant in ("3class", "distance"):
        net = build_unet(dims=3, variant=variant, depth=2, filters=4)
        folder = save_unet(tmp_path / variant, net, {"variant": variant, "dims": 3, "depth": 2, "filters": 4,
                                                     "in_channels": 1, "normalize": [1.0, 99.8]})
        vol = np.random.default_rng(0).normal(100, 10, (6, 21, 18)).astype(np.float32)
        img = _image(vol, "ZYX")
        p = seg.params({"model": str(folder), "device": "cpu"})
        pred = seg.predict(img, p)
        key = "probabilities" if variant == "3class" else "distance"
        expected = (3, 6, 21, 18) if variant == "3class" else (6, 21, 18)
        assert pred[key].shape == expected
        if variant == "distance":
            assert pred[key].min() >= 0  # ReLU output
        lab = seg.decode(pred, img, p)
        assert lab.shape == (6, 21, 18) and lab.dtype == np.int32
        with pytest.raises(SegmentationError, match="3D"):
            seg.predict(_image(vol[0]), p)


def test_distance_decode_counts_objects():
    from opsef_core.segment.unet_backend import decode_distance
    from opsef_core.train.unet import make_targets

    rng = np.random.default_rng(1)
    lab = np.zeros((80, 120), np.int32)
    centres = [(20, 20), (20, 34), (60, 30), (40, 80), (40, 95), (65, 100)]  # two touching pairs
    yy, xx = np.mgrid[:80, :120]
    for i, (cy, cx) in enumerate(centres, start=1):
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 8 ** 2) & (lab == 0)] = i
    dist = make_targets(lab, "distance") + rng.normal(0, 0.1, lab.shape)
    out = decode_distance(np.clip(dist, 0, None), beta=0.5, h=1.0, min_size=10)
    assert out.max() == len(centres)
    assert _f1_at(lab, out) == 1.0
    # without seeds splitting (h = 0) touching pairs merge
    assert decode_distance(np.clip(dist, 0, None), beta=0.5, h=0.0).max() == 4


def test_3class_decode_watershed_splits_what_components_merge():
    from opsef_core.segment.unet_backend import decode_3class
    from opsef_core.train.unet import make_targets

    lab = np.zeros((40, 60), np.int32)
    yy, xx = np.mgrid[:40, :60]
    lab[(yy - 20) ** 2 + (xx - 20) ** 2 <= 81] = 1
    lab[((yy - 20) ** 2 + (xx - 36) ** 2 <= 81) & (lab == 0)] = 2
    cls = make_targets(lab, "3class")
    prob = np.stack([(cls == k).astype(np.float32) for k in range(3)])
    prob = 0.9 * prob + 0.1 / 3
    assert decode_3class(prob).max() == 2
    assert _f1_at(lab, decode_3class(prob)) == 1.0
    # a boundary the network missed between the two: watershed still splits only with two seeds
    broken = prob.copy()
    gap = (cls == 1) & (np.abs(xx - 28) <= 1) & (np.abs(yy - 20) <= 3)
    broken[:, gap] = np.array([0.0333, 0.0333, 0.9333])[:, None]
    assert decode_3class(broken, instances="connected_components").max() == 1
    assert decode_3class(broken, instances="watershed").max() == 1  # same seeds: merged too


def test_bad_inputs_raise_our_errors(seg, tiny_model):
    with pytest.raises(ModelNotFoundError):
        seg.predict(_image(np.zeros((32, 32))), seg.params({"model": "no_such_unet_model", "device": "cpu"}))
    with pytest.raises(ModelNotFoundError):
        seg.predict(_image(np.zeros((32, 32))),
                    seg.params({"model": str(tiny_model / "missing"), "device": "cpu"}))
    multi = _image(np.zeros((2, 32, 32), np.float32), "CYX", channel_names=["a", "b"])
    with pytest.raises(SegmentationError, match="channel"):
        seg.predict(multi, seg.params({"model": str(tiny_model), "device": "cpu"}))
    pred = seg.predict(multi, seg.params({"model": str(tiny_model), "device": "cpu", "channel": "b"}))
    assert pred["probabilities"].shape == (3, 32, 32)
    with pytest.raises(ConfigError):
        seg.params({"model": "x", "prob_threshold": 1.5})
    with pytest.raises(ConfigError):
        seg.params({"model": "x", "unknown": 1})


@pytest.mark.slow
def test_tiny_3d_training_writes_a_loadable_3d_model(tmp_path):
    from opsef_core.train.data import TrainingPairs
    from opsef_core.train.unet import train_unet

    spheroid = Path(__file__).resolve().parents[1] / "demo_data" / "spheroid_clearing" / "cleared"
    stack = sorted((spheroid / "images").glob("*.tif"))[0]
    img = tifffile.imread(stack)[:16, :48, :48]
    lab = tifffile.imread(spheroid / "labels" / stack.name)[:16, :48, :48]
    out = train_unet(TrainingPairs([img, img[:, ::-1]], [lab, lab[:, ::-1]], ["a", "b"]), tmp_path / "tiny3d",
                     dims=3, epochs=1, patch_size=(8, 32, 32), batch_size=1, steps_per_epoch=1, depth=1,
                     filters=4, device="cpu", seed=2)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dims"] == 3 and cfg["variant"] == "3class"
    from opsef_core.segment import get_segmenter

    seg = get_segmenter("unet")
    image = Image.from_array(img, "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5})
    pred = seg.predict(image, seg.params({"model": str(out), "device": "cpu"}))
    assert pred["probabilities"].shape == (3, *img.shape)
    labels = seg.decode(pred, image, seg.params({"model": str(out), "device": "cpu"}))
    assert labels.shape == img.shape
