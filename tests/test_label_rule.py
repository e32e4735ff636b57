"""One label-image rule everywhere (opsef_core.measure.check_labels): every module that takes label
images accepts integral floats like integers and refuses fractions, NaN and negative values with
InputFileError naming what (and which file) is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from opsef_core import evaluate, export, measure, postprocess
from opsef_core.errors import InputFileError
from opsef_core.science import spheroid
from opsef_core.train.data import TrainingPairs


def _labels():
    lab = np.zeros((24, 24), np.uint16)
    lab[2:8, 2:8] = 1
    lab[12:20, 10:18] = 2
    return lab


# each consumer: a function of a label image returning something comparable
CONSUMERS = {
    "measure.check_labels": lambda lab: measure.check_labels(lab).tolist(),
    "measure.measure_objects": lambda lab: measure.measure_objects(lab)["area"].tolist(),
    "postprocess.remove_small": lambda lab: postprocess.remove_small(lab, 40).tolist(),
    "evaluate.match (truth)": lambda lab: evaluate.match(lab, _labels()).f1,
    "evaluate.match (prediction)": lambda lab: evaluate.match(_labels(), lab).f1,
    "export.labels_to_rois": lambda lab: [r.name for r in export.labels_to_rois(lab)],
    "spheroid.largest_object": lambda lab: spheroid.largest_object(lab)[1],
    "TrainingPairs": lambda lab: TrainingPairs([np.zeros((24, 24))], [lab], ["pair"]).labels[0].tolist(),
}


@pytest.mark.parametrize("name", sorted(CONSUMERS))
def test_integral_floats_are_labels_everywhere(name):
    f = CONSUMERS[name]
    ref = f(_labels())
    for dtype in (np.float32, np.float64):
        assert f(_labels().astype(dtype)) == ref


@pytest.mark.parametrize("name", sorted(CONSUMERS))
@pytest.mark.parametrize("bad,message", [(0.5, "non-integer"), (np.nan, "NaN"), (-1.0, "negative")])
def test_fractions_nan_and_negatives_are_refused_everywhere(name, bad, message):
    lab = _labels().astype(np.float32)
    lab[0, 0] = bad
    with pytest.raises(InputFileError, match=message):
        CONSUMERS[name](lab)
    if bad == -1.0:
        with pytest.raises(InputFileError, match="negative"):
            CONSUMERS[name](lab.astype(np.int32))


def test_errors_name_the_array_and_the_file():
    bad = _labels() + 0.25
    with pytest.raises(InputFileError, match="predicted labels holds non-integer") as e:
        evaluate.match(_labels(), bad)
    with pytest.raises(InputFileError, match="ground-truth labels") as e:
        evaluate.match(bad, _labels())
    with pytest.raises(InputFileError, match="training labels") as e:
        TrainingPairs([np.zeros((24, 24))], [bad], ["cells_01"])
    assert e.value.path is not None and e.value.path.name == "cells_01"
    with pytest.raises(InputFileError) as e:
        measure.check_labels(bad, source="a/labels.tif")
    assert str(e.value).startswith("a/labels.tif: label image holds non-integer values")
    with pytest.raises(InputFileError, match="dtype complex"):
        measure.check_labels(_labels().astype(complex))
    # booleans are one object everywhere; empty float arrays are (empty) labels
    assert measure.check_labels(_labels() > 0).max() == 1
    assert measure.check_labels(np.zeros((0, 3), np.float32)).dtype == np.int64
