"""Segmentation backends (classical, stardist, cellpose, unet, fusion) behind one protocol."""

from .base import (
    Segmenter,
    SegmenterParams,
    available_segmenters,
    get_segmenter,
    register_segmenter,
)

__all__ = ["Segmenter", "SegmenterParams", "available_segmenters", "get_segmenter", "register_segmenter"]
