"""The bundled spheroid U-Net (``models/spheroid_debris_unet``) and its generator (``opsef_core.testing.debris``).

The workflow test runs the debris workflow with its defaults (the run engine, the spheroid U-Net
beside the classical Otsu setting) on images of a generator seed the model never saw (training,
validation and the script's own test seed are recorded in ``training.json``), and checks the
study's targets recorded there.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core.errors import ConfigError
from opsef_core.testing import debris as gen
from opsef_core.workflows import debris

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "spheroid_debris_unet"
#: a generator seed used neither in training, validation nor the training script's test
FRESH_SEED = 20261202


def _record() -> dict:
    return json.loads((MODEL / "training.json").read_text())


def test_generator_is_seeded_and_spans_the_study_range():
    a_img, a_lab = gen.make_spheroid(7)
    b_img, b_lab = gen.make_spheroid(7)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert a_img.dtype == np.uint8 and a_lab.dtype == np.uint16 and a_img.shape == (320, 320)
    assert not np.array_equal(gen.make_spheroid(8)[0], a_img)
    # the radius range of the study (equivalent radius of the truth, irregular outline)
    lo, hi = gen.RADIUS_RANGE
    radii = [np.sqrt(gen.make_spheroid(s)[1].sum() / np.pi) for s in range(12)]
    assert lo * 0.85 <= min(radii) and max(radii) <= hi * 1.15 and max(radii) - min(radii) > 30
    big = gen.make_spheroid(3, radius=120.0)[1]
    assert np.sqrt(big.sum() / np.pi) == pytest.approx(120, rel=0.15)
    # the spheroid is darker than the background; debris darkens pixels outside it
    img, lab = gen.make_spheroid(5, debris=False, noise=2.0)
    dirty, lab2 = gen.make_spheroid(5, debris=True, noise=2.0, debris_density=2.0)
    np.testing.assert_array_equal(lab, lab2)
    assert img[lab > 0].mean() < 0.8 * img[lab == 0].mean()
    out = lab == 0
    assert dirty[out].mean() < img[out].mean() - 1 and (dirty[out] < 0.7 * np.median(img[out])).mean() > 0.01
    series = gen.make_series(11, 5, clean_fraction=0.2)
    assert len(series) == 5 and sum(not d for *_, d in series) == 1
    with pytest.raises(ConfigError):
        gen.make_spheroid(0, shape=(40, 40))
    with pytest.raises(ConfigError):
        gen.make_series(0, 0)


def test_write_series_is_a_debris_data_folder(tmp_path):
    folder = gen.write_series(tmp_path / "d", seed=3, n=2, shape=(200, 200), pixel_size=2.0)
    items = debris.load_series(folder)
    assert [it["time"] for it in items] == [0, 1]
    assert items[0]["image"].shape == (200, 200) and items[0]["image"].pixel_size["X"] == pytest.approx(2.0)
    table = pd.read_csv(folder / "debris.csv")
    assert list(table["file"]) == ["bf_t00.tif", "bf_t01.tif"]
    np.testing.assert_array_equal(items[1]["truth"], tifffile.imread(folder / "labels" / "bf_t01.tif"))


def test_bundled_model_card_and_backend():
    from opsef_core.segment import get_segmenter
    from opsef_core.unet.io import read_config

    rec = _record()
    cfg = read_config(MODEL)
    size_mb = sum(p.stat().st_size for p in MODEL.iterdir()) / 1e6
    assert size_mb < 5
    assert cfg["variant"] == "3class" and cfg["dims"] == 2 and cfg["pipeline"] == debris.DEFAULT_PIPELINE
    # the format of the other U-Net training records, plus the validation JCD it stopped on
    demo = json.loads((REPO / "models" / "unet2d_demo" / "training.json").read_text())
    assert set(demo) <= set(rec)
    assert rec["params"]["early_stopping_on"] == "validation JCD"
    # the weights kept are those of the best epoch (validation JCD, penalised for ambiguous calls)
    assert rec["validation_jcd"] == pytest.approx(rec["history"][rec["best_epoch"] - 1]["val_jcd"])
    assert rec["validation_jcd"] <= rec["targets"]["jcd_mean"]
    gen_params = rec["params"]["generator"]
    assert FRESH_SEED not in (gen_params["train_seed"], gen_params["val_seed"], rec["unseen_test"]["seed"])
    # the script's own unseen test meets the targets
    t = rec["targets"]
    assert rec["unseen_test"]["jcd_mean"] <= t["jcd_mean"] and rec["unseen_test"]["isf"] <= t["isf"]
    assert rec["unseen_test"]["asf"] <= t["asf"]
    seg = get_segmenter("unet")
    desc = seg.describe_model(seg.params(debris.SPHEROID_UNET["params"]))
    assert desc["variant"] == "3class" and Path(desc["path"]) == MODEL.resolve()


def _script():
    import importlib.util

    path = REPO / "scripts" / "train_spheroid_model.py"
    spec = importlib.util.spec_from_file_location("train_spheroid_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_robustness_table_recorded_across_seeds():
    """training.json records the workflow's scores on several more unseen seeds, per seed and pooled."""
    script = _script()
    rec = _record()
    rob = rec["robustness"]
    gen_params = rec["params"]["generator"]
    assert rob["seeds"] == list(script.ROBUSTNESS_SEEDS)
    assert not set(rob["seeds"]) & {gen_params["train_seed"], gen_params["val_seed"], FRESH_SEED}
    assert [r["seed"] for r in rob["per_seed"]] == rob["seeds"]
    assert all(r["n"] == rob["n_per_seed"] for r in rob["per_seed"])
    pooled = rob["pooled"]
    assert pooled["n"] == rob["n_per_seed"] * len(rob["seeds"])
    # the pooled figures are the per-seed ones pooled
    assert pooled["jcd_mean"] == pytest.approx(np.mean([r["jcd_mean"] for r in rob["per_seed"]]))
    assert pooled["n_ambiguous"] == sum(r["n_ambiguous"] for r in rob["per_seed"])
    assert pooled["asf"] == pytest.approx(pooled["n_ambiguous"] / pooled["n"])
    assert rob["meets_targets_pooled"] == (pooled["jcd_mean"] <= rec["targets"]["jcd_mean"]
                                           and pooled["isf"] <= rec["targets"]["isf"]
                                           and pooled["asf"] <= rec["targets"]["asf"])
    assert rob["meets_targets_pooled"]


def test_score_seeds_goes_through_the_workflow(tmp_path):
    """--score-seeds scores a model the way a user runs it; its figures are the workflow's own."""
    script = _script()
    table, per_image = script.score_seeds_workflow(MODEL, [5, 6], n=2, work_dir=tmp_path, clean_fraction=0.5)
    assert [r["seed"] for r in table["per_seed"]] == [5, 6] and table["pooled"]["n"] == 4
    assert set(per_image["setting"]) == {debris.SPHEROID_UNET["name"]} and len(per_image) == 4
    # the same seed through the workflow by hand: identical per-image JCDs
    data = gen.write_series(tmp_path / "by_hand", seed=6, n=2, shape=script.SHAPE, clean_fraction=0.5)
    setting = {**debris.SPHEROID_UNET, "params": {**debris.SPHEROID_UNET["params"], "model": str(MODEL)}}
    run_dir = debris.execute_run(debris.run_config(data, [setting]), out=tmp_path / "runs_by_hand")
    mine, _ = debris.evaluate_run(run_dir)
    np.testing.assert_allclose(per_image.loc[per_image["seed"] == 6, "jcd"].to_numpy(), mine["jcd"].to_numpy())
    seed6 = table["per_seed"][1]
    assert seed6["jcd_mean"] == pytest.approx(mine["jcd"].mean())
    assert seed6["n_ambiguous"] == int(mine["ambiguous"].sum()) and seed6["n_invalid"] == int(mine["invalid"].sum())
    with pytest.raises(ConfigError, match="training or validation"):
        script.record_robustness(tmp_path, [script.TRAIN_SEED])


@pytest.mark.slow
def test_debris_workflow_defaults_reach_the_targets_on_a_fresh_seed(tmp_path):
    """Defaults of the debris workflow (engine run) on unseen generated images: the study's targets."""
    targets = _record()["targets"]
    data = gen.write_series(tmp_path / "data", seed=FRESH_SEED, n=8, shape=(320, 320), clean_fraction=0.25)
    table = pd.read_csv(data / "debris.csv")
    dirty = dict(zip([Path(f).stem for f in table["file"]], table["debris"]))
    cfg = debris.run_config(data)
    assert [s["name"] for s in cfg["segmenters"]] == [s["name"] for s in debris.DEFAULT_SETTINGS]
    run_dir = debris.execute_run(cfg, out=tmp_path / "runs")
    per_image, summary = debris.evaluate_run(run_dir)
    unet = summary.set_index("setting").loc[debris.SPHEROID_UNET["name"]]
    assert unet["n_images"] == 8 and unet["n_failed"] == 0
    assert unet["jcd_mean"] <= targets["jcd_mean"]
    assert unet["isf"] <= targets["isf"] and unet["asf"] <= targets["asf"]
    rows = per_image[per_image["setting"] == debris.SPHEROID_UNET["name"]].set_index("image")
    # clean spheroids (no debris) are found too
    clean = [i for i in rows.index if not dirty[i]]
    assert clean and (rows.loc[clean, "jcd"] <= targets["jcd_mean"]).all()
    assert not rows["invalid"].any()
    # independent reference: the JCD of one image from the run's label file and the truth file
    row = rows.iloc[0]
    pred = tifffile.imread(run_dir / row["labels"])
    truth = tifffile.imread(data / "labels" / f"{row.name}.tif") > 0
    sizes = np.bincount(pred.ravel())
    sizes[0] = 0
    mask = pred == np.argmax(sizes)
    assert row["jcd"] == pytest.approx(1 - (mask & truth).sum() / (mask | truth).sum(), abs=1e-9)
    # the U-Net beats the classical setting it is compared with
    otsu = summary.set_index("setting").loc[debris.CLASSICAL_OTSU["name"]]
    assert unet["jcd_mean"] < otsu["jcd_mean"]
