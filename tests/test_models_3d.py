"""The 3D demo models' held-out scores (recorded in ``training.json`` and re-scored) and the
generator of their training stacks (:mod:`opsef_core.testing.spheroid3d`).

``scripts/train_3d_models.py`` trains both models on generated stacks like the demo's clearing
stacks (plus the three demo training stacks; the U-Net also on generated FUCCI-like stacks),
validates on generated stacks (the U-Net's decoding is chosen there too), and records
``training_data``, ``heldout`` and ``targets`` in ``training.json``.  The held-out stack is
``noncleared/spheroid_00`` of ``demo_data/spheroid_clearing``: never trained or validated on.
A model of the older demo recipe (three demo stacks, the held-out stack as validation stack
choosing the best epoch) records the trainers' ``validation_f1@0.5`` on it instead.  Re-scoring runs
each model through its segmenter backend on that stack and matches the labels one-to-one at IoU 0.5.  The target (issue 14: F1@0.5 >= 0.7) is recorded beside the score; models
that do not reach it yet are listed in ``BELOW_TARGET`` (strict xfail).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from opsef_core.evaluate import match
from opsef_core.image import Image
from opsef_core.segment import get_segmenter

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "demo_data" / "spheroid_clearing"
MODELS = {"unet3d_demo": "unet", "stardist3d_demo": "stardist"}
HELDOUT = "noncleared/spheroid_00"
#: issue 14, part 2 (``scripts/train_3d_models.TARGETS``; a model it trains records it as ``targets``)
TARGET_F1 = 0.7


def _demo_seed() -> int:
    from opsef_core.testing.spheroid3d import _demo_module

    return int(_demo_module().DEFAULT_SEED)


def _record(name: str) -> dict:
    return json.loads((REPO / "models" / name / "training.json").read_text())


def _heldout_f1(rec: dict) -> float:
    """The recorded held-out F1@0.5: ``heldout`` (scripts/train_3d_models.py) or the trainers'
    ``validation_f1@0.5`` (the validation stack is the held-out stack)."""
    return float(rec["heldout"]["f1@0.5"]) if "heldout" in rec else float(rec["validation_f1@0.5"])


def _target(rec: dict) -> float:
    return float(rec.get("targets", {}).get("f1@0.5", TARGET_F1))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heldout_score_is_recorded(name):
    rec = _record(name)
    train = rec.get("train_names", rec.get("train"))
    val = rec.get("val_names", rec.get("validation"))
    assert HELDOUT not in train and val and not set(train) & set(val)
    if "training_data" in rec:  # trained by scripts/train_3d_models.py: never validated on the held-out stack
        data = rec["training_data"]
        assert HELDOUT not in val
        fucci = data.get("fucci_train", {"indices": []})
        assert len(train) == len(data["generated_train"]["indices"]) + len(data["demo_train"]) + len(fucci["indices"])
        assert sum(n.startswith("fucci") for n in train) == len(fucci["indices"])
        assert data["generated_train"]["base_seed"] != _demo_seed()
        assert "heldout" in rec
    else:  # the older demo recipe: three demo stacks, the held-out stack chose the best epoch
        assert val == [HELDOUT] and len(train) == 3
    assert 0 < _heldout_f1(rec) <= 1 and 0 < _target(rec) <= 1
    if "heldout" in rec:
        held = rec["heldout"]
        truth = tifffile.imread(DATA / "noncleared" / "labels" / "spheroid_00.tif")
        assert held["stack"] == HELDOUT and held["tp"] + held["fn"] == len(np.unique(truth[truth > 0]))
        assert held["f1@0.5"] == pytest.approx(2 * held["tp"] / (2 * held["tp"] + held["fp"] + held["fn"]))


#: models whose recorded held-out score does not reach the issue's target yet (issue 14, part 2)
BELOW_TARGET: set[str] = set()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(
    strict=True, reason="issue 14 part 2 open: below the F1@0.5 target on the held-out stack"))
    if n in BELOW_TARGET else n for n in sorted(MODELS)])
def test_heldout_score_meets_the_target(name):
    rec = _record(name)
    assert _heldout_f1(rec) >= _target(rec)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_heldout_score_reproduces(name):
    backend = MODELS[name]
    rec = _record(name)
    img = tifffile.imread(DATA / "noncleared" / "images" / "spheroid_00.tif")
    truth = tifffile.imread(DATA / "noncleared" / "labels" / "spheroid_00.tif")
    seg = get_segmenter(backend)
    extra = {"device": "cpu"} if backend == "unet" else {}
    pred = seg.segment(Image.from_array(img, "ZYX"), seg.params({"model": name, **extra}))
    m = match(truth, pred, 0.5)
    assert m.f1 == pytest.approx(_heldout_f1(rec), abs=0.02)
    assert m.tp + m.fn == len(np.unique(truth[truth > 0]))


def test_generated_stacks_are_seeded_and_look_like_the_demo():
    from opsef_core.testing import spheroid3d

    a_img, a_lab = spheroid3d.make_stack(3, cleared=False)
    b_img, b_lab = spheroid3d.make_stack(3, cleared=False)
    c_img, _ = spheroid3d.make_stack(4, cleared=False)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    demo_img = tifffile.imread(DATA / "noncleared" / "images" / "spheroid_00.tif")
    demo_lab = tifffile.imread(DATA / "noncleared" / "labels" / "spheroid_00.tif")
    assert a_img.shape == demo_img.shape and a_img.dtype == demo_img.dtype
    assert not np.array_equal(a_img, demo_img)
    # same density and nucleus size as the demo stack (within 15 %), same depth attenuation
    assert abs(int(a_lab.max()) - int(demo_lab.max())) < 0.15 * demo_lab.max()
    assert np.count_nonzero(a_lab) / a_lab.max() == pytest.approx(np.count_nonzero(demo_lab) / demo_lab.max(),
                                                                  rel=0.15)

    def top_over_bottom(img, lab):
        return img[:4][lab[:4] > 0].mean() / img[-8:][lab[-8:] > 0].mean()

    assert top_over_bottom(a_img, a_lab) == pytest.approx(top_over_bottom(demo_img, demo_lab), rel=0.25)
    cleared_img, cleared_lab = spheroid3d.make_stack(3, cleared=True)
    assert top_over_bottom(cleared_img, cleared_lab) < 0.5 * top_over_bottom(a_img, a_lab)


def test_generated_pairs_cycle_conditions_and_refuse_bad_input():
    from opsef_core.errors import ConfigError
    from opsef_core.testing import spheroid3d

    pairs = spheroid3d.make_pairs([7, 8, 9], shape=(8, 32, 32))
    assert pairs.names == ["gen1402/cleared/007", "gen1402/noncleared/008", "gen1402/cleared/009"]
    assert all(im.shape == (8, 32, 32) for im in pairs.images)
    img, _ = spheroid3d.make_stack(8, cleared=False, shape=(8, 32, 32))
    assert np.array_equal(pairs.images[1], img)
    with pytest.raises(ConfigError, match="conditions"):
        spheroid3d.make_pairs([1], conditions=["foggy"])
    with pytest.raises(ConfigError, match="index"):
        spheroid3d.make_stack(-1, cleared=True)


def test_anisotropic_targets_keep_an_interior_and_split_objects_along_z():
    from opsef_core.errors import ConfigError
    from opsef_core.segment.unet_backend import decode_3class
    from opsef_core.train.unet import make_targets

    lab = np.zeros((8, 12, 12), np.int32)
    lab[1:4, 2:10, 2:10] = 1
    lab[4:7, 2:10, 2:10] = 2  # touches object 1 along Z
    t = make_targets(lab, "3class", boundary="anisotropic")
    assert (t[lab == 0] == 0).all()
    assert (t[3, 2:10, 2:10] == 1).all() and (t[4, 2:10, 2:10] == 1).all()  # the shared Z faces
    assert (t[1, 3:9, 3:9] == 2).all() and (t[2, 3:9, 3:9] == 2).all()  # interior, not the free Z face
    assert (t[2, 2, 2:10] == 1).all()  # the in-plane ring
    iso = make_targets(lab, "3class")
    # the 3D boundary eats the 3-slice objects: only their middle slices keep an interior
    assert np.array_equal(np.flatnonzero((iso == 2).any(axis=(1, 2))), [2, 5])
    assert (t == 2).sum() == 2 * (iso == 2).sum()
    with pytest.raises(ConfigError, match="boundary"):
        make_targets(lab, "3class", boundary="2d")
    # decoding the exact targets (one-hot probabilities) recovers the held-out stack's nuclei
    truth = tifffile.imread(DATA / "noncleared" / "labels" / "spheroid_00.tif")

    def decoded_f1(boundary):
        tt = make_targets(truth, "3class", boundary=boundary)
        prob = np.stack([(tt == k).astype(np.float32) for k in range(3)])
        return match(truth, decode_3class(prob), 0.5).f1

    aniso, iso3d = decoded_f1("anisotropic"), decoded_f1("3d")
    assert aniso > 0.95 and aniso > iso3d + 0.05, (aniso, iso3d)


def test_generated_fucci_stacks_are_seeded_preprocessed_like_the_notebook_and_not_the_demo():
    from opsef_core.testing import spheroid3d
    from opsef_core.workflows import fucci3d as wf

    raw, lab = spheroid3d.make_fucci_stack(2, preprocess=False)
    proc, lab2 = spheroid3d.make_fucci_stack(2)
    other, _ = spheroid3d.make_fucci_stack(3, preprocess=False)
    demo = wf.load_fucci(REPO / "demo_data" / "fucci3d")
    demo_raw = np.asarray(demo["image"].spatial(c="hoechst"))
    assert raw.shape == demo_raw.shape and raw.dtype == demo_raw.dtype and np.array_equal(lab, lab2)
    assert not np.array_equal(raw, other) and not np.array_equal(raw, demo_raw)
    assert spheroid3d.FUCCI_SEED != _demo_seed()
    # the same nucleus count as the demo stack, and the notebook's chain on the nuclear channel
    assert abs(int(lab.max()) - int(demo["labels"].max())) <= 4
    pipe = wf.fucci_pipeline(**spheroid3d.FUCCI_PIPELINE)
    expected = np.asarray(pipe.apply(Image.from_array(raw, "ZYX")).data)
    assert proc.dtype == np.float32 and np.array_equal(proc, expected)
    pairs = spheroid3d.make_fucci_pairs([5, 6])
    assert pairs.names == ["fucci1403/005", "fucci1403/006"]
    assert spheroid3d.describe_fucci([5, 6])["indices"] == [5, 6]


def test_distance_targets_with_sampling_are_anisotropic_euclidean_distances():
    from scipy import ndimage as ndi

    from opsef_core.errors import ConfigError
    from opsef_core.train.unet import make_targets

    lab = np.zeros((9, 20, 20), np.int32)
    lab[1:8, 2:18, 2:10] = 1
    lab[1:8, 2:18, 10:18] = 2  # touches object 1 along X
    t = make_targets(lab, "distance", sampling=(4, 1, 1))
    for i in (1, 2):
        alone = ndi.distance_transform_edt(np.pad(lab == i, 1), sampling=(4, 1, 1))[1:-1, 1:-1, 1:-1]
        np.testing.assert_allclose(t[lab == i], alone[lab == i], rtol=1e-6)
    assert (t[lab == 0] == 0).all()
    assert t[4, 10, 9] == 1 and t[4, 10, 10] == 1  # the shared face is a valley between the two
    # the centre is 4 px from the X face; one slice (4 px) from the Z faces only in the end slices
    assert t.max() == pytest.approx(4.0) and t[1, 10, 6] == pytest.approx(4.0) and t[4, 10, 6] == pytest.approx(4.0)
    with pytest.raises(ConfigError, match="sampling"):
        make_targets(lab, "distance", sampling=(4, 1))


def _stored_decoding_model(tmp_path, decoding):
    import shutil

    out = tmp_path / "m"
    shutil.copytree(REPO / "models" / "unet3d_demo", out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("decoding", None)
    if decoding is not None:
        cfg["decoding"] = decoding
    (out / "config.json").write_text(json.dumps(cfg))
    return out, cfg["variant"]


def test_unet_backend_takes_unset_decoding_parameters_from_the_model(tmp_path):
    from opsef_core.errors import ConfigError
    from opsef_core.segment.unet_backend import DECODING_DEFAULTS, DECODING_KEYS, check_decoding

    seg = get_segmenter("unet")
    out, variant = _stored_decoding_model(tmp_path, None)
    plain = seg.params({"model": str(out)})
    assert {k: getattr(plain, k) for k in DECODING_DEFAULTS} == DECODING_DEFAULTS
    key = DECODING_KEYS[variant][0]
    value = 0.3 if key != "min_size" else 33
    out, _ = _stored_decoding_model(tmp_path / "b", {key: value, "min_size": 25})
    p = seg.params({"model": str(out)})
    assert getattr(p, key) == value and p.min_size == 25
    assert seg.params({"model": str(out), "min_size": 7}).min_size == 7  # a caller's value wins
    assert seg.params({"model": str(out), "min_size": None}).min_size == 25
    # the run engine dumps the validated parameters: the stored values stay in its record
    again = seg.params(p.model_dump(mode="json"))
    assert again == p
    assert seg.params({"model": "no_such_model_xyz"}).min_size == DECODING_DEFAULTS["min_size"]
    other = "3class" if variant == "distance" else "distance"
    wrong = next(k for k in DECODING_KEYS[other] if k not in DECODING_KEYS[variant])
    with pytest.raises(ConfigError, match="do not apply"):
        check_decoding({wrong: 1.0}, variant)
    with pytest.raises(ConfigError):
        check_decoding({"min_size": -1}, variant)


def test_choose_decoding_picks_the_best_validation_setting_and_stores_it(tmp_path):
    from opsef_core.segment.unet_backend import DECODING_KEYS
    from opsef_core.testing import spheroid3d
    from opsef_core.train.unet import choose_decoding, store_decoding

    out, variant = _stored_decoding_model(tmp_path, None)
    (out / "training.json").write_text(json.dumps({"backend": "unet"}))
    pairs = spheroid3d.make_pairs([901], conditions=["noncleared"])
    grid = [{"min_size": 10}, {"min_size": 400}]  # 400 voxels removes most nuclei
    best, table = choose_decoding(out, pairs, grid)
    seg = get_segmenter("unet")
    for row, setting in zip(table, grid):
        pred = seg.segment(Image.from_array(pairs.images[0], "ZYX"), {"model": str(out), "device": "cpu", **setting})
        assert row["mean_f1"] == pytest.approx(match(pairs.labels[0], pred, 0.5).f1)
    assert best == grid[int(np.argmax([r["mean_f1"] for r in table]))] == {"min_size": 10}
    stored = store_decoding(out, best, chosen_on=pairs.names)
    assert json.loads((out / "config.json").read_text())["decoding"] == stored == best
    assert json.loads((out / "training.json").read_text())["decoding"]["chosen_on"] == pairs.names
    assert seg.params({"model": str(out)}).min_size == 10
    assert set(best) <= set(DECODING_KEYS[variant])


def test_the_unet3d_decoding_is_not_the_bottleneck_on_the_heldout_stack():
    """Decoding the exact training targets of the held-out stack with the model's stored decoding
    (beta as stored at most 0.5: the exact targets' boundary voxels are at distance 1) recovers
    its nuclei well above the target."""
    from opsef_core.segment.unet_backend import decode_distance
    from opsef_core.testing import spheroid3d
    from opsef_core.train.unet import make_targets

    cfg = json.loads((REPO / "models" / "unet3d_demo" / "config.json").read_text())
    if cfg["variant"] != "distance":
        pytest.skip("unet3d_demo is not a distance model")
    p = get_segmenter("unet").params({"model": "unet3d_demo"})
    truth = tifffile.imread(DATA / "noncleared" / "labels" / "spheroid_00.tif")
    target = make_targets(truth, "distance", sampling=spheroid3d.SPHEROID_SAMPLING)
    exact = decode_distance(target, beta=min(p.beta, 0.5), h=p.h, min_size=p.min_size)
    assert match(truth, exact, 0.5).f1 >= TARGET_F1 + 0.1
