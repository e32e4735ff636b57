"""The ``unet`` backend: opsef's own PyTorch U-Net, 2D or 3D, two variants.

Network pass (:meth:`UNetSegmenter.predict`): percentile normalisation, optional
overlapping tiles (blended with a linear ramp), padding to a multiple of
``2**depth`` and cropping back.  A 2D model on a ``ZYX`` image runs slice by
slice and the maps are decoded in 3D.

Decoding (:meth:`UNetSegmenter.decode`), depending on the model's variant:

``"3class"`` (background / boundary / interior softmax)
    foreground = ``1 - p_background > prob_threshold``; seeds = connected
    components (face connectivity) of ``p_interior > prob_threshold`` and
    ``p_boundary < boundary_threshold``.  ``instances="watershed"`` (default):
    seeded watershed of the boundary probability restricted to the foreground.
    ``instances="connected_components"`` (the FUCCI study's way): the seed
    components themselves, grown by 2 pixels into the foreground to get the
    boundary ring back; touching nuclei whose boundary was missed stay merged.
``"distance"`` (ReLU regression of the Chebyshev distance to background)
    "dynamic morphology": foreground = ``distance > beta``; seeds = h-maxima of
    the distance with ``h`` (:func:`skimage.morphology.h_maxima`); watershed
    of the inverted distance restricted to the foreground.

In both, foreground components without a seed become one object each, and
objects smaller than ``min_size`` pixels/voxels are removed.

Decoding defaults: a decoding parameter left unset (or None) takes the value stored in the
model's ``config.json`` under ``decoding`` (chosen on validation data when the model was
trained, :func:`opsef_core.train.unet.train_unet`), else :data:`DECODING_DEFAULTS`.  The
validated parameters hold the values used, so run records name them.
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..errors import SegmentationError
from ..image import Image
from .base import IntensityLimits, Percentiles, Segmenter, SegmenterParams, register_segmenter
from .classical import select_channel
from .normalize import fill_nonfinite, finite_percentiles

__all__ = ["DECODING_DEFAULTS", "UNetParams", "UNetSegmenter", "check_decoding", "decode_3class",
           "decode_distance", "normalize_percentile", "stored_decoding"]

logger = logging.getLogger(__name__)

#: the decoding parameters of each variant (those a model may store)
DECODING_KEYS = {"3class": ("prob_threshold", "boundary_threshold", "instances", "min_size"),
                 "distance": ("beta", "h", "min_size")}
#: every decoding parameter, in a fixed order
_DECODING_NAMES = tuple(dict.fromkeys(k for keys in DECODING_KEYS.values() for k in keys))


def stored_decoding(model: str) -> dict:
    """The decoding defaults stored in a U-Net model's ``config.json`` (``decoding``).

    Parameters
    ----------
    model : str
        Model name or path, as in :class:`UNetParams`.

    Returns
    -------
    dict
        Empty when the model stores none or cannot be found (the error comes when it is loaded).
    """
    from ..models import resolve_model
    from ..unet.io import read_config

    try:
        path = resolve_model("unet", model, download=False).path
        return dict(read_config(path).get("decoding") or {})
    except Exception:  # noqa: BLE001 - an unknown model fails later, where it is loaded, with its own message
        return {}


def check_decoding(decoding: dict, variant: str) -> dict:
    """Check decoding defaults for a model of ``variant`` (keys of :data:`DECODING_KEYS`, valid values).

    Returns
    -------
    dict
        The values as :class:`UNetParams` validates them.

    Raises
    ------
    ConfigError
        An unknown key for the variant or an invalid value.
    """
    from ..errors import ConfigError
    from .base import parse_params

    allowed = DECODING_KEYS.get(variant, ())
    bad = sorted(set(decoding) - set(allowed))
    if bad:
        raise ConfigError(f"decoding keys {bad} do not apply to a {variant!r} U-Net; use {list(allowed)}")
    p = parse_params(UNetParams, {"model": "", **decoding}, where="U-Net decoding defaults")
    return {k: getattr(p, k) for k in decoding}


class UNetParams(SegmenterParams):
    """Parameters of the ``unet`` backend.

    Attributes
    ----------
    model : str
        Model name (a folder under the project's ``models/``) or path to a model folder.
    channel : int or str, optional
        Channel to segment; required when the image has several channels.
    normalize : (float, float), optional
        Percentiles mapped to 0 and 1; None = those the model was trained with.
    normalize_limits : (float, float), optional
        Absolute intensities mapped to 0 and 1 instead of the ``normalize`` percentiles
        of this image (tiled segmentation passes the whole image's percentiles here,
        so every tile is normalised alike).
    tile : int or tuple of int, optional
        Tile edge length (per spatial axis, or one value for all) for tiled prediction.
    n_tiles : tuple of int, optional
        Number of tiles per spatial axis (alternative to ``tile``).
    tile_overlap : int
        Overlap between neighbouring tiles, in pixels (blended linearly).
    device : {"auto", "cpu", "cuda"}
        Where the network runs.
    prob_threshold : float
        3class: threshold on foreground and interior probabilities.
    boundary_threshold : float
        3class: seeds exclude pixels whose boundary probability reaches this.
    instances : {"watershed", "connected_components"}
        3class: seeded watershed (default) or connected components of the interior.
    beta : float
        distance: foreground threshold on the predicted distance (pixels).
    h : float
        distance: minimum dynamic of a seed maximum (``h_maxima``); 0 = one seed per component.
    min_size : int
        Objects with fewer pixels/voxels are removed.

    The decoding parameters (``prob_threshold``, ``boundary_threshold``, ``instances``, ``beta``,
    ``h``, ``min_size``) left unset or None take the model's stored ``decoding`` values, else
    :data:`DECODING_DEFAULTS` (see the module docstring).
    """

    model: str = "unet2d_demo"
    channel: Union[int, str, None] = None
    normalize: Union[Percentiles, None] = None
    normalize_limits: Union[IntensityLimits, None] = None
    tile: Union[int, tuple[int, ...], None] = None
    n_tiles: Union[tuple[int, ...], None] = None
    tile_overlap: int = Field(16, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    prob_threshold: float = Field(0.5, gt=0, lt=1)
    boundary_threshold: float = Field(0.5, gt=0, le=1)
    instances: Literal["watershed", "connected_components"] = "watershed"
    beta: float = Field(0.5, ge=0)
    h: float = Field(1.0, ge=0)
    min_size: int = Field(10, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _decoding_defaults(cls, data):
        """Fill unset decoding parameters from the model's ``config.json``, else the defaults."""
        if not isinstance(data, dict):
            return data
        missing = [k for k in _DECODING_NAMES if data.get(k) is None]
        if not missing:
            return data
        model = data.get("model", cls.model_fields["model"].default)
        stored = stored_decoding(str(model)) if model else {}
        # unset (or None) and not stored: the field's own default (DECODING_DEFAULTS)
        out = {k: v for k, v in data.items() if k not in missing}
        return {**out, **{k: stored[k] for k in missing if k in stored}}

    @field_validator("tile", "n_tiles")
    @classmethod
    def _check_positive(cls, v):
        vals = (v,) if isinstance(v, int) else (v or ())
        if any(int(x) < 1 for x in vals):
            raise ValueError(f"tile sizes and tile counts must be positive, got {v}")
        return v


def normalize_percentile(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``x`` to 0/1 (float32, not clipped).

    The percentiles are those of the finite pixels
    (:func:`opsef_core.segment.normalize.finite_percentiles`); non-finite pixels stay
    non-finite here (:meth:`UNetSegmenter.predict` fills them first).  A constant image
    maps to zeros.
    """
    x = np.asarray(x, dtype=np.float32)
    lo, hi = finite_percentiles(x, [low, high])
    if hi <= lo:
        return np.zeros_like(x)
    return ((x - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def _finish(labels: np.ndarray, fg: np.ndarray, min_size: int) -> np.ndarray:
    """Give unseeded foreground components their own ids, drop small objects, relabel 1..n."""
    from skimage import measure, segmentation

    labels = labels.astype(np.int32)
    missing = fg & (labels == 0)
    if missing.any():
        extra = measure.label(missing)
        labels = np.where(missing & (extra > 0), extra + labels.max(), labels).astype(np.int32)
    if min_size > 0 and labels.max() > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int32)


def decode_3class(prob: np.ndarray, prob_threshold: float = 0.5, boundary_threshold: float = 0.5,
                  instances: str = "watershed", min_size: int = 10) -> np.ndarray:
    """Instances from a 3-class probability map (background, boundary, interior).

    Parameters
    ----------
    prob : ndarray, shape (3, ...)
        Class probabilities (summing to 1 over axis 0), spatial ``YX`` or ``ZYX``.
    prob_threshold, boundary_threshold : float
        See :class:`UNetParams`.
    instances : {"watershed", "connected_components"}
        Seeded watershed (default) or connected components of the interior class.
    min_size : int
        Minimum object size in pixels/voxels.

    Returns
    -------
    ndarray of int32
    """
    from scipy import ndimage as ndi
    from skimage import segmentation

    bg, bd, it = prob[0], prob[1], prob[2]
    fg = (1.0 - bg) > prob_threshold
    seed_mask = (it > prob_threshold) & (bd < boundary_threshold) & fg
    seeds, _ = ndi.label(seed_mask)
    if instances == "watershed":
        labels = segmentation.watershed(bd, seeds, mask=fg)
    elif instances == "connected_components":
        labels = np.where(fg, segmentation.expand_labels(seeds, distance=2), 0)
        fg = labels > 0  # the study's way: only the interior components count
    else:
        raise ValueError(f"unknown instances mode {instances!r}")
    return _finish(labels, fg, min_size)


def decode_distance(distance: np.ndarray, beta: float = 0.5, h: float = 1.0,
                    min_size: int = 10) -> np.ndarray:
    """Instances from a distance map by dynamic morphology (h-maxima seeds + watershed).

    Parameters
    ----------
    distance : ndarray
        Predicted distance to background (``YX`` or ``ZYX``), in pixels.
    beta : float
        Foreground threshold.
    h : float
        Minimum dynamic of a maximum to seed an object; 0 = one object per component.
    min_size : int
        Minimum object size in pixels/voxels.

    Returns
    -------
    ndarray of int32
    """
    from scipy import ndimage as ndi
    from skimage import morphology, segmentation

    d = np.asarray(distance, dtype=np.float64)
    fg = d > beta
    if not fg.any():
        return np.zeros(d.shape, np.int32)
    if h > 0:
        seeds, _ = ndi.label(morphology.h_maxima(d, h) & fg)
    else:
        seeds, _ = ndi.label(fg)
    labels = segmentation.watershed(-d, seeds, mask=fg)
    return _finish(labels, fg, min_size)


def _tile_shape(shape: tuple, p: UNetParams) -> tuple | None:
    """Tile edge per spatial axis from ``tile``/``n_tiles`` (None: no tiling)."""
    if p.tile is None and p.n_tiles is None:
        return None
    nd = len(shape)
    if p.tile is not None:
        t = (p.tile,) * nd if isinstance(p.tile, int) else tuple(p.tile)
        if len(t) != nd:
            raise SegmentationError(f"unet: tile {p.tile} has {len(t)} values for a {nd}D image")
        return tuple(min(int(a), n) for a, n in zip(t, shape))
    k = tuple(p.n_tiles)
    if len(k) != nd:
        raise SegmentationError(f"unet: n_tiles {p.n_tiles} has {len(k)} values for a {nd}D image")
    return tuple(n if kk <= 1 else min(n, int(math.ceil(n / kk)) + 2 * p.tile_overlap)
                 for kk, n in zip(k, shape))


def _starts(n: int, t: int, overlap: int) -> list[int]:
    if t >= n:
        return [0]
    step = max(1, t - overlap)
    starts = list(range(0, n - t, step)) + [n - t]
    return sorted(set(starts))


def _ramp(t: int, overlap: int) -> np.ndarray:
    i = np.arange(t)
    return np.minimum(np.minimum(i + 1, t - i), max(overlap, 1)).astype(np.float32)


#: decoding defaults of a model whose ``config.json`` stores none (the fields' defaults)
DECODING_DEFAULTS = {k: UNetParams.model_fields[k].default for k in _DECODING_NAMES}


@register_segmenter
class UNetSegmenter(Segmenter):
    """opsef's PyTorch U-Net (variants ``3class`` and ``distance``, 2D and 3D).

    See the module docstring for the decoding, and :class:`UNetParams`.
    """

    name = "unet"
    Params = UNetParams
    network_fields = frozenset({"model", "channel", "normalize", "normalize_limits", "tile", "n_tiles", "tile_overlap", "device"})

    def model_key(self, params: UNetParams) -> str:
        """The loaded network depends on the model and the device only."""
        p = self.params(params)
        return f"{p.model}|{p.device}"

    def load_model(self, params: UNetParams):
        """Resolve the model (``models.resolve_model("unet", model)``) and load it."""
        from ..models import resolve_model
        from ..unet.io import load_unet
        from .device import resolve_device

        p = self.params(params)
        resolved = resolve_model("unet", p.model)
        return load_unet(resolved.path, device=resolve_device(p.device, "torch"))

    def describe_model(self, params=None) -> dict:
        """Model name, path, checksum, variant and dimensionality."""
        from ..models import resolve_model
        from ..unet.io import read_config

        p = self.params(params)
        resolved = resolve_model("unet", p.model)
        cfg = read_config(resolved.path)
        return {"backend": self.name, **resolved.to_dict(), "variant": cfg["variant"], "dims": cfg["dims"],
                "depth": cfg["depth"], "filters": cfg["filters"]}

    # ------------------------------------------------------------------ network pass
    def normalize_percentiles(self, params) -> tuple[float, float]:
        """The percentiles mapped to 0 and 1: ``normalize``, or the model's training values."""
        p = self.params(params)
        if p.normalize is not None:
            return tuple(p.normalize)
        return tuple(float(v) for v in self.model(p).config["normalize"])

    def predict(self, image: Image, params: UNetParams) -> dict[str, np.ndarray]:
        """Run the network.

        Returns
        -------
        dict
            3class: ``{"probabilities": float32 (3, *spatial)}``;
            distance: ``{"distance": float32 spatial}``.

        Raises
        ------
        SegmentationError
            Several channels and none chosen, a 3D model on a 2D image, or no finite pixel.

        Non-finite pixels (NaN, inf) enter the network as the low normalisation limit
        (background), with a warning (:mod:`opsef_core.segment.normalize`).
        """
        p = self.params(params)
        img = select_channel(image, p.channel, self.name)
        m = self.model(p)
        x = np.asarray(img.data)
        if m.dims == 3 and x.ndim != 3:
            raise SegmentationError(f"unet: model {p.model!r} is 3D but the image is {img.spatial_axes}",
                                    image.source)
        pct = None if p.normalize_limits is not None else self.normalize_percentiles(p)
        x = fill_nonfinite(x, pct, p.normalize_limits, name=image.name, source=image.source)
        if p.normalize_limits is not None:
            lo, hi = p.normalize_limits
            x = ((np.asarray(x, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)
        else:
            x = normalize_percentile(x, *pct)
        if m.dims == 2 and x.ndim == 3:
            out = np.stack([self._run(m, x[z], p) for z in range(x.shape[0])], axis=1)
        else:
            out = self._run(m, x, p)
        if m.variant == "3class":
            return {"probabilities": out.astype(np.float32)}
        return {"distance": out[0].astype(np.float32)}

    def _run(self, m, x: np.ndarray, p: UNetParams) -> np.ndarray:
        """Network output (C, *x.shape) for one 2D/3D array, tiled when asked."""
        tiles = _tile_shape(x.shape, p)
        if tiles is None or tuple(tiles) == tuple(x.shape):
            return self._forward(m, x)
        n_out = 3 if m.variant == "3class" else 1
        acc = np.zeros((n_out,) + x.shape, np.float32)
        wsum = np.zeros(x.shape, np.float32)
        starts = [_starts(n, t, p.tile_overlap) for n, t in zip(x.shape, tiles)]
        weight = _ramp(tiles[0], p.tile_overlap)
        for t in tiles[1:]:
            weight = np.multiply.outer(weight, _ramp(t, p.tile_overlap))
        for origin in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, x.ndim):
            sl = tuple(slice(int(o), int(o) + t) for o, t in zip(origin, tiles))
            acc[(slice(None),) + sl] += self._forward(m, x[sl]) * weight
            wsum[sl] += weight
        return acc / wsum

    @staticmethod
    def _forward(m, x: np.ndarray) -> np.ndarray:
        """Pad to a multiple of ``2**depth``, run, crop back; softmax for 3class."""
        import torch

        from ..unet.model import pad_to_multiple

        xp, crop = pad_to_multiple(x, 2 ** m.depth, axes=range(x.ndim))
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(xp, dtype=np.float32))[None, None].to(m.device)
            y = m.net(t)
            if m.variant == "3class":
                y = torch.softmax(y, dim=1)
            y = y[0].float().cpu().numpy()
        return y[(slice(None),) + crop]

    # ------------------------------------------------------------------ decoding
    def decode(self, prediction: dict[str, np.ndarray], image: Image, params: UNetParams) -> np.ndarray:
        """Turn the network output into labels (see the module docstring).

        Returns
        -------
        ndarray of int32
            Labels 1..n with the image's spatial shape.
        """
        p = self.params(params)
        if "probabilities" in prediction:
            return decode_3class(prediction["probabilities"], p.prob_threshold, p.boundary_threshold,
                                 p.instances, p.min_size)
        if "distance" in prediction:
            return decode_distance(prediction["distance"], p.beta, p.h, p.min_size)
        raise SegmentationError(f"unet: prediction holds {sorted(prediction)}, not a U-Net output")
