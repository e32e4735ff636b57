"""opsef_core.workflows.quickstart: grid config, choosing, final run, object filter, ROI export, embedding.

Runs a small classical-only grid on 3 of the demo nuclei images (copied to a temporary folder) and
checks choices and metrics against references computed here independently (pandas group means,
a plain IoU > 0.5 pair count, ROI zips read with roifile).
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import roifile
import tifffile

from opsef_core.config import config_from_dict
from opsef_core.errors import ConfigError
from opsef_core.workflows import quickstart as qs

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_data" / "nuclei2d"
PIPELINES = [{"name": "raw", "steps": []},
             {"name": "smooth", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}}]}]
CLASSICAL = {"name": "classical", "backend": "classical", "params": {"min_size": 20}, "sweep": {"h": [0.5, 3.0]}}
NAMES = ["nuclei_00", "nuclei_03", "nuclei_05"]


def _f1_at_half(gt: np.ndarray, pred: np.ndarray) -> float:
    """F1 at IoU 0.5 by counting pairs with IoU > 0.5 (such pairs are unique, no assignment needed)."""
    g, p = gt.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    ng, npred = g.max() + 1, p.max() + 1
    inter = np.bincount(g * npred + p, minlength=ng * npred).reshape(ng, npred)[1:, 1:]
    sg, sp = np.bincount(g, minlength=ng)[1:], np.bincount(p, minlength=npred)[1:]
    iou = inter / np.maximum(sg[:, None] + sp[None, :] - inter, 1)
    n_true, n_pred = int((sg > 0).sum()), int((sp > 0).sum())
    tp = int((iou > 0.5).sum())
    return 2 * tp / (n_true + n_pred)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
        for n in NAMES:
            shutil.copy(DEMO / sub / f"{n}.tif", root / sub / f"{n}.tif")
    explore = qs.explore_config("images", "labels", PIPELINES, [CLASSICAL], [1.0], n_images=2, seed=1)
    explore_dir = qs.execute_config(explore, out=root / "out", base_dir=root)
    chosen = qs.choose_combination(explore_dir, "auto")
    final = qs.final_config(explore, chosen["combination"])
    final_dir = qs.execute_config(final, out=root / "out", base_dir=root)
    return {"root": root, "explore": explore, "explore_dir": explore_dir, "chosen": chosen,
            "final": final, "final_dir": final_dir}


def test_explore_config_sweeps_scale_only_where_a_backend_has_one():
    models = [CLASSICAL,
              {"name": "sd", "backend": "stardist", "params": {"model": "x"}, "sweep": {"prob_thresh": [0.4, 0.6]}},
              {"name": "cp", "backend": "cellpose", "params": {"model": "y"}},
              {"name": "cp_fixed", "backend": "cellpose", "params": {"model": "y", "scale_factor": 2.0}},
              {"name": "un", "backend": "unet", "params": {"model": "z"}}]
    cfg = qs.explore_config("imgs", None, PIPELINES, models, [0.5, 1.0], n_images=3, seed=4)
    seg = {s["name"]: s for s in cfg["segmenters"]}
    assert seg["sd"]["sweep"] == {"scale": [0.5, 1.0], "prob_thresh": [0.4, 0.6]}
    assert seg["cp"]["sweep"] == {"scale_factor": [0.5, 1.0]}
    assert seg["cp_fixed"]["sweep"] == {} and seg["cp_fixed"]["params"]["scale_factor"] == 2.0
    assert seg["classical"]["sweep"] == {"h": [0.5, 3.0]} and seg["un"]["sweep"] == {}
    assert cfg["inputs"] == {"path": "imgs", "include": ["*.tif", "*.tiff"], "limit": 3}
    assert cfg["seed"] == 4 and models[1]["sweep"] == {"prob_thresh": [0.4, 0.6]}  # input not modified
    parsed = config_from_dict(cfg, check=False)
    assert len(parsed.segmenters) == 5
    # scale factors [1.0] add no sweep at all
    cfg1 = qs.explore_config("imgs", "gt", PIPELINES, models[:2], [1.0])
    assert cfg1["segmenters"][1]["sweep"] == {"prob_thresh": [0.4, 0.6]}
    assert cfg1["inputs"]["ground_truth"] == "gt"


@pytest.mark.parametrize("kwargs, match", [
    ({"pipelines": []}, "pipelines"),
    ({"models": []}, "models"),
    ({"scale_factors": [1.0, -1.0]}, "scale_factors"),
    ({"n_images": 0}, "n_explore_images"),
    ({"models": [{"backend": "classical", "parms": {}}]}, "parms"),
    ({"models": ["classical"]}, "models\\[0\\]"),
])
def test_explore_config_rejects_bad_parameters(kwargs, match):
    args = dict(data_dir="imgs", ground_truth_dir=None, pipelines=PIPELINES, models=[CLASSICAL],
                scale_factors=[1.0], n_images=2)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        qs.explore_config(**args)


def test_usable_models_skips_missing_weights(tmp_path):
    missing = tmp_path / "no_such_unet"
    usable, skipped = qs.usable_models([CLASSICAL, {"name": "u", "backend": "unet", "params": {"model": str(missing)}}])
    assert [u["name"] for u in usable] == ["classical"]
    assert len(skipped) == 1 and skipped[0]["model"] == str(missing) and str(missing) in skipped[0]["reason"]
    with pytest.raises(ConfigError, match="none of the models"):
        qs.usable_models([{"name": "u", "backend": "unet", "params": {"model": str(missing)}}])
    with pytest.raises(ConfigError, match="unknown segmenter"):
        qs.usable_models([{"backend": "magic"}])


def test_auto_choice_is_the_best_mean_f1(runs):
    metrics = pd.read_csv(runs["explore_dir"] / "metrics.csv")
    assert sorted(metrics["image"].unique()) == NAMES[:2]  # n_images=2
    assert metrics["combination"].nunique() == 4  # 2 pipelines x 2 h values
    means = metrics.groupby("combination")["f1@0.5"].mean()
    assert runs["chosen"]["combination"] == means.idxmax()
    assert runs["chosen"]["score"] == pytest.approx(means.max())
    assert runs["chosen"]["how"] == "auto"


def test_choose_given_and_unknown(runs):
    ids = sorted(pd.read_csv(runs["explore_dir"] / "summary.csv")["combination"].unique())
    other = next(i for i in ids if i != runs["chosen"]["combination"])
    given = qs.choose_combination(runs["explore_dir"], other)
    assert given["combination"] == other and given["how"] == "given"
    with pytest.raises(ConfigError, match="p1-raw__s1-classical_h0.5"):
        qs.choose_combination(runs["explore_dir"], "p9-nothing")
    with pytest.raises(ConfigError, match="not in the exploration config"):
        qs.final_config(runs["explore"], "p9-nothing")


def test_auto_needs_ground_truth(runs, tmp_path):
    cfg = qs.explore_config("images", None, PIPELINES[:1], [CLASSICAL], n_images=1)
    run_dir = qs.execute_config(cfg, out=tmp_path, base_dir=runs["root"])
    with pytest.raises(ConfigError, match="ground truth"):
        qs.choose_combination(run_dir, "auto")


def test_final_config_fixes_the_chosen_setting(runs):
    final, chosen = runs["final"], runs["chosen"]
    assert "limit" not in final["inputs"]
    assert [p["name"] for p in final["pipelines"]] == [chosen["pipeline"]]
    (seg,) = final["segmenters"]
    h = float(chosen["combination"].rsplit("_h", 1)[1])
    assert seg["params"] == {"min_size": 20, "h": h} and "sweep" not in seg


def test_final_metrics_match_an_independent_f1(runs):
    table = qs.final_metrics(runs["final_dir"])
    assert list(table["image"]) == NAMES and (table["status"] == "done").all()
    summary = pd.read_csv(runs["final_dir"] / "summary.csv")
    for _, row in table.iterrows():
        gt = tifffile.imread(runs["root"] / "labels" / f"{row['image']}.tif")
        rel = summary.loc[summary["image"] == row["image"], "labels"].iloc[0]
        pred = tifffile.imread(runs["final_dir"] / rel)
        assert row["n_true"] == len(np.unique(gt)) - 1
        assert row["f1@0.5"] == pytest.approx(_f1_at_half(gt, pred), abs=1e-6)
    assert 0.6 < table["f1@0.5"].mean() <= 1.0
    assert not any(c.startswith("t_") for c in table.columns)


def test_filter_and_export_keeps_ranges_and_writes_fiji_rois(runs, tmp_path):
    ranges = {"area": [20.0, 120.0], "circularity": [0.8, None]}
    objects, zips = qs.filter_and_export(runs["final_dir"], ranges, tmp_path / "rois")
    measurements = pd.read_csv(runs["final_dir"] / "measurements.csv")
    assert len(objects) == len(measurements)
    expect = objects["area"].between(20, 120) & (objects["circularity"] >= 0.8)
    assert (objects["kept"] == expect).all() and 0 < objects["kept"].sum() < len(objects)
    assert [z.name for z in zips] == [f"{n}.zip" for n in NAMES]
    for z in zips:
        rois = roifile.roiread(z)
        n_kept = int(objects[objects["image"] == z.stem]["kept"].sum())
        assert len(rois) == n_kept
    with pytest.raises(ConfigError, match="unknown measurement"):
        qs.filter_and_export(runs["final_dir"], {"areaa": [0, 1]}, tmp_path / "bad")


@pytest.mark.slow
def test_item_view_and_embedding(runs):
    table, labels, image = qs.item_view(runs["final_dir"])
    assert labels.shape == image.shape == (256, 256)
    assert set(table["label"]) == set(np.unique(labels[labels > 0]))
    objects = pd.read_csv(runs["final_dir"] / "measurements.csv")
    emb = qs.embed_objects(objects, n_clusters=3, seed=2)
    assert len(emb) == len(objects) and set(emb["cluster"]) == {0, 1, 2}
    assert list(emb.columns) == ["image", "label", "PC1", "PC2", "tSNE1", "tSNE2", "cluster"]
    pd.testing.assert_frame_equal(emb, qs.embed_objects(objects, n_clusters=3, seed=2))
    # clusters group objects by features: cluster means of area differ
    assert objects.assign(c=emb["cluster"].to_numpy()).groupby("c")["area"].mean().nunique() == 3
    fig = qs.plot_embedding(emb)
    assert len(fig.axes) >= 2
    with pytest.raises(ConfigError, match="at least 4"):
        qs.embed_objects(objects.head(3))


UNET = {"name": "unet", "backend": "unet", "params": {"model": "unet2d_demo"}}


def test_threshold_explorers_decode_any_image_from_one_pass_each(runs, monkeypatch):
    from opsef_core import io
    from opsef_core.segment import get_segmenter
    from opsef_core.segment.unet_backend import UNetSegmenter
    from opsef_core.widgets import DECODING_SLIDERS

    calls = []
    original = UNetSegmenter.predict

    def counting(self, image, params):
        calls.append(image.name)
        return original(self, image, params)

    monkeypatch.setattr(UNetSegmenter, "predict", counting)
    explorers = qs.threshold_explorers(runs["explore_dir"], [CLASSICAL, UNET])
    assert list(explorers) == ["classical", "unet"]
    ex = explorers["unet"]
    # the run's grid images (n_images=2 of the three copied), one pass so far: the first image's
    assert ex.state["images"] == NAMES[:2] and calls == [NAMES[0]]
    dropdown, slider = ex.widget.children[:2]  # an image selector, then the backend's decoding slider
    assert list(dropdown.options) == NAMES[:2] and slider.description == next(iter(DECODING_SLIDERS["unet"]))
    ex.update(image=NAMES[1])
    ex.update(prob_threshold=0.8)
    ex.update(prob_threshold=0.3)
    ex.update(image=NAMES[0], prob_threshold=0.7)
    assert calls == NAMES[:2] and ex.state["n_predict"] == 2  # one network pass per image, then decodings only
    # the decoded labels equal the backend's one-call segmentation with the slider's value
    image = io.read_image(runs["root"] / "images" / f"{NAMES[0]}.tif")
    ref = get_segmenter("unet").segment(image, {"model": "unet2d_demo", "prob_threshold": 0.7})
    np.testing.assert_array_equal(ex.state["labels"], ref)
    truth = tifffile.imread(runs["root"] / "labels" / f"{NAMES[0]}.tif")
    assert ex.state["f1"] == pytest.approx(_f1_at_half(truth, ref), abs=1e-9)
    # the classical entry starts at its sweep's first value
    assert explorers["classical"].state["params"]["h"] == CLASSICAL["sweep"]["h"][0]
    with pytest.raises(ConfigError, match="not a pipeline"):
        qs.threshold_explorers(runs["explore_dir"], [CLASSICAL], pipeline="nope")
    with pytest.raises(ConfigError, match="no image"):
        ex.update(image="nope")


def test_object_filter_spans_the_run_and_its_ranges_are_exported(runs, tmp_path):
    from opsef_core.widgets import object_filter

    table, labels, images = qs.run_view(runs["final_dir"])
    assert sorted(labels) == sorted(images) == NAMES
    measurements = pd.read_csv(runs["final_dir"] / "measurements.csv")
    assert len(table) == len(measurements)
    start = {"area": (20.0, 120.0), "circularity": (0.0, 2.0)}
    ex = object_filter(table, labels, images, "area", "circularity", ranges=start)
    inside = measurements["area"].between(20, 120)
    assert ex.state["n_kept"] == int(inside.sum()) and ex.state["n_objects"] == len(measurements)
    # slider limits respect the given ranges (circularity 0..2 lies beyond the data)
    _, circ = [c for c in ex.widget.children if hasattr(c, "min") and hasattr(c, "value")][-2:]
    assert circ.min <= 0.0 and circ.max >= 2.0 and tuple(circ.value) == (0.0, 2.0)
    objects, _ = qs.filter_and_export(runs["final_dir"], ex.state["ranges"], tmp_path / "a")
    assert objects["kept"].sum() == ex.state["n_kept"]
    # moving the area range changes what is exported, image by image
    ex.update(area=(60.0, 120.0))
    assert ex.state["n_kept"] == int(measurements["area"].between(60, 120).sum()) < int(inside.sum())
    objects2, zips2 = qs.filter_and_export(runs["final_dir"], ex.state["ranges"], tmp_path / "b")
    assert objects2["kept"].sum() == ex.state["n_kept"] < objects["kept"].sum()
    for z in zips2:
        assert len(roifile.roiread(z)) == ex.state["kept_by_image"][z.stem]
    # the overlay follows the image selector: another image's filtered labels
    out = ex.update(image=NAMES[2])
    kept_here = objects2[(objects2["image"] == NAMES[2]) & objects2["kept"]]["label"]
    assert set(np.unique(out[out > 0])) == set(kept_here)
