"""The :class:`Image` model: pixels plus everything needed to interpret them.

Axes are always explicit and stored in canonical ``TCZYX`` order (a subset of
it, ``YX`` at least).  Readers build images with :meth:`Image.from_array`,
which accepts any order of axis letters and transposes to the canonical one;
nothing in opsef guesses axes from a shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import AxesError

__all__ = ["Image", "CANONICAL_AXES", "SPATIAL_AXES", "normalise_axes", "to_display"]

CANONICAL_AXES = "TCZYX"
SPATIAL_AXES = "ZYX"
# Synonyms used by tifffile / OME / ImageJ for the axes we know.
_AXIS_SYNONYMS = {"S": "C", "I": "Z", "Q": "Z"}


def normalise_axes(axes: str, ndim: int, source: str | Path | None = None) -> str:
    """Validate an axes string against a number of dimensions.

    Parameters
    ----------
    axes : str
        Letters among ``TCZYX`` (upper or lower case; ``S`` is read as ``C``),
        one per dimension, each at most once, ``Y`` and ``X`` required.
    ndim : int
        Number of dimensions of the data the axes describe.
    source : str or Path, optional
        File named in the error message.

    Returns
    -------
    str
        The upper-case axes string, in the order given.

    Raises
    ------
    AxesError
        When the string has unknown or repeated letters, lacks Y or X, or its
        length differs from ``ndim``.
    """
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string like 'ZYX', got {axes!r}", source)
    up = "".join(_AXIS_SYNONYMS.get(a, a) for a in axes.upper())
    bad = sorted(set(up) - set(CANONICAL_AXES))
    if bad:
        raise AxesError(
            f"axes {axes!r} contain unknown letter(s) {bad}; use letters of {CANONICAL_AXES!r}", source
        )
    if len(set(up)) != len(up):
        raise AxesError(f"axes {axes!r} repeat a letter", source)
    if "Y" not in up or "X" not in up:
        raise AxesError(f"axes {axes!r} must contain Y and X", source)
    if len(up) != ndim:
        raise AxesError(
            f"axes {axes!r} have {len(up)} letters but the data has {ndim} dimensions", source
        )
    return up


def to_display(
    array: np.ndarray, low: float = 1.0, high: float = 99.8, limits: tuple[float, float] | None = None
) -> np.ndarray:
    """Scale an array to float32 in [0, 1] for display, by percentiles or fixed limits.

    Parameters
    ----------
    array : ndarray
        Any numeric array; it is not modified.
    low, high : float
        Percentiles mapped to 0 and 1 (ignored when ``limits`` is given).
    limits : (float, float), optional
        Fixed intensity limits, e.g. to use the same scaling across a montage row.

    Returns
    -------
    ndarray of float32
        Values clipped to [0, 1]; a constant image maps to zeros.
    """
    a = np.asarray(array, dtype=np.float32)
    if limits is None:
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return np.zeros_like(a)
        lo, hi = np.percentile(finite, [low, high])
    else:
        lo, hi = limits
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


@dataclass(frozen=True)
class Image:
    """An image with explicit axes, calibration and provenance.

    Attributes
    ----------
    data : ndarray or dask.array.Array
        Pixel data, dimensions in the order of ``axes``.
    axes : str
        Canonical-order subset of ``TCZYX`` containing ``YX``.
    pixel_size : dict
        Physical size of one pixel along each spatial axis present (``Z``,
        ``Y``, ``X``) in ``unit``; 1.0 where unknown (then ``calibrated`` is False).
    unit : str
        Unit of ``pixel_size`` (micrometre by default).
    channel_names : tuple of str
        One name per channel (``("C0", ...)`` when the file gives none); empty
        when the image has no C axis.
    source : Path, optional
        File the image was read from.
    scene : str, optional
        Series/scene name inside ``source`` (multi-series files such as .lif).
    name : str
        Short name used in tables and file names (defaults to the file stem).
    calibrated : bool
        Whether ``pixel_size`` came from metadata or the user (not defaults).
    time_interval : float, optional
        Seconds between time points, when known.
    metadata : dict
        Free-form extra metadata from the reader (JSON-serialisable values).
    """

    data: Any
    axes: str
    pixel_size: dict = field(default_factory=dict)
    unit: str = "µm"
    channel_names: tuple = ()
    source: Path | None = None
    scene: str | None = None
    name: str = "image"
    calibrated: bool = False
    time_interval: float | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        axes = normalise_axes(self.axes, self.data.ndim, self.source)
        if axes != "".join(a for a in CANONICAL_AXES if a in axes):
            raise AxesError(
                f"axes {axes!r} are not in canonical TCZYX order; build images with Image.from_array",
                self.source,
            )
        object.__setattr__(self, "axes", axes)
        ps = {a: float(self.pixel_size.get(a, 1.0)) for a in SPATIAL_AXES if a in axes}
        for a, v in ps.items():
            if not np.isfinite(v) or v <= 0:
                raise AxesError(f"pixel size along {a} must be positive, got {v}", self.source)
        object.__setattr__(self, "pixel_size", ps)
        if "C" in axes:
            n = self.data.shape[axes.index("C")]
            names = tuple(self.channel_names) or tuple(f"C{i}" for i in range(n))
            if len(names) != n:
                raise AxesError(
                    f"{len(names)} channel names given for {n} channels: {list(names)}", self.source
                )
            object.__setattr__(self, "channel_names", tuple(str(c) for c in names))
        else:
            object.__setattr__(self, "channel_names", ())
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))

    # ------------------------------------------------------------------ building
    @classmethod
    def from_array(
        cls,
        data: Any,
        axes: str,
        pixel_size: dict | None = None,
        **kwargs: Any,
    ) -> "Image":
        """Build an image from an array whose axes are given in any order.

        Parameters
        ----------
        data : array-like
            Pixel data (numpy or dask).
        axes : str
            One letter per dimension of ``data`` (e.g. ``"ZCYX"``, ``"YXS"``);
            the data are transposed to canonical TCZYX order.
        pixel_size : dict, optional
            ``{"Z": dz, "Y": dy, "X": dx}`` in micrometres; missing axes are 1.0.
            Marks the image as calibrated when given.
        **kwargs
            Other :class:`Image` fields (``channel_names``, ``source``, ...).

        Returns
        -------
        Image
        """
        if not hasattr(data, "ndim"):
            data = np.asarray(data)
        source = kwargs.get("source")
        axes_up = normalise_axes(axes, data.ndim, source)
        order = [axes_up.index(a) for a in CANONICAL_AXES if a in axes_up]
        if order != list(range(len(order))):
            data = data.transpose(order)
        canon = "".join(a for a in CANONICAL_AXES if a in axes_up)
        if pixel_size is not None:
            kwargs.setdefault("calibrated", True)
            pixel_size = {k.upper(): v for k, v in pixel_size.items() if v is not None}
        if source is not None and "name" not in kwargs:
            kwargs["name"] = Path(source).stem
        return cls(data=data, axes=canon, pixel_size=pixel_size or {}, **kwargs)

    def with_data(self, data: Any, axes: str | None = None, **changes: Any) -> "Image":
        """Return a copy with new data (same metadata unless changed).

        Parameters
        ----------
        data : array-like
            New pixel data in canonical order of ``axes``.
        axes : str, optional
            Axes of ``data`` (default: this image's axes).
        **changes
            Other fields to replace.
        """
        axes = axes or self.axes
        if "C" not in axes:
            changes.setdefault("channel_names", ())
        return replace(self, data=data, axes=axes, **changes)

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple:
        """Shape of the data."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the pixels."""
        return np.dtype(self.data.dtype)

    @property
    def sizes(self) -> dict:
        """Mapping axis letter -> length, in canonical order."""
        return dict(zip(self.axes, self.shape))

    def size(self, axis: str) -> int:
        """Length along ``axis`` (1 when the axis is absent)."""
        return self.sizes.get(axis.upper(), 1)

    @property
    def spatial_axes(self) -> str:
        """``"ZYX"`` for volumes, ``"YX"`` for planes."""
        return "".join(a for a in SPATIAL_AXES if a in self.axes)

    @property
    def is_3d(self) -> bool:
        """Whether the image has a Z axis longer than one."""
        return self.size("Z") > 1

    @property
    def spacing(self) -> tuple:
        """Pixel size along the spatial axes, in ``spatial_axes`` order."""
        return tuple(self.pixel_size[a] for a in self.spatial_axes)

    @property
    def n_channels(self) -> int:
        """Number of channels (1 without a C axis)."""
        return self.size("C")

    def channel_index(self, channel: int | str) -> int:
        """Index of a channel given by index or by name.

        Raises
        ------
        AxesError
            When the channel does not exist.
        """
        n = self.n_channels
        if isinstance(channel, str) and not channel.lstrip("-").isdigit():
            if channel not in self.channel_names:
                raise AxesError(
                    f"no channel named {channel!r}; channels are {list(self.channel_names)}", self.source
                )
            return self.channel_names.index(channel)
        idx = int(channel)
        if not -n <= idx < n:
            raise AxesError(f"channel {idx} out of range: the image has {n} channel(s)", self.source)
        return idx % n

    # ------------------------------------------------------------------ selecting
    def sel(self, t: int | None = None, c: int | str | None = None, z: int | slice | None = None) -> "Image":
        """Select a time point, channel and/or z slice(s).

        Integers drop the axis; a slice for ``z`` keeps it (a sub-stack).
        Selecting index 0 on an absent axis is allowed (a no-op).

        Returns
        -------
        Image
        """
        data = self.data
        axes = self.axes
        changes: dict = {}
        for letter, value in (("T", t), ("C", c), ("Z", z)):
            if value is None:
                continue
            if letter not in axes:
                if isinstance(value, slice) or value in (0, -1):
                    continue
                if letter == "C" and isinstance(value, str) and not self.channel_names:
                    raise AxesError(f"no channel named {value!r}: the image has no C axis", self.source)
                raise AxesError(f"cannot select {letter}={value!r}: the image has no {letter} axis", self.source)
            i = axes.index(letter)
            n = data.shape[i]
            if letter == "C":
                value = self.channel_index(value)
                changes["channel_names"] = ()
            index = [slice(None)] * data.ndim
            if isinstance(value, slice):
                index[i] = value
                data = data[tuple(index)]
                if data.shape[i] == 0:
                    raise AxesError(f"{letter} slice {value} selects nothing from {n} planes", self.source)
                continue
            if not -n <= int(value) < n:
                raise AxesError(f"{letter}={value} out of range: the image has {n}", self.source)
            index[i] = int(value)
            data = data[tuple(index)]
            axes = axes.replace(letter, "")
        if "C" in axes and "channel_names" not in changes:
            changes["channel_names"] = self.channel_names
        return replace(self, data=data, axes=axes, **changes)

    def spatial(self, t: int = 0, c: int | str = 0) -> np.ndarray:
        """Return the (Z)YX array at one time point and channel, as numpy."""
        return np.asarray(self.sel(t=t, c=c).data)

    def iter_spatial(self) -> Iterator[tuple[dict, np.ndarray]]:
        """Yield ``({"T": t, "C": c}, (Z)YX array)`` for every time point and channel."""
        for t in range(self.size("T")):
            for c in range(self.size("C")):
                yield {"T": t, "C": c}, self.spatial(t=t, c=c)

    def compute(self) -> "Image":
        """Return a copy whose data is an in-memory numpy array."""
        return replace(self, data=np.asarray(self.data))

    def display(self, low: float = 1.0, high: float = 99.8) -> np.ndarray:
        """Percentile-scaled float32 copy in [0, 1] for display (stored data unchanged)."""
        return to_display(np.asarray(self.data), low, high)

    def describe(self) -> dict:
        """JSON-serialisable summary (what ``opsef info`` prints)."""
        return {
            "name": self.name,
            "scene": self.scene,
            "source": str(self.source) if self.source else None,
            "axes": self.axes,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "pixel_size": self.pixel_size,
            "unit": self.unit,
            "calibrated": self.calibrated,
            "channel_names": list(self.channel_names),
            "time_interval": self.time_interval,
        }

    def __repr__(self) -> str:
        sizes = " ".join(f"{a}={n}" for a, n in self.sizes.items())
        return f"Image({self.name!r}, {sizes}, {self.dtype}, pixel_size={self.pixel_size})"
