"""A writer of minimal valid Leica ``.lif`` files (as readlif and Bio-Formats parse them).

Layout: a header block (magic ``0x70``, block length, ``0x2A``, XML length in
UTF-16 code units, the XML in UTF-16-LE), then one memory block per series
(magic, length, ``0x2A``, 64-bit data length, ``0x2A``, block-ID length, the
block ID in UTF-16-LE, the raw pixels).  Pixels are stored x fastest, then y,
then channel, z, time and mosaic tile; dimension ``Length`` is in metres
from the first to the last pixel centre.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from ..io.atomic import atomic_write

__all__ = ["write_lif"]

_MAGIC = struct.pack("<I", 0x70)
_MEM = b"\x2a"


def _series_xml(name: str, data: np.ndarray, pixel_size: dict, channel_names, bit_depth: int,
                block_id: str, time_interval: float | None, tile_positions) -> str:
    m, t, c, z, y, x = data.shape
    bpp = data.dtype.itemsize
    chans = []
    for i in range(c):
        lut = channel_names[i] if channel_names else ("Gray", "Green", "Red", "Blue")[i % 4]
        chans.append(
            f'<ChannelDescription DataType="0" ChannelTag="0" Resolution="{bit_depth}" '
            f'NameOfMeasuredQuantity="" Min="0" Max="{2 ** bit_depth - 1}" Unit="" '
            f'LUTName={quoteattr(str(lut))} IsLUTInverted="0" BytesInc="{i * x * y * bpp}" BitInc="0"/>'
        )
    dims = []
    inc = bpp
    for dim_id, n, key in ((1, x, "X"), (2, y, "Y"), (3, z, "Z"), (4, t, "T"), (10, m, "M")):
        if n > 1 or dim_id in (1, 2):
            if key in "XYZ":
                # Length 0 = uncalibrated (readlif then reports no scale)
                length = float(pixel_size.get(key, 0.0)) * 1e-6 * (n - 1)
                unit = "m"
            elif key == "T":
                length = float(time_interval or 1.0) * (n - 1)
                unit = "s"
            else:
                length, unit = 0.0, ""
            dims.append(
                f'<DimensionDescription DimID="{dim_id}" NumberOfElements="{n}" Origin="0" '
                f'Length="{length!r}" Unit="{unit}" BitInc="0" BytesInc="{inc}"/>'
            )
        inc *= n
        if dim_id == 2:
            inc *= c  # channels are interleaved plane by plane, before z
    attach = ""
    if m > 1:
        tiles = "".join(
            f'<Tile FieldX="{fx}" FieldY="{fy}" PosX="{px!r}" PosY="{py!r}"/>' for fx, fy, px, py in tile_positions
        )
        attach = f'<Attachment Name="TileScanInfo" Application="LAS AF">{tiles}</Attachment>'
    return (
        f'<Element Name={quoteattr(name)} Visibility="1" CopyOption="1" UniqueID="{uuid.uuid4()}">'
        f'<Data><Image TextDescription=""><ImageDescription><Channels>{"".join(chans)}</Channels>'
        f'<Dimensions>{"".join(dims)}</Dimensions></ImageDescription>{attach}</Image></Data>'
        f'<Memory Size="{data.nbytes}" MemoryBlockID="{block_id}"/><Children/></Element>'
    )


def _as_mtczyx(data: np.ndarray, mosaic: bool) -> np.ndarray:
    data = np.asarray(data)
    want = 6 if mosaic else 5
    if data.ndim < 2 or data.ndim > want:
        raise ValueError(f"series data must be {'MTCZYX' if mosaic else 'TCZYX'} or a suffix of it, "
                         f"got shape {data.shape}")
    if not mosaic:
        data = data[None]
    while data.ndim < 6:
        data = data[:, None] if mosaic else data[None]
    return data


def write_lif(path: str | Path, series: list[dict]) -> Path:
    """Write a minimal valid Leica ``.lif`` file.

    Parameters
    ----------
    path : str or Path
        Output file (written atomically).
    series : list of dict
        One dict per series with keys ``name`` (str), ``data`` (uint8 or
        uint16 array with axes ``TCZYX``, or a suffix of it such as ``CZYX``
        or ``ZYX``; with ``mosaic=True`` a leading tile axis ``M``),
        ``pixel_size`` (``{"X": µm, "Y": µm, "Z": µm}``; axes left out are uncalibrated), and optionally
        ``channel_names`` (stored as LUT names), ``bit_depth`` (e.g. 12 for
        12-bit data in 16-bit words), ``time_interval`` (s), ``mosaic`` (bool)
        and ``tile_positions`` (``[(FieldX, FieldY, PosX, PosY), ...]``).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    blocks = []
    xml_series = []
    for i, s in enumerate(series):
        mosaic = bool(s.get("mosaic", False))
        data = _as_mtczyx(s["data"], mosaic)
        if data.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"series {s['name']!r}: LIF data must be uint8 or uint16, not {data.dtype}")
        bit_depth = int(s.get("bit_depth", data.dtype.itemsize * 8))
        block_id = f"MemBlock_{i + 1}"
        positions = s.get("tile_positions") or [(k, 0, k * 1e-4, 0.0) for k in range(data.shape[0])]
        xml_series.append(_series_xml(str(s["name"]), data, dict(s.get("pixel_size", {})),
                                      s.get("channel_names"), bit_depth, block_id,
                                      s.get("time_interval"), positions))
        # file order: tile, time, z, channel, y, x
        raw = np.ascontiguousarray(data.transpose(0, 1, 3, 2, 4, 5)).astype(data.dtype.newbyteorder("<"))
        blocks.append((block_id, raw.tobytes()))
    xml = (
        '<LMSDataContainerHeader Version="2">'
        f'<Element Name={quoteattr(path.name)} Visibility="1" CopyOption="1" UniqueID="{uuid.uuid4()}">'
        '<Data><Experiment IsSavedFlag="1"/></Data><Memory Size="0" MemoryBlockID="MemBlock_0"/>'
        f'<Children>{"".join(xml_series)}</Children></Element></LMSDataContainerHeader>'
    )
    xml_bytes = xml.encode("utf-16-le")
    with atomic_write(path) as fh:
        fh.write(_MAGIC + struct.pack("<I", 1 + 4 + len(xml_bytes)) + _MEM)
        fh.write(struct.pack("<I", len(xml_bytes) // 2) + xml_bytes)
        for block_id, payload in blocks:
            bid = block_id.encode("utf-16-le")
            fh.write(_MAGIC + struct.pack("<I", 1 + 8 + 1 + 4 + len(bid)) + _MEM)
            fh.write(struct.pack("<Q", len(payload)) + _MEM + struct.pack("<I", len(bid) // 2) + bid)
            fh.write(payload)
    return path
