"""Exploratory analysis of measurement tables: scatter plots, PCA, t-SNE and clustering.

Every function takes a pandas DataFrame (e.g. ``measurements.csv``, one row per object) and the
names of the numeric columns to use.  Rows with a missing value in those columns are left out (a
warning says how many) and results keep the index of the rows used, so they join back onto the
table.  Figures are returned for notebooks and written as PNG (atomically) when ``path`` is given.
scikit-learn and matplotlib are imported inside the functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .viz import new_figure, save_figure

__all__ = ["scatter", "pca", "tsne", "cluster"]

log = logging.getLogger(__name__)


def _matrix(
    df: pd.DataFrame, columns: Sequence[str], min_rows: int, what: str
) -> tuple[np.ndarray, pd.Index]:
    if isinstance(columns, str):
        columns = [columns]
    columns = list(columns)
    if not columns:
        raise ConfigError(f"{what}: give at least one column")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"{what}: column(s) {missing} not in the table; available: {list(df.columns)}")
    sub = df[columns].apply(pd.to_numeric, errors="coerce")
    keep = sub.notna().all(axis=1) & np.isfinite(sub.to_numpy(float)).all(axis=1)
    if (~keep).any():
        log.warning("%s: %d row(s) with missing or non-numeric values left out", what, int((~keep).sum()))
    sub = sub[keep]
    if len(sub) < min_rows:
        raise ConfigError(f"{what} needs at least {min_rows} complete rows, the table has {len(sub)}")
    return sub.to_numpy(float), sub.index


def _standardise(x: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(x)


def scatter(
    df: pd.DataFrame,
    x: str,
    y: str,
    color_by: str | None = None,
    path: str | Path | None = None,
    ax=None,
):
    """Scatter plot of two columns, optionally coloured by a third.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    x, y : str
        Numeric columns for the axes.
    color_by : str, optional
        Numeric column (colour map + colour bar) or categorical column (one colour per value,
        legend).
    path : str or Path, optional
        PNG written when given.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into (a new figure otherwise).

    Returns
    -------
    matplotlib.figure.Figure
    """
    xy, index = _matrix(df, [x, y], 1, "scatter")
    if color_by is not None and color_by not in df.columns:
        raise ConfigError(f"scatter: colour column {color_by!r} not in the table")
    if ax is None:
        fig = new_figure((5.5, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if color_by is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.7)
    else:
        c = df.loc[index, color_by]
        if pd.api.types.is_numeric_dtype(c) and not pd.api.types.is_bool_dtype(c) and c.nunique() > 10:
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=c.to_numpy(float), s=10, alpha=0.8, cmap="viridis")
            fig.colorbar(sc, ax=ax, label=color_by)
        else:
            for value in sorted(c.unique(), key=str):
                sel = (c == value).to_numpy()
                ax.scatter(xy[sel, 0], xy[sel, 1], s=10, alpha=0.8, label=str(value))
            ax.legend(title=color_by, fontsize=8, markerscale=1.5)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if path is not None:
        save_figure(fig, path)
    return fig


def pca(
    df: pd.DataFrame, columns: Sequence[str], n_components: int = 2, standardise: bool = True
) -> pd.DataFrame:
    """Principal component analysis of selected columns.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    columns : sequence of str
        Numeric columns.
    n_components : int
        Number of components (at most the number of columns and of rows).
    standardise : bool
        Scale every column to zero mean and unit variance first (recommended when units differ).

    Returns
    -------
    pandas.DataFrame
        Columns ``PC1..PCn``, index of the rows used; ``.attrs["explained_variance_ratio"]``
        (list of float) and ``.attrs["components"]`` (loadings, one list per component).
    """
    from sklearn.decomposition import PCA

    x, index = _matrix(df, columns, 2, "pca")
    if not 1 <= n_components <= min(x.shape):
        raise ConfigError(f"pca: n_components must be between 1 and {min(x.shape)}, got {n_components}")
    if standardise:
        x = _standardise(x)
    model = PCA(n_components=n_components)
    pcs = model.fit_transform(x)
    out = pd.DataFrame(pcs, index=index, columns=[f"PC{i + 1}" for i in range(n_components)])
    out.attrs["explained_variance_ratio"] = [float(v) for v in model.explained_variance_ratio_]
    out.attrs["components"] = model.components_.tolist()
    out.attrs["columns"] = list(columns)
    out.attrs["standardise"] = bool(standardise)
    return out


def tsne(
    df: pd.DataFrame,
    columns: Sequence[str],
    perplexity: float = 30.0,
    seed: int = 0,
    standardise: bool = True,
) -> pd.DataFrame:
    """2D t-SNE embedding of selected columns (scikit-learn, PCA initialisation).

    Exact gradients for up to 500 rows, Barnes-Hut above.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    columns : sequence of str
        Numeric columns.
    perplexity : float
        Requested perplexity; clipped to at most (n − 1)/3 (so always below n − 1, as t-SNE
        requires) for small tables.  The value used is in ``.attrs["perplexity"]``.
    seed : int
        Random state: the same seed gives the same embedding.
    standardise : bool
        Scale columns to zero mean and unit variance first.

    Returns
    -------
    pandas.DataFrame
        Columns ``tSNE1, tSNE2``, index of the rows used.
    """
    from sklearn.manifold import TSNE

    x, index = _matrix(df, columns, 4, "tsne")
    if standardise:
        x = _standardise(x)
    n = x.shape[0]
    used = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    if used != perplexity:
        log.info("tsne: perplexity %s clipped to %s for %d rows", perplexity, used, n)
    # exact gradients for small tables: O(n²) but faster there than Barnes-Hut, whose OpenMP
    # threads slow down badly on busy machines
    method = "exact" if n <= 500 else "barnes_hut"
    emb = TSNE(n_components=2, perplexity=used, random_state=seed, init="pca", method=method).fit_transform(x)
    out = pd.DataFrame(emb, index=index, columns=["tSNE1", "tSNE2"])
    out.attrs.update(
        perplexity=used, seed=seed, method=method, columns=list(columns), standardise=bool(standardise)
    )
    return out


def cluster(
    df: pd.DataFrame,
    columns: Sequence[str],
    method: str = "kmeans",
    n_clusters: int = 3,
    seed: int = 0,
    standardise: bool = True,
) -> pd.Series:
    """Cluster the rows of a table on selected columns.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    columns : sequence of str
        Numeric columns.
    method : {"kmeans", "agglomerative"}
        k-means (``n_init=10``, seeded) or Ward agglomerative clustering (deterministic).
    n_clusters : int
        Number of clusters (2 ≤ n_clusters ≤ rows).
    seed : int
        Random state for k-means.
    standardise : bool
        Scale columns to zero mean and unit variance first.

    Returns
    -------
    pandas.Series
        Integer cluster per row (name ``"cluster"``), index of the rows used.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans

    x, index = _matrix(df, columns, 2, "cluster")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ConfigError(f"cluster: n_clusters must be between 1 and {x.shape[0]} (rows), got {n_clusters}")
    if standardise:
        x = _standardise(x)
    if method == "kmeans":
        labels = KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit_predict(x)
    elif method == "agglomerative":
        labels = AgglomerativeClustering(n_clusters=n_clusters).fit_predict(x)
    else:
        raise ConfigError(f"cluster: unknown method {method!r}; use 'kmeans' or 'agglomerative'")
    return pd.Series(labels.astype(int), index=index, name="cluster")
