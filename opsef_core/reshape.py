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


def _factors(image: Image, factors, what: str = "scale") -> dict:
    """Factor per spatial axis: a number applies to Y and X (Z untouched); a mapping names axes.

    A mapping may name an axis the image lacks only with factor 1 (so one pipeline fits 2D and
    3D images alike).
    """
    spatial = image.spatial_axes
    if isinstance(factors, dict):
        f = {str(k).upper(): float(v) for k, v in factors.items()}
        bad = sorted(a for a, v in f.items() if a not in spatial and v != 1)
        if bad:
            raise AxesError(f"{what} factors given for {bad}, but the spatial axes are {spatial}", image.source)
    else:
        f = {"Y": float(factors), "X": float(factors)}
    for k, v in f.items():
        if not np.isfinite(v) or v <= 0:
            raise ConfigError(f"{what} factor along {k} must be positive, got {v}")
    return {a: f.get(a, 1.0) for a in spatial}


def _per_spatial(image: Image, func) -> np.ndarray:
    """``func`` applied to each spatial (Z)YX array (one T, one C), read one at a time (dask-friendly)."""
    lead = tuple(image.size(a) for a in image.axes if a in "TC")
    out = None
    for idx in np.ndindex(*lead):
        res = np.asarray(func(np.asarray(image.data[idx])))
        if out is None:
            out = np.empty(lead + res.shape, dtype=res.dtype)
        out[idx] = res
    return out


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """float64 where float32 would not hold every value exactly (float64, 32/64-bit integers)."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def rescale(image: Image, factors: float | dict, order: int = 1, preserve_dtype: bool = True,
            anti_aliasing: bool | None = None) -> Image:
    """Resample the spatial axes by explicit factors (the one resampling code path of opsef).

    The ``rescale`` preprocessing step calls this function.

    Parameters
    ----------
    image : Image
        Any image (numpy or dask data, read one T/C array at a time); T and C are kept as they are.
    factors : float or dict
        New size = round(old size x factor) (Python rounding, as scikit-image).  A float scales
        Y and X only (Z untouched: volumes are usually anisotropic); a dict such as
        ``{"Z": 2.0, "Y": 0.5, "X": 0.5}`` gives each spatial axis explicitly (missing axes 1;
        an axis the image lacks may be named with factor 1 only).
    order : int
        Spline order (0 nearest, 1 linear, 3 cubic).
    preserve_dtype : bool
        True (default): the output has the input's dtype; integers are rounded to nearest and
        clipped to the dtype's range (never wrapped, as
        :func:`opsef_core.preprocess.dtypes.cast_like`), booleans are values > 0.5.
        False: float32 (float64 input stays float64).
    anti_aliasing : bool, optional
        Gaussian pre-filter (sigma ``(1/factor - 1) / 2`` per shrunk axis) when shrinking.
        Default: on when an axis shrinks and ``order > 0``; never for nearest neighbour, so
        ``order=0`` only picks input values.

    Returns
    -------
    Image
        Pixel sizes are ``old x old_size / new_size`` (= old / factor up to rounding), so the
        physical extent is kept.

    Raises
    ------
    AxesError
        Factors for axes the image lacks, or a factor that leaves no pixel.
    ConfigError
        Non-positive factors.

    Notes
    -----
    Boundary: ``skimage.transform.resize`` with ``mode="edge"``: values beyond the border (up
    to half a pixel when up-scaling, and under the anti-aliasing Gaussian) repeat the edge pixel,
    as the ``gaussian`` and ``median`` steps do (scipy ``"nearest"``).  No mirrored interior
    structure and no dark frame.  Results are clipped to the input's value range
    (scikit-image's ``clip=True``: cubic overshoot never leaves it).  The arithmetic is
    float32 for inputs of at most 16-bit integers and float16/float32, float64 for float64
    and 32/64-bit integers (exact there).
    """
    from skimage.transform import resize

    f = _factors(image, factors)
    spatial = image.spatial_axes
    out_spatial = tuple(int(round(image.size(a) * f[a])) for a in spatial)
    for a, n in zip(spatial, out_spatial):
        if n < 1:
            raise AxesError(f"rescale factor {f[a]} along {a} leaves no pixel of {image.size(a)}", image.source)
    if anti_aliasing is None:
        anti_aliasing = order > 0 and any(n < image.size(a) for n, a in zip(out_spatial, spatial))
    in_dtype = np.dtype(image.dtype)
    work = _work_dtype(in_dtype)
    if preserve_dtype:
        out_dtype = in_dtype
    else:
        out_dtype = np.dtype(np.float64) if in_dtype == np.float64 else np.dtype(np.float32)

    def one(arr: np.ndarray) -> np.ndarray:
        r = resize(arr.astype(work, copy=False), out_spatial, order=order, mode="edge",
                   preserve_range=True, anti_aliasing=anti_aliasing)
        if out_dtype.kind == "b":
            return r > 0.5
        if out_dtype.kind in "iu":
            info = np.iinfo(out_dtype)
            return np.clip(np.rint(r), info.min, info.max).astype(out_dtype)
        return r.astype(out_dtype, copy=False)

    out = _per_spatial(image, one)
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


_REDUCERS = ("mean", "sum", "max")


def bin_image(image: Image, factors: int | dict, reduce: str = "mean", crop: bool = False) -> Image:
    """Bin spatial axes by integer factors (block reduce; the one binning code path of opsef).

    The ``bin`` preprocessing step calls this function with ``crop=True``.

    Parameters
    ----------
    image : Image
        Any image (numpy or dask data, read one T/C array at a time); T and C are kept.
    factors : int or dict
        Integer bin size: one number for Y and X (Z untouched), or per spatial axis, e.g.
        ``{"Z": 2, "Y": 2, "X": 2}``; missing axes are 1 (an axis the image lacks may be named
        with factor 1 only).
    reduce : {"mean", "sum", "max"}
        How a block's pixels are combined.  Output dtype: ``mean`` float32 (float64 stays
        float64), averaged in float64; ``sum`` the narrowest dtype that holds the sum exactly
        (:func:`opsef_core.preprocess.dtypes.sum_dtype`: uint16 x 4 -> uint32; floats float32,
        float64 stays); ``max`` the input dtype.
    crop : bool
        When a size is not divisible by its factor: False (default) raises, True drops the
        remainder at the high end (logged), so the output has ``size // factor`` pixels.

    Returns
    -------
    Image
        Pixel sizes multiplied by the factors.

    Raises
    ------
    AxesError
        Factors for absent axes, a factor larger than the size, or sizes not divisible (with
        ``crop=False``).
    ConfigError
        Unknown ``reduce`` or non-positive / non-integer factors.
    """
    from skimage.measure import block_reduce

    from .preprocess.dtypes import sum_dtype

    if reduce not in _REDUCERS:
        raise ConfigError(f"reduce must be one of {list(_REDUCERS)}, got {reduce!r}")
    spatial = image.spatial_axes
    raw = factors if isinstance(factors, dict) else {"Y": factors, "X": factors}
    for k, v in raw.items():
        if isinstance(v, bool) or not float(v).is_integer() or int(v) < 1:
            raise ConfigError(f"bin factor along {str(k).upper()} must be a positive integer, got {v}")
    f = {a: int(v) for a, v in _factors(image, raw, "bin").items()}
    index = []
    for a in spatial:
        n, k = image.size(a), f[a]
        if k > n:
            raise AxesError(f"bin factor {k} along {a} exceeds the image size {n} ({image.name!r})",
                            image.source)
        if n % k:
            if not crop:
                raise AxesError(
                    f"size {n} along {a} is not divisible by the bin factor {k}; pass crop=True to drop "
                    f"the last {n % k} pixel(s)", image.source)
            logger.info("bin_image: cropping %d pixel(s) along %s", n % k, a)
        index.append(slice(0, n - n % k))
    block = tuple(f[a] for a in spatial)
    in_dtype = np.dtype(image.dtype)
    if reduce == "max":
        out_dtype, func, kw = in_dtype, np.max, None
    elif reduce == "sum":
        out_dtype, func = sum_dtype(in_dtype, int(np.prod(block))), np.sum
        kw = {"dtype": out_dtype if out_dtype.kind in "iu" else np.float64}
    else:
        out_dtype = np.dtype(np.float64) if in_dtype == np.float64 else np.dtype(np.float32)
        func, kw = np.mean, {"dtype": np.float64}

    def one(arr: np.ndarray) -> np.ndarray:
        res = block_reduce(arr[tuple(index)], block, func=func, func_kwargs=kw)
        return res.astype(out_dtype, copy=False)

    out = _per_spatial(image, one)
    ps = {a: image.pixel_size[a] * f[a] for a in spatial}
    return image.with_data(out, pixel_size=ps)
