"""Writers: label TIFFs that Fiji opens calibrated and coloured, OME-TIFF, CSV tables.

Label images
------------
Labels up to 65535 are written as a 16-bit ImageJ hyperstack.  Above that,
ImageJ has no integer type, so the file holds ``uint32`` pixels with an ImageJ
description (calibration, hyperstack axes): Python tools read exact integers,
and Fiji/ImageJ opens it as a 32-bit (float) image, exact up to 16,777,216
labels (2**24).  Both carry a glasbey-like lookup table (label 0 black) and a
display range 0..max label, so label masks do not look black in Fiji.  If a
viewer ignores the embedded LUT, apply one (Fiji: Image > Lookup Tables >
glasbey) and reset the display range (Image > Adjust > Brightness/Contrast).
"""

from __future__ import annotations

import colorsys
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import AxesError, InputFileError
from ..image import Image, normalise_axes
from .atomic import atomic_write

__all__ = ["glasbey_lut", "write_labels", "write_ome_tiff", "write_table"]

logger = logging.getLogger(__name__)

_IJ_UNIT = "um"
_FLOAT_EXACT = 2**24


def glasbey_lut(n: int = 256) -> np.ndarray:
    """A glasbey-like lookup table: entry 0 black, then well separated colours.

    Hues step by the golden ratio, with saturation and value cycling through
    three levels, so neighbouring labels get clearly different colours.

    Returns
    -------
    ndarray of uint8, shape (3, n)
        ImageJ LUT layout (rows R, G, B).
    """
    lut = np.zeros((3, n), np.uint8)
    for i in range(1, n):
        h = (i * 0.618033988749895) % 1.0
        s = (1.0, 0.65, 0.85)[i % 3]
        v = (1.0, 0.8, 0.6)[(i // 3) % 3]
        lut[:, i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return lut


def _spatial_sizes(pixel_size, axes: str, path: Path) -> dict:
    spatial = [a for a in axes if a in "ZYX"]
    if pixel_size is None:
        return {}
    if isinstance(pixel_size, dict):
        ps = {k.upper(): float(v) for k, v in pixel_size.items() if v is not None}
    else:
        seq = list(pixel_size)
        if len(seq) != len(spatial):
            raise AxesError(f"{len(seq)} pixel sizes given for spatial axes {''.join(spatial)}", path)
        ps = dict(zip(spatial, map(float, seq)))
    for k, v in ps.items():
        if not np.isfinite(v) or v <= 0:
            raise AxesError(f"pixel size along {k} must be positive, got {v}", path)
    return {k: v for k, v in ps.items() if k in spatial}


def write_labels(path: str | Path, labels: np.ndarray, pixel_size: dict | Sequence[float] | None = None,
                 axes: str | None = None, *, compression: str | None = "zlib") -> Path:
    """Write a label image as an ImageJ-compatible TIFF (atomically).

    Parameters
    ----------
    path : str or Path
        Output ``.tif`` file.
    labels : ndarray
        Non-negative integer (or boolean) labels, 0 = background.
    pixel_size : dict or sequence, optional
        µm per pixel, ``{"Z": dz, "Y": dy, "X": dx}`` or one value per spatial
        axis in order; written as TIFF resolution (unit ``um``) and ImageJ
        ``spacing`` for Z.
    axes : str, optional
        Axes of ``labels`` (default ``"YX"`` for 2-D, ``"ZYX"`` for 3-D; give
        them for anything else, e.g. ``"TYX"``).
    compression : {"zlib", None}
        TIFF compression (default zlib/deflate, lossless: label images shrink 20-100x; Fiji,
        tifffile and Bio-Formats read it).  None writes uncompressed strips.

    Returns
    -------
    Path
        The written file.  ``uint16`` when the largest label is at most 65535,
        else ``uint32`` (Fiji opens it as 32-bit float, exact to 2**24).

    Raises
    ------
    InputFileError
        Labels that are not non-negative integers.
    AxesError
        Axes or pixel sizes that do not fit the array.
    """
    import tifffile

    path = Path(path)
    from ..measure import check_labels

    labels = check_labels(labels, ndim=None, source=path, what="labels")
    if axes is None:
        if labels.ndim not in (2, 3):
            raise AxesError(f"give axes= for {labels.ndim}-D labels (2-D is YX, 3-D is ZYX)", path)
        axes = "YX" if labels.ndim == 2 else "ZYX"
    axes = normalise_axes(axes, labels.ndim, path)
    order = [axes.index(a) for a in "TCZYX" if a in axes]
    labels = labels.transpose(order)
    axes = "".join(a for a in "TCZYX" if a in axes)
    vmax = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0:
        raise InputFileError("labels must be non-negative", path)
    dtype = np.uint16 if vmax <= 65535 else np.uint32
    if vmax >= _FLOAT_EXACT:
        logger.warning("%s: %d labels exceed 2**24; ImageJ will round them (Python readers stay exact)",
                       path, vmax)
    data = labels.astype(dtype, copy=False)
    ps = _spatial_sizes(pixel_size, axes, path)
    kwargs = {"compression": compression} if compression else {}
    meta = {"axes": axes, "LUTs": [glasbey_lut()], "min": 0, "max": max(vmax, 1)}
    if ps:
        meta["unit"] = _IJ_UNIT
        kwargs["resolution"] = (1.0 / ps.get("X", 1.0), 1.0 / ps.get("Y", 1.0))
        if "Z" in ps:
            meta["spacing"] = ps["Z"]
    with atomic_write(path) as fh:
        if dtype == np.uint16:
            tifffile.imwrite(fh, data, imagej=True, metadata=meta, photometric="minisblack", **kwargs)
        else:
            # ImageJ has no uint32 type: write the ImageJ description by hand so Fiji still
            # sees a calibrated hyperstack (tifffile's imagej=True refuses uint32).
            luts = {"LUTs": meta.pop("LUTs")}
            ij_axes = meta.pop("axes")
            description = tifffile.imagej_description(data.shape, ij_axes, rgb=False, **meta)
            tifffile.imwrite(fh, data, description=description, metadata=None, photometric="minisblack",
                             resolutionunit=tifffile.RESUNIT.NONE if ps else None,
                             extratags=tifffile.imagej_metadata_tag(luts, "<"), **kwargs)
    logger.info("wrote labels %s (%s, max label %d)", path, np.dtype(dtype).name, vmax)
    return path


def write_ome_tiff(path: str | Path, image: Image) -> Path:
    """Write an :class:`Image` as OME-TIFF with physical sizes and channel names (atomically).

    Parameters
    ----------
    path : str or Path
        Output file, conventionally ``*.ome.tif``.
    image : Image
        Any image; dask data are computed.

    Returns
    -------
    Path
    """
    import tifffile

    path = Path(path)
    meta: dict = {"axes": image.axes, "Name": image.name}
    if image.calibrated:
        for a, v in image.pixel_size.items():
            meta[f"PhysicalSize{a}"] = float(v)
            meta[f"PhysicalSize{a}Unit"] = "µm"
    if image.channel_names:
        meta["Channel"] = {"Name": list(image.channel_names)}
    if image.time_interval:
        meta["TimeIncrement"] = float(image.time_interval)
        meta["TimeIncrementUnit"] = "s"
    data = np.asarray(image.data)
    with atomic_write(path) as fh:
        tifffile.imwrite(fh, data, ome=True, photometric="minisblack", metadata=meta)
    logger.info("wrote OME-TIFF %s %s", path, image.sizes)
    return path


def write_table(path: str | Path, df) -> Path:
    """Write a pandas DataFrame as CSV (no index), atomically.

    An empty DataFrame with columns gives a header-only file that
    :func:`pandas.read_csv` reads back with the same columns.

    Returns
    -------
    Path
    """
    path = Path(path)
    with atomic_write(path, mode="w", newline="") as fh:
        df.to_csv(fh, index=False)
    return path
