"""Reading and writing files: TIFF/OME-TIFF/ImageJ and Leica .lif readers, writers, discovery.

Every reader returns :class:`opsef_core.image.Image` objects with explicit axes
and calibration in µm; every writer is atomic; bad files raise
:class:`opsef_core.errors.InputFileError` (or a subclass) naming the file.
"""

from .atomic import atomic_write
from .discover import discover, natural_key
from .info import describe_file, format_info
from .read import SUPPORTED_SUFFIXES, file_format, list_scenes, read_image, read_labels, read_scenes
from .writers import glasbey_lut, write_labels, write_ome_tiff, write_table

__all__ = [
    "atomic_write",
    "discover",
    "natural_key",
    "describe_file",
    "format_info",
    "SUPPORTED_SUFFIXES",
    "file_format",
    "list_scenes",
    "read_image",
    "read_labels",
    "read_scenes",
    "glasbey_lut",
    "write_labels",
    "write_ome_tiff",
    "write_table",
]
