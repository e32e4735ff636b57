"""Framework overhead per image: opsef's backends against calling the libraries directly.

* classical: ``get_segmenter("classical").segment(image, params)`` against the
  same scipy/scikit-image calls written out inline (smoothing, percentile
  normalisation, Otsu, hole filling, small-object removal, distance
  transform, h-maxima, watershed); the labels are checked to be identical.
* stardist: ``StarDist2D.predict_instances`` against opsef's backend on the same
  normalised input (same thresholds), when the demo model ``models/stardist2d_demo``
  exists; skipped otherwise.

Timings are medians of ``--repeats`` runs after one warm-up, per image of
``demo_data/nuclei2d``.  Overhead = (opsef - direct) / direct.

Usage::

    python benchmarks/overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine  # noqa: E402

import numpy as np  # noqa: E402


def _median_time(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def classical_direct(x: np.ndarray, sigma=1.0, pct=(1.0, 99.8), h=1.0, min_size=10) -> np.ndarray:
    """The classical backend's default pipeline (2D, isotropic pixels) as plain library calls."""
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology, segmentation

    x = ndi.gaussian_filter(x.astype(np.float32), sigma, mode="nearest")
    lo, hi = np.percentile(x, pct)
    x = np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)
    fg = ndi.binary_fill_holes(x > filters.threshold_otsu(x))
    fg = morphology.remove_small_objects(fg, max_size=min_size - 1)
    dist = ndi.distance_transform_edt(fg)
    markers = measure.label(morphology.h_maxima(dist, h))
    labels = segmentation.watershed(-dist, markers, mask=fg)
    missing = fg & (labels == 0)
    if missing.any():
        labels = np.where(missing, measure.label(missing) + labels.max(), labels)
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    return segmentation.relabel_sequential(labels.astype(np.int32))[0]


def bench_classical(images, repeats: int) -> list[dict]:
    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter

    seg = get_segmenter("classical")
    rows = []
    for path, img in images:
        plane = np.asarray(img.sel(c=0).data)
        iso = Image.from_array(plane, "YX")  # unit spacing, as the direct calls assume
        t_ours, ours = _median_time(lambda: seg.segment(iso, {}), repeats)
        t_lib, lib = _median_time(lambda: classical_direct(plane), repeats)
        rows.append({"backend": "classical", "image": path.name, "shape": plane.shape, "opsef_s": t_ours,
                     "direct_s": t_lib, "identical": bool(np.array_equal(ours, lib)), "n_objects": int(ours.max())})
    return rows


def bench_stardist(images, repeats: int) -> list[dict]:
    model_dir = REPO / "models" / "stardist2d_demo"
    if not model_dir.is_dir():
        print(f"stardist: skipped ({model_dir.relative_to(REPO)} does not exist)")
        return []
    from csbdeep.utils import normalize
    from stardist.models import StarDist2D

    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter

    seg = get_segmenter("stardist")
    model = StarDist2D(None, name=model_dir.name, basedir=str(model_dir.parent))
    rows = []
    for path, img in images:
        plane = np.asarray(img.sel(c=0).data)
        x = normalize(plane, 1, 99.8, axis=None, dtype=np.float32)
        params = {"model": str(model_dir), "normalize": False, "prob_thresh": float(model.thresholds.prob),
                  "nms_thresh": float(model.thresholds.nms), "device": "cpu"}
        ximg = Image.from_array(x, "YX")
        t_ours, ours = _median_time(lambda: seg.segment(ximg, params), repeats)
        t_lib, lib = _median_time(lambda: model.predict_instances(x)[0], repeats)
        rows.append({"backend": "stardist", "image": path.name, "shape": plane.shape, "opsef_s": t_ours,
                     "direct_s": t_lib, "identical": bool(np.array_equal(ours, lib)), "n_objects": int(ours.max())})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=3, help="first N demo images")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from opsef_core.io import read_image

    paths = sorted((REPO / "demo_data" / "nuclei2d" / "images").glob("*.tif"))[: args.images]
    images = [(p, read_image(p)) for p in paths]
    rows = bench_classical(images, args.repeats) + bench_stardist(images, args.repeats)
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/overhead.py --repeats {args.repeats} --images {args.images}")
    print(f"{'backend':10s} {'image':16s} {'shape':>12s} {'opsef s':>9s} {'direct s':>9s} {'overhead':>9s} "
          f"{'identical':>9s} {'objects':>7s}")
    for r in rows:
        ov = (r["opsef_s"] - r["direct_s"]) / r["direct_s"] * 100
        print(f"{r['backend']:10s} {r['image']:16s} {str(r['shape']):>12s} {r['opsef_s']:9.4f} {r['direct_s']:9.4f} "
              f"{ov:8.1f}% {str(r['identical']):>9s} {r['n_objects']:7d}")
    for b in sorted({r["backend"] for r in rows}):
        rs = [r for r in rows if r["backend"] == b]
        ours, lib = sum(r["opsef_s"] for r in rs), sum(r["direct_s"] for r in rs)
        print(f"{b}: total opsef {ours:.3f} s vs direct {lib:.3f} s -> overhead {(ours - lib) / lib * 100:+.1f}% "
              f"({(ours - lib) / len(rs) * 1000:+.1f} ms/image)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
