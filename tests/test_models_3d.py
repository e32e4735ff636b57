"""The 3D demo models' held-out scores: recorded in ``training.json`` and re-scored.

``scripts/train_3d_models.py`` records ``heldout`` and ``targets`` in the models it trains; the
bundled models (not replaced: no retrained one scored better) record the trainers'
``validation_f1@0.5`` on the same stack.

The target (issue 14: F1@0.5 >= 0.7) is recorded beside the score; the models that do not reach it
yet are listed in ``BELOW_TARGET`` (strict xfail: the test turns red once a retrained model meets it,
so the list must shrink).  The held-out stack is ``noncleared/spheroid_00`` of ``demo_data/spheroid_clearing``: the validation
stack of the trainers' seeded split, on which the models never trained.  Re-scoring runs each model
through its segmenter backend on that stack and matches the labels one-to-one at IoU 0.5.
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
    # the held-out stack is the validation stack, never a training one
    train = rec.get("train_names", rec.get("train"))
    val = rec.get("val_names", rec.get("validation"))
    assert val == [HELDOUT] and HELDOUT not in train and len(train) == 3
    assert 0 < _heldout_f1(rec) <= 1 and 0 < _target(rec) <= 1
    if "heldout" in rec:
        held = rec["heldout"]
        truth = tifffile.imread(DATA / "noncleared" / "labels" / "spheroid_00.tif")
        assert held["stack"] == HELDOUT and held["tp"] + held["fn"] == len(np.unique(truth[truth > 0]))
        assert held["f1@0.5"] == pytest.approx(2 * held["tp"] / (2 * held["tp"] + held["fp"] + held["fn"]))


#: models whose recorded held-out score does not reach the issue's target yet (issue 14, part 2)
BELOW_TARGET = {"unet3d_demo", "stardist3d_demo"}


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
