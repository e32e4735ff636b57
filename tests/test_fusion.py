"""Channel fusion: flow averaging, pixel and object voting, STAPLE, the fusion table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from opsef_core import fusion
from opsef_core.errors import ConfigError, SegmentationError
from opsef_core.evaluate import match
from opsef_core.image import Image

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "cellpose_demo"
HCS = REPO / "demo_data" / "hcs_channels"


def _disc_labels(shape, centres, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


# ----------------------------------------------------------------------------- unit tests (no network)
def test_channel_power_set():
    assert fusion.channel_power_set(["a", "b", "c"]) == [
        ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]
    assert len(fusion.channel_power_set(range(4))) == 15
    with pytest.raises(ConfigError):
        fusion.channel_power_set([0, 0])


def test_pixel_vote_counts():
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[1, 0, 2, 0]])
    c = np.array([[0, 0, 3, 3]])
    np.testing.assert_array_equal(fusion.pixel_vote([a, b, c]), [[True, False, True, False]])  # k = 2
    np.testing.assert_array_equal(fusion.pixel_vote([a, b, c], k=1), [[True, True, True, True]])
    np.testing.assert_array_equal(fusion.pixel_vote([a, b, c], k=3), [[False, False, False, False]])
    np.testing.assert_array_equal(fusion.pixel_vote([a, b]), [[True, True, True, False]])  # ceil(2/2) = 1
    with pytest.raises(ConfigError):
        fusion.pixel_vote([a, b], k=3)
    with pytest.raises(SegmentationError, match="shape"):
        fusion.pixel_vote([a, np.zeros((2, 2))])


def test_instances_from_mask_splits_touching_discs():
    lab = _disc_labels((60, 80), [(30, 25), (30, 44)], 10)  # two touching discs
    mask = lab > 0
    ws = fusion.instances_from_mask(mask)
    assert ws.max() == 2 and match(lab, ws, 0.5).f1 == 1.0
    # reference labels seed the watershed; an extra blob without a seed becomes its own object
    mask2 = mask.copy()
    mask2[5:12, 70:78] = True
    ref = fusion.instances_from_mask(mask2, reference_labels=lab)
    assert ref.max() == 3 and np.all(ref[mask2] > 0) and np.all(ref[~mask2] == 0)
    assert match(lab, np.where(lab > 0, ref, 0), 0.5).tp == 2


def test_majority_vote_keeps_objects_most_raters_see():
    shape = (64, 64)
    a = _disc_labels(shape, [(15, 15), (45, 45)], 7)
    b = _disc_labels(shape, [(16, 15), (45, 46)], 7)            # same objects, slightly shifted
    c = _disc_labels(shape, [(15, 15), (15, 48)], 7)            # misses one, adds a false one
    out = fusion.majority_vote([a, b, c])
    truth = _disc_labels(shape, [(15, 15), (45, 45)], 7)
    m = match(truth, out, 0.5)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    # requiring all three raters keeps only the object everybody has
    assert fusion.majority_vote([a, b, c], min_votes=3).max() == 1


def test_staple_hand_checked():
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), bool)
    truth[10:30, 8:25] = True
    good1 = truth.copy()
    good2 = truth.copy()
    good2[rng.random(truth.shape) < 0.02] ^= True              # 2 % pixel noise
    wrong = ~truth                                              # always wrong
    prob, sens, spec = fusion.staple([good1, good2, wrong])
    assert prob.shape == truth.shape
    np.testing.assert_array_equal(prob >= 0.5, truth)
    assert sens[0] > 0.97 and spec[0] > 0.97 and sens[1] > 0.95 and spec[1] > 0.95
    assert sens[2] < 0.05 and spec[2] < 0.05
    # identical raters: the consensus equals them, with perfect sensitivity/specificity
    prob, sens, spec = fusion.staple([truth, truth, truth])
    np.testing.assert_array_equal(prob >= 0.5, truth)
    np.testing.assert_allclose(sens, 1.0, atol=1e-6)
    np.testing.assert_allclose(spec, 1.0, atol=1e-6)
    # independent check of one EM step by hand for 2 raters on 4 pixels
    d1 = np.array([1, 1, 0, 0], bool)
    d2 = np.array([1, 0, 1, 0], bool)
    prob, sens, spec = fusion.staple([d1, d2], max_iter=1)
    f = 0.5  # mean foreground fraction
    a = f * np.array([0.99 * 0.99, 0.99 * 0.01, 0.01 * 0.99, 0.01 * 0.01])
    b = (1 - f) * np.array([0.01 * 0.01, 0.01 * 0.99, 0.99 * 0.01, 0.99 * 0.99])
    np.testing.assert_allclose(prob, a / (a + b), rtol=1e-9)


# ----------------------------------------------------------------------------- with the demo model
@pytest.fixture(scope="module")
def hcs():
    """A 128x128 crop of an HCS demo field: channels nuclei_cyto and cytoplasm, nuclei truth."""
    data = tifffile.imread(HCS / "images" / "hcs_00.tif")[:2, :128, :128]
    gt = tifffile.imread(HCS / "labels" / "nuclei" / "hcs_00.tif")[:128, :128]
    img = Image.from_array(data, "CYX", pixel_size={"Y": 0.5, "X": 0.5},
                           channel_names=["nuclei_cyto", "cytoplasm"], name="hcs_00_crop")
    return img, gt


@pytest.fixture(scope="module")
def cache():
    return {}


PARAMS = {"model": str(DEMO_MODEL), "device": "cpu"}


def test_flow_average_of_one_channel_equals_backend(hcs, cache):
    from opsef_core.segment import get_segmenter

    img, gt = hcs
    seg = get_segmenter("cellpose")
    preds = fusion.channel_predictions(img, ["nuclei_cyto", "cytoplasm"], PARAMS, cache)
    assert sorted(preds) == [0, 1]
    single = fusion.flow_average([preds[0]], PARAMS)
    direct = seg.decode(preds[0], img, seg.params({**PARAMS, "channel": 0}))
    np.testing.assert_array_equal(single, direct)
    assert match(gt, single, 0.5).f1 > 0.5
    # averaging two identical predictions changes nothing; averaging two channels is the mean
    np.testing.assert_array_equal(fusion.flow_average([preds[0], preds[0]], PARAMS), single)
    both = fusion.fuse_flows_for_channels(img, [0, 1], PARAMS, cache)
    from opsef_core.segment.cellpose_backend import masks_from_flows

    ref = masks_from_flows((preds[0]["dP"] + preds[1]["dP"]) / 2,
                           (preds[0]["cellprob"] + preds[1]["cellprob"]) / 2, rescale=float(preds[0]["rescale"]))
    np.testing.assert_array_equal(both, ref)
    with pytest.raises(SegmentationError, match="shape"):
        fusion.flow_average([preds[0], {"dP": preds[0]["dP"][:, :64], "cellprob": preds[0]["cellprob"][:64]}])
    # averaging in probability space: identical on one channel, the mean probability on two
    np.testing.assert_array_equal(fusion.flow_average([preds[0]], PARAMS, cellprob_space="probability"), single)
    from scipy.special import expit, logit

    p_mean = (expit(preds[0]["cellprob"].astype(np.float64)) + expit(preds[1]["cellprob"].astype(np.float64))) / 2
    ref_p = masks_from_flows((preds[0]["dP"] + preds[1]["dP"]) / 2,
                             logit(np.clip(p_mean, 1e-7, 1 - 1e-7)).astype(np.float32),
                             rescale=float(preds[0]["rescale"]))
    np.testing.assert_array_equal(fusion.flow_average([preds[0], preds[1]], PARAMS, cellprob_space="probability"),
                                  ref_p)
    with pytest.raises(ConfigError, match="cellprob_space"):
        fusion.flow_average([preds[0]], PARAMS, cellprob_space="mean")


def test_fusion_table_on_hcs(hcs, cache, monkeypatch):
    from cellpose.models import CellposeModel

    img, gt = hcs
    fusion.channel_predictions(img, ["nuclei_cyto", "cytoplasm"], PARAMS, cache)  # fills the cache
    calls = []
    original = CellposeModel._run_net
    monkeypatch.setattr(CellposeModel, "_run_net",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    table = fusion.fusion_table(img, gt, channels=["nuclei_cyto", "cytoplasm"], params=PARAMS, cache=cache)
    assert calls == []  # both channels' network passes came from the cache
    assert list(table.index) == ["nuclei_cyto", "cytoplasm", "nuclei_cyto+cytoplasm"]
    assert list(table.columns) == list(fusion.FUSION_METHODS)
    assert ((table.values >= 0) & (table.values <= 1)).all()
    # the single nuclear channel: every method reduces to (about) the single segmentation
    single = fusion.flow_average([cache[k] for k in cache if k[0] == 0], PARAMS)
    assert table.loc["nuclei_cyto", "flow_average"] == pytest.approx(match(gt, single, 0.5).f1)
    assert table.loc["nuclei_cyto", "flow_average"] > 0.5
    with pytest.raises(ConfigError, match="unknown fusion"):
        fusion.fusion_table(img, gt, methods=["average"], params=PARAMS, cache=cache)
