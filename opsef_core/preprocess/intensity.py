"""Intensity mappings that keep the dtype: ``invert`` and ``clip``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .dtypes import cast_like
from .registry import StepParams, register_step, spatial_step

__all__ = ["InvertParams", "ClipParams", "invert", "clip"]


class InvertParams(StepParams):
    """``invert`` has no parameters."""


@register_step("invert", InvertParams, "2d3d",
               # unsigned integers: pointwise; other data map their own range onto itself (whole image)
               halo=lambda p, spacing, dtype: (0,) * len(spacing) if dtype.kind == "u" else None)
@spatial_step()
def invert(arr: np.ndarray, p: InvertParams, spacing: tuple) -> np.ndarray:
    """Invert intensities, dtype-aware (keeps dtype).

    Unsigned integers: ``dtype_max - x``.  Floats inside [0, 1]: ``1 - x``.
    Anything else (signed integers, other floats): ``max + min - x`` with the
    minimum and maximum of this plane/stack (per channel and time point), which
    maps the data's range onto itself.
    """
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return np.iinfo(arr.dtype).max - arr
    if arr.size == 0:
        return arr.copy()
    lo, hi = arr.min(), arr.max()
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        return (1 - arr).astype(arr.dtype)
    return cast_like(float(hi) + float(lo) - arr.astype(np.float64), arr.dtype)


class ClipParams(StepParams):
    """Parameters of ``clip``."""

    low: float | None = Field(None, description="lower threshold (None: no lower bound)")
    high: float | None = Field(None, description="upper threshold (None: no upper bound)")
    mode: Literal["clip", "zero_below"] = Field(
        "clip",
        description="clip: values below low become low; zero_below: values below low become 0 "
        "(values above high become high in both modes)",
    )

    @model_validator(mode="after")
    def _order(self):
        if self.low is not None and self.high is not None and self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


@register_step("clip", ClipParams, "2d3d", headline=("low", "high"), halo=lambda p, spacing, dtype: (0,) * len(spacing))
@spatial_step()
def clip(arr: np.ndarray, p: ClipParams, spacing: tuple) -> np.ndarray:
    """Clip intensities to [low, high], or set values below ``low`` to zero (``zero_below``); keeps dtype.

    The ``zero_below`` mode is the "set intensities below a small threshold to
    zero" step of the FUCCI preprocessing chain.  Thresholds are in the data's
    intensity units; integer results are rounded and clipped to the dtype's range.
    """
    f = arr.astype(np.float64)
    if p.high is not None:
        f = np.minimum(f, p.high)
    if p.low is not None:
        f = np.where(f < p.low, 0.0 if p.mode == "zero_below" else p.low, f)
    return cast_like(f, arr.dtype)
