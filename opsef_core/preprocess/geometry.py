"""Steps that change the pixel grid: ``bin`` and ``rescale`` (both update the pixel size).

A scalar factor applies to Y and X only (Z is left alone, as anisotropic stacks
usually need); a mapping such as ``{"Z": 1, "Y": 2, "X": 2}`` names axes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..errors import AxesError
from ..image import Image
from .dtypes import cast_like, sum_dtype
from .registry import StepParams, map_spatial, register_step

__all__ = ["BinParams", "RescaleParams", "bin_step", "rescale"]


def _axis_factors(value, image: Image, step: str) -> dict:
    """Per spatial axis factor for an image (scalar -> Y and X)."""
    if isinstance(value, dict):
        missing = [a for a, f in value.items() if a not in image.spatial_axes and f != 1]
        if missing:
            raise AxesError(
                f"{step} factors name axis {missing} but image {image.name!r} has axes {image.axes}",
                image.source,
            )
        return {a: value.get(a, 1) for a in image.spatial_axes}
    return {a: (1 if a == "Z" else value) for a in image.spatial_axes}


def _check_axes_keys(v):
    if isinstance(v, dict):
        up = {str(k).upper(): f for k, f in v.items()}
        bad = sorted(set(up) - set("ZYX"))
        if bad:
            raise ValueError(f"factor axes must be among Z, Y, X; got {bad}")
        return up
    return v


class BinParams(StepParams):
    """Parameters of ``bin``."""

    factors: int | dict[str, int] = Field(
        2, description="bin size: one integer for Y and X, or a mapping axis -> integer (Z, Y, X)"
    )
    reduce: Literal["mean", "sum", "max"] = Field("mean", description="how a bin's pixels are combined")

    @field_validator("factors")
    @classmethod
    def _valid(cls, v):
        v = _check_axes_keys(v)
        vals = v.values() if isinstance(v, dict) else (v,)
        if any(f < 1 for f in vals):
            raise ValueError("every factor must be >= 1")
        return v


@register_step(
    "bin",
    BinParams,
    "2d3d",
    output_dtype="mean: float32 (float64 stays); sum: wider integer or float32; max: same",
    headline=("factors", "reduce"),
    abbrev={"factors": "f"},
)
def bin_step(image: Image, p: BinParams) -> Image:
    """Bin pixels in blocks (``skimage.measure.block_reduce``); pixel size multiplied by the factors.

    Trailing pixels that do not fill a whole block are dropped (the output has
    ``n // factor`` pixels along each axis).
    """
    from skimage.measure import block_reduce

    fac = _axis_factors(p.factors, image, "bin")
    for a, f in fac.items():
        if f > image.size(a):
            raise AxesError(
                f"bin factor {f} along {a} exceeds the image size {image.size(a)} ({image.name!r})",
                image.source,
            )
    block = tuple(fac.get(a, 1) for a in image.axes)
    arr = np.asarray(image.data)
    arr = arr[tuple(slice(0, (n // b) * b) for n, b in zip(arr.shape, block))]
    if p.reduce == "max":
        out = block_reduce(arr, block, func=np.max)
    elif p.reduce == "sum":
        dt = sum_dtype(arr.dtype, int(np.prod(block)))
        acc = dt if np.issubdtype(dt, np.integer) else np.float64
        out = block_reduce(arr, block, func=np.sum, func_kwargs={"dtype": acc}).astype(dt)
    else:
        dt = np.float64 if arr.dtype == np.float64 else np.float32
        out = block_reduce(arr, block, func=np.mean, func_kwargs={"dtype": np.float64}).astype(dt)
    ps = {a: image.pixel_size[a] * fac[a] for a in image.spatial_axes}
    return image.with_data(out, pixel_size=ps)


class RescaleParams(StepParams):
    """Parameters of ``rescale``."""

    factor: float | dict[str, float] = Field(
        0.5, description="scale: one number for Y and X (0.5 = half resolution), or axis -> number"
    )
    order: int = Field(1, ge=0, le=5, description="spline interpolation order (0 nearest, 1 linear, 3 cubic)")
    anti_aliasing: bool | None = Field(
        None, description="Gaussian pre-filter when down-scaling; None = scikit-image's default"
    )

    @field_validator("factor")
    @classmethod
    def _valid(cls, v):
        v = _check_axes_keys(v)
        vals = v.values() if isinstance(v, dict) else (v,)
        if any(not (0 < f <= 100) for f in vals):
            raise ValueError("every factor must be in (0, 100]")
        return v


@register_step(
    "rescale", RescaleParams, "2d3d", headline=("factor",), abbrev={"factor": "×"}
)
def rescale(image: Image, p: RescaleParams) -> Image:
    """Resample by a factor (``skimage.transform.rescale``, preserve_range); keeps dtype; pixel size updated.

    Each channel and time point is resampled separately; integer results are
    rounded and clipped to the dtype's range.  The new pixel size along an axis is
    ``old * n_old / n_new`` (exact for the rounded output shape).
    """
    from skimage.transform import rescale as _rescale

    fac = _axis_factors(p.factor, image, "rescale")
    scale = tuple(float(fac[a]) for a in image.spatial_axes)
    for a, s in zip(image.spatial_axes, scale):
        if round(image.size(a) * s) < 1:
            raise AxesError(f"rescale factor {s} along {a} leaves no pixel of {image.size(a)}", image.source)

    def one(arr: np.ndarray, spacing: tuple) -> np.ndarray:
        out = _rescale(
            arr.astype(np.float64),
            scale,
            order=p.order,
            preserve_range=True,
            anti_aliasing=p.anti_aliasing,
            mode="reflect",
        )
        return cast_like(out, arr.dtype)

    out = map_spatial(image, one, desc="rescale")
    new_sizes = dict(zip(image.axes, out.shape))
    ps = {a: image.pixel_size[a] * image.size(a) / new_sizes[a] for a in image.spatial_axes}
    return image.with_data(out, pixel_size=ps)
