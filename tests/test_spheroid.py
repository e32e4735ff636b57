"""Tests of opsef_core.science.spheroid: single-spheroid readouts and growth tables."""

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, ellipse

from opsef_core.errors import AxesError, ConfigError
from opsef_core.science.spheroid import growth_table, largest_object, readouts


@pytest.mark.parametrize("radius_px, pixel_size", [(40, 0.5), (25, 1.3)])
def test_digital_disc_readouts(radius_px, pixel_size):
    m = np.zeros((2 * radius_px + 20,) * 2, bool)
    m[disk((radius_px + 10, radius_px + 10), radius_px)] = True
    r = readouts(m, pixel_size)
    d_true = 2 * radius_px * pixel_size
    assert r["area"] == pytest.approx(m.sum() * pixel_size**2)
    assert r["diameter"] == pytest.approx(d_true, rel=0.01)
    assert r["diameter_feret"] == pytest.approx(d_true, rel=0.02)
    assert r["circularity"] == pytest.approx(1.0, abs=0.03)
    assert r["perimeter"] == pytest.approx(np.pi * d_true, rel=0.02)
    assert r["volume"] == pytest.approx(np.pi * r["diameter"] ** 3 / 6, rel=1e-12)
    feret = readouts(m, {"Y": pixel_size, "X": pixel_size}, diameter="feret")
    assert feret["diameter"] == r["diameter_feret"]
    assert feret["volume"] == pytest.approx(np.pi * r["diameter_feret"] ** 3 / 6)


def test_ellipse_and_anisotropic_pixels():
    m = np.zeros((120, 120), bool)
    m[ellipse(60, 60, 20, 50)] = True  # 2.5:1 ellipse: circularity ~0.76
    r = readouts(m, 1.0)
    a, b = 50, 20
    ramanujan = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    assert r["perimeter"] == pytest.approx(ramanujan, rel=0.02)
    assert r["circularity"] == pytest.approx(4 * np.pi * np.pi * a * b / ramanujan**2, rel=0.03)
    # a 20 µm radius circle on 1.0 x 0.5 µm pixels
    m2 = np.zeros((60, 100), bool)
    m2[ellipse(30, 50, 20, 40)] = True
    r2 = readouts(m2, (1.0, 0.5))
    assert r2["diameter"] == pytest.approx(40, rel=0.01)
    assert r2["circularity"] == pytest.approx(1.0, abs=0.03)
    with pytest.raises(AxesError):
        readouts(np.zeros((3, 4, 5)), 1.0)
    with pytest.raises(ConfigError):
        readouts(m, 1.0, diameter="caliper")


def test_largest_object_counts_debris():
    lab = np.zeros((100, 100), np.int32)
    lab[disk((50, 50), 30)] = 4
    lab[2:5, 2:5] = 1
    lab[90:95, 90:95] = 7
    mask, n = largest_object(lab)
    assert n == 3 and np.array_equal(mask, lab == 4)
    mask_b, n_b = largest_object(lab > 0)  # a binary mask is split into components
    assert n_b == 3 and np.array_equal(mask_b, lab == 4)
    empty, n0 = largest_object(np.zeros((10, 10), int))
    assert n0 == 0 and not empty.any()
    r = readouts(empty, 1.0)
    assert r["area"] == 0 and np.isnan(r["circularity"])


def test_growth_table_recovers_exponential_rate():
    t = np.array([0, 24, 48, 72.0])
    rows = []
    for well, k in (("A1", 0.02), ("B1", 0.01)):
        v0 = 4e6
        for ti in t:
            v = v0 * np.exp(k * ti)
            d = (6 * v / np.pi) ** (1 / 3)
            rows.append({"well": well, "time": ti, "diameter": d, "volume": v, "area": np.pi * d**2 / 4})
    df = pd.DataFrame(rows).sample(frac=1, random_state=0)  # shuffled input
    g = growth_table(df, by="well")
    a1 = g[g["well"] == "A1"]
    assert a1["time"].tolist() == list(t)
    assert a1["volume_rel"].to_numpy() == pytest.approx(np.exp(0.02 * t))
    assert a1["diameter_rel"].to_numpy() == pytest.approx(np.exp(0.02 * t / 3))
    assert np.isnan(a1["volume_growth_rate"].iloc[0])
    assert a1["volume_growth_rate"].iloc[1:].to_numpy() == pytest.approx(0.02)
    assert g[g["well"] == "B1"]["volume_doubling_time"].iloc[1:].to_numpy() == pytest.approx(np.log(2) / 0.01)
    with pytest.raises(ConfigError):
        growth_table(df.drop(columns="time"))


def test_demo_brightfield_spheroid_growth(demo_dir):
    import tifffile

    rows = []
    for t in range(6):
        lab = tifffile.imread(demo_dir / f"debris_brightfield/labels/bf_t{t:02d}.tif")
        mask, n = largest_object(lab)
        assert n == 1
        rows.append({"time": 24.0 * t, **readouts(mask, 2.0)})
    g = growth_table(pd.DataFrame(rows))
    assert np.all(np.diff(g["diameter"]) > 0) and np.all(g["volume_growth_rate"].iloc[1:] > 0)
    assert g["area_rel"].iloc[-1] == pytest.approx(rows[-1]["area"] / rows[0]["area"])
    assert np.all(g["circularity"].between(0.8, 1.05))
