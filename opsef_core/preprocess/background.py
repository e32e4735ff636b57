"""Background subtraction: ``subtract_constant``, ``rolling_ball``, ``tophat``, ``subtract_tophat``.

All keep the input's dtype (integer results rounded and clipped to the dtype's
range, so unsigned results never go below 0).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .dtypes import axis_radii, cast_like, footprint
from .registry import StepParams, check_extent, register_step, spatial_step

__all__ = [
    "SubtractConstantParams",
    "RollingBallParams",
    "TophatParams",
    "subtract_constant",
    "rolling_ball",
    "tophat",
    "SubtractTophatParams",
    "subtract_tophat",
]


class SubtractConstantParams(StepParams):
    """Parameters of ``subtract_constant``."""

    value: float = Field(0.0, description="constant subtracted from every pixel")


def _pointwise(p, spacing, dtype) -> tuple:
    """A pointwise step reads no neighbour."""
    return (0,) * len(spacing)


def _opening_halo(p, spacing, dtype) -> tuple:
    """An opening (erosion then dilation) reads twice the element's half-width."""
    return tuple(2 * int(np.floor(r)) for r in axis_radii(p.radius, spacing, p.anisotropic))


def _rolling_ball_halo(p, spacing, dtype) -> tuple:
    """The rolling ball's background is an opening by a ball of ``radius``: twice its extent, in
    plane only (stacks are processed plane by plane)."""
    h = 2 * int(np.ceil(p.radius))
    return (0,) * (len(spacing) - 2) + (h, h)


@register_step("subtract_constant", SubtractConstantParams, "2d3d", headline=("value",), halo=_pointwise)
@spatial_step()
def subtract_constant(arr: np.ndarray, p: SubtractConstantParams, spacing: tuple) -> np.ndarray:
    """Subtract a constant (keeps dtype; unsigned/integer results clipped at the dtype's range, e.g. 0).

    Float data are not clipped (values may become negative).
    """
    return cast_like(arr.astype(np.float64) - p.value, arr.dtype)


class RollingBallParams(StepParams):
    """Parameters of ``rolling_ball``."""

    radius: float = Field(50.0, gt=0, le=1000, description="ball radius in pixels (0..1000; at most the "
                          "plane's extent along Y and X)")
    light_background: bool = Field(False, description="dark objects on a bright background (inverted)")


@register_step(
    "rolling_ball",
    RollingBallParams,
    "2d",
    headline=("radius",),
    abbrev={"radius": "r", "light_background": "light"},
    halo=_rolling_ball_halo,
)
@spatial_step(per_plane=True)
def rolling_ball(arr: np.ndarray, p: RollingBallParams, spacing: tuple) -> np.ndarray:
    """Rolling-ball background subtraction, 2D only: a stack is processed plane by plane (keeps dtype).

    ``skimage.restoration.rolling_ball`` estimates the background (in float64);
    the result is ``image - background`` (``background - image`` with
    ``light_background``), rounded and clipped for integer dtypes.
    """
    from skimage.restoration import rolling_ball as _rolling_ball

    check_extent("rolling_ball", "radius", p.radius, arr.shape)
    f = arr.astype(np.float64)
    if p.light_background:
        top = f.max()
        inv = top - f
        out = inv - _rolling_ball(inv, radius=p.radius)
    else:
        out = f - _rolling_ball(f, radius=p.radius)
    return cast_like(out, arr.dtype)


class TophatParams(StepParams):
    """Parameters of ``tophat``."""

    radius: int = Field(5, ge=1, le=200, description="structuring element radius in X pixels (1..200; at "
                        "most the plane's extent along Y and X)")
    footprint: Literal["disk", "square"] = Field("disk", description="disk (ball in 3D) or square (cube)")
    anisotropic: bool = Field(False, description="scale the radius along Z/Y by the pixel size (3D)")


@register_step("tophat", TophatParams, "2d3d", headline=("radius",), abbrev={"radius": "r"}, halo=_opening_halo)
@spatial_step()
def tophat(arr: np.ndarray, p: TophatParams, spacing: tuple) -> np.ndarray:
    """White top-hat (image minus its opening): keeps bright objects smaller than the element (2D/3D).

    ``skimage.morphology.white_tophat`` with a disk/ball footprint; keeps dtype.
    """
    from skimage.morphology import white_tophat

    check_extent("tophat", "radius", axis_radii(p.radius, spacing, p.anisotropic), arr.shape)
    return white_tophat(arr, footprint(p.radius, spacing, p.footprint, p.anisotropic))


class SubtractTophatParams(TophatParams):
    """Parameters of ``subtract_tophat`` (those of ``tophat``, radius 1 by default)."""

    radius: int = Field(1, ge=1, le=200, description="structuring element radius in X pixels (1..200; at "
                        "most the plane's extent along Y and X)")


@register_step("subtract_tophat", SubtractTophatParams, "2d3d", headline=("radius",), abbrev={"radius": "r"},
               halo=_opening_halo)
@spatial_step()
def subtract_tophat(arr: np.ndarray, p: SubtractTophatParams, spacing: tuple) -> np.ndarray:
    """Remove bright specks smaller than the element: the image minus its white top-hat, at least 0 (2D/3D).

    The white top-hat of a small disk/ball *is* the bright structures the element does not fit
    into (e.g. 2×2×2 artefacts for radius 1); it is subtracted and negative results set to 0
    (the result is the grey-scale opening of the image).
    Float data are computed in their own dtype (``clip(a - white_tophat(a), 0)``), integer
    data in float64, rounded and clipped to the dtype; keeps dtype.
    """
    from skimage.morphology import white_tophat

    check_extent("subtract_tophat", "radius", axis_radii(p.radius, spacing, p.anisotropic), arr.shape)
    fp = footprint(p.radius, spacing, p.footprint, p.anisotropic)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr - white_tophat(arr, fp), 0, None)
    return cast_like(np.clip(arr.astype(np.float64) - white_tophat(arr, fp), 0, None), arr.dtype)
