"""Library code behind notebooks/fucci_3d (opsef_core.workflows.fucci3d)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opsef_core.errors import ConfigError, InputFileError
from opsef_core.image import Image
from opsef_core.workflows import fucci3d as wf

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
    pipe = wf.fucci_pipeline(zero_below=50, gamma=1.0, clahe_clip=0.01, median_radius=0)
    clean, art = wf.preprocess(img, pipe, artefact_radius=1)
    c = clean.spatial(c=0)
    assert clean.shape == img.shape
    assert art.spatial(c=0)[2:4, 5:7, 30:32].min() > 0.5  # the artefact was what the top-hat took out
    assert c[2:4, 5:7, 30:32].max() < 0.1 * c[8, 20, 20]  # and is gone
    assert c[8, 20, 20] > 0.5 * c.max()  # the nucleus stays bright


@pytest.mark.slow
def test_segment_models_and_scores_on_demo(demo):
    models = {"classical": {"backend": "classical", "params": {"sigma": 1.0}},
              "nothere": {"backend": "unet", "params": {"model": "no_such_model_xyz"}}}
    pipe = wf.fucci_pipeline(gamma=0.8, median_radius=1)
    proc, _ = wf.preprocess(demo["image"], pipe, 1)
    results, table = wf.segment_models(proc, models, "hoechst")
    assert list(results) == ["classical"]
    assert table.set_index("model").loc["nothere", "status"] == "missing"
    lab = results["classical"]
    assert lab.shape == (24, 96, 96)
    scores = wf.score_models(demo["labels"], results)
    row = scores.iloc[0]
    assert row["n_true"] == 26
    assert row["f1@0.5"] >= 0.85 and 0.6 <= row["aji"] <= 1.0


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
    from opsef_core.fucci import phase_accuracy

    ph = wf.phase_table(demo["labels"], demo["image"], "cdt1_red", "geminin_green")
    assert ph.attrs["threshold_methods"] == {"red": "otsu", "green": "otsu"}
    truth = wf.truth_phase_table(demo["labels"], demo["phases"])
    acc = phase_accuracy(ph, truth, match="label")
    assert acc["n_matched"] == 26 and acc["accuracy"] >= 0.9
    # a threshold above every nucleus turns every red-high call off
    high = wf.phase_table(demo["labels"], demo["image"], "cdt1_red", "geminin_green", red_threshold=5.0)
    assert high.attrs["thresholds"]["red"] == 5.0 and high.attrs["threshold_methods"]["red"] == "user"
    assert not high["phase"].astype(str).isin(["G1", "G1/S"]).any()


def test_truth_phase_table_rejects_mismatch(demo):
    bad = demo["phases"].iloc[1:]
    with pytest.raises(ConfigError, match="disagree"):
        wf.truth_phase_table(demo["labels"], bad)


def test_figures_render(demo, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from opsef_core.fucci import phase_accuracy, radial_distribution

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
