"""Colour deconvolution of RGB brightfield images: ``colour_deconvolution``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import AxesError
from ..image import Image
from .registry import StepParams, register_step

__all__ = ["ColourDeconvolutionParams", "colour_deconvolution", "STAINS"]

#: index of each stain in the output of ``skimage.color.rgb2hed``
STAINS = {"haematoxylin": 0, "eosin": 1, "dab": 2}


class ColourDeconvolutionParams(StepParams):
    """Parameters of ``colour_deconvolution``."""

    stain: Literal["haematoxylin", "eosin", "dab"] = Field("haematoxylin", description="stain to keep")
    rescale: bool = Field(False, description="min-max scale the stain concentration to [0, 1]")


@register_step(
    "colour_deconvolution",
    ColourDeconvolutionParams,
    "2d3d",
    output_dtype="float32 (stain optical density; [0, 1] with rescale)",
    headline=("stain",),
    requires_rgb=True,
)
def colour_deconvolution(image: Image, p: ColourDeconvolutionParams) -> Image:
    """Haematoxylin / eosin / DAB concentration from an RGB image (consumes the C axis); float32.

    ``skimage.color.rgb2hed`` (Ruifrok & Johnston stain vectors) on the 3-channel
    C axis, taken as R, G, B in that order; the C axis is removed and the stain
    is recorded in ``metadata["stain"]``.  Integer data are scaled by their dtype's
    maximum first (as scikit-image does).

    Raises
    ------
    AxesError
        When the image has no C axis of exactly 3 channels.
    """
    from skimage.color import rgb2hed

    if "C" not in image.axes or image.size("C") != 3:
        raise AxesError(
            f"colour_deconvolution needs an RGB image (a C axis of 3 channels); image {image.name!r} has "
            f"axes {image.axes} and shape {image.shape}",
            image.source,
        )
    ci = image.axes.index("C")
    arr = np.asarray(image.data)
    hed = rgb2hed(arr, channel_axis=ci)
    out = np.take(hed, STAINS[p.stain], axis=ci).astype(np.float32)
    if p.rescale:
        lo, hi = float(out.min()), float(out.max())
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
        out = out.astype(np.float32)
    meta = {**image.metadata, "stain": p.stain}
    return image.with_data(out, axes=image.axes.replace("C", ""), metadata=meta)
