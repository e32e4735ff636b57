"""The segmenter protocol and the registry of backends.

Every backend separates an expensive *network pass* (:meth:`Segmenter.predict`:
probabilities, flows, distances) from a cheap *decoding* (:meth:`Segmenter.decode`:
thresholds, non-maximum suppression, watershed).  The run engine calls
``predict`` once per distinct :meth:`Segmenter.network_key` and ``decode`` once
per parameter combination, so a threshold sweep re-uses one network pass.

Backends register themselves with :func:`register_segmenter`; heavy libraries
(torch, tensorflow, cellpose, stardist) are imported inside the backend's
methods, never at module import time.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict

from ..errors import ConfigError, SegmentationError
from ..image import Image

__all__ = [
    "SegmenterParams",
    "Segmenter",
    "register_segmenter",
    "get_segmenter",
    "available_segmenters",
    "parse_params",
    "Percentiles",
    "IntensityLimits",
    "check_percentiles",
    "check_limits",
]

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type["Segmenter"]] = {}
_INSTANCES: dict[str, "Segmenter"] = {}
# modules that register the built-in backends; imported lazily by get_segmenter
_BUILTIN_MODULES = {
    "classical": "opsef_core.segment.classical",
    "stardist": "opsef_core.segment.stardist_backend",
    "cellpose": "opsef_core.segment.cellpose_backend",
    "unet": "opsef_core.segment.unet_backend",
    "fusion": "opsef_core.segment.fusion_backend",
}


def check_percentiles(v: tuple[float, float]) -> tuple[float, float]:
    """Validate ``(low, high)`` normalisation percentiles; returns them as floats."""
    lo, hi = float(v[0]), float(v[1])
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"normalize percentiles must satisfy 0 <= low < high <= 100, got {tuple(v)}")
    return (lo, hi)


def check_limits(v: tuple[float, float]) -> tuple[float, float]:
    """Validate ``(low, high)`` absolute normalisation limits; returns them as floats."""
    lo, hi = float(v[0]), float(v[1])
    if not lo < hi:
        raise ValueError(f"normalize_limits must be (low, high) with low < high, got {tuple(v)}")
    return (lo, hi)


#: ``(low, high)`` percentiles mapped to 0 and 1 (``0 <= low < high <= 100``)
Percentiles = Annotated[tuple[float, float], AfterValidator(check_percentiles)]
#: ``(low, high)`` absolute intensities mapped to 0 and 1 (``low < high``)
IntensityLimits = Annotated[tuple[float, float], AfterValidator(check_limits)]


class SegmenterParams(BaseModel):
    """Base class of every backend's parameter model.

    Unknown keys are errors, and so are NaN and +-inf in any number (thresholds,
    sizes, percentiles, limits): ``allow_inf_nan=False``, so a config with
    ``threshold: .nan`` is a :class:`~opsef_core.errors.ConfigError` naming the key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Segmenter(ABC):
    """A segmentation backend.

    Subclasses set ``name``, ``Params`` (a :class:`SegmenterParams` subclass)
    and ``network_fields`` (the parameter names that change the network pass,
    e.g. model, scale factor, normalisation, channels, device).  Everything
    else is a decoding parameter.

    Input images have no T axis: axes are a canonical subset of ``CZYX``.
    Outputs are integer label arrays with the image's spatial shape
    (``YX`` or ``ZYX``), background 0.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[SegmenterParams]] = SegmenterParams
    network_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}

    # -------------------------------------------------------------- parameters
    def params(self, params: SegmenterParams | dict | None = None) -> SegmenterParams:
        """Validate a parameter dict into this backend's ``Params`` model."""
        return parse_params(self.Params, params, where=f"segmenter {self.name!r}")

    def network_key(self, params: SegmenterParams | dict) -> str:
        """A string identifying the network pass for these parameters."""
        p = self.params(params).model_dump(mode="json")
        sub = {k: p[k] for k in sorted(self.network_fields) if k in p}
        return self.name + ":" + json.dumps(sub, sort_keys=True)

    # -------------------------------------------------------------- models
    def model(self, params: SegmenterParams) -> Any:
        """Return the loaded model for ``params``, loading it once per process."""
        key = self.model_key(params)
        if key not in self._models:
            logger.info("loading %s model %s", self.name, key)
            self._models[key] = self.load_model(params)
        return self._models[key]

    def model_key(self, params: SegmenterParams) -> str:
        """Identifies the loaded model (default: the whole network key)."""
        return self.network_key(params)

    def load_model(self, params: SegmenterParams) -> Any:
        """Load the model weights (backends without a model return None)."""
        return None

    def describe_model(self, params: SegmenterParams | dict) -> dict:
        """JSON-serialisable identity of the model (name, path, checksum) for run records."""
        return {"backend": self.name}

    # -------------------------------------------------------------- the two stages
    @abstractmethod
    def predict(self, image: Image, params: SegmenterParams) -> dict[str, np.ndarray]:
        """Network pass: return the arrays the decoder needs (cacheable)."""

    @abstractmethod
    def decode(self, prediction: dict[str, np.ndarray], image: Image, params: SegmenterParams) -> np.ndarray:
        """Turn a network pass into an integer label image (cheap)."""

    def segment(self, image: Image, params: SegmenterParams | dict | None = None) -> np.ndarray:
        """Predict and decode in one call.

        Parameters
        ----------
        image : Image
            Input without a T axis (select a time point first).
        params : dict or Params, optional
            Backend parameters; defaults where omitted.

        Returns
        -------
        ndarray of int32
            Label image with the image's spatial shape.
        """
        p = self.params(params)
        check_input(image, self.name)
        return self.decode(self.predict(image, p), image, p)


def check_input(image: Image, backend: str) -> None:
    """Raise :class:`SegmentationError` for inputs a segmenter cannot take."""
    if "T" in image.axes and image.size("T") > 1:
        raise SegmentationError(
            f"{backend}: the image has {image.size('T')} time points; select one with image.sel(t=...)",
            image.source,
        )


def parse_params(model: type[BaseModel], params: Any, where: str) -> BaseModel:
    """Validate ``params`` into ``model``, turning pydantic errors into :class:`ConfigError`."""
    from pydantic import ValidationError

    if isinstance(params, model):
        return params
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"]) or "(root)"
            msgs.append(f"{loc}: {e['msg']}")
        raise ConfigError(f"{where}: " + "; ".join(msgs)) from None


def register_segmenter(cls: type[Segmenter]) -> type[Segmenter]:
    """Class decorator adding a backend to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError("a segmenter class needs a name")
    _REGISTRY[cls.name] = cls
    return cls


def get_segmenter(name: str) -> Segmenter:
    """Return the (per-process, model-caching) instance of a registered backend.

    Raises
    ------
    ConfigError
        When no backend of that name exists.
    """
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        import importlib

        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown segmenter {name!r}; available: {available_segmenters()}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _REGISTRY[name]()
    return _INSTANCES[name]


def available_segmenters() -> list[str]:
    """Names of all built-in and registered backends."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
