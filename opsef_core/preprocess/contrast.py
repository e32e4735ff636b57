"""Contrast adjustment: ``clahe``, ``gamma``, ``normalize_percentile``.

All three return float32: ``clahe`` and ``gamma`` in [0, 1];
``normalize_percentile`` in [0, 1] when ``clip`` (the default), otherwise
unbounded.  They work on planes and stacks (CLAHE is 3D on a stack).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..errors import ConfigError
from .dtypes import to_unit
from .registry import StepParams, check_extent, register_step, spatial_step

__all__ = [
    "ClaheParams",
    "GammaParams",
    "NormalizePercentileParams",
    "clahe",
    "gamma",
    "normalize_percentile",
    "scale_to_limits",
]


class ClaheParams(StepParams):
    """Parameters of ``clahe``."""

    kernel_size: int | tuple[int, ...] | None = Field(
        None,
        description="contextual region size in pixels (per axis in (Z)YX order; 1..4096 and at most the "
                    "plane's extent along Y and X); None = 1/8 of each axis",
    )
    clip_limit: float = Field(0.01, gt=0, le=1, description="contrast limit (fraction of the histogram)")
    nbins: int = Field(256, ge=2, le=65536, description="histogram bins")

    @field_validator("kernel_size")
    @classmethod
    def _positive(cls, v):
        vals = v if isinstance(v, tuple) else (v,) if v is not None else ()
        if any(x < 1 for x in vals):
            raise ValueError("every kernel size must be >= 1")
        if any(x > 4096 for x in vals):
            raise ValueError("every kernel size must be <= 4096 px")
        return v


@register_step(
    "clahe",
    ClaheParams,
    "2d3d",
    output_dtype="float32 in [0, 1]",
    headline=("clip_limit", "kernel_size"),
    abbrev={"clip_limit": "clip", "kernel_size": "k"},
)
@spatial_step()
def clahe(arr: np.ndarray, p: ClaheParams, spacing: tuple) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (2D, or 3D on a stack); float32 in [0, 1].

    ``skimage.exposure.equalize_adapthist``.  Integer data are passed as they are
    (scikit-image rescales their min..max); float data are min-max scaled to [0, 1]
    first unless already inside it.
    """
    from skimage.exposure import equalize_adapthist

    data = arr if np.issubdtype(arr.dtype, np.integer) else to_unit(arr, "dtype")
    ks = p.kernel_size
    if isinstance(ks, tuple) and len(ks) != arr.ndim:
        raise ConfigError(
            f"clahe kernel_size {ks} has {len(ks)} values but the data has {arr.ndim} spatial axes"
        )
    if ks is not None:
        check_extent("clahe", "kernel_size", ks, arr.shape)
    out = equalize_adapthist(data, kernel_size=ks, clip_limit=p.clip_limit, nbins=p.nbins)
    return out.astype(np.float32)


class GammaParams(StepParams):
    """Parameters of ``gamma``."""

    gamma: float = Field(1.0, gt=0, le=20, description="exponent: < 1 brightens, > 1 darkens")
    normalise: Literal["minmax", "dtype"] = Field(
        "minmax",
        description="how data are brought to [0, 1] first (see opsef_core.preprocess.dtypes.to_unit)",
    )


@register_step(
    "gamma",
    GammaParams,
    "2d3d",
    output_dtype="float32 in [0, 1]",
    headline=("gamma",),
    abbrev={"gamma": "γ"},
    # "dtype" on integers is pointwise; "minmax" (and floats) use the image's own range
    halo=lambda p, spacing, dtype: (0,) * len(spacing) if p.normalise == "dtype" and dtype.kind in "ui" else None,
)
@spatial_step()
def gamma(arr: np.ndarray, p: GammaParams, spacing: tuple) -> np.ndarray:
    """Gamma correction ``u ** gamma`` of the normalised data ``u`` in [0, 1]; float32 in [0, 1].

    ``normalise="minmax"`` (default) maps the plane/stack's own minimum and maximum to
    0 and 1 (microscopy data rarely fill their dtype, e.g. 12-bit data in uint16);
    ``"dtype"`` divides unsigned integers by their dtype's maximum (as
    ``skimage.exposure.adjust_gamma``), keeps floats in [0, 1] and min-max scales other floats.
    """
    return (to_unit(arr, p.normalise) ** p.gamma).astype(np.float32)


class NormalizePercentileParams(StepParams):
    """Parameters of ``normalize_percentile``."""

    low: float = Field(1.0, ge=0, le=100, description="percentile mapped to 0")
    high: float = Field(99.8, ge=0, le=100, description="percentile mapped to 1")
    clip: bool = Field(True, description="clip the result to [0, 1]")

    @model_validator(mode="after")
    def _order(self):
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


@register_step(
    "normalize_percentile",
    NormalizePercentileParams,
    "2d3d",
    output_dtype="float32 ([0, 1] when clip)",
    headline=("low", "high"),
    global_stat="percentiles",
)
@spatial_step()
def normalize_percentile(arr: np.ndarray, p: NormalizePercentileParams, spacing: tuple) -> np.ndarray:
    """Percentile normalisation ``(x - P_low) / (P_high - P_low)`` per channel and time point; float32.

    Percentiles are those of the finite pixels of the whole plane or stack (NaN and inf
    ignored: :func:`opsef_core.segment.normalize.finite_percentiles`, the rule of the
    segmentation backends); non-finite pixels come out as NaN (never clipped into [0, 1]),
    so the segmenter still sees them and treats them as background.  An image whose two
    percentiles coincide maps to zeros (NaN kept); one without a finite pixel is all NaN.
    """
    from ..segment.normalize import finite_percentiles

    f = arr.astype(np.float64)
    finite = np.isfinite(f)
    if not finite.any():
        return np.full(arr.shape, np.nan, dtype=np.float32)
    lo, hi = finite_percentiles(f, [p.low, p.high])
    return scale_to_limits(f, lo, hi, clip=p.clip)


def scale_to_limits(arr: np.ndarray, lo: float, hi: float, *, clip: bool = True) -> np.ndarray:
    """``(x - lo) / (hi - lo)`` as float32, clipped to [0, 1] with ``clip``; the pointwise part of
    ``normalize_percentile`` (a tiled run fixes the whole image's ``lo``/``hi`` once).

    ``hi <= lo`` maps to zeros; non-finite pixels (and every pixel when ``lo``/``hi`` are NaN:
    an image without a finite pixel) come out as NaN.
    """
    from ..segment.normalize import nonfinite_mask

    f = np.asarray(arr).astype(np.float64)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.full(f.shape, np.nan, dtype=np.float32)
    mask = nonfinite_mask(f)
    if hi <= lo:
        out = np.zeros(f.shape, dtype=np.float64)
    else:
        out = (f - lo) / (hi - lo)
        if clip:
            out = np.clip(out, 0.0, 1.0)
    if mask is not None:
        out[mask] = np.nan
    return out.astype(np.float32)
