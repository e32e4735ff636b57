"""The backends' split decoding equals the libraries' one-call results, label for label.

StarDist (0.9.2): ``decode(predict(...))`` against ``model.predict_instances(sparse=False)``
(the dense prediction whose decoding the backend restates) on the demo models (2D on ``demo_data/nuclei2d``, 3D on a crop of a ``demo_data/spheroid_clearing`` stack)
over several ``prob_thresh``/``nms_thresh``/``scale`` settings; for the model's thresholds
also against the default ``sparse=True``, which agrees without ``scale`` (with an anisotropic
3D ``scale`` StarDist's sparse path keeps other objects: 43 against the dense 32 on the 3D crop
at ``scale=(1, 0.75, 0.75)``, so the dense path is the reference there).  Cellpose (3.1.1.2): against
``model.eval(...)`` for a plane, a stitched stack of planes and ``do_3D`` over several
``flow_threshold``/``cellprob_threshold``/``min_size``/``niter``/``stitch_threshold``
settings (``do_3D``: one ``eval``, the other settings against Cellpose's own mask step on the
same flows, as one 3D network pass costs ~25 s here).  The comparison is exact (``array_equal``, not up to a permutation of the label
values): both sides render the same objects in the same order (StarDist numbers objects by
descending probability rank and relabels 3D sequentially; Cellpose renumbers with the same
``fill_holes_and_remove_small_masks``), so any difference would be a real one.

While opsef decodes, the private library methods it used to call raise, so a test fails if
they are called again: ``StarDist2D/3D._instances_from_prediction``,
``StarDistBase._guess_n_tiles`` and ``CellposeModel._compute_masks``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile

from opsef_core.image import Image
from opsef_core.segment import get_segmenter

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
NUCLEI2D = REPO / "demo_data" / "nuclei2d"
SPHEROID = REPO / "demo_data" / "spheroid_clearing"
FUCCI = REPO / "demo_data" / "fucci3d"


@contextmanager
def _private_methods_forbidden():
    """Make the private library methods opsef must not call raise while active."""
    from cellpose.models import CellposeModel
    from stardist.models import StarDist2D, StarDist3D
    from stardist.models.base import StarDistBase

    def forbidden(name):
        def fail(*a, **k):
            raise AssertionError(f"opsef called the private method {name}")
        return fail

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StarDist2D, "_instances_from_prediction", forbidden("StarDist2D._instances_from_prediction"))
        mp.setattr(StarDist3D, "_instances_from_prediction", forbidden("StarDist3D._instances_from_prediction"))
        mp.setattr(StarDistBase, "_guess_n_tiles", forbidden("StarDistBase._guess_n_tiles"))
        mp.setattr(CellposeModel, "_compute_masks", forbidden("CellposeModel._compute_masks"))
        yield


# ----------------------------------------------------------------------------- StarDist
def _stardist_case(model_name: str, image: Image, raw: np.ndarray, settings: list[dict]):
    """Our labels (guarded) and predict_instances' labels/details for each setting."""
    from csbdeep.utils import normalize

    from opsef_core.segment.stardist_backend import decode_instances, guess_n_tiles

    seg = get_segmenter("stardist")
    base = seg.params({"model": model_name})
    model = seg.model(base)
    x = normalize(raw, 1, 99.8, axis=None)  # csbdeep's normalize, what the backend restates
    assert guess_n_tiles(model, x) == tuple(model._guess_n_tiles(x))
    preds, ours = {}, []
    with _private_methods_forbidden():
        for s in settings:
            p = seg.params({"model": model_name, **s})
            key = seg.network_key(p)
            if key not in preds:
                preds[key] = seg.predict(image, p)
            ours.append(seg.decode(preds[key], image, p))
        # the details of the first setting, for the points/prob comparison
        s0 = settings[0]
        pred0 = preds[seg.network_key(seg.params({"model": model_name, **s0}))]
        _, det = decode_instances(model, raw.shape, pred0["prob"], pred0["dist"], s0.get("prob_thresh"),
                                  s0.get("nms_thresh"))
    refs = []
    for s in settings:
        scale = s.get("scale")
        # the tiles the backend used: guessed from the (rescaled) network input
        factors = np.broadcast_to(1.0 if scale is None else scale, (x.ndim,))
        n_tiles = guess_n_tiles(model, np.empty([round(n * f) for n, f in zip(x.shape, factors)], np.uint8))
        refs.append(model.predict_instances(x, prob_thresh=s.get("prob_thresh"), nms_thresh=s.get("nms_thresh"),
                                            scale=scale, n_tiles=n_tiles, sparse=False, show_tile_progress=False,
                                            verbose=False))
    # predict_instances' default (sparse=True: NMS over the candidates its tiles keep) agrees unscaled
    assert "scale" not in settings[0]
    sparse = model.predict_instances(x, n_tiles=guess_n_tiles(model, x), show_tile_progress=False)[0]
    np.testing.assert_array_equal(ours[0], sparse)
    return ours, refs, det, len(preds)


@pytest.mark.slow
def test_stardist2d_decode_equals_predict_instances_on_demo_nuclei():
    name = "nuclei_05"
    raw = tifffile.imread(NUCLEI2D / "images" / f"{name}.tif")
    truth = tifffile.imread(NUCLEI2D / "labels" / f"{name}.tif")
    image = Image.from_array(raw, "YX", pixel_size={"Y": 0.5, "X": 0.5}, name=name)
    thr = json.loads((MODELS / "stardist2d_demo" / "thresholds.json").read_text())
    settings = [{}, {"prob_thresh": 0.3, "nms_thresh": 0.3}, {"prob_thresh": thr["prob"] + 0.1},
                {"prob_thresh": 0.7, "nms_thresh": 0.5}, {"prob_thresh": 0.95},
                {"scale": 0.75, "prob_thresh": 0.5}, {"scale": (1.25, 1.0), "nms_thresh": 0.2}]
    ours, refs, det, n_passes = _stardist_case("stardist2d_demo", image, raw, settings)
    assert n_passes == 3  # one network pass per scale; thresholds only decode
    n_truth = len(np.unique(truth)) - 1
    for s, lab, (ref, _) in zip(settings, ours, refs):
        assert lab.shape == raw.shape and lab.dtype == np.int32
        np.testing.assert_array_equal(lab, ref, err_msg=str(s))
    # the model's own thresholds find the image's nuclei; a very high prob_thresh fewer
    assert abs(ours[0].max() - n_truth) <= 0.2 * n_truth, (ours[0].max(), n_truth)
    assert ours[4].max() < ours[0].max() <= ours[1].max()
    np.testing.assert_array_equal(det["points"], refs[0][1]["points"])
    np.testing.assert_array_equal(det["prob"], refs[0][1]["prob"])


@pytest.mark.slow
def test_stardist3d_decode_equals_predict_instances_on_spheroid_crop():
    path = SPHEROID / "cleared" / "images" / "spheroid_00.tif"
    raw = tifffile.imread(path)[8:24, 40:88, 40:88]  # 16 x 48 x 48, ~60 nuclei: one tile
    image = Image.from_array(raw, "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5}, name="spheroid_crop")
    thr = json.loads((MODELS / "stardist3d_demo" / "thresholds.json").read_text())
    settings = [{}, {"prob_thresh": thr["prob"] + 0.15, "nms_thresh": 0.5}, {"prob_thresh": thr["prob"] + 0.3},
                {"scale": (1.0, 0.75, 0.75)}]
    ours, refs, det, n_passes = _stardist_case("stardist3d_demo", image, raw, settings)
    assert n_passes == 2
    for s, lab, (ref, _) in zip(settings, ours, refs):
        assert lab.shape == raw.shape and lab.dtype == np.int32
        np.testing.assert_array_equal(lab, ref, err_msg=str(s))
    assert ours[0].max() >= 20 and ours[2].max() < ours[0].max()
    np.testing.assert_array_equal(det["points"], refs[0][1]["points"])
    np.testing.assert_array_equal(det["dist"], refs[0][1]["dist"])


# ----------------------------------------------------------------------------- Cellpose
CELLPOSE = {"model": str(MODELS / "cellpose_demo"), "device": "cpu"}


@pytest.fixture(scope="module")
def cellpose():
    return get_segmenter("cellpose")


def test_cellpose_plane_decode_equals_eval_on_demo_nuclei(cellpose):
    raw = tifffile.imread(NUCLEI2D / "images" / "nuclei_02.tif")[64:192, 64:192]
    image = Image.from_array(raw, "YX", pixel_size={"Y": 0.5, "X": 0.5}, name="nuclei_02_crop")
    model = cellpose.model(cellpose.params(CELLPOSE))
    d0 = float(model.diam_mean)
    # (flow_threshold, cellprob_threshold, min_size, niter, diameter)
    settings = [(0.4, 0.0, 15, None, d0), (0.2, -1.0, 15, None, d0), (0.8, 1.0, 30, None, d0),
                (0.0, 0.0, -1, None, d0), (0.4, 0.0, 15, 80, d0), (0.4, -0.5, 15, None, 0.8 * d0)]
    ours, preds = [], {}
    with _private_methods_forbidden():
        for f, c, m, n, d in settings:
            p = cellpose.params({**CELLPOSE, "flow_threshold": f, "cellprob_threshold": c, "min_size": m,
                                 "niter": n, "diameter": d})
            if d not in preds:
                preds[d] = cellpose.predict(image, p)
            ours.append(cellpose.decode(preds[d], image, p))
    counts = []
    for (f, c, m, n, d), lab in zip(settings, ours):
        ref = model.eval(raw, channels=[0, 0], flow_threshold=f, cellprob_threshold=c, min_size=m, niter=n,
                         diameter=d)[0]
        assert lab.shape == raw.shape and lab.dtype == np.int32
        np.testing.assert_array_equal(lab, ref, err_msg=str((f, c, m, n, d)))
        counts.append(int(lab.max()))
    assert counts[0] >= 5 and counts[2] <= counts[0]


@pytest.fixture(scope="module")
def fucci_stack():
    """8 x 40 x 40 of the FUCCI demo stack (z step 1.0, xy 0.5 um; nuclei ~11 px wide)."""
    data = tifffile.imread(FUCCI / "images" / "fucci_00.tif")  # ZCYX
    return Image.from_array(data[6:14, :, 24:64, 24:64], "ZCYX", pixel_size={"Z": 1.0, "Y": 0.5, "X": 0.5},
                            channel_names=["hoechst", "cdt1_red", "geminin_green"], name="fucci_crop")


def test_cellpose_stitched_stack_decode_equals_eval(cellpose, fucci_stack):
    """A stack segmented plane by plane and stitched: every setting equals ``model.eval``."""
    from opsef_core.errors import SegmentationError

    base = {**CELLPOSE, "channel": "hoechst", "scale_factor": 1.0}
    # (stitch_threshold, flow_threshold, cellprob_threshold, min_size)
    settings = [(0.25, 0.4, 0.0, 15), (0.5, 0.4, 0.0, 15), (0.25, 0.8, -1.0, 40)]
    params = [cellpose.params({**base, "stitch_threshold": st, "flow_threshold": f, "cellprob_threshold": c,
                               "min_size": m}) for st, f, c, m in settings]
    pred = cellpose.predict(fucci_stack, params[0])
    assert pred["dP"].shape == (2, 8, 40, 40) and pred["cellprob"].shape == (8, 40, 40)
    with _private_methods_forbidden():
        ours = [cellpose.decode(pred, fucci_stack, p) for p in params]
    for s, p, lab in zip(settings, params, ours):
        assert lab.shape == (8, 40, 40) and lab.dtype == np.int32
        np.testing.assert_array_equal(lab, cellpose.eval_reference(fucci_stack, p), err_msg=str(s))
    assert ours[0].max() >= 3
    zs = [len(np.unique(np.nonzero(ours[0] == v)[0])) for v in np.unique(ours[0])[1:]]
    assert max(zs) >= 3  # stitched objects span several planes
    with pytest.raises(SegmentationError, match="stitch_threshold"):
        cellpose.decode(pred, fucci_stack, cellpose.params(base))


@pytest.mark.slow
def test_cellpose_3d_decode_equals_eval_and_reuses_dynamics(cellpose, fucci_stack, monkeypatch):
    """``do_3D``: the first setting equals ``model.eval`` (network and decoding); every setting
    equals Cellpose's own mask step (``CellposeModel._compute_masks``) on the same flows, and the
    3D dynamics run once per ``cellprob_threshold``.

    One ``do_3D`` network pass costs ~25 s on 2 CPU cores, hence one ``eval`` only.
    """
    import cellpose.dynamics as dyn
    import torch
    from cellpose.models import CellposeModel

    base = {**CELLPOSE, "channel": "hoechst", "scale_factor": 1.0, "do_3D": True}
    settings = [(0.0, 15), (0.0, 40), (-1.0, 15)]  # (cellprob_threshold, min_size)
    params = [cellpose.params({**base, "cellprob_threshold": c, "min_size": m}) for c, m in settings]
    model = cellpose.model(params[0])
    assert cellpose.eval_kwargs(fucci_stack, params[0], model)["anisotropy"] == 2.0  # pixel sizes Z / X
    pred = cellpose.predict(fucci_stack, params[0])
    assert pred["dP"].shape == (3, 8, 40, 40) and pred["cellprob"].shape == (8, 40, 40)
    calls = []
    real = dyn.compute_masks
    monkeypatch.setattr(dyn, "compute_masks", lambda *a, **k: calls.append(1) or real(*a, **k))
    with _private_methods_forbidden():
        ours = [cellpose.decode(pred, fucci_stack, p) for p in params]
    monkeypatch.undo()
    assert len(calls) == 2  # once per cellprob_threshold, reused across min_size
    holder = type("Holder", (), {"device": torch.device("cpu")})()  # _compute_masks uses self.device only
    niter = 1 / np.asarray(pred["rescale"])[()] * 200  # eval's default, the same expression
    for (c, m), lab in zip(settings, ours):
        assert lab.shape == (8, 40, 40) and lab.dtype == np.int32
        ref = CellposeModel._compute_masks(holder, (8, 40, 40, 2), pred["dP"], pred["cellprob"],
                                           cellprob_threshold=c, min_size=m, niter=niter, do_3D=True)
        np.testing.assert_array_equal(lab, ref, err_msg=str((c, m)))
    np.testing.assert_array_equal(ours[0], cellpose.eval_reference(fucci_stack, params[0]))
    assert ours[0].max() >= 3 and ours[1].max() <= ours[0].max()
