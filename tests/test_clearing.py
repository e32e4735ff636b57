"""Tests of opsef_core.science.clearing: depth normalisation, contrast metrics, per-depth segmentation."""

import numpy as np
import pytest
from skimage.draw import ellipsoid

from opsef_core.errors import AxesError
from opsef_core.science.clearing import (
    clearing_metrics,
    depth_profile,
    per_depth_segmentation,
    slice_contrast,
)


def test_bhattacharyya_cnr_identical_and_disjoint():
    rng = np.random.default_rng(3)
    values = rng.integers(10, 200, size=(40, 40)).astype(float)
    img = np.concatenate([values, values], axis=1)  # left half = right half
    sig = np.zeros(img.shape, bool)
    sig[:, :40] = True
    c = slice_contrast(img, sig, ~sig, i_max=255)
    assert c["cnr_bc"] == pytest.approx(0.0, abs=1e-12)
    assert c["cnr_fr"] == pytest.approx(0.0)
    disjoint = np.where(sig, 200.0, 50.0) + rng.integers(0, 20, img.shape)
    d = slice_contrast(disjoint, sig, ~sig, i_max=255)
    assert d["cnr_bc"] == pytest.approx(1.0)
    assert d["n_signal"] == 1600 and d["n_noise"] == 1600


def test_snr_and_fisher_ratio_by_hand():
    img = np.array([[10.0, 12.0, 14.0], [1.0, 2.0, 3.0]])
    sig = np.array([[True, True, True], [False, False, False]])
    c = slice_contrast(img, sig, ~sig, i_max=20.0)
    # signal mean 12, var 8/3; noise mean 2, var 2/3 (population variances)
    assert c["snr"] == pytest.approx(12 / np.sqrt(2 / 3))
    assert c["cnr_fr"] == pytest.approx(100 / (10 / 3))
    assert c["mean_norm"] == pytest.approx(np.mean([10, 12, 14, 1, 2, 3]) / 20)
    with pytest.raises(AxesError):
        slice_contrast(img, sig[:1], ~sig, i_max=20.0)


def test_depth_profile_on_a_ball():
    ball = ellipsoid(15, 15, 15).astype(float)  # 33 slices (incl. 1-voxel padding), centre slice 16
    stack = ball * 100 + 5
    prof = depth_profile(stack, pixel_size=(2.0, 0.5, 0.5))
    centre = stack.shape[0] // 2
    assert prof["centre_slice"].iloc[0] == centre
    assert prof.loc[centre, "percent_max_diameter"] == 100.0
    assert prof.loc[centre, "diameter_px"] == 31 and prof.loc[centre, "diameter"] == pytest.approx(15.5)
    assert prof.loc[0, "diameter_px"] == 0
    # percent falls symmetrically towards both ends, as sqrt(1 - (dz/r)^2) for a sphere
    for dz in (5, 10):
        assert prof.loc[centre - dz, "percent_max_diameter"] == prof.loc[centre + dz, "percent_max_diameter"]
        assert prof.loc[centre + dz, "percent_max_diameter"] == pytest.approx(
            100 * np.sqrt(1 - (dz / 15.5) ** 2), abs=100 / 31 * 1.5)
    assert prof.loc[centre + 3, "depth_from_centre_um"] == pytest.approx(6.0)
    same = depth_profile(stack * 0, mask=ball > 0)
    assert same["centre_slice"].iloc[0] == centre


def test_clearing_metrics_contrast_falls_with_depth():
    rng = np.random.default_rng(0)
    nz, ny, nx = 12, 64, 64
    nuclei = np.zeros((nz, ny, nx), bool)
    for cy in range(8, 64, 16):
        for cx in range(8, 64, 16):
            yy, xx = np.ogrid[:ny, :nx]
            nuclei[:, (yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = True
    attenuation = np.exp(-0.2 * np.arange(nz))[:, None, None]  # light lost with depth
    stack = (200 * nuclei * attenuation + 20 + rng.normal(0, 5, nuclei.shape)).clip(0)
    df = clearing_metrics(stack, nuclei, patch_size=48)
    assert len(df) == nz and (df["signal_source"] == "truth").all()
    assert (df["patch_y1"] - df["patch_y0"] == 48).all()
    for col in ("snr", "cnr_fr", "cnr_bc", "mean_norm"):
        assert df[col].iloc[0] > df[col].iloc[-1], col
    assert np.all(np.diff(df["cnr_fr"]) < 0)
    assert df["cnr_bc"].iloc[0] == pytest.approx(1.0, abs=1e-6)  # no overlap at the surface
    auto = clearing_metrics(stack)  # no truth: Otsu per slice
    assert (auto["signal_source"] == "otsu").all()
    assert abs(auto["snr"].iloc[0] - df["snr"].iloc[0]) / df["snr"].iloc[0] < 0.2
    assert {"percent_max_diameter", "centre_slice"} <= set(df.columns)
    # mean_norm is the patch's mean, mean_norm_slice the whole slice's, both over the stack maximum
    z, (y0, y1, x0, x1) = 3, df.loc[3, ["patch_y0", "patch_y1", "patch_x0", "patch_x1"]]
    assert df.loc[z, "mean_norm"] == pytest.approx(stack[z, y0:y1, x0:x1].mean() / stack.max())
    assert df.loc[z, "mean_norm_slice"] == pytest.approx(stack[z].mean() / stack.max())
    np.testing.assert_allclose(auto["mean_norm"], auto["mean_norm_slice"])  # no patch: the same


def test_per_depth_segmentation_counts_f1_and_aji():
    gt = np.zeros((3, 20, 20), np.int32)
    gt[:, 2:8, 2:8] = 1
    gt[:, 10:16, 10:16] = 2
    pred = gt.copy()
    pred[1, 10:16, 10:16] = 0  # slice 1 misses object 2
    pred[2, 2:8, 2:12] = 5  # slice 2: object 1 predicted 60 px wide (36 true)
    df = per_depth_segmentation(gt, pred)
    assert df["pixel_f1"].tolist()[0] == 1.0 and df["aji"].iloc[0] == pytest.approx(1.0)
    assert df.loc[1, "n_true"] == 2 and df.loc[1, "n_pred"] == 1
    assert df.loc[1, "pixel_f1"] == pytest.approx(2 * 36 / (72 + 36))
    assert df.loc[1, "aji"] == pytest.approx(36 / (36 + 36))  # missed object adds its area
    assert df.loc[2, "aji"] == pytest.approx((36 + 36) / (60 + 36))
    with pytest.raises(AxesError):
        per_depth_segmentation(gt, pred[:2])


def test_demo_cleared_spheroid_keeps_contrast_at_depth(demo_dir):
    import tifffile

    out = {}
    for cond in ("cleared", "noncleared"):
        img = tifffile.imread(demo_dir / f"spheroid_clearing/{cond}/images/spheroid_00.tif")
        lab = tifffile.imread(demo_dir / f"spheroid_clearing/{cond}/labels/spheroid_00.tif")
        out[cond] = clearing_metrics(img, lab, patch_size=64, pixel_size=(1.0, 0.5, 0.5)).set_index("z")
    # deep in the stack the non-cleared spheroid's nuclei blend into the background
    for z in (21, 24):
        assert out["cleared"].loc[z, "cnr_bc"] > out["noncleared"].loc[z, "cnr_bc"] + 0.3
        assert out["cleared"].loc[z, "cnr_fr"] > 2 * out["noncleared"].loc[z, "cnr_fr"]
    # and its thresholded x-z view is cut short, so its centre slice appears shallower
    assert out["noncleared"]["centre_slice"].iloc[0] < out["cleared"]["centre_slice"].iloc[0]
