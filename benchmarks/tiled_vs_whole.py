"""Tiled vs whole-image classical segmentation of a synthetic 8192x8192 nuclei image.

Writes the image tile-wise to a TIFF (benchmarks/_common.py), then, each in its
own process: (1) whole-image segmentation (image read into memory, labels saved
as .npy), (2) tiled segmentation (image read lazily, labels written to zarr).
Prints object-level F1@0.5 between the two, and each process's peak RSS and
wall time.  Classical backend with its default parameters (per-tile
percentile normalisation and Otsu threshold: the backend takes no fixed
limits, which is part of what this measures).

Usage::

    python benchmarks/tiled_vs_whole.py [--size 8192] [--tile 1024] [--overlap 48] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, f1_at_05, machine, make_nuclei_tiff, run_child  # noqa: E402

PARAMS = {}  # classical defaults: sigma 1, percentiles (1, 99.8), Otsu, h 1


def _whole(image: str, out: str) -> None:
    import numpy as np

    from opsef_core.io import read_image
    from opsef_core.segment import get_segmenter

    t0 = time.perf_counter()
    img = read_image(image)
    labels = get_segmenter("classical").segment(img, PARAMS)
    np.save(out, labels)
    emit({"role": "whole", "seconds": round(time.perf_counter() - t0, 1), "n_objects": int(labels.max())})


def _tiled(image: str, out: str, tile: int, overlap: int, params: dict) -> None:
    from opsef_core.tiling import segment_tiled_image

    t0 = time.perf_counter()
    _, info = segment_tiled_image(image, "classical", params, tile_shape=tile, overlap=overlap, out=out,
                                  progress=False, return_info=True)
    emit({"role": "tiled", "seconds": round(time.perf_counter() - t0, 1), "n_tiles": info["n_tiles"],
          "n_objects": info["n_objects"], "normalization": info["normalization"],
          "n_large": info["n_large"], "n_cut_candidates": info["n_cut_candidates"]})


def main(argv=None) -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=48)
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    ap.add_argument("--role", choices=["whole", "tiled"], help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.role == "whole":
        _whole(args.image, args.out)
        return 0
    if args.role == "tiled":
        _tiled(args.image, args.out, args.tile, args.overlap, json.loads(args.params))
        return 0

    import numpy as np
    import zarr

    work = args.workdir or Path(tempfile.mkdtemp(prefix="opsef_tvw_"))
    work.mkdir(parents=True, exist_ok=True)
    image = work / f"nuclei_{args.size}.tif"
    if not image.exists():
        info = make_nuclei_tiff(image, args.size)
        print(f"image: {args.size}x{args.size} uint16, {info['n_nuclei']} nuclei, written in {info['seconds']} s")
    for p in (work / "whole.npy", work / "tiled.zarr"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    me = Path(__file__).resolve()
    whole = run_child(me, ["--role", "whole", "--image", str(image), "--out", str(work / "whole.npy")])
    tiled = run_child(me, ["--role", "tiled", "--image", str(image), "--out", str(work / "tiled.zarr"),
                           "--tile", str(args.tile), "--overlap", str(args.overlap)])
    f1 = f1_at_05(np.load(work / "whole.npy", mmap_mode="r"), zarr.open_array(str(work / "tiled.zarr"), mode="r"))
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/tiled_vs_whole.py --size {args.size} --tile {args.tile} "
          f"--overlap {args.overlap}")
    print(f"whole image : {whole['seconds']:7.1f} s  peak RSS {whole['rss_mb']:8.0f} MiB  "
          f"{whole['n_objects']} objects")
    print(f"tiled       : {tiled['seconds']:7.1f} s  peak RSS {tiled['rss_mb']:8.0f} MiB  {tiled['n_objects']} objects "
          f"({tiled['n_tiles']} tiles {args.tile} px, overlap {args.overlap}, normalisation {tiled['normalization']}, "
          f"large {tiled['n_large']}, cut candidates {tiled['n_cut_candidates']})")
    print(f"object F1@0.5 whole vs tiled: {f1['f1']:.5f} (tp {f1['tp']}, whole {f1['n_a']}, tiled {f1['n_b']})")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
