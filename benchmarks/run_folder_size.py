"""Size of a demo run folder, by output kind, and what its label TIFFs would take uncompressed.

Usage::

    python benchmarks/run_folder_size.py [--config configs/demo.json] [--limit 2]

Runs the config on the first ``--limit`` images (the README's ``opsef run configs/demo.json
--limit 2``) into a temporary folder and prints the bytes per top-level entry, the total, and
the label TIFFs' size against their uncompressed pixel size (zlib is lossless).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    import tifffile

    from opsef_core.config import load_config
    from opsef_core.run import execute

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.json"))
    ap.add_argument("--limit", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config).copy_with(**{"inputs.limit": args.limit})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = execute(cfg, out=tmp, progress=False)
        wall = time.perf_counter() - t0
        print(f"config {args.config}, {args.limit} images, run in {wall:.1f} s")
        print(f"{'entry':<20} {'MB':>8}")
        for entry in sorted(run.iterdir(), key=_size, reverse=True):
            print(f"{entry.name:<20} {_size(entry) / 1e6:>8.2f}")
        total = _size(run)
        print(f"{'total':<20} {total / 1e6:>8.2f}")
        tiffs = [f for d in ("labels", "labels_filtered", "labels_working", "labels_classes")
                 for f in (run / d).rglob("*.tif")] if run.exists() else []
        stored = sum(f.stat().st_size for f in tiffs)
        raw = 0
        for f in tiffs:
            a = tifffile.imread(f)
            raw += a.nbytes
        print(f"label TIFFs: {len(tiffs)} files, {stored / 1e6:.2f} MB zlib-compressed vs "
              f"{raw / 1e6:.2f} MB of uncompressed pixels ({raw / max(stored, 1):.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
