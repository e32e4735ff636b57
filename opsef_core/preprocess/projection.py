"""Z projection: ``z_project`` (max / min / sum / mean / median / std over an optional z range).

Output dtypes: ``max``, ``min`` and ``median`` keep the input's dtype (the
median of an even number of integer planes is rounded to nearest); ``sum`` of
integers goes to a wider integer type that cannot overflow (uint8/uint16 ->
uint32 (uint64 for very deep stacks), int8/int16 -> int32, 32/64-bit -> 64-bit)
and of floats to float32 (float64 stays float64); ``mean`` and ``std`` give
float32 (float64 stays float64).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..errors import AxesError
from ..image import Image
from .dtypes import cast_like, sum_dtype
from .registry import StepParams, register_step

__all__ = ["ZProjectParams", "z_project"]


class ZProjectParams(StepParams):
    """Parameters of ``z_project``."""

    method: Literal["max", "min", "sum", "mean", "median", "std"] = Field("max", description="projection")
    z_start: int | None = Field(None, ge=0, description="first plane (inclusive, 0-based); None = 0")
    z_stop: int | None = Field(None, ge=1, description="last plane (exclusive); None = all")

    @model_validator(mode="after")
    def _range(self):
        if self.z_start is not None and self.z_stop is not None and self.z_stop <= self.z_start:
            raise ValueError(f"z_stop ({self.z_stop}) must be greater than z_start ({self.z_start})")
        return self


def _float_out(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


@register_step(
    "z_project",
    ZProjectParams,
    "3d-to-2d",
    output_dtype="max/min/median: same; sum: wider integer or float32; mean/std: float32",
    headline=("method", "z_start", "z_stop"),
    abbrev={"z_start": "z0", "z_stop": "z1"},
)
def z_project(image: Image, p: ZProjectParams) -> Image:
    """Project a stack along Z (removes the Z axis; needs one).

    Raises
    ------
    AxesError
        When the image has no Z axis or the z range lies outside it.
    """
    if "Z" not in image.axes:
        raise AxesError(
            f"z_project needs a Z axis but the image {image.name!r} has axes {image.axes}", image.source
        )
    zi = image.axes.index("Z")
    nz = image.shape[zi]
    start = p.z_start or 0
    stop = nz if p.z_stop is None else p.z_stop
    if start >= nz or stop > nz:
        raise AxesError(
            f"z range [{start}, {stop}) lies outside the {nz} planes of image {image.name!r}", image.source
        )
    index = [slice(None)] * image.data.ndim
    index[zi] = slice(start, stop)
    arr = np.asarray(image.data[tuple(index)])
    n = stop - start
    if p.method in ("max", "min"):
        out = arr.max(axis=zi) if p.method == "max" else arr.min(axis=zi)
    elif p.method == "sum":
        dt = sum_dtype(arr.dtype, n)
        acc = dt if np.issubdtype(dt, np.integer) else np.float64
        out = arr.sum(axis=zi, dtype=acc).astype(dt)
    elif p.method == "mean":
        out = arr.mean(axis=zi, dtype=np.float64).astype(_float_out(arr.dtype))
    elif p.method == "std":
        out = arr.std(axis=zi, dtype=np.float64).astype(_float_out(arr.dtype))
    else:
        out = cast_like(np.median(arr, axis=zi), arr.dtype)
    return image.with_data(out, axes=image.axes.replace("Z", ""))
