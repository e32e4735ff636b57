"""Peak memory of a streamed run from a config on a large synthetic nuclei image.

One ``opsef run`` of a config with ``execution.tiling`` and ``outputs.labels_format: ome-zarr``
(gaussian σ 1, the classical backend, per-tile measurements and an overlay) on a ``--size``²
uint16 image written tile by tile (``opsef_core.testing.synthetic``).  The image is made in one
child process and the run made in another, so the run's peak RSS is its own.  Prints the wall time,
peak RSS, tiles, objects and measurement rows.

Usage::

    python benchmarks/streamed_memory.py [--size 16384] [--tile 1024] [--overlap 48] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, make_nuclei_tiff, run_child


def role_make(a) -> dict:
    info = make_nuclei_tiff(Path(a.image), a.size, tile=512)
    return {"n_nuclei": int(info["n_nuclei"])}


def role_run(a) -> dict:
    import pandas as pd

    from opsef_core.config import config_from_dict
    from opsef_core.run import execute

    image = Path(a.image)
    cfg = {"inputs": {"path": str(image.parent), "include": [image.name]},
           "pipelines": [{"name": "smooth", "steps": [{"name": "gaussian", "params": {"sigma": 1.0}}]}],
           "segmenters": [{"name": "cl", "backend": "classical",
                           "params": {"sigma": 1.0, "threshold": 0.3, "h": 1.0, "min_size": 10}}],
           "execution": {"tiling": {"tile_shape": a.tile, "overlap": a.overlap}},
           "outputs": {"labels_format": "ome-zarr", "measurements": True, "overlays": True, "montage": False}}
    t0 = time.perf_counter()
    run = execute(config_from_dict(cfg), out=Path(a.out), progress=False)
    seconds = time.perf_counter() - t0
    s = pd.read_csv(run / "summary.csv")
    return {"seconds": round(seconds, 1), "status": str(s["status"].iloc[0]), "n_objects": int(s["n_objects"].iloc[0]),
            "tiles": int(s["tiles"].iloc[0]), "rows": len(pd.read_csv(run / "measurements.csv"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=48)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--role", choices=["make", "run"], help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role:
        emit((role_make if a.role == "make" else role_run)(a))
        return 0
    work = a.workdir or Path(tempfile.mkdtemp(prefix="opsef_streamed_"))
    image = work / "in" / f"nuclei_{a.size}.tif"
    image.parent.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    common = ["--size", str(a.size), "--tile", str(a.tile), "--overlap", str(a.overlap), "--image", str(image)]
    if not image.exists():
        run_child(me, ["--role", "make", *common], timeout=3600)
    r = run_child(me, ["--role", "run", *common, "--out", str(work / "runs")], timeout=7200)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/streamed_memory.py --size {a.size} --tile {a.tile} --overlap {a.overlap}")
    print(f"{a.size}² uint16 ({a.size * a.size * 2 / 2**20:.0f} MiB), {r['tiles']} tiles: {r['status']}, "
          f"{r['n_objects']} objects, {r['rows']} measurement rows")
    print(f"wall {r['seconds']:.1f} s, peak RSS {r['rss_mb']:.0f} MiB")
    if a.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
