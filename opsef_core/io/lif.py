"""Leica ``.lif`` reading via readlif (GPLv3, imported lazily).

readlif parses the XML header and locates each series' memory block; the
pixels are then mapped straight from the file with :func:`numpy.memmap`
using readlif's plane order (mosaic tile, time, z, channel — or time,
channel, z when readlif flags ``channel_as_second_dim``), so reading is
bit-exact, lazy and independent of Pillow.  readlif 0.6.6 reports ``scale``
in pixels per µm (computed as ``(n - 1) / Length``); opsef inverts it to µm
per pixel.  12-bit data are stored in 16 bits and read as ``uint16``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..image import Image, normalise_axes
from ._meta import check_path, positive

__all__ = ["lif_scenes", "read_lif", "read_lif_scenes"]

logger = logging.getLogger(__name__)

_KNOWN_DIMS = {1, 2, 3, 4, 10}  # x, y, z, t, mosaic tile


_LIF_MAGIC = b"\x70\x00\x00\x00"  # every LIF file starts with this int32, a length and the byte 0x2A


def _check_header(path: Path) -> None:
    """Raise ``InputFileError("not a Leica LIF file: ...")`` unless the file starts like a LIF file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise InputFileError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if len(head) < 9:
        raise InputFileError(f"not a Leica LIF file: only {len(head)} bytes", path)
    if head[:4] != _LIF_MAGIC or head[8:9] != b"\x2a":
        raise InputFileError(
            f"not a Leica LIF file: it starts with {head[:9].hex(' ')} instead of the LIF header "
            "(70 00 00 00, a length, 2a)", path)


def _open(path: Path):
    check_path(path, "file")
    _check_header(path)
    try:
        from readlif.reader import LifFile
    except ImportError as exc:  # pragma: no cover - readlif is in the lock file
        raise InputFileError("reading .lif files needs readlif (pip install readlif)", path) from exc
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lif = LifFile(str(path))
    except Exception as exc:  # readlif: ValueError, struct.error, XML ParseError, UnicodeDecodeError, ...
        raise InputFileError(f"not a Leica LIF file: unreadable header ({type(exc).__name__}: {exc})",
                             path) from exc
    if any("truncated" in str(w.message) for w in caught):
        raise InputFileError("the LIF file is truncated (some series have no pixel data)", path)
    if lif.num_images == 0:
        raise InputFileError("the LIF file contains no image series", path)
    return lif


def _channel_names(lif) -> list[list[str]]:
    """Channel names (``LUTName`` attributes) per image, in readlif's image order."""
    elements = [el for el in lif.xml_root.iter("Element") if el.find("./Data/Image") is not None]
    if len(elements) != lif.num_images:
        return [[] for _ in range(lif.num_images)]
    out = []
    for el in elements:
        chans = el.findall("./Data/Image/ImageDescription/Channels/ChannelDescription")
        out.append([c.attrib.get("LUTName", "") for c in chans])
    return out


def _meta(lif, index: int, path: Path, names: list[str]) -> dict:
    info = lif.image_list[index]
    dims = info["dims"]
    meta = {
        "index": index,
        "name": info["name"],
        "format": "lif",
        "dims_n": dict(info["dims_n"]),
        "n_tiles": int(dims.m),
        "mosaic_position": [list(p) for p in info["mosaic_position"]],
        "bit_depth": list(info["bit_depth"]),
        "channel_as_second_dim": bool(info["channel_as_second_dim"]),
        "problem": None,
    }
    n_c = int(info["channels"])
    sizes = {"T": int(dims.t), "C": n_c, "Z": int(dims.z), "Y": int(dims.y), "X": int(dims.x)}
    meta["sizes"] = sizes
    unknown = sorted(set(info["dims_n"]) - _KNOWN_DIMS)
    if unknown:
        meta["problem"] = f"series {info['name']!r} has LIF dimension(s) {unknown} opsef cannot read"
    if tuple(info["display_dims"]) != (1, 2):
        meta["problem"] = f"series {info['name']!r} is not an XY image (display dims {info['display_dims']})"
    depth = max(meta["bit_depth"]) if meta["bit_depth"] else 8
    meta["dtype"] = "uint8" if depth <= 8 else "uint16"
    scale = info["scale"]
    pixel_size = {}
    for axis, s in zip("XYZ", scale[:3]):
        s = positive(s)
        if s is not None and (axis != "Z" or sizes["Z"] > 1):  # filled X, Y, Z; reordered below
            pixel_size[axis] = float(f"{1.0 / s:.12g}")  # drop float noise of (n-1)/Length
    meta["pixel_size"] = {a: pixel_size[a] for a in "ZYX" if a in pixel_size}
    meta["calibrated"] = "X" in pixel_size and "Y" in pixel_size
    st = positive(scale[3]) if sizes["T"] > 1 else None
    meta["time_interval"] = float(f"{1.0 / st:.12g}") if st else None
    meta["axes"] = "".join(a for a in "TCZYX" if a in "YX" or sizes[a] > 1)
    meta["shape"] = [sizes[a] for a in meta["axes"]]
    if n_c > 1 or "C" in meta["axes"]:
        meta["channel_names"] = names if len(names) == n_c and all(names) else [f"C{i}" for i in range(n_c)]
    else:
        meta["channel_names"] = []
    meta["offset"], meta["nbytes"] = lif.offsets[index]
    return meta


def _public(meta: dict) -> dict:
    keys = ("index", "name", "format", "axes", "shape", "dtype", "pixel_size", "calibrated",
            "channel_names", "time_interval", "n_tiles", "mosaic_position", "problem")
    out = {k: meta[k] for k in keys}
    out["unit"] = "µm"
    out["file_axes"] = out["axes"] if meta["n_tiles"] == 1 else "M" + out["axes"]
    return out


def lif_scenes(path: str | Path) -> list[dict]:
    """Describe every series of a ``.lif`` file without reading pixels.

    Returns
    -------
    list of dict
        One dict per series (``index``, ``name``, ``axes``, ``shape``, ``dtype``,
        ``pixel_size`` in µm, ``channel_names``, ``n_tiles`` for mosaics, ...).
    """
    path = Path(path)
    lif = _open(path)
    names = _channel_names(lif)
    return [_public(_meta(lif, i, path, names[i])) for i in range(lif.num_images)]


def _select(lif, scene, path: Path) -> int:
    n = lif.num_images
    if scene is None:
        return 0
    if isinstance(scene, (int, np.integer)) or (isinstance(scene, str) and scene.lstrip("-").isdigit()):
        idx = int(scene)
        if not -n <= idx < n:
            raise InputFileError(f"scene {idx} out of range: the file has {n} series", path)
        return idx % n
    names = [im["name"] for im in lif.image_list]
    if scene not in names:
        raise InputFileError(f"no scene named {scene!r}; scenes are {names}", path)
    return names.index(scene)


def _pixels(meta: dict, path: Path, tile: int) -> np.ndarray:
    """Memory-map one series (one mosaic tile) as a TCZYX array."""
    s = meta["sizes"]
    m = meta["n_tiles"]
    n_planes = m * s["T"] * s["Z"] * s["C"]
    plane = s["Y"] * s["X"]
    itemsize = np.dtype(meta["dtype"]).itemsize
    if meta["nbytes"] != n_planes * plane * itemsize:
        raise InputFileError(
            f"series {meta['name']!r}: memory block of {meta['nbytes']} bytes does not match "
            f"{n_planes} planes of {s['Y']}x{s['X']} {meta['dtype']}",
            path,
        )
    if meta["offset"] + meta["nbytes"] > path.stat().st_size:
        raise InputFileError(f"series {meta['name']!r}: the file is truncated", path)
    raw = np.memmap(path, dtype=np.dtype(meta["dtype"]).newbyteorder("<"), mode="r",
                    offset=meta["offset"], shape=(n_planes * plane,))
    if meta["channel_as_second_dim"]:
        arr = raw.reshape(m, s["T"], s["C"], s["Z"], s["Y"], s["X"])[tile]
    else:
        arr = raw.reshape(m, s["T"], s["Z"], s["C"], s["Y"], s["X"])[tile].transpose(0, 2, 1, 3, 4)
    return arr


def read_lif(path: str | Path, scene: int | str | None = None, axes: str | None = None,
             lazy: bool = False, tile: int | None = None) -> Image:
    """Read one series of a Leica ``.lif`` file as an :class:`Image`.

    Parameters
    ----------
    path : str or Path
        The ``.lif`` file.
    scene : int or str, optional
        Series index or name as readlif reports it (``"folder/name"`` for
        series in sub-folders); default the first series.
    axes : str, optional
        Override of the axes of the returned (squeezed, canonical) data, e.g.
        ``"TYX"`` when a time series was recorded as a z stack.
    lazy : bool
        Keep the pixels memory-mapped (read on access) instead of loading them.
    tile : int, optional
        Mosaic tile to read; required for mosaic series (tiles are not
        stitched; positions are in ``metadata["mosaic_position"]``).

    Returns
    -------
    Image
        Axes a canonical subset of ``TCZYX``; size-1 T, Z (and C for one
        channel) are dropped.

    Raises
    ------
    InputFileError
        Missing/corrupt/truncated file, unknown scene, mosaic without ``tile``,
        unsupported LIF dimensions.
    AxesError
        ``axes`` that do not fit the data.
    """
    path = Path(path)
    lif = _open(path)
    idx = _select(lif, scene, path)
    meta = _meta(lif, idx, path, _channel_names(lif)[idx])
    if meta["problem"]:
        raise InputFileError(meta["problem"], path)
    if meta["n_tiles"] > 1 and tile is None:
        raise InputFileError(
            f"series {meta['name']!r} is a mosaic of {meta['n_tiles']} tiles; pass tile=0..{meta['n_tiles'] - 1} "
            "(opsef does not stitch mosaics)", path)
    tile = 0 if tile is None else int(tile)
    if not 0 <= tile < meta["n_tiles"]:
        raise InputFileError(f"tile {tile} out of range: series {meta['name']!r} has {meta['n_tiles']}", path)
    arr = _pixels(meta, path, tile)
    squeeze = tuple(i for i, a in enumerate("TCZ") if a not in meta["axes"])
    arr = arr.reshape([n for i, n in enumerate(arr.shape) if i not in squeeze])
    if not lazy:
        arr = np.array(arr)
    data_axes = meta["axes"] if axes is None else normalise_axes(axes, arr.ndim, path)
    pixel_size = {a: v for a, v in meta["pixel_size"].items() if a in data_axes}
    name = meta["name"] if meta["n_tiles"] == 1 else f"{meta['name']} [tile {tile}]"
    return Image.from_array(
        arr,
        data_axes,
        pixel_size=pixel_size,
        calibrated=meta["calibrated"],
        channel_names=tuple(meta["channel_names"]) if "C" in data_axes else (),
        source=path,
        scene=name,
        name=f"{path.stem}_{name}".replace("/", "_").replace(" ", "_"),
        time_interval=meta["time_interval"] if "T" in data_axes else None,
        metadata={"format": "lif", "series": idx, "bit_depth": meta["bit_depth"],
                  "mosaic_position": meta["mosaic_position"][tile] if meta["n_tiles"] > 1 else None},
    )


def read_lif_scenes(path: str | Path, lazy: bool = False) -> list[Image]:
    """Read every series of a ``.lif`` file (each tile of a mosaic as its own image)."""
    out = []
    for s in lif_scenes(path):
        if s["problem"]:
            raise InputFileError(s["problem"], path)
        for t in range(s["n_tiles"]):
            out.append(read_lif(path, scene=s["index"], lazy=lazy, tile=t if s["n_tiles"] > 1 else None))
    return out
