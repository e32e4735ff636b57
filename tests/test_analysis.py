"""Tests of opsef_core.analysis on a synthetic measurement table with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opsef_core import analysis
from opsef_core.errors import ConfigError


@pytest.fixture(scope="module")
def table():
    """Three populations of objects (small/dim, large/bright, elongated) in mixed units."""
    rng = np.random.default_rng(7)
    parts = []
    for k, (area, intensity, ecc) in enumerate([(80, 200, 0.3), (400, 900, 0.35), (150, 300, 0.95)]):
        n = 30
        parts.append(pd.DataFrame({
            "area": rng.normal(area, area * 0.05, n),
            "mean_intensity": rng.normal(intensity, intensity * 0.05, n),
            "eccentricity": np.clip(rng.normal(ecc, 0.02, n), 0, 1),
            "population": f"pop{k}",
        }))
    df = pd.concat(parts, ignore_index=True)
    df.index = df.index + 100  # a non-default index must be kept
    return df


COLS = ["area", "mean_intensity", "eccentricity"]


def test_pca_shapes_variance_and_standardisation(table):
    out = analysis.pca(table, COLS, n_components=2)
    assert list(out.columns) == ["PC1", "PC2"] and out.index.equals(table.index)
    evr = out.attrs["explained_variance_ratio"]
    assert len(evr) == 2 and evr[0] >= evr[1] and 0.9 < sum(evr) <= 1.0 + 1e-12
    # standardised PCA ignores the units: rescaling a column changes nothing
    scaled = table.assign(area=table["area"] * 1000.0)
    out2 = analysis.pca(scaled, COLS, n_components=2)
    assert np.allclose(np.abs(out2.to_numpy()), np.abs(out.to_numpy()), atol=1e-8)
    # independent reference: PCA of the z-scored data by SVD
    z = (table[COLS] - table[COLS].mean()) / table[COLS].std(ddof=0)
    u, s, vt = np.linalg.svd(z.to_numpy(), full_matrices=False)
    assert np.allclose(np.abs(out.to_numpy()), np.abs(u[:, :2] * s[:2]), atol=1e-8)
    # without standardisation the large-valued column dominates PC1
    raw = analysis.pca(scaled, COLS, n_components=1, standardise=False)
    assert abs(raw.attrs["components"][0][0]) > 0.99


def test_tsne_deterministic_and_perplexity_clipped(table):
    a = analysis.tsne(table, COLS, seed=3)
    b = analysis.tsne(table, COLS, seed=3)
    assert a.shape == (len(table), 2) and list(a.columns) == ["tSNE1", "tSNE2"]
    assert np.array_equal(a.to_numpy(), b.to_numpy())
    small = analysis.tsne(table.iloc[:10], COLS, perplexity=30, seed=0)
    assert small.attrs["perplexity"] == pytest.approx(3.0) and small.shape == (10, 2)


def test_cluster_recovers_populations(table):
    from sklearn.metrics import adjusted_rand_score

    truth = table["population"]
    for method in ("kmeans", "agglomerative"):
        lab = analysis.cluster(table, COLS, method=method, n_clusters=3, seed=0)
        assert lab.index.equals(table.index) and lab.name == "cluster"
        assert adjusted_rand_score(truth, lab) == pytest.approx(1.0)
    assert analysis.cluster(table, COLS, seed=1).equals(analysis.cluster(table, COLS, seed=1))


def test_rows_with_missing_values_left_out(table):
    df = table.copy()
    df.loc[df.index[:3], "area"] = np.nan
    out = analysis.pca(df, COLS)
    assert len(out) == len(df) - 3 and out.index.equals(df.index[3:])


def test_errors(table):
    with pytest.raises(ConfigError, match="perimeter"):
        analysis.pca(table, ["area", "perimeter"])
    with pytest.raises(ConfigError, match="at least"):
        analysis.tsne(table.iloc[:2], COLS)
    with pytest.raises(ConfigError):
        analysis.cluster(table.iloc[:2], COLS, n_clusters=3)
    with pytest.raises(ConfigError):
        analysis.cluster(table, COLS, method="dbscan")
    with pytest.raises(ConfigError):
        analysis.scatter(table, "area", "mean_intensity", color_by="nope")


def test_scatter_png(tmp_path, table):
    import matplotlib.image as mpimg

    fig = analysis.scatter(table, "area", "mean_intensity", color_by="population", path=tmp_path / "a.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "area" and len(ax.collections) == 3  # one series per population
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(table)
    fig2 = analysis.scatter(table, "area", "eccentricity", color_by="mean_intensity", path=tmp_path / "b.png")
    assert len(fig2.axes) == 2  # colour bar for a numeric colour column
    for name in ("a.png", "b.png"):
        img = mpimg.imread(tmp_path / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.std() > 0
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
