"""Grid reuse benchmark: 4 pipelines x 3 classical settings on the demo nuclei.

Counts, with spies wrapped around ``Pipeline.apply`` and the classical backend's
``predict``/``decode``, how often each preprocessing and each network pass ran
per image (the run engine must apply each pipeline once per image and run one
network pass per image, pipeline and network key, however many decoding
settings share it), and prints the total wall time.

Usage: ``python benchmarks/grid_reuse.py [--config configs/demo.json] [--limit N] [--keep]``
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.json")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--keep", action="store_true", help="keep the run folder (printed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from opsef_core.config import load_config
    from opsef_core.preprocess import Pipeline
    from opsef_core.run import execute, plan, plan_items
    from opsef_core.segment import get_segmenter

    cfg = load_config(args.config).copy_with(
        segmenters=[{"name": "classical", "backend": "classical", "params": {"min_size": 20},
                     "sweep": {"h": [1.0, 2.0, 4.0]}}],
        postprocess=None)
    if args.limit:
        cfg = cfg.copy_with(**{"inputs.limit": args.limit})
    if len(cfg.pipelines) != 4:
        print(f"note: the config has {len(cfg.pipelines)} pipelines (4 expected)")
    combos = plan(cfg)
    items = plan_items(cfg)

    pre_calls: collections.Counter = collections.Counter()
    net_calls: collections.Counter = collections.Counter()
    dec_calls: collections.Counter = collections.Counter()
    current = {"pipeline": None}
    orig_apply = Pipeline.apply
    seg_cls = type(get_segmenter("classical"))
    orig_predict, orig_decode = seg_cls.predict, seg_cls.decode

    def apply(self, image):
        current["pipeline"] = self.name
        pre_calls[(image.name, self.name)] += 1
        return orig_apply(self, image)

    def predict(self, image, params):
        net_calls[(image.name, current["pipeline"])] += 1
        return orig_predict(self, image, params)

    def decode(self, pred, image, params):
        dec_calls[(image.name, current["pipeline"])] += 1
        return orig_decode(self, pred, image, params)

    Pipeline.apply, seg_cls.predict, seg_cls.decode = apply, predict, decode
    out = Path(tempfile.mkdtemp(prefix="opsef-bench-"))
    try:
        t0 = time.perf_counter()
        run = execute(cfg, out=out, progress=False)
        wall = time.perf_counter() - t0
    finally:
        Pipeline.apply, seg_cls.predict, seg_cls.decode = orig_apply, orig_predict, orig_decode

    n_img, n_pipe, n_comb = len(items), len(cfg.pipelines), len(combos)
    print(f"grid: {n_img} images x {n_pipe} pipelines x {n_comb // n_pipe} classical settings "
          f"= {n_img * n_comb} segmentations")
    print(f"{'image':<14} {'pipeline':<22} {'preprocess':>10} {'network':>8} {'decode':>7}")
    for (image, pipe) in sorted(pre_calls):
        print(f"{image:<14} {pipe:<22} {pre_calls[(image, pipe)]:>10} {net_calls[(image, pipe)]:>8} "
              f"{dec_calls[(image, pipe)]:>7}")
    ok_pre = set(pre_calls.values()) == {1} and len(pre_calls) == n_img * n_pipe
    ok_net = set(net_calls.values()) == {1} and len(net_calls) == n_img * n_pipe
    print(f"preprocessing runs: {sum(pre_calls.values())} (expected {n_img * n_pipe}: once per image and pipeline)"
          f" -> {'OK' if ok_pre else 'FAIL'}")
    print(f"network passes:     {sum(net_calls.values())} (expected {n_img * n_pipe}; without reuse "
          f"{n_img * n_comb}) -> {'OK' if ok_net else 'FAIL'}")
    print(f"decodings:          {sum(dec_calls.values())} (one per segmentation)")
    print(f"total wall time:    {wall:.1f} s ({wall / max(n_img, 1):.2f} s per image, all outputs written)")
    if args.keep:
        print(run)
    else:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok_pre and ok_net else 1


if __name__ == "__main__":
    sys.exit(main())
