"""Peak memory of tiled segmentation of a 16384x16384 image read lazily, labels written to zarr.

The synthetic nuclei image (512 MiB as uint16, ~260k nuclei) is written tile-wise
to a tiled TIFF (benchmarks/_common.py); a child process opens it with
``io.read_image(lazy=True)`` (dask over tifffile's zarr store), segments it
tile by tile with the classical backend and stitches into a ``.zarr`` folder
on disk.  The child's peak RSS (``ru_maxrss``) is the figure (target < 3 GB);
a whole-image run of the same settings would need the image (0.5 GiB), the
float32 copies and int32 labels (1 GiB each) at once.

Classical parameters ``{"h": 0, "sigma": 0}`` (threshold + connected components,
no watershed: the synthetic nuclei do not touch) keep the run within ~5 minutes
on 2 cores; memory does not depend on them beyond the per-tile arrays.

Usage::

    python benchmarks/tiled_memory.py [--size 16384] [--tile 2048] [--overlap 48] [--workdir DIR]
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

from _common import emit, machine, make_nuclei_tiff, run_child  # noqa: E402

PARAMS = {"h": 0, "sigma": 0}


def _tiled(image: str, out: str, tile: int, overlap: int) -> None:
    from opsef_core.tiling import segment_tiled_image

    t0 = time.perf_counter()
    labels, info = segment_tiled_image(image, "classical", PARAMS, tile_shape=tile, overlap=overlap, out=out,
                                       progress=False, return_info=True)
    emit({"seconds": round(time.perf_counter() - t0, 1), "n_tiles": info["n_tiles"], "n_objects": info["n_objects"],
          "shape": list(labels.shape), "out_type": type(labels).__name__,
          "n_large": info["n_large"], "n_cut_candidates": info["n_cut_candidates"]})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=48)
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    ap.add_argument("--role", choices=["tiled"], help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.role == "tiled":
        _tiled(args.image, args.out, args.tile, args.overlap)
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="opsef_mem_"))
    work.mkdir(parents=True, exist_ok=True)
    image = work / f"nuclei_{args.size}.tif"
    n_nuclei = None
    if not image.exists():
        info = make_nuclei_tiff(image, args.size, seed=1)
        n_nuclei = info["n_nuclei"]
        print(f"image: {args.size}x{args.size} uint16 ({image.stat().st_size / 2**20:.0f} MiB on disk), "
              f"{n_nuclei} nuclei, written tile-wise in {info['seconds']} s")
    out = work / "labels.zarr"
    shutil.rmtree(out, ignore_errors=True)
    res = run_child(Path(__file__).resolve(), ["--role", "tiled", "--image", str(image), "--out", str(out),
                                                "--tile", str(args.tile), "--overlap", str(args.overlap)])
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/tiled_memory.py --size {args.size} --tile {args.tile} --overlap {args.overlap}")
    print(f"tiled {args.size}x{args.size} -> zarr: {res['seconds']:.1f} s, peak RSS {res['rss_mb']:.0f} MiB "
          f"({res['rss_mb'] / 1024:.2f} GiB; target < 3 GB), {res['n_tiles']} tiles of {args.tile} px, "
          f"{res['n_objects']} objects" + (f" of {n_nuclei} drawn" if n_nuclei else "")
          + f", large {res['n_large']}, cut candidates {res['n_cut_candidates']}")
    print(json.dumps(res))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
