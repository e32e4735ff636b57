"""Ranking of the combinations of a grid by a metric averaged over images, and its figure."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# ranking of grid combinations
# --------------------------------------------------------------------------------------------
def rank(
    metrics: pd.DataFrame,
    by: str = "f1@0.5",
    group: Sequence[str] = ("pipeline", "segmenter", "params"),
    ascending: bool = False,
) -> pd.DataFrame:
    """Rank the combinations of a grid by a metric averaged over images.

    Parameters
    ----------
    metrics : pandas.DataFrame
        One row per (image, combination), e.g. ``metrics.csv`` of a run.
    by : str
        Metric column to rank by (default ``"f1@0.5"``).
    group : sequence of str
        Columns identifying a combination; those absent from ``metrics`` are ignored (at least
        one must be present).
    ascending : bool
        False (default): higher is better.

    Returns
    -------
    pandas.DataFrame
        Group columns, ``<by>_mean``, ``<by>_std`` (ddof=1, NaN for one image), ``n_images`` and
        ``rank`` (1 = best, ties share the best rank), ordered by rank.  ``.attrs["by"]`` and
        ``.attrs["group"]`` record the arguments.
    """
    if by not in metrics.columns:
        raise ConfigError(
            f"metric {by!r} is not a column of the metrics table; columns: {list(metrics.columns)}"
        )
    keys = [g for g in group if g in metrics.columns]
    if not keys:
        raise ConfigError(f"none of the group columns {list(group)} is in the metrics table")
    values = pd.to_numeric(metrics[by], errors="coerce")
    df = metrics[keys].astype(str).assign(_v=values)
    agg = df.groupby(keys, sort=False)["_v"].agg(["mean", "std", "count"]).reset_index()
    agg = agg.rename(columns={"mean": f"{by}_mean", "std": f"{by}_std", "count": "n_images"})
    agg["rank"] = agg[f"{by}_mean"].rank(ascending=ascending, method="min").astype("Int64")
    agg = agg.sort_values(["rank", *keys], kind="stable").reset_index(drop=True)
    agg.attrs["by"] = by
    agg.attrs["group"] = keys
    return agg


def plot_ranking(ranking: pd.DataFrame, path: str | Path | None = None):
    """Bar chart of a :func:`rank` table, plus a pipeline × segmenter heat map when both vary.

    The heat map shows, per (pipeline, segmenter) cell, the best mean over the other group
    columns (e.g. the best parameter setting).

    Parameters
    ----------
    ranking : pandas.DataFrame
        Result of :func:`rank`.
    path : str or Path, optional
        PNG written atomically when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..viz import new_figure, save_figure

    by = ranking.attrs.get("by") or next(c[:-5] for c in ranking.columns if c.endswith("_mean"))
    keys = ranking.attrs.get("group") or [
        c for c in ranking.columns if c not in (f"{by}_mean", f"{by}_std", "n_images", "rank")
    ]
    mean, std = ranking[f"{by}_mean"].to_numpy(float), ranking[f"{by}_std"].to_numpy(float)
    labels = [" | ".join(str(r[k]) for k in keys) for _, r in ranking.iterrows()]
    heat = (
        "pipeline" in ranking.columns
        and "segmenter" in ranking.columns
        and ranking["pipeline"].nunique() > 1
        and ranking["segmenter"].nunique() > 1
    )
    n = len(ranking)
    fig = new_figure((11 if heat else 7, max(2.5, 0.35 * n + 1.2)), layout="constrained")
    ax = fig.add_subplot(1, 2 if heat else 1, 1)
    y = np.arange(n)
    ax.barh(y, mean, xerr=np.nan_to_num(std), color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{by} (mean ± sd over images)")
    ax.set_title("ranking")
    if heat:
        hm = ranking.pivot_table(index="pipeline", columns="segmenter", values=f"{by}_mean", aggfunc="max")
        ax2 = fig.add_subplot(1, 2, 2)
        im = ax2.imshow(hm.to_numpy(float), cmap="viridis", aspect="auto")
        ax2.set_xticks(range(hm.shape[1]), [str(c) for c in hm.columns], rotation=45, ha="right", fontsize=8)
        ax2.set_yticks(range(hm.shape[0]), [str(i) for i in hm.index], fontsize=8)
        for (i, j), v in np.ndenumerate(hm.to_numpy(float)):
            if np.isfinite(v):
                ax2.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=7)
        ax2.set_title(f"best {by}: pipeline × segmenter")
        fig.colorbar(im, ax=ax2)
    if path is not None:
        save_figure(fig, path)
    return fig

