"""Batch of 40 demo-sized images through the run engine with 1 worker (serial) vs 2 dask workers.

The 40 images are the 8 bundled ``demo_data/nuclei2d`` images in 5 orientations
(as is, flipped left-right, flipped up-down, rotated 90 and 180 degrees), with
their ground truth transformed the same way.  The run uses ``configs/demo.json``
(4 preprocessing pipelines, post-processing with classes, overlays, montage, ROIs,
measurements, metrics) restricted to the segmenters named by ``--segmenters``
(default ``classical``: 3 h values, 12 combinations per image; ``all`` keeps the
demo's four backends, about 17 s per image serially on this machine).  Each run is its own process
(``opsef_core.run.execute``); the dask runs include starting the local
cluster.  A third run uses one single-threaded dask worker, the per-worker setting of the
N-worker run, so the speed-up is also shown against the same worker alone (the serial run
uses both cores in part: threaded numpy/scipy kernels).  Prints wall times, the speed-up and whether both runs wrote
identical labels and measurements.

Usage::

    python benchmarks/batch_workers.py [--copies 5] [--workers 2] [--segmenters classical] [--workdir DIR]
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

from _common import REPO, emit, machine, run_child

VARIANTS = [("id", lambda a: a), ("fliplr", lambda a: a[..., ::-1]), ("flipud", lambda a: a[..., ::-1, :]),
            ("rot90", lambda a: __import__("numpy").rot90(a, axes=(-2, -1))),
            ("rot180", lambda a: __import__("numpy").rot90(a, 2, axes=(-2, -1)))]


def make_batch(root: Path, copies: int = 5) -> int:
    """Write ``8 * copies`` images (and labels) under ``root/images`` and ``root/labels``."""
    import numpy as np
    import tifffile

    from opsef_core.io import read_image, read_labels, write_labels

    src = REPO / "demo_data" / "nuclei2d"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted((src / "images").glob("*.tif")):
        img = read_image(path)
        lab = read_labels(src / "labels" / path.name)
        ps = img.pixel_size
        for name, fn in VARIANTS[:copies]:
            data = np.ascontiguousarray(fn(np.asarray(img.sel(c=0).data)))
            tifffile.imwrite(root / "images" / f"{path.stem}_{name}.tif", data, imagej=True,
                             resolution=(1 / ps["X"], 1 / ps["Y"]), metadata={"unit": "um", "axes": "YX"})
            write_labels(root / "labels" / f"{path.stem}_{name}.tif", np.ascontiguousarray(fn(lab)),
                         pixel_size={"Y": ps["Y"], "X": ps["X"]})
            n += 1
    return n


def _run(config: str, out: str, workers: int, cluster: bool = False) -> None:
    from opsef_core.config import load_config
    from opsef_core.distributed import get_client
    from opsef_core.run import execute

    cfg = load_config(config)
    t0 = time.perf_counter()
    if cluster:  # one single-threaded dask worker: the per-worker setting of the N-worker run
        with get_client(workers=workers) as client:
            run = execute(cfg, out=out, scheduler=client.scheduler.address, progress=False)
    else:
        run = execute(cfg, out=out, workers=workers, progress=False)
    emit({"workers": workers, "seconds": round(time.perf_counter() - t0, 1), "run": str(run)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=5, help="orientations per demo image (1-5)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--segmenters", nargs="+", default=["classical"],
                    help="names of configs/demo.json segmenters to keep, or 'all'")
    ap.add_argument("--role", choices=["run"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--cluster", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.role == "run":
        _run(args.config, args.out, args.n, args.cluster)
        return 0

    import numpy as np
    import pandas as pd

    from opsef_core.io import read_labels

    work = args.workdir or Path(tempfile.mkdtemp(prefix="opsef_batch_"))
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    n_images = make_batch(work / "data", args.copies)
    cfg = json.loads((REPO / "configs" / "demo.json").read_text())
    cfg["inputs"].update(path=str(work / "data" / "images"), ground_truth=str(work / "data" / "labels"))
    if args.segmenters != ["all"]:
        names = {s["name"] for s in cfg["segmenters"]}
        unknown = set(args.segmenters) - names
        if unknown:
            ap.error(f"unknown segmenters {sorted(unknown)}; configs/demo.json has {sorted(names)}")
        cfg["segmenters"] = [s for s in cfg["segmenters"] if s["name"] in args.segmenters]
    (work / "batch.json").write_text(json.dumps(cfg))
    me = Path(__file__).resolve()
    res = {}
    for n in (1, args.workers):
        res[n] = run_child(me, ["--role", "run", "--config", str(work / "batch.json"),
                                "--out", str(work / "runs" / f"w{n}"), "--n", str(n)], timeout=1800)
    one = run_child(me, ["--role", "run", "--config", str(work / "batch.json"), "--out", str(work / "runs" / "c1"),
                         "--n", "1", "--cluster"], timeout=1800)
    r1, r2 = Path(res[1]["run"]), Path(res[args.workers]["run"])
    same = all(np.array_equal(read_labels(p), read_labels(r2 / "labels" / p.name))
               for p in sorted((r1 / "labels").glob("*.tif")))
    m1 = pd.read_csv(r1 / "measurements.csv")
    m2 = pd.read_csv(r2 / "measurements.csv")
    same_meas = m1.equals(m2)
    n_comb = len(pd.read_csv(r1 / "summary.csv")) // n_images
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/batch_workers.py --copies {args.copies} --workers {args.workers} "
          f"--segmenters {' '.join(args.segmenters)}")
    print(f"batch: {n_images} images x {n_comb} combinations (configs/demo.json, segmenters "
          f"{', '.join(s['name'] for s in cfg['segmenters'])})")
    same_one = all(np.array_equal(read_labels(p), read_labels(Path(one["run"]) / "labels" / p.name))
                   for p in sorted((r1 / "labels").glob("*.tif")))
    print(f"1 worker (serial, in process, default threads): {res[1]['seconds']:7.1f} s  "
          f"({res[1]['seconds'] / n_images:.2f} s/image)")
    print(f"1 dask worker (one thread, as each of the N)   : {one['seconds']:7.1f} s  (incl. cluster start-up)")
    print(f"{args.workers} workers (dask, one thread each)          : {res[args.workers]['seconds']:7.1f} s  "
          f"(incl. cluster start-up; peak RSS of the driver {res[args.workers]['rss_mb']:.0f} MiB)")
    print(f"speed-up vs serial: {res[1]['seconds'] / res[args.workers]['seconds']:.2f}x; vs 1 dask worker: "
          f"{one['seconds'] / res[args.workers]['seconds']:.2f}x; identical labels: {same and same_one}; "
          f"identical measurements.csv: {same_meas}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
