"""The run engine: plan, one run end to end, reuse of passes, resume, re-run, failures, folders."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core.config import config_from_dict, load_config
from opsef_core.errors import RunFolderError
from opsef_core.run import create_run_folder, execute, plan, plan_items
from opsef_core.segment import get_segmenter

PIXEL = 0.5


def _discs(rng, shape=(64, 64), n=5, r=5):
    """A noisy fluorescence-like image with ``n`` separated discs, and its truth labels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    centres = []
    while len(centres) < n:
        c = rng.integers(r + 2, np.array(shape) - r - 2)
        if all(np.hypot(*(c - d)) > 2 * r + 4 for d in centres):
            centres.append(c)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    img = 100 + 800 * (labels > 0) + rng.normal(0, 20, shape)
    return np.clip(img, 0, None).astype(np.uint16), labels


def make_dataset(root: Path, n_images=2, corrupt=False, seed=0):
    """``root/images/*.tif`` (calibrated ImageJ TIFFs) and ``root/labels/*.tif``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    truths = {}
    for k in range(n_images):
        img, lab = _discs(rng, n=4 + k)
        res = (1 / PIXEL, 1 / PIXEL)
        tifffile.imwrite(root / "images" / f"img_{k}.tif", img, imagej=True, resolution=res,
                         metadata={"unit": "um", "axes": "YX"})
        tifffile.imwrite(root / "labels" / f"img_{k}.tif", lab, imagej=True, resolution=res,
                         metadata={"unit": "um", "axes": "YX"})
        truths[f"img_{k}"] = lab
    if corrupt:
        (root / "images" / "img_bad.tif").write_bytes(b"II*\x00" + b"\x00garbage" * 10)
    return truths


def make_config(root: Path, **changes) -> Path:
    cfg = {
        "inputs": {"path": "data/images", "ground_truth": "data/labels"},
        "pipelines": [
            {"name": "raw", "steps": []},
            {"name": "median", "steps": [{"name": "median", "params": {"radius": 1}}]},
        ],
        "segmenters": [{"name": "classical", "backend": "classical",
                        "params": {"sigma": 1.0, "min_size": 10}, "sweep": {"h": [1.0, 3.0]}}],
        "postprocess": {"min_size": 30},
        "outputs": {"rois": True},
        "evaluation": {"thresholds": [0.5, 0.75]},
    }
    cfg.update(changes)
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


class Spy:
    """Counts network passes and decodings of the classical backend (and can interrupt)."""

    def __init__(self, monkeypatch, interrupt_on_predict=None):
        self.predict = 0
        self.decode = 0
        seg = get_segmenter("classical")
        orig_predict, orig_decode = type(seg).predict, type(seg).decode

        def predict(this, image, params):
            self.predict += 1
            if interrupt_on_predict is not None and self.predict == interrupt_on_predict:
                raise KeyboardInterrupt
            return orig_predict(this, image, params)

        def decode(this, pred, image, params):
            self.decode += 1
            return orig_decode(this, pred, image, params)

        monkeypatch.setattr(type(seg), "predict", predict)
        monkeypatch.setattr(type(seg), "decode", decode)


@pytest.fixture
def project(tmp_path):
    truths = make_dataset(tmp_path / "data")
    return tmp_path, make_config(tmp_path), truths


def test_plan_items_and_combinations(project):
    root, cfg_path, _ = project
    cfg = load_config(cfg_path)
    combos = plan(cfg)
    assert [c.id for c in combos] == [
        "p1-raw__s1-classical_h1", "p1-raw__s2-classical_h3",
        "p2-median__s1-classical_h1", "p2-median__s2-classical_h3"]
    # h is a decoding parameter: both settings share one network key
    assert len({c.network_key for c in combos}) == 1
    items = plan_items(cfg)
    assert [i.id for i in items] == ["img_0", "img_1"]
    assert all(Path(i.ground_truth).parent == (root / "data" / "labels").resolve() for i in items)


@pytest.mark.slow
def test_run_end_to_end_writes_every_file(project, monkeypatch):
    root, cfg_path, truths = project
    spy = Spy(monkeypatch)
    from opsef_core.preprocess import Pipeline

    applied = []
    real_apply = Pipeline.apply
    monkeypatch.setattr(Pipeline, "apply", lambda self, image: applied.append(self.name) or real_apply(self, image))
    run = execute(cfg_path, out=root / "runs", progress=False)
    assert run.parent == root / "runs" and run.name.startswith("cfg-")
    # each pipeline once per image; one network pass per image and pipeline, one decoding per setting
    assert sorted(applied) == ["median", "median", "raw", "raw"]
    assert spy.predict == 2 * 2 and spy.decode == 2 * 4

    combos = [c.id for c in plan(load_config(cfg_path))]
    for image, truth in truths.items():
        for cid in combos:
            lab = tifffile.imread(run / "labels" / f"{image}__{cid}.tif")
            assert lab.dtype == np.uint16 and lab.shape == truth.shape
            filt = tifffile.imread(run / "labels_filtered" / f"{image}__{cid}.tif")
            assert set(np.unique(filt)) <= set(np.unique(lab))
            assert (run / "overlays" / f"{image}__{cid}.png").stat().st_size > 0
            assert (run / "rois" / f"{image}__{cid}.zip").is_file()
        assert (run / "montage" / f"{image}.png").is_file()
        # calibration travels with the labels
        with tifffile.TiffFile(run / "labels" / f"{image}__{combos[0]}.tif") as tf:
            xres = tf.pages[0].tags["XResolution"].value
            assert xres[0] / xres[1] == pytest.approx(1 / PIXEL)

    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == 2 * 4 and set(summary["status"]) == {"done"}
    assert {"image", "combination", "pipeline", "segmenter", "params", "n_objects", "t_network_s",
            "t_decode_s", "status", "error"} <= set(summary.columns)
    # the raw pipeline finds exactly the separated discs of the truth
    raw = summary[summary["pipeline"] == "raw"]
    for _, row in raw.iterrows():
        assert row["n_objects"] == truths[row["image"]].max()

    meas = pd.read_csv(run / "measurements.csv")
    assert {"image", "pipeline", "segmenter", "combination", "params", "param_h", "label", "area"} <= set(meas.columns)
    assert len(meas) == summary["n_objects_filtered"].sum()
    # areas are in µm² (0.25 µm² per pixel): a radius-5 disc has 81 pixels
    assert meas["area"].median() == pytest.approx(81 * PIXEL**2, rel=0.15)

    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 2 * 4
    assert {"f1@0.5", "precision@0.75", "recall@0.5", "accuracy@0.5", "aji"} <= set(metrics.columns)
    raw_m = metrics[metrics["pipeline"] == "raw"]
    assert (raw_m["f1@0.5"] == 1.0).all()
    ranking = pd.read_csv(run / "ranking.csv")
    assert len(ranking) == 4 and ranking["rank"].min() == 1
    assert (run / "ranking.png").stat().st_size > 0

    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "completed" and rec["kind"] == "opsef-run-record"
    assert rec["config"]["inputs"]["path"] == "data/images"  # as given
    assert rec["resolved_paths"]["inputs.path"] == str((root / "data" / "images").resolve())
    assert rec["packages"]["numpy"] == np.__version__
    files = {Path(f["path"]).name + f["role"]: f for f in rec["inputs"]}
    img0 = root / "data" / "images" / "img_0.tif"
    assert files["img_0.tifinput"]["sha256"] == hashlib.sha256(img0.read_bytes()).hexdigest()
    assert files["img_0.tifinput"]["size"] == img0.stat().st_size
    assert [it["status"] for it in rec["items"]] == ["done", "done"]
    assert rec["models"] and rec["models"][0]["backend"] == "classical"
    assert rec["started"].endswith("+00:00") and rec["finished"] >= rec["started"]
    assert len(rec["combinations"]) == 4
    # a second run never overwrites the first
    run2 = execute(cfg_path, out=root / "runs", progress=False)
    assert run2 != run and run.is_dir() and run2.is_dir()


@pytest.mark.slow
def test_resume_skips_finished_items(project, monkeypatch):
    root, cfg_path, _ = project
    cfg = load_config(cfg_path).copy_with(pipelines=[{"name": "raw", "steps": []}], outputs={"overlays": False},
                                          postprocess=None)
    Spy(monkeypatch, interrupt_on_predict=2)  # dies on the second image
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, out=root / "runs", progress=False)
    run = next((root / "runs").iterdir())
    assert (run / "items" / "img_0.json").is_file() and not (run / "items" / "img_1.json").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    marker = (run / "items" / "img_0.json").stat().st_mtime_ns

    spy2 = Spy(monkeypatch)
    again = execute(None, resume=run, progress=False)
    assert again == run
    assert spy2.predict == 1 and spy2.decode == 2  # only the unfinished image
    assert (run / "items" / "img_0.json").stat().st_mtime_ns == marker
    summary = pd.read_csv(run / "summary.csv")
    assert sorted(summary["image"].unique()) == ["img_0", "img_1"] and set(summary["status"]) == {"done"}
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "completed" and len(rec["resumed"]) == 1
    # resuming a finished run does no work at all
    spy3 = Spy(monkeypatch)
    execute(None, resume=run, progress=False)
    assert spy3.predict == 0
    with pytest.raises(RunFolderError):
        execute(None, resume=root)


@pytest.mark.slow
def test_rerun_from_run_json_gives_identical_labels(project, tmp_path, monkeypatch):
    root, cfg_path, _ = project
    cfg = load_config(cfg_path).copy_with(outputs={"overlays": False, "montage": False, "measurements": False})
    run1 = execute(cfg, out=root / "runs", progress=False)
    monkeypatch.chdir(tmp_path / "data")  # relative paths resolve against the original config's folder
    recorded = load_config(run1 / "run.json")
    assert recorded.model_dump() == cfg.model_dump()
    run2 = execute(recorded, out=root / "runs", progress=False)
    assert run2 != run1
    names = sorted(p.name for p in (run1 / "labels").iterdir())
    assert names == sorted(p.name for p in (run2 / "labels").iterdir()) and len(names) == 8
    for n in names:
        np.testing.assert_array_equal(tifffile.imread(run1 / "labels" / n), tifffile.imread(run2 / "labels" / n))


@pytest.mark.slow
def test_corrupt_input_is_recorded_and_others_complete(tmp_path):
    make_dataset(tmp_path / "data", corrupt=True)
    cfg = load_config(make_config(tmp_path)).copy_with(
        pipelines=[{"name": "raw", "steps": []}], outputs={"overlays": False, "montage": False})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    bad = summary[summary["image"] == "img_bad"]
    assert len(bad) == 2 and set(bad["status"]) == {"failed"}
    assert bad["error"].str.contains("img_bad.tif").all()
    assert set(summary[summary["image"] != "img_bad"]["status"]) == {"done"}
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "completed_with_errors"
    status = {it["id"]: it for it in rec["items"]}
    assert status["img_bad"]["status"] == "failed" and "img_bad.tif" in status["img_bad"]["error"]
    assert status["img_0"]["status"] == status["img_1"]["status"] == "done"
    assert len(pd.read_csv(run / "metrics.csv")) == 4


def test_run_folders_are_never_reused(tmp_path):
    from datetime import datetime

    now = datetime(2024, 1, 2, 3, 4, 5)
    a = create_run_folder(tmp_path, "demo", now=now)
    (a / "keep.txt").write_text("x")
    b = create_run_folder(tmp_path, "demo", now=now)
    c = create_run_folder(tmp_path, "demo", now=now)
    assert [p.name for p in (a, b, c)] == ["demo-20240102-030405", "demo-20240102-030405-2",
                                          "demo-20240102-030405-3"]
    assert (a / "keep.txt").read_text() == "x"


def test_bad_inputs_fail_before_creating_a_run(tmp_path):
    from opsef_core.errors import InputFileError

    cfg = config_from_dict({"inputs": {"path": "nowhere"}, "pipelines": [{"name": "raw"}],
                            "segmenters": [{"name": "c", "backend": "classical"}]})
    cfg.with_base_dir(tmp_path)
    with pytest.raises(InputFileError, match="nowhere"):
        execute(cfg, out=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_record_names_the_device_each_network_ran_on(tmp_path):
    make_dataset(tmp_path / "data", n_images=1)
    cfg = make_config(tmp_path, segmenters=[
        {"name": "unet", "backend": "unet", "params": {"model": "unet2d_demo", "device": "auto"}},
        {"name": "classical", "backend": "classical", "params": {"min_size": 10}},
    ], pipelines=[{"name": "raw", "steps": []}])
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    models = {m["segmenter"]: m for m in json.loads((run / "run.json").read_text())["models"]}
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert models["unet"]["device_requested"] == "auto"
    assert models["unet"]["device"] == expected and models["unet"]["framework"] == "torch"
    assert "device" not in models["classical"]  # no network, no device
    assert len(list((run / "labels").glob("img_0__*unet*.tif"))) == 1


def test_classes_from_a_channel_mask_reach_measurements_summary_and_label_images(tmp_path):
    make_dataset(tmp_path / "data", n_images=1)
    # the discs (900 on a 100 background) are scaled by a left-to-right ramp (x0.4..x1.6): a mask
    # at the fixed value 600 classes the left discs "dim" and the right ones "bright"
    img_path = tmp_path / "data" / "images" / "img_0.tif"
    img = tifffile.imread(img_path).astype(np.float64)
    ramp = np.linspace(0.4, 1.6, img.shape[1])[None, :]
    tifffile.imwrite(img_path, (img * ramp).astype(np.uint16), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "YX"})
    cfg = make_config(tmp_path, pipelines=[{"name": "raw", "steps": []}], segmenters=[
        {"name": "classical", "backend": "classical", "params": {"sigma": 1.0, "min_size": 10}}],
        postprocess={"min_size": 10, "class_mask": {"channel": 0, "method": 600.0, "sigma": 0.0,
                                                     "rule": "majority", "class_names": ["dim", "bright"]}},
        outputs={"class_labels": True})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    # per-class label images are optional (off by default): the class is a column already
    default = execute(load_config(cfg).copy_with(**{"outputs.class_labels": False}), out=tmp_path / "runs",
                      progress=False)
    assert not (default / "labels_classes").exists() and (default / "classes").is_dir()
    meas = pd.read_csv(run / "measurements.csv")
    assert set(meas["class"]) == {"dim", "bright"}
    # independent check: an object is bright when most of its pixels exceed the fixed threshold
    filt = tifffile.imread(next((run / "labels_filtered").glob("*.tif")))
    scaled = tifffile.imread(img_path)
    for _, r in meas.iterrows():
        inside = scaled[filt == r["label"]]
        assert r["class"] == ("bright" if (inside > 600).mean() > 0.5 else "dim")
    summary = pd.read_csv(run / "summary.csv")
    assert summary["n_class_dim"].iloc[0] + summary["n_class_bright"].iloc[0] == summary["n_objects_filtered"].iloc[0]
    for cls in ("dim", "bright"):
        lab = tifffile.imread(next((run / "labels_classes" / cls).glob("*.tif")))
        assert set(np.unique(lab[lab > 0])) == set(meas.loc[meas["class"] == cls, "label"])


def test_channel_ratios_from_the_config(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "data" / "images").mkdir(parents=True)
    img, lab = _discs(rng, n=4)
    two = np.stack([img, (img // 2).astype(np.uint16)])  # second channel is half the first
    tifffile.imwrite(tmp_path / "data" / "images" / "two.tif", two, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "CYX", "Labels": ["a", "b"]})
    cfg = make_config(tmp_path, inputs={"path": "data/images"}, pipelines=[{"name": "raw", "steps": []}],
                      segmenters=[{"name": "classical", "backend": "classical",
                                   "params": {"min_size": 10, "channel": "a"}}],
                      outputs={"channel_ratios": [["a", "b"]]})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    meas = pd.read_csv(run / "measurements.csv")
    assert len(meas) == 4
    np.testing.assert_allclose(meas["ratio_a_b"], meas["a_mean"] / meas["b_mean"])
    assert (meas["ratio_a_b"].between(1.9, 2.1)).all()


def test_tiled_run_gives_the_whole_image_result(tmp_path):
    """execution.tiling: images larger than a tile are segmented by tiles, objects kept whole.

    With fixed normalisation limits and threshold the tiled labels are the whole-image ones.
    """
    truths = make_dataset(tmp_path / "data", n_images=2)
    seg = [{"name": "classical", "backend": "classical",
            "params": {"sigma": 1.0, "min_size": 10, "threshold": 0.3, "normalize_limits": [100, 900]},
            "sweep": {"h": [1.0, 2.0]}}]
    whole = execute(make_config(tmp_path, segmenters=seg, pipelines=[{"name": "raw", "steps": []}]),
                    out=tmp_path / "whole", progress=False)
    (tmp_path / "cfg.json").unlink()
    cfg = make_config(tmp_path, segmenters=seg, pipelines=[{"name": "raw", "steps": []}],
                      execution={"tiling": {"tile_shape": 40, "overlap": 16}})
    tiled = execute(cfg, out=tmp_path / "tiled", progress=False)
    summary = pd.read_csv(tiled / "summary.csv")
    assert (summary["status"] == "done").all() and (summary["tiles"] > 1).all()
    # the sweep shares one network pass per tile: the second setting only decodes
    assert list(summary["network_reused"]) == [False, True] * 2
    marker = json.loads((tiled / "items" / "img_0.json").read_text())
    n_tiles = int(summary["tiles"].iloc[0])
    assert marker["counts"]["network"] == n_tiles and marker["counts"]["decode"] == 2 * n_tiles
    for f in sorted((whole / "labels").glob("*.tif")):
        a, b = tifffile.imread(f), tifffile.imread(tiled / "labels" / f.name)
        # the same objects (label values may differ): identical partitions of the image
        pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
        assert len(pairs) == len(np.unique(a)) == len(np.unique(b)), f.name
    assert json.loads((tiled / "run.json").read_text())["config"]["execution"]["tiling"]["tile_shape"] == 40
    assert len(truths) == 2
    with pytest.raises(Exception, match="tile_shape"):
        load_config(make_config(tmp_path, execution={"tiling": {"tile_shape": 0}}))


def test_tile_shape_that_does_not_fit_the_image_is_recorded_not_raised(tmp_path):
    make_dataset(tmp_path / "data", n_images=1)
    cfg = make_config(tmp_path, pipelines=[{"name": "raw", "steps": []}],
                      segmenters=[{"name": "classical", "backend": "classical", "params": {"min_size": 10}}],
                      execution={"tiling": {"tile_shape": [16, 32, 32], "overlap": 4}})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    assert (summary["status"] == "failed").all()
    assert summary["error"].str.contains("tile_shape").all() and summary["error"].str.contains("YX").all()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"  # every item failed


def test_an_items_outputs_reach_the_disk_before_its_done_marker(project, monkeypatch):
    """Per item: no fsync per output file, one file-system sync with every output in place and
    no marker yet, then the marker (synced at the item's end)."""
    import os

    from opsef_core.io import atomic

    root, cfg_path, _ = project
    seen = []  # at each sync: the item markers and the number of output files then on disk
    real_sync = atomic.sync_filesystem

    def spy(folder):
        folder = Path(folder)
        seen.append(({p.name for p in (folder / "items").glob("*.json")},
                     {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                      if p.is_file() and p.parent.name in ("labels", "overlays", "rois", "montage")}))
        real_sync(folder)

    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic, "sync_filesystem", spy)
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    run = execute(cfg_path, out=root / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    items = sorted(summary["image"].unique())
    per_item = len(summary) // len(items)  # combinations per item
    assert len(seen) == 2 * len(items)  # before and after each marker
    for k, item in enumerate(items):
        markers_before, outputs = seen[2 * k]
        assert f"{item}.json" not in markers_before
        # every label, overlay and ROI file of this item is on disk at the sync before its marker
        mine = {o for o in outputs if Path(o).name.startswith(f"{item}__")}
        assert len([o for o in mine if o.startswith("labels/")]) == per_item
        assert len([o for o in mine if o.startswith("overlays/")]) == per_item
        assert f"{item}.json" in seen[2 * k + 1][0]
    # the run-level files (record, tables) keep their own fsync; the items' many outputs do not
    n_outputs = sum(1 for p in run.rglob("*") if p.is_file() and p.parent.name in ("labels", "overlays", "rois"))
    assert n_outputs >= 3 * per_item * len(items) and len(fsyncs) < n_outputs / 2
