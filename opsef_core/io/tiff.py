"""TIFF / OME-TIFF / ImageJ-TIFF reading with tifffile (axes, calibration, channel names)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AxesError, InputFileError
from ..image import Image, normalise_axes
from ._meta import check_path, map_axes, positive, unit_factor
from .naming import file_stem

__all__ = ["tiff_scenes", "read_tiff", "read_tiff_scenes"]

logger = logging.getLogger(__name__)


class _Capture(logging.Handler):
    """Collects tifffile's warnings: it logs (rather than raises) on damaged files."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_DAMAGE = ("invalid", "truncat", "failed", "corrupt", "cannot", "error")


def _open(path: Path):
    import tifffile

    capture = _Capture()
    tlog = logging.getLogger("tifffile")
    tlog.addHandler(capture)
    try:
        tif = _open_inner(path, tifffile)
    finally:
        tlog.removeHandler(capture)
    damage = [m for m in capture.messages if any(w in m.lower() for w in _DAMAGE)]
    if damage:
        tif.close()
        raise InputFileError(f"damaged or truncated TIFF file ({damage[0].strip()})", path)
    return tif


def _open_inner(path: Path, tifffile):
    check_path(path, "file")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, struct.error, ValueError...
        raise InputFileError(f"not a readable TIFF file ({type(exc).__name__}: {exc})", path) from exc
    try:
        if not tif.series:
            tif.close()
            raise InputFileError("the TIFF file contains no image", path)
    except InputFileError:
        raise
    except Exception as exc:
        tif.close()
        raise InputFileError(f"corrupt TIFF structure ({type(exc).__name__}: {exc})", path) from exc
    return tif


def _data_problem(series, path: Path) -> str | None:
    """Why the pixel data of ``series`` cannot be in the file (None when they can), without reading them.

    Checked before anything is allocated, from the file size and the strip/tile offsets
    and byte counts tifffile reports:

    * any strip or tile that ends after the end of the file (truncated; any compression);
    * uncompressed data declaring more bytes than the file holds (e.g. 138 bytes declaring
      60000 x 60000 pixels), or a page whose strips/tiles hold fewer bytes than its declared
      shape needs.
    """
    size = path.stat().st_size
    try:
        key = series.keyframe
        itemsize = np.dtype(series.dtype).itemsize
        whole_bytes = key.compression == 1 and int(key.bitspersample) == 8 * itemsize
        declared = int(np.prod(series.shape, dtype=np.int64)) * itemsize
        # (a multi-file OME-TIFF series has pages in other files: those are checked page by page)
        if whole_bytes and declared > size and not getattr(key.parent, "is_ome", False):
            return (f"the file declares {tuple(series.shape)} {series.dtype} pixels ({declared:,} bytes, "
                    f"uncompressed) but has only {size:,} bytes: truncated or corrupt")
        for page in series.pages:
            if page is None:
                continue
            offsets, counts = page.dataoffsets, page.databytecounts
            try:
                end = int(page.parent.filehandle.size)  # the file holding this page
            except Exception:
                end = size
            if len(offsets) and max(int(o) + int(c) for o, c in zip(offsets, counts)) > end:
                return f"the file is truncated: pixel data end after the file's {end:,} bytes"
            kf = getattr(page, "keyframe", None) or page
            if kf.compression == 1 and int(kf.bitspersample) == 8 * np.dtype(kf.dtype).itemsize:
                need = int(kf.size) * np.dtype(kf.dtype).itemsize
                have = int(sum(int(c) for c in counts))
                if have < need:
                    return (f"a page declares {tuple(kf.shape)} {kf.dtype} pixels ({need:,} bytes, "
                            f"uncompressed) but its strips/tiles hold {have:,} bytes: truncated or corrupt")
    except Exception as exc:
        return f"corrupt TIFF structure ({type(exc).__name__}: {exc})"
    return None


def _check_complete(tif, series, path: Path) -> None:
    """Raise when the pixel data of ``series`` cannot be in the file (see :func:`_data_problem`)."""
    problem = _data_problem(series, path)
    if problem:
        raise InputFileError(problem, path)


def _ome_images(tif) -> list[ET.Element]:
    text = tif.ome_metadata if tif.is_ome else None
    if not text:
        return []
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        logger.warning("%s: unreadable OME-XML metadata ignored", tif.filename)
        return []
    return [el for el in root if el.tag.split("}")[-1] == "Image"]


def _child(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if c.tag.split("}")[-1] == name]


def _ome_meta(image_el: ET.Element) -> dict:
    out: dict[str, Any] = {"pixel_size": {}, "channel_names": [], "time_interval": None}
    pixels = _child(image_el, "Pixels")
    if not pixels:
        return out
    px = pixels[0].attrib
    for axis in "XYZ":
        value = positive(px.get(f"PhysicalSize{axis}"))
        factor = unit_factor(px.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is not None and factor is not None:
            out["pixel_size"][axis] = value * factor
    ti = positive(px.get("TimeIncrement"))
    tunit = px.get("TimeIncrementUnit", "s")
    tfac = {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "µs": 1e-6}.get(tunit)
    if ti is not None and tfac is not None:
        out["time_interval"] = ti * tfac
    out["channel_names"] = [c.attrib.get("Name", "") for c in _child(pixels[0], "Channel")]
    return out


def _resolution(page) -> tuple[float | None, float | None]:
    """Pixels per resolution unit along X and Y from the TIFF tags."""
    vals = []
    for tag in ("XResolution", "YResolution"):
        t = page.tags.get(tag)
        if t is None:
            vals.append(None)
            continue
        num, den = t.value
        vals.append(positive(num / den) if den else None)
    return vals[0], vals[1]


def _series_meta(tif, index: int, path: Path) -> dict:
    """Everything about one series except its pixels."""
    series = tif.series[index]
    file_axes = series.axes
    ij = tif.imagej_metadata if tif.is_imagej else None
    meta: dict[str, Any] = {
        "index": index,
        "name": series.name or f"series{index}",
        "file_axes": file_axes,
        "file_shape": tuple(series.shape),
        "dtype": str(series.dtype),
        "pixel_size": {},
        "channel_names": [],
        "time_interval": None,
        "format": "ome-tiff" if tif.is_ome else "imagej-tiff" if ij is not None else "tiff",
    }
    ome = _ome_images(tif)
    if tif.is_ome and index < len(ome):
        om = _ome_meta(ome[index])
        meta["pixel_size"] = om["pixel_size"]
        meta["channel_names"] = om["channel_names"]
        meta["time_interval"] = om["time_interval"]
        if ome[index].attrib.get("Name"):
            meta["name"] = ome[index].attrib["Name"]
    else:
        page = series.keyframe
        xres, yres = _resolution(page)
        factor = None
        if ij is not None:
            factor = unit_factor(ij.get("unit"))
        else:
            import tifffile

            runit = page.tags.get("ResolutionUnit")
            runit = runit.value if runit is not None else tifffile.RESUNIT.INCH
            # inch is every TIFF writer's default (72 dpi): not a microscope calibration
            factor = {
                tifffile.RESUNIT.CENTIMETER: 1e4,
                tifffile.RESUNIT.MILLIMETER: 1e3,
                tifffile.RESUNIT.MICROMETER: 1.0,
            }.get(runit)
        if factor is not None:
            if xres:
                meta["pixel_size"]["X"] = factor / xres
            if yres:
                meta["pixel_size"]["Y"] = factor / yres
            if ij is not None and positive(ij.get("spacing")):
                meta["pixel_size"]["Z"] = float(ij["spacing"]) * factor
        if ij is not None:
            fi = positive(ij.get("finterval"))
            meta["time_interval"] = fi
            labels = ij.get("Labels")
            meta["_ij_labels"] = list(labels) if isinstance(labels, (list, tuple)) else []
    meta["_stack_is_z"] = ij is not None
    return meta


def _finish_meta(meta: dict, path: Path, axes: str | None) -> dict:
    """Resolve axes (file's or the override) and keep only meaningful metadata."""
    shape = meta["file_shape"]
    if axes is None:
        data_axes = map_axes(meta["file_axes"], path, meta["_stack_is_z"])
    else:
        data_axes = normalise_axes(axes, len(shape), path)
    data_axes = normalise_axes(data_axes, len(shape), path)
    meta["data_axes"] = data_axes
    canon = "".join(a for a in "TCZYX" if a in data_axes)
    meta["axes"] = canon
    meta["shape"] = tuple(shape[data_axes.index(a)] for a in canon)
    meta["pixel_size"] = {a: meta["pixel_size"][a] for a in "ZYX" if a in data_axes and a in meta["pixel_size"]}
    meta["calibrated"] = "X" in meta["pixel_size"] and "Y" in meta["pixel_size"]
    n_c = shape[data_axes.index("C")] if "C" in data_axes else 0
    names = [n for n in meta["channel_names"] if n]
    if not names and meta.get("_ij_labels") and n_c:
        labels = meta["_ij_labels"]
        if len(labels) >= n_c and all(isinstance(s, str) and s for s in labels[:n_c]):
            names = list(labels[:n_c])
    meta["channel_names"] = names if len(names) == n_c else [f"C{i}" for i in range(n_c)]
    if "T" not in data_axes:
        meta["time_interval"] = None
    return meta


def _select(tif, scene, path: Path) -> int:
    n = len(tif.series)
    if scene is None:
        return 0
    if isinstance(scene, (int, np.integer)) or (isinstance(scene, str) and scene.lstrip("-").isdigit()):
        idx = int(scene)
        if not -n <= idx < n:
            raise InputFileError(f"scene {idx} out of range: the file has {n} series", path)
        return idx % n
    names = [_series_meta(tif, i, path)["name"] for i in range(n)]
    if scene not in names:
        raise InputFileError(f"no scene named {scene!r}; scenes are {names}", path)
    return names.index(scene)


def _public(meta: dict, path: Path) -> dict:
    return {
        "index": meta["index"],
        "name": meta["name"],
        "format": meta["format"],
        "axes": meta.get("axes"),
        "shape": list(meta["shape"]) if "shape" in meta else list(meta["file_shape"]),
        "file_axes": meta["file_axes"],
        "dtype": meta["dtype"],
        "pixel_size": dict(meta["pixel_size"]),
        "unit": "µm",
        "calibrated": bool(meta.get("calibrated", False)),
        "channel_names": list(meta["channel_names"]),
        "time_interval": meta["time_interval"],
        "problem": meta.get("problem"),
    }


def tiff_scenes(path: str | Path) -> list[dict]:
    """Describe every series of a TIFF file without reading pixels.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff``/``.ome.tif`` file.

    Returns
    -------
    list of dict
        One dict per series: ``index``, ``name``, ``format``, ``axes`` (canonical,
        None when the file's axes cannot be interpreted, see ``problem``),
        ``shape``, ``file_axes``, ``dtype``, ``pixel_size`` (µm), ``calibrated``,
        ``channel_names``, ``time_interval`` (s), and ``problem``: None, or why the
        series cannot be read (axes that need an override; pixel data that the file
        cannot hold: truncated, or declaring more bytes than the file has).
    """
    path = Path(path)
    tif = _open(path)
    try:
        out = []
        for i in range(len(tif.series)):
            meta = _series_meta(tif, i, path)
            try:
                meta = _finish_meta(meta, path, None)
            except AxesError as exc:
                meta["problem"] = exc.message
            damage = _data_problem(tif.series[i], path)
            if damage:
                meta["problem"] = damage if not meta.get("problem") else f"{damage}; {meta['problem']}"
            out.append(_public(meta, path))
        return out
    finally:
        tif.close()


def read_tiff(path: str | Path, scene: int | str | None = None, axes: str | None = None,
              lazy: bool = False) -> Image:
    """Read one series of a TIFF file as an :class:`Image`.

    Parameters
    ----------
    path : str or Path
        TIFF, ImageJ hyperstack or OME-TIFF file.
    scene : int or str, optional
        Series index or name (default: the first series).
    axes : str, optional
        Override of the file's axes: one letter of ``TCZYX`` per dimension of
        the stored (squeezed) data, in stored order.
    lazy : bool
        Return a dask array read plane by plane (through ``tifffile``'s zarr
        interface) instead of loading the pixels.

    Returns
    -------
    Image

    Raises
    ------
    InputFileError
        Missing, corrupt or truncated file, or one whose declared pixel data exceed its
        bytes (checked before anything is allocated); unknown scene.
    AxesError
        Axes the file does not define and no ``axes=`` given, or an override
        that does not fit the data.
    """
    path = Path(path)
    tif = _open(path)
    keep_open = False
    try:
        idx = _select(tif, scene, path)
        meta = _finish_meta(_series_meta(tif, idx, path), path, axes)
        series = tif.series[idx]
        _check_complete(tif, series, path)
        try:
            if lazy:
                import dask.array as da

                data = da.from_zarr(series.aszarr(level=0))
                keep_open = True
            else:
                data = series.asarray(level=0)
        except Exception as exc:
            raise InputFileError(f"cannot decode the pixel data ({type(exc).__name__}: {exc})", path) from exc
        if tuple(data.shape) != tuple(meta["file_shape"]):
            data = data.reshape(meta["file_shape"])
        return Image.from_array(
            data,
            meta["data_axes"],
            pixel_size=meta["pixel_size"],
            calibrated=meta["calibrated"],
            channel_names=tuple(meta["channel_names"]),
            source=path,
            scene=meta["name"] if len(tif.series) > 1 else None,
            name=f"{file_stem(path)}_{meta['name']}" if len(tif.series) > 1 else file_stem(path),
            time_interval=meta["time_interval"],
            metadata={"format": meta["format"], "file_axes": meta["file_axes"], "series": idx},
        )
    finally:
        if not keep_open:
            tif.close()


def read_tiff_scenes(path: str | Path, lazy: bool = False) -> list[Image]:
    """Read every series of a TIFF file (see :func:`read_tiff`)."""
    n = len(tiff_scenes(path))
    return [read_tiff(path, scene=i, lazy=lazy) for i in range(n)]
