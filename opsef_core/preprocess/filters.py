"""Smoothing and sharpening filters: ``median``, ``mean``, ``gaussian``, ``unsharp``.

All work on planes and stacks (a stack is filtered in 3D) and keep the input's
dtype (integer results rounded to nearest and clipped to the dtype's range).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from scipy import ndimage as ndi

from ..errors import ConfigError
from .dtypes import axis_radii, cast_like, footprint
from .registry import MAX_FILTER_PX, StepParams, check_extent, register_step, spatial_step

__all__ = [
    "MedianParams",
    "MeanParams",
    "GaussianParams",
    "UnsharpParams",
    "median",
    "mean",
    "gaussian",
    "unsharp",
]


def _per_axis(value, ndim: int, what: str) -> tuple:
    """Expand a scalar or per-axis tuple (given in (Z)YX order) to ``ndim`` values."""
    if isinstance(value, (tuple, list)):
        if len(value) != ndim:
            raise ConfigError(
                f"{what} has {len(value)} values {tuple(value)} but the data has {ndim} spatial axes"
            )
        return tuple(value)
    return (value,) * ndim


class MedianParams(StepParams):
    """Parameters of ``median``."""

    radius: int = Field(2, ge=1, le=50, description="neighbourhood radius in X pixels (1..50; at most the "
                        "plane's extent along Y and X)")
    footprint: Literal["disk", "square"] = Field(
        "disk", description="disk (ball in 3D) or square (cube in 3D) of side 2*radius+1"
    )
    anisotropic: bool = Field(False, description="scale the radius along Z/Y by the pixel size (3D)")


def _footprint_halo(p, spacing, dtype) -> tuple:
    """Half-width of a disk/ball/box footprint per axis (the pixels a rank filter reads)."""
    return tuple(int(np.floor(r)) for r in axis_radii(p.radius, spacing, p.anisotropic))


def _gaussian_halo(sigma: tuple, truncate: float) -> tuple:
    """scipy's Gaussian kernel radius per axis, ``int(truncate * sigma + 0.5)``."""
    return tuple(int(truncate * float(s) + 0.5) for s in sigma)


@register_step("median", MedianParams, "2d3d", headline=("radius",), abbrev={"radius": "r"},
               halo=_footprint_halo)
@spatial_step()
def median(arr: np.ndarray, p: MedianParams, spacing: tuple) -> np.ndarray:
    """Median filter over a disk/ball or box neighbourhood (2D/3D; keeps dtype).

    Uses ``scipy.ndimage.median_filter`` with ``mode="nearest"`` (as
    ``skimage.filters.median``).
    """
    check_extent("median", "radius", axis_radii(p.radius, spacing, p.anisotropic), arr.shape)
    fp = footprint(p.radius, spacing, p.footprint, p.anisotropic)
    return ndi.median_filter(arr, footprint=fp, mode="nearest")


class MeanParams(StepParams):
    """Parameters of ``mean``."""

    size: int | tuple[int, ...] = Field(
        3, description=f"box side in pixels, or one per axis in (Z)YX order (1..{2 * MAX_FILTER_PX + 1}; "
                       "at most the plane's extent along Y and X)")

    @field_validator("size")
    @classmethod
    def _positive(cls, v):
        vals = v if isinstance(v, tuple) else (v,)
        if any(x < 1 for x in vals):
            raise ValueError("every size must be >= 1")
        if any(x > 2 * MAX_FILTER_PX + 1 for x in vals):
            raise ValueError(f"every size must be <= {2 * MAX_FILTER_PX + 1} px")
        return v


@register_step("mean", MeanParams, "2d3d", headline=("size",),
               halo=lambda p, spacing, dtype: tuple(s // 2 for s in _per_axis(p.size, len(spacing), "mean size")))
@spatial_step()
def mean(arr: np.ndarray, p: MeanParams, spacing: tuple) -> np.ndarray:
    """Mean (uniform box) filter (2D/3D; keeps dtype).

    ``scipy.ndimage.uniform_filter`` in float64 with ``mode="reflect"``.
    """
    size = _per_axis(p.size, arr.ndim, "mean size")
    check_extent("mean", "size", size, arr.shape)
    return cast_like(ndi.uniform_filter(arr.astype(np.float64), size=size, mode="reflect"), arr.dtype)


class GaussianParams(StepParams):
    """Parameters of ``gaussian``."""

    sigma: float | tuple[float, ...] = Field(
        1.0, description=f"standard deviation in X pixels, or one per axis in (Z)YX order (0..{MAX_FILTER_PX}; "
                         "at most the plane's extent along Y and X)"
    )
    anisotropic: bool = Field(
        False, description="with a scalar sigma: sigma along axis a = sigma * pixel_size_X / pixel_size_a"
    )
    truncate: float = Field(4.0, gt=0, le=10, description="kernel half-width in sigmas")

    @field_validator("sigma")
    @classmethod
    def _non_negative(cls, v):
        vals = v if isinstance(v, tuple) else (v,)
        if any(x < 0 for x in vals):
            raise ValueError("every sigma must be >= 0")
        if any(x > MAX_FILTER_PX for x in vals):
            raise ValueError(f"every sigma must be <= {MAX_FILTER_PX} px")
        return v


def _gaussian_step_halo(p, spacing, dtype) -> tuple:
    sigma = (_per_axis(p.sigma, len(spacing), "gaussian sigma") if isinstance(p.sigma, tuple)
             else axis_radii(p.sigma, spacing, p.anisotropic))
    return _gaussian_halo(sigma, p.truncate)


@register_step("gaussian", GaussianParams, "2d3d", headline=("sigma",), abbrev={"sigma": "σ"},
               halo=_gaussian_step_halo)
@spatial_step()
def gaussian(arr: np.ndarray, p: GaussianParams, spacing: tuple) -> np.ndarray:
    """Gaussian smoothing, isotropic, per axis, or anisotropic from the pixel size (keeps dtype).

    ``scipy.ndimage.gaussian_filter`` in float64, ``mode="nearest"`` (as
    ``skimage.filters.gaussian``).
    """
    if isinstance(p.sigma, tuple):
        sigma = _per_axis(p.sigma, arr.ndim, "gaussian sigma")
    else:
        sigma = axis_radii(p.sigma, spacing, p.anisotropic)
    check_extent("gaussian", "sigma", sigma, arr.shape)
    out = ndi.gaussian_filter(arr.astype(np.float64), sigma=sigma, mode="nearest", truncate=p.truncate)
    return cast_like(out, arr.dtype)


class UnsharpParams(StepParams):
    """Parameters of ``unsharp``."""

    radius: float = Field(2.0, gt=0, le=MAX_FILTER_PX, description=f"sigma of the Gaussian blur, in pixels "
                          f"(0..{MAX_FILTER_PX}; at most the plane's extent along Y and X)")
    amount: float = Field(1.0, ge=0, le=100, description="weight of the detail (image - blurred) added back")


@register_step("unsharp", UnsharpParams, "2d3d", headline=("radius", "amount"), abbrev={"radius": "r"},
               halo=lambda p, spacing, dtype: _gaussian_halo((p.radius,) * len(spacing), 4.0))
@spatial_step()
def unsharp(arr: np.ndarray, p: UnsharpParams, spacing: tuple) -> np.ndarray:
    """Unsharp masking: ``x + amount * (x - gaussian(x, radius))`` (2D/3D; keeps dtype).

    ``skimage.filters.unsharp_mask`` with ``preserve_range=True``; integer results
    are rounded and clipped to the dtype's range, float results are not clipped.
    """
    from skimage.filters import unsharp_mask

    check_extent("unsharp", "radius", p.radius, arr.shape)
    out = unsharp_mask(arr.astype(np.float64), radius=p.radius, amount=p.amount, preserve_range=True)
    return cast_like(out, arr.dtype)
