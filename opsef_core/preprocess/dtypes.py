"""Explicit dtype rules shared by the preprocessing steps.

- :func:`cast_like` turns a floating-point result back into the input's dtype:
  integers are rounded to nearest and clipped to the dtype's range (never wrap
  around), floats are cast.
- :func:`to_unit` maps data to float64 in [0, 1] ("normalised data").
- :func:`sum_dtype` picks an accumulator/output dtype for sums that cannot overflow.
- :func:`footprint` builds the disk/ball (optionally anisotropic) or box
  neighbourhoods the filters use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cast_like", "to_unit", "sum_dtype", "footprint", "axis_radii"]


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to ``dtype``: integers rounded and clipped to the dtype's range.

    Parameters
    ----------
    values : ndarray
        Results (any numeric dtype).
    dtype : numpy dtype
        Target dtype.

    Returns
    -------
    ndarray of ``dtype``
        A new array.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        v = np.asarray(values, dtype=np.float64)
        return np.clip(np.rint(v), info.min, info.max).astype(dtype)
    if dtype == bool:
        return np.asarray(values) > 0
    return np.array(values, dtype=dtype, copy=True)


def to_unit(arr: np.ndarray, mode: str = "dtype") -> np.ndarray:
    """Normalise an array to float64 in [0, 1].

    Parameters
    ----------
    arr : ndarray
        Input (not modified).
    mode : {"dtype", "minmax"}
        ``"dtype"``: unsigned integers are divided by the dtype's maximum, signed
        integers mapped from the dtype's range, floats already in [0, 1] are kept and
        other floats are min-max scaled.  ``"minmax"``: the array's own minimum and
        maximum map to 0 and 1 (a constant array maps to zeros).

    Returns
    -------
    ndarray of float64
    """
    a = np.asarray(arr)
    if mode == "dtype" and np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return (a.astype(np.float64) - info.min) / (float(info.max) - info.min)
    f = a.astype(np.float64)
    if mode == "dtype" and f.size and np.nanmin(f) >= 0 and np.nanmax(f) <= 1:
        return f
    lo, hi = (np.nanmin(f), np.nanmax(f)) if f.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros_like(f)
    return (f - lo) / (hi - lo)


def sum_dtype(dtype: np.dtype, n: int) -> np.dtype:
    """Dtype that holds the sum of ``n`` values of ``dtype`` exactly (integers) or closely (floats).

    Unsigned integers go to uint32 when ``n * max`` fits, else uint64; signed
    integers to int32 / int64 likewise; booleans count as uint32; float16/float32 go to
    float32 and float64 stays float64.
    """
    dtype = np.dtype(dtype)
    if dtype == bool:
        return np.dtype(np.uint32) if n < 2**32 else np.dtype(np.uint64)
    if np.issubdtype(dtype, np.unsignedinteger):
        return np.dtype(np.uint32) if int(np.iinfo(dtype).max) * n < 2**32 else np.dtype(np.uint64)
    if np.issubdtype(dtype, np.signedinteger):
        info = np.iinfo(dtype)
        bound = max(abs(int(info.min)), int(info.max)) * n
        return np.dtype(np.int32) if bound < 2**31 else np.dtype(np.int64)
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def axis_radii(radius: float, spacing: tuple, anisotropic: bool) -> tuple:
    """Per-axis radii in pixels for a radius given in X pixels.

    With ``anisotropic=True`` the radius along axis ``a`` is
    ``radius * spacing_X / spacing_a`` (the same physical distance on every axis).
    """
    if not anisotropic:
        return tuple(float(radius) for _ in spacing)
    return tuple(float(radius) * spacing[-1] / s for s in spacing)


def footprint(radius: float, spacing: tuple, shape: str = "disk", anisotropic: bool = False) -> np.ndarray:
    """Boolean neighbourhood: a disk/ball (ellipsoid when anisotropic) or a box.

    Parameters
    ----------
    radius : float
        Radius in X pixels (a box has side ``2 * radius + 1``).
    spacing : tuple
        Pixel size per axis of the array being filtered (its length gives the dimensionality).
    shape : {"disk", "square"}
        ``"disk"`` is a disk in 2D and a ball in 3D (like ``skimage.morphology.disk``
        / ``ball``); ``"square"`` a square / cube.
    anisotropic : bool
        Scale the radius along each axis by the pixel size (see :func:`axis_radii`).

    Returns
    -------
    ndarray of bool
    """
    radii = axis_radii(radius, spacing, anisotropic)
    half = [int(np.floor(r)) for r in radii]
    if shape == "square":
        return np.ones(tuple(2 * h + 1 for h in half), dtype=bool)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist = sum((g / max(r, 1e-9)) ** 2 for g, r in zip(grids, radii))
    return dist <= 1.0
