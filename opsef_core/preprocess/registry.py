"""The registry of named preprocessing steps and the helper that lifts array functions to images.

A step is an image-level function ``func(image: Image, params) -> Image`` plus a
pydantic parameter model (a :class:`StepParams` subclass: unknown keys are
errors, ranges validated).  Steps register themselves with
:func:`register_step`; :func:`get_step` and :func:`available_steps` look them up.

Most steps are written as functions of one spatial ``(Z)YX`` numpy array and
lifted to images by :func:`spatial_step`, which maps them over the T and C axes
(and, with ``per_plane=True``, over the z planes of a stack, for operations that
are 2D only).  No step modifies its input array.

``dims`` says which spatial dimensionalities a step takes:

- ``"2d3d"``: planes and stacks natively (a stack is filtered in 3D);
- ``"2d"``: a 2D-only operation; on a stack it is applied to each z plane;
- ``"3d-to-2d"``: needs a Z axis and removes it (z projection).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..image import Image

__all__ = [
    "StepParams",
    "StepInfo",
    "register_step",
    "get_step",
    "available_steps",
    "validate_params",
    "spatial_step",
    "map_spatial",
    "check_extent",
    "MAX_FILTER_PX",
]

#: upper bound of every filter size parameter (sigma, radius, box side, kernel), in pixels
MAX_FILTER_PX = 100

logger = logging.getLogger(__name__)

Dims = Literal["2d3d", "2d", "3d-to-2d"]
_DIMS = ("2d3d", "2d", "3d-to-2d")

# modules whose import registers the built-in steps
_BUILTIN_MODULES = (
    "opsef_core.preprocess.filters",
    "opsef_core.preprocess.background",
    "opsef_core.preprocess.projection",
    "opsef_core.preprocess.contrast",
    "opsef_core.preprocess.edges",
    "opsef_core.preprocess.intensity",
    "opsef_core.preprocess.colour",
    "opsef_core.preprocess.geometry",
)

_REGISTRY: dict[str, "StepInfo"] = {}


class StepParams(BaseModel):
    """Base class of every step's parameter model (unknown keys are errors; immutable).

    NaN and +-inf are refused in every number (``allow_inf_nan=False``); filter-like
    steps also bound their sizes (see each field's description) and check them
    against the plane's extent (Y, X) when applied (:func:`check_extent`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class StepInfo:
    """A registered preprocessing step.

    Attributes
    ----------
    name : str
        Registry name (what configs use).
    func : callable
        ``func(image, params) -> Image``.
    Params : type of StepParams
        The parameter model.
    dims : {"2d3d", "2d", "3d-to-2d"}
        Spatial dimensionalities the step takes (see the module docstring).
    per_plane : bool
        Whether a stack is processed one z plane at a time.
    output_dtype : str
        The documented output dtype (e.g. ``"same as input"``, ``"float32 in [0, 1]"``).
    description : str
        One line (the first line of the function's docstring).
    headline : tuple of str
        Parameter names always shown by :meth:`Pipeline.describe`; others only when not default.
    abbrev : dict
        Short names of parameters for :meth:`Pipeline.describe`.
    requires_rgb : bool
        Whether the step consumes a 3-channel RGB C axis.
    halo : callable or None
        ``halo(params, spacing, dtype) -> tuple of int or None``: how many pixels around each
        output pixel, per spatial axis, the step reads (a tiled run applies the step to each
        tile plus this margin and gets exactly the whole-image result).  ``None`` from the
        function, or no function, means the output depends on the whole image (a global
        statistic, a change of grid): such a step cannot run tile by tile.
    global_stat : str or None
        The whole-image statistic a tile-by-tile run computes once per image and fixes
        (``"percentiles"`` for ``normalize_percentile``); the step is then pointwise.
    """

    name: str
    func: Callable[[Image, StepParams], Image]
    Params: type[StepParams]
    dims: str = "2d3d"
    per_plane: bool = False
    output_dtype: str = "same as input"
    description: str = ""
    headline: tuple = ()
    abbrev: dict = field(default_factory=dict)
    requires_rgb: bool = False
    halo: Callable | None = None
    global_stat: str | None = None

    def tile_halo(self, params: "StepParams", spacing: tuple, dtype) -> tuple | None:
        """Pixels per spatial axis the step reads around each output pixel (see ``halo``), or
        None when it needs the whole image.  ``spacing`` has one entry per spatial axis."""
        if self.global_stat is not None:
            return (0,) * len(spacing)
        if self.halo is None:
            return None
        h = self.halo(params, tuple(spacing), np.dtype(dtype))
        return None if h is None else tuple(int(np.ceil(v)) for v in h)

    def defaults(self) -> dict:
        """Default parameter values (JSON types)."""
        return self.Params().model_dump(mode="json")

    def as_dict(self) -> dict:
        """JSON-serialisable summary (name, dims, dtype, defaults, parameter schema)."""
        return {
            "name": self.name,
            "description": self.description,
            "dims": self.dims,
            "per_plane": self.per_plane,
            "output_dtype": self.output_dtype,
            "requires_rgb": self.requires_rgb,
            "defaults": self.defaults(),
            "schema": self.Params.model_json_schema(),
        }


def register_step(
    name: str,
    Params: type[StepParams],
    dims: Dims = "2d3d",
    *,
    output_dtype: str = "same as input",
    headline: tuple = (),
    abbrev: dict | None = None,
    requires_rgb: bool = False,
    halo: Callable | None = None,
    global_stat: str | None = None,
) -> Callable:
    """Decorator registering an image-level step function under ``name``.

    Parameters
    ----------
    name : str
        Registry name.
    Params : type of StepParams
        Parameter model; every field needs a default.
    dims : {"2d3d", "2d", "3d-to-2d"}
        Spatial dimensionalities (``"2d"`` steps must be lifted with
        ``spatial_step(per_plane=True)``).
    output_dtype : str
        Documented output dtype.
    headline : tuple of str
        Parameters always shown in pipeline descriptions.
    abbrev : dict, optional
        Short parameter names for descriptions.
    requires_rgb : bool
        Whether the step consumes an RGB C axis.
    halo : callable, optional
        ``halo(params, spacing, dtype)``: the pixels per spatial axis the step reads around each
        output pixel (None: the whole image); see :class:`StepInfo`.  Without it the step is
        not run tile by tile.
    global_stat : str, optional
        A whole-image statistic the step needs (see :class:`StepInfo`).

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.
    """
    if dims not in _DIMS:
        raise ValueError(f"dims must be one of {_DIMS}, got {dims!r}")

    def deco(func: Callable) -> Callable:
        per_plane = bool(getattr(func, "per_plane", False))
        if dims == "2d" and not per_plane:
            raise ValueError(f"step {name!r}: a '2d' step must be lifted with spatial_step(per_plane=True)")
        doc = (func.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = StepInfo(
            name=name,
            func=func,
            Params=Params,
            dims=dims,
            per_plane=per_plane,
            output_dtype=output_dtype,
            description=doc[0] if doc else "",
            headline=tuple(headline),
            abbrev=dict(abbrev or {}),
            requires_rgb=requires_rgb,
            halo=halo,
            global_stat=global_stat,
        )
        return func

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def available_steps() -> dict[str, StepInfo]:
    """All registered steps, by name (sorted).

    Returns
    -------
    dict
        ``name -> StepInfo``; ``info.as_dict()`` gives a JSON-serialisable view.
    """
    _load_builtins()
    return {k: _REGISTRY[k] for k in sorted(_REGISTRY)}


def get_step(name: str) -> StepInfo:
    """Look up a step by name.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"median"``.

    Returns
    -------
    StepInfo

    Raises
    ------
    ConfigError
        When no step has that name; the message suggests close names and lists all.
    """
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(name), names, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"unknown preprocessing step {name!r}; {hint}available steps: {', '.join(names)}")
    return _REGISTRY[name]


def validate_params(info: StepInfo, params: StepParams | dict | None, where: str = "") -> StepParams:
    """Validate a parameter dict (or model) against a step's parameter model.

    Parameters
    ----------
    info : StepInfo
        The step.
    params : dict, StepParams or None
        Parameters; missing keys take their defaults.
    where : str
        Context put in front of error messages (e.g. ``"pipeline 'p', steps[1] ('median')"``).

    Returns
    -------
    StepParams
        An instance of ``info.Params``.

    Raises
    ------
    ConfigError
        Naming every unknown key (with the allowed ones) and every bad value.
    """
    where = where or f"step {info.name!r}"
    if isinstance(params, info.Params):
        return params
    if isinstance(params, BaseModel):
        raise ConfigError(
            f"{where}: parameters of type {type(params).__name__} given, expected {info.Params.__name__}"
        )
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: parameters must be a mapping of names to values, got {params!r}")
    try:
        return info.Params.model_validate(params)
    except ValidationError as exc:
        allowed = ", ".join(info.Params.model_fields)
        msgs = []
        for e in exc.errors():
            key = ".".join(str(x) for x in e["loc"]) or "(parameters)"
            if e["type"] == "extra_forbidden":
                msgs.append(f"unknown parameter {key!r} (allowed: {allowed})")
            else:
                value = params.get(e["loc"][0], e.get("input")) if e["loc"] else e.get("input")
                msg = e["msg"].removeprefix("Value error, ")
                msgs.append(f"{key}={value!r}: {msg}")
        raise ConfigError(f"{where}: " + "; ".join(msgs)) from None


# --------------------------------------------------------------------------- lifting
def map_spatial(
    image: Image,
    func: Callable[[np.ndarray, tuple], np.ndarray],
    *,
    per_plane: bool = False,
    desc: str = "",
) -> np.ndarray:
    """Apply an array function to every spatial (Z)YX array of an image.

    Parameters
    ----------
    image : Image
        Input; its data (numpy or dask) is read one (T, C) array at a time and never modified.
        Boolean data are processed as uint8 (0 and 1).
    func : callable
        ``func(array, spacing) -> array`` where ``array`` is ``YX`` or ``ZYX`` and
        ``spacing`` the pixel size along its axes.  Every call must return arrays of
        one shape and dtype (the shape may differ from the input's, e.g. rescaling).
    per_plane : bool
        Apply ``func`` to each z plane of a stack separately (2D-only operations).
    desc : str
        Progress-bar label.

    Returns
    -------
    ndarray
        The results stacked with the image's T and C axes in front (canonical order).
    """
    lead_shape = tuple(image.size(a) for a in image.axes if a in "TC")
    spacing = tuple(image.spacing)
    out = None
    n = int(np.prod(lead_shape)) if lead_shape else 1
    for idx in tqdm(np.ndindex(*lead_shape), total=n, desc=desc, leave=False, disable=n < 8):
        arr = np.asarray(image.data[idx])
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if per_plane and arr.ndim == 3:
            res = np.stack([_call(func, arr[z], spacing[1:]) for z in range(arr.shape[0])])
        else:
            res = _call(func, arr, spacing)
        if out is None:
            out = np.empty(lead_shape + res.shape, dtype=res.dtype)
        elif res.shape != out.shape[len(lead_shape):] or res.dtype != out.dtype:  # pragma: no cover - a bug
            raise RuntimeError(
                f"{desc}: inconsistent output {res.shape} {res.dtype} across channels/time points"
            )
        out[idx] = res
    return out


def _call(func: Callable, arr: np.ndarray, spacing: tuple) -> np.ndarray:
    res = np.asarray(func(arr, spacing))
    if np.shares_memory(res, arr):  # never hand back (a view of) the input
        res = res.copy()
    return res


def spatial_step(per_plane: bool = False) -> Callable:
    """Decorator lifting ``func(array, params, spacing) -> array`` to ``func(image, params) -> Image``.

    The array function sees one ``YX`` or ``ZYX`` array (one time point, one
    channel; with ``per_plane=True`` one z plane) and the pixel size along its
    axes.  The lifted function maps it over T and C and keeps axes, pixel size
    and channel names (the spatial shape may change; the caller updates pixel
    sizes in that case).  The array function is kept as ``.array_func``.
    """

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(image: Image, params: StepParams) -> Image:
            data = map_spatial(image, lambda a, sp: fn(a, params, sp), per_plane=per_plane, desc=fn.__name__)
            return image.with_data(data)

        wrapper.array_func = fn
        wrapper.per_plane = per_plane
        return wrapper

    return deco


def check_extent(step: str, what: str, sizes, shape: tuple, axes: str | None = None) -> None:
    """Refuse a filter size larger than the image plane along Y or X (a ``ConfigError`` naming it).

    Only the in-plane axes are checked: a neighbourhood deeper than a thin stack along Z
    is common (e.g. a ball of radius 6 on 5 planes) and well defined.

    Parameters
    ----------
    step : str
        Step name, for the message.
    what : str
        Parameter name (``"sigma"``, ``"radius"``, ...).
    sizes : float or sequence of float
        The size along each axis of ``shape`` (one value: every axis), in pixels.
    shape : tuple of int
        The spatial shape the step is applied to (``YX`` or ``ZYX``).
    axes : str, optional
        Axis letters of ``shape`` (default the last ``len(shape)`` of ``ZYX``).
    """
    axes = axes or "ZYX"[-len(shape):]
    vals = tuple(sizes) if isinstance(sizes, (tuple, list, np.ndarray)) else (sizes,) * len(shape)
    for a, v, n in zip(axes, vals, shape):
        if a in "YX" and float(v) > n:
            raise ConfigError(
                f"{step}: {what} {float(v):g} px along {a} exceeds the image's extent ({n} px along {a}); "
                f"use a smaller {what}")
