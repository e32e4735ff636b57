"""Sub-stacks, rescaling and binning of images, with pixel sizes kept right.

All functions take and return :class:`opsef_core.image.Image` (except
:func:`rescale_labels`, which works on label arrays); non-spatial axes (T, C)
are never resampled.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import AxesError, ConfigError
from .image import Image

__all__ = ["substack", "rescale", "rescale_labels", "bin_image"]

logger = logging.getLogger(__name__)


def substack(image: Image, z_start: int, z_stop: int | None = None, z_step: int = 1) -> Image:
    """Select planes ``z_start:z_stop:z_step`` of a volume.

    Parameters
    ----------
    image : Image
        An image with a Z axis.
    z_start, z_stop : int
        Python slice bounds (``z_stop`` None = to the end; negatives count from the end).
    z_step : int
        Keep every ``z_step``-th plane; the Z pixel size is multiplied by it.

    Returns
    -------
    Image

    Raises
    ------
    AxesError
        No Z axis, a step < 1, or a range that selects nothing.
    """
    if "Z" not in image.axes:
        raise AxesError(f"substack needs a Z axis; the image has axes {image.axes}", image.source)
    if int(z_step) < 1:
        raise AxesError(f"z_step must be >= 1, got {z_step}", image.source)
    out = image.sel(z=slice(z_start, z_stop, int(z_step)))
    ps = dict(out.pixel_size)
    ps["Z"] = ps["Z"] * int(z_step)
    return out.with_data(out.data, pixel_size=ps)


def _factors(image: Image, factors) -> dict:
    spatial = image.spatial_axes
    if isinstance(factors, dict):
        f = {str(k).upper(): float(v) for k, v in factors.items()}
        bad = sorted(set(f) - set(spatial))
        if bad:
            raise AxesError(f"scale factors given for {bad}, but the spatial axes are {spatial}", image.source)
    else:
        f = {"Y": float(factors), "X": float(factors)}
    for k, v in f.items():
        if not np.isfinite(v) or v <= 0:
            raise ConfigError(f"scale factor along {k} must be positive, got {v}")
    return {a: f.get(a, 1.0) for a in spatial}


def rescale(image: Image, factors: float | dict, order: int = 1, preserve_dtype: bool = True,
            anti_aliasing: bool | None = None) -> Image:
    """Resample the spatial axes by explicit factors.

    Parameters
    ----------
    image : Image
        Any image; T and C are kept as they are.
    factors : float or dict
        New size = round(old size x factor).  A float scales Y and X only
        (Z untouched: volumes are usually anisotropic); a dict such as
        ``{"Z": 2.0, "Y": 0.5, "X": 0.5}`` gives each spatial axis explicitly.
    order : int
        Spline order (0 nearest, 1 linear, 3 cubic).
    preserve_dtype : bool
        Round and clip back to the input dtype (default); otherwise float32.
    anti_aliasing : bool, optional
        Gaussian pre-filter when shrinking (default: on for ``order > 0``).

    Returns
    -------
    Image
        Pixel sizes are ``old x old_size / new_size`` (= old / factor up to rounding),
        so the physical extent is kept.
    """
    from skimage.transform import resize

    f = _factors(image, factors)
    spatial = image.spatial_axes
    data = np.asarray(image.data)
    out_spatial = tuple(max(1, int(round(image.size(a) * f[a]))) for a in spatial)
    lead = data.shape[: data.ndim - len(spatial)]
    flat = data.reshape((-1,) + data.shape[data.ndim - len(spatial):])
    if anti_aliasing is None:
        anti_aliasing = order > 0 and any(n < image.size(a) for n, a in zip(out_spatial, spatial))
    out_dtype = data.dtype if preserve_dtype else np.float32
    out = np.empty((flat.shape[0],) + out_spatial, dtype=out_dtype)
    for i in range(flat.shape[0]):
        r = resize(flat[i].astype(np.float32, copy=False), out_spatial, order=order, mode="edge",
                   preserve_range=True, anti_aliasing=anti_aliasing)
        if preserve_dtype and np.dtype(out_dtype).kind in "iub":
            info = np.iinfo(out_dtype) if np.dtype(out_dtype).kind in "iu" else None
            r = np.round(r)
            if info is not None:
                r = np.clip(r, info.min, info.max)
        out[i] = r
    out = out.reshape(lead + out_spatial)
    ps = {a: image.pixel_size[a] * image.size(a) / n for a, n in zip(spatial, out_spatial)}
    return image.with_data(out, pixel_size=ps)


def rescale_labels(labels: np.ndarray, shape: tuple) -> np.ndarray:
    """Resize a label image to ``shape`` by nearest neighbour.

    No new label values appear and no smoothing happens (skimage ``resize``
    with ``order=0``, no anti-aliasing); the dtype is kept.

    Raises
    ------
    AxesError
        When ``shape`` has a different number of dimensions.
    """
    from skimage.transform import resize

    labels = np.asarray(labels)
    shape = tuple(int(n) for n in shape)
    if len(shape) != labels.ndim:
        raise AxesError(f"target shape {shape} has {len(shape)} dimensions, labels have {labels.ndim}")
    if shape == labels.shape:
        return labels.copy()
    out = resize(labels, shape, order=0, mode="edge", preserve_range=True, anti_aliasing=False)
    return out.astype(labels.dtype)


_REDUCERS = {"mean": np.mean, "sum": np.sum, "max": np.max}


def bin_image(image: Image, factors: dict, reduce: str = "mean", crop: bool = False) -> Image:
    """Bin spatial axes by integer factors (block reduce).

    Parameters
    ----------
    image : Image
        Any image; T and C are kept.
    factors : dict
        Integer bin size per spatial axis, e.g. ``{"Y": 2, "X": 2}``; missing axes are 1.
    reduce : {"mean", "sum", "max"}
        ``mean`` gives float32 (or the input float dtype); ``sum`` widens integers
        to 64 bit; ``max`` keeps the dtype.
    crop : bool
        When a size is not divisible by its factor: False (default) raises, True
        drops the remainder at the high end (logged).

    Returns
    -------
    Image
        Pixel sizes multiplied by the factors.

    Raises
    ------
    AxesError
        Factors for absent axes, or sizes not divisible (with ``crop=False``).
    ConfigError
        Unknown ``reduce`` or non-positive / non-integer factors.
    """
    from skimage.measure import block_reduce

    if reduce not in _REDUCERS:
        raise ConfigError(f"reduce must be one of {sorted(_REDUCERS)}, got {reduce!r}")
    spatial = image.spatial_axes
    f = {str(k).upper(): v for k, v in factors.items()}
    bad = sorted(set(f) - set(spatial))
    if bad:
        raise AxesError(f"bin factors given for {bad}, but the spatial axes are {spatial}", image.source)
    for k, v in f.items():
        if int(v) != v or int(v) < 1:
            raise ConfigError(f"bin factor along {k} must be a positive integer, got {v}")
    f = {a: int(f.get(a, 1)) for a in spatial}
    data = np.asarray(image.data)
    index = [slice(None)] * data.ndim
    for a in spatial:
        n, k = image.size(a), f[a]
        if n % k:
            if not crop:
                raise AxesError(
                    f"size {n} along {a} is not divisible by the bin factor {k}; pass crop=True to drop "
                    f"the last {n % k} pixel(s)", image.source)
            logger.info("bin_image: cropping %d pixel(s) along %s", n % k, a)
            index[image.axes.index(a)] = slice(0, n - n % k)
    data = data[tuple(index)]
    block = tuple(f.get(a, 1) for a in image.axes)
    if reduce == "mean" and data.dtype.kind != "f":
        data = data.astype(np.float32)
    out = block_reduce(data, block, func=_REDUCERS[reduce])
    if reduce == "max":
        out = out.astype(image.dtype, copy=False)
    ps = {a: image.pixel_size[a] * f[a] for a in spatial}
    return image.with_data(out, pixel_size=ps)
