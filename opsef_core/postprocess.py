"""Post-processing of label images: filters, border removal, hole filling, classes from a mask.

Raw labels are never modified in place: every function returns a new array,
so the run engine keeps the raw model output and re-applies filters without
re-segmenting.  Filtered label images keep the original label values (so
they still match the measurement table); call :func:`relabel` for
sequential labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import AxesError, ConfigError, InputFileError
from .image import Image
from .measure import check_labels, measure_objects

__all__ = [
    "ClassMaskConfig",
    "PostprocessConfig",
    "apply_postprocess",
    "class_labels",
    "classify_by_mask",
    "fill_holes",
    "filter_objects",
    "keep_largest",
    "mask_from_channel",
    "relabel",
    "remove_border_objects",
    "remove_large",
    "remove_small",
    "smooth_largest",
]

log = logging.getLogger(__name__)


def _keep_only(labels: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """Copy of ``labels`` with every object not in ``keep`` set to 0."""
    out = labels.copy()
    out[~np.isin(labels, np.asarray(list(keep), dtype=labels.dtype))] = 0
    return out


# ---------------------------------------------------------------------- filters
def filter_objects(labels, ranges: dict, image: Image | None = None, table: pd.DataFrame | None = None):
    """Keep the objects whose measurements lie inside given ranges.

    Parameters
    ----------
    labels : ndarray
        ``YX`` or ``ZYX`` labels.
    ranges : dict
        ``{column: (min, max)}`` on any column of
        :func:`~opsef_core.measure.measure_objects` (``area``, ``perimeter``,
        ``circularity``, ``solidity``, ``eccentricity``, ``volume``,
        ``surface_area``, ``sphericity``, ``<channel>_mean``,
        ``<channel>_total``, ...).  Bounds are inclusive; ``None`` leaves a
        side open.  An object whose value is NaN fails any bounded range.
    image : Image, optional
        Intensity image (pixel size, intensity columns); used when ``table``
        is not given.
    table : DataFrame, optional
        Measurements of ``labels`` (as from ``measure_objects``), to avoid
        measuring twice.

    Returns
    -------
    labels : ndarray
        New label image with the rejected objects set to 0 (label values kept).
    kept : DataFrame
        The rows of the table for the kept objects.

    Raises
    ------
    ConfigError
        A range names an unknown column or has min > max.
    """
    # tolerate the older positional order filter_objects(labels, image, ranges)
    if isinstance(ranges, Image) and (isinstance(image, dict) or image is None):
        ranges, image = (image or {}), ranges
    labels = check_labels(labels, source=getattr(image, "source", None))
    if table is None:
        table = measure_objects(labels, image)
    ranges = dict(ranges or {})
    mask = np.ones(len(table), bool)
    for col, bounds in ranges.items():
        if col not in table.columns:
            raise ConfigError(
                f"filter on unknown measurement {col!r}; available: {sorted(map(str, table.columns))}"
            )
        try:
            lo, hi = bounds
        except (TypeError, ValueError):
            raise ConfigError(
                f"range for {col!r} must be (min, max) with None for an open side, got {bounds!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"range for {col!r} has min {lo} > max {hi}")
        v = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        if lo is not None:
            mask &= v >= lo
        if hi is not None:
            mask &= v <= hi
    kept = table[mask].reset_index(drop=True)
    log.debug("filter_objects kept %d of %d objects", len(kept), len(table))
    return _keep_only(labels, kept["label"].astype(int).tolist()), kept


def remove_border_objects(labels, axes: str = "YX", buffer: int = 0, *, origin: Sequence[int] | None = None,
                          image_shape: Sequence[int] | None = None) -> np.ndarray:
    """Remove objects touching the image border.

    Parameters
    ----------
    labels : ndarray
        ``YX`` or ``ZYX`` labels.
    axes : str
        Which borders count: ``"YX"`` (default; for a stack, objects cut by the
        first/last z slice are kept) or ``"ZYX"`` (all faces).
    buffer : int
        Width in pixels of the border band (0 = the outermost pixels only).
    origin, image_shape : sequence of int, optional
        ``labels`` is a block of a larger image starting at ``origin`` with shape
        ``image_shape``: the borders are that image's (a tile of a streamed run).

    Returns
    -------
    ndarray
    """
    from scipy import ndimage as ndi

    labels = check_labels(labels)
    all_axes = "ZYX"[-labels.ndim:]
    axes = str(axes).upper()
    if not axes or any(a not in all_axes for a in axes):
        raise AxesError(f"border axes {axes!r} must be letters of the label image's axes {all_axes!r}")
    origin = (0,) * labels.ndim if origin is None else tuple(int(o) for o in origin)
    shape = labels.shape if image_shape is None else tuple(int(n) for n in image_shape)
    w = int(buffer) + 1
    dims = [all_axes.index(a) for a in axes]
    # an object has a pixel in the band [0, w) or [n - w, n) of an axis iff its bounding box reaches it
    touching = [k for k, sl in enumerate(ndi.find_objects(labels), start=1)
                if sl is not None and any(sl[d].start + origin[d] < w or sl[d].stop + origin[d] > shape[d] - w
                                          for d in dims)]
    out = labels.copy()
    if touching:
        out[np.isin(labels, touching)] = 0
    return out


def _object_rules(labels: np.ndarray, config: PostprocessConfig, **border) -> np.ndarray:
    """The post-processing rules on one object at a time, in order: holes, size limits, border."""
    out = labels
    if config.fill_holes:
        out = fill_holes(out)
    if config.min_size:
        out = remove_small(out, config.min_size)
    if config.max_size is not None:
        out = remove_large(out, config.max_size)
    if config.remove_border:
        out = remove_border_objects(out, axes=config.border_axes, **border)
    return out


def fill_holes(labels) -> np.ndarray:
    """Fill the holes of every object (2D holes in 2D, enclosed cavities in 3D).

    Only background pixels are filled: an object nested in another's hole is kept.

    Returns
    -------
    ndarray
    """
    from scipy import ndimage as ndi

    labels = check_labels(labels)
    out = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        lab = i + 1
        crop = labels[sl]
        filled = ndi.binary_fill_holes(crop == lab)
        target = out[sl]
        target[filled & (crop == 0)] = lab
    return out


def _sizes(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel())


def remove_small(labels, min_size: int) -> np.ndarray:
    """Remove objects with fewer than ``min_size`` pixels (voxels in 3D).

    Returns
    -------
    ndarray
    """
    labels = check_labels(labels)
    sizes = _sizes(labels)
    small = np.flatnonzero((sizes < int(min_size)) & (sizes > 0))
    small = small[small > 0]
    out = labels.copy()
    if small.size:
        out[np.isin(labels, small)] = 0
    return out


def remove_large(labels, max_size: int) -> np.ndarray:
    """Remove objects with more than ``max_size`` pixels (voxels in 3D).

    Returns
    -------
    ndarray
    """
    labels = check_labels(labels)
    sizes = _sizes(labels)
    big = np.flatnonzero(sizes > int(max_size))
    big = big[big > 0]
    out = labels.copy()
    if big.size:
        out[np.isin(labels, big)] = 0
    return out


def relabel(labels) -> np.ndarray:
    """Sequential labels 1..n in the order of the original values (``relabel_sequential``)."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(check_labels(labels).copy())[0]


def _largest_id(labels: np.ndarray) -> int:
    """The label value of the object with the most pixels (0 when there is none; ties: the lower value)."""
    sizes = _sizes(labels)
    if sizes.size <= 1:
        return 0
    sizes[0] = 0
    return int(np.argmax(sizes)) if sizes.any() else 0


def keep_largest(labels) -> np.ndarray:
    """Keep only the object with the most pixels (voxels); the single-object rule.

    Ties go to the lower label value.  An empty label image is returned as a copy.

    Returns
    -------
    ndarray
        Same dtype; the kept object keeps its label value.
    """
    labels = check_labels(labels)
    ident = _largest_id(labels)
    if ident == 0:
        return labels.copy()
    return np.where(labels == ident, labels, 0).astype(labels.dtype)


def smooth_largest(labels, radius: int = 0) -> np.ndarray:
    """The outer contour of the largest object: its holes filled, opened with a disk (ball in 3D).

    The rule of the single-spheroid study (one spheroid among debris): the largest object
    (most pixels, ties to the lower label value) gets its holes filled and, with
    ``radius > 0``, a binary opening with a disk of that radius that cuts off thin spurs of
    debris attached to it; the largest connected component of the result is kept (when the
    opening would remove everything, the filled object is kept).  The other objects are kept
    (minus the pixels the smoothed object now covers), so an object count (e.g. the
    *ambiguous spheroid* call) does not change; combine with :func:`keep_largest` to drop them.

    Parameters
    ----------
    labels : ndarray
        ``YX`` (or ``ZYX``) label image.
    radius : int
        Opening radius in pixels (0 = holes filled only).

    Returns
    -------
    ndarray
        Label image of the same dtype.
    """
    from scipy import ndimage as ndi
    from skimage.measure import label as cc_label
    from skimage.morphology import ball, disk, opening

    lab = check_labels(labels)
    ident = _largest_id(lab)
    if ident == 0:
        return lab.copy()
    filled = ndi.binary_fill_holes(lab == ident)
    smooth = filled
    if radius and int(radius) > 0:
        opened = opening(filled, (disk if lab.ndim == 2 else ball)(int(radius)))
        if opened.any():
            comp = cc_label(opened, connectivity=lab.ndim)
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            smooth = comp == int(np.argmax(sizes))
    out = np.where(lab == ident, 0, lab)
    out[smooth] = ident
    return out.astype(lab.dtype)


# ---------------------------------------------------------------------- masks & classes
_THRESHOLDS = ("otsu", "li", "triangle", "yen", "mean", "isodata")


def mask_from_channel(
    array,
    method: str | float = "otsu",
    factor: float = 1.0,
    sigma: float = 1.0,
    opening: int = 0,
    closing: int = 0,
    fill: bool = True,
) -> np.ndarray:
    """Binary mask from an intensity channel: smoothing, threshold x factor, morphology.

    OpSeF's "mask from a second channel".

    Parameters
    ----------
    array : ndarray
        ``YX`` or ``ZYX`` intensities.
    method : str or float
        Threshold method (``otsu``, ``li``, ``triangle``, ``yen``, ``mean``,
        ``isodata``; from ``skimage.filters``) or a fixed intensity value.
    factor : float
        Multiplies the threshold (OpSeF's "Otsu x factor").
    sigma : float
        Gaussian smoothing before thresholding (0 = none).
    opening, closing : int
        Radii of a binary opening then closing (disk in 2D, ball in 3D; 0 = skip).
    fill : bool
        Fill holes of the mask.

    Returns
    -------
    ndarray of bool
    """
    from scipy import ndimage as ndi
    from skimage import filters, morphology

    a = np.asarray(array, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise AxesError(f"mask_from_channel needs a YX or ZYX array, got shape {a.shape}")
    if sigma:
        a = filters.gaussian(a, sigma=sigma, preserve_range=True)
    if isinstance(method, str):
        if method not in _THRESHOLDS:
            raise ConfigError(f"unknown threshold method {method!r}; use one of {_THRESHOLDS} or a number")
        if np.ptp(a) == 0:
            thr = a.flat[0] if a.size else 0.0
        else:
            thr = getattr(filters, f"threshold_{method}")(a)
    else:
        thr = float(method)
    mask = a > thr * factor
    fp = morphology.disk if a.ndim == 2 else morphology.ball
    if opening:
        mask = ndi.binary_opening(mask, structure=fp(int(opening)))
    if closing:
        # pad so that closing does not erode at the image border
        r = int(closing)
        mask = ndi.binary_closing(np.pad(mask, r), structure=fp(r))[tuple([slice(r, -r)] * a.ndim)]
    if fill:
        mask = ndi.binary_fill_holes(mask)
    return mask


def classify_by_mask(
    labels,
    mask,
    rule: Literal["centroid", "majority"] = "centroid",
    class_names: Sequence[str] = ("outside", "inside"),
) -> pd.DataFrame:
    """Assign each object the class of a mask (or class map) at its position.

    Parameters
    ----------
    labels : ndarray
        ``YX`` or ``ZYX`` labels.
    mask : ndarray
        Boolean mask, or an integer class map with values ``0..len(class_names)-1``,
        same shape as ``labels``.
    rule : {"centroid", "majority"}
        ``centroid``: the mask value at the object's (rounded) centroid — note
        the centroid of a curved object can lie outside the object;
        ``majority``: the most frequent mask value over the object's pixels
        (ties go to the lower class value).
    class_names : sequence of str
        Name of each mask value.

    Returns
    -------
    DataFrame
        Columns ``label``, ``class`` and ``fraction`` (share of the object's
        pixels whose mask value equals the assigned class).
    """
    from scipy import ndimage as ndi

    labels = check_labels(labels)
    m = np.asarray(mask)
    if m.shape != labels.shape:
        raise AxesError(f"class mask shape {m.shape} differs from the label image shape {labels.shape}")
    if m.dtype == bool:
        m = m.astype(np.int64)
    elif not np.issubdtype(m.dtype, np.integer):
        raise InputFileError(f"class mask must be boolean or integer classes, got dtype {m.dtype}")
    k = len(class_names)
    if m.size and (m.min() < 0 or m.max() >= k):
        raise ConfigError(f"class mask values {int(m.min())}..{int(m.max())} but only {k} class names given")
    if rule not in ("centroid", "majority"):
        raise ConfigError(f"unknown classification rule {rule!r}; use 'centroid' or 'majority'")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not ids.size:
        return pd.DataFrame({"label": pd.Series([], dtype=np.int64), "class": pd.Series([], dtype=object),
                             "fraction": pd.Series([], dtype=float)})
    # counts[i, c]: pixels of object ids[i] with class c
    counts = np.stack([ndi.sum_labels(m == c, labels, index=ids) for c in range(k)], axis=1)
    if rule == "majority":
        cls = np.argmax(counts, axis=1)
    else:
        cents = np.asarray(ndi.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, ids))
        idx = np.clip(np.rint(cents).astype(int), 0, np.array(labels.shape) - 1)
        cls = m[tuple(idx.T)]
    frac = counts[np.arange(len(ids)), cls] / counts.sum(axis=1)
    return pd.DataFrame({"label": ids.astype(np.int64), "class": [class_names[c] for c in cls],
                         "fraction": frac})


def class_labels(labels, classes: pd.DataFrame) -> dict:
    """Split a label image by class.

    Parameters
    ----------
    labels : ndarray
    classes : DataFrame
        With ``label`` and ``class`` columns (from :func:`classify_by_mask`).

    Returns
    -------
    dict
        ``{class name: label image holding only that class's objects}``.
    """
    labels = check_labels(labels)
    return {
        name: _keep_only(labels, g["label"].astype(int).tolist())
        for name, g in classes.groupby("class", sort=False)
    }


# ---------------------------------------------------------------------- config
class ClassMaskConfig(BaseModel):
    """Where the class mask comes from and how objects are assigned to classes.

    Exactly one of ``channel`` (a channel of the image, thresholded by
    :func:`mask_from_channel`), ``file`` (one mask/class-map TIFF of the
    image's spatial shape for every image; with two class names any value > 0
    is the second class, with more names the file is a class map 0..n-1) or
    ``folder`` (one such mask per image, ``<item><suffix>.tif`` matched by the
    run item's name, e.g. ``plate__wellA__t002_mask.tif``, else by the image
    file's stem) is given.  A relative ``file``/``folder`` resolves against the
    config's folder; an image without its mask fails (it is never left
    unclassified in silence).
    """

    model_config = ConfigDict(extra="forbid")

    channel: str | int | None = None
    file: str | None = None
    folder: str | None = None
    suffix: str = ""
    method: str | float = "otsu"
    factor: float = 1.0
    sigma: float = 1.0
    opening: int = Field(0, ge=0)
    closing: int = Field(0, ge=0)
    fill: bool = True
    rule: Literal["centroid", "majority"] = "centroid"
    class_names: list[str] = Field(default_factory=lambda: ["outside", "inside"], min_length=2)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.channel, self.file, self.folder)) != 1:
            raise ValueError("class_mask needs exactly one of 'channel', 'file' or 'folder'")
        return self


class PostprocessConfig(BaseModel):
    """Post-processing applied after segmentation (raw labels are kept unchanged).

    Order: fill holes, size limits (pixels/voxels), border removal, the largest object's
    outer contour (``smooth_radius``), the largest object alone (``keep_largest``),
    measurement ranges, classes.

    ``smooth_radius`` (pixels of the input grid; 0 = holes filled only, None = off) and
    ``keep_largest`` are the single-object rule (one spheroid per image among debris):
    :func:`smooth_largest` and :func:`keep_largest`.
    """

    model_config = ConfigDict(extra="forbid")

    min_size: int | None = Field(None, ge=0)
    max_size: int | None = Field(None, ge=0)
    remove_border: bool = False
    border_axes: str = "YX"
    fill_holes: bool = False
    smooth_radius: int | None = Field(None, ge=0)
    keep_largest: bool = False
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    class_mask: ClassMaskConfig | None = None


def _load_mask_file(path: str, shape: tuple) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputFileError("class mask file not found", p)
    try:
        from .io import read_labels  # type: ignore[attr-defined]

        arr = np.asarray(read_labels(p))
    except ImportError:
        import tifffile

        try:
            arr = np.asarray(tifffile.imread(p))
        except Exception as exc:
            raise InputFileError(f"cannot read class mask: {exc}", p) from exc
    arr = np.squeeze(arr)
    if arr.shape != shape:
        raise InputFileError(f"class mask shape {arr.shape} differs from the label image shape {shape}", p)
    return arr


#: post-processing options that need the whole label image (one largest object, an image-wide class mask)
WHOLE_IMAGE_OPTIONS = ("smooth_radius", "keep_largest", "class_mask")


def whole_image_options(config) -> list[str]:
    """The options of a :class:`PostprocessConfig` that cannot run tile by tile (see
    :func:`postprocess_owned`); empty when every option is object by object."""
    config = config if isinstance(config, PostprocessConfig) else PostprocessConfig.model_validate(config or {})
    return [k for k in WHOLE_IMAGE_OPTIONS if getattr(config, k) not in (None, False)]


def postprocess_owned(labels: np.ndarray, image: Image | None, config, *, origin: Sequence[int],
                      shape: Sequence[int]) -> np.ndarray:
    """Post-process the objects of one tile of a larger label image, as :func:`apply_postprocess`
    does on the whole image.

    ``labels`` holds only the objects this tile owns (each whole; others 0).  Every option of
    :class:`PostprocessConfig` except :data:`WHOLE_IMAGE_OPTIONS` is a rule on one object at a time
    (holes, size, border contact, measurement ranges), so applying it per tile gives each object
    its whole-image fate.  Border contact is judged against the whole image (``origin`` and
    ``shape`` place the tile in it); ``image`` is the input's block under the tile (pixel size,
    intensities for ``ranges``).

    Raises
    ------
    ConfigError
        An option of :data:`WHOLE_IMAGE_OPTIONS` is set.
    """
    config = config if isinstance(config, PostprocessConfig) else PostprocessConfig.model_validate(config or {})
    bad = whole_image_options(config)
    if bad:
        raise ConfigError(f"postprocess {', '.join(bad)} need(s) the whole label image; they cannot run tile by tile")
    out = _object_rules(check_labels(labels, source=getattr(image, "source", None)).copy(), config,
                        origin=origin, image_shape=shape)
    if config.ranges:
        from .measure import measure_objects, shift_to_image

        table = shift_to_image(measure_objects(out, image), origin, image)
        out, _ = filter_objects(out, config.ranges, image=image, table=table)
    return out


def apply_postprocess(labels, image: Image | None, config, *,
                      class_mask_file: str | Path | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Apply a :class:`PostprocessConfig` to raw labels (used by the run engine).

    Parameters
    ----------
    labels : ndarray
        Raw labels (not modified).
    image : Image, optional
        The segmented image (pixel size, intensities, class-mask channel).
    config : PostprocessConfig or dict
    class_mask_file : str or Path, optional
        This image's mask when the class mask comes from a ``folder`` (the run engine
        matches it to the item).

    Returns
    -------
    labels : ndarray
        Post-processed labels (original label values kept).
    table : DataFrame
        Measurements of the kept objects, with a ``class`` column when a
        class mask is configured.

    Raises
    ------
    ConfigError
        Invalid config.
    """
    if not isinstance(config, PostprocessConfig):
        try:
            config = PostprocessConfig.model_validate(config or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: "
                + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors()
            )
            raise ConfigError(f"invalid postprocess config: {problems}") from None
    source = getattr(image, "source", None)
    out = _object_rules(check_labels(labels, source=source).copy(), config)
    if config.smooth_radius is not None:
        out = smooth_largest(out, config.smooth_radius)
    if config.keep_largest:
        out = keep_largest(out)
    table = measure_objects(out, image)
    if config.ranges:
        out, table = filter_objects(out, config.ranges, image=image, table=table)
    if config.class_mask is not None:
        cm = config.class_mask
        mask_file = cm.file if cm.file is not None else class_mask_file
        if cm.folder is not None and class_mask_file is None:
            raise ConfigError("class_mask.folder: no mask file given for this image", cm.folder)
        if mask_file is not None:
            mask = _load_mask_file(str(mask_file), out.shape)
            if len(cm.class_names) == 2:
                mask = mask > 0  # a binary mask file (0/1, 0/255, ...)
            elif mask.max() >= len(cm.class_names):
                raise InputFileError(
                    f"class map values reach {int(mask.max())} but only {len(cm.class_names)} class "
                    "names are configured", mask_file)
        else:
            if image is None:
                raise ConfigError("class_mask from a channel needs the image")
            arr = image.spatial(c=cm.channel)
            if arr.shape != out.shape and arr.ndim == out.ndim + 1 and arr.shape[0] == 1:
                arr = arr[0]
            mask = mask_from_channel(arr, cm.method, cm.factor, cm.sigma, cm.opening, cm.closing, cm.fill)
        classes = classify_by_mask(out, mask, rule=cm.rule, class_names=cm.class_names)
        table = table.merge(classes.rename(columns={"fraction": "class_fraction"}), on="label", how="left")
    return out, table
