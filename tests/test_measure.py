"""Tests of opsef_core.measure: per-object measurements in physical units and summaries."""

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, ellipse, ellipsoid

from opsef_core.errors import AxesError, ConfigError, InputFileError
from opsef_core.image import Image
from opsef_core.measure import measure_objects, shape_columns, summarise


@pytest.fixture
def scene2d():
    """Disc r=20 px, rectangle 20x40 px, small square 5x5 px, plus two random channels."""
    lab = np.zeros((120, 140), np.uint16)
    lab[disk((35, 35), 20)] = 3
    lab[70:90, 60:100] = 7
    lab[10:15, 120:125] = 9
    rng = np.random.default_rng(0)
    red = rng.normal(100, 10, lab.shape) + 50 * (lab == 3)
    green = rng.normal(50, 5, lab.shape) + 20 * (lab == 7)
    img = Image.from_array(np.stack([red, green]), "CYX", pixel_size={"Y": 0.5, "X": 0.5},
                           channel_names=("red", "green"), name="scene")
    return lab, img


def test_2d_geometry_and_intensities_against_numpy(scene2d):
    lab, img = scene2d
    df = measure_objects(lab, img, extra={"image": "scene", "pipeline": "raw"},
                         channel_ratios=[("red", "green")])
    assert df["label"].tolist() == [3, 7, 9]
    assert df["image"].eq("scene").all() and df["pipeline"].eq("raw").all()
    red, green = img.spatial(c="red"), img.spatial(c="green")
    for _, row in df.iterrows():
        m = lab == row["label"]
        assert row["area_px"] == m.sum()
        assert row["area"] == pytest.approx(m.sum() * 0.25)
        cy, cx = np.argwhere(m).mean(axis=0)
        assert row["centroid_y_px"] == pytest.approx(cy) and row["centroid_x"] == pytest.approx(cx * 0.5)
        ys, xs = np.nonzero(m)
        assert (row["bbox_min_y"], row["bbox_max_y"], row["bbox_min_x"], row["bbox_max_x"]) == (
            ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        for name, ch in (("red", red), ("green", green)):
            v = ch[m]
            assert row[f"{name}_mean"] == pytest.approx(v.mean())
            assert row[f"{name}_total"] == pytest.approx(v.sum())
            assert row[f"{name}_min"] == pytest.approx(v.min())
            assert row[f"{name}_max"] == pytest.approx(v.max())
            assert row[f"{name}_std"] == pytest.approx(v.std())
        assert row["ratio_red_green"] == pytest.approx(red[m].mean() / green[m].mean())
    disc = df.set_index("label").loc[3]
    r_um = 20 * 0.5
    assert disc["perimeter"] == pytest.approx(2 * np.pi * r_um, rel=0.02)
    assert disc["circularity"] == pytest.approx(1.0, abs=0.03)
    assert disc["equivalent_diameter"] == pytest.approx(2 * r_um, rel=0.01)
    assert disc["eccentricity"] < 0.1 and disc["solidity"] > 0.97
    rect = df.set_index("label").loc[7]
    assert rect["solidity"] == pytest.approx(1.0)
    assert rect["major_axis_length"] / rect["minor_axis_length"] == pytest.approx(2.0, rel=0.02)
    assert 0.65 < rect["circularity"] < 0.8  # ideal 2:1 rectangle: 4*pi*2/36 = 0.70


def test_anisotropic_2d_and_3d_physical_units():
    # a circle of radius 20 µm drawn on 1.0 x 0.5 µm pixels (an ellipse in pixels)
    lab = np.zeros((60, 100), np.int32)
    lab[ellipse(30, 50, 20, 40)] = 1
    df = measure_objects(lab, pixel_size={"Y": 1.0, "X": 0.5})
    assert df.loc[0, "area"] == pytest.approx(np.pi * 400, rel=0.01)
    assert df.loc[0, "perimeter"] == pytest.approx(2 * np.pi * 20, rel=0.02)
    assert df.loc[0, "circularity"] == pytest.approx(1.0, abs=0.03)
    assert df.loc[0, "eccentricity"] < 0.15
    # a sphere of radius 10 µm on 2 x 0.5 x 0.5 µm voxels
    ball = ellipsoid(10, 10, 10, spacing=(2.0, 0.5, 0.5)).astype(np.uint8) * 5
    img = Image.from_array(ball.astype(np.float32), "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5})
    df3 = measure_objects(ball, img)
    assert set(shape_columns(3)) <= set(df3.columns) and "area" not in df3.columns
    row = df3.iloc[0]
    assert row["label"] == 5
    assert row["volume"] == pytest.approx(np.count_nonzero(ball) * 0.5, rel=1e-9)
    assert row["volume"] == pytest.approx(4 / 3 * np.pi * 1000, rel=0.05)
    assert row["surface_area"] == pytest.approx(4 * np.pi * 100, rel=0.06)
    assert 0.85 < row["sphericity"] <= 1.05
    assert row["major_axis_length"] == pytest.approx(row["minor_axis_length"], rel=0.1)
    assert row["intensity_mean"] == pytest.approx(5.0)


def test_empty_labels_give_all_columns_and_round_trip_csv(tmp_path, scene2d):
    _, img = scene2d
    empty = np.zeros(img.spatial().shape, np.uint16)
    df = measure_objects(empty, img, extra={"image": "scene", "segmenter": "x"},
                         channel_ratios=[("red", "green")])
    assert len(df) == 0
    full = measure_objects(scene2d[0], img, extra={"image": "scene", "segmenter": "x"},
                           channel_ratios=[("red", "green")])
    assert list(df.columns) == list(full.columns)
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    assert list(pd.read_csv(path).columns) == list(full.columns)
    s = summarise(df)
    assert len(s) == 0 and "n_objects" in s.columns


def test_bad_input_raises_our_errors(scene2d):
    lab, img = scene2d
    with pytest.raises(AxesError, match="does not match"):
        measure_objects(lab[:-1], img)
    with pytest.raises(InputFileError, match="integer"):
        measure_objects(lab + 0.5, img)
    with pytest.raises(AxesError, match="blue"):
        measure_objects(lab, img, channel_ratios=[("red", "blue")])
    with pytest.raises(AxesError, match="dimensions"):
        measure_objects(np.zeros(5, int))


def test_summarise_counts_density_and_many_objects():
    # a 40 x 50 grid of 4x4 squares: 2000 objects
    lab = np.zeros((400, 500), np.int32)
    k = 0
    for i in range(40):
        for j in range(50):
            k += 1
            lab[i * 10: i * 10 + 4, j * 10: j * 10 + 4] = k
    a = measure_objects(lab, pixel_size=0.5, extra={"image": "a"})
    b = measure_objects(lab[:200], pixel_size=0.5, extra={"image": "b"})
    assert len(a) == 2000 and np.all(a["area"] == 4.0)
    s = summarise(pd.concat([a, b]), image_area={"a": 200 * 250.0, "b": 100 * 250.0})
    s = s.set_index("image")
    assert s.loc["a", "n_objects"] == 2000 and s.loc["b", "n_objects"] == 1000
    assert s.loc["a", "density"] == pytest.approx(2000 / (200 * 250e-6))
    assert s.loc["b", "median_area"] == 4.0
    with pytest.raises(ConfigError):
        summarise(a, image_area={"zzz": 1.0})


def test_vectorised_axes_match_regionprops():
    from skimage.measure import regionprops_table

    lab = np.zeros((100, 120), np.int32)
    lab[ellipse(40, 50, 10, 30, rotation=0.5)] = 1
    lab[80:90, 10:15] = 2
    lab[5, 5] = 3
    for sp in ((1.0, 1.0), (0.5, 0.5), (1.0, 0.4)):
        ours = measure_objects(lab, pixel_size=sp)
        ref = regionprops_table(lab, spacing=sp, properties=["axis_major_length", "axis_minor_length"])
        assert ours["major_axis_length"].to_numpy() == pytest.approx(ref["axis_major_length"])
        assert ours["minor_axis_length"].to_numpy() == pytest.approx(ref["axis_minor_length"])
    ref = regionprops_table(lab, properties=["eccentricity"])
    assert measure_objects(lab)["eccentricity"].to_numpy() == pytest.approx(ref["eccentricity"])
    lab3 = np.zeros((20, 30, 30), np.int32)
    lab3[:11, :15, :21] = ellipsoid(4, 6, 9)[:11, :15, :21]
    lab3[15:18, 20:22, 20:29] = 2
    ours = measure_objects(lab3, pixel_size=(2.0, 0.5, 0.5))
    ref = regionprops_table(lab3, spacing=(2.0, 0.5, 0.5),
                            properties=["axis_major_length", "axis_minor_length"])
    assert ours["major_axis_length"].to_numpy() == pytest.approx(ref["axis_major_length"])
    assert ours["minor_axis_length"].to_numpy() == pytest.approx(ref["axis_minor_length"])
