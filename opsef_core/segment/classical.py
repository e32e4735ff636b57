"""Classical segmentation: smoothing, global threshold, distance-transform watershed.

No network: :meth:`ClassicalSegmenter.predict` computes the smoothed,
percentile-normalised intensity map (a foreground "probability" in [0, 1]);
:meth:`ClassicalSegmenter.decode` thresholds it, fills holes, computes the
Euclidean distance transform of the foreground (anisotropic: physical spacing
of the image), seeds one object per h-maximum of that distance and floods the
foreground by a watershed.

The distance transform depends on the threshold, a decoding parameter, so it
is computed in ``decode`` (milliseconds for a 512x512 image); the
prediction keeps the intensity map only, which is what a threshold sweep
re-uses.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field

from ..errors import SegmentationError
from ..image import Image
from .base import IntensityLimits, Percentiles, Segmenter, SegmenterParams, check_input, register_segmenter
from .normalize import fill_nonfinite, finite_percentiles

__all__ = ["ClassicalParams", "ClassicalSegmenter", "select_channel"]

logger = logging.getLogger(__name__)

_METHODS = ("otsu", "li", "triangle", "yen")


class ClassicalParams(SegmenterParams):
    """Parameters of the classical threshold + watershed segmenter.

    Attributes
    ----------
    channel : int or str, optional
        Channel to segment (index or name); required when the image has
        more than one channel.
    sigma : float
        Gaussian smoothing, in in-plane pixels (along Z it is divided by the
        Z/X pixel-size ratio, i.e. the same physical width).  0 = none; at most 100.
    invert : bool
        Segment dark objects on a bright background.
    normalize : (float, float) or None
        Percentiles mapped to 0 and 1 before thresholding (None: min/max).
    normalize_limits : (float, float), optional
        Absolute intensities mapped to 0 and 1 instead of the ``normalize`` percentiles
        of this image (tiled segmentation passes the whole image's percentiles here,
        so every tile is normalised alike).
    threshold : {"otsu", "li", "triangle", "yen"} or float
        Automatic method (scikit-image) or a fixed value on the normalised
        intensity (0..1; values outside, NaN and inf are errors).
    h : float
        Minimum dynamic of a distance-transform maximum to seed an object;
        0 turns splitting off (connected components).
    h_unit : {"px", "um"}
        Unit of ``h`` and ``min_distance``: in-plane pixels (default) or
        micrometres.  The distance transform itself is computed with the
        image's physical spacing and expressed in in-plane pixels.
    min_distance : float, optional
        When given, seeds are local maxima of the distance transform at least
        this far apart (``skimage.feature.peak_local_max``) instead of h-maxima.
    min_size : int
        Objects with fewer pixels/voxels are removed (before and after the watershed).
    fill_holes : bool
        Fill holes of the foreground mask.
    """

    channel: Union[int, str, None] = None
    sigma: float = Field(1.0, ge=0, le=100, description="Gaussian smoothing in in-plane pixels (0..100)")
    invert: bool = False
    normalize: Union[Percentiles, None] = (1.0, 99.8)
    normalize_limits: Union[IntensityLimits, None] = None
    threshold: Union[Literal["otsu", "li", "triangle", "yen"], Annotated[float, Field(ge=0, le=1)]] = "otsu"
    h: float = Field(1.0, ge=0)
    h_unit: Literal["px", "um"] = "px"
    min_distance: Union[float, None] = Field(None, gt=0)
    min_size: int = Field(10, ge=0)
    fill_holes: bool = True


def select_channel(image: Image, channel: int | str | None, backend: str) -> Image:
    """Return the image without T and C axes, selecting ``channel``.

    Raises
    ------
    SegmentationError
        When the image has several channels and none is chosen, or the
        chosen channel does not exist.
    """
    from ..errors import AxesError

    check_input(image, backend)
    img = image.sel(t=0)
    if "C" in img.axes:
        if channel is None:
            if img.n_channels > 1:
                raise SegmentationError(
                    f"{backend}: the image has {img.n_channels} channels {list(img.channel_names)}; "
                    "choose one with the 'channel' parameter", image.source)
            channel = 0
        try:
            img = img.sel(c=channel)
        except AxesError as exc:
            raise SegmentationError(f"{backend}: {exc.message}", image.source) from None
    elif channel not in (None, 0, "0"):
        raise SegmentationError(f"{backend}: channel {channel!r} requested but the image has no C axis",
                                image.source)
    if img.spatial_axes not in ("YX", "ZYX"):
        raise SegmentationError(f"{backend}: unsupported axes {img.axes!r}", image.source)
    return img


@register_segmenter
class ClassicalSegmenter(Segmenter):
    """Threshold + distance-transform watershed, in 2D (YX) and 3D (ZYX).

    Deterministic; no model.  See :class:`ClassicalParams`.
    """

    name = "classical"
    Params = ClassicalParams
    network_fields = frozenset({"channel", "sigma", "invert", "normalize", "normalize_limits"})

    def describe_model(self, params=None) -> dict:
        """The classical backend has no model: name and method only."""
        return {"backend": self.name, "model": None}

    def predict(self, image: Image, params: ClassicalParams) -> dict[str, np.ndarray]:
        """Smoothed, normalised intensity in [0, 1] (bright = foreground).

        Non-finite pixels (NaN, inf) are set to the background intensity before smoothing:
        the low normalisation limit of the finite pixels (the high one with ``invert``), with
        a warning; an image without a finite pixel is a :class:`SegmentationError`
        (:mod:`opsef_core.segment.normalize`).

        Returns
        -------
        dict
            ``{"intensity": float32 array with the image's spatial shape}``.
        """
        p = self.params(params)
        x = self._smoothed(image, p)
        if p.normalize_limits is not None:
            lo, hi = p.normalize_limits
        elif p.normalize is not None:
            lo, hi = finite_percentiles(x, p.normalize, name=image.name, source=image.source)
        else:
            lo, hi = float(x.min()), float(x.max())  # finite: filled above
        if hi > lo:
            x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
        else:
            x = np.zeros_like(x)
        if p.invert:
            x = 1.0 - x
        return {"intensity": x.astype(np.float32)}

    def _smoothed(self, image: Image, p: ClassicalParams) -> np.ndarray:
        """The channel's intensities, non-finite pixels filled, smoothed by ``sigma`` (float32):
        what the normalisation percentiles are taken of."""
        from scipy import ndimage as ndi

        img = select_channel(image, p.channel, self.name)
        x = fill_nonfinite(np.asarray(img.data, dtype=np.float32), p.normalize, p.normalize_limits, p.invert,
                           name=image.name, source=image.source)
        if p.sigma > 0:
            sp = np.asarray(img.spacing, dtype=float)
            sig = p.sigma * sp[-1] / sp  # same physical width along every axis
            x = ndi.gaussian_filter(x, sigma=tuple(sig), mode="nearest")
        return x

    def normalization_source(self, image: Image, params) -> np.ndarray | None:
        """The whole image as :meth:`predict` sees it before normalising (smoothed), so a tiled
        run takes the same percentiles as a whole-image run; None for pixels not in memory
        (a lazy image: its percentiles come from the unsmoothed image, as recorded)."""
        if not isinstance(image.data, np.ndarray):
            return None
        return self._smoothed(image, self.params(params))

    def normalization_halo(self, params, spacing) -> tuple:
        """Pixels per axis :meth:`normalization_source` reads around each pixel (its Gaussian's
        kernel radius, ``int(4 sigma + 0.5)`` as scipy truncates it)."""
        p = self.params(params)
        sp = np.asarray(spacing, dtype=float)
        if p.sigma <= 0:
            return (0,) * len(sp)
        return tuple(int(4.0 * s + 0.5) for s in p.sigma * sp[-1] / sp)

    def decode(self, prediction: dict[str, np.ndarray], image: Image, params: ClassicalParams) -> np.ndarray:
        """Threshold, fill holes, distance transform, h-maxima seeds, watershed.

        Returns
        -------
        ndarray of int32
            Labels 1..n in the image's spatial shape (0 = background).
        """
        from scipy import ndimage as ndi
        from skimage import filters, measure, morphology, segmentation

        p = self.params(params)
        x = prediction["intensity"]
        spacing = tuple(float(s) for s in image.spacing) if x.ndim == len(image.spacing) else (1.0,) * x.ndim
        if float(x.max()) <= float(x.min()):
            logger.warning("%s: constant image, nothing segmented", image.name)
            return np.zeros(x.shape, np.int32)
        if isinstance(p.threshold, str):
            thr = float(getattr(filters, f"threshold_{p.threshold}")(x))
        else:
            thr = float(p.threshold)
        fg = x > thr
        if p.fill_holes:
            fg = ndi.binary_fill_holes(fg) if x.ndim == 2 else _fill_holes_3d(fg)
        if p.min_size > 0:
            fg = morphology.remove_small_objects(fg, max_size=p.min_size - 1)
        if not fg.any():
            return np.zeros(x.shape, np.int32)
        components = measure.label(fg)
        unit = spacing[-1]  # distances in in-plane pixels
        dist = ndi.distance_transform_edt(fg, sampling=spacing) / unit
        to_px = (1.0 / unit) if p.h_unit == "um" else 1.0
        h = p.h * to_px
        if p.min_distance is not None:
            coords = _peaks(dist, components, p.min_distance * to_px, spacing)
            markers = np.zeros(x.shape, np.int32)
            markers[tuple(coords.T)] = np.arange(1, len(coords) + 1)
        elif h > 0:
            markers = measure.label(morphology.h_maxima(dist, h))
        else:
            markers = components
        labels = segmentation.watershed(-dist, markers, mask=fg)
        # components without a seed (all maxima lower than h) become one object each
        missing = fg & (labels == 0)
        if missing.any():
            extra = measure.label(missing)
            labels = np.where(missing, extra + labels.max(), labels)
        if p.min_size > 0:
            sizes = np.bincount(labels.ravel())
            small = sizes < p.min_size
            small[0] = False
            labels[small[labels]] = 0
        labels, _, _ = segmentation.relabel_sequential(labels.astype(np.int32))
        return labels.astype(np.int32)


def _fill_holes_3d(fg: np.ndarray) -> np.ndarray:
    """Fill holes in 3D and in every z slice (holes open along z stay filled per slice)."""
    from scipy import ndimage as ndi

    out = ndi.binary_fill_holes(fg)
    for z in range(out.shape[0]):
        out[z] = ndi.binary_fill_holes(out[z])
    return out


def _peaks(dist: np.ndarray, components: np.ndarray, min_distance: float, spacing: tuple) -> np.ndarray:
    """Local maxima of ``dist`` at least ``min_distance`` in-plane pixels apart, one set per component."""
    from skimage.feature import peak_local_max

    md = max(1, int(round(min_distance)))
    coords = peak_local_max(dist, min_distance=md, labels=components, exclude_border=False)
    if len(coords) == 0:
        return np.zeros((0, dist.ndim), int)
    return coords
