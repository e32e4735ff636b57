"""Tests of opsef_core.science.fucci on synthetic nuclei with known cell-cycle phases."""

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from opsef_core.errors import ConfigError
from opsef_core.science.fucci import (
    PHASES,
    call_phases,
    nucleus_intensities,
    otsu_exact,
    phase_accuracy,
    phase_fractions,
    radial_distribution,
)

LEVELS = {"G1": (1.0, 0.05), "S/G2/M": (0.05, 1.0), "G1/S": (1.0, 1.0), "unlabeled": (0.05, 0.05)}


def _synthetic(rng, n_side=8, shape=(200, 200), outer="G1", inner="S/G2/M"):
    """Nuclei on a grid; phases cycle through all four, except a ring/core pattern when asked."""
    labels = np.zeros(shape, np.int32)
    red = rng.normal(30, 4, shape)
    green = rng.normal(60, 6, shape)
    truth = {}
    step = shape[0] // n_side
    k = 0
    for i in range(n_side):
        for j in range(n_side):
            k += 1
            cy, cx = step // 2 + i * step, step // 2 + j * step
            phase = PHASES[k % 4]
            labels[disk((cy, cx), step // 3, shape=shape)] = k
            r, g = LEVELS[phase]
            red[labels == k] += 500 * r * rng.uniform(0.8, 1.2)
            green[labels == k] += 300 * g * rng.uniform(0.8, 1.2)
            truth[k] = phase
    return labels, red, green, truth


def test_all_four_phases_recovered_and_thresholds_recorded():
    rng = np.random.default_rng(7)
    labels, red, green, truth = _synthetic(rng)
    df = nucleus_intensities(labels, red, green)
    assert len(df) == 64
    assert df.attrs["background"]["red"] == pytest.approx(30, abs=1)
    assert df.attrs["background"]["green"] == pytest.approx(60, abs=2)
    called = call_phases(df)
    assert (called["phase"].astype(str).to_numpy() == [truth[l] for l in called["label"]]).all()
    thr = called.attrs["thresholds"]
    assert set(thr) == {"red", "green"} and 0.1 < thr["red"] < 0.9 and 0.1 < thr["green"] < 0.9
    assert called.attrs["threshold_methods"] == {"red": "otsu", "green": "otsu"}
    fixed = call_phases(df, red_threshold=0.5, green_threshold=2.0)
    assert fixed.attrs["thresholds"] == {"red": 0.5, "green": 2.0}
    assert set(fixed["phase"].astype(str)) == {"G1", "unlabeled"}  # nothing is green-high above 2
    frac = phase_fractions(called).set_index("phase")
    assert frac["count"].sum() == 64 and frac["fraction"].to_numpy() == pytest.approx([0.25] * 4)


def test_3d_nuclei_and_bad_input():
    rng = np.random.default_rng(2)
    labels = np.zeros((10, 40, 40), np.int32)
    red = rng.normal(10, 1, labels.shape)
    green = rng.normal(10, 1, labels.shape)
    for k, (phase, (cy, cx)) in enumerate(zip(PHASES, [(10, 10), (10, 30), (30, 10), (30, 30)]), start=1):
        zz, yy, xx = np.ogrid[:10, :40, :40]
        m = (zz - 5) ** 2 * 4 + (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        labels[m] = k
        red[m] += 100 * LEVELS[phase][0]
        green[m] += 100 * LEVELS[phase][1]
    df = call_phases(nucleus_intensities(labels, red, green, background=10.0), 0.5, 0.5)
    assert df["phase"].astype(str).tolist() == list(PHASES)
    assert {"centroid_z", "centroid_y", "centroid_x"} <= set(df.columns)
    assert df.loc[0, "centroid_z"] == pytest.approx(5.0)
    with pytest.raises(ConfigError, match="Otsu"):
        call_phases(df.iloc[:1])
    with pytest.raises(Exception, match="shape"):
        nucleus_intensities(labels, red[:5], green)


def test_radial_distribution_and_phase_accuracy():
    rng = np.random.default_rng(5)
    # G1 nuclei on an outer ring, S/G2/M in the core (centre 100, 100)
    rows = []
    for k in range(40):
        ang = rng.uniform(0, 2 * np.pi)
        rad, phase = (rng.uniform(60, 80), "G1") if k % 2 else (rng.uniform(0, 30), "S/G2/M")
        rows.append({"label": k + 1, "centroid_y": 100 + rad * np.sin(ang),
                     "centroid_x": 100 + rad * np.cos(ang), "phase": phase})
    truth = pd.DataFrame(rows)
    rd = radial_distribution(truth, centre=(100, 100), pixel_size=0.5, bins=[0, 20, 45])
    assert rd["n"].sum() == 40
    assert rd.loc[0, "fraction_S/G2/M"] == 1.0 and rd.loc[1, "fraction_G1"] == 1.0
    rel = radial_distribution(truth, centre=(100, 100), bins=2, relative=True)
    assert rel.loc[0, "fraction_S/G2/M"] == 1.0 and rel.loc[1, "fraction_G1"] == 1.0
    # predictions: centroids jittered by < 2 px, order shuffled, 4 calls wrong, 2 nuclei missed
    pred = truth.sample(frac=1, random_state=1).reset_index(drop=True)
    pred[["centroid_y", "centroid_x"]] += rng.uniform(-1.4, 1.4, (40, 2))
    wrong = pred.index[:4]
    pred.loc[wrong, "phase"] = "G1/S"
    pred = pred.drop(index=[10, 11])
    res = phase_accuracy(pred, truth, max_distance=3)
    assert res["n_matched"] == 38 and res["n_truth"] == 40 and res["n_pred"] == 38
    assert res["accuracy"] == pytest.approx(34 / 38)
    conf = res["confusion"]
    assert conf.loc[:, "G1/S"].sum() == 4 and conf.to_numpy().sum() == 38
    assert list(conf.index) == list(PHASES)
    by_label = phase_accuracy(pred, truth, match="label")
    assert by_label["accuracy"] == pytest.approx(34 / 38)


def test_exact_otsu_splits_in_the_middle_of_the_gap():
    assert otsu_exact([0.0, 0.1, 0.2, 0.8, 0.9, 1.0]) == pytest.approx(0.5)
    # unequal classes: the split still separates the clusters
    vals = np.r_[np.linspace(0.02, 0.06, 30), np.linspace(0.7, 1.0, 5)]
    assert 0.06 < otsu_exact(vals) < 0.7


def test_demo_fucci_stack_phases_recovered(demo_dir):
    import tifffile

    labels = tifffile.imread(demo_dir / "fucci3d/labels/fucci_00.tif")
    img = tifffile.imread(demo_dir / "fucci3d/images/fucci_00.tif")  # ZCYX: hoechst, red, green
    truth = pd.read_csv(demo_dir / "fucci3d/phases/fucci_00.csv")
    called = call_phases(nucleus_intensities(labels, img[:, 1], img[:, 2]))
    res = phase_accuracy(called, truth, match="label")
    assert res["n_matched"] == len(truth) == labels.max()
    assert res["accuracy"] == 1.0
    assert set(called.attrs["thresholds"]) == {"red", "green"}
