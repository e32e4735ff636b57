"""Images stored as zarr: OME-Zarr (NGFF multiscale images) and plain zarr arrays, read lazily.

An OME-Zarr image (a group with ``multiscales`` metadata, NGFF 0.4 in ``.zattrs`` or 0.5 in
``zarr.json``) gives its axes (``t``, ``c``, ``z``, ``y``, ``x``), pixel sizes from the ``scale``
transformation of its full-resolution level (converted to µm from the axes' units), and channel
names from ``omero.channels``.  Level 0 is read; a ``labels`` sub-group is ignored.  A plain zarr
array has no axes: they come from ``inputs.axes`` (``axes=``), or ``YX``/``ZYX`` for 2-D/3-D.
One image per store (scene 0).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AxesError, InputFileError
from ..image import Image
from ._meta import check_path, unit_factor
from .naming import file_stem

__all__ = ["read_zarr", "zarr_scenes"]


def _open(path: Path):
    import zarr

    check_path(path, "folder")
    try:
        return zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - any failure to open is one bad input
        raise InputFileError(f"cannot open as zarr ({type(exc).__name__}: {exc})", path) from None


def _multiscales(node) -> dict | None:
    attrs = dict(node.attrs)
    ms = attrs.get("ome", attrs).get("multiscales")
    return ms[0] if ms else None


def _meta(path: Path, axes: str | None) -> tuple[object, dict]:
    """The level-0 array and its metadata (axes, pixel size, channel names)."""
    import zarr

    node = _open(path)
    pixel_size, calibrated, channels = {}, False, ()
    if isinstance(node, zarr.Array):
        arr = node
        file_axes = axes or {2: "YX", 3: "ZYX"}.get(arr.ndim)
        if file_axes is None:
            raise AxesError(f"a plain zarr array of {arr.ndim} dimensions needs inputs.axes "
                            "(e.g. 'CYX' or 'TZYX')", path)
        fmt = "zarr"
    else:
        ms = _multiscales(node)
        if ms is None:
            raise InputFileError("a zarr group without OME-Zarr 'multiscales' metadata; give the array "
                                 "inside it (path/to/store.zarr/<array>)", path)
        ds = ms["datasets"][0]
        try:
            arr = node[ds["path"]]
        except KeyError:
            raise InputFileError(f"OME-Zarr level {ds['path']!r} is missing", path) from None
        names = [a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", [])]
        file_axes = axes or "".join(n.upper() for n in names)
        if not file_axes:
            raise AxesError("OME-Zarr without axes metadata (NGFF 0.3 or older): give inputs.axes", path)
        scale = next((t["scale"] for t in ds.get("coordinateTransformations", []) if t.get("type") == "scale"),
                     None)
        if scale is not None and not axes:
            units = {a["name"].upper(): a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
            for a, v in zip(file_axes, scale):
                if a in "ZYX" and v and v > 0:
                    f = unit_factor(units.get(a)) if units.get(a) else 1.0
                    pixel_size[a] = float(v) * (f if f is not None else 1.0)
            calibrated = bool(pixel_size) and any(units.get(a) for a in "ZYX" if a in file_axes)
        attrs = dict(node.attrs)
        omero = attrs.get("ome", attrs).get("omero") or {}
        channels = tuple(str(c.get("label", i)) for i, c in enumerate(omero.get("channels", [])))
        fmt = "ome-zarr"
    if len(file_axes) != arr.ndim:
        raise AxesError(f"axes {file_axes!r} do not fit the array's {arr.ndim} dimensions {arr.shape}", path)
    return arr, {"axes": file_axes, "pixel_size": pixel_size, "calibrated": calibrated,
                 "channel_names": channels, "format": fmt}


def read_zarr(path: str | Path, scene: int | str | None = None, axes: str | None = None,
              lazy: bool = False) -> Image:
    """Read an OME-Zarr image or a plain zarr array (its level 0).

    Parameters
    ----------
    path : str or Path
        A ``.zarr`` folder.
    scene : int, optional
        Only 0 (one image per store).
    axes : str, optional
        Axes of the stored dimensions (required for plain arrays that are not 2-D or 3-D).
    lazy : bool
        Keep the pixels as a dask array over the store (read region by region).

    Raises
    ------
    InputFileError, AxesError
    """
    import dask.array as da
    import numpy as np

    path = Path(path)
    if scene not in (None, 0, "0"):
        raise InputFileError(f"scene {scene!r} requested; a zarr store holds one image (scene 0)", path)
    arr, meta = _meta(path, axes)
    data = da.from_zarr(arr) if lazy else np.asarray(arr[...])
    channels = meta["channel_names"]
    if "C" in meta["axes"] and len(channels) != arr.shape[meta["axes"].index("C")]:
        channels = ()
    return Image.from_array(data, meta["axes"], pixel_size=meta["pixel_size"], calibrated=meta["calibrated"],
                            channel_names=channels, source=path, name=file_stem(path),
                            metadata={"format": meta["format"], "file_axes": meta["axes"], "series": 0})


def zarr_scenes(path: str | Path) -> list[dict]:
    """Describe the store's one image without reading pixels (the fields of ``tiff_scenes``)."""
    path = Path(path)
    try:
        arr, meta = _meta(path, None)
    except AxesError as exc:
        return [{"index": 0, "name": file_stem(path), "format": "zarr", "axes": None, "shape": None,
                 "dtype": None, "pixel_size": {}, "calibrated": False, "channel_names": [],
                 "time_interval": None, "problem": exc.message}]
    canonical = "".join(a for a in "TCZYX" if a in meta["axes"])
    shape = [int(arr.shape[meta["axes"].index(a)]) for a in canonical]
    return [{"index": 0, "name": file_stem(path), "format": meta["format"], "axes": canonical, "shape": shape,
             "file_axes": meta["axes"], "dtype": str(arr.dtype), "pixel_size": meta["pixel_size"],
             "calibrated": meta["calibrated"], "channel_names": list(meta["channel_names"]),
             "time_interval": None, "problem": None}]
