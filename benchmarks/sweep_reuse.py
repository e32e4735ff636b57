"""Threshold sweeps re-use one network pass: measured wall times per backend.

For each backend: one setting (predict + decode) against a 10-setting threshold
sweep through opsef (one ``predict`` + 10 ``decode``), their ratio (target
<= 2x), and opsef's overhead against the library's own one-call API on the same
input (target <= 5 %).  Every timing is the median of ``--repeats`` runs after
one warm-up run, the three functions timed in interleaved rounds.

Usage::

    python benchmarks/sweep_reuse.py [--repeats 3] [--backends stardist]

Each backend is one function returning a row dict; ``main`` prints the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _median_times(fns, repeats: int) -> list[float]:
    """Median wall time of each function, timed in interleaved rounds after one warm-up each.

    Interleaving (one call of each function per round) keeps slow drifts of the machine
    (other load, clock changes) from favouring whichever function was timed first.
    """
    for fn in fns:
        fn()  # warm-up (graph tracing, caches)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def bench_stardist(repeats: int = 3, model: str = "stardist2d_demo") -> dict:
    """StarDist2D on ``stardist.data.test_image_nuclei_2d()`` (512x512, real nuclei).

    Parameters
    ----------
    repeats : int
        Timed repetitions (median reported).
    model : str
        Model name or path (the project's demo model by default).

    Returns
    -------
    dict
        One table row.
    """
    from csbdeep.utils import normalize

    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter
    from stardist.data import test_image_nuclei_2d

    img = test_image_nuclei_2d()
    image = Image.from_array(img, "YX")
    seg = get_segmenter("stardist")
    base = {"model": model, "n_tiles": (1, 1)}
    sweep = [seg.params({**base, "prob_thresh": float(t)}) for t in np.linspace(0.3, 0.75, 10)]
    one = sweep[0]
    sd = seg.model(one)

    def single():
        return seg.segment(image, one)

    def swept():
        pred = seg.predict(image, one)
        return [seg.decode(pred, image, p) for p in sweep]

    def library():
        x = normalize(img, 1, 99.8, axis=None)
        return sd.predict_instances(x, prob_thresh=one.prob_thresh, n_tiles=(1, 1), show_tile_progress=False)[0]

    assert np.array_equal(single(), library()), "opsef and predict_instances disagree"
    t_one, t_sweep, t_lib = _median_times([single, swept, library], repeats)
    return {
        "backend": "stardist",
        "input": f"{img.shape[0]}x{img.shape[1]}",
        "one_s": t_one,
        "sweep10_s": t_sweep,
        "sweep_ratio": t_sweep / t_one,
        "library_s": t_lib,
        "overhead_pct": 100.0 * (t_one - t_lib) / t_lib,
    }


def bench_cellpose(repeats: int = 3, model: str = "cellpose_demo") -> dict:
    """Cellpose on ``stardist.data.test_image_nuclei_2d()`` (512x512, real nuclei).

    One setting is ``segment`` (network pass + mask reconstruction); the sweep is one
    ``predict`` and 10 ``decode`` over (flow_threshold, cellprob_threshold); the library
    reference is ``CellposeModel.eval`` with the same parameters (labels checked equal).

    Parameters
    ----------
    repeats : int
        Timed repetitions (median reported).
    model : str
        Model name or path (the project's demo model by default).

    Returns
    -------
    dict
        One table row.
    """
    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter
    from stardist.data import test_image_nuclei_2d

    img = test_image_nuclei_2d()
    image = Image.from_array(img, "YX")
    seg = get_segmenter("cellpose")
    base = {"model": model, "device": "cpu"}
    grid = [(f, c) for f in (0.3, 0.4, 0.6, 0.8, 1.0) for c in (-1.0, 0.0)]
    sweep = [seg.params({**base, "flow_threshold": f, "cellprob_threshold": c}) for f, c in grid]
    one = seg.params({**base, "flow_threshold": 0.4, "cellprob_threshold": 0.0})
    cp = seg.model(one)

    def single():
        return seg.segment(image, one)

    def swept():
        pred = seg.predict(image, one)
        return [seg.decode(pred, image, p) for p in sweep]

    def library():
        # opsef's diameter=None means diam_mean (eval's own None would use the model's diam_labels)
        return cp.eval(img, channels=[0, 0], diameter=float(cp.diam_mean), flow_threshold=0.4,
                       cellprob_threshold=0.0)[0]

    assert np.array_equal(single(), library()), "opsef and CellposeModel.eval disagree"
    t_one, t_sweep, t_lib = _median_times([single, swept, library], repeats)
    return {
        "backend": "cellpose",
        "input": f"{img.shape[0]}x{img.shape[1]}",
        "one_s": t_one,
        "sweep10_s": t_sweep,
        "sweep_ratio": t_sweep / t_one,
        "library_s": t_lib,
        "overhead_pct": 100.0 * (t_one - t_lib) / t_lib,
    }


BACKENDS = {"stardist": bench_stardist, "cellpose": bench_cellpose}


def print_table(rows: list[dict]) -> None:
    """Print the rows as a fixed-width table."""
    head = f"{'backend':<10} {'input':<9} {'1 setting s':>11} {'10-sweep s':>10} {'ratio':>6} " \
           f"{'library s':>9} {'overhead':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['backend']:<10} {r['input']:<9} {r['one_s']:>11.3f} {r['sweep10_s']:>10.3f} "
              f"{r['sweep_ratio']:>5.2f}x {r['library_s']:>9.3f} {r['overhead_pct']:>8.1f}%")
    print("targets: ratio <= 2x, overhead <= 5 %")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    args = ap.parse_args(argv)
    rows = [BACKENDS[name](repeats=args.repeats) for name in args.backends]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine

    print(f"machine: {machine()}")
    print(f"command: python benchmarks/sweep_reuse.py --repeats {args.repeats} --backends {' '.join(args.backends)}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
