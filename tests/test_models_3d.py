"""The 3D demo models' held-out scores (recorded in ``training.json`` and re-scored) and the
generator of their training stacks (:mod:`opsef_core.testing.spheroid3d`).

``scripts/train_3d_models.py`` trains both models on generated stacks like the demo's clearing
stacks (plus the three demo training stacks), validates on two more generated stacks, and records
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
        assert len(train) == len(data["generated_train"]["indices"]) + len(data["demo_train"])
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
BELOW_TARGET = {"unet3d_demo"}


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
