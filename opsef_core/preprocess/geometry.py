"""Steps that change the pixel grid: ``bin`` and ``rescale`` (both update the pixel size).

Both are thin wrappers over :func:`opsef_core.reshape.bin_image` and
:func:`opsef_core.reshape.rescale`, the one resampling code path (boundary mode,
dtype rules and pixel sizes are documented there).  A scalar factor applies to Y
and X only (Z is left alone, as anisotropic stacks usually need); a mapping such
as ``{"Z": 1, "Y": 2, "X": 2}`` names axes (an axis the image lacks only with
factor 1, so one pipeline fits planes and stacks).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..image import Image
from ..reshape import bin_image
from ..reshape import rescale as reshape_rescale
from .registry import StepParams, register_step

__all__ = ["BinParams", "RescaleParams", "bin_step", "rescale"]


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
    """Bin pixels in blocks (mean/sum/max); pixel size multiplied by the factors.

    :func:`opsef_core.reshape.bin_image` with ``crop=True``: trailing pixels that do
    not fill a whole block are dropped (the output has ``n // factor`` pixels along
    each axis); a factor larger than the image is an error.
    """
    return bin_image(image, p.factors, reduce=p.reduce, crop=True)


class RescaleParams(StepParams):
    """Parameters of ``rescale``."""

    factor: float | dict[str, float] = Field(
        0.5, description="scale: one number for Y and X (0.5 = half resolution), or axis -> number"
    )
    order: int = Field(1, ge=0, le=5, description="spline interpolation order (0 nearest, 1 linear, 3 cubic)")
    anti_aliasing: bool | None = Field(
        None, description="Gaussian pre-filter when down-scaling; None = on when shrinking with order > 0"
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
    """Resample by a factor (edge boundary, anti-aliased when shrinking); keeps dtype; pixel size updated.

    :func:`opsef_core.reshape.rescale`: new size ``round(n * factor)``; integer
    results rounded and clipped to the dtype's range; the new pixel size along an
    axis is ``old * n_old / n_new`` (exact for the rounded output shape).
    """
    return reshape_rescale(image, p.factor, order=p.order, preserve_dtype=True,
                           anti_aliasing=p.anti_aliasing)
