"""Durable outputs: one fsync per file against one file-system sync per run item.

A run item writes over a hundred files (label TIFFs, filtered labels, overlays, ROI zips, the
montage, its table and done-marker), each atomically (temporary file, then rename).  Each was
also ``fsync``-ed before its rename; the run engine now writes an item's files inside
:func:`opsef_core.io.atomic.deferred_sync`: no per-file ``fsync``, one ``syncfs`` of the run
folder's file system before the item's done-marker (so the outputs are on disk before the marker
that vouches for them) and one after it.

This script runs the same batch (the 8 ``demo_data/nuclei2d`` images through ``configs/demo.json``
restricted to ``--segmenters``, as ``benchmarks/batch_workers.py`` makes it) serially, alternating
the two modes ``--repeats`` times after one warm-up run, each in this process, and prints the wall
times, the number of ``fsync`` calls and whether both modes wrote identical label images.  The
gain grows with the cost of ``fsync``: a few ms per file on a local disk, far more on network file
systems (NFS, Lustre), where HPC runs write.

Usage::

    python benchmarks/durable_writes.py [--repeats 2] [--segmenters classical]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine  # noqa: E402
from batch_workers import make_batch  # noqa: E402


def _labels(run: Path) -> dict:
    import tifffile

    return {p.name: tifffile.imread(p) for p in sorted((run / "labels").glob("*.tif"))}


def main(argv=None) -> int:
    import numpy as np

    import opsef_core.io.atomic as atomic
    from opsef_core.run import execute

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--segmenters", nargs="+", default=["classical"])
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="opsef_durable_"))
    n_images = make_batch(work / "data", copies=1)
    cfg = json.loads((REPO / "configs" / "demo.json").read_text())
    cfg["segmenters"] = [s for s in cfg["segmenters"] if s["name"] in args.segmenters]
    cfg["inputs"]["path"] = str(work / "data" / "images")
    cfg["inputs"]["ground_truth"] = str(work / "data" / "labels")
    (work / "cfg.json").write_text(json.dumps(cfg))
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/durable_writes.py --repeats {args.repeats} --segmenters {' '.join(args.segmenters)}")
    print(f"run folder on: {work} ({n_images} images, configs/demo.json, segmenters {', '.join(args.segmenters)})")
    can_sync = atomic._can_sync_filesystem
    real_fsync = os.fsync
    calls = [0]

    def counting_fsync(fd):
        calls[0] += 1
        return real_fsync(fd)

    execute(work / "cfg.json", out=work / "runs", progress=False)  # warm-up: imports, caches
    times: dict[str, list[float]] = {"per-file fsync": [], "one sync per item": []}
    fsyncs, runs = {}, {}
    for _ in range(args.repeats):
        for mode in times:
            atomic._can_sync_filesystem = (lambda: False) if mode == "per-file fsync" else can_sync
            calls[0] = 0
            os.fsync = counting_fsync
            t0 = time.perf_counter()
            try:
                runs[mode] = execute(work / "cfg.json", out=work / "runs", progress=False)
            finally:
                os.fsync = real_fsync
                atomic._can_sync_filesystem = can_sync
            times[mode].append(time.perf_counter() - t0)
            fsyncs[mode] = calls[0]
    files = sum(1 for p in runs["one sync per item"].rglob("*") if p.is_file())
    a, b = (_labels(runs[m]) for m in times)
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    print(f"files per run: {files}")
    print(f"{'mode':20s} {'median s':>9s} {'runs s':>20s} {'fsync calls':>12s}")
    for mode, ts in times.items():
        print(f"{mode:20s} {statistics.median(ts):9.1f} {', '.join(f'{t:.1f}' for t in ts):>20s} {fsyncs[mode]:12d}")
    base, new = (statistics.median(times[m]) for m in times)
    print(f"speed-up {base / new:.2f}x; identical label images: {same}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
