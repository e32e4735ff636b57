"""The StarDist backend (2D/3D demo models), its predict/decode split, model lookup, training."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import opsef_core
from opsef_core.errors import ConfigError, InputFileError, ModelNotFoundError, SegmentationError
from opsef_core.image import Image
from opsef_core.segment import get_segmenter

pytest.importorskip("stardist")

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
NUCLEI2D = REPO / "demo_data" / "nuclei2d"
SPHEROID = REPO / "demo_data" / "spheroid_clearing"

needs_2d = pytest.mark.skipif(not (MODELS / "stardist2d_demo" / "config.json").exists(),
                              reason="models/stardist2d_demo not trained")
needs_3d = pytest.mark.skipif(not (MODELS / "stardist3d_demo" / "config.json").exists(),
                              reason="models/stardist3d_demo not trained")


def f1_at(gt: np.ndarray, pred: np.ndarray, tau: float = 0.5) -> float:
    """Independent reference: IoU matrix + Hungarian matching, F1 at IoU >= tau (2D or 3D)."""
    from scipy.optimize import linear_sum_assignment

    g_ids, p_ids = np.unique(gt[gt > 0]), np.unique(pred[pred > 0])
    if len(g_ids) == 0 or len(p_ids) == 0:
        return float(len(g_ids) == len(p_ids))
    gi, pi = np.searchsorted(g_ids, gt), np.searchsorted(p_ids, pred)
    both = (gt > 0) & (pred > 0)
    inter = np.zeros((len(g_ids), len(p_ids)))
    np.add.at(inter, (gi[both], pi[both]), 1)
    g_area = np.bincount(gi[gt > 0], minlength=len(g_ids))
    p_area = np.bincount(pi[pred > 0], minlength=len(p_ids))
    iou = inter / (g_area[:, None] + p_area[None, :] - inter)
    rows, cols = linear_sum_assignment(-(iou >= tau).astype(float) - iou / (2 * min(iou.shape)))
    tp = int((iou[rows, cols] >= tau).sum())
    return 2 * tp / (len(g_ids) + len(p_ids))


def _nuclei(i: int):
    path = NUCLEI2D / "images" / f"nuclei_{i:02d}.tif"
    img = tifffile.imread(path)
    return Image.from_array(img, "YX", pixel_size={"Y": 0.5, "X": 0.5}, source=path), \
        tifffile.imread(NUCLEI2D / "labels" / path.name)


@needs_2d
@pytest.mark.slow
def test_demo2d_model_f1_on_demo_nuclei():
    seg = get_segmenter("stardist")
    p = seg.params({"model": "stardist2d_demo"})
    scores = []
    for i in range(8):
        image, gt = _nuclei(i)
        lab = seg.segment(image, p)
        assert lab.shape == gt.shape and lab.dtype == np.int32
        scores.append(f1_at(gt, lab))
    held_out = json.loads((MODELS / "stardist2d_demo" / "training.json").read_text())["validation"]
    held = [s for i, s in enumerate(scores) if f"nuclei_{i:02d}" in held_out]
    assert np.mean(scores) >= 0.85 and min(held) >= 0.8, (scores, held_out)
    d = seg.describe_model(p)
    assert d["source"] == "project" and d["n_dim"] == 2 and len(d["checksum"]) == 64


@needs_2d
@pytest.mark.slow
def test_decoded_equals_predict_instances_and_sweep_runs_network_once():
    from csbdeep.utils import normalize
    from stardist.data import test_image_nuclei_2d

    img = test_image_nuclei_2d()[:256, :320]
    image = Image.from_array(img, "YX")
    seg = get_segmenter("stardist")
    base = seg.params({"model": "stardist2d_demo"})
    model = seg.model(base)
    x = normalize(img, 1, 99.8, axis=None)
    # the split (predict + decode) equals the library's one-call result, label for label
    for thresholds in ({"prob_thresh": 0.4, "nms_thresh": 0.3}, {"prob_thresh": 0.7, "nms_thresh": 0.5}):
        p = seg.params({"model": "stardist2d_demo", **thresholds})
        ours = seg.segment(image, p)
        ref = model.predict_instances(x, show_tile_progress=False, **thresholds)[0]
        assert ours.max() > 5 and np.array_equal(ours, ref)
    ps = seg.params({"model": "stardist2d_demo", "scale": 0.75, "prob_thresh": 0.5})
    ref = model.predict_instances(x, scale=0.75, prob_thresh=0.5, show_tile_progress=False)[0]
    assert np.array_equal(seg.segment(image, ps), ref)

    # a 5-threshold sweep grouped by network_key runs the network once
    calls = []
    real_predict = model.predict
    model.predict = lambda *a, **k: calls.append(1) or real_predict(*a, **k)
    try:
        sweep = [seg.params({"model": "stardist2d_demo", "prob_thresh": t}) for t in (0.3, 0.4, 0.5, 0.6, 0.7)]
        cache, counts = {}, []
        for p in sweep:
            key = seg.network_key(p)
            if key not in cache:
                cache[key] = seg.predict(image, p)
            counts.append(int(seg.decode(cache[key], image, p).max()))
    finally:
        del model.predict
    assert len(calls) == 1 and len(cache) == 1
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


class _CountNMS:
    """Counts calls of StarDist's 2D/3D NMS kernels (what a threshold sweep should not repeat)."""

    def __init__(self, monkeypatch):
        import stardist.nms as nms

        self.calls = 0
        for name in ("non_maximum_suppression_inds", "non_maximum_suppression_3d_inds"):
            real = getattr(nms, name)

            def counted(*a, _real=real, **k):
                self.calls += 1
                return _real(*a, **k)

            monkeypatch.setattr(nms, name, counted)


@needs_2d
@pytest.mark.slow
def test_prob_sweep_shares_one_nms_and_equals_predict_instances(monkeypatch):
    from csbdeep.utils import normalize
    from stardist.data import test_image_nuclei_2d

    img = test_image_nuclei_2d()  # 512x512 real nuclei
    image = Image.from_array(img, "YX")
    seg = get_segmenter("stardist")
    model = seg.model(seg.params({"model": "stardist2d_demo"}))
    x = normalize(img, 1, 99.8, axis=None)
    counter = _CountNMS(monkeypatch)
    pred = seg.predict(image, seg.params({"model": "stardist2d_demo"}))
    # ascending thresholds after the lowest: one NMS per nms_thresh; then a lower one runs again
    sweep = [(0.3, 0.3), (0.35, 0.3), (0.5, 0.3), (0.62, 0.3), (0.75, 0.3), (0.9, 0.3),
             (0.4, 0.5), (0.6, 0.5), (0.2, 0.3)]
    ours = [seg.decode(pred, image, seg.params({"model": "stardist2d_demo", "prob_thresh": t, "nms_thresh": n}))
            for t, n in sweep]
    # without reuse: 9 NMS; nms 0.5 and the lower 0.2 need their own; ties may force a few more
    assert counter.calls <= 6, counter.calls
    monkeypatch.undo()
    for (t, n), lab in zip(sweep, ours):
        ref = model.predict_instances(x, prob_thresh=t, nms_thresh=n, show_tile_progress=False)[0]
        assert np.array_equal(lab, ref), (t, n)
    assert ours[0].max() > ours[5].max() > 0


def test_nms_reuse_with_tied_probabilities_equals_stardist():
    """Quantised probabilities (many ties): every setting equals StarDist's own NMS exactly."""
    from stardist.nms import non_maximum_suppression

    from opsef_core.segment.stardist_nms import clear_memo, kept_candidates

    rng = np.random.default_rng(0)
    prob = (np.round(rng.uniform(0, 1, (64, 64)) * 8) / 8).astype(np.float32)  # 9 levels
    dist = rng.uniform(1, 6, (64, 64, 16)).astype(np.float32)
    clear_memo()
    for t in (0.1, 0.3, 0.3, 0.55, 0.8, 0.2):
        pts, pr, di = kept_candidates(prob, dist, t, 0.4, (1, 1))
        rp, rpr, rdi = non_maximum_suppression(dist, prob, grid=(1, 1), prob_thresh=t, nms_thresh=0.4)
        np.testing.assert_array_equal(pts, rp)
        np.testing.assert_array_equal(pr, rpr)
        np.testing.assert_array_equal(di, rdi)


@needs_3d
@pytest.mark.slow
def test_demo3d_model_on_spheroid_stack():
    # the stack held out from training (recorded as "<condition>/<stem>" in training.json)
    rec = json.loads((MODELS / "stardist3d_demo" / "training.json").read_text())
    held_out = rec["heldout"]["stack"] if "heldout" in rec else rec["validation"][0]
    cond, stem = held_out.split("/")
    path = SPHEROID / cond / "images" / f"{stem}.tif"
    img = tifffile.imread(path)
    gt = tifffile.imread(SPHEROID / cond / "labels" / path.name)
    image = Image.from_array(img, "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5}, source=path)
    seg = get_segmenter("stardist")
    p = seg.params({"model": "stardist3d_demo"})
    lab = seg.segment(image, p)
    assert lab.shape == gt.shape
    f1 = f1_at(gt, lab)
    # the held-out stack loses most signal with depth; the small demo model still finds most
    # nuclei, and many times more than the classical baseline on the same stack
    classical = f1_at(gt, get_segmenter("classical").segment(image, {}))
    assert f1 >= 0.5 and f1 >= 3 * classical, (f1, classical)
    d = seg.describe_model(p)
    assert d["n_dim"] == 3 and d["anisotropy"][0] > 1.5  # Z extent smaller in voxels than Y/X
    # a threshold sweep in 3D: one NMS, each setting equal to predict_instances
    from csbdeep.utils import normalize

    model = seg.model(p)
    pred = seg.predict(image, p)
    x = normalize(img, 1, 99.8, axis=None)
    for t in (model.thresholds.prob, model.thresholds.prob + 0.1, model.thresholds.prob + 0.25):
        ours = seg.decode(pred, image, seg.params({"model": "stardist3d_demo", "prob_thresh": t}))
        ref = model.predict_instances(x, prob_thresh=t, show_tile_progress=False)[0]
        assert np.array_equal(ours, ref), t
    # a 2D image into the 3D model is a clear error
    with pytest.raises(SegmentationError, match="3D"):
        seg.segment(Image.from_array(img[10], "YX"), p)


def test_missing_pretrained_model_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("OPSEF_MODELS_DIR", str(tmp_path / "models"))
    import stardist.models  # noqa: F401  (import time is not what is measured)

    seg = get_segmenter("stardist")
    image = Image.from_array(np.zeros((64, 64), np.float32), "YX")
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as exc:
        seg.segment(image, {"model": "2D_versatile_fluo"})
    assert time.perf_counter() - t0 < 5
    msg = str(exc.value)
    assert "2D_versatile_fluo" in msg
    assert str(tmp_path / "models" / "2D_versatile_fluo") in msg  # the project folder
    assert str(tmp_path / "keras" / "models" / "StarDist2D") in msg  # the Keras cache
    with pytest.raises(ModelNotFoundError, match="not_a_model"):
        seg.segment(image, {"model": "not_a_model"})
    with pytest.raises(ConfigError, match="prob_thresh"):
        seg.params({"prob_thresh": 1.5})


@pytest.mark.slow
def test_tiny_training_run_gives_a_loadable_model(tmp_path):
    from opsef_core.train.data import TrainingPairs
    from opsef_core.train.stardist import train_stardist

    if not (NUCLEI2D / "images").exists():
        pytest.skip("demo_data/nuclei2d not generated")
    imgs, labs = [], []
    for i in range(3):
        image, gt = _nuclei(i)
        imgs.append(np.asarray(image.data)[:128, :128])
        labs.append(gt[:128, :128])
    pairs = TrainingPairs(imgs, labs, ["a", "b", "c"])
    out = train_stardist(pairs, tmp_path / "tiny", dims=2, n_rays=16, epochs=1, steps_per_epoch=2,
                         patch_size=(64, 64), seed=3, optimize_thresholds=False,
                         unet_n_depth=2, unet_n_filter_base=8, train_batch_size=2)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "training.json", "weights_best.h5"]
    rec = json.loads((out / "training.json").read_text())
    assert rec["seed"] == 3 and rec["epochs_run"] == 1 and len(rec["validation"]) == 1
    assert set(rec["train"]) | set(rec["validation"]) == {"a", "b", "c"}
    assert "stardist" in rec["versions"] and rec["wall_time_s"] > 0
    assert rec["opsef_version"] is not None and rec["opsef_version"] == opsef_core.__version__
    assert "loss" in rec["history"] and "val_loss" in rec["history"]
    # loadable through the backend by path, giving a label image of the input's shape
    image, _ = _nuclei(0)
    lab = get_segmenter("stardist").segment(image, {"model": str(out), "prob_thresh": 0.9})
    assert lab.shape == (256, 256)
    with pytest.raises(ConfigError, match="exists"):
        train_stardist(pairs, out, dims=2)
    with pytest.raises(InputFileError, match="3D"):
        train_stardist(pairs, tmp_path / "bad", dims=3)


@pytest.mark.slow
def test_tiny_3d_training_run_gives_a_loadable_model(tmp_path):
    from opsef_core.train.data import TrainingPairs
    from opsef_core.train.stardist import train_stardist

    stacks = sorted((SPHEROID / "cleared" / "images").glob("*.tif"))[:2]
    imgs = [tifffile.imread(p)[:16, :64, :64] for p in stacks]
    labs = [tifffile.imread(SPHEROID / "cleared" / "labels" / p.name)[:16, :64, :64] for p in stacks]
    out = train_stardist(TrainingPairs(imgs, labs, ["a", "b"]), tmp_path / "tiny3d", dims=3, n_rays=16,
                         epochs=1, steps_per_epoch=1, patch_size=(16, 32, 32), seed=1, optimize_thresholds=False,
                         unet_n_depth=1, unet_n_filter_base=4, train_batch_size=1)
    cfg = json.loads((out / "config.json").read_text())
    rec = json.loads((out / "training.json").read_text())
    assert cfg["n_dim"] == 3 and cfg["n_rays"] == 16 and rec["epochs_run"] == 1 and rec["dims"] == 3
    image = Image.from_array(imgs[0], "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5})
    lab = get_segmenter("stardist").segment(image, {"model": str(out), "prob_thresh": 0.9})
    assert lab.shape == imgs[0].shape and lab.dtype == np.int32
