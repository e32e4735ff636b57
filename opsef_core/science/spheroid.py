"""Single-spheroid readouts (treated-spheroid study): area, perimeter, diameter, volume, circularity.

Definitions (``docs/definitions.md#spheroid-readouts``):

* diameter ``d`` = equivalent-circle diameter ``sqrt(4 A / pi)`` (default) or
  the mean Feret (caliper) diameter, computed by Cauchy's formula as the
  perimeter of the convex hull divided by pi;
* perimeter ``L``: Crofton perimeter (``skimage.measure.perimeter_crofton``,
  4 directions) for square pixels, iso-contour length for anisotropic ones
  (see :func:`opsef_core.measure.perimeter_2d`) — ~1 % accurate on a digital
  disc of radius >= 20 px;
* circularity ``4 pi A / L**2``; volume ``pi d**3 / 6`` (sphere of diameter d).

``evaluate.spheroid_metrics`` relies on :func:`largest_object` and
:func:`readouts`; keep their signatures stable.
"""

from __future__ import annotations

import logging
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from ..errors import AxesError, ConfigError
from ..measure import _spacing, check_labels, perimeter_2d

__all__ = ["largest_object", "readouts", "growth_table"]

log = logging.getLogger(__name__)


def largest_object(labels) -> tuple[np.ndarray, int]:
    """The largest object of a label image (or of a binary mask's connected components).

    Parameters
    ----------
    labels : ndarray
        Integer labels, or a boolean mask (split into 8/26-connected components).

    Returns
    -------
    mask : ndarray of bool
        The largest object (all False when there is none).
    n_objects : int
        How many objects the image held (> 1 = "ambiguous spheroid").
    """
    from skimage.measure import label as cc_label

    arr = np.asarray(labels)
    if arr.dtype == bool:
        arr = cc_label(arr, connectivity=arr.ndim)
    arr = check_labels(arr, ndim=(2, 3))
    sizes = np.bincount(arr.ravel())
    sizes[0] = 0
    n = int(np.count_nonzero(sizes))
    if n == 0:
        return np.zeros(arr.shape, bool), 0
    return arr == int(np.argmax(sizes)), n


def readouts(
    mask,
    pixel_size=1.0,
    diameter: Literal["equivalent", "feret"] = "equivalent",
) -> dict:
    """Area, perimeter, diameter, volume and circularity of one 2D spheroid mask.

    Parameters
    ----------
    mask : ndarray
        2D mask (``YX``) of the spheroid; a label image is binarised (> 0).
    pixel_size : float, (dy, dx) or dict
        Pixel size in µm (``{"Y": .., "X": ..}`` accepted).
    diameter : {"equivalent", "feret"}
        Which diameter ``d`` is used for ``diameter`` and ``volume``.

    Returns
    -------
    dict
        ``area`` (µm²), ``perimeter`` (µm, Crofton), ``diameter`` (µm),
        ``diameter_equivalent``, ``diameter_feret`` (mean Feret, µm),
        ``volume`` (µm³, ``pi d**3 / 6``), ``circularity`` (``4 pi A / L**2``;
        NaN for an empty mask) and ``diameter_method``.
    """
    from skimage.morphology import convex_hull_image

    m = np.asarray(mask)
    if m.ndim != 2:
        raise AxesError(f"spheroid readouts need a 2D (YX) mask, got shape {m.shape}")
    m = m > 0
    spacing = _spacing(pixel_size, 2)
    if diameter not in ("equivalent", "feret"):
        raise ConfigError(f"unknown diameter method {diameter!r}; use 'equivalent' or 'feret'")
    area = float(m.sum()) * spacing[0] * spacing[1]
    if area == 0:
        return dict(area=0.0, perimeter=0.0, diameter=0.0, diameter_equivalent=0.0, diameter_feret=0.0,
                    volume=0.0, circularity=float("nan"), diameter_method=diameter)
    perim = perimeter_2d(m, spacing)
    d_eq = float(np.sqrt(4 * area / np.pi))
    d_feret = perimeter_2d(convex_hull_image(m), spacing) / np.pi
    d = d_eq if diameter == "equivalent" else d_feret
    circ = 4 * np.pi * area / perim**2 if perim > 0 else float("nan")
    return dict(
        area=area, perimeter=perim, diameter=d, diameter_equivalent=d_eq, diameter_feret=float(d_feret),
        volume=float(np.pi * d**3 / 6), circularity=float(circ), diameter_method=diameter,
    )


def growth_table(
    df: pd.DataFrame,
    time: str = "time",
    by: Sequence[str] | str | None = None,
    columns: Sequence[str] = ("area", "diameter", "volume"),
) -> pd.DataFrame:
    """Growth of spheroids over time, relative to each spheroid's first time point.

    Parameters
    ----------
    df : DataFrame
        One row per spheroid and time point, with a ``time`` column and the
        readout columns (as from :func:`readouts`).
    time : str
        Name of the time column (any unit; rates are per that unit).
    by : str or sequence of str, optional
        Columns identifying a spheroid (e.g. ``"well"``, ``"condition"``); all
        rows form one spheroid when omitted.
    columns : sequence of str
        Readouts to express relative to the first time point; those absent
        are skipped.

    Returns
    -------
    DataFrame
        Sorted by ``by`` and ``time``, with ``<col>_rel`` (value / value at the
        first time point) for each readout and, when ``volume`` is present,
        ``volume_growth_rate`` (d ln V / dt between consecutive time points,
        NaN at the first) and ``volume_doubling_time`` (ln 2 / rate).
    """
    if time not in df.columns:
        raise ConfigError(f"growth table needs a {time!r} column; columns are {list(df.columns)}")
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ConfigError(f"growth table grouping columns {missing} not in the table")
    cols = [c for c in columns if c in df.columns]
    if not cols:
        raise ConfigError(f"growth table needs at least one of {list(columns)}")
    out = df.sort_values(by + [time], kind="stable").reset_index(drop=True).copy()
    groups = out.groupby(by, sort=False) if by else [(None, out)]
    for _, g in groups:
        idx = g.index
        for c in cols:
            first = float(g[c].iloc[0])
            out.loc[idx, f"{c}_rel"] = g[c].to_numpy(float) / first if first else np.nan
        if "volume" in cols:
            with np.errstate(divide="ignore", invalid="ignore"):
                lnv = np.log(g["volume"].to_numpy(float))
                dt = np.diff(g[time].to_numpy(float))
                rate = np.concatenate([[np.nan], np.diff(lnv) / dt])
            out.loc[idx, "volume_growth_rate"] = rate
            with np.errstate(divide="ignore", invalid="ignore"):
                out.loc[idx, "volume_doubling_time"] = np.where(rate > 0, np.log(2) / rate, np.nan)
    return out
