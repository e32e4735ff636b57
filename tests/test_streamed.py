"""Streamed (slide-scale) runs: lazy tiles end to end from a run config, OME-Zarr labels.

A streamed item is read region by region, preprocessed tile + halo, segmented tile by tile,
stitched into OME-Zarr pyramids and measured tile by tile.  These tests compare it with the
same config run whole (identical objects and measurements with halo-needing preprocessing in
2D and 3D), count the network passes of a sweep, read the OME-Zarr back with ome-zarr-py and
bound the memory of a run on an image larger than its tiles.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from test_tiled import assert_same_objects

from opsef_core import io
from opsef_core.config import config_from_dict
from opsef_core.errors import ConfigError
from opsef_core.image import Image
from opsef_core.preprocess import Pipeline
from opsef_core.run import execute
from opsef_core.testing.synthetic import make_nuclei_tiff
from opsef_core.tiling import plan_tiles
from opsef_core.tiling.stream import TiledPipeline

CLASSICAL = {"sigma": 1.0, "threshold": 0.3, "h": 1.0, "min_size": 10}
HALO_PIPELINE = {"name": "bg", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}},
                                         {"name": "median", "params": {"radius": 1}},
                                         {"name": "rolling_ball", "params": {"radius": 12}},
                                         {"name": "normalize_percentile", "params": {"low": 1, "high": 99.5}}]}


def _config(folder: Path, *, streamed: bool, pipeline=HALO_PIPELINE, sweep=None, tile=160, overlap=32, **outputs):
    seg = {"name": "cl", "backend": "classical", "params": dict(CLASSICAL)}
    if sweep:
        seg["sweep"] = sweep
    cfg = {"inputs": {"path": str(folder)}, "pipelines": [pipeline], "segmenters": [seg],
           "outputs": {"montage": False, **outputs}}
    if streamed:
        cfg["execution"] = {"tiling": {"tile_shape": tile, "overlap": overlap}}
        cfg["outputs"]["labels_format"] = "ome-zarr"
    return config_from_dict(cfg)


def _tables(run: Path):
    return pd.read_csv(run / "summary.csv"), pd.read_csv(run / "measurements.csv")


def _same_measurements(a: pd.DataFrame, b: pd.DataFrame, keys=("setting_id", "centroid_y_px", "centroid_x_px")):
    keys = [k for k in keys if k in a.columns]
    num = [c for c in a.columns if c in b.columns and pd.api.types.is_numeric_dtype(a[c]) and c != "label"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    assert len(a) == len(b)
    # equal up to floating-point summation order (regionprops on a block vs the whole image)
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-6, atol=1e-4)


@pytest.fixture(scope="module")
def nuclei_2d(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streamed2d")
    (folder / "in").mkdir()
    info = make_nuclei_tiff(folder / "in" / "slide.tif", 512, seed=4, tile=128, pixel_size=0.5)
    return folder, info


@pytest.mark.slow
def test_streamed_run_equals_whole_image_run_2d(nuclei_2d, tmp_path):
    folder, info = nuclei_2d
    sweep = {"threshold": [0.3, 0.45]}
    whole = execute(_config(folder / "in", streamed=False, sweep=sweep), out=tmp_path, progress=False)
    streamed = execute(_config(folder / "in", streamed=True, sweep=sweep), out=tmp_path, progress=False)
    sw, mw = _tables(whole)
    ss, ms = _tables(streamed)
    assert list(ss["status"]) == ["done"] * len(sweep["threshold"])
    assert ss["labels"].str.endswith(".ome.zarr").all() and sw["labels"].str.endswith(".tif").all()
    for a, b in zip(sw["labels"], ss["labels"]):
        assert_same_objects(io.read_labels(whole / a), io.read_labels(streamed / b))
    assert list(sw["n_objects"]) == list(ss["n_objects"])
    assert ss["n_objects"].iloc[0] > 0.8 * info["n_nuclei"]
    _same_measurements(mw, ms)
    # the whole-image percentiles of normalize_percentile are fixed once and recorded
    stats = json.loads(ss["tile_statistics"].iloc[0])
    assert stats[0]["step"] == "normalize_percentile" and stats[0]["stride"] == 1
    img = io.read_image(folder / "in" / "slide.tif")
    pre = Pipeline.from_dict(HALO_PIPELINE)
    upto = Pipeline("upto", pre.steps[:3]).apply(img).data
    np.testing.assert_allclose(stats[0]["limits"], np.percentile(upto, [1, 99.5]), rtol=1e-9)
    # the sweep's two settings share one network pass per tile
    n_tiles = len(plan_tiles((512, 512), 160, 32))
    item = json.loads(next((streamed / "items").glob("*.json")).read_text())
    assert item["counts"]["network"] == n_tiles
    assert item["counts"]["decode"] == n_tiles * len(sweep["threshold"])
    assert list(ss["network_reused"]) == [False, True]
    device = json.loads((streamed / "run.json").read_text())["execution"]["device"]
    assert device["cpu_count"] >= 1 and device["gpu"] in (True, False, None)
    halo = int(4 * 1.0 + 0.5) + 1 + 2 * 12  # gaussian 4 sigma, median radius, rolling ball twice its radius
    assert ss["preprocess_halo"].iloc[0] == f"{halo}x{halo}"


def test_ome_zarr_labels_have_the_input_scale(nuclei_2d, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    folder, _ = nuclei_2d
    run = execute(_config(folder / "in", streamed=True, pipeline={"name": "raw", "steps": []}, tile=256),
                  out=tmp_path, progress=False)
    summary, _ = _tables(run)
    store = run / summary["labels"].iloc[0]
    nodes = list(Reader(parse_url(str(store)))())
    node = nodes[0]
    assert any(isinstance(s, Label) for s in node.specs) and any(isinstance(s, Multiscales) for s in node.specs)
    shapes = [tuple(d.shape) for d in node.data]
    assert shapes[0] == (512, 512) and shapes[1] == (256, 256)
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales[0] == [0.5, 0.5] and scales[1] == [1.0, 1.0]
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    full = np.asarray(node.data[0])
    np.testing.assert_array_equal(np.asarray(node.data[1]), full[::2, ::2])  # nearest-neighbour level
    assert (run / "overlays" / f"{Path(summary['labels'].iloc[0]).name[:-len('.ome.zarr')]}.png").exists()


@pytest.mark.slow
def test_streamed_run_equals_whole_image_run_3d(tmp_path):
    rng = np.random.default_rng(5)
    shape = (24, 96, 110)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    data = rng.normal(100, 8, shape)
    centres = []
    while len(centres) < 30:  # separate nuclei (no two closer than 12 px)
        c = np.array([rng.uniform(4, n - 4) for n in shape])
        if all(np.linalg.norm(c - o) > 12 for o in centres):
            centres.append(c)
            r = rng.uniform(3, 4.5)
            data += 600 * ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", data.astype(np.uint16), imagej=True, metadata={"axes": "ZYX"})
    pipeline = {"name": "bg3d", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}},
                                          {"name": "median", "params": {"radius": 1}},
                                          {"name": "rolling_ball", "params": {"radius": 6}}]}
    params = {"sigma": 0.0, "threshold": 0.3, "h": 1.0, "min_size": 8}
    base = {"inputs": {"path": str(folder)}, "pipelines": [pipeline],
            "segmenters": [{"name": "cl", "backend": "classical", "params": params}],
            "outputs": {"montage": False, "overlays": False}}
    whole = execute(config_from_dict(base), out=tmp_path, progress=False)
    streamed = execute(config_from_dict({**base, "execution": {"tiling": {"tile_shape": [24, 64, 64], "overlap": [0, 16, 16]}},
                                         "outputs": {**base["outputs"], "labels_format": "ome-zarr"}}),
                       out=tmp_path, progress=False)
    sw, mw = _tables(whole)
    ss, ms = _tables(streamed)
    assert ss["status"].iloc[0] == "done" and ss["tiles"].iloc[0] == len(plan_tiles(shape, [24, 64, 64], [0, 16, 16])) > 1
    a, b = io.read_labels(whole / sw["labels"].iloc[0]), io.read_labels(streamed / ss["labels"].iloc[0])
    assert a.shape == b.shape == shape and len(np.unique(a)) - 1 == len(centres)
    assert_same_objects(a, b)
    _same_measurements(mw, ms, keys=("centroid_z_px", "centroid_y_px", "centroid_x_px"))


@pytest.mark.parametrize("steps", [
    [{"name": "gaussian", "params": {"sigma": 2.0}}, {"name": "median", "params": {"radius": 2}}],
    [{"name": "tophat", "params": {"radius": 4}}, {"name": "unsharp", "params": {"radius": 1.5}},
     {"name": "edges"}, {"name": "normalize_percentile"}],
    [{"name": "rolling_ball", "params": {"radius": 9}}, {"name": "mean", "params": {"size": 5}},
     {"name": "subtract_tophat", "params": {"radius": 1}}, {"name": "clip", "params": {"low": 5}}],
])
@pytest.mark.parametrize("axes,shape,tile", [("YX", (150, 170), 48), ("ZYX", (10, 60, 70), (10, 32, 32))])
def test_tiled_pipeline_equals_whole_image(steps, axes, shape, tile):
    rng = np.random.default_rng(1)
    img = Image.from_array((rng.random(shape) * 1000).astype(np.uint16), axes, pixel_size={a: 0.4 for a in axes})
    pipeline = Pipeline.from_dict({"name": "p", "steps": steps})
    whole = pipeline.apply(img).data
    stream = TiledPipeline(img, pipeline)
    out = np.zeros_like(whole)
    for t in plan_tiles(shape, tile, 4):
        out[t.inner] = stream.block(t.inner)
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize("max_sample", [10 ** 6, 5000])
def test_statistics_pass_is_shared_by_the_backend_percentiles(max_sample):
    """The normalize_percentile limits and the backend's percentiles of the pipeline's output come
    from one preprocessing pass over the image when only pointwise steps follow the statistic: the
    second sample is derived from the first and equals a sample computed from scratch."""
    rng = np.random.default_rng(5)
    img = Image.from_array((rng.random((300, 260)) * 1000).astype(np.uint16), "YX", pixel_size={"Y": 0.4, "X": 0.4})
    spec = {"name": "p", "steps": [{"name": "gaussian", "params": {"sigma": 1.5}},
                                   {"name": "normalize_percentile", "params": {"low": 2, "high": 98}},
                                   {"name": "clip", "params": {"low": 0.1, "high": 0.9}}]}
    stream = TiledPipeline(img, Pipeline.from_dict(spec), max_sample=max_sample)
    calls = []
    real = stream.block
    stream.block = lambda *a, **k: calls.append(1) or real(*a, **k)
    stream.fix_statistics()
    n_regions = len(stream.regions())
    assert len(calls) == n_regions
    derived, stride = stream.sample()
    assert len(calls) == n_regions  # no second pass
    assert (stride > 1) == (max_sample < 300 * 260)
    fresh = TiledPipeline(img, Pipeline.from_dict(spec), max_sample=max_sample)
    fresh.fix_statistics()
    fresh._sample = None
    scratch, _ = fresh.sample()
    np.testing.assert_array_equal(derived, scratch)
    if stride == 1:  # every pixel: the whole-image pipeline's own limits, so its very output
        whole = Pipeline.from_dict(spec).apply(img).data
        np.testing.assert_array_equal(np.sort(derived), np.sort(whole.ravel()))
    # a step with a neighbourhood after the statistic, or a backend transform, needs its own pass
    spec["steps"].append({"name": "median", "params": {"radius": 1}})
    stream = TiledPipeline(img, Pipeline.from_dict(spec), max_sample=max_sample)
    stream.fix_statistics()
    real, calls = stream.block, []
    stream.block = lambda *a, **k: calls.append(1) or real(*a, **k)
    stream.sample()
    assert len(calls) == n_regions


def test_steps_that_need_the_whole_image_are_refused(nuclei_2d, tmp_path):
    folder, _ = nuclei_2d
    for step in ({"name": "clahe"}, {"name": "rescale", "params": {"factor": 0.5}}, {"name": "gamma"}):
        with pytest.raises(ConfigError, match="cannot run tile by tile"):
            _config(folder / "in", streamed=True, pipeline={"name": "x", "steps": [step]})
        img = Image.from_array(np.zeros((64, 64), np.uint16), "YX")
        with pytest.raises(ConfigError, match="cannot run tile by tile"):
            TiledPipeline(img, Pipeline.from_dict({"name": "x", "steps": [step]}))
    with pytest.raises(ConfigError, match="give execution.tiling"):
        config_from_dict({"inputs": {"path": str(folder / "in")}, "pipelines": [{"name": "raw", "steps": []}],
                          "segmenters": [{"name": "cl", "backend": "classical"}],
                          "outputs": {"labels_format": "ome-zarr"}})


def _zip_entries(path) -> dict:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize("ndim", [2, 3])
def test_roi_set_traced_tile_by_tile_equals_the_whole_image_set(tmp_path, ndim):
    """Each tile traces the objects it owns, in image coordinates: the zip has exactly the
    entries (names and bytes) of the whole label image's ROI set, parts and 3D slices included."""
    from skimage.measure import label as cc

    from opsef_core.export import read_roi_zip, write_roi_zip, write_roi_zip_tiled

    rng = np.random.default_rng(11 + ndim)
    shape = (300, 280) if ndim == 2 else (12, 150, 140)
    blobs = rng.random(shape) > (0.93 if ndim == 2 else 0.995)
    from scipy import ndimage as ndi

    labels = cc(ndi.binary_dilation(blobs, iterations=1) & (rng.random(shape) > 0.2)).astype(np.int32)
    tiles = plan_tiles(shape, 96 if ndim == 2 else (12, 64, 64), 16 if ndim == 2 else (0, 16, 16))
    # objects larger than the overlap could have no owning tile: keep those that fit, as a seam-checked run does
    from scipy.ndimage import find_objects

    for k, sl in enumerate(find_objects(labels), start=1):
        if sl is not None and any(s.stop - s.start >= 16 for s in sl[-2:]):
            labels[labels == k] = 0
    whole = write_roi_zip(tmp_path / "whole.zip", labels)
    tiled = write_roi_zip_tiled(tmp_path / "tiled.zip", labels, tiles)
    a, b = _zip_entries(whole), _zip_entries(tiled)
    assert len(a) > 50 and a == b
    assert len(np.unique(read_roi_zip(tiled, shape))) - 1 == len(np.unique(labels)) - 1


def test_streamed_item_with_postprocess_or_rois_says_so(nuclei_2d, tmp_path):
    folder, _ = nuclei_2d
    cfg = _config(folder / "in", streamed=True, pipeline={"name": "raw", "steps": []}, tile=256, rois=True)
    run = execute(cfg, out=tmp_path, progress=False)
    summary, _ = _tables(run)
    assert summary["status"].iloc[0] == "done" and "rois_skipped" not in summary.columns
    zips = sorted((run / "rois").glob("*.zip"))
    assert len(zips) == 1
    stitched = io.read_labels(run / summary["labels"].iloc[0])
    from opsef_core.export import write_roi_zip

    assert _zip_entries(zips[0]) == _zip_entries(write_roi_zip(tmp_path / "whole.zip", stitched))
    data = json.loads(json.dumps(cfg.model_dump(mode="json")))
    for option in ({"keep_largest": True}, {"smooth_radius": 2}):
        data["postprocess"] = {"min_size": 5, **option}
        with pytest.raises(ConfigError, match="need.*the whole label image"):
            config_from_dict(data)


@pytest.mark.slow
def test_streamed_postprocess_equals_whole_image_postprocess(nuclei_2d, tmp_path):
    """Holes, size limits, border removal and measurement ranges (a coordinate range too) run
    tile by tile on the objects each tile owns and give the whole-image run's objects and table."""
    folder, _ = nuclei_2d
    post = {"fill_holes": True, "min_size": 25, "max_size": 140, "remove_border": True,
            "ranges": {"centroid_x_px": [60, None], "circularity": [0.6, None]}}
    runs = []
    for streamed in (False, True):
        data = json.loads(json.dumps(_config(folder / "in", streamed=streamed, pipeline={"name": "raw", "steps": []},
                                             tile=192).model_dump(mode="json")))
        data["postprocess"] = post
        runs.append(execute(config_from_dict(data), out=tmp_path, progress=False))
    (sw, mw), (ss, ms) = _tables(runs[0]), _tables(runs[1])
    assert list(ss["status"]) == ["done"] and ss["labels_filtered"].iloc[0].endswith(".ome.zarr")
    whole = io.read_labels(runs[0] / sw["labels_filtered"].iloc[0])
    streamed = io.read_labels(runs[1] / ss["labels_filtered"].iloc[0])
    for col in ("n_objects", "n_objects_filtered"):
        assert ss[col].iloc[0] == sw[col].iloc[0]
    assert 0 < ss["n_objects_filtered"].iloc[0] < ss["n_objects"].iloc[0]  # the filters removed objects
    assert_same_objects(io.read_labels(runs[0] / sw["labels"].iloc[0]), io.read_labels(runs[1] / ss["labels"].iloc[0]))
    assert_same_objects(whole, streamed)
    assert ms["centroid_x_px"].min() >= 60
    _same_measurements(mw, ms)


@pytest.mark.slow
def test_streamed_run_memory_is_bounded_by_the_tiles(tmp_path):
    """A 2048 x 2048 image (8 MiB uint16, labels 16 MiB as int32) in 256-px tiles: the run's peak
    of traced allocations stays below one int32 copy of the image."""
    (tmp_path / "warm").mkdir()
    (tmp_path / "in").mkdir()
    make_nuclei_tiff(tmp_path / "warm" / "w.tif", 256, tile=256)
    info = make_nuclei_tiff(tmp_path / "in" / "big.tif", 2048, seed=2, tile=256, pixel_size=0.5)
    raw = {"name": "smooth", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}}]}

    def cfg(folder):
        c = _config(folder, streamed=True, pipeline=raw, tile=256, overlap=24, overlays=False)
        return c.model_copy(update={"execution": c.execution.model_copy(
            update={"tiling": c.execution.tiling.model_copy(update={"max_sample": 200_000})})})

    execute(cfg(tmp_path / "warm"), out=tmp_path, progress=False)  # imports and caches outside the bound
    tracemalloc.start()
    try:
        run = execute(cfg(tmp_path / "in"), out=tmp_path, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    summary, meas = _tables(run)
    assert summary["status"].iloc[0] == "done"
    assert len(meas) == summary["n_objects"].iloc[0] > 0.8 * info["n_nuclei"]
    assert peak < 2048 * 2048 * 4, f"peak {peak / 2**20:.1f} MiB"


def _write_ome_zarr_image(path: Path, data: np.ndarray, axes: str, scale: list[float], unit="micrometer"):
    import zarr
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w")
    write_image(data, group, axes=[{"name": a.lower(), "type": "space" if a in "ZYX" else "channel",
                                    **({"unit": unit} if a in "ZYX" else {})} for a in axes],
                coordinate_transformations=[[{"type": "scale", "scale": scale}]], scale_factors=[],
                storage_options={"chunks": tuple(min(n, 128) for n in data.shape)})


def test_ome_zarr_and_zarr_inputs_are_read_lazily_and_streamed(nuclei_2d, tmp_path):
    import zarr

    folder, _ = nuclei_2d
    data = io.read_image(folder / "in" / "slide.tif").data
    inputs = tmp_path / "zarr_in"
    inputs.mkdir()
    _write_ome_zarr_image(inputs / "slide.ome.zarr", data, "YX", [0.5, 0.5])
    plain = zarr.open_array(str(inputs / "plain.zarr"), mode="w", shape=data.shape, chunks=(128, 128),
                            dtype=data.dtype)
    plain[...] = data
    ome = io.read_image(inputs / "slide.ome.zarr", lazy=True)
    assert ome.pixel_size == {"Y": 0.5, "X": 0.5} and ome.calibrated and hasattr(ome.data, "dask")
    assert io.list_scenes(inputs / "plain.zarr")[0]["axes"] == "YX"
    assert [p.name for p in io.discover(inputs)] == ["plain.zarr", "slide.ome.zarr"]
    raw = {"name": "raw", "steps": []}
    run = execute(_config(inputs, streamed=True, pipeline=raw, tile=256), out=tmp_path, progress=False)
    ref = execute(_config(folder / "in", streamed=True, pipeline=raw, tile=256), out=tmp_path, progress=False)
    s, m = _tables(run)
    sr, mr = _tables(ref)
    assert list(s["status"]) == ["done", "done"] and list(s["image"]) == ["plain", "slide"]
    for lab in s["labels"]:
        assert_same_objects(io.read_labels(run / lab), io.read_labels(ref / sr["labels"].iloc[0]))
    slide = m[m["image"] == "slide"].drop(columns=["image", "file"], errors="ignore")
    _same_measurements(slide, mr.drop(columns=["image", "file"], errors="ignore"))
    record = json.loads((run / "run.json").read_text())
    sizes = {Path(e["path"]).name: e["size"] for e in record["inputs"]}
    assert sizes["plain.zarr"] > 0.5 * data.nbytes / 4 and all(len(e["sha256"]) == 64 for e in record["inputs"])


@pytest.mark.slow
def test_tiles_run_as_dask_tasks_with_identical_labels(nuclei_2d, tmp_path):
    """One streamed image on a 2-worker local cluster: its tiles are the tasks (the run has fewer
    items than workers), the labels and measurements equal the in-process run's, and the workers
    run single-threaded."""
    from opsef_core.distributed import WORKER_THREAD_ENV, get_client
    from opsef_core.tiling import segment_tiled_image

    folder, _ = nuclei_2d
    raw = {"name": "smooth", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}}]}
    serial = execute(_config(folder / "in", streamed=True, pipeline=raw, tile=160), out=tmp_path, progress=False)
    dist = execute(_config(folder / "in", streamed=True, pipeline=raw, tile=160), out=tmp_path, progress=False,
                   workers=2)
    s1, m1 = _tables(serial)
    s2, m2 = _tables(dist)
    assert list(s2["status"]) == ["done"]
    np.testing.assert_array_equal(io.read_labels(serial / s1["labels"].iloc[0]), io.read_labels(dist / s2["labels"].iloc[0]))
    _same_measurements(m1, m2)
    with get_client(workers=2) as client:
        env = client.run(lambda: {k: __import__("os").environ.get(k) for k in WORKER_THREAD_ENV})
        want = {k: str(x) for k, x in WORKER_THREAD_ENV.items()}
        assert env and all(v == want for v in env.values()), env
        calls = []
        real_submit = client.submit
        client.submit = lambda *a, **k: calls.append(1) or real_submit(*a, **k)
        labels = segment_tiled_image(folder / "in" / "slide.tif", "classical", CLASSICAL, tile_shape=160, overlap=32,
                                     pipeline=raw, client=client, progress=False)
    assert len(calls) == len(plan_tiles((512, 512), 160, 32))
    np.testing.assert_array_equal(labels, io.read_labels(serial / s1["labels"].iloc[0]))


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """``import opsef_core`` makes OpenMP threads sleep between parallel regions (the NMS and
    torch otherwise spin against TensorFlow's pool); a value the user set is kept."""
    import os
    import subprocess
    import sys

    code = "import os, opsef_core; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_streamed_item_is_scored_slab_by_slab_like_the_whole_image(nuclei_2d, tmp_path):
    """With ground truth, a streamed item's metrics row equals image_metrics of its stitched
    labels against the truth (computed here on whole arrays)."""
    from opsef_core import evaluate as ev

    folder, _ = nuclei_2d
    raw = {"name": "raw", "steps": []}
    ref = execute(_config(folder / "in", streamed=False, pipeline=raw, sweep={"threshold": [0.6]}), out=tmp_path,
                  progress=False)
    s_ref, _ = _tables(ref)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    gt = io.read_labels(ref / s_ref["labels"].iloc[0])
    tifffile.imwrite(gt_dir / "slide.tif", gt)
    data = json.loads(json.dumps(_config(folder / "in", streamed=True, pipeline=raw, tile=192).model_dump(mode="json")))
    data["inputs"]["ground_truth"] = str(gt_dir)
    run = execute(config_from_dict(data), out=tmp_path, progress=False)
    summary = pd.read_csv(run / "summary.csv")
    metrics = pd.read_csv(run / "metrics.csv")
    assert summary["status"].iloc[0] == "done" and len(metrics) == 1
    labels = io.read_labels(run / summary["labels"].iloc[0])
    want = ev.image_metrics(gt, labels, data["evaluation"]["thresholds"] if "evaluation" in data else ev.DEFAULT_THRESHOLDS)
    assert 0.2 < want["f1@0.5"] < 1.0  # different thresholds: a real comparison
    for k, v in want.items():
        assert metrics[k].iloc[0] == pytest.approx(v, rel=1e-12, abs=1e-12), k
