"""Per-object measurements in physical units, and per-image summaries.

:func:`measure_objects` turns a label image (2D ``YX`` or 3D ``ZYX``) into a
table with one row per object: position, size and shape descriptors in
micrometres, and intensity statistics for every channel of an
:class:`~opsef_core.image.Image`.  :func:`summarise` reduces such a table to
one row per image (counts, densities, mean/median sizes and intensities).

Shape estimators used (and why):

* 2D perimeter: Crofton perimeter (``skimage.measure.perimeter_crofton``,
  4 directions), which gives a circularity of ~1.00 for a digital disc of
  radius >= 10 px (``skimage.measure.perimeter`` over-estimates a disc's
  perimeter and so under-states circularity: about 0.93-0.98 with
  ``neighborhood=4`` and 0.63-0.74 with ``neighborhood=8`` for radii
  10-40 px).  For anisotropic 2D
  pixels (dy != dx), where scikit-image refuses the Crofton estimator, the
  perimeter is the length of the 0.5 iso-contour (marching squares) of the
  mask smoothed by a Gaussian of sigma 1 px, with the pixel spacing applied.
* 3D surface area: marching cubes (level 0.5) on the object's padded crop,
  smoothed by a Gaussian of sigma :data:`SURFACE_SIGMA` voxels, with the voxel
  spacing, then ``mesh_surface_area``.
* circularity ``4 pi A / L**2`` (2D), sphericity ``pi**(1/3) (6 V)**(2/3) / S``
  (3D).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import AxesError, ConfigError, InputFileError
from .image import Image

__all__ = [
    "add_channel_ratios",
    "add_constant_columns",
    "check_labels",
    "intensity_columns",
    "measure_objects",
    "perimeter_2d",
    "shape_columns",
    "shift_to_image",
    "summarise",
]

log = logging.getLogger(__name__)

#: Gaussian sigma (voxels) applied to an object's binary crop before marching cubes.  On the
#: raw binary mask marching cubes over-estimates a digital ball's surface by 8-17 % (staircase);
#: with sigma 0.6 balls of radius 3-20 voxels (isotropic or 4:1 anisotropic) are within 6 %.
SURFACE_SIGMA = 0.6

_INTENSITY_STATS = ("mean", "total", "min", "max", "std")
_DEFAULT_BY = ("image", "pipeline", "segmenter", "params")


# ---------------------------------------------------------------------- helpers
def check_labels(labels, ndim: Sequence[int] | None = (2, 3), source=None, what: str = "label image") -> np.ndarray:
    """Validate a label image and return it as a numpy integer array (the one label check of opsef).

    Every module that takes label images (measurement, post-processing, evaluation, ROI export,
    training, the study science) calls this, so a label image is accepted or refused the same
    way everywhere.  The rule:

    - integer arrays: accepted when no value is negative (returned as they are, not copied);
    - booleans: one object, returned as int32 (0/1);
    - floats (e.g. 32-bit masks saved by ImageJ): accepted when every value is a whole
      number >= 0 and finite, returned as int64; a fraction (an intensity image, interpolated
      labels), NaN or infinity is refused;
    - anything else (complex, object, strings) is refused.

    Parameters
    ----------
    labels : array-like
        Label image, 0 = background.
    ndim : sequence of int or None
        Allowed numbers of dimensions (None: any).
    source : str or Path, optional
        File named in error messages.
    what : str
        How the array is called in error messages (e.g. ``"ground-truth labels"``).

    Returns
    -------
    ndarray
        Integer labels.

    Raises
    ------
    AxesError
        Wrong number of dimensions.
    InputFileError
        Negative, fractional or non-finite values, or a dtype that cannot hold labels; the
        message names ``what`` (and ``source`` when given).
    """
    arr = np.asarray(labels)
    if ndim is not None and arr.ndim not in tuple(ndim):
        raise AxesError(
            f"{what} must have {' or '.join(str(n) for n in ndim)} dimensions (YX or ZYX), "
            f"got shape {arr.shape}",
            source,
        )
    if arr.dtype == bool:
        return arr.astype(np.int32)
    if arr.dtype.kind == "f":
        if arr.size and not np.isfinite(arr).all():
            raise InputFileError(f"{what} holds NaN or infinite values; labels must be whole numbers >= 0",
                                 source)
        frac = arr != np.floor(arr)
        if frac.any():
            raise InputFileError(
                f"{what} holds non-integer values (e.g. {arr[frac].flat[0]!r}); labels must be whole "
                "numbers >= 0 (is it an intensity image?)", source)
    elif arr.dtype.kind not in "iu":
        raise InputFileError(f"{what} must hold integer labels, got dtype {arr.dtype}", source)
    if arr.size and arr.min() < 0:
        raise InputFileError(f"{what} holds negative labels (min {arr.min()}); labels must be >= 0", source)
    return arr.astype(np.int64) if arr.dtype.kind == "f" else arr


def _spacing(pixel_size, ndim: int, source=None) -> tuple:
    """Spacing tuple for ``ndim`` spatial axes from a float, a sequence or a ``{"Z","Y","X"}`` dict."""
    axes = "ZYX"[-ndim:]
    if pixel_size is None:
        return (1.0,) * ndim
    if isinstance(pixel_size, dict):
        sp = tuple(float({k.upper(): v for k, v in pixel_size.items()}.get(a, 1.0)) for a in axes)
    elif np.isscalar(pixel_size):
        sp = (float(pixel_size),) * ndim
    else:
        sp = tuple(float(v) for v in pixel_size)
        if len(sp) != ndim:
            raise AxesError(f"pixel size {pixel_size!r} has {len(sp)} values for {ndim} spatial axes", source)
    if any(not np.isfinite(v) or v <= 0 for v in sp):
        raise AxesError(f"pixel sizes must be positive, got {sp}", source)
    return sp


def perimeter_2d(mask: np.ndarray, spacing: tuple = (1.0, 1.0)) -> float:
    """Perimeter of a binary 2D object in physical units.

    Crofton perimeter (4 directions) for isotropic pixels.  For anisotropic
    pixels (which ``perimeter_crofton`` does not support) the length of the 0.5
    iso-contour (marching squares) of the mask smoothed by a Gaussian of
    sigma 1 px, with the pixel spacing applied: ~1 % on discs, ~2 % short on
    rectangles (rounded corners); unsmoothed when smoothing erases a tiny object.

    Parameters
    ----------
    mask : ndarray of bool
        2D object mask.
    spacing : (float, float)
        Pixel size along Y and X.

    Returns
    -------
    float
    """
    from skimage.measure import find_contours, perimeter_crofton

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    dy, dx = spacing
    if np.isclose(dy, dx):
        return float(perimeter_crofton(mask, directions=4)) * dy
    from scipy.ndimage import gaussian_filter

    padded = np.pad(mask, 3).astype(np.float64)
    for field in (gaussian_filter(padded, 1.0), padded):  # unsmoothed only if smoothing erased the object
        contours = find_contours(field, 0.5)
        if contours:
            break
    total = 0.0
    for c in contours:
        d = np.diff(c, axis=0) * np.array([dy, dx])
        total += float(np.sqrt((d**2).sum(axis=1)).sum())
    return total


def shape_columns(ndim: int) -> list[str]:
    """Names of the geometric columns :func:`measure_objects` writes for 2D or 3D labels."""
    axes = "zyx"[-ndim:]
    cols = ["label"]
    cols += [f"centroid_{a}" for a in axes] + [f"centroid_{a}_px" for a in axes]
    cols += [f"bbox_min_{a}" for a in axes] + [f"bbox_max_{a}" for a in axes]
    if ndim == 2:
        cols += ["area", "area_px", "perimeter", "equivalent_diameter", "circularity", "solidity",
                 "eccentricity", "major_axis_length", "minor_axis_length"]
    else:
        cols += ["volume", "volume_px", "surface_area", "equivalent_diameter", "sphericity", "solidity",
                 "major_axis_length", "minor_axis_length"]
    return cols


def intensity_columns(channel: str) -> list[str]:
    """Names of the intensity columns written for one channel: ``<channel>_mean``, ``_total``, ...."""
    return [f"{channel}_{s}" for s in _INTENSITY_STATS]


def _channels(image: Image, labels_shape: tuple, intensity_channels, t: int):
    """Yield ``(name, spatial array)`` for the requested channels, checked against the label shape."""
    if image.size("T") > 1 and t is None:
        raise AxesError("image has several time points; pass t= to choose one", image.source)
    if "C" in image.axes:
        names = list(image.channel_names)
        if intensity_channels in ("all", None):
            wanted = list(range(len(names)))
        else:
            if isinstance(intensity_channels, (str, int)):
                intensity_channels = [intensity_channels]
            wanted = [image.channel_index(c) for c in intensity_channels]
        pairs = [(names[i], i) for i in wanted]
    else:
        if intensity_channels not in ("all", None, [], ()):
            req = ([intensity_channels] if isinstance(intensity_channels, (str, int))
                   else list(intensity_channels))
            if any(c not in (0, "intensity") for c in req):
                raise AxesError(f"image has no C axis; cannot select channels {req}", image.source)
        pairs = [("intensity", 0)]
    out = []
    for name, i in pairs:
        arr = image.spatial(t=t or 0, c=i)
        if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[1:] == labels_shape:
            arr = arr[0]  # a single-plane stack measured with 2D labels
        if arr.shape != labels_shape:
            raise AxesError(
                f"label image shape {labels_shape} does not match the image's spatial shape {arr.shape}",
                image.source,
            )
        out.append((name, arr))
    return out


# ---------------------------------------------------------------------- measuring
def measure_objects(
    labels,
    image: Image | None = None,
    intensity_channels="all",
    extra: dict | None = None,
    channel_ratios: Iterable[tuple[str, str]] = (),
    pixel_size=None,
    t: int | None = 0,
    progress: bool = False,
    extra_columns: dict | None = None,
) -> pd.DataFrame:
    """Measure every object of a label image, in physical units.

    Parameters
    ----------
    labels : ndarray
        ``YX`` or ``ZYX`` integer labels, 0 = background.
    image : Image, optional
        Intensity image with the same spatial shape; supplies the pixel size
        and one set of intensity columns per channel (named by channel name;
        ``intensity_*`` when the image has no C axis).
    intensity_channels : "all" or list of str/int
        Channels to measure.
    extra : dict, optional
        Constant columns added to every row (e.g. ``image``, ``pipeline``,
        ``segmenter``, ``params``); they come first in the table.
    channel_ratios : iterable of (str, str)
        Channel pairs ``(a, b)``; adds ``ratio_<a>_<b>`` = mean a / mean b.
    pixel_size : float, sequence or dict, optional
        Used when no image is given (default 1.0 = pixel units).
    t : int
        Time point of the image to measure.
    progress : bool
        Show a progress bar over objects (3D surface areas).
    extra_columns : dict, optional
        Alias of ``extra`` (name used in ``docs/architecture.md``).

    Returns
    -------
    pandas.DataFrame
        One row per object (sorted by label) with the columns of
        :func:`shape_columns`, the intensity columns, ratios and ``extra``.
        Lengths in µm, areas in µm², volumes in µm³ (pixel units when
        uncalibrated); ``*_px`` columns and ``bbox_*`` are in pixels
        (``bbox_max`` exclusive).  An empty label image gives an empty table
        with all the columns.

    Raises
    ------
    AxesError
        Label and image shapes differ, unknown channel, bad pixel size.
    InputFileError
        Labels that are not integers or are negative.
    """
    from scipy import ndimage as ndi
    from skimage.measure import regionprops_table

    if isinstance(intensity_channels, dict):  # measure_objects(labels, image, extra_columns) call style
        extra_columns = {**intensity_channels, **(extra_columns or {})}
        intensity_channels = "all"
    source = image.source if image is not None else None
    labels = check_labels(labels, source=source)
    ndim = labels.ndim
    extra = {**(extra_columns or {}), **(extra or {})}
    if image is not None:
        if pixel_size is not None:
            log.debug("pixel_size ignored: taken from the image")
        ps = dict(image.pixel_size)
        if ndim == 2:
            spacing = (ps.get("Y", 1.0), ps.get("X", 1.0))
        else:
            if "Z" not in image.axes:
                raise AxesError(f"3D labels {labels.shape} for a 2D image ({image.axes})", source)
            spacing = (ps["Z"], ps["Y"], ps["X"])
        channels = _channels(image, labels.shape, intensity_channels, t)
    else:
        spacing = _spacing(pixel_size, ndim)
        channels = []
    axes = "zyx"[-ndim:]
    isotropic = bool(np.allclose(spacing, spacing[0]))

    props = ["label", "area", "centroid", "bbox", "equivalent_diameter_area"]
    if ndim == 2:
        props += ["solidity"] + (["perimeter_crofton"] if isotropic else [])
    else:
        props += ["solidity"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qhull on flat/tiny objects; handled below
        t_ = regionprops_table(labels, spacing=spacing, properties=props)
    n = len(t_["label"])
    lab = np.asarray(t_["label"], dtype=np.int64)
    voxel = float(np.prod(spacing))
    cols: dict[str, np.ndarray] = {"label": lab}
    for i, a in enumerate(axes):
        cols[f"centroid_{a}"] = np.asarray(t_[f"centroid-{i}"], float)
    for i, a in enumerate(axes):
        cols[f"centroid_{a}_px"] = np.asarray(t_[f"centroid-{i}"], float) / spacing[i]
    for i, a in enumerate(axes):
        cols[f"bbox_min_{a}"] = np.asarray(t_[f"bbox-{i}"], np.int64)
    for i, a in enumerate(axes):
        cols[f"bbox_max_{a}"] = np.asarray(t_[f"bbox-{i + ndim}"], np.int64)
    size = np.asarray(t_["area"], float)
    solidity = np.asarray(t_["solidity"], float)
    solidity[~np.isfinite(solidity)] = np.nan  # degenerate convex hull (flat or 1-pixel 3D objects)
    eq_d = np.asarray(t_["equivalent_diameter_area"], float)
    cov_eig = _covariance_eigvals(labels, lab, spacing)  # ascending, per object
    if ndim == 2:
        if isotropic:
            perim = np.asarray(t_["perimeter_crofton"], float)
        else:
            objs = ndi.find_objects(labels)
            perim = np.array([perimeter_2d(labels[objs[l - 1]] == l, spacing) for l in lab], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            circ = np.where(perim > 0, 4 * np.pi * size / perim**2, np.nan)
        cols.update(
            area=size, area_px=np.round(size / voxel), perimeter=perim, equivalent_diameter=eq_d,
            circularity=circ, solidity=solidity,
            eccentricity=np.where(cov_eig[:, -1] > 0, np.sqrt(np.clip(
                1 - cov_eig[:, 0] / np.where(cov_eig[:, -1] > 0, cov_eig[:, -1], 1), 0, 1)), 0.0),
        )
    else:
        surf = _surface_areas(labels, lab, spacing, progress)
        with np.errstate(divide="ignore", invalid="ignore"):
            sph = np.where(surf > 0, np.pi ** (1 / 3) * (6 * size) ** (2 / 3) / surf, np.nan)
        cols.update(
            volume=size, volume_px=np.round(size / voxel), surface_area=surf, equivalent_diameter=eq_d,
            sphericity=sph, solidity=solidity,
        )
    # skimage's definitions from the inertia tensor: 4 sqrt(lambda) in 2D, sqrt(20 lambda) in 3D
    k = 16.0 if ndim == 2 else 20.0
    cols["major_axis_length"] = np.sqrt(k * cov_eig[:, -1])
    cols["minor_axis_length"] = np.sqrt(k * cov_eig[:, 0])

    means: dict[str, np.ndarray] = {}
    for name, arr in channels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            it = regionprops_table(labels, intensity_image=arr, properties=["intensity_mean", "intensity_min",
                                                                            "intensity_max", "intensity_std"])
        total = (np.asarray(ndi.sum_labels(arr.astype(np.float64), labels, index=lab), float) if n
                 else np.zeros(0))
        means[name] = np.asarray(it["intensity_mean"], float)
        cols[f"{name}_mean"] = means[name]
        cols[f"{name}_total"] = total
        cols[f"{name}_min"] = np.asarray(it["intensity_min"], float)
        cols[f"{name}_max"] = np.asarray(it["intensity_max"], float)
        cols[f"{name}_std"] = np.asarray(it["intensity_std"], float)
    df = add_channel_ratios(pd.DataFrame(cols), channel_ratios, channels=list(means), source=source)
    df = add_constant_columns(df, extra)
    df.attrs["spacing"] = tuple(float(s) for s in spacing)
    df.attrs["ndim"] = ndim
    return df


def add_channel_ratios(table: pd.DataFrame, channel_ratios: Iterable[tuple[str, str]], channels=None,
                       source=None) -> pd.DataFrame:
    """Add ``ratio_<a>_<b>`` = ``<a>_mean / <b>_mean`` (NaN where the denominator is 0).

    Parameters
    ----------
    table : DataFrame
        A :func:`measure_objects` table.
    channel_ratios : iterable of (str, str)
        Channel pairs.
    channels : list of str, optional
        The measured channel names (default: every ``<name>_mean`` column).
    source : path, optional
        The image, named in errors.

    Returns
    -------
    DataFrame
        The table with the ratio columns appended (a new frame when ratios are added).

    Raises
    ------
    AxesError
        A channel of a pair was not measured.
    """
    pairs = [tuple(r) for r in channel_ratios]
    if not pairs:
        return table
    if channels is None:
        channels = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean") and not c.startswith("mean_")]
    table = table.copy()
    for a, b in pairs:
        for c in (a, b):
            if c not in channels:
                raise AxesError(f"channel ratio {a!r}/{b!r}: no measured channel {c!r}; measured {list(channels)}",
                                source)
        num, den = table[f"{a}_mean"].to_numpy(float), table[f"{b}_mean"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            table[f"ratio_{a}_{b}"] = np.where(den != 0, num / den, np.nan)
    return table


def shift_to_image(table: pd.DataFrame, origin: Sequence[int], image: Image | None) -> pd.DataFrame:
    """Move the coordinate columns of a block's table to the image the block was cut from.

    ``centroid_<a>_px``, ``bbox_min_<a>`` and ``bbox_max_<a>`` gain ``origin`` (pixels, one per
    spatial axis of the block), ``centroid_<a>`` gains ``origin`` times the pixel size.  Other
    columns are unchanged (they do not depend on where the block lies).
    """
    axes = image.spatial_axes if image is not None else "ZYX"[-len(origin):]
    ps = {a: float(image.pixel_size.get(a, 1.0)) if image is not None else 1.0 for a in axes}
    for a, o in zip(axes, origin):
        low = a.lower()
        for col, shift in ((f"centroid_{low}_px", o), (f"bbox_min_{low}", o), (f"bbox_max_{low}", o),
                           (f"centroid_{low}", o * ps[a])):
            if col in table.columns:
                table[col] = table[col] + shift
    return table


def add_constant_columns(table: pd.DataFrame, extra: dict | None) -> pd.DataFrame:
    """Put constant columns (image, pipeline, segmenter, ...) in front of a measurement table.

    Parameters
    ----------
    table : DataFrame
    extra : dict
        Column name -> value, the same on every row.

    Returns
    -------
    DataFrame
        The table with those columns first (inserted in place; empty tables get object columns).
    """
    n = len(table)
    for k, v in reversed(list((extra or {}).items())):
        table.insert(0, k, pd.Series([v] * n, dtype=object, index=table.index) if not np.isscalar(v) else v)
    if n == 0:  # make sure constant columns exist with a sensible dtype
        for k in extra or {}:
            table[k] = table[k].astype(object)
    return table


def _covariance_eigvals(labels: np.ndarray, lab: np.ndarray, spacing: tuple) -> np.ndarray:
    """Eigenvalues (ascending) of each object's covariance of pixel-centre coordinates, in µm².

    Vectorised equivalent of regionprops' inertia-tensor eigenvalues (2D: the
    same values; 3D: inertia eigenvalues are trace - these), used for the axis
    lengths and eccentricity without a per-object Python loop.
    """
    from scipy import ndimage as ndi

    nd = labels.ndim
    if not len(lab):
        return np.zeros((0, nd))
    count = np.asarray(ndi.sum_labels(np.ones(labels.shape, np.float64), labels, lab))
    grids = np.indices(labels.shape, dtype=np.float64)
    first = [np.asarray(ndi.sum_labels(grids[i], labels, lab)) / count for i in range(nd)]
    cov = np.zeros((len(lab), nd, nd))
    for i in range(nd):
        for j in range(i, nd):
            m = np.asarray(ndi.sum_labels(grids[i] * grids[j], labels, lab)) / count - first[i] * first[j]
            cov[:, i, j] = cov[:, j, i] = m * spacing[i] * spacing[j]
    return np.clip(np.linalg.eigvalsh(cov), 0, None)


def _surface_areas(labels: np.ndarray, lab: np.ndarray, spacing: tuple, progress: bool) -> np.ndarray:
    """Marching-cubes surface area of each 3D object (padded, smoothed crop; physical spacing)."""
    from scipy import ndimage as ndi
    from skimage.measure import marching_cubes, mesh_surface_area
    from tqdm.auto import tqdm

    out = np.zeros(len(lab), float)
    if not len(lab):
        return out
    objs = ndi.find_objects(labels)
    for i, l in enumerate(tqdm(lab, desc="surface areas", disable=not progress, leave=False)):
        crop = np.pad(labels[objs[l - 1]] == l, 3).astype(np.float32)
        smooth = ndi.gaussian_filter(crop, SURFACE_SIGMA)
        field = smooth if smooth.max() > 0.5 else crop  # tiny objects: unsmoothed
        verts, faces, _, _ = marching_cubes(field, 0.5, spacing=spacing)
        out[i] = mesh_surface_area(verts, faces)
    return out


# ---------------------------------------------------------------------- summaries
def summarise(df: pd.DataFrame, image_area=None, by: Sequence[str] = _DEFAULT_BY) -> pd.DataFrame:
    """Reduce a measurement table to one row per image (and pipeline/segmenter/params).

    Parameters
    ----------
    df : DataFrame
        Output of :func:`measure_objects` (possibly concatenated over images).
    image_area : float or dict, optional
        Area (2D, µm²) or volume (3D, µm³) of the image; a dict maps the
        first grouping column's values (normally ``image``) to it.  When given,
        ``density`` is objects per mm² (2D) or per mm³ (3D).
    by : sequence of str
        Grouping columns; those absent from ``df`` are ignored.

    Returns
    -------
    DataFrame
        ``n_objects``, ``density`` (NaN without ``image_area``), mean and
        median of the size columns (``area``/``volume``,
        ``equivalent_diameter``, ``circularity``/``sphericity``) and the mean
        of every ``<channel>_mean`` intensity column.
    """
    by = [c for c in by if c in df.columns]
    is3d = "volume" in df.columns
    size_cols = [c for c in (("volume", "equivalent_diameter", "sphericity", "surface_area") if is3d
                             else ("area", "equivalent_diameter", "circularity", "perimeter"))
                 if c in df.columns]
    int_cols = [c for c in df.columns if c.endswith("_mean") and not c.startswith("mean_")]
    to_mm = 1e-9 if is3d else 1e-6

    def _reduce(g: pd.DataFrame) -> dict:
        row = {"n_objects": len(g)}
        for c in size_cols:
            v = pd.to_numeric(g[c], errors="coerce")
            row[f"mean_{c}"] = float(v.mean()) if len(v) else np.nan
            row[f"median_{c}"] = float(v.median()) if len(v) else np.nan
        for c in int_cols:
            row[f"mean_{c}"] = float(pd.to_numeric(g[c], errors="coerce").mean()) if len(g) else np.nan
        return row

    rows = []
    if by:
        for key, g in df.groupby(by, sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(by, key)), **_reduce(g)})
    elif len(df):
        rows.append(_reduce(df))
    columns = list(by) + ["n_objects", "density"]
    columns += [f"{s}_{c}" for c in size_cols for s in ("mean", "median")]
    columns += [f"mean_{c}" for c in int_cols]
    out = pd.DataFrame(rows, columns=[c for c in columns if c != "density"])
    dens = np.full(len(out), np.nan)
    if image_area is not None and len(out):
        if isinstance(image_area, dict):
            if not by:
                raise ConfigError("image_area given per image but the table has no grouping column")
            missing = set(out[by[0]]) - set(image_area)
            if missing:
                raise ConfigError(f"image_area has no value for {sorted(map(str, missing))}")
            areas = out[by[0]].map(image_area).astype(float).to_numpy()
        else:
            areas = np.full(len(out), float(image_area))
        if np.any(areas <= 0):
            raise ConfigError(f"image_area must be positive, got {image_area!r}")
        dens = out["n_objects"].to_numpy() / (areas * to_mm)
    out.insert(len(by) + 1, "density", dens)
    return out
