"""Clearing quality along depth (clearing study; ``docs/definitions.md#clearing-quality-along-depth``).

* :func:`depth_profile` — depth normalisation: the spheroid's diameter in each
  z slice, measured in the binarised maximum projection along Y (an x–z view);
  the slice of maximum diameter is the centre (100 %).
* :func:`slice_contrast` — mean I / I_max, SNR, CNR by Bhattacharyya
  coefficient and by Fisher ratio, for one slice given signal/noise masks.
* :func:`clearing_metrics` — both, for every slice of a stack.
* :func:`per_depth_segmentation` — pixel F1, AJI and object counts per slice.

8-bit conversion used for the Bhattacharyya histograms: intensities are
scaled by the stack's maximum to 0..255 (``X = round(255 I / I_max)``, clipped),
then p and q are the signal/noise histograms over X = 0..255, each normalised
to sum 1; the sum in ``CNR_BC = 1 - sum_{X=1..255} sqrt(p q)`` starts at 1
as in the study (bin 0 ignored).  Variances are population variances (ddof=0).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import AxesError, ConfigError
from ..measure import _spacing, check_labels

__all__ = ["depth_profile", "slice_contrast", "clearing_metrics", "per_depth_segmentation", "to_8bit"]

log = logging.getLogger(__name__)


def _check_stack(stack, what="stack") -> np.ndarray:
    a = np.asarray(stack)
    if a.ndim != 3:
        raise AxesError(f"{what} must be a ZYX array, got shape {a.shape}")
    return a


def _threshold(a: np.ndarray, threshold) -> float:
    from skimage.filters import threshold_otsu

    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ConfigError(f"unknown threshold {threshold!r}; use 'otsu' or a number")
        if a.size == 0 or np.ptp(a) == 0:
            return float(a.max()) if a.size else 0.0
        return float(threshold_otsu(a))
    return float(threshold)


def depth_profile(stack, mask=None, threshold="otsu", pixel_size=None, largest: bool = True) -> pd.DataFrame:
    """Spheroid diameter per z slice and depth normalisation to the centre slice.

    Parameters
    ----------
    stack : ndarray
        ``ZYX`` intensities (ignored when ``mask`` is given, except for its shape).
    mask : ndarray, optional
        ``ZYX`` spheroid (or nuclei) mask/labels; when given, its projection is used
        instead of thresholding the intensity projection.
    threshold : "otsu" or float
        Threshold of the maximum projection along Y when no mask is given.
    pixel_size : float, sequence or dict, optional
        Voxel size (Z, Y, X) in µm, for the ``diameter`` column.
    largest : bool
        Keep only the largest connected component of the binarised x–z view
        (holes filled), so debris does not widen the extent.

    Returns
    -------
    DataFrame
        Per z: ``z``, ``diameter_px`` (extent along X in the x–z view, first to
        last foreground pixel), ``diameter`` (µm), ``percent_max_diameter``,
        ``centre_slice`` (index of the maximum; the middle of tied maxima),
        ``is_centre``, ``depth_from_centre`` (slices) and
        ``depth_from_centre_um``.
    """
    from scipy import ndimage as ndi
    from skimage.measure import label as cc_label

    a = _check_stack(stack)
    sp = _spacing(pixel_size, 3)
    if mask is not None:
        m = _check_stack(mask, "mask")
        if m.shape != a.shape:
            raise AxesError(f"mask shape {m.shape} differs from stack shape {a.shape}")
        xz = (m > 0).any(axis=1)
    else:
        mip = a.max(axis=1).astype(np.float64)
        xz = mip > _threshold(mip, threshold)
    if largest and xz.any():
        cc = cc_label(xz, connectivity=2)
        sizes = np.bincount(cc.ravel())
        sizes[0] = 0
        xz = ndi.binary_fill_holes(cc == np.argmax(sizes))
    nz = a.shape[0]
    diam = np.zeros(nz)
    for z in range(nz):
        xs = np.flatnonzero(xz[z])
        if xs.size:
            diam[z] = xs[-1] - xs[0] + 1
    dmax = diam.max()
    if dmax > 0:
        ties = np.flatnonzero(diam == dmax)
        centre = int(ties[len(ties) // 2]) if len(ties) % 2 else int(np.rint(ties.mean()))
        pct = 100.0 * diam / dmax
    else:
        log.warning("depth_profile: no foreground found; percent of maximum diameter is NaN")
        centre = -1
        pct = np.full(nz, np.nan)
    z = np.arange(nz)
    return pd.DataFrame({
        "z": z,
        "diameter_px": diam,
        "diameter": diam * sp[2],
        "percent_max_diameter": pct,
        "centre_slice": centre,
        "is_centre": z == centre,
        "depth_from_centre": z - centre if centre >= 0 else np.full(nz, np.nan),
        "depth_from_centre_um": (z - centre) * sp[0] if centre >= 0 else np.full(nz, np.nan),
    })


def to_8bit(values, i_max: float) -> np.ndarray:
    """Scale intensities to integer levels 0..255 by ``i_max`` (``round(255 I / i_max)``, clipped)."""
    v = np.asarray(values, dtype=np.float64)
    if i_max <= 0:
        return np.zeros(v.shape, np.uint8)
    return np.clip(np.rint(255.0 * v / i_max), 0, 255).astype(np.uint8)


def slice_contrast(slice_, signal_mask, noise_mask, i_max: float | None = None) -> dict:
    """Contrast of one slice (or patch) between signal and noise pixels.

    Parameters
    ----------
    slice_ : ndarray
        Intensities (any shape).
    signal_mask, noise_mask : ndarray of bool
        Signal (nuclei) and noise (background) pixels, same shape as ``slice_``.
    i_max : float, optional
        Maximum intensity used for ``mean_norm`` and the 8-bit conversion —
        pass the stack's maximum; default the slice's maximum.

    Returns
    -------
    dict
        ``mean_norm`` (mean I over the slice / I_max), ``snr`` (mu_s / sigma_n;
        inf when the noise is constant), ``cnr_bc`` (1 - sum_{X=1..255}
        sqrt(p q)), ``cnr_fr`` ((mu_s - mu_n)² / (V_s + V_n)), ``mean_signal``,
        ``mean_noise``, ``n_signal``, ``n_noise``.  NaN where signal or noise
        is empty.
    """
    img = np.asarray(slice_, dtype=np.float64)
    s_m = np.asarray(signal_mask, bool)
    n_m = np.asarray(noise_mask, bool)
    if s_m.shape != img.shape or n_m.shape != img.shape:
        raise AxesError(f"signal/noise masks {s_m.shape}/{n_m.shape} differ from the slice shape {img.shape}")
    if i_max is None:
        i_max = float(img.max()) if img.size else 0.0
    s, n = img[s_m], img[n_m]
    out = dict(mean_norm=float(img.mean() / i_max) if i_max > 0 and img.size else np.nan,
               snr=np.nan, cnr_bc=np.nan, cnr_fr=np.nan,
               mean_signal=float(s.mean()) if s.size else np.nan,
               mean_noise=float(n.mean()) if n.size else np.nan,
               n_signal=int(s.size), n_noise=int(n.size))
    if not s.size or not n.size:
        return out
    mu_s, mu_n, sd_n = s.mean(), n.mean(), n.std()
    out["snr"] = float(mu_s / sd_n) if sd_n > 0 else (float("inf") if mu_s > 0 else np.nan)
    p = np.bincount(to_8bit(s, i_max), minlength=256) / s.size
    q = np.bincount(to_8bit(n, i_max), minlength=256) / n.size
    out["cnr_bc"] = float(1.0 - np.sqrt(p[1:] * q[1:]).sum())
    var = s.var() + n.var()
    out["cnr_fr"] = float((mu_s - mu_n) ** 2 / var) if var > 0 else (float("inf") if mu_s != mu_n else np.nan)
    return out


def clearing_metrics(
    stack,
    nuclei_mask_or_labels=None,
    patch_size=None,
    pixel_size=None,
    threshold="otsu",
    spheroid_mask=None,
) -> pd.DataFrame:
    """Per-slice clearing metrics of a ``ZYX`` stack, with depth normalisation.

    Parameters
    ----------
    stack : ndarray
        ``ZYX`` intensities.
    nuclei_mask_or_labels : ndarray, optional
        ``ZYX`` truth nuclei (mask or labels): signal = nuclei pixels, noise =
        the other pixels of the patch (``signal_source = "truth"``).  Without
        it, each slice's patch is split by its own Otsu threshold
        (``signal_source = "otsu"``).
    patch_size : int or (int, int), optional
        YX size of the patch cropped at the spheroid centre (centroid of the
        binarised maximum projection along Z); the whole slice when omitted.
    pixel_size : float, sequence or dict, optional
        Voxel size (Z, Y, X) in µm.
    threshold : "otsu" or float
        Threshold for the depth profile's projection.
    spheroid_mask : ndarray, optional
        ``ZYX`` spheroid mask for the depth profile (default: threshold the stack).

    Returns
    -------
    DataFrame
        The :func:`depth_profile` columns plus, per slice, the
        :func:`slice_contrast` values computed on the patch (I_max = stack maximum; so
        ``mean_norm`` is the patch mean / I_max, see ``docs/definitions.md#clearing-quality-along-depth``),
        ``mean_norm_slice`` (the whole slice's mean / I_max, the same when ``patch_size`` is
        None), ``signal_source`` and the patch bounds ``patch_y0, patch_y1, patch_x0, patch_x1``.
    """
    from skimage.filters import threshold_otsu

    a = _check_stack(stack).astype(np.float64)
    truth = None
    if nuclei_mask_or_labels is not None:
        truth = _check_stack(nuclei_mask_or_labels, "nuclei mask") > 0
        if truth.shape != a.shape:
            raise AxesError(f"nuclei mask shape {truth.shape} differs from stack shape {a.shape}")
    prof = depth_profile(a, mask=spheroid_mask, threshold=threshold, pixel_size=pixel_size)
    ny, nx = a.shape[1:]
    if patch_size is None:
        y0, y1, x0, x1 = 0, ny, 0, nx
    else:
        ph, pw = (int(patch_size),) * 2 if np.isscalar(patch_size) else tuple(int(v) for v in patch_size)
        ph, pw = min(ph, ny), min(pw, nx)
        mip = a.max(axis=0)
        fg = mip > _threshold(mip, "otsu")
        cy, cx = (np.argwhere(fg).mean(axis=0) if fg.any() else (ny / 2, nx / 2))
        y0 = int(np.clip(round(cy - ph / 2), 0, ny - ph))
        x0 = int(np.clip(round(cx - pw / 2), 0, nx - pw))
        y1, x1 = y0 + ph, x0 + pw
    i_max = float(a.max())
    rows = []
    for z in range(a.shape[0]):
        patch = a[z, y0:y1, x0:x1]
        if truth is not None:
            sig = truth[z, y0:y1, x0:x1]
            src = "truth"
        else:
            thr = threshold_otsu(patch) if np.ptp(patch) > 0 else np.inf
            sig = patch > thr
            src = "otsu"
        rows.append({**slice_contrast(patch, sig, ~sig, i_max=i_max),
                     "mean_norm_slice": float(a[z].mean() / i_max) if i_max > 0 else np.nan,
                     "signal_source": src,
                     "patch_y0": y0, "patch_y1": y1, "patch_x0": x0, "patch_x1": x1})
    return pd.concat([prof, pd.DataFrame(rows)], axis=1)


def per_depth_segmentation(gt_labels_3d, pred_labels_3d) -> pd.DataFrame:
    """Segmentation quality per z slice: pixel F1, AJI and object counts.

    Parameters
    ----------
    gt_labels_3d, pred_labels_3d : ndarray
        ``ZYX`` truth and predicted labels.

    Returns
    -------
    DataFrame
        Per z: ``z``, ``pixel_f1`` (foreground Dice; 1 when both slices are
        empty), ``aji`` (Kumar's aggregated Jaccard index of the 2D slice, from
        ``opsef_core.evaluate.aji``), ``n_true`` and ``n_pred`` (distinct labels
        present in the slice) and ``count_ratio`` = n_pred / n_true.
    """
    gt = check_labels(gt_labels_3d, ndim=(3,), what="truth labels")
    pr = check_labels(pred_labels_3d, ndim=(3,), what="predicted labels")
    if gt.shape != pr.shape:
        raise AxesError(f"truth labels {gt.shape} and predicted labels {pr.shape} differ in shape")
    from ..evaluate import aji  # lazy: keeps this module importable on its own

    rows = []
    for z in range(gt.shape[0]):
        g, p = gt[z], pr[z]
        gf, pf = g > 0, p > 0
        tp = np.count_nonzero(gf & pf)
        denom = np.count_nonzero(gf) + np.count_nonzero(pf)
        n_true = int(np.unique(g[gf]).size)
        n_pred = int(np.unique(p[pf]).size)
        rows.append({
            "z": z,
            "pixel_f1": 2 * tp / denom if denom else 1.0,
            "aji": float(aji(g, p)),
            "n_true": n_true,
            "n_pred": n_pred,
            "count_ratio": n_pred / n_true if n_true else np.nan,
        })
    return pd.DataFrame(rows)
