"""Tiles: planning tiles with overlap, stitching label tiles without cutting objects at seams,
and segmenting images of any size tile by tile with any backend.

- :mod:`opsef_core.tiling.grid` — :class:`Tile`, :func:`plan_tiles`, :func:`stitch_labels`,
  :func:`segment_tiled` (arrays and a segmentation function).
- :mod:`opsef_core.tiling.images` — :func:`segment_tiled_image` (an :class:`~opsef_core.image.Image`
  or a file read lazily, any registered backend, global normalisation, zarr output) and the
  global statistics it shares between tiles (:func:`global_percentiles`, :func:`strided_sample`).
"""

from .grid import Tile, plan_tiles, segment_tiled, stitch_labels
from .images import global_percentiles, segment_tiled_image, strided_sample

__all__ = ["Tile", "plan_tiles", "stitch_labels", "segment_tiled", "segment_tiled_image",
           "global_percentiles", "strided_sample"]
