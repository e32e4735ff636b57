"""Tests of opsef_core.postprocess on crafted label images with known areas and shapes."""

import numpy as np
import pytest
from skimage.draw import disk

from opsef_core.errors import AxesError, ConfigError, InputFileError
from opsef_core.image import Image
from opsef_core.measure import measure_objects
from opsef_core.postprocess import (
    PostprocessConfig,
    apply_postprocess,
    class_labels,
    classify_by_mask,
    fill_holes,
    filter_objects,
    mask_from_channel,
    relabel,
    remove_border_objects,
    remove_small,
)

DISC, SQUARE, BAR, DOT, EDGE, RING = 1, 2, 3, 4, 5, 6


@pytest.fixture
def crafted():
    """Disc r=12, square 24x24, bar 4x60, 3x3 dot, 10x20 border rectangle, ring (r 6..15)."""
    lab = np.zeros((128, 160), np.int32)
    lab[disk((30, 30), 12)] = DISC
    lab[60:84, 10:34] = SQUARE
    lab[100:104, 40:100] = BAR
    lab[20:23, 80:83] = DOT
    lab[0:10, 120:140] = EDGE
    lab[disk((60, 100), 15)] = RING
    lab[disk((60, 100), 6)] = 0
    intensity = np.where(lab == SQUARE, 200.0, 0.0) + np.where(lab == DISC, 120.0, 0.0) + 10.0
    img = Image.from_array(intensity, "YX", pixel_size={"Y": 1.0, "X": 1.0})
    return lab, img


def _ids(labels):
    return set(np.unique(labels[labels > 0]).tolist())


def test_filters_keep_exactly_the_expected_objects(crafted):
    lab, img = crafted
    raw = lab.copy()
    out, kept = filter_objects(lab, {"area": (50, None)}, image=img)
    assert _ids(out) == {DISC, SQUARE, BAR, EDGE, RING}  # the 9-px dot goes
    assert set(kept["label"]) == _ids(out)
    # Crofton circularity: disc ~1.0; axis-aligned square ~0.90 (Crofton under-estimates straight
    # axis-aligned edges by ~6 %, so not pi/4); 2:1 border rectangle ~0.81; ring ~0.44; bar ~0.21
    out, _ = filter_objects(lab, {"area": (50, None), "circularity": (0.95, None)}, image=img)
    assert _ids(out) == {DISC}
    out, _ = filter_objects(lab, {"circularity": (0.85, 0.95), "area": (100, None)}, image=img)
    assert _ids(out) == {SQUARE}
    out, _ = filter_objects(lab, {"circularity": (None, 0.5)}, image=img)
    assert _ids(out) == {BAR, RING}
    out, _ = filter_objects(lab, {"eccentricity": (0.99, None)}, image=img)
    assert _ids(out) == {BAR}
    out, _ = filter_objects(lab, {"intensity_mean": (100, 150)}, image=img)
    assert _ids(out) == {DISC}
    out, _ = filter_objects(lab, {"solidity": (None, 0.95)}, image=img)
    assert _ids(out) == {RING}
    # filtered labels keep their values and pixels; raw labels untouched
    assert np.array_equal(out[out > 0], raw[raw == RING])
    assert np.array_equal(lab, raw)
    # a precomputed table is used as given, and the old positional order still works
    table = measure_objects(lab, img)
    out2, _ = filter_objects(lab, img, {"solidity": (None, 0.95)})
    assert _ids(out2) == {RING}
    out3, _ = filter_objects(lab, {"area": (None, 10)}, table=table)
    assert _ids(out3) == {DOT}
    with pytest.raises(ConfigError, match="unknown measurement 'volume'"):
        filter_objects(lab, {"volume": (1, 2)}, image=img)
    with pytest.raises(ConfigError, match="min"):
        filter_objects(lab, {"area": (10, 1)}, image=img)


def test_border_holes_size_relabel(crafted):
    lab, _ = crafted
    assert _ids(remove_border_objects(lab)) == {DISC, SQUARE, BAR, DOT, RING}
    filled = fill_holes(lab)
    ring_full = np.zeros_like(lab, bool)
    ring_full[disk((60, 100), 15)] = True
    assert np.array_equal(filled == RING, ring_full)
    # an object nested in a hole is kept, not overwritten
    nested = lab.copy()
    nested[59:62, 99:102] = 42
    filled2 = fill_holes(nested)
    assert np.count_nonzero(filled2 == 42) == 9
    assert np.count_nonzero(filled2 == RING) == ring_full.sum() - 9
    assert _ids(remove_small(lab, 10)) == _ids(lab) - {DOT}
    assert _ids(remove_small(lab, 9)) == _ids(lab)
    r = relabel(np.where(lab == SQUARE, 0, lab) * 10)
    assert _ids(r) == {1, 2, 3, 4, 5}
    # 3D: YX borders only vs all faces
    lab3 = np.zeros((6, 20, 20), np.int32)
    lab3[0:3, 5:9, 5:9] = 1  # touches the first z slice only
    lab3[2:4, 0:3, 10:14] = 2  # touches the y border
    lab3[2:4, 10:14, 10:14] = 3
    assert _ids(remove_border_objects(lab3, axes="YX")) == {1, 3}
    assert _ids(remove_border_objects(lab3, axes="ZYX")) == {3}
    with pytest.raises(AxesError):
        remove_border_objects(lab, axes="ZYX")


def test_centroid_and_majority_rules_differ_on_a_c_shape():
    lab = np.zeros((80, 80), np.int32)
    # a C shape: annulus of radius 10..18 around (40, 40) with its right side cut away
    yy, xx = np.mgrid[:80, :80]
    r = np.hypot(yy - 40, xx - 40)
    lab[(r >= 10) & (r <= 18) & (xx < 50)] = 1
    lab[5:15, 60:70] = 2  # a square wholly inside the mask
    lab[60:70, 60:70] = 3  # a square wholly outside
    mask = np.zeros((80, 80), bool)
    mask[30:50, 30:50] = True  # covers the C's empty centre (its centroid) and a little of the C
    mask[0:20, 55:75] = True
    frac_in = mask[lab == 1].mean()
    assert frac_in < 0.5
    cen = classify_by_mask(lab, mask, rule="centroid").set_index("label")
    maj = classify_by_mask(lab, mask, rule="majority").set_index("label")
    assert cen.loc[1, "class"] == "inside" and maj.loc[1, "class"] == "outside"
    assert maj.loc[1, "fraction"] == pytest.approx(1 - frac_in)
    for t in (cen, maj):
        assert t.loc[2, "class"] == "inside" and t.loc[3, "class"] == "outside"
    parts = class_labels(lab, maj.reset_index())
    assert _ids(parts["inside"]) == {2} and _ids(parts["outside"]) == {1, 3}
    with pytest.raises(ConfigError):
        classify_by_mask(lab, mask.astype(int) * 2)


def test_mask_from_channel_recovers_a_blob():
    rng = np.random.default_rng(1)
    truth = np.zeros((96, 96), bool)
    truth[disk((48, 48), 25)] = True
    chan = 100 * truth + rng.normal(20, 8, truth.shape)
    chan[10:12, 10:12] = 300  # a tiny bright speck removed by the opening
    m = mask_from_channel(chan, sigma=1, opening=2)
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.95 and not m[10, 10]
    smaller = mask_from_channel(chan, sigma=1, factor=1.8)
    assert smaller.sum() < m.sum()
    assert mask_from_channel(chan, method=400.0).sum() == 0
    with pytest.raises(ConfigError):
        mask_from_channel(chan, method="magic")


def test_apply_postprocess_from_config(crafted):
    lab, _ = crafted
    raw = lab.copy()
    marker = np.zeros(lab.shape)
    marker[:64, :] = 100.0  # the upper half is "inside"
    img = Image.from_array(np.stack([np.ones(lab.shape), marker]), "CYX", pixel_size={"Y": 0.5, "X": 0.5},
                           channel_names=("nuclei", "marker"))
    cfg = {"min_size": 10, "remove_border": True, "fill_holes": True, "ranges": {"area": [20, None]},
           "class_mask": {"channel": "marker", "rule": "majority", "sigma": 0}}
    out, table = apply_postprocess(lab, img, cfg)
    assert np.array_equal(lab, raw)
    # dot: < 10 px; edge: border; area in µm² (0.25 per px): bar 240 px = 60 µm² kept, ring filled
    assert _ids(out) == {DISC, SQUARE, BAR, RING}
    assert set(table["label"]) == _ids(out)
    cls = table.set_index("label")["class"]
    assert cls[DISC] == "inside" and cls[BAR] == "outside" and cls[RING] == "inside"
    assert cls[SQUARE] == "outside"  # rows 60..83: only 4 of 24 rows in the marker
    assert table.set_index("label").loc[SQUARE, "class_fraction"] == pytest.approx(20 / 24)
    with pytest.raises(ConfigError, match="unknown"):
        apply_postprocess(lab, img, {"min_sise": 3})
    with pytest.raises(ConfigError, match="exactly one"):
        apply_postprocess(lab, img, {"class_mask": {"rule": "centroid"}})
    cfg_file = PostprocessConfig(class_mask={"file": "/nonexistent/mask.tif"})
    with pytest.raises(InputFileError, match="mask.tif"):
        apply_postprocess(lab, img, cfg_file)


def test_class_mask_from_file_and_3d_holes(tmp_path, crafted):
    import tifffile

    lab, img = crafted
    mask = np.zeros(lab.shape, np.uint8)
    mask[:, :50] = 255  # an ImageJ-style 0/255 mask: left part "inside"
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, mask)
    out, table = apply_postprocess(lab, img, {"class_mask": {"file": str(path), "rule": "centroid",
                                                             "class_names": ["out", "in"]}})
    assert np.array_equal(out, lab)
    cls = table.set_index("label")["class"]
    assert cls[DISC] == "in" and cls[SQUARE] == "in" and cls[RING] == "out" and cls[BAR] == "out"
    tifffile.imwrite(path, mask[:-1])
    with pytest.raises(InputFileError, match="shape"):
        apply_postprocess(lab, img, {"class_mask": {"file": str(path)}})
    # a hollow 3D cube is filled, its cavity only
    cube = np.zeros((9, 9, 9), np.int32)
    cube[1:8, 1:8, 1:8] = 3
    cube[3:6, 3:6, 3:6] = 0
    filled = fill_holes(cube)
    assert np.count_nonzero(filled == 3) == 7**3 and np.count_nonzero(cube == 3) == 7**3 - 27


def test_filters_on_3d_properties_in_physical_units():
    """Volume (µm³, anisotropic voxels) and sphericity ranges on a ball and a flat slab."""
    from opsef_core.image import Image
    from opsef_core.postprocess import filter_objects

    zz, yy, xx = np.mgrid[:20, :40, :40]
    labels = np.zeros((20, 40, 40), np.int32)
    # a ball of radius 6 µm in voxels of 1 x 0.5 x 0.5 µm: 6 voxels in Z, 12 in Y and X
    labels[((zz - 10) / 6.0) ** 2 + ((yy - 14) / 12.0) ** 2 + ((xx - 14) / 12.0) ** 2 <= 1] = 1
    labels[9:11, 30:38, 2:38] = 2  # slab 2 x 4 x 18 µm: volume 144 µm³, far from a sphere
    image = Image.from_array(np.ones(labels.shape, np.uint16), "ZYX", pixel_size={"Z": 1.0, "Y": 0.5, "X": 0.5})
    ball_volume = 4 / 3 * np.pi * 6.0**3  # 904.8 µm³
    kept, table = filter_objects(labels, {"sphericity": (0.8, None)}, image=image)
    assert set(np.unique(kept)) == {0, 1}
    assert table.loc[table["label"] == 1, "volume"].iloc[0] == pytest.approx(ball_volume, rel=0.05)
    kept, _ = filter_objects(labels, {"volume": (100.0, 200.0)}, image=image)
    assert set(np.unique(kept)) == {0, 2}
    kept, _ = filter_objects(labels, {"volume": (None, 50.0)}, image=image)
    assert not kept.any()
