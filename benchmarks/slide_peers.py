"""Slide-scale segmentation side by side: opsef streamed runs vs StarDist's and Cellpose's own big-image paths.

On one synthetic nuclei image (``opsef_core.testing.synthetic``, written tile by tile to a tiled
TIFF), each in its own process (peak RSS of that process).  Wall time runs from the image path to
labels on disk: model load, read, normalisation, prediction and the label store, after the
backend's libraries are imported (each path imports them before its clock starts).  opsef's time
is the whole ``opsef run``: config, input checksum, record, statistics and OME-Zarr pyramid.
Every process imports ``opsef_core`` (model paths), so all paths run with its
``OMP_WAIT_POLICY=PASSIVE`` default.

StarDist (``models/stardist2d_demo``, normalised with the image's 1/99.8 percentiles):

- ``whole``: ``StarDist2D.predict_instances`` on the whole image (the reference; skipped with
  ``--no-whole`` where it does not fit in memory);
- ``big``: ``StarDist2D.predict_instances_big`` (blocks of ``--tile`` px, ``min_overlap`` and
  ``context`` of ``--overlap`` px);
- ``opsef``: ``opsef run`` of a config with ``execution.tiling`` (tiles of ``--tile`` px,
  ``--overlap``) and ``outputs.labels_format: ome-zarr`` (a streamed item: lazy input, OME-Zarr
  labels; measurements, overlays and montage off, as the peers do none of them).

Cellpose (``models/cellpose_demo``, on a ``--cellpose-size`` image: a Cellpose pass costs about
30 s per 512² tile on these CPUs):

- ``whole``: ``CellposeModel.eval`` on the whole image;
- ``distributed``: ``cellpose.contrib.distributed_segmentation.distributed_eval`` on a local dask
  cluster of 2 single-threaded workers (blocks of ``--cellpose-tile`` px; its ``zarr.open(path, 'w')``
  calls get a zarr-2 signature shim); if it cannot run here the reason is printed;
- ``opsef``: as above with the cellpose backend.

Each tiled result is compared with the whole-image result: object F1 at IoU 0.5, objects split
(a reference object covered by two or more result objects, each covering at least 10 % of it)
and merged (a result object covering two or more reference objects that way).

Usage::

    python benchmarks/slide_peers.py [--size 8192] [--tile 1024] [--overlap 64] [--no-whole]
                                     [--cellpose-size 2048] [--cellpose-tile 512] [--skip stardist|cellpose]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, f1_at_05, machine, make_nuclei_tiff, overlaps, run_child


def _normalised(image: str):
    import numpy as np

    from opsef_core.io import read_image
    from opsef_core.segment.normalize import finite_percentiles

    data = np.asarray(read_image(image).data, dtype=np.float32)
    lo, hi = finite_percentiles(data, [1.0, 99.8])
    return (data - np.float32(lo)) / np.float32(max(hi - lo, 1e-20))


def _stardist_model():
    from stardist.models import StarDist2D

    from opsef_core.models import resolve_model

    path = resolve_model("stardist", "stardist2d_demo").path
    return StarDist2D(None, name=path.name, basedir=str(path.parent))


def _save(labels, out: str) -> int:
    import numpy as np
    import zarr

    arr = zarr.open_array(out, mode="w", shape=labels.shape, chunks=(1024, 1024), dtype="int32")
    for y in range(0, labels.shape[0], 1024):
        arr[y:y + 1024] = np.asarray(labels[y:y + 1024], dtype=np.int32)
    return len(np.unique(labels)) - 1


def _warm(backend: str) -> float:
    """Import the backend's libraries before the clock starts (every path pays them equally);
    returns the time the import took."""
    t0 = time.perf_counter()
    if backend == "stardist":
        import stardist.models  # noqa: F401
        import tensorflow  # noqa: F401
    else:
        import cellpose.models  # noqa: F401
        import torch  # noqa: F401
    return time.perf_counter() - t0


def role_sd_whole(a) -> dict:
    _warm("stardist")
    t0 = time.perf_counter()  # model load, read, normalise, predict, labels written
    model = _stardist_model()
    labels, _ = model.predict_instances(_normalised(a.image), axes="YX", show_tile_progress=False)
    n = _save(labels, a.out)
    return {"seconds": round(time.perf_counter() - t0, 1), "n_objects": n}


def role_sd_big(a) -> dict:
    _warm("stardist")
    t0 = time.perf_counter()
    model = _stardist_model()
    labels, _ = model.predict_instances_big(_normalised(a.image), axes="YX", block_size=a.tile,
                                            min_overlap=a.overlap, context=a.overlap, show_progress=False)
    n = _save(labels, a.out)
    return {"seconds": round(time.perf_counter() - t0, 1), "n_objects": n}


def _opsef(a, backend: str, model: str) -> dict:
    import pandas as pd

    from opsef_core.config import config_from_dict
    from opsef_core.run import execute

    folder = Path(a.image).parent
    cfg = {"inputs": {"path": str(folder), "include": [Path(a.image).name]},
           "pipelines": [{"name": "raw", "steps": []}],
           "segmenters": [{"name": backend, "backend": backend, "params": {"model": model}}],
           "execution": {"tiling": {"tile_shape": a.tile, "overlap": a.overlap}},
           "outputs": {"labels_format": "ome-zarr", "measurements": False, "overlays": False, "montage": False}}
    _warm(backend)
    t0 = time.perf_counter()
    run = execute(config_from_dict(cfg), out=Path(a.out).parent / f"runs_{backend}", progress=False,
                  workers=a.workers)
    seconds = time.perf_counter() - t0
    summary = pd.read_csv(run / "summary.csv")
    if summary["status"].iloc[0] != "done":
        raise RuntimeError(f"opsef run failed: {summary['error'].iloc[0]}")
    store = run / summary["labels"].iloc[0] / "s0"
    shutil.copytree(store, a.out)
    return {"seconds": round(seconds, 1), "n_objects": int(summary["n_objects"].iloc[0]),
            "tiles": int(summary["tiles"].iloc[0]), "normalization": summary["tile_normalization"].iloc[0]}


def role_sd_opsef(a) -> dict:
    return _opsef(a, "stardist", "stardist2d_demo")


def role_sd_opsef_dask(a) -> dict:
    """The same run with its tiles as tasks on a local cluster of ``--workers`` single-threaded workers."""
    return _opsef(a, "stardist", "stardist2d_demo")


def _cellpose_model():
    from cellpose import models as cp_models

    from opsef_core.models import resolve_model

    path = resolve_model("cellpose", "cellpose_demo").path
    weights = path / "weights.pth" if path.is_dir() else path
    return cp_models.CellposeModel(gpu=False, pretrained_model=str(weights)), str(weights)


def role_cp_whole(a) -> dict:
    _warm("cellpose")
    t0 = time.perf_counter()
    model, _ = _cellpose_model()
    masks, _, _ = model.eval(_normalised(a.image), channels=[0, 0], normalize=False)
    n = _save(masks, a.out)
    return {"seconds": round(time.perf_counter() - t0, 1), "n_objects": n}


def _zarr2_open_shim() -> None:
    """cellpose 3.1.1.2's distributed module calls ``zarr.open(path, 'w', ...)`` (zarr 2's signature);
    zarr 3 (pinned here, ome-zarr needs it) takes ``mode`` by keyword only.  Accept it positionally."""
    import zarr

    original = zarr.open

    def open_compat(store=None, mode=None, *args, **kwargs):
        return original(store, *args, mode=mode or kwargs.pop("mode", "a"), **kwargs)

    zarr.open = open_compat


def role_cp_distributed(a) -> dict:
    import zarr

    _zarr2_open_shim()
    import os

    from cellpose.contrib.distributed_segmentation import distributed_eval

    os.chdir(Path(a.out).parent)  # it writes its scratch and worker logs into the working directory

    _, weights = _cellpose_model()
    # cellpose 3.1.1.2's block merging is 3-D only (a hard-coded generate_binary_structure(3, 1)): on
    # a 2-D image it raises "structure and input must have equal rank"; a one-plane stack fails too
    # (model.eval returns 2-D masks for it and process_block indexes them in 3-D).  Run as the
    # module documents it, so the table shows the library's own error.
    img = _normalised(a.image)
    src = zarr.open_array(str(Path(a.out).with_suffix(".input.zarr")), mode="w", shape=img.shape,
                          chunks=(a.tile, a.tile), dtype="float32")
    src[...] = img
    t0 = time.perf_counter()
    distributed_eval(input_zarr=src, blocksize=(a.tile, a.tile), write_path=a.out,
                                 model_kwargs={"pretrained_model": weights, "gpu": False},
                                 eval_kwargs={"channels": [0, 0], "normalize": False},
                                 cluster_kwargs={"n_workers": 2, "ncpus": 1, "memory_limit": "8GB",
                                                 "threads_per_worker": 1})
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), "n_objects": int(zarr.open_array(a.out, mode="r")[...].max())}


def role_cp_opsef(a) -> dict:
    return _opsef(a, "cellpose", "cellpose_demo")


ROLES = {"sd_whole": role_sd_whole, "sd_big": role_sd_big, "sd_opsef": role_sd_opsef, "sd_opsef_dask": role_sd_opsef_dask,
         "cp_whole": role_cp_whole, "cp_distributed": role_cp_distributed, "cp_opsef": role_cp_opsef}


def split_merge(ref, res, fraction: float = 0.1) -> dict:
    """Reference objects split into >= 2 result objects and result objects merging >= 2 reference
    objects (each part covering at least ``fraction`` of the object), block by block."""
    area_a, area_b, inter = overlaps(ref, res)
    parts_a, parts_b = {}, {}
    for k, c in inter.items():
        la, lb = k >> 32, k & 0xFFFFFFFF
        if c >= fraction * area_a[la]:
            parts_a[la] = parts_a.get(la, 0) + 1
        if c >= fraction * area_b[lb]:
            parts_b[lb] = parts_b.get(lb, 0) + 1
    return {"split": sum(n >= 2 for n in parts_a.values()), "merged": sum(n >= 2 for n in parts_b.values())}


def _run(role: str, image: Path, out: Path, a) -> dict:
    me = Path(__file__).resolve()
    shutil.rmtree(out, ignore_errors=True)
    try:
        return run_child(me, ["--role", role, "--image", str(image), "--out", str(out), "--tile",
                              str(a.tile if not role.startswith("cp") else a.cellpose_tile),
                              "--overlap", str(a.overlap),
                              "--workers", str(a.workers if role.endswith("_dask") else 1)], timeout=5400)
    except RuntimeError as exc:
        return {"error": str(exc).strip().splitlines()[-1]}


def _compare(rows: dict, ref: str, work: Path) -> None:
    import zarr

    if "error" in rows.get(ref, {"error": "not run"}):
        return
    ref_arr = zarr.open_array(str(work / f"{ref}.zarr"), mode="r")
    for name, row in rows.items():
        if name == ref or "error" in row:
            continue
        res = zarr.open_array(str(work / f"{name}.zarr"), mode="r")
        row.update(f1=f1_at_05(ref_arr, res)["f1"], **split_merge(ref_arr, res))


def _print(title: str, rows: dict, ref: str = "whole") -> None:
    print(f"\n{title}")
    print(f"{'path':<14}{'wall s':>9}{'peak RSS MiB':>14}{'objects':>9}{'F1@0.5 vs ' + ref:>17}{'split':>7}{'merged':>8}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<14} failed: {r['error']}")
            continue
        print(f"{name:<14}{r['seconds']:>9.1f}{r['rss_mb']:>14.0f}{r['n_objects']:>9}"
              f"{r.get('f1', float('nan')):>17.5f}{r.get('split', 0):>7}{r.get('merged', 0):>8}")
        if name.endswith("_dask") and r.get("own_children_rss_mb"):
            print(f"{'':<14}(driver above; each dask worker peaked at most {r['own_children_rss_mb']:.0f} MiB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--no-whole", action="store_true", help="skip StarDist's whole-image reference")
    ap.add_argument("--cellpose-size", type=int, default=2048)
    ap.add_argument("--cellpose-tile", type=int, default=512)
    ap.add_argument("--skip", choices=["stardist", "cellpose"], action="append", default=[])
    ap.add_argument("--workers", type=int, default=1,
                    help="also run opsef's StarDist path with its tiles on this many dask workers (> 1)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.role:
        emit({"role": a.role, **ROLES[a.role](a)})
        return 0
    work = a.workdir or Path(tempfile.mkdtemp(prefix="opsef_peers_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/slide_peers.py --size {a.size} --tile {a.tile} --overlap {a.overlap}"
          f"{' --no-whole' if a.no_whole else ''}{f' --workers {a.workers}' if a.workers > 1 else ''} --cellpose-size {a.cellpose_size} --cellpose-tile {a.cellpose_tile}"
          + "".join(f" --skip {s}" for s in a.skip))
    results = {}
    if "stardist" not in a.skip:
        sd_dir = work / "sd"
        sd_dir.mkdir(exist_ok=True)
        image = sd_dir / f"nuclei_{a.size}.tif"
        if not image.exists():
            info = make_nuclei_tiff(image, a.size, tile=512)
            print(f"stardist image: {a.size}² uint16, {info['n_nuclei']} nuclei")
        rows = {}
        for role in (["sd_whole"] if not a.no_whole else []) + ["sd_big", "sd_opsef"] \
                + (["sd_opsef_dask"] if a.workers > 1 else []):
            rows[role] = _run(role, image, work / f"{role}.zarr", a)
        _compare(rows, "sd_whole", work)
        if a.no_whole:
            _compare(rows, "sd_big", work)
        _print(f"StarDist 2D demo model, {a.size}² image, blocks/tiles {a.tile} px, overlap {a.overlap} px", rows,
               "big" if a.no_whole else "whole")
        results["stardist"] = rows
    if "cellpose" not in a.skip:
        cp_dir = work / "cp"
        cp_dir.mkdir(exist_ok=True)
        image = cp_dir / f"nuclei_{a.cellpose_size}.tif"
        if not image.exists():
            make_nuclei_tiff(image, a.cellpose_size, tile=512)
        rows = {role: _run(role, image, work / f"{role}.zarr", a) for role in ("cp_whole", "cp_distributed", "cp_opsef")}
        _compare(rows, "cp_whole", work)
        _print(f"Cellpose demo model, {a.cellpose_size}² image, blocks/tiles {a.cellpose_tile} px, overlap "
               f"{a.overlap} px", rows)
        results["cellpose"] = rows
    print("\n" + json.dumps(results))
    if a.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
