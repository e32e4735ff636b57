"""Library code behind notebooks/spheroid_clearing (opsef_core.workflows.clearing)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core.errors import ConfigError, EmptyFolderError, InputFileError
from opsef_core.image import Image
from opsef_core.workflows import clearing as wc

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_data" / "spheroid_clearing"


def _disc_stack(nz=6, ny=48, nx=48, seed=0, dim_with_depth=False):
    """Stack of bright discs (radius 4) on a noisy background; returns image and labels."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((nz, ny, nx), np.int32)
    yy, xx = np.indices((ny, nx))
    k = 0
    for z in range(nz):
        for cy in (10, 24, 38):
            for cx in (10, 24, 38):
                if rng.random() < 0.75:
                    k += 1
                    lab[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = k
    gain = np.exp(-np.arange(nz) / 3.0)[:, None, None] if dim_with_depth else 1.0
    img = 100 + (lab > 0) * 800 * gain + rng.normal(0, 10 if not dim_with_depth else 40, lab.shape)
    return np.clip(img, 0, None).astype(np.uint16), lab


def _write_condition(root, cond, n=2, **kw):
    for sub in ("images", "labels"):
        (root / cond / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = _disc_stack(seed=i, **kw)
        tifffile.imwrite(root / cond / "images" / f"s{i}.tif", img, imagej=True, metadata={"axes": "ZYX"})
        tifffile.imwrite(root / cond / "labels" / f"s{i}.tif", lab.astype(np.uint16), imagej=True,
                         metadata={"axes": "ZYX"})


@pytest.fixture(scope="module")
def demo():
    return wc.load_conditions(DEMO, max_images=2)


def test_load_conditions_demo(demo):
    assert list(demo) == ["cleared", "noncleared"]
    for entries in demo.values():
        assert [e["name"] for e in entries] == ["spheroid_00", "spheroid_01"]
        assert entries[0]["image"].spatial().shape == entries[0]["labels"].shape == (32, 128, 128)


def test_load_conditions_errors_name_the_folder(tmp_path):
    with pytest.raises(EmptyFolderError, match="cleared"):
        wc.load_conditions(tmp_path, ["cleared"])
    _write_condition(tmp_path, "a", n=1)
    tifffile.imwrite(tmp_path / "a" / "labels" / "s0.tif", np.zeros((3, 8, 8), np.uint16), imagej=True,
                     metadata={"axes": "ZYX"})
    with pytest.raises(InputFileError, match="s0.tif"):
        wc.load_conditions(tmp_path, ["a"])


def test_clearing_profiles_depth_axis_and_conditions_differ(demo):
    prof = wc.clearing_profiles(demo, patch_size=64)
    assert len(prof) == 4 * 32
    for (_, _), g in prof.groupby(["condition", "image"]):
        centre = int(g["centre_slice"].iloc[0])
        assert g.loc[g["z"] == centre, "depth_pct"].item() == 100.0
        # top half maps to 0..100, bottom half to 100..200 (percent of the maximum diameter mirrored)
        assert g.loc[g["z"] <= centre, "depth_pct"].between(0, 100).all()
        assert g.loc[g["z"] > centre, "depth_pct"].between(100, 200).all()
        bottom = g[g["z"] > centre]
        assert np.allclose(bottom["depth_pct"], 200 - bottom["percent_max_diameter"])
        assert set(g["side"]) == {"top", "bottom"}
    # the cleared spheroid keeps its nuclei/background contrast (Fisher ratio) in the 70-100 % band
    for side in ("top", "bottom", "both"):
        band = wc.band_comparison(prof, band=(70, 100), side=side).set_index("condition")
        assert band.loc["cleared", "cnr_fr_mean"] > 1.1 * band.loc["noncleared", "cnr_fr_mean"], side


def test_band_comparison_by_hand():
    df = pd.DataFrame({"condition": ["a"] * 4 + ["b"] * 2, "percent_max_diameter": [50, 70, 90, 100, 80, 95],
                       "side": ["top", "top", "top", "bottom", "top", "top"],
                       "snr": [9.0, 1.0, 3.0, 100.0, 2.0, np.inf]})
    out = wc.band_comparison(df, band=(70, 100), side="top", metrics=("snr",)).set_index("condition")
    assert out.loc["a", "n_slices"] == 2 and out.loc["a", "snr_mean"] == 2.0
    assert out.loc["a", "snr_sd"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert out.loc["b", "snr_mean"] == 2.0  # inf ignored
    both = wc.band_comparison(df, band=(70, 100), side="both", metrics=("snr",)).set_index("condition")
    assert both.loc["a", "n_slices"] == 3
    with pytest.raises(ConfigError):
        wc.band_comparison(df, side="middle")


def test_segment_stack_2d_counts_and_unique_ids():
    img, lab = _disc_stack()
    image = Image.from_array(img, "ZYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5})
    pred = wc.segment_stack(image, "classical", {"sigma": 1.0, "min_size": 5}, mode="2d")
    assert pred.shape == lab.shape
    for z in range(lab.shape[0]):
        assert np.unique(pred[z][pred[z] > 0]).size == np.unique(lab[z][lab[z] > 0]).size
    ids = [set(np.unique(pred[z][pred[z] > 0])) for z in range(lab.shape[0])]
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])  # ids never reused across slices


def test_segmentation_along_depth_and_skipped_model(tmp_path):
    _write_condition(tmp_path, "c", n=1)
    data = wc.load_conditions(tmp_path, ["c"])
    prof = wc.clearing_profiles(data, patch_size=None)
    models = {"classical": {"backend": "classical", "params": {"sigma": 1.0, "min_size": 5}},
              "gone": {"backend": "unet", "params": {"model": "no_such_model_xyz"}}}
    seg = wc.segmentation_along_depth(data, models, prof)
    assert seg.attrs["skipped"].keys() == {"gone"}
    assert len(seg) == 6 and set(seg["model"]) == {"classical"}
    assert (seg["n_pred"] == seg["n_true"]).all()
    assert seg["pixel_f1"].min() > 0.9 and seg["aji"].min() > 0.8
    assert seg["depth_pct"].notna().all()
    with pytest.raises(ConfigError, match="mode"):
        wc.segmentation_along_depth(data, {"x": {"backend": "classical", "mode": "4d"}})


@pytest.mark.slow
def test_transfer_matrix_trains_and_scores_every_pair(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _write_condition(tmp_path / "d", "bright", n=2)
    _write_condition(tmp_path / "d", "dim", n=2, dim_with_depth=True)
    data = wc.load_conditions(tmp_path / "d", ["bright", "dim"])
    trained = wc.train_condition_unets(data, tmp_path / "models", train_images=1, epochs=3, steps_per_epoch=3,
                                       patch_size=32, batch_size=4, filters=4, depth=2, val_fraction=0.2,
                                       early_stopping_patience=3)
    assert list(trained["condition"]) == ["bright", "dim"]
    for d in trained["model_dir"]:
        assert (Path(d) / "training.json").is_file()
    m = wc.transfer_matrix(data, trained, train_images=1)
    assert len(m) == 4 and set(zip(m["train"], m["test"])) == {(a, b) for a in ("bright", "dim")
                                                             for b in ("bright", "dim")}
    assert (m["n_slices"] == 6).all()
    for c in ("pixel_f1", "aji", "f1@0.5"):
        assert m[c].between(0, 1).all()
    fig = wc.plot_transfer(m)
    fig.savefig(tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
