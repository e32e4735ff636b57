"""Tests of opsef_core.evaluate: matching against stardist, AJI, pixel and spheroid metrics,
folder evaluation and ranking."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from opsef_core import evaluate as ev
from opsef_core.errors import AxesError, ConfigError, EmptyFolderError, InputFileError

METRICS = ("precision", "recall", "f1", "accuracy")


def random_pair(rng: np.random.Generator, shape=(128, 128), n=25):
    """Truth: random (overlapping) discs; prediction: jittered, some merged, split, missed, extra."""
    gt = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    labels = rng.permutation(np.arange(1, 4 * n))[:n] + 0  # non-sequential labels
    nxt = 1000
    for lab in labels:
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        rad = rng.uniform(3, 11)
        gt[disk((r, c), rad, shape=shape)] = lab
        fate = rng.random()
        if fate < 0.08:  # missed
            continue
        dr, dc = rng.normal(0, rad / 5, 2)
        rp = rad * rng.uniform(0.75, 1.25)
        rr, cc = disk((r + dr, c + dc), rp, shape=shape)
        if fate < 0.18:  # split into two halves
            left = cc < c + dc
            pred[rr[left], cc[left]] = nxt
            pred[rr[~left], cc[~left]] = nxt + 1
            nxt += 2
        elif fate < 0.26 and pred.max() > 0:  # merged into an earlier prediction
            pred[rr, cc] = pred[pred > 0].max()
        else:
            pred[rr, cc] = nxt
            nxt += 1
    for _ in range(rng.integers(0, 4)):  # false positives
        centre = (rng.integers(0, shape[0]), rng.integers(0, shape[1]))
        pred[disk(centre, rng.uniform(3, 8), shape=shape)] = nxt
        nxt += 1
    return gt, pred


def iou_f64(gt, pred, g, p):
    a, b = gt == g, pred == p
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(2024)
    return [random_pair(rng) for _ in range(50)]


def test_overlap_matrix_against_brute_force(pairs):
    gt, pred = pairs[0]
    ov = ev.overlap_matrix(gt, pred)
    assert list(ov.gt_labels) == sorted(set(np.unique(gt)) - {0})
    assert list(ov.pred_labels) == sorted(set(np.unique(pred)) - {0})
    dense = ov.intersection.toarray()
    for i, g in enumerate(ov.gt_labels):
        assert ov.gt_sizes[i] == np.count_nonzero(gt == g)
        for j, p in enumerate(ov.pred_labels):
            assert dense[i, j] == np.count_nonzero((gt == g) & (pred == p))


@pytest.mark.slow
def test_match_agrees_with_stardist(pairs):
    from stardist.matching import matching

    n_tp_total = 0
    for gt, pred in pairs:
        for thr in (0.5, 0.7, 0.9):
            ref = matching(gt, pred, thresh=thr, report_matches=True)
            got = ev.match(gt, pred, thr)
            assert (got.tp, got.fp, got.fn) == (ref.tp, ref.fp, ref.fn)
            assert (got.n_true, got.n_pred) == (ref.n_true, ref.n_pred)
            for k in METRICS:
                assert getattr(got, k) == pytest.approx(getattr(ref, k), abs=1e-9), k
            # the same true-positive pairs as stardist
            ref_pairs = {ref.matched_pairs[i] for i in ref.matched_tps}
            assert {(g, p) for g, p, _ in got.matched_pairs} == ref_pairs
            # scores: float64 reference recomputed from the masks of stardist's pairs (1e-9), and
            # stardist's own float32 values (1e-6)
            ious = [iou_f64(gt, pred, g, p) for g, p in ref_pairs]
            s = sum(ious)
            mms = s / ref.tp if ref.tp else 0.0
            pq = s / (ref.tp + ref.fp / 2 + ref.fn / 2) if ref.tp else 0.0
            assert got.mean_matched_score == pytest.approx(mms, abs=1e-9)
            assert got.panoptic_quality == pytest.approx(pq, abs=1e-9)
            assert got.mean_matched_score == pytest.approx(ref.mean_matched_score, abs=1e-6)
            assert got.panoptic_quality == pytest.approx(ref.panoptic_quality, abs=1e-6)
            n_tp_total += got.tp
    assert n_tp_total > 500  # the random data really exercise matching


@pytest.mark.parametrize("criterion", ["iot", "iop"])
def test_criteria_agree_with_stardist(pairs, criterion):
    from stardist.matching import matching

    for gt, pred in pairs[:20]:
        for thr in (0.5, 0.7, 0.9):
            ref = matching(gt, pred, thresh=thr, criterion=criterion)
            got = ev.match(gt, pred, thr, criterion=criterion)
            assert (got.tp, got.fp, got.fn) == (ref.tp, ref.fp, ref.fn)
            for k in METRICS:
                assert getattr(got, k) == pytest.approx(getattr(ref, k), abs=1e-9)
            assert got.panoptic_quality == pytest.approx(ref.panoptic_quality, abs=1e-6)
            assert got.mean_matched_score == pytest.approx(ref.mean_matched_score, abs=1e-6)


def test_matching_table_and_pool(pairs):
    from stardist.matching import matching_dataset

    gt, pred = pairs[3]
    table = ev.matching_table(gt, pred, thresholds=(0.5, 0.7, 0.9))
    assert list(table["threshold"]) == [0.5, 0.7, 0.9]
    for _, row in table.iterrows():
        m = ev.match(gt, pred, row["threshold"])
        assert (row["tp"], row["fp"], row["fn"]) == (m.tp, m.fp, m.fn)
        assert row["f1"] == pytest.approx(m.f1)
    assert table["tp"].is_monotonic_decreasing

    ms = [ev.match(g, p, 0.5) for g, p in pairs]
    pooled = ev.pool(ms)
    ref = matching_dataset([g for g, _ in pairs], [p for _, p in pairs], thresh=0.5, show_progress=False)
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (ref.tp, ref.fp, ref.fn)
    assert pooled["f1"] == pytest.approx(ref.f1, abs=1e-9)
    assert pooled["panoptic_quality"] == pytest.approx(ref.panoptic_quality, abs=1e-6)
    assert pooled["mean_f1"] == pytest.approx(np.mean([m.f1 for m in ms]))
    with pytest.raises(ConfigError):
        ev.pool([ms[0], ev.match(*pairs[0], 0.7)])


def test_empty_cases():
    z = np.zeros((32, 32), np.uint16)
    one = z.copy()
    one[4:10, 4:10] = 7
    both = ev.match(z, z)
    assert (both.tp, both.fp, both.fn) == (0, 0, 0)
    assert both.f1 == both.precision == both.recall == both.accuracy == both.panoptic_quality == 1.0
    no_pred = ev.match(one, z)
    assert (no_pred.tp, no_pred.fp, no_pred.fn) == (0, 0, 1)
    assert no_pred.f1 == no_pred.precision == no_pred.recall == no_pred.panoptic_quality == 0.0
    no_gt = ev.match(z, one)
    assert (no_gt.tp, no_gt.fp, no_gt.fn) == (0, 1, 0) and no_gt.f1 == 0.0
    assert ev.aji(z, z) == 1.0 and ev.aji(one, z) == 0.0 and ev.aji(z, one) == 0.0
    assert ev.pool([both, both])["f1"] == 1.0


def test_bad_input_raises_our_errors():
    a = np.zeros((10, 10), np.uint8)
    with pytest.raises(AxesError):
        ev.match(a, np.zeros((10, 11), np.uint8))
    with pytest.raises(InputFileError, match="predicted labels holds non-integer"):
        ev.match(a, a + 0.5)
    assert ev.match(a, a.astype(float)).f1 == ev.match(a, a).f1  # integral floats are labels
    with pytest.raises(ConfigError):
        ev.match(a, a, criterion="dice")
    with pytest.raises(ConfigError):
        ev.match(a, a, threshold=1.5)


def test_aji_hand_worked_example():
    gt = np.zeros((10, 10), np.uint8)
    pred = np.zeros((10, 10), np.uint8)
    gt[0:4, 0:4] = 1  # G1: 16 px
    gt[0:4, 6:10] = 2  # G2: 16 px
    gt[6:10, 0:2] = 3  # G3: 8 px, no overlapping prediction
    pred[0:4, 0:5] = 1  # S1: 20 px, G1 ∩ S1 = 16, union 20, IoU 0.8
    pred[0:4, 8:10] = 2  # S2: 8 px, G2 ∩ S2 = 8, union 16, IoU 0.5
    pred[0:2, 6:8] = 3  # S3: 4 px, G2 ∩ S3 = 4, union 16, IoU 0.25 (not chosen)
    pred[8:10, 6:10] = 4  # S4: 8 px, overlaps nothing
    # numerator: 16 (G1,S1) + 8 (G2,S2) = 24
    # denominator: unions 20 + 16, G3 alone 8, unused S3 4 + S4 8 -> 56
    assert ev.aji(gt, pred) == pytest.approx(24 / 56, abs=1e-12)
    # a prediction shared by two truth objects (argmax, not Hungarian): both use S1
    gt2 = np.zeros((4, 8), np.uint8)
    gt2[:, 0:4], gt2[:, 4:8] = 1, 2  # 16 px each
    pred2 = np.ones((4, 8), np.uint8)  # 32 px
    # each: intersection 16, union 32 -> (16 + 16) / (32 + 32) = 0.5
    assert ev.aji(gt2, pred2) == pytest.approx(0.5, abs=1e-12)


def test_pixel_metrics_against_sklearn(pairs):
    from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

    gt, pred = pairs[5]
    got = ev.pixel_metrics(gt, pred)
    g, p = (gt > 0).ravel(), (pred > 0).ravel()
    assert got["f1"] == pytest.approx(f1_score(g, p), abs=1e-12)
    assert got["iou"] == pytest.approx(jaccard_score(g, p), abs=1e-12)
    assert got["precision"] == pytest.approx(precision_score(g, p), abs=1e-12)
    assert got["recall"] == pytest.approx(recall_score(g, p), abs=1e-12)
    rng = np.random.default_rng(3)
    gc = rng.integers(0, 3, (64, 64))
    pc = np.where(rng.random((64, 64)) < 0.7, gc, rng.integers(0, 3, (64, 64)))
    per = ev.pixel_metrics(gc, pc, classes=(0, 1, 2))
    f1s = f1_score(gc.ravel(), pc.ravel(), average=None, labels=[0, 1, 2])
    js = jaccard_score(gc.ravel(), pc.ravel(), average=None, labels=[0, 1, 2])
    for c in (0, 1, 2):
        assert per[c]["f1"] == pytest.approx(f1s[c], abs=1e-12)
        assert per[c]["iou"] == pytest.approx(js[c], abs=1e-12)


def test_spheroid_metrics_hand_computed():
    t = np.zeros((40, 40), np.uint8)
    t[10:20, 10:20] = 1  # A_T = 100 px
    p = np.zeros((40, 40), np.uint16)
    p[10:20, 12:22] = 5  # same square, shifted 2 px: inter 80, union 120
    m = ev.spheroid_metrics(t, p, pixel_size=0.5)
    assert m["jcd"] == pytest.approx(1 - 80 / 120)
    assert m["rdd"] == pytest.approx(0.0) and m["rcd"] == pytest.approx(0.0)
    assert not m["invalid"] and not m["ambiguous"] and m["n_objects"] == 1
    # A_T = 25 µm², mismatch M = 40 px = 10 µm²
    assert m["radial_error_um"] == pytest.approx(math.sqrt(35 / math.pi) - math.sqrt(25 / math.pi))
    assert m["area_true"] == pytest.approx(25.0)
    assert m["diameter_true"] == pytest.approx(math.sqrt(100 / math.pi))
    assert m["volume_true"] == pytest.approx(math.pi * m["diameter_true"] ** 3 / 6)

    # smaller object inside, plus debris: ambiguous, metrics on the largest
    p2 = np.zeros((40, 40), np.uint16)
    p2[11:19, 11:19] = 3  # 64 px inside T
    p2[30:33, 30:33] = 9  # debris
    m2 = ev.spheroid_metrics(t, p2)
    assert m2["ambiguous"] and m2["n_objects"] == 2 and not m2["invalid"]
    assert m2["jcd"] == pytest.approx(1 - 64 / 100)
    assert m2["rdd"] == pytest.approx(0.2)  # d ∝ √A: |8 − 10| / 10

    # a non-zero circularity deviation: a 10 x 20 rectangle predicted for the 10 x 10 square
    from skimage.measure import perimeter_crofton

    p4 = np.zeros((40, 40), np.uint16)
    p4[10:20, 10:30] = 1
    m4 = ev.spheroid_metrics(t, p4, pixel_size=0.5)
    c_t = 4 * math.pi * 100 / perimeter_crofton(t > 0, directions=4) ** 2  # circularity is scale free
    c_p = 4 * math.pi * 200 / perimeter_crofton(p4 > 0, directions=4) ** 2
    assert m4["rcd"] == pytest.approx(abs(c_p - c_t) / c_t) and m4["rcd"] > 0.05
    assert m4["rdd"] == pytest.approx(math.sqrt(2) - 1)  # d ∝ √A: √200 / √100 − 1
    assert m4["jcd"] == pytest.approx(1 - 100 / 200)

    # invalid: no overlap, and no prediction at all
    p3 = np.zeros((40, 40), np.uint16)
    p3[25:35, 25:35] = 1
    for pr in (p3, np.zeros_like(p3)):
        m3 = ev.spheroid_metrics(t, pr)
        assert m3["invalid"] and m3["jcd"] == m3["rdd"] == m3["rcd"] == 1.0
    assert ev.spheroid_metrics(t, np.zeros_like(p3))["n_objects"] == 0

    # circularity of a digital disc is ~1 with the Crofton perimeter
    d = np.zeros((101, 101), np.uint8)
    d[disk((50, 50), 40)] = 1
    assert ev.spheroid_metrics(d, d)["circularity_true"] == pytest.approx(1.0, abs=0.03)
    # the alternative estimator (perimeter, neighbourhood 4) reads a disc as less circular
    assert 0.85 < ev.spheroid_metrics(d, d, perimeter="neighbourhood4")["circularity_true"] < 0.97
    # an isotropic pixel size given per axis is accepted and scales the perimeter like a number
    per_axis = ev.spheroid_metrics(d, d, pixel_size={"Y": 0.5, "X": 0.5}, perimeter="neighbourhood4")
    scalar = ev.spheroid_metrics(d, d, pixel_size=0.5, perimeter="neighbourhood4")
    assert per_axis["perimeter_true"] == pytest.approx(scalar["perimeter_true"])
    with pytest.raises(ConfigError):
        ev.spheroid_metrics(d, d, pixel_size={"Y": 0.5, "X": 0.25}, perimeter="neighbourhood4")
    # a boolean prediction is split into connected components: same result as the labels
    mb = ev.spheroid_metrics(t, p2 > 0)
    assert mb["n_objects"] == 2 and mb["jcd"] == pytest.approx(m2["jcd"])
    with pytest.raises(InputFileError):
        ev.spheroid_metrics(np.zeros_like(t), p)

    s = ev.spheroid_summary([m, m2, ev.spheroid_metrics(t, p3), m])
    assert s["isf"] == 0.25 and s["asf"] == 0.25
    assert s["isf_se"] == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
    jcds = [m["jcd"], m2["jcd"], 1.0, m["jcd"]]
    assert s["jcd_mean"] == pytest.approx(np.mean(jcds))
    assert s["jcd_std"] == pytest.approx(np.std(jcds, ddof=1))


def test_overlap_is_fast_for_many_objects():
    import time

    # 1024 square objects on 2048², prediction shifted by 3 px
    blocks = np.arange(1, 1025, dtype=np.uint16).reshape(32, 32)
    gt = np.kron(blocks, np.ones((64, 64), np.uint16))
    gt[::64] = 0
    pred = np.roll(gt, 3, axis=1)
    t0 = time.perf_counter()
    table = ev.matching_table(gt, pred)
    assert time.perf_counter() - t0 < 10.0  # ~0.3 s on an idle core
    assert table.loc[0, "tp"] == 1024  # IoU 61/67 ≈ 0.91 everywhere
    assert table.loc[table["threshold"] == 0.95, "tp"].item() == 0


def _write(path, arr):
    tifffile.imwrite(path, arr)


def test_evaluate_folders(tmp_path, pairs, caplog):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    (g0, p0), (g1, p1) = pairs[0], pairs[1]
    _write(gt_dir / "a.tif", g0.astype(np.uint16))
    _write(pred_dir / "a.tif", p0.astype(np.uint16))
    _write(gt_dir / "b.ome.tif", g1.astype(np.uint16))
    _write(pred_dir / "b.tif", p1.astype(np.uint16))
    _write(gt_dir / "only_gt.tif", g1.astype(np.uint16))
    _write(pred_dir / "only_pred.tif", p1.astype(np.uint16))
    with caplog.at_level(logging.WARNING):
        df, summary = ev.evaluate_folders(pred_dir, gt_dir, thresholds=(0.5, 0.75))
    assert list(df["image"]) == ["a", "b"]
    assert summary["unpaired_pred"] == ["only_pred"] and summary["unpaired_gt"] == ["only_gt"]
    assert "only_pred" in caplog.text
    m0, m1 = ev.match(g0, p0), ev.match(g1, p1)
    assert df.loc[0, "f1@0.5"] == pytest.approx(m0.f1) and df.loc[1, "tp@0.5"] == m1.tp
    assert summary["pooled"]["0.5"]["tp"] == m0.tp + m1.tp
    assert df.loc[0, "aji"] == pytest.approx(ev.aji(g0, p0))
    text = ev.format_evaluation(df, summary)
    assert "only_pred" in text and f"{m0.f1:.3f}" in text
    import json

    json.dumps(summary)  # JSON-ready for `opsef evaluate --json`

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyFolderError):
        ev.evaluate_folders(empty, gt_dir)
    other = tmp_path / "other"
    other.mkdir()
    _write(other / "zzz.tif", p0.astype(np.uint16))
    with pytest.raises(InputFileError, match="no prediction file"):
        ev.evaluate_folders(other, gt_dir)
    _write(other / "a.tif", np.zeros((5, 5), np.uint16))
    with pytest.raises(AxesError, match="a.tif"):
        ev.evaluate_folders(other, gt_dir)


def test_rank_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    quality = {("p1", "cellpose"): 0.9, ("p1", "stardist"): 0.7,
               ("p2", "cellpose"): 0.6, ("p2", "stardist"): 0.8}
    for (pipe, seg), q in quality.items():
        for img in range(4):
            rows.append({"image": f"i{img}", "pipeline": pipe, "segmenter": seg,
                         "f1@0.5": q + rng.normal(0, 0.02)})
    df = pd.DataFrame(rows)
    r = ev.rank(df)
    assert [tuple(x) for x in r[["pipeline", "segmenter"]].to_numpy()] == [
        ("p1", "cellpose"), ("p2", "stardist"), ("p1", "stardist"), ("p2", "cellpose")]
    assert list(r["rank"]) == [1, 2, 3, 4] and (r["n_images"] == 4).all()
    ref = df.groupby(["pipeline", "segmenter"])["f1@0.5"].agg(["mean", "std"])
    assert r.loc[0, "f1@0.5_mean"] == pytest.approx(ref.loc[("p1", "cellpose"), "mean"])
    assert r.loc[0, "f1@0.5_std"] == pytest.approx(ref.loc[("p1", "cellpose"), "std"])
    assert ev.rank(df, ascending=True).loc[0, "pipeline"] == "p2"
    with pytest.raises(ConfigError):
        ev.rank(df, by="nonexistent")
    fig = ev.plot_ranking(r, tmp_path / "rank.png")
    assert len(fig.axes) == 3  # bars, heat map, colour bar
    import matplotlib.image as mpimg

    png = mpimg.imread(tmp_path / "rank.png")
    assert png.ndim == 3 and png.shape[0] > 100 and png.std() > 0


def test_blockwise_overlap_and_metrics_equal_the_whole_image(pairs, tmp_path):
    """Slab by slab (zarr arrays, slabs smaller than the objects) the overlap and the metric row
    are exactly the whole-image ones, 2D and 3D, with non-sequential labels and empty cases."""
    import zarr

    stack_gt = np.stack([g for g, _ in pairs[:6]])
    stack_pred = np.stack([p for _, p in pairs[:6]])
    cases = [pairs[0], pairs[1], (stack_gt, stack_pred), (np.zeros((40, 30), np.int32), pairs[2][1][:40, :30]),
             (np.zeros((20, 20), np.uint16), np.zeros((20, 20), np.uint16))]
    for k, (gt, pred) in enumerate(cases):
        z_gt = zarr.open_array(str(tmp_path / f"g{k}.zarr"), mode="w", shape=gt.shape, dtype=gt.dtype, chunks=(7,) * gt.ndim)
        z_gt[...] = gt
        ov, px = ev.overlap_blockwise(z_gt, pred, block_pixels=700)
        ref = ev.overlap_matrix(gt, pred)
        for a in ("gt_labels", "pred_labels", "gt_sizes", "pred_sizes"):
            np.testing.assert_array_equal(getattr(ov, a), getattr(ref, a))
        assert (ov.intersection != ref.intersection).nnz == 0
        assert px == {k2: ev.pixel_metrics(gt, pred)[k2] for k2 in ("tp", "fp", "fn")}
        whole = ev.image_metrics(gt, pred)
        assert ev.image_metrics_blockwise(z_gt, pred, block_pixels=500) == whole
    with pytest.raises(AxesError):
        ev.overlap_blockwise(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
