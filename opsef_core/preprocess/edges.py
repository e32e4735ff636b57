"""Edge enhancement: ``edges`` (gradient magnitude by Sobel, Scharr, Prewitt or Roberts).

Output float32, in the input's intensity units per pixel (the filters run on the
raw values converted to float64, not on dtype-scaled data).  Sobel, Scharr and
Prewitt are n-dimensional (3D on a stack); Roberts is 2D only and is applied to
each z plane of a stack.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .registry import StepParams, register_step, spatial_step

__all__ = ["EdgesParams", "edges"]

_2D_ONLY = {"roberts"}


class EdgesParams(StepParams):
    """Parameters of ``edges``."""

    method: Literal["sobel", "scharr", "prewitt", "roberts"] = Field("sobel", description="edge operator")


@register_step("edges", EdgesParams, "2d3d", output_dtype="float32", headline=("method",),
               halo=lambda p, spacing, dtype: (0,) * (len(spacing) - 2) + (1, 1) if p.method in _2D_ONLY
               else (1,) * len(spacing))
@spatial_step()
def edges(arr: np.ndarray, p: EdgesParams, spacing: tuple) -> np.ndarray:
    """Edge magnitude by ``skimage.filters.<method>`` (roberts: 2D only, per z plane on stacks); float32."""
    from skimage import filters

    func = getattr(filters, p.method)
    f = arr.astype(np.float64)
    if p.method in _2D_ONLY and f.ndim == 3:
        out = np.stack([func(plane) for plane in f])
    else:
        out = func(f)
    return out.astype(np.float32)
