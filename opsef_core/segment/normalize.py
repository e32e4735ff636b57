"""The one rule for intensity normalisation limits and non-finite pixels.

Every place that computes normalisation percentiles (the classical, StarDist,
U-Net backends, the tiled path's global limits, the ``normalize_percentile``
preprocessing step, and the fill value of the Cellpose and fusion backends,
whose percentiles Cellpose itself computes) calls :func:`finite_percentiles`,
and every backend passes its input through :func:`fill_nonfinite` before it
smooths or normalises it, so the rule is the same everywhere:

* **Percentiles ignore non-finite pixels**: they are ``np.percentile`` of the
  finite pixels only (NaN, +inf and -inf left out), never NaN.
* **Non-finite pixels are background**: before anything else (smoothing,
  normalisation, the network) each NaN/inf pixel is set to the *background
  intensity*: the low normalisation limit (the low ``normalize`` percentile of
  the finite pixels, the low ``normalize_limits`` value when absolute limits
  are given, or the finite minimum without normalisation), or the high limit
  when the backend inverts intensities (dark objects on a bright background).
  A ``logging`` warning names the image and the number of such pixels.  The
  backend then proceeds exactly as on the same image with those pixels set to
  that value (percentiles a backend takes after filling, e.g. the classical one's
  after smoothing or Cellpose's own, see the filled pixels at the low limit: they
  move by at most the filled pixels' share of ranks, nothing visible for a few
  bad pixels).
* **No finite pixel at all** is a :class:`~opsef_core.errors.SegmentationError`
  naming the image.

Integer and boolean images have no non-finite pixels; for them the functions
are the plain numpy computations (no copy, no mask).  Preprocessing steps do
not fill: a filter (gaussian, median, ...) spreads a NaN over its
neighbourhood, and the warning's count says how many pixels became background.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegmentationError

__all__ = ["background_value", "fill_nonfinite", "finite_percentiles", "nonfinite_mask"]

logger = logging.getLogger(__name__)


def nonfinite_mask(x: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the NaN/inf pixels of ``x``, or None when there is none (or ``x`` is integer)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fc":
        return None
    mask = ~np.isfinite(x)
    return mask if mask.any() else None


def _no_finite(x: np.ndarray, name: str | None, source) -> SegmentationError:
    what = f"image {name!r}" if name else "the image"
    return SegmentationError(
        f"{what} has no finite pixel (all {x.size} pixels are NaN or infinite); nothing to segment", source)


def finite_percentiles(x: np.ndarray, percentiles: Sequence[float], *, name: str | None = None,
                       source: str | Path | None = None) -> tuple[float, ...]:
    """Percentiles of the finite pixels of ``x`` (NaN and +-inf ignored).

    Parameters
    ----------
    x : ndarray
        Intensities (any shape, any numeric dtype).
    percentiles : sequence of float
        Percentiles in 0..100.
    name, source : optional
        Image name and file, for the error message.

    Returns
    -------
    tuple of numpy scalars
        One value per percentile: ``np.percentile`` of the finite values, with the
        dtype ``np.percentile`` gives (float32 for float32 data).

    Raises
    ------
    SegmentationError
        When ``x`` has no finite pixel (or no pixel at all).
    """
    x = np.asarray(x)
    mask = nonfinite_mask(x)
    values = x if mask is None else x[~mask]
    if values.size == 0:
        raise _no_finite(x, name, source)
    return tuple(np.percentile(values, list(percentiles)))


def background_value(x: np.ndarray, percentiles: Sequence[float] | None = None,
                     limits: Sequence[float] | None = None, invert: bool = False, *,
                     name: str | None = None, source: str | Path | None = None) -> float:
    """The intensity that non-finite pixels of ``x`` take: the low (high with ``invert``) normalisation limit.

    ``limits`` (absolute ``(low, high)``) win over ``percentiles`` (of the finite
    pixels, :func:`finite_percentiles`); with neither, the finite minimum (maximum).
    """
    i = 1 if invert else 0
    if limits is not None:
        return float(limits[i])
    if percentiles is not None:
        return float(finite_percentiles(x, [percentiles[i]], name=name, source=source)[0])
    return float(finite_percentiles(x, [100.0 if invert else 0.0], name=name, source=source)[0])


def fill_nonfinite(x: Any, percentiles: Sequence[float] | None = None, limits: Sequence[float] | None = None,
                   invert: bool = False, *, name: str | None = None,
                   source: str | Path | None = None) -> np.ndarray:
    """Return ``x`` with its NaN/inf pixels set to the background (see the module docstring).

    Parameters
    ----------
    x : array-like
        A backend's input intensities (one channel, spatial).
    percentiles : (float, float), optional
        The backend's ``normalize`` percentiles.
    limits : (float, float), optional
        The backend's absolute ``normalize_limits`` (win over ``percentiles``).
    invert : bool
        The backend inverts intensities: background is the high limit.
    name, source : optional
        Image name and file, for the warning and the error.

    Returns
    -------
    ndarray
        ``x`` itself when it has no non-finite pixel, otherwise a copy with them filled.

    Raises
    ------
    SegmentationError
        When ``x`` has no finite pixel.
    """
    x = np.asarray(x)
    mask = nonfinite_mask(x)
    if mask is None:
        return x
    n = int(mask.sum())
    if n == x.size:
        raise _no_finite(x, name, source)
    value = background_value(x, percentiles, limits, invert, name=name, source=source)
    n_nan = int(np.isnan(x[mask]).sum())
    where = f"{name!r}" if name else "image"
    if source is not None:
        where += f" ({source})"
    logger.warning("%s: %d non-finite pixel(s) (%d NaN, %d inf) of %d set to the background intensity %.6g",
                   where, n, n_nan, n - n_nan, x.size, value)
    out = x.copy()
    out[mask] = value
    return out
