"""Library code behind notebooks/spheroid_clearing (opsef_core.workflows.clearing)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core.errors import ConfigError, EmptyFolderError, InputFileError
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


def _run_labels(run_dir):
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary["status"] == "done").all(), summary[["segmenter", "error"]]
    return {(r.image, r.segmenter): tifffile.imread(run_dir / r.labels) for r in summary.itertuples()}


def test_model_segmenters_and_bad_models():
    entries = wc.model_segmenters({"a": {"backend": "classical", "params": {"sigma": 2.0}},
                                   "b": {"backend": "classical", "mode": "3d"}})
    assert entries == [{"name": "a", "backend": "classical", "params": {"sigma": 2.0}, "slices": True},
                       {"name": "b", "backend": "classical", "params": {}, "slices": False}]
    for bad, match in (({"x": {"backend": "classical", "mode": "4d"}}, "mode"),
                       ({"x": {"backend": "classical", "sigmas": 1}}, "unknown keys"),
                       ({"x": "classical"}, "backend"), ({}, "at least one")):
        with pytest.raises(ConfigError, match=match):
            wc.model_segmenters(bad)


def test_segmentation_along_depth_and_skipped_model(tmp_path):
    from opsef_core.segment import get_segmenter

    _write_condition(tmp_path, "c", n=1)
    data = wc.load_conditions(tmp_path, ["c"])
    prof = wc.clearing_profiles(data, patch_size=None)
    models = {"classical": {"backend": "classical", "params": {"sigma": 1.0, "min_size": 5}},
              "gone": {"backend": "unet", "params": {"model": "no_such_model_xyz"}}}
    seg, labels = wc.segmentation_along_depth(data, models, prof, keep_labels=True, out=tmp_path / "runs")
    assert seg.attrs["skipped"].keys() == {"gone"} and seg.attrs["failed"] == []
    assert len(seg) == 6 and set(seg["model"]) == {"classical"}
    assert (seg["n_pred"] == seg["n_true"]).all()
    assert seg["pixel_f1"].min() > 0.9 and seg["aji"].min() > 0.8
    assert seg["depth_pct"].notna().all() and (seg["seconds"] >= 0).all()
    # one engine run for the condition: its record, the labels seg was scored on, ids unique over the stack
    run_dir = seg.attrs["runs"]["c"]
    assert (run_dir / "run.json").is_file() and (run_dir / "metrics.csv").is_file()
    pred = _run_labels(run_dir)[("s0", "classical")]
    np.testing.assert_array_equal(pred, labels[("c", "s0", "classical")])
    ids = [set(np.unique(pred[z][pred[z] > 0])) for z in range(pred.shape[0])]
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    # "slices": true is what the workflow did itself before: the 2D segmenter on every plane
    seg2d = get_segmenter("classical")
    image = data["c"][0]["image"]
    offset = 0
    for z in range(pred.shape[0]):
        own = np.asarray(seg2d.segment(image.sel(z=z), {"sigma": 1.0, "min_size": 5}))
        np.testing.assert_array_equal(pred[z], np.where(own > 0, own + offset, 0))
        offset = max(offset, int(pred[z].max()))
    # the depth explorer shows the run's labels and the per-slice scores and profile at the chosen depth
    np.testing.assert_array_equal(wc.run_stack_labels(run_dir, "s0")["classical"], pred)
    views = wc.depth_explorers(data, seg, prof)
    assert list(views) == ["c/s0"]
    ex = views["c/s0"]
    assert ex.state["models"] == ["classical"]
    ex.update(z=2)
    row = seg[seg["z"] == 2].iloc[0]
    assert ex.state["n_pred"] == row["n_pred"] and ex.state["n_true"] == row["n_true"]
    assert ex.state["pixel_f1"] == pytest.approx(row["pixel_f1"]) and ex.state["aji"] == pytest.approx(row["aji"])
    assert ex.state["depth_pct"] == pytest.approx(row["depth_pct"])
    assert ex.state["values"]["snr"] == pytest.approx(prof.set_index("z").loc[2, "snr"])
    with pytest.raises(ConfigError, match="mode"):
        wc.segmentation_along_depth(data, {"x": {"backend": "classical", "mode": "4d"}}, out=tmp_path / "runs")
    with pytest.raises(ConfigError, match="no model could be run"):
        wc.segmentation_along_depth(data, {"gone": models["gone"]}, out=tmp_path / "runs")


@pytest.mark.slow
def test_clearing_run_repeats_from_its_record(tmp_path, monkeypatch):
    """A small clearing run (1 stack, classical + the 2D U-Net demo plane by plane), repeated from
    run.json in another working directory with identical labels."""
    from opsef_core.run import execute

    _write_condition(tmp_path / "d", "c", n=2)
    data = wc.load_conditions(tmp_path / "d", ["c"])
    models = {"classical": {"backend": "classical", "params": {"sigma": 1.0, "min_size": 5}},
              "unet2d_demo": {"backend": "unet", "params": {"model": "unet2d_demo"}}}
    seg = wc.segmentation_along_depth({"c": data["c"][:1]}, models, out=tmp_path / "runs")
    assert set(seg["model"]) == set(models) and set(seg["image"]) == {"s0"}
    run_dir = seg.attrs["runs"]["c"]
    first = _run_labels(run_dir)
    assert set(first) == {("s0", "classical"), ("s0", "unet2d_demo")}
    assert all(v.shape == (6, 48, 48) for v in first.values())
    # the per-slice table is computed from the run's label stacks
    from opsef_core.science.clearing import per_depth_segmentation

    unet = seg[seg["model"] == "unet2d_demo"].reset_index(drop=True)
    expected = per_depth_segmentation(data["c"][0]["labels"], first[("s0", "unet2d_demo")])
    pd.testing.assert_frame_equal(unet[expected.columns], expected)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = execute(run_dir / "run.json", out=tmp_path / "again", progress=False)
    second = _run_labels(again)
    assert second.keys() == first.keys()
    for key in first:
        np.testing.assert_array_equal(second[key], first[key])


def test_main_config_is_the_notebook_config():
    """configs/spheroid_clearing.json: the notebook's segmentation of the cleared condition."""
    import json

    from opsef_core.config import load_config
    from opsef_core.run import plan, plan_items

    path = REPO / "configs" / "spheroid_clearing.json"
    models = {"classical": {"backend": "classical", "params": {"sigma": 1.0, "h": 1.0}},
              "unet2d_demo": {"backend": "unet", "params": {"model": "unet2d_demo"}},
              "stardist2d_demo": {"backend": "stardist", "params": {"model": "stardist2d_demo"}}}
    built = wc.segmentation_config("../demo_data/spheroid_clearing", "cleared", models, files=["spheroid_00.tif"])
    assert json.loads(path.read_text()) == built
    cfg = load_config(path)
    items = plan_items(cfg)
    assert [it.id for it in items] == ["spheroid_00"]
    assert items[0].ground_truth == str(DEMO / "cleared" / "labels" / "spheroid_00.tif")
    combos = plan(cfg)
    assert [c.segmenter for c in combos] == list(models) and all(c.slices for c in combos)


@pytest.mark.slow
def test_transfer_matrix_trains_and_scores_every_pair(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _write_condition(tmp_path / "d", "bright", n=2)
    _write_condition(tmp_path / "d", "dim", n=2, dim_with_depth=True)
    data = wc.load_conditions(tmp_path / "d", ["bright", "dim"])
    trained = wc.train_condition_unets(data, tmp_path / "models", train_images=1, epochs=3, steps_per_epoch=3,
                                       patch_size=32, batch_size=4, filters=4, depth=2, val_fraction=0.2,
                                       patience=3)
    assert list(trained["condition"]) == ["bright", "dim"]
    for d in trained["model_dir"]:
        assert (Path(d) / "training.json").is_file()
    m = wc.transfer_matrix(data, trained, train_images=1, out=tmp_path / "runs")
    assert set(m.attrs["runs"]) == {"bright", "dim"}
    for run_dir in m.attrs["runs"].values():  # the trained models were applied by the engine
        summary = pd.read_csv(run_dir / "summary.csv")
        assert set(summary["segmenter"]) == {"trained_on_bright", "trained_on_dim"}
        assert (summary["status"] == "done").all() and set(summary["image"]) == {"s1"}
    assert len(m) == 4 and set(zip(m["train"], m["test"])) == {(a, b) for a in ("bright", "dim")
                                                             for b in ("bright", "dim")}
    assert (m["n_slices"] == 6).all()
    for c in ("pixel_f1", "aji", "f1@0.5"):
        assert m[c].between(0, 1).all()
    fig = wc.plot_transfer(m)
    fig.savefig(tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
