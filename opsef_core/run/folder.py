"""The run folder: creating it, item done-markers, and the run's tables.

A run folder is never re-used (:func:`create_run_folder`).  Each item writes its outputs and
then its done-marker ``items/<id>.json`` last; :func:`write_tables` gathers the markers'
results into ``summary.csv``, ``measurements.csv``, ``metrics.csv``, ``ranking.csv`` and
``ranking.png``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from ..config import RunConfig
from ..errors import RunFolderError
from ..io.naming import safe_name
from .plan import Combination, Item

__all__ = ["ITEMS_DIR", "RANK_GROUP", "create_run_folder", "load_marker", "write_tables"]

logger = logging.getLogger(__name__)

ITEMS_DIR = "items"
RANK_GROUP = ("pipeline", "segmenter", "setting", "combination")


def create_run_folder(out: str | Path, stem: str, now: datetime | None = None) -> Path:
    """Create a new run folder ``<out>/<stem>-YYYYmmdd-HHMMSS[-n]``, never re-using one.

    The time stamp is UTC, like every time in ``run.json``.  The folder is created with
    :func:`os.mkdir` (which fails if it exists); on a collision a suffix ``-2``, ``-3``, ...
    is added.  Run folders of notebooks are made here too.

    Raises
    ------
    RunFolderError
        When the parent folder cannot be created or written.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the output folder ({exc.strerror})", out) from None
    base = f"{safe_name(stem, 'run')}-{(now or datetime.now(timezone.utc)).strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10000):
        path = out / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder ({exc.strerror})", path) from None
    raise RunFolderError("too many run folders with the same name", out)


def load_marker(run_dir: Path, item: Item) -> dict | None:
    """The done-marker of a fully done item (its result); None when absent, unreadable, or the
    item is ``partial`` or ``failed`` (a resume runs those again)."""
    path = run_dir / ITEMS_DIR / f"{item.id}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if data.get("id") != item.id or data.get("status") != "done":  # partial and failed items run again
        return None
    return data


def _ranking(config: RunConfig, metrics, summary, combos: list[Combination], n_gt: int):
    """The ranking of every combination; those not scored on every item with ground truth say
    so (``n_images`` < ``n_images_expected``, ``not_scored`` names the reason) instead of
    dropping out of the table."""
    import pandas as pd

    from .. import evaluate

    ranking = evaluate.rank(metrics, by=config.evaluation.rank_by, group=RANK_GROUP) if len(metrics) \
        else pd.DataFrame(columns=[*RANK_GROUP, "n_images", "rank"])
    attrs = dict(ranking.attrs)
    present = set(ranking["combination"].astype(str)) if len(ranking) else set()
    missing = [c for c in combos if c.id not in present]
    if missing:
        extra = pd.DataFrame([{"pipeline": c.pipeline, "segmenter": c.segmenter, "setting": c.setting_id,
                               "combination": c.id, "n_images": 0} for c in missing])
        ranking = pd.concat([ranking, extra], ignore_index=True)
    ranking["n_images"] = ranking["n_images"].fillna(0).astype(int)
    ranking["n_images_expected"] = n_gt
    reasons = []
    for cid, n in zip(ranking["combination"].astype(str), ranking["n_images"]):
        if n >= n_gt:
            reasons.append("")
            continue
        rows = summary[summary["combination"] == cid] if len(summary) else summary
        errs = [str(e) for col in ("gt_error", "error")
                for e in rows.get(col, pd.Series(dtype=object)).dropna().unique() if str(e)]
        why = (errs[0] + (f" (and {len(errs) - 1} other errors)" if len(errs) > 1 else "")) if errs \
            else "no ground truth matched"
        reasons.append(f"scored on {n} of {n_gt} images: {why}")
    ranking["not_scored"] = reasons
    ranking.attrs.update(attrs)
    return ranking


def write_tables(config: RunConfig, run_dir: Path, results: list[dict], combos: list[Combination],
                 items: list[Item]) -> None:
    """Gather per-item results into summary.csv, measurements.csv, metrics.csv and the ranking."""
    import pandas as pd

    from .. import evaluate, io

    summary = pd.DataFrame([r for res in results for r in res["summary"]])
    io.write_table(run_dir / "summary.csv", summary)
    if config.outputs.measurements:
        parts = [pd.read_csv(run_dir / res["measurements"]) for res in results if res.get("measurements")]
        if parts:
            io.write_table(run_dir / "measurements.csv", pd.concat(parts, ignore_index=True))
    metrics = [m for res in results for m in res.get("metrics", [])]
    n_gt = sum(1 for it in items if it.ground_truth)
    if not n_gt:
        return
    mdf = pd.DataFrame(metrics)
    if metrics:
        io.write_table(run_dir / "metrics.csv", mdf)
    ranking = _ranking(config, mdf, summary, combos, n_gt)
    io.write_table(run_dir / "ranking.csv", ranking)
    scored = ranking[ranking["n_images"] > 0]
    if len(scored):
        try:
            fig = evaluate.plot_ranking(scored.reset_index(drop=True), path=run_dir / "ranking.png")
            fig.clear()
        except Exception as exc:  # noqa: BLE001 - a plot must not lose the run's tables
            logger.error("ranking plot failed: %s", exc)
