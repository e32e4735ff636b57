"""Library code of the debris_brightfield notebook: the run config, the engine run, spheroid metrics from its labels."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from opsef_core import postprocess
from opsef_core.config import config_from_dict, load_config
from opsef_core.errors import ConfigError, InputFileError, RunFolderError
from opsef_core.science.spheroid import largest_object, readouts
from opsef_core.workflows import debris

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "demo_data" / "debris_brightfield"
OTSU = {"name": "classical_otsu", "backend": "classical",
        "params": {"threshold": "otsu", "sigma": 2.0, "h": 0.0, "min_size": 100}}
LI = {"name": "classical_li", "backend": "classical",
      "params": {"threshold": "li", "sigma": 2.0, "h": 0.0, "min_size": 100}}
UNET = {"name": "unet_demo", "backend": "unet",
        "params": {"model": "unet2d_demo", "instances": "connected_components", "min_size": 100}}


def test_time_index():
    assert debris.time_index("bf_t03.tif") == 3
    assert debris.time_index("/x/well_B2_t12.ome.tif") == 12
    with pytest.raises(InputFileError, match="time index"):
        debris.time_index("spheroid.tif")


def test_load_series_sorted_and_checked(tmp_path):
    series = debris.load_series(DATA, max_images=3)
    assert [s["time"] for s in series] == [0, 1, 2]
    assert all(s["image"].shape == s["truth"].shape == (256, 256) for s in series)
    (tmp_path / "images").mkdir()
    shutil.copy(DATA / "images" / "bf_t00.tif", tmp_path / "images" / "bf_t00.tif")
    with pytest.raises(InputFileError, match="bf_t00"):
        debris.load_series(tmp_path)
    assert debris.load_series(tmp_path, require_truth=False)[0]["truth"] is None


def _spur_hole_debris():
    lab = np.zeros((120, 120), np.int32)
    lab[disk((60, 60), 30)] = 1
    lab[60, 90:104] = 1  # a one-pixel spur of debris
    lab[50:54, 50:54] = 0  # a hole
    lab[5:9, 5:9] = 2  # a separate debris particle
    return lab


def test_smooth_largest_keeps_other_objects():
    lab = _spur_hole_debris()
    out = debris.smooth_largest(lab, radius=3)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[60, 100] == 0 and out[52, 52] == 1
    before = readouts(lab == 1)["circularity"]
    after = readouts(out == 1)["circularity"]
    assert after > before and after == pytest.approx(1.0, abs=0.05)
    # one implementation: the workflow's function is postprocess.smooth_largest
    np.testing.assert_array_equal(out, postprocess.smooth_largest(lab, 3))
    filled = debris.smooth_largest(lab, radius=0)  # holes filled only, the spur kept
    assert filled[52, 52] == 1 and filled[60, 100] == 1
    empty = np.zeros((5, 5), np.uint16)
    assert not debris.smooth_largest(empty, 2).any()


def test_postprocess_largest_options():
    lab = _spur_hole_debris()
    lab[100:110, 100:110] = 3
    only = postprocess.keep_largest(lab)
    assert set(np.unique(only)) == {0, 1} and np.array_equal(only == 1, lab == 1)
    # in a run config: the outer contour of the largest object, then (optionally) only that object
    smoothed, table = postprocess.apply_postprocess(lab, None, {"smooth_radius": 3})
    np.testing.assert_array_equal(smoothed, postprocess.smooth_largest(lab, 3))
    assert sorted(table["label"]) == [1, 2, 3]
    single, table = postprocess.apply_postprocess(lab, None, {"smooth_radius": 3, "keep_largest": True})
    assert set(np.unique(single)) == {0, 1} and list(table["label"]) == [1]
    np.testing.assert_array_equal(single == 1, smoothed == 1)
    # the default leaves everything as before
    same, _ = postprocess.apply_postprocess(lab, None, {})
    np.testing.assert_array_equal(same, lab)
    with pytest.raises(ConfigError, match="smooth_radius"):
        postprocess.apply_postprocess(lab, None, {"smooth_radius": -1})


def test_run_config_and_the_bundled_config():
    cfg = debris.run_config("../demo_data/debris_brightfield", [OTSU, LI, UNET], scale=0.5, invert=True,
                            background_radius=50.0, smooth_radius=6, max_images=3)
    assert [s["name"] for s in cfg["pipelines"][0]["steps"]] == ["rescale", "invert", "rolling_ball"]
    assert cfg["pipelines"][0]["steps"][0]["params"] == {"factor": 0.5}
    assert [s["name"] for s in cfg["segmenters"]] == ["classical_otsu", "classical_li", "unet_demo"]
    assert cfg["postprocess"] == {"smooth_radius": 6}
    assert cfg["inputs"] == {"path": "../demo_data/debris_brightfield/images", "include": ["*.tif", "*.tiff"],
                             "ground_truth": "../demo_data/debris_brightfield/labels", "label_suffix": "",
                             "limit": 3}
    assert set(cfg) >= {"inputs", "pipelines", "segmenters", "postprocess", "outputs", "evaluation"}
    assert [s.name for s in debris.spheroid_pipeline(scale=0.5, background_radius=50).steps] == \
        ["rescale", "invert", "rolling_ball"]
    # configs/debris_brightfield.json is the notebook's config on every demo image
    bundled = load_config(REPO / "configs" / "debris_brightfield.json")
    built = debris.run_config("../demo_data/debris_brightfield")
    assert built["postprocess"] == {"smooth_radius": debris.DEFAULT_SMOOTH_RADIUS}
    got = bundled.model_dump(mode="json")
    want = config_from_dict(built).model_dump(mode="json")
    got.pop("description"), want.pop("description")
    assert got == want
    assert bundled.resolve(bundled.inputs.path) == DATA / "images"
    assert bundled.resolve(bundled.inputs.ground_truth) == DATA / "labels"
    # the defaults: the spheroid U-Net first, the classical Otsu beside it, the pipeline it was trained on
    assert [s["name"] for s in built["segmenters"]] == [debris.SPHEROID_UNET["name"], debris.CLASSICAL_OTSU["name"]]
    assert built["segmenters"][0]["params"]["model"] == "spheroid_debris_unet"
    assert built["segmenters"][0]["params"]["prob_threshold"] == 0.5
    assert built["pipelines"] == [debris.pipeline_spec(**debris.DEFAULT_PIPELINE)]
    assert [s["name"] for s in built["pipelines"][0]["steps"]] == ["rescale", "invert"]


def test_explorer_setting_prefers_the_unet():
    setting, sliders = debris.explorer_setting([OTSU, UNET])
    assert setting["name"] == "unet_demo" and "prob_threshold" in sliders
    from opsef_core.segment import get_segmenter

    # only decoding parameters: the slider re-decodes one cached network pass
    assert not set(sliders) & get_segmenter("unet").network_fields
    setting, sliders = debris.explorer_setting([OTSU, LI])
    assert setting["name"] == "classical_otsu" and "threshold" in sliders
    assert debris.explorer_setting([{"name": "sd", "backend": "stardist", "params": {}}]) is None


def test_bad_settings():
    with pytest.raises(ConfigError):
        debris.run_config(DATA, [{"backend": "classical"}])
    with pytest.raises(ConfigError, match="twice"):
        debris.run_config(DATA, [OTSU, OTSU])
    with pytest.raises(ConfigError, match="unknown key"):
        debris.run_config(DATA, [{**OTSU, "param": {}}])
    with pytest.raises(ConfigError):
        debris.run_config(DATA, [])
    with pytest.raises(ConfigError):
        debris.spheroid_pipeline(scale=0)
    usable, skipped = debris.usable_settings([OTSU, {"name": "missing", "backend": "unet",
                                                     "params": {"model": "no_such_model_here"}}])
    assert [s["name"] for s in usable] == ["classical_otsu"]
    assert [s["name"] for s in skipped] == ["missing"] and "no_such_model_here" in skipped[0]["reason"]


def _label_files(run_dir: Path, sub: str) -> dict:
    return {p.name: tifffile.imread(p) for p in sorted((run_dir / sub).glob("*.tif"))}


def test_debris_run_reads_back_and_reruns_identically(tmp_path, monkeypatch):
    """The engine run of the study config: geometry, tables, spheroid metrics from its labels, rerun."""
    from opsef_core.run import execute
    from opsef_core.segment import get_segmenter

    cfg = debris.run_config(DATA, [OTSU, UNET], scale=0.5, background_radius=50.0, smooth_radius=6, max_images=2)
    run_dir = debris.execute_run(cfg, out=tmp_path / "a")
    assert (run_dir / "run.json").is_file()
    summary = pd.read_csv(run_dir / "summary.csv")
    assert {"image", "file", "series", "t", "combination", "pipeline", "segmenter", "setting", "status", "error",
            "n_objects", "n_objects_filtered", "labels", "labels_working"} <= set(summary.columns)
    assert len(summary) == 2 * 2 and (summary["status"] == "done").all()
    for _, row in summary.iterrows():  # labels on the input grid, the working ones at half resolution
        assert tifffile.imread(run_dir / row["labels"]).shape == (256, 256)
        assert tifffile.imread(run_dir / row["labels_working"]).shape == (128, 128)
        assert (run_dir / "labels_filtered" / f"{row['image']}__{row['combination']}.tif").is_file()

    # the engine's labels are the study's segmentation: pipeline once, segment at half resolution,
    # nearest neighbour back to the input grid, the largest object's outer contour there
    series = debris.load_series(DATA, max_images=2)
    pre = debris.spheroid_pipeline(scale=0.5, background_radius=50).apply(series[1]["image"])
    seg = get_segmenter("classical")
    working = np.asarray(seg.segment(pre, seg.params(OTSU["params"])))
    from opsef_core.reshape import rescale_labels

    mine = debris.smooth_largest(rescale_labels(working, (256, 256)), 6)
    combo = summary.loc[summary["segmenter"] == "classical_otsu", "combination"].iloc[0]
    np.testing.assert_array_equal(tifffile.imread(run_dir / "labels_filtered" / f"bf_t01__{combo}.tif"), mine)

    # spheroid metrics from the run's labels: one row per (image, setting), none missing
    per_image, spheroid = debris.evaluate_run(run_dir)
    assert len(per_image) == 2 * 2 and not per_image.duplicated(["image", "setting"]).any()
    assert set(per_image["setting"]) == {"classical_otsu", "unet_demo"} and (per_image["status"] == "done").all()
    assert per_image[["jcd", "rdd", "rcd", "radial_error_um", "diameter"]].notna().all().all()
    assert list(spheroid["setting"]) == ["classical_otsu", "unet_demo"] and (spheroid["n_failed"] == 0).all()
    row = per_image[(per_image["setting"] == "classical_otsu") & (per_image["image"] == "bf_t01")].iloc[0]
    assert row["time"] == 1 and row["labels"] == f"labels_filtered/bf_t01__{combo}.tif"
    # independent reference: the largest object's equivalent diameter from its pixel count (2 µm pixels)
    mask, n = largest_object(mine)
    assert row["n_objects"] == n
    assert row["diameter"] == pytest.approx(np.sqrt(4 * mask.sum() * 4.0 / np.pi))
    assert row["volume"] == pytest.approx(np.pi * row["diameter"] ** 3 / 6)
    truth = series[1]["truth"] > 0
    assert row["jcd"] == pytest.approx(1 - np.sum(mask & truth) / np.sum(mask | truth))
    # ... and the engine's measurements (µm²) of that object agree
    meas = pd.read_csv(run_dir / "measurements.csv")
    m = meas[(meas["image"] == "bf_t01") & (meas["combination"] == combo)]
    assert m["area"].max() == pytest.approx(row["area"]) and m["area"].max() == pytest.approx(mask.sum() * 4.0)
    assert spheroid["jcd_mean"].max() < 0.15 and (spheroid["isf"] == 0).all()
    best = debris.choose_setting(spheroid)
    assert best in {"classical_otsu", "unet_demo"}
    with pytest.raises(ConfigError):
        debris.choose_setting(spheroid, "missing")
    res = debris.read_run(run_dir)
    assert [s["time"] for s in res["series"]] == [0, 1] and res["errors"] == {}
    assert len(debris.plot_growth(per_image, best).axes) == 2
    assert len([a for a in debris.plot_overlays(res["series"], res["labels"][best]).axes if a.get_visible()]) == 2
    assert len(debris.plot_settings(res["series"], res["labels"]).axes) == 2 * 3
    assert debris.preprocessed_image(run_dir, 1).shape == (128, 128)
    copies = debris.copy_labels(run_dir, best, tmp_path / "chosen")
    assert [p.name for p in copies] == ["bf_t00.tif", "bf_t01.tif"]

    # the run.json repeats the run from anywhere: identical labels, identical spheroid metrics
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = execute(run_dir / "run.json", out=tmp_path / "b", progress=False)
    for sub in ("labels", "labels_filtered", "labels_working"):
        first, second = _label_files(run_dir, sub), _label_files(again, sub)
        assert first and list(first) == list(second), sub
        for name in first:
            np.testing.assert_array_equal(second[name], first[name], err_msg=f"{sub}/{name}")
    per_image2, _ = debris.evaluate_run(again)
    pd.testing.assert_frame_equal(per_image2, per_image)


def test_failed_item_is_reported_not_dropped(tmp_path):
    """An image the engine could not read stays in the spheroid table (status failed), never chosen as best."""
    data = tmp_path / "data"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
    shutil.copy(DATA / "images" / "bf_t00.tif", data / "images" / "bf_t00.tif")
    shutil.copy(DATA / "labels" / "bf_t00.tif", data / "labels" / "bf_t00.tif")
    (data / "images" / "bf_t01.tif").write_bytes(b"not a tiff")
    run_dir = debris.execute_run(debris.run_config(data, [OTSU], smooth_radius=6), out=tmp_path / "runs")
    assert list(pd.read_csv(run_dir / "summary.csv")["status"]) == ["done", "failed"]
    per_image, spheroid = debris.evaluate_run(run_dir)
    assert len(per_image) == 2 and list(per_image["status"]) == ["done", "failed"]
    assert "bf_t01" in per_image["error"].iloc[1] and np.isnan(per_image["jcd"].iloc[1])
    assert pd.isna(per_image["labels"].iloc[1])
    assert spheroid["n_images"].iloc[0] == 1 and spheroid["n_failed"].iloc[0] == 1
    with pytest.raises(ConfigError, match="failed"):
        debris.choose_setting(spheroid)
    assert debris.choose_setting(spheroid, "classical_otsu") == "classical_otsu"
    res = debris.read_run(run_dir)
    assert res["series"][1]["image"] is None and "classical_otsu" in res["errors"]
    assert len([a for a in debris.plot_overlays(res["series"], res["labels"]["classical_otsu"]).axes
                if a.get_visible()]) == 2
    with pytest.raises(ConfigError, match="no labels for bf_t01"):
        debris.copy_labels(run_dir, "classical_otsu", tmp_path / "x")
    with pytest.raises(RunFolderError):
        debris.read_run(tmp_path / "not_a_run")
    assert json.loads((run_dir / "run.json").read_text())["config"]["postprocess"] == {"smooth_radius": 6}
