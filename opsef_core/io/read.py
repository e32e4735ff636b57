"""Format dispatch: one entry point per task, whatever the file type."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError, UnsupportedFormatError
from ..image import Image
from ._meta import check_path

__all__ = ["read_image", "read_scenes", "list_scenes", "read_labels", "file_format", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".lif", ".zarr")


def file_format(path: str | Path) -> str:
    """Return ``"tiff"``, ``"lif"`` or ``"zarr"`` (a ``.zarr`` folder: OME-Zarr or a zarr array) for a
    path, from its extension.

    Raises
    ------
    InputFileError
        When the file does not exist, is not a file, or is a symbolic-link loop / broken link.
    UnsupportedFormatError
        When the extension is not one opsef reads.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedFormatError(
            f"unsupported file type {suffix or '(no extension)'!r}; opsef reads "
            f"{', '.join(SUPPORTED_SUFFIXES)} (OME-TIFF and ImageJ TIFF included)", path)
    if suffix == ".zarr":
        check_path(path, "folder")
        return "zarr"
    check_path(path, "file")  # not found, a folder, symlink loop, broken link: InputFileError
    return "lif" if suffix == ".lif" else "tiff"


def read_image(path: str | Path, scene: int | str | None = None, axes: str | None = None,
               lazy: bool = False, tile: int | None = None) -> Image:
    """Read one scene of an image file.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (plain, ImageJ, OME), Leica ``.lif``, or a ``.zarr`` folder (OME-Zarr
        image or plain zarr array: :mod:`opsef_core.io.zarr_image`).
    scene : int or str, optional
        Series index or name; default the first.
    axes : str, optional
        Override of the file's axes (letters of ``TCZYX``, one per stored dimension).
    lazy : bool
        Return dask-backed (TIFF) or memory-mapped (LIF) pixels, read on access.
    tile : int, optional
        Mosaic tile (``.lif`` mosaics only).

    Returns
    -------
    Image

    Raises
    ------
    UnsupportedFormatError, InputFileError, AxesError
    """
    fmt = file_format(path)
    if fmt == "lif":
        from .lif import read_lif

        return read_lif(path, scene=scene, axes=axes, lazy=lazy, tile=tile)
    if tile is not None:
        raise InputFileError("tile= applies to .lif mosaics only", path)
    if fmt == "zarr":
        from .zarr_image import read_zarr

        return read_zarr(path, scene=scene, axes=axes, lazy=lazy)
    if tile is not None:
        raise InputFileError("tile= applies to .lif mosaics only", path)
    from .tiff import read_tiff

    return read_tiff(path, scene=scene, axes=axes, lazy=lazy)


def read_scenes(path: str | Path, lazy: bool = False) -> list[Image]:
    """Read every scene (series) of a file; mosaic tiles of a ``.lif`` become separate images."""
    fmt = file_format(path)
    if fmt == "lif":
        from .lif import read_lif_scenes

        return read_lif_scenes(path, lazy=lazy)
    if fmt == "zarr":
        from .zarr_image import read_zarr

        return [read_zarr(path, lazy=lazy)]
    from .tiff import read_tiff_scenes

    return read_tiff_scenes(path, lazy=lazy)


def list_scenes(path: str | Path) -> list[dict]:
    """Describe every scene of a file without loading pixels.

    Returns
    -------
    list of dict
        ``index``, ``name``, ``axes``, ``shape``, ``dtype``, ``pixel_size`` (µm),
        ``calibrated``, ``channel_names``, ``time_interval`` and format details.
    """
    fmt = file_format(path)
    if fmt == "lif":
        from .lif import lif_scenes

        return lif_scenes(path)
    if fmt == "zarr":
        from .zarr_image import zarr_scenes

        return zarr_scenes(path)
    from .tiff import tiff_scenes

    return tiff_scenes(path)


def read_labels(path: str | Path, scene: int | str | None = None, axes: str | None = None) -> np.ndarray:
    """Read a label image as an integer (Z)YX array (a TIFF, or level 0 of an OME-Zarr label pyramid).

    The values follow opsef's one label rule (:func:`opsef_core.measure.check_labels`): integer
    and boolean files, and float files (e.g. 32-bit masks saved by ImageJ) whose every value is
    a whole number >= 0.  Returned as ``uint16`` (``uint32`` above 65535; ``uint8`` for booleans).

    Raises
    ------
    InputFileError
        When the file has several channels or time points, negative or
        fractional values, or is not a label image.
    """
    from ..measure import check_labels
    from .ngff import is_ngff, labels_as_array

    path = Path(path)
    if is_ngff(path):  # an OME-Zarr label pyramid (a streamed run's labels): level 0
        check_path(path, "folder")
        data = labels_as_array(path)
    else:
        image = read_image(path, scene=scene, axes=axes)
        for axis in "TC":
            if image.size(axis) > 1:
                raise InputFileError(
                    f"a label image must be (Z)YX, but this file has {image.size(axis)} along {axis} "
                    f"(axes {image.axes})", path)
        data = np.asarray(image.sel(t=0, c=0).data)
    if data.dtype == bool:
        return data.astype(np.uint8)
    data = check_labels(data, ndim=None, source=path)
    if data.dtype.kind == "i":
        data = data.astype(np.uint32 if data.size == 0 or data.max() > 65535 else np.uint16)
    return data
