"""Shared helpers of the scaling benchmarks: a tile-wise synthetic nuclei image, child processes, RSS.

The synthetic image is rendered tile by tile straight into a tiled TIFF, so the
generator never holds more than one tile: nuclei sit on a jittered grid (cell
26 px, centre jitter +-3 px, radius 5-8 px, 65 % of cells occupied), so every
nucleus lies inside its own grid cell and each tile is rendered from the cell
table alone.  Background 100 + Gaussian noise (sd 12), nuclei 350-900 with a
soft edge, uint16.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsef_core.testing.synthetic import CELL, make_nuclei_tiff  # noqa: F401 - re-exported


def child_peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``, Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: Path, args: list[str], timeout: float = 900) -> dict:
    """Run ``python script args`` as its own process; it prints one JSON line last, returned as dict.

    The child's own peak RSS (``rss_mb``) is in that JSON; ``children_rss_mb``
    is ``RUSAGE_CHILDREN`` measured here (the max over children so far).
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    out = json.loads(line)
    out["children_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def emit(result: dict) -> None:
    """Print a child's result as the last JSON line of its stdout."""
    result["rss_mb"] = round(child_peak_rss_mb(), 1)
    # the largest of this process's own finished children (e.g. dask workers), if any
    result["own_children_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(json.dumps(result), flush=True)


def overlaps(a, b) -> tuple[dict, dict, dict]:
    """Object areas of two label images and their pairwise intersections, slab by slab
    (:func:`opsef_core.evaluate.overlap_blockwise`; zarr/numpy inputs, bounded memory):
    ``(area_a, area_b, {a << 32 | b: pixels})``."""
    from opsef_core.evaluate import overlap_blockwise

    ov, _ = overlap_blockwise(a, b)
    coo = ov.intersection.tocoo()
    inter = {int(ov.gt_labels[r]) << 32 | int(ov.pred_labels[c]): int(v) for r, c, v in zip(coo.row, coo.col, coo.data)}
    return (dict(zip(ov.gt_labels.tolist(), ov.gt_sizes.tolist())),
            dict(zip(ov.pred_labels.tolist(), ov.pred_sizes.tolist())), inter)


def f1_at_05(a, b) -> dict:
    """Object-level F1 at IoU 0.5 between two label images (tp counted from sparse overlaps).

    Matches at IoU > 0.5 are necessarily one-to-one, so no assignment problem
    needs solving: tp = number of (a, b) object pairs with IoU > 0.5.
    Works slab by slab on zarr/numpy inputs to bound memory.
    """
    from opsef_core.evaluate import overlap_blockwise

    ov, _ = overlap_blockwise(a, b)
    tp = int((ov.scores("iou").data > 0.5).sum())
    na, nb = ov.n_true, ov.n_pred
    return {"n_a": na, "n_b": nb, "tp": tp, "f1": round(2 * tp / (na + nb), 5) if na + nb else 1.0}


def machine() -> str:
    """One line: CPU model, cores, RAM, Python, date."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, Python {platform.python_version()}, "
            f"{date.today().isoformat()}")
