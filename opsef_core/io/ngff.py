"""OME-Zarr (NGFF 0.5) label images: written tile by tile, a multiscale pyramid with physical scale.

:class:`LabelPyramidWriter` creates the level-0 array of a new OME-Zarr label image in a
temporary folder; the caller writes it region by region (any zarr-style ``arr[slices] = block``);
:meth:`LabelPyramidWriter.commit` then builds the coarser levels by nearest-neighbour
downsampling (every second pixel in Y and X, Z kept), chunk by chunk through dask, writes the
``multiscales`` metadata (axes with units, a ``scale`` transformation per level from the input's
pixel size) and the ``image-label`` metadata with ome-zarr-py, and renames the folder into place,
so a failed write never leaves a partial store under the final name.

The stores open in ome-zarr-py (``ome_zarr.reader.Reader``: a ``Label`` and ``Multiscales``
node) and napari (napari-ome-zarr).  :func:`read_label_pyramid` opens one lazily.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputFileError

__all__ = ["LabelPyramidWriter", "is_ngff", "pyramid_levels", "read_label_pyramid"]

logger = logging.getLogger(__name__)

#: stop downsampling when the coarsest level's largest in-plane side is at most this
MIN_LEVEL_SIDE = 256


def is_ngff(path: str | Path) -> bool:
    """Whether a path names an OME-Zarr/zarr store (a ``.zarr`` folder)."""
    return str(path).lower().rstrip("/").endswith(".zarr")


def pyramid_levels(shape: tuple, *, min_side: int = MIN_LEVEL_SIDE, max_levels: int = 8) -> int:
    """Number of levels: halve Y and X until the largest of them is at most ``min_side``."""
    n, side = 1, max(shape[-2:])
    while side > min_side and n < max_levels:
        side = -(-side // 2)
        n += 1
    return n


def _axes(axes: str) -> list[dict]:
    return [{"name": a.lower(), "type": "space", "unit": "micrometer"} for a in axes]


class LabelPyramidWriter:
    """A new OME-Zarr label image, level 0 written region by region, then :meth:`commit`.

    Parameters
    ----------
    path : str or Path
        The store to create (``.ome.zarr``); it must not exist.
    shape : tuple of int
        Spatial shape (``YX`` or ``ZYX``).
    axes : str
        ``"YX"`` or ``"ZYX"``.
    pixel_size : dict
        µm per pixel per axis (missing axes: 1).
    chunks : tuple of int, optional
        Chunk shape of level 0 (default 1024 in plane, the whole Z up to 64).
    dtype : str
        Label dtype (int32).

    Attributes
    ----------
    array : zarr.Array
        Level 0, writable until :meth:`commit`.
    """

    def __init__(self, path: str | Path, shape: tuple, axes: str, pixel_size: dict | None = None, *,
                 chunks: tuple | None = None, dtype: str = "int32"):
        import zarr

        self.path = Path(path)
        if not is_ngff(self.path):
            raise ConfigError(f"an OME-Zarr label image must be a .zarr folder, got {self.path}")
        if self.path.exists():
            raise ConfigError(f"{self.path} exists already; runs never overwrite outputs")
        if len(axes) != len(shape) or axes not in ("YX", "ZYX"):
            raise ConfigError(f"OME-Zarr labels take YX or ZYX axes, got {axes!r} for shape {shape}")
        self.shape = tuple(int(n) for n in shape)
        self.axes = axes
        self.pixel_size = {a: float((pixel_size or {}).get(a) or 1.0) for a in axes}
        if chunks is None:
            chunks = tuple(min(n, 64 if a == "Z" else 1024) for a, n in zip(axes, self.shape))
        self.chunks = tuple(int(c) for c in chunks)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.group = zarr.open_group(str(self.tmp), mode="w")
        self.array = self.group.create_array("s0", shape=self.shape, chunks=self.chunks, dtype=dtype,
                                             fill_value=0)
        self.n_levels = pyramid_levels(self.shape)

    def _scale(self, level: int) -> list[float]:
        return [self.pixel_size[a] * (1 if a == "Z" else 2 ** level) for a in self.axes]

    def commit(self, *, colors: list | None = None, source_image: str | None = None) -> Path:
        """Build the coarser levels, write the metadata and move the store into place.

        Returns
        -------
        Path
            The final store.
        """
        import dask
        import dask.array as da
        from ome_zarr.format import CurrentFormat
        from ome_zarr.writer import write_multiscales_metadata

        try:
            prev = "s0"
            for level in range(1, self.n_levels):
                src = da.from_zarr(self.group[prev])
                step = tuple(slice(None) if a == "Z" else slice(None, None, 2) for a in self.axes)
                down = src[step]
                chunks = tuple(min(c, n) for c, n in zip(self.chunks, down.shape))
                arr = self.group.create_array(f"s{level}", shape=down.shape, chunks=chunks, dtype=self.array.dtype,
                                              fill_value=0)
                with dask.config.set(scheduler="synchronous"):
                    da.store(down.rechunk(chunks), arr, lock=False)
                prev = f"s{level}"
            datasets = [{"path": f"s{k}", "coordinateTransformations": [{"type": "scale", "scale": self._scale(k)}]}
                        for k in range(self.n_levels)]
            write_multiscales_metadata(self.group, datasets, axes=_axes(self.axes), name=self.path.name)
            ome = dict(self.group.attrs.get("ome", {}))
            label_meta = {"version": CurrentFormat().version, "colors": list(colors or [])}
            if source_image:
                label_meta["source"] = {"image": source_image}
            ome["image-label"] = label_meta
            self.group.attrs["ome"] = ome
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        logger.info("wrote OME-Zarr labels %s (%s, %d levels)", self.path, self.shape, self.n_levels)
        return self.path

    def abort(self) -> None:
        """Remove the temporary store (nothing is left under the final name)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_label_pyramid(path: str | Path, level: int = 0):
    """Open one level of an OME-Zarr label image lazily.

    Returns
    -------
    (zarr.Array, dict)
        The level's array (read on access) and ``{"axes", "scale", "n_levels"}`` from its metadata.

    Raises
    ------
    InputFileError
        Not an OME-Zarr multiscale, or no such level.
    """
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
        ms = group.attrs["ome"]["multiscales"][0]
    except Exception as exc:  # noqa: BLE001 - any failure to open is one bad input
        raise InputFileError(f"not an OME-Zarr multiscale image ({type(exc).__name__}: {exc})", path) from None
    datasets = ms["datasets"]
    if not 0 <= level < len(datasets):
        raise InputFileError(f"level {level} requested; the store has {len(datasets)}", path)
    ds = datasets[level]
    scale = next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")
    axes = "".join(a["name"].upper() for a in ms["axes"])
    return group[ds["path"]], {"axes": axes, "scale": dict(zip(axes, scale)), "n_levels": len(datasets)}


def labels_as_array(path: str | Path) -> np.ndarray:
    """Level 0 of an OME-Zarr label image, in memory (small images only)."""
    arr, _ = read_label_pyramid(path)
    return np.asarray(arr[...])
