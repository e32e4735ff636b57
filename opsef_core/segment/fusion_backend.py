"""The ``fusion`` backend: Cellpose on several channels, fused into one segmentation.

Channel fusion (:mod:`opsef_core.fusion`, the one implementation of the methods) as a
segmenter of the registry, so that a run config can express it::

    {"name": "fusion", "backend": "fusion",
     "params": {"model": "cellpose_demo", "diameter": 17.0},
     "sweep": {"channels": [["nuclei_cyto"], ["cytoplasm"], ["nuclei_cyto", "cytoplasm"]],
               "method": ["flow_average", "pixel_vote", "majority_vote", "staple"]}}

The two stages of the segmenter protocol:

- :meth:`FusionSegmenter.predict` — the network pass: one Cellpose pass per channel of
  ``network_channels`` (default: every channel of the image), each channel alone
  (:func:`opsef_core.fusion.channel_predictions`, the Cellpose backend's own ``predict``);
- :meth:`FusionSegmenter.decode` — the fusion of the ``channels`` subset by ``method``
  (:func:`opsef_core.fusion.fuse`), with Cellpose's mask reconstruction and thresholds.

``channels`` and ``method`` are decoding parameters: they are not part of the
:meth:`~opsef_core.segment.base.Segmenter.network_key`, so a sweep over channel subsets ×
methods shares one network pass per (image, pipeline, Cellpose network setting) and decodes
every combination from it.  The single-channel segmentations the voting methods and STAPLE
combine are decoded once per channel and decoding setting and reused across the subsets
(cached per network output array, :class:`~opsef_core.segment.memo.ArrayMemo`).
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..errors import AxesError, SegmentationError
from ..image import Image
from .base import Percentiles, Segmenter, SegmenterParams, check_input, register_segmenter
from .memo import ArrayMemo

__all__ = ["FusionParams", "FusionSegmenter", "CELLPOSE_FIELDS", "pack_predictions", "unpack_predictions"]

logger = logging.getLogger(__name__)

#: the Cellpose backend parameters the fusion backend takes over as they are
CELLPOSE_FIELDS = (
    "model", "diameter", "scale_factor", "do_3D", "anisotropy", "stitch_threshold", "flow_threshold",
    "cellprob_threshold", "min_size", "max_size_fraction", "niter", "normalize", "invert", "augment",
    "tile_overlap", "device", "batch_size",
)
#: of those, the ones that only change the decoding
_DECODE_FIELDS = ("stitch_threshold", "flow_threshold", "cellprob_threshold", "min_size", "max_size_fraction",
                  "niter", "batch_size")

Channel = int | str
Method = Literal["flow_average", "pixel_vote", "majority_vote", "staple"]


def _no_repeats(v, what):
    if v is not None and len({str(c) for c in v}) != len(v):
        raise ValueError(f"{what} repeat: {list(v)}")
    return v


class FusionParams(SegmenterParams):
    """Parameters of the fusion backend.

    Fusion parameters:

    Attributes
    ----------
    channels : list of int or str, optional
        The channel subset fused (indices or names, at least one); default every channel
        of ``network_channels``.  A decoding parameter: sweep it (a list of lists) to
        score channel subsets from one network pass.
    method : str
        ``flow_average`` (mean Cellpose flows and cell probabilities, one mask
        reconstruction), ``pixel_vote`` (foreground where at least half of the channels'
        segmentations agree), ``majority_vote`` (objects matched across channels at IoU 0.5,
        kept by a majority) or ``staple`` (STAPLE posterior >= 0.5); see
        :func:`opsef_core.fusion.fuse`.  A decoding parameter.
    network_channels : list of int or str, optional
        The channels the network pass runs on, each alone (default: every channel of the
        image).  Every ``channels`` value of a sweep must be among them; restrict it when
        the sweep names only some channels, to save their network passes.

    The Cellpose parameters, with the meaning and defaults of
    :class:`~opsef_core.segment.cellpose_backend.CellposeParams` (the backend has no
    ``channel``/``nuclear_channel``: each channel is segmented alone): network parameters
    ``model``, ``diameter``/``scale_factor``, ``do_3D``, ``anisotropy``, ``normalize``,
    ``invert``, ``augment``, ``tile_overlap``, ``device``; decoding parameters
    ``flow_threshold``, ``cellprob_threshold``, ``min_size``, ``max_size_fraction``,
    ``niter``, ``stitch_threshold``; ``batch_size`` does not change results.
    """

    channels: list[Channel] | None = Field(None, min_length=1)
    method: Method = "flow_average"
    network_channels: list[Channel] | None = Field(None, min_length=1)
    # --- the Cellpose backend's parameters (same defaults and bounds as CellposeParams)
    model: str = "nuclei"
    diameter: float | None = Field(None, gt=0)
    scale_factor: float | None = Field(None, gt=0)
    do_3D: bool = False
    anisotropy: float | None = Field(None, gt=0)
    stitch_threshold: float = Field(0.0, ge=0, le=1)
    flow_threshold: float = Field(0.4, ge=0)
    cellprob_threshold: float = Field(0.0, ge=-12, le=12)
    min_size: int = Field(15, ge=-1)
    max_size_fraction: float = Field(0.4, gt=0, le=1)
    niter: int | None = Field(None, gt=0)
    normalize: Percentiles = (1.0, 99.0)
    invert: bool = False
    augment: bool = False
    tile_overlap: float = Field(0.1, ge=0.05, lt=0.5)
    device: str = "auto"
    batch_size: int = Field(8, ge=1)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v):
        return _no_repeats(v, "channels")

    @field_validator("network_channels")
    @classmethod
    def _network_channels(cls, v):
        return _no_repeats(v, "network_channels")

    @model_validator(mode="after")
    def _check(self):
        if self.diameter is not None and self.scale_factor is not None:
            raise ValueError("give either diameter or scale_factor, not both "
                             "(scale_factor = diam_mean / diameter)")
        if self.channels is not None and self.network_channels is not None:
            pool = {str(c) for c in self.network_channels}
            # names and indices can only be compared on the image (decode checks again)
            same_kind = {type(c) for c in self.channels} | {type(c) for c in self.network_channels}
            missing = [c for c in self.channels if str(c) not in pool]
            if len(same_kind) == 1 and missing:
                raise ValueError(f"channels {missing} are not among network_channels {list(self.network_channels)}")
        return self

    def cellpose(self) -> dict:
        """The wrapped Cellpose backend parameters (no channel chosen)."""
        return {k: getattr(self, k) for k in CELLPOSE_FIELDS}


def pack_predictions(predictions: dict[int, dict]) -> dict[str, np.ndarray]:
    """Per-channel Cellpose outputs as one flat prediction dict (``dP_<c>``, ``cellprob_<c>``, ...)."""
    out: dict[str, np.ndarray] = {"channels": np.asarray(sorted(predictions), dtype=np.int64)}
    for c, pred in predictions.items():
        for k, v in pred.items():
            out[f"{k}_{c}"] = v
    return out


def unpack_predictions(prediction: dict[str, np.ndarray]) -> dict[int, dict]:
    """The inverse of :func:`pack_predictions`: ``{channel index: Cellpose prediction}``."""
    chans = [int(c) for c in np.asarray(prediction["channels"]).ravel()]
    out: dict[int, dict] = {c: {} for c in chans}
    for key, v in prediction.items():
        name, _, c = key.rpartition("_")
        if name and c.lstrip("-").isdigit() and int(c) in out:
            out[int(c)][name] = v
    return out


_SINGLE = ArrayMemo()  # single-channel labels per (flow array, decoding setting)


@register_segmenter
class FusionSegmenter(Segmenter):
    """Channel fusion of Cellpose segmentations (flow averaging, voting, STAPLE).

    ``predict`` returns ``channels`` (the channel indices predicted, int64) and, per channel
    ``c``, the Cellpose backend's outputs ``dP_<c>``, ``cellprob_<c>``, ``rescale_<c>``
    (see :class:`~opsef_core.segment.cellpose_backend.CellposeSegmenter`).
    """

    name: ClassVar[str] = "fusion"
    Params: ClassVar[type[SegmenterParams]] = FusionParams
    network_fields: ClassVar[frozenset[str]] = frozenset(
        {"network_channels"} | (set(CELLPOSE_FIELDS) - set(_DECODE_FIELDS)))

    def describe_model(self, params: SegmenterParams | dict) -> dict:
        """The Cellpose model's identity (name, path, checksum, library), as the cellpose backend records it."""
        from . import get_segmenter

        p = self.params(params)
        return {**get_segmenter("cellpose").describe_model(p.cellpose()), "backend": self.name,
                "wraps": "cellpose"}

    # ------------------------------------------------------------------ channels
    @staticmethod
    def _image_channels(image: Image, channels: list | None, what: str) -> list[int]:
        if "C" not in image.axes:
            raise SegmentationError(
                "fusion: the image has no C axis (fusion combines channels; do not select one with "
                "inputs.channel)", image.source)
        if channels is None:
            return list(range(image.n_channels))
        try:
            return [image.channel_index(c) for c in channels]
        except AxesError as exc:
            raise SegmentationError(f"fusion: {what}: {exc.message}", image.source) from None

    def network_channel_indices(self, image: Image, params: SegmenterParams | dict) -> list[int]:
        """Indices of the channels the network pass runs on."""
        p = self.params(params)
        return self._image_channels(image, p.network_channels, "network_channels")

    def fused_channel_indices(self, image: Image, params: SegmenterParams | dict) -> list[int]:
        """Indices of the channels fused (``channels``, default every network channel), in the given order."""
        p = self.params(params)
        if p.channels is None:
            return self.network_channel_indices(image, p)
        return self._image_channels(image, p.channels, "channels")

    # ------------------------------------------------------------------ the two stages
    def predict(self, image: Image, params: SegmenterParams) -> dict[str, np.ndarray]:
        """One Cellpose network pass per network channel (each channel alone).

        Returns
        -------
        dict
            See the class docstring (:func:`pack_predictions`).
        """
        from ..fusion import channel_predictions

        p = self.params(params)
        check_input(image, self.name)
        chans = self.network_channel_indices(image, p)
        return pack_predictions(channel_predictions(image, chans, p.cellpose()))

    def decode(self, prediction: dict[str, np.ndarray], image: Image, params: SegmenterParams) -> np.ndarray:
        """Fuse the ``channels`` subset by ``method`` (:func:`opsef_core.fusion.fuse`).

        Raises
        ------
        SegmentationError
            A channel of ``channels`` has no network pass in ``prediction``.
        """
        from ..fusion import flow_average, fuse
        from .cellpose_backend import CellposeParams

        p = self.params(params)
        preds = unpack_predictions(prediction)
        chans = self.fused_channel_indices(image, p)
        missing = [c for c in chans if c not in preds]
        if missing:
            names = [image.channel_names[c] for c in missing]
            raise SegmentationError(f"fusion: channels {names} have no network pass; add them to network_channels "
                                    f"(predicted: {[image.channel_names[c] for c in preds]})", image.source)
        cp = CellposeParams(**p.cellpose())
        single = None
        if p.method != "flow_average":
            key = json.dumps({k: getattr(p, k) for k in _DECODE_FIELDS + ("do_3D", "device")}, sort_keys=True)
            single = {}
            for c in chans:
                memo = _SINGLE.for_array(preds[c]["dP"])
                if key not in memo:
                    lab = flow_average([preds[c]], cp)
                    lab.setflags(write=False)
                    memo[key] = lab
                single[c] = memo[key]
        return np.asarray(fuse(preds, chans, p.method, cp, single=single), dtype=np.int32)
