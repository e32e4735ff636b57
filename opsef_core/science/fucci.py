"""FUCCI cell-cycle phase calls (``docs/definitions.md#fucci-phase-calls``).

Per nucleus: background-corrected mean red (Cdt1, G1) and green (Geminin,
S/G2/M) intensities, each normalised by a high percentile over nuclei; then
two thresholds give the phase:

=============  ==============  ============
red            green           phase
=============  ==============  ============
high           low             ``G1``
low            high            ``S/G2/M``
high           high            ``G1/S``
low            low             ``unlabeled``
=============  ==============  ============

"high" means strictly above the threshold.  Default thresholds: Otsu on each
channel's per-nucleus normalised means (computed exactly on the sorted values,
:func:`otsu_exact`; this assumes both a low and a high population — pass a
number otherwise); the values used are stored in
``df.attrs["thresholds"]``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import AxesError, ConfigError
from ..measure import _spacing, check_labels

__all__ = ["PHASES", "nucleus_intensities", "call_phases", "phase_fractions", "radial_distribution",
           "phase_accuracy", "otsu_exact"]

log = logging.getLogger(__name__)

PHASES = ("G1", "S/G2/M", "G1/S", "unlabeled")


def _background(values_outside: np.ndarray, background, percentile: float, name: str) -> float:
    if isinstance(background, str):
        if background != "percentile":
            raise ConfigError(f"unknown background {background!r}; use 'percentile' or a number")
        if values_outside.size == 0:
            log.warning("no pixel outside nuclei for the %s background; using 0", name)
            return 0.0
        return float(np.percentile(values_outside, percentile))
    return float(background)


def nucleus_intensities(
    labels,
    red,
    green,
    background="percentile",
    background_percentile: float = 50.0,
    norm_percentile: float = 99.0,
    red_name: str = "red",
    green_name: str = "green",
) -> pd.DataFrame:
    """Background-corrected, normalised mean red and green intensity per nucleus.

    Parameters
    ----------
    labels : ndarray
        ``YX`` or ``ZYX`` nuclei labels.
    red, green : ndarray
        Reporter channels, same shape as ``labels``.
    background : "percentile", float or (float, float)
        ``"percentile"``: the ``background_percentile`` percentile of each
        channel's pixels outside all nuclei (default the median); a number (or
        a red/green pair) is subtracted as is.
    background_percentile : float
        Percentile for ``background="percentile"``.
    norm_percentile : float
        Each channel's corrected means are divided by this percentile over
        nuclei (so a typical bright nucleus is ~1).
    red_name, green_name : str
        Column names of the normalised values.

    Returns
    -------
    DataFrame
        ``label``, ``centroid_(z,)y,x`` (pixels), ``n_pixels``, ``<red>_raw``,
        ``<green>_raw`` (plain means), ``<red>``, ``<green>`` (corrected, clipped
        at 0, normalised).  ``attrs`` holds the backgrounds and normalisers.
    """
    from scipy import ndimage as ndi

    labels = check_labels(labels, what="nuclei labels")
    chans = {}
    for name, arr in ((red_name, red), (green_name, green)):
        a = np.asarray(arr, dtype=np.float64)
        if a.shape != labels.shape:
            raise AxesError(
                f"{name} channel shape {a.shape} differs from the label image shape {labels.shape}")
        chans[name] = a
    if isinstance(background, (tuple, list)):
        if len(background) != 2:
            raise ConfigError(f"background pair must be (red, green), got {background!r}")
        bgs = dict(zip((red_name, green_name), background))
    else:
        bgs = {red_name: background, green_name: background}
    ids = np.unique(labels)
    ids = ids[ids > 0]
    axes = "zyx"[-labels.ndim:]
    cols: dict = {"label": ids.astype(np.int64)}
    if ids.size:
        cents = np.asarray(ndi.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids))
        cents = cents.reshape(-1, labels.ndim)
    else:
        cents = np.zeros((0, labels.ndim))
    for i, a in enumerate(axes):
        cols[f"centroid_{a}"] = cents[:, i]
    cols["n_pixels"] = (np.asarray(ndi.sum_labels(np.ones(labels.shape), labels, ids)) if ids.size
                        else np.zeros(0)).astype(np.int64)
    outside = labels == 0
    attrs = {"background": {}, "normaliser": {}}
    for name, a in chans.items():
        raw = np.asarray(ndi.mean(a, labels, ids), float) if ids.size else np.zeros(0)
        bg = _background(a[outside], bgs[name], background_percentile, name)
        corr = np.clip(raw - bg, 0, None)
        norm = float(np.percentile(corr, norm_percentile)) if corr.size else 1.0
        if norm <= 0:
            log.warning("%s: no nucleus above background; values left unnormalised", name)
            norm = 1.0
        cols[f"{name}_raw"] = raw
        cols[name] = corr / norm
        attrs["background"][name] = bg
        attrs["normaliser"][name] = norm
    df = pd.DataFrame(cols)
    df.attrs.update(attrs, channels=(red_name, green_name))
    return df


def otsu_exact(values) -> float:
    """Otsu threshold of a small set of values, without histogram binning.

    Every split between consecutive sorted values is tried; the one maximising
    the between-class variance wins and the threshold is placed halfway
    between the two values it separates.  (``skimage.filters.threshold_otsu``
    bins into 256 levels and, on well-separated clusters, returns the first bin
    of the empty gap — i.e. the edge of the low cluster — which misclassifies
    nuclei at that edge.)

    Parameters
    ----------
    values : array-like
        Finite values (at least two distinct).

    Returns
    -------
    float
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = v.size
    w0 = np.arange(1, n) / n  # fraction in the low class for a split after index i
    c = np.cumsum(v)[:-1]
    mu0 = c / np.arange(1, n)
    mu1 = (v.sum() - c) / np.arange(n - 1, 0, -1)
    between = w0 * (1 - w0) * (mu0 - mu1) ** 2
    between[v[1:] == v[:-1]] = -1  # a split must fall between distinct values
    i = int(np.argmax(between))
    return float((v[i] + v[i + 1]) / 2)


def _resolve_threshold(values: np.ndarray, threshold, name: str) -> tuple[float, str]:
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ConfigError(f"unknown {name} threshold {threshold!r}; use 'otsu' or a number")
        v = values[np.isfinite(values)]
        if np.unique(v).size < 2:
            raise ConfigError(
                f"cannot compute an Otsu threshold for {name}: fewer than two distinct nucleus values "
                f"({v.size} nuclei); give a numeric threshold"
            )
        return otsu_exact(v), "otsu"
    return float(threshold), "user"


def call_phases(df: pd.DataFrame, red_threshold="otsu", green_threshold="otsu",
                red: str = "red", green: str = "green") -> pd.DataFrame:
    """Call each nucleus's FUCCI phase from its normalised red and green intensities.

    Parameters
    ----------
    df : DataFrame
        From :func:`nucleus_intensities`.
    red_threshold, green_threshold : "otsu" or float
        Threshold on the normalised values ("high" = strictly above).
    red, green : str
        Column names.

    Returns
    -------
    DataFrame
        A copy with ``phase`` in :data:`PHASES`; ``attrs["thresholds"]`` =
        ``{red: value, green: value}`` and ``attrs["threshold_methods"]``.
    """
    for c in (red, green):
        if c not in df.columns:
            raise ConfigError(f"phase calls need a {c!r} column; columns are {list(df.columns)}")
    out = df.copy()
    r = out[red].to_numpy(float)
    g = out[green].to_numpy(float)
    if len(out):
        tr, mr = _resolve_threshold(r, red_threshold, red)
        tg, mg = _resolve_threshold(g, green_threshold, green)
    else:
        tr, mr = (np.nan, "otsu") if isinstance(red_threshold, str) else (float(red_threshold), "user")
        tg, mg = (np.nan, "otsu") if isinstance(green_threshold, str) else (float(green_threshold), "user")
    rh, gh = r > tr, g > tg
    phase = np.select([rh & ~gh, gh & ~rh, rh & gh], ["G1", "S/G2/M", "G1/S"], default="unlabeled")
    out["phase"] = pd.Categorical(phase, categories=list(PHASES))
    out.attrs = {**df.attrs, "thresholds": {red: tr, green: tg}, "threshold_methods": {red: mr, green: mg}}
    log.info("FUCCI thresholds: %s=%.4g (%s), %s=%.4g (%s)", red, tr, mr, green, tg, mg)
    return out


def phase_fractions(df: pd.DataFrame, by=None) -> pd.DataFrame:
    """Count and fraction of nuclei per phase (every phase listed, also when absent).

    Parameters
    ----------
    df : DataFrame
        With a ``phase`` column.
    by : str or list of str, optional
        Grouping columns (e.g. ``image``, ``condition``).

    Returns
    -------
    DataFrame
        ``[by...,] phase, count, fraction``.
    """
    if "phase" not in df.columns:
        raise ConfigError("phase_fractions needs a 'phase' column (run call_phases first)")
    by = [by] if isinstance(by, str) else list(by or [])
    rows = []
    groups = df.groupby(by, sort=True, observed=True) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        n = len(g)
        counts = g["phase"].astype(str).value_counts()
        for ph in PHASES:
            c = int(counts.get(ph, 0))
            rows.append({**dict(zip(by, key)), "phase": ph, "count": c, "fraction": c / n if n else np.nan})
    return pd.DataFrame(rows, columns=by + ["phase", "count", "fraction"])


def radial_distribution(df: pd.DataFrame, centre=None, pixel_size=None, bins=5,
                        relative: bool = False) -> pd.DataFrame:
    """Phase fractions as a function of distance from the spheroid centre.

    Parameters
    ----------
    df : DataFrame
        With ``phase`` and ``centroid_(z,)y,x`` columns in pixels.
    centre : sequence of float, optional
        Spheroid centre in pixels, in the same axis order; default the mean of
        the nuclei centroids.
    pixel_size : float, sequence or dict, optional
        Voxel size in µm (distances in µm; pixels when omitted).
    bins : int or sequence of float
        Number of equal-width bins (over 0..largest distance, or 0..1 when
        ``relative``), or bin edges (in µm — pixels without ``pixel_size`` — or
        relative units); distances beyond the last edge go to the last bin.
    relative : bool
        Bin the relative radius (distance / largest distance, 0..1) instead of
        the absolute distance.

    Returns
    -------
    DataFrame
        Per bin: ``r_min``, ``r_max``, ``n`` and ``fraction_<phase>`` for every phase.
    """
    if "phase" not in df.columns:
        raise ConfigError("radial_distribution needs a 'phase' column (run call_phases first)")
    axes = [a for a in "zyx" if f"centroid_{a}" in df.columns]
    if len(axes) < 2:
        raise ConfigError("radial_distribution needs centroid_y and centroid_x columns")
    pts = df[[f"centroid_{a}" for a in axes]].to_numpy(float)
    sp = np.asarray(_spacing(pixel_size, len(axes)))
    c = pts.mean(axis=0) if centre is None else np.asarray(centre, float)
    if c.shape != (len(axes),):
        raise ConfigError(f"centre {centre!r} must have {len(axes)} coordinates ({''.join(axes)})")
    dist = np.sqrt((((pts - c) * sp) ** 2).sum(axis=1)) if len(pts) else np.zeros(0)
    r = dist / dist.max() if relative and len(dist) and dist.max() > 0 else dist
    if np.isscalar(bins):
        hi = 1.0 if relative else (float(r.max()) if len(r) else 1.0)
        edges = np.linspace(0.0, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, float)
    idx = np.clip(np.digitize(r, edges[1:-1], right=True), 0, len(edges) - 2)
    phases = df["phase"].astype(str).to_numpy()
    rows = []
    for b in range(len(edges) - 1):
        sel = idx == b
        n = int(sel.sum())
        row = {"r_min": edges[b], "r_max": edges[b + 1], "n": n}
        for ph in PHASES:
            row[f"fraction_{ph}"] = float((phases[sel] == ph).sum() / n) if n else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(centre=tuple(float(v) for v in c), relative=relative)
    return out


def phase_accuracy(pred_df: pd.DataFrame, truth_df: pd.DataFrame, match: str = "centroid",
                   max_distance: float = 5.0) -> dict:
    """Confusion matrix and accuracy of phase calls after matching nuclei.

    Parameters
    ----------
    pred_df, truth_df : DataFrame
        With ``phase`` and either ``centroid_*`` columns (pixels) or ``label``.
    match : {"centroid", "label"}
        ``centroid``: one-to-one Hungarian matching on centroid distance, pairs
        farther than ``max_distance`` pixels left unmatched; ``label``: nuclei
        with the same ``label`` value (same segmentation).
    max_distance : float
        Largest centroid distance (pixels) for a match.

    Returns
    -------
    dict
        ``confusion`` (DataFrame, rows = truth phase, columns = predicted
        phase, matched nuclei only), ``accuracy`` (correct / matched; NaN when
        nothing matched), ``n_matched``, ``n_truth``, ``n_pred``.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    for name, d in (("prediction", pred_df), ("truth", truth_df)):
        if "phase" not in d.columns:
            raise ConfigError(f"{name} table has no 'phase' column")
    if match == "label":
        m = truth_df[["label", "phase"]].merge(pred_df[["label", "phase"]], on="label", suffixes=("_t", "_p"))
        t_ph, p_ph = m["phase_t"].astype(str).to_numpy(), m["phase_p"].astype(str).to_numpy()
    elif match == "centroid":
        axes = [a for a in "zyx"
                if f"centroid_{a}" in truth_df.columns and f"centroid_{a}" in pred_df.columns]
        if len(axes) < 2:
            raise ConfigError("centroid matching needs centroid_y and centroid_x in both tables")
        cols = [f"centroid_{a}" for a in axes]
        t_pts, p_pts = truth_df[cols].to_numpy(float), pred_df[cols].to_numpy(float)
        if len(t_pts) and len(p_pts):
            dmat = cdist(t_pts, p_pts)
            cost = np.where(dmat <= max_distance, dmat, 1e12)
            ti, pi_ = linear_sum_assignment(cost)
            ok = dmat[ti, pi_] <= max_distance
            ti, pi_ = ti[ok], pi_[ok]
        else:
            ti = pi_ = np.zeros(0, int)
        t_ph = truth_df["phase"].astype(str).to_numpy()[ti]
        p_ph = pred_df["phase"].astype(str).to_numpy()[pi_]
    else:
        raise ConfigError(f"unknown matching {match!r}; use 'centroid' or 'label'")
    conf = pd.crosstab(pd.Categorical(t_ph, categories=list(PHASES)),
                       pd.Categorical(p_ph, categories=list(PHASES)), dropna=False)
    conf = conf.reindex(index=list(PHASES), columns=list(PHASES), fill_value=0)
    conf.index.name, conf.columns.name = "truth", "predicted"
    n = len(t_ph)
    return {
        "confusion": conf,
        "accuracy": float((t_ph == p_ph).sum() / n) if n else float("nan"),
        "n_matched": int(n),
        "n_truth": int(len(truth_df)),
        "n_pred": int(len(pred_df)),
    }
