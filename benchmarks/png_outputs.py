"""PNG outputs of a run: opsef's zlib level against the libraries' default, on the demo nuclei.

Every run item writes an overlay PNG per combination and a montage PNG (a matplotlib figure);
both used the libraries' default zlib level 6 (``matplotlib.image.imsave``, ``Figure.savefig``)
until opsef set :data:`opsef_core.viz.PNG_COMPRESS_LEVEL`.  This script times, in one run and
on the same arrays, the encoding of

* overlays (:func:`opsef_core.viz.overlay` of each ``demo_data/nuclei2d`` image and its labels,
  and a 4x4 tiling of it, the size of a larger field): ``matplotlib.image.imsave`` (level 6)
  against :func:`opsef_core.viz.png_bytes`;
* a montage of 3 pipelines x 4 settings (:func:`opsef_core.viz.montage`): ``Figure.savefig`` at
  level 6 against :func:`opsef_core.viz.figure_png`, after the figure is built once;

and prints median milliseconds and bytes of each.  The decoded pixels are checked equal (PNG is
lossless at every level).

Usage::

    python benchmarks/png_outputs.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine  # noqa: E402

import numpy as np  # noqa: E402


def _median_ms(fn, repeats: int) -> tuple[float, bytes]:
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, out


def _imsave_default(rgb) -> bytes:
    import matplotlib.image as mimage

    buf = io.BytesIO()
    mimage.imsave(buf, rgb, format="png")
    return buf.getvalue()


def _savefig_default(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _decoded(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def main(argv=None) -> int:
    import tifffile

    from opsef_core.viz import PNG_COMPRESS_LEVEL, figure_png, montage, overlay, png_bytes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    data = REPO / "demo_data" / "nuclei2d"
    pairs = [(tifffile.imread(p), tifffile.imread(data / "labels" / p.name))
             for p in sorted((data / "images").glob("*.tif"))]
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/png_outputs.py --repeats {args.repeats}")
    print(f"opsef PNG_COMPRESS_LEVEL = {PNG_COMPRESS_LEVEL}; library default = 6")
    print(f"{'output':32s} {'pixels':>12s} {'default ms':>10s} {'opsef ms':>9s} {'speed-up':>8s} "
          f"{'default KB':>10s} {'opsef KB':>9s} {'size':>7s}")
    rows = []
    cases = [(f"overlay {i}", overlay(img, lab)) for i, (img, lab) in enumerate(pairs)]
    cases.append(("overlay 4x4 tiled", np.tile(cases[0][1], (4, 4, 1))))
    for name, rgb in cases:
        t_lib, b_lib = _median_ms(lambda: _imsave_default(rgb), args.repeats)
        t_ops, b_ops = _median_ms(lambda: png_bytes(rgb), args.repeats)
        assert np.array_equal(_decoded(b_lib), _decoded(b_ops)), name
        rows.append((name, rgb.shape[:2], t_lib, t_ops, len(b_lib), len(b_ops)))
    img, lab = pairs[0]
    fig = montage({f"pipeline {i}": (img, {f"setting {j}": lab for j in range(4)}) for i in range(3)})
    t_lib, b_lib = _median_ms(lambda: _savefig_default(fig), max(3, args.repeats // 2))
    t_ops, b_ops = _median_ms(lambda: figure_png(fig), max(3, args.repeats // 2))
    assert np.array_equal(_decoded(b_lib), _decoded(b_ops)), "montage"
    rows.append(("montage 3x5 panels (render+png)", _decoded(b_ops).shape[:2], t_lib, t_ops, len(b_lib), len(b_ops)))
    for name, shape, t_lib, t_ops, n_lib, n_ops in rows:
        print(f"{name:32s} {str(tuple(shape)):>12s} {t_lib:10.1f} {t_ops:9.1f} {t_lib / t_ops:7.2f}x "
              f"{n_lib / 1024:10.1f} {n_ops / 1024:9.1f} {(n_ops - n_lib) / n_lib * 100:+6.1f}%")
    lib, ours = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"total: default {lib:.1f} ms, opsef {ours:.1f} ms -> {lib / ours:.2f}x; "
          f"bytes {sum(r[4] for r in rows) / 1024:.0f} KB -> {sum(r[5] for r in rows) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
