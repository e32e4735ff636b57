"""Library code behind notebooks/fucci_3d (opsef_core.workflows.fucci3d)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opsef_core.errors import ConfigError, InputFileError
from opsef_core.image import Image
from opsef_core.workflows import fucci3d as wf
from nbhelpers import rerun_engine_run

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_data" / "fucci3d"


@pytest.fixture(scope="module")
def demo():
    return wf.load_fucci(DEMO)


def test_load_fucci_reads_image_truth_and_phases(demo):
    img = demo["image"]
    assert img.axes == "CZYX" and img.shape == (3, 24, 96, 96)
    assert list(img.channel_names) == ["hoechst", "cdt1_red", "geminin_green"]
    assert demo["labels"].shape == (24, 96, 96)
    n = int(np.unique(demo["labels"][demo["labels"] > 0]).size)
    assert len(demo["phases"]) == n == 26


def test_load_fucci_names_file_for_missing_channel():
    with pytest.raises(InputFileError, match=r"fucci_00\.tif.*|channel 'dapi'"):
        wf.load_fucci(DEMO, channels=("dapi", "cdt1_red", "geminin_green"))


def test_load_fucci_rejects_bad_phase_table(tmp_path):
    for sub in ("images", "phases"):
        (tmp_path / sub).mkdir()
    (tmp_path / "images" / "a.tif").write_bytes((DEMO / "images" / "fucci_00.tif").read_bytes())
    pd.DataFrame({"id": [1], "state": ["G1"]}).to_csv(tmp_path / "phases" / "a.csv", index=False)
    with pytest.raises(InputFileError, match="label,phase"):
        wf.load_fucci(tmp_path)


def _ball(shape, centre, r):
    zz, yy, xx = np.indices(shape)
    return ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= r * r


def test_preprocess_removes_small_bright_artefacts_and_keeps_nuclei():
    shape = (16, 40, 40)
    a = np.full(shape, 100, np.uint16)
    a[_ball(shape, (8, 20, 20), 6)] = 1000
    a[2:4, 5:7, 30:32] = 4000  # 2x2x2 artefact
    img = Image.from_array(a[None], "CZYX", pixel_size={"Z": 1.0, "Y": 0.5, "X": 0.5}, channel_names=["n"])
    pipe = wf.fucci_pipeline(zero_below=50, gamma=1.0, clahe_clip=0.01, median_radius=0, artefact_radius=1)
    assert [s["name"] for s in pipe.to_dict()["steps"]] == ["clip", "gamma", "clahe", "subtract_tophat"]
    clean, art = wf.preprocess(img, pipe)
    c = clean.spatial(c=0)
    assert clean.shape == img.shape
    assert art.spatial(c=0)[2:4, 5:7, 30:32].min() > 0.5  # the artefact was what the top-hat took out
    assert c[2:4, 5:7, 30:32].max() < 0.1 * c[8, 20, 20]  # and is gone
    assert c[8, 20, 20] > 0.5 * c.max()  # the nucleus stays bright
    _, none = wf.preprocess(img, wf.fucci_pipeline(zero_below=50, median_radius=0))
    assert not np.any(none.data)


def test_subtract_tophat_step_is_image_minus_white_tophat():
    from skimage.morphology import ball, white_tophat

    from opsef_core.preprocess import apply_step

    rng = np.random.default_rng(0)
    f = rng.random((6, 12, 12)).astype(np.float32)
    img = Image.from_array(f, "ZYX")
    out = np.asarray(apply_step(img, "subtract_tophat", radius=1).data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.clip(f - white_tophat(f, ball(1)), 0, None))
    u = (f * 1000).astype(np.uint16)
    out_u = np.asarray(apply_step(Image.from_array(u, "ZYX"), "subtract_tophat", radius=1).data)
    assert out_u.dtype == np.uint16
    np.testing.assert_array_equal(out_u, u - white_tophat(u, ball(1)))


MODELS = [{"name": "classical", "backend": "classical", "params": {"sigma": 1.0}},
          {"name": "stardist3d_demo", "backend": "stardist",
           "params": {"model": "stardist3d_demo", "scale": [0.5, 0.8, 0.8]}}]


def test_run_config_segments_the_nuclear_channel_and_keeps_every_channel():
    from opsef_core.config import config_from_dict

    pipe = wf.fucci_pipeline(gamma=0.8, artefact_radius=1)
    cfg = wf.run_config(DEMO, MODELS + [{"name": "cp", "backend": "cellpose",
                                         "params": {"model": "cellpose_demo", "channel": 0}}], pipe)
    config_from_dict(cfg)  # valid
    assert "channel" not in cfg["inputs"] and cfg["inputs"]["ground_truth"].endswith("fucci3d/labels")
    chans = {s["name"]: s["params"]["channel"] for s in cfg["segmenters"]}
    assert chans == {"classical": "hoechst", "stardist3d_demo": "hoechst", "cp": 0}  # an entry's own wins
    assert cfg["pipelines"] == [pipe.to_dict()]
    assert MODELS[0]["params"] == {"sigma": 1.0}  # the caller's entries are not changed
    one = wf.run_config("rel/data", MODELS, pipe, image_name="fucci_00", base_dir=REPO)
    assert one["inputs"]["include"][0] == "fucci_00.tif" and "ground_truth" not in one["inputs"]
    with pytest.raises(ConfigError, match="models"):
        wf.run_config(DEMO, [], pipe)
    with pytest.raises(ConfigError, match="unknown key"):
        wf.run_config(DEMO, [{"name": "x", "backend": "classical", "parms": {}}], pipe)


def test_bundled_config_is_the_notebooks_default():
    """configs/fucci_3d.json: the notebook's default parameters as a run config, paths relative to configs/."""
    import ast
    import json

    import jupytext

    from opsef_core.config import load_config

    cfg = load_config(REPO / "configs" / "fucci_3d.json")
    assert cfg.resolve(cfg.inputs.path) == (DEMO / "images").resolve()
    assert cfg.resolve(cfg.inputs.ground_truth) == (DEMO / "labels").resolve()
    nb = jupytext.read(REPO / "notebooks" / "fucci_3d.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    p = {t.id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body for t in n.targets}
    pipe = wf.fucci_pipeline(zero_below=p["zero_below"], gamma=p["gamma"], clahe_clip=p["clahe_clip"],
                             clahe_kernel=p["clahe_kernel"], median_radius=p["median_radius"],
                             artefact_radius=p["artefact_radius"])
    expected = wf.run_config("../demo_data/fucci3d", p["models"], pipe, channels=p["channels"],
                             base_dir=REPO / "configs")
    assert json.loads((REPO / "configs" / "fucci_3d.json").read_text()) == expected
    # the FUCCI-like training stacks of the 3D U-Net are preprocessed like the notebook's default
    from opsef_core.testing.spheroid3d import FUCCI_PIPELINE

    assert FUCCI_PIPELINE == {k: p[k] for k in FUCCI_PIPELINE}


@pytest.mark.slow
def test_fucci_run_reads_back_and_reruns_from_its_record(tmp_path, monkeypatch):
    """The engine runs the FUCCI config; the analyses read its folder; run.json repeats it exactly."""


    pipe = wf.fucci_pipeline(gamma=0.8, median_radius=1, artefact_radius=1)
    models = MODELS + [{"name": "nothere", "backend": "unet", "params": {"model": "no_such_model_xyz"}}]
    cfg = wf.run_config("demo_data/fucci3d", models, pipe, base_dir=REPO)
    run_dir, skipped = wf.run_fucci(cfg, out=tmp_path / "a", base_dir=REPO)
    assert [s["name"] for s in skipped] == ["nothere"]
    assert (run_dir / "run.json").is_file()
    table = wf.segmentation_table(run_dir, skipped).set_index("model")
    assert table.loc["nothere", "status"] == "missing"
    assert (table.loc[["classical", "stardist3d_demo"], "status"] == "done").all()

    scores = wf.scores_from_run(run_dir).set_index("model")
    assert scores.loc["classical", "n_true"] == 26
    assert scores.loc["classical", "f1@0.5"] >= 0.85 and scores.loc["stardist3d_demo", "f1@0.5"] >= 0.7
    assert scores["aji"].between(0, 1).all()
    labels = wf.run_labels(run_dir)
    assert set(labels) == {"classical", "stardist3d_demo"} and labels["classical"].shape == (24, 96, 96)
    # the run's scores are those of its label images
    truth = wf.load_fucci(DEMO)["labels"]
    direct = wf.score_models(truth, labels).set_index("model")
    pd.testing.assert_frame_equal(scores.drop(columns="combination").loc[direct.index], direct,
                                  check_dtype=False, atol=1e-6)

    # measurements: per nucleus, every channel, µm
    meas = pd.read_csv(run_dir / "measurements.csv")
    assert {"cdt1_red_mean", "geminin_green_mean", "hoechst_mean", "volume", "sphericity"} <= set(meas.columns)
    shape = wf.shape_table(run_dir, "classical")
    assert len(shape) == scores.loc["classical", "n_pred"] and (shape["volume"] > 0).all()
    image = wf.run_image(run_dir)
    assert image.axes == "CZYX"
    ph = wf.phase_table(labels=labels["classical"], image=image, red_channel="cdt1_red",
                        green_channel="geminin_green")
    assert len(ph) == 26 and set(ph["label"]) == set(shape["label"])

    # `opsef run RUN/run.json` from another working directory: identical label images
    again = rerun_engine_run(run_dir / "run.json", tmp_path / "b", tmp_path / "elsewhere")
    first = pd.read_csv(run_dir / "summary.csv")
    second = pd.read_csv(again / "summary.csv")
    assert list(second["labels"]) == list(first["labels"]) and (second["status"] == "done").all()


def test_score_models_against_hand_counts(demo):
    truth = demo["labels"]
    minus_one = truth.copy()
    minus_one[minus_one == 5] = 0
    scores = wf.score_models(truth, {"same": truth, "minus": minus_one}).set_index("model")
    assert scores.loc["same", "f1@0.5"] == 1.0 and scores.loc["same", "aji"] == pytest.approx(1.0)
    # 25 matched, 1 missed: F1 = 2*25 / (2*25 + 1)
    assert scores.loc["minus", "f1@0.5"] == pytest.approx(50 / 51)
    assert scores.loc["minus", "fn"] == 1 and scores.loc["minus", "fp"] == 0
    n5 = np.count_nonzero(truth == 5)
    assert scores.loc["minus", "aji"] == pytest.approx(1 - n5 / np.count_nonzero(truth))


def test_phase_calls_on_truth_match_truth_phases(demo):
    from opsef_core.science.fucci import phase_accuracy

    ph = wf.phase_table(demo["labels"], demo["image"], "cdt1_red", "geminin_green")
    assert ph.attrs["threshold_methods"] == {"red": "otsu", "green": "otsu"}
    truth = wf.truth_phase_table(demo["labels"], demo["phases"])
    acc = phase_accuracy(ph, truth, match="label")
    assert acc["n_matched"] == 26 and acc["accuracy"] >= 0.9
    # a threshold above every nucleus turns every red-high call off
    high = wf.phase_table(labels=demo["labels"], image=demo["image"], red_channel="cdt1_red",
                          green_channel="geminin_green", red_threshold=5.0)
    assert high.attrs["thresholds"]["red"] == 5.0 and high.attrs["threshold_methods"]["red"] == "user"
    assert not high["phase"].astype(str).isin(["G1", "G1/S"]).any()


def test_truth_phase_table_rejects_mismatch(demo):
    bad = demo["phases"].iloc[1:]
    with pytest.raises(ConfigError, match="disagree"):
        wf.truth_phase_table(demo["labels"], bad)


def test_figures_render(demo, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from opsef_core.science.fucci import phase_accuracy, radial_distribution

    ph = wf.phase_table(demo["labels"], demo["image"], "cdt1_red", "geminin_green")
    rad = radial_distribution(ph, pixel_size=[1.0, 0.5, 0.5], bins=3)
    assert rad["n"].sum() == 26
    truth = wf.truth_phase_table(demo["labels"], demo["phases"])
    conf = phase_accuracy(ph, truth, match="label")["confusion"]
    ph["volume"] = ph["n_pixels"] * 0.25
    ph["sphericity"] = 0.9
    for i, fig in enumerate([wf.phase_scatter(ph), wf.radial_figure(rad), wf.confusion_figure(conf),
                             wf.shape_figure(ph)]):
        p = tmp_path / f"f{i}.png"
        fig.savefig(p)
        assert p.stat().st_size > 1000
