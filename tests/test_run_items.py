"""Run items = file x series x time point; geometry-changing pipelines scored on the input grid;
paths resolved against the config's folder; every combination in the ranking."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.transform import resize

from opsef_core import evaluate
from opsef_core.config import config_from_dict, load_config
from opsef_core.errors import ConfigError
from opsef_core.run import execute, plan, plan_items
from opsef_core.testing.lif import write_lif

ROOT = Path(__file__).resolve().parents[1]
NUCLEI = ROOT / "demo_data" / "nuclei2d"


def _blobs(rng, shape=(48, 48), n=3, r=4):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.uint16)
    centres: list = []
    while len(centres) < n:  # separated discs: one object each
        c = rng.integers(r + 2, np.array(shape) - r - 2)
        if all(np.hypot(*(c - d)) > 2 * r + 4 for d in centres):
            centres.append(c)
    for i, (cy, cx) in enumerate(centres, start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return (50 + 600 * (lab > 0) + rng.normal(0, 10, shape)).clip(0).astype(np.uint16), lab


def _lif(path: Path, n_t=(3, 3)) -> dict:
    """A .lif with series A and B of ``n_t`` time points; object count grows with t."""
    rng = np.random.default_rng(4)
    series, truth = [], {}
    for name, nt in zip("AB", n_t):
        frames = []
        for t in range(nt):
            img, lab = _blobs(rng, n=2 + t)
            frames.append(img)
            truth[(name, t)] = lab
        series.append({"name": name, "data": np.stack(frames)[:, None, None], "time_interval": 30.0,
                       "pixel_size": {"X": 0.5, "Y": 0.5}})
    write_lif(path, series)
    return truth


def _config(tmp_path: Path, inputs: dict, **extra) -> Path:
    cfg = {"inputs": inputs, "pipelines": [{"name": "raw", "steps": []}],
           "segmenters": [{"name": "classical", "backend": "classical",
                           "params": {"sigma": 1.0, "min_size": 5, "h": 3.0}}],
           "outputs": {"overlays": False, "montage": False}, **extra}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def test_lif_series_and_time_points_are_items_named_with_series_and_t(tmp_path):
    truth = _lif(tmp_path / "data" / "plate.lif")
    cfg = load_config(_config(tmp_path, {"path": "data", "include": ["*.lif"]}))
    items = plan_items(cfg)
    expected = [(s, t) for s in "AB" for t in range(3)]
    assert [(it.series, it.t) for it in items] == expected
    assert [it.id for it in items] == [f"plate__{s}__t{t:03d}" for s, t in expected]
    # selectors narrow them: by name (glob) and time point (negative counts from the end)
    narrowed = plan_items(cfg.copy_with(**{"inputs.scenes": ["B*"], "inputs.time_points": [0, -1]}))
    assert [(it.series, it.t) for it in narrowed] == [("B", 0), ("B", 2)]
    assert [(it.series, it.t) for it in plan_items(cfg.copy_with(**{"inputs.scenes": [0]}))] == \
        [("A", t) for t in range(3)]
    with pytest.raises(ConfigError, match="time_points"):
        plan_items(cfg.copy_with(**{"inputs.time_points": [3]}))
    with pytest.raises(ConfigError, match="no series named 'C'"):
        plan_items(cfg.copy_with(**{"inputs.scenes": ["C"]}))

    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == len(expected) * len(plan(cfg)) and (summary["status"] == "done").all()
    assert list(zip(summary["series"], summary["t"])) == expected
    meas = pd.read_csv(run / "measurements.csv")
    # a growth curve is a group-by: objects per (series, t) equal the truth's count
    counts = meas.groupby(["series", "t"]).size()
    for (s, t), lab in truth.items():
        assert counts[(s, t)] == len(np.unique(lab[lab > 0]))
    assert set(meas["time_s"]) == {0.0, 30.0, 60.0}
    for it in items:  # each item's labels come from its own plane
        lab = tifffile.imread(run / "labels" / f"{it.id}__p1-raw__s1-classical.tif")
        assert lab.shape == (48, 48)
        assert (lab > 0).sum() == pytest.approx((truth[(it.series, it.t)] > 0).sum(), rel=0.3)
    record = json.loads((run / "run.json").read_text())
    assert [(i["series"], i["t"]) for i in record["items"]] == expected
    assert [f["role"] for f in record["inputs"]] == ["input"]  # one checksum for the one file


def test_time_lapse_tiff_items_and_ground_truth_per_time_point(tmp_path):
    rng = np.random.default_rng(1)
    frames, labs = zip(*(_blobs(rng, n=2 + t) for t in range(2)))
    (tmp_path / "data").mkdir()
    (tmp_path / "gt").mkdir()
    tifffile.imwrite(tmp_path / "data" / "movie.tif", np.stack(frames), imagej=True,
                     metadata={"axes": "TYX"})
    for t, lab in enumerate(labs):
        tifffile.imwrite(tmp_path / "gt" / f"movie__t{t:03d}.tif", lab)
    run = execute(_config(tmp_path, {"path": "data", "ground_truth": "gt"}), out=tmp_path / "runs",
                  progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["image"]) == ["movie__t000", "movie__t001"] and list(metrics["t"]) == [0, 1]
    assert (metrics["f1@0.5"] > 0.9).all()


@pytest.mark.slow
def test_rescale_and_bin_pipelines_are_scored_on_the_input_grid_and_ranked(tmp_path):
    pipelines = [{"name": "raw", "steps": []},
                 {"name": "half", "steps": [{"name": "rescale", "params": {"factor": 0.5}}]},
                 {"name": "bin2", "steps": [{"name": "bin", "params": {"factors": 2}}]},
                 {"name": "too_coarse", "steps": [{"name": "bin", "params": {"factors": 4096}}]}]
    cfg = config_from_dict({
        "inputs": {"path": str(NUCLEI / "images"), "ground_truth": str(NUCLEI / "labels"), "limit": 2},
        "pipelines": pipelines,
        "segmenters": [{"name": "classical", "backend": "classical", "params": {"min_size": 5}}],
        "outputs": {"montage": False}})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    ranking = pd.read_csv(run / "ranking.csv")
    n_items = len(plan_items(cfg))
    # every combination is in the ranking; the one that failed says why instead of vanishing
    assert set(ranking["pipeline"]) == {p["name"] for p in pipelines}
    scored = ranking[ranking["pipeline"] != "too_coarse"]
    assert (scored["n_images"] == n_items).all() and scored["not_scored"].isna().all()
    bad = ranking[ranking["pipeline"] == "too_coarse"].iloc[0]
    assert bad["n_images"] == 0 and "scored on 0 of 2" in bad["not_scored"]
    metrics = pd.read_csv(run / "metrics.csv")
    for _, row in summary[summary["pipeline"].isin(["half", "bin2"])].iterrows():
        labels = tifffile.imread(run / row["labels"])
        working = tifffile.imread(run / row["labels_working"])
        gt = tifffile.imread(NUCLEI / "labels" / f"{row['image']}.tif")
        assert labels.shape == gt.shape and working.shape == tuple(n // 2 for n in gt.shape)
        # nearest-neighbour map back, independent of opsef's code path
        np.testing.assert_array_equal(
            labels, resize(working, gt.shape, order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype))
        f1 = metrics.loc[(metrics["image"] == row["image"]) & (metrics["combination"] == row["combination"]),
                         "f1@0.5"].item()
        assert f1 == pytest.approx(evaluate.match(gt, labels, threshold=0.5).f1)
        assert f1 > 0.5
    # measurements in µm on the input grid: same pixel size as the raw pipeline's objects
    meas = pd.read_csv(run / "measurements.csv")
    areas = meas.groupby("pipeline")["area"].median()
    assert areas["half"] == pytest.approx(areas["raw"], rel=0.4)  # not 4x off: the same grid and units


def test_rerun_from_another_folder_resolves_every_path_against_the_config(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    (tmp_path / "proj" / "images").mkdir(parents=True)
    (tmp_path / "proj" / "masks").mkdir()
    for k in range(2):
        img, lab = _blobs(rng, n=3)
        tifffile.imwrite(tmp_path / "proj" / "images" / f"im{k}.tif", img)
        half = np.zeros(img.shape, np.uint8)
        half[:, : img.shape[1] // 2] = 1
        tifffile.imwrite(tmp_path / "proj" / "masks" / f"im{k}_mask.tif", half if k == 0 else 1 - half)
    tifffile.imwrite(tmp_path / "proj" / "one_mask.tif", np.ones((48, 48), np.uint8))
    cfg = _config(tmp_path / "proj", {"path": "images"},
                  postprocess={"class_mask": {"folder": "masks", "suffix": "_mask", "rule": "centroid"}})
    monkeypatch.chdir(tmp_path / "proj")
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    meas = pd.read_csv(run / "measurements.csv")
    assert set(meas["class"]) == {"inside", "outside"}
    for _, r in meas.iterrows():  # the per-image mask decided each object's class
        left = r["centroid_x_px"] < 24  # im0's mask is the left half, im1's the right half
        inside = left if r["image"] == "im0" else not left
        assert r["class"] == ("inside" if inside else "outside")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    again = execute(run / "run.json", out=tmp_path / "runs", progress=False)
    for f in sorted((run / "labels_filtered").glob("*.tif")):
        np.testing.assert_array_equal(tifffile.imread(f), tifffile.imread(again / "labels_filtered" / f.name))
    pd.testing.assert_frame_equal(pd.read_csv(again / "measurements.csv")[["image", "label", "class"]],
                                  meas[["image", "label", "class"]])
    # a relative class_mask.file too; the record stores the resolved paths
    cfg2 = _config(tmp_path / "proj", {"path": "images"}, postprocess={"class_mask": {"file": "one_mask.tif"}})
    run2 = execute(cfg2, out=tmp_path / "runs", progress=False)
    rec = json.loads((run2 / "run.json").read_text())
    assert rec["resolved_paths"]["postprocess.class_mask.file"] == str(tmp_path / "proj" / "one_mask.tif")
    assert set(pd.read_csv(run2 / "measurements.csv")["class"]) == {"inside"}


def test_an_image_without_its_class_mask_fails_visibly(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(2):
        tifffile.imwrite(tmp_path / "images" / f"im{k}.tif", _blobs(rng)[0])
    tifffile.imwrite(tmp_path / "masks" / "im0.tif", np.ones((48, 48), np.uint8))
    cfg = _config(tmp_path, {"path": "images"}, postprocess={"class_mask": {"folder": "masks"}})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv").set_index("image")
    assert summary.loc["im0", "status"] == "done"
    assert summary.loc["im1", "status"] == "failed" and "no class mask for item im1" in summary.loc["im1", "error"]


def test_demo_run_folder_is_small_and_label_tiffs_are_compressed(tmp_path):
    demo = load_config(ROOT / "configs" / "demo.json").copy_with(**{"inputs.limit": 1})
    demo = demo.copy_with(segmenters=[s.model_dump(mode="json") for s in demo.segmenters
                                      if s.backend == "classical"])
    run = execute(demo, out=tmp_path / "runs", progress=False)
    labels = sorted((run / "labels").glob("*.tif"))
    assert labels and not (run / "labels_classes").exists()
    with tifffile.TiffFile(labels[0]) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.imagej_metadata is not None and "LUTs" in tif.imagej_metadata
        assert page.tags["XResolution"].value[0] > 0
    raw = tifffile.imread(labels[0])
    assert raw.nbytes > 4 * labels[0].stat().st_size  # compressed well below the raw size
    shutil.rmtree(run)


def test_mosaic_tiles_of_a_lif_are_separate_items(tmp_path):
    rng = np.random.default_rng(5)
    tiles = np.stack([_blobs(rng, n=2 + k)[0] for k in range(2)])  # M Y X
    write_lif(tmp_path / "data" / "mosaic.lif", [
        {"name": "scan", "data": tiles, "mosaic": True, "pixel_size": {"X": 0.5, "Y": 0.5},
         "tile_positions": [(0, 0, 0.0, 0.0), (1, 0, 24e-6, 0.0)]},
        {"name": "single", "data": _blobs(rng)[0], "pixel_size": {"X": 0.5, "Y": 0.5}}])
    cfg = load_config(_config(tmp_path, {"path": "data", "include": ["*.lif"]}))
    items = plan_items(cfg)
    assert [it.id for it in items] == ["mosaic__scan__m000", "mosaic__scan__m001", "mosaic__single"]
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    assert list(summary["n_objects"]) == [2, 3, 3]


def test_slices_mode_segments_a_stack_plane_by_plane_with_one_pass_per_plane(tmp_path):
    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter

    rng = np.random.default_rng(7)
    stack = np.stack([_blobs(rng, n=2 + z % 2)[0] for z in range(4)])
    (tmp_path / "data").mkdir()
    tifffile.imwrite(tmp_path / "data" / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    cfg = load_config(_config(tmp_path, {"path": "data"}, segmenters=[
        {"name": "planes", "backend": "classical", "params": {"sigma": 1.0, "min_size": 5},
         "sweep": {"h": [1.0, 3.0]}, "slices": True}]))
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    summary = pd.read_csv(run / "summary.csv")
    assert list(summary["network_reused"]) == [False, True]
    marker = json.loads((run / "items" / "stack.json").read_text())
    assert marker["counts"]["network"] == stack.shape[0] and marker["counts"]["decode"] == 2 * stack.shape[0]
    seg = get_segmenter("classical")
    for h, row in zip((1.0, 3.0), summary.itertuples()):
        labels = tifffile.imread(run / row.labels)
        assert labels.shape == stack.shape
        ids = [set(np.unique(p[p > 0])) for p in labels]
        assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])  # unique over the stack
        for z in range(stack.shape[0]):  # each plane equals the backend's own 2D result
            ref = seg.segment(Image.from_array(stack[z], "YX"), {"sigma": 1.0, "min_size": 5, "h": h})
            assert evaluate.match(ref, labels[z], threshold=0.99).f1 == 1.0


def test_crop_window_applies_to_image_and_ground_truth(tmp_path):
    window = {"Y": [32, 160], "X": [64, 224]}
    cfg = config_from_dict({
        "inputs": {"path": str(NUCLEI / "images"), "ground_truth": str(NUCLEI / "labels"), "limit": 1,
                   "crop": window},
        "pipelines": [{"name": "raw", "steps": []}],
        "segmenters": [{"name": "classical", "backend": "classical", "params": {"min_size": 5}}],
        "outputs": {"montage": False, "overlays": False}})
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    row = pd.read_csv(run / "summary.csv").iloc[0]
    labels = tifffile.imread(run / row["labels"])
    assert labels.shape == (128, 160)
    gt = tifffile.imread(NUCLEI / "labels" / f"{row['image']}.tif")[32:160, 64:224]
    f1 = pd.read_csv(run / "metrics.csv")["f1@0.5"].item()
    assert f1 == pytest.approx(evaluate.match(gt, labels, threshold=0.5).f1) and f1 > 0.5
    bad = cfg.copy_with(**{"inputs.crop": {"Y": [0, 10_000]}})
    summary = pd.read_csv(execute(bad, out=tmp_path / "runs", progress=False) / "summary.csv")
    assert (summary["status"] == "failed").all() and "exceeds the image's 256 pixels" in summary["error"].iloc[0]


def test_plane_by_plane_runs_are_scored_plane_by_plane(tmp_path):
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:48, :48]
    zz = np.arange(6)[:, None, None]
    truth = np.zeros((6, 48, 48), np.uint16)
    for i, (cy, cx) in enumerate([(12, 12), (30, 34)], start=1):  # two balls through the stack
        truth[(zz - 2.5) ** 2 / 9 + ((yy - cy) ** 2 + (xx - cx) ** 2) / 36 <= 1] = i
    stack = (60 + 700 * (truth > 0) + rng.normal(0, 10, truth.shape)).clip(0).astype(np.uint16)
    for d in ("data", "gt"):
        (tmp_path / d).mkdir()
    tifffile.imwrite(tmp_path / "data" / "s.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "gt" / "s.tif", truth, imagej=True, metadata={"axes": "ZYX"})
    cfg = load_config(_config(tmp_path, {"path": "data", "ground_truth": "gt"}, segmenters=[
        {"name": "planes", "backend": "classical", "params": {"sigma": 0.5, "min_size": 3}, "slices": True}]))
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    m = pd.read_csv(run / "metrics.csv").iloc[0]
    assert bool(m["scored_per_plane"])
    n_sections = sum(len(np.unique(p[p > 0])) for p in truth)  # truth objects per plane, pooled
    assert m["n_true"] == n_sections and m["f1@0.5"] > 0.9


def test_unreadable_ground_truth_is_named_in_summary_and_ranking(tmp_path):
    rng = np.random.default_rng(9)
    for d in ("data", "gt"):
        (tmp_path / d).mkdir()
    img, lab = _blobs(rng)
    tifffile.imwrite(tmp_path / "data" / "a.tif", img)
    (tmp_path / "gt" / "a.tif").write_bytes(b"II*\x00" + b"\x00junk" * 8)
    run = execute(_config(tmp_path, {"path": "data", "ground_truth": "gt"}), out=tmp_path / "runs",
                  progress=False)
    summary = pd.read_csv(run / "summary.csv")
    assert summary["gt_error"].str.contains("ground truth").all() and not summary["scored"].any()
    ranking = pd.read_csv(run / "ranking.csv")
    assert (ranking["n_images"] == 0).all() and ranking["not_scored"].str.contains("ground truth: ").all()


def test_ome_tiff_series_and_time_points_are_items(tmp_path):
    rng = np.random.default_rng(10)
    (tmp_path / "data").mkdir()
    movie = np.stack([_blobs(rng, n=2 + t)[0] for t in range(3)])
    with tifffile.TiffWriter(tmp_path / "data" / "plate.ome.tif", ome=True) as tw:
        tw.write(movie, metadata={"axes": "TYX", "Name": "wellA"})
        tw.write(_blobs(rng, n=4)[0], metadata={"axes": "YX", "Name": "wellB"})
    cfg = load_config(_config(tmp_path, {"path": "data"}))
    assert [it.id for it in plan_items(cfg)] == ["plate__wellA__t000", "plate__wellA__t001",
                                                  "plate__wellA__t002", "plate__wellB"]
    summary = pd.read_csv(execute(cfg, out=tmp_path / "runs", progress=False) / "summary.csv")
    assert list(summary["n_objects"]) == [2, 3, 4, 4]
    assert list(summary["series"]) == ["wellA"] * 3 + ["wellB"]
