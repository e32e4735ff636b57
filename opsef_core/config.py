"""The run config: what to read, which pipelines and segmenters to combine, what to write.

A run config is a JSON file validated by :class:`RunConfig` (pydantic, unknown
keys are errors).  :func:`load_config` turns every validation problem into one
:class:`~opsef_core.errors.ConfigError` naming the file and the key path, with a
spelling suggestion for unknown keys.  Relative paths in a config are resolved
against the folder of the config file (not the working directory); the config
keeps them as given and :meth:`RunConfig.resolve` gives the absolute path.

Pipelines are checked against the preprocessing registry and segmenter
parameters (including every value of a sweep) against each backend's
``Params`` model at load time, so a typo fails before any image is read.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .io.discover import DEFAULT_INCLUDE

__all__ = [
    "SCHEMA_VERSION",
    "InputsConfig",
    "StepConfig",
    "PipelineConfig",
    "SegmenterConfig",
    "OutputsConfig",
    "EvaluationConfig",
    "ExecutionConfig",
    "RunConfig",
    "load_config",
    "config_from_dict",
    "save_config",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputsConfig(_Strict):
    """Which images to read and which part of them to segment.

    Attributes
    ----------
    path : str
        An image file or a folder (relative paths: relative to the config file).
    include, exclude : list of str
        Glob patterns for files in a folder.
    channel : int or str, optional
        Channel to segment (index or name); all channels are kept when omitted.
    scenes : list of int or str, optional
        Series (scenes) of multi-series files (.lif, OME-TIFF) to segment: indices (negative
        counts from the end) or names, names may be glob patterns (``"Position*"``).
        Default: every series.  An entry that matches no series of a file is an error.
    time_points : list of int, optional
        Time points of time-lapse series to segment (negative counts from the end).  Default:
        every time point.  Each (file, series, time point) is one run item.
    z_range : [start, stop], optional
        Sub-stack of z planes (stop exclusive).
    crop : dict, optional
        A window of every item, ``{"Y": [start, stop], "X": [start, stop]}`` in pixels (stop
        exclusive), applied to the image and its ground truth alike: explore a grid on part of a
        large image.  A window outside an image is an error for that item.
    axes : str, optional
        Axes of the files, overriding their metadata (e.g. ``"ZYX"``).
    pixel_size : dict, optional
        ``{"Z": dz, "Y": dy, "X": dx}`` in µm overriding the files' calibration.
    ground_truth : str, optional
        Folder of label images matched to inputs by file name.
    label_suffix : str
        Suffix between the stem and the extension of ground-truth files
        (``img1.tif`` -> ``img1_masks.tif`` with ``"_masks"``).
    limit : int, optional
        Only the first ``limit`` images (sorted by name), for exploration.
    """

    path: str
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    channel: int | str | None = None
    scenes: list[int | str] | None = Field(default=None, min_length=1)
    z_range: tuple[int, int] | None = None
    time_points: list[int] | None = Field(default=None, min_length=1)
    crop: dict[str, tuple[int, int]] | None = None
    axes: str | None = None
    pixel_size: dict[str, float] | None = None
    ground_truth: str | None = None
    label_suffix: str = ""
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy_selectors(cls, data):
        """Configs of schema 1 named one ``scene`` / ``time_point``: read them as one-entry selectors."""
        if isinstance(data, dict):
            data = dict(data)
            for old, new in (("scene", "scenes"), ("time_point", "time_points")):
                if old in data:
                    if new in data:
                        raise ValueError(f"give {new!r} only ({old!r} is its old one-value form)")
                    value = data.pop(old)
                    if value is not None:
                        data[new] = [value]
        return data

    @field_validator("time_points")
    @classmethod
    def _unique_time_points(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"time_points repeat a value: {v}")
        return v

    @field_validator("pixel_size")
    @classmethod
    def _check_pixel_size(cls, v):
        if v is None:
            return v
        out = {}
        for k, val in v.items():
            if k.upper() not in ("Z", "Y", "X"):
                raise ValueError(f"pixel_size keys must be Z, Y or X, got {k!r}")
            if not val > 0:
                raise ValueError(f"pixel_size[{k}] must be positive, got {val}")
            out[k.upper()] = float(val)
        return out

    @field_validator("crop")
    @classmethod
    def _check_crop(cls, v):
        if v is None:
            return v
        out = {}
        for k, (a, b) in v.items():
            if k.upper() not in ("Y", "X"):
                raise ValueError(f"crop keys must be Y or X (use z_range for Z), got {k!r}")
            if not 0 <= a < b:
                raise ValueError(f"crop[{k}] must be [start, stop] with 0 <= start < stop, got {[a, b]}")
            out[k.upper()] = (int(a), int(b))
        return out

    @field_validator("z_range")
    @classmethod
    def _check_z_range(cls, v):
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"z_range must be [start, stop] with 0 <= start < stop, got {list(v)}")
        return v


class StepConfig(_Strict):
    """One preprocessing step: a registered step name and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineConfig(_Strict):
    """An ordered list of preprocessing steps (empty: the raw image)."""

    name: str = Field(min_length=1)
    steps: list[StepConfig] = Field(default_factory=list)


class SegmenterConfig(_Strict):
    """A segmenter entry: a backend, fixed parameters and an optional sweep.

    ``sweep`` maps parameter names to lists of values; the Cartesian product
    of all lists gives one setting each (merged over ``params``).  ``slices``
    segments a 3D (``ZYX``) image plane by plane with a 2D model (as OpSeF did
    for anisotropic stacks): one network pass per plane shared by the sweep,
    label ids unique over the stack, objects not linked between planes.
    """

    name: str = Field(min_length=1)
    backend: str
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    slices: bool = False

    @field_validator("sweep")
    @classmethod
    def _non_empty(cls, v):
        for k, vals in v.items():
            if len(vals) == 0:
                raise ValueError(f"sweep of {k!r} has no values")
        return v


class OutputsConfig(_Strict):
    """What the run writes besides raw labels, summary.csv and run.json."""

    overlays: bool = True
    montage: bool = True
    rois: bool = False
    measurements: bool = True
    save_preprocessed: bool = False
    #: with a ``class_mask``: also one label image per class (``labels_classes/<class>/``); the
    #: class is always a column of ``measurements.csv`` and a table in ``classes/``
    class_labels: bool = False
    #: channel pairs ``[a, b]``: ``measurements.csv`` gets ``ratio_<a>_<b>`` = mean a / mean b per object
    channel_ratios: list[tuple[str, str]] = Field(default_factory=list)
    #: label images: ``tiff`` (compressed, in memory), ``ome-zarr`` (an NGFF label pyramid written
    #: tile by tile: the item is *streamed*, see ``execution.tiling``), or ``auto``: OME-Zarr for
    #: tiled items of more than ``OME_ZARR_MIN_PIXELS`` pixels, TIFF otherwise
    labels_format: Literal["auto", "tiff", "ome-zarr"] = "auto"

    #: ``labels_format="auto"`` streams tiled items above this many pixels (4096 x 4096)
    OME_ZARR_MIN_PIXELS: ClassVar[int] = 4096 * 4096


class EvaluationConfig(_Strict):
    """Matching against ground truth: IoU thresholds and the ranking metric."""

    thresholds: list[float] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    rank_by: str = "f1@0.5"

    @field_validator("thresholds")
    @classmethod
    def _check(cls, v):
        if not v or any(not 0 < t <= 1 for t in v):
            raise ValueError("thresholds must be a non-empty list of values in (0, 1]")
        return v

    @model_validator(mode="after")
    def _known_metric(self):
        """``rank_by`` must be a column ``metrics.csv`` will have (checked before any compute)."""
        from .evaluate.report import metric_names

        names = metric_names(self.thresholds)
        if self.rank_by not in names:
            close = difflib.get_close_matches(self.rank_by, names, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"rank_by {self.rank_by!r} is not a metric of these thresholds "
                             f"(f1@T, precision@T, recall@T, accuracy@T, panoptic_quality@T for T in "
                             f"thresholds, aji, pixel_f1, ...){hint}")
        return self


class TilingConfig(_Strict):
    """Segment images larger than one tile tile by tile (:func:`opsef_core.tiling.segment_tiled_image`).

    ``tile_shape`` is the largest tile per spatial axis (one number for all, or one per axis,
    ``YX`` or ``ZYX``); ``overlap`` the context on each side, which must exceed the largest
    object.  Images that fit in one tile are segmented whole.  A sweep shares the network pass:
    it runs once per tile and every setting decodes from it and is stitched on its own.
    Normalisation limits come from the whole image's intensities as the backend sees them (the
    classical backend's after its ``sigma`` smoothing; a strided sample above 4 Mpx), so with a
    fixed threshold tiled and whole-image labels are identical; automatic thresholds (Otsu, ...)
    are computed per tile, so with those results can differ slightly.  A combination whose
    objects reach the overlap fails (seams could cut them).
    """

    tile_shape: int | list[int] = 1024
    overlap: int | list[int] = 64
    #: whole-image statistics of a streamed item (percentiles of the pipeline's output) are taken
    #: of at most this many pixels: every pixel below it, a stride on the image grid above it
    max_sample: int = Field(default=4_000_000, ge=10_000)

    #: smallest tile edge accepted (a 1-pixel tile is never what anyone meant)
    MIN_TILE: ClassVar[int] = 16

    @field_validator("tile_shape", "overlap")
    @classmethod
    def _positive(cls, v, info):
        vals = [v] if isinstance(v, int) else v
        if not vals or any(x < (1 if info.field_name == "tile_shape" else 0) for x in vals):
            raise ValueError(f"{info.field_name} must be positive integers, got {v}")
        return v

    @model_validator(mode="after")
    def _tiles_hold_more_than_their_halo(self):
        tiles = [self.tile_shape] if isinstance(self.tile_shape, int) else list(self.tile_shape)
        overlaps = [self.overlap] if isinstance(self.overlap, int) else list(self.overlap)
        if len(overlaps) > 1 and len(tiles) > 1 and len(overlaps) != len(tiles):
            raise ValueError(f"tile_shape {self.tile_shape} and overlap {self.overlap} need the same axes")
        n = max(len(tiles), len(overlaps))
        tiles = tiles * n if len(tiles) == 1 else tiles
        overlaps = overlaps * n if len(overlaps) == 1 else overlaps
        for t, o in zip(tiles, overlaps):
            if t < self.MIN_TILE:
                raise ValueError(f"tile_shape {self.tile_shape}: tiles must be at least {self.MIN_TILE} pixels")
            if t <= 2 * o:
                raise ValueError(f"tile_shape {self.tile_shape} must exceed twice the overlap {self.overlap} "
                                 f"(each tile needs pixels of its own besides its context)")
        return self


class ExecutionConfig(_Strict):
    """Where items run: workers (processes) and a dask scheduler address; device for networks.

    ``device`` is passed to every backend that has a ``device`` parameter,
    unless the segmenter entry sets its own.  ``tiling`` segments large images tile by tile.
    """

    workers: int = Field(default=1, ge=1)
    scheduler: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tiling: TilingConfig | None = None


class RunConfig(_Strict):
    """A complete run config (what ``opsef run CONFIG.json`` executes).

    Use :func:`load_config` to read one from JSON; relative paths resolve
    against the config's folder (:attr:`base_dir`).
    """

    schema_version: int = SCHEMA_VERSION
    name: str | None = None
    description: str = ""
    inputs: InputsConfig
    pipelines: list[PipelineConfig] = Field(min_length=1)
    segmenters: list[SegmenterConfig] = Field(min_length=1)
    postprocess: dict[str, Any] | None = None
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    seed: int = 0

    _base_dir: Path | None = PrivateAttr(default=None)
    _source: Path | None = PrivateAttr(default=None)
    _record: Path | None = PrivateAttr(default=None)

    @property
    def record_path(self) -> Path | None:
        """The ``run.json`` this config was read from (a re-run), else None."""
        return self._record

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, v):
        if v > SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is newer than this opsef supports ({SCHEMA_VERSION})")
        return v

    @field_validator("pipelines")
    @classmethod
    def _unique_pipelines(cls, v):
        names = [p.name for p in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pipeline names must be unique, repeated: {dup}")
        return v

    @field_validator("segmenters")
    @classmethod
    def _unique_segmenters(cls, v):
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"segmenter names must be unique, repeated: {dup}")
        return v

    # ------------------------------------------------------------------ paths
    @property
    def base_dir(self) -> Path:
        """Folder relative paths resolve against (the config file's folder, else the cwd)."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from, if any."""
        return self._source

    @property
    def stem(self) -> str:
        """Name used for run folders: ``name``, else the config file's stem, else ``run``."""
        if self.name:
            return self.name
        if self._source is not None:
            stem = self._source.stem
            return "rerun" if stem == "run" else stem
        return "run"

    def resolve(self, path: str | Path | None) -> Path | None:
        """Absolute path of ``path`` (relative paths: relative to :attr:`base_dir`)."""
        if path is None:
            return None
        p = Path(path).expanduser()
        p = p if p.is_absolute() else self.base_dir / p
        try:
            return p.resolve()
        except (RuntimeError, OSError) as exc:  # a symlink loop, an unreadable mount
            raise ConfigError(f"cannot resolve the path ({exc})", p) from None

    def _path_fields(self) -> dict[str, str]:
        """Every path a config names, by dotted key: inputs, ground truth, class masks, and
        segmenter parameters that name an existing file or folder relative to :attr:`base_dir`
        (a model folder); model *names* (``"cyto3"``) are left alone."""
        from .models import looks_like_path

        found = {"inputs.path": self.inputs.path}
        if self.inputs.ground_truth is not None:
            found["inputs.ground_truth"] = self.inputs.ground_truth
        cm = (self.postprocess or {}).get("class_mask") or {}
        for key in ("file", "folder"):
            if isinstance(cm.get(key), str):
                found[f"postprocess.class_mask.{key}"] = cm[key]
        for i, seg in enumerate(self.segmenters):
            for part in ("params", "sweep"):
                values = getattr(seg, part)
                for k, v in values.items():
                    for j, x in enumerate(v if part == "sweep" else [v]):
                        if isinstance(x, str) and looks_like_path(x) and not Path(x).is_absolute() \
                                and (self.base_dir / x).exists():
                            found[f"segmenters[{i}].{part}.{k}" + (f"[{j}]" if part == "sweep" else "")] = x
        return found

    def resolved_paths(self) -> dict[str, str | None]:
        """The config's paths resolved to absolute strings (recorded in run.json)."""
        out: dict[str, str | None] = {"base_dir": str(self.base_dir.resolve()), "inputs.ground_truth": None}
        out.update({k: str(self.resolve(v)) for k, v in self._path_fields().items()})
        return out

    def resolved(self) -> "RunConfig":
        """A copy in which every relative path is absolute (resolved against :attr:`base_dir`).

        The one place where the config's relative paths are resolved; the run engine works on
        this copy, so no later step depends on the working directory.
        """
        data = self.model_dump(mode="json")
        for key, value in self._path_fields().items():
            _set_dotted(data, key, str(self.resolve(value)))
        new = config_from_dict(data, where=str(self._source or "config"), check=False)
        new._base_dir, new._source, new._record = self._base_dir, self._source, self._record
        return new

    def with_base_dir(self, base_dir: str | Path | None, source: str | Path | None = None) -> "RunConfig":
        """Set the folder relative paths resolve against (returns self)."""
        self._base_dir = Path(base_dir).resolve() if base_dir is not None else None
        self._source = Path(source) if source is not None else self._source
        return self

    def copy_with(self, **changes: Any) -> "RunConfig":
        """A validated copy with top-level or dotted (``"inputs.limit"``) fields changed."""
        data = self.model_dump(mode="json")
        for key, value in changes.items():
            d = data
            *parents, last = key.split(".")
            for p in parents:
                d = d[p]
            d[last] = value
        new = config_from_dict(data, where=str(self._source or "config"))
        new._base_dir, new._source, new._record = self._base_dir, self._source, self._record
        return new

    def to_json(self) -> str:
        """JSON text of the config (as given; paths unresolved)."""
        return json.dumps(self.model_dump(mode="json"), indent=2)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data["a"]["b"][2]["c"]`` for the key ``a.b[2].c``."""
    import re

    parts = [p for p in re.split(r"\.|\[(\d+)\]", key) if p]
    cur: Any = data
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    cur[int(last) if last.isdigit() else last] = value


# ---------------------------------------------------------------------- loading
def _known_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the sub-model at ``loc`` (to suggest corrections)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int) or cur is None:
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cur = _inner_model(ann)
    fields = getattr(cur, "model_fields", None)
    return list(fields) if fields else []


def _inner_model(ann: Any) -> Any:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _inner_model(arg)
        if m is not None:
            return m
    return None


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def _suggest(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(str(key), candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else (f"; known keys: {sorted(candidates)}" if candidates else "")


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None, prefix: tuple = ()) -> str:
    """One line describing every problem of a pydantic error, with key paths and suggestions."""
    msgs = []
    for e in exc.errors():
        loc = prefix + tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            msgs.append(f"{_format_loc(loc)}: unknown key" + _suggest(loc[-1], _known_keys(model, e["loc"][:-1])))
        elif e["type"] == "missing":
            msgs.append(f"{_format_loc(loc)}: required key missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            msgs.append(f"{_format_loc(loc)}: {msg} (got {e.get('input')!r})" if e["type"] != "value_error"
                        else f"{_format_loc(loc)}: {msg}")
    return "; ".join(msgs)


def _check_pipelines(cfg: RunConfig, where: str) -> None:
    from . import preprocess

    for i, p in enumerate(cfg.pipelines):
        try:
            preprocess.Pipeline.from_dict(p.model_dump(mode="json"))
        except ConfigError as exc:
            raise ConfigError(f"pipelines[{i}]: {exc.message}", where) from None


def _check_segmenters(cfg: RunConfig, where: str) -> None:
    from .segment import get_segmenter

    for i, s in enumerate(cfg.segmenters):
        try:
            seg = get_segmenter(s.backend)
        except ConfigError as exc:
            raise ConfigError(f"segmenters[{i}].backend: {exc.message}", where) from None
        known = list(seg.Params.model_fields)
        for key in list(s.params) + list(s.sweep):
            if key not in known:
                part = "params" if key in s.params else "sweep"
                raise ConfigError(
                    f"segmenters[{i}].{part}.{key}: unknown parameter of backend {s.backend!r}"
                    + _suggest(key, known), where)
        n_settings = 1
        for vals in s.sweep.values():
            n_settings *= len(vals)
        # a large sweep is checked value by value (each with the others' first values), so a
        # config of a million settings loads in milliseconds; plan() validates every setting
        settings = expand_sweep(s.sweep) if n_settings <= 1000 else [
            {**{k: v[0] for k, v in s.sweep.items()}, key: value}
            for key, vals in s.sweep.items() for value in vals]
        for values in settings:
            try:
                seg.Params.model_validate({**segmenter_defaults(cfg, seg), **s.params, **values})
            except ValidationError as exc:
                msgs = []
                for e in exc.errors():
                    key = str(e["loc"][0]) if e["loc"] else ""
                    part = "sweep" if key in s.sweep else "params"
                    rest = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in e["loc"][1:])
                    msgs.append(f"segmenters[{i}].{part}.{key}{rest}: {e['msg']} (got {e.get('input')!r})")
                raise ConfigError(f"{'; '.join(msgs)} (backend {s.backend!r})", where) from None


def _check_postprocess(cfg: RunConfig, where: str) -> None:
    if cfg.postprocess is None:
        return
    from . import postprocess

    try:
        postprocess.PostprocessConfig.model_validate(cfg.postprocess)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, postprocess.PostprocessConfig, ("postprocess",)),
                          where) from None


def segmenter_defaults(cfg: RunConfig, segmenter) -> dict[str, Any]:
    """Run-wide parameters a backend takes unless its entry overrides them (``device``)."""
    return {"device": cfg.execution.device} if "device" in segmenter.Params.model_fields else {}


def expand_sweep(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of a sweep, in the order the keys and values are given.

    Parameters
    ----------
    sweep : dict
        Parameter name -> list of values.

    Returns
    -------
    list of dict
        One dict per setting (``[{}]`` for an empty sweep).
    """
    import itertools

    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def _non_finite(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN/infinite number in a parsed config, or None."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return where or "(root)"
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def config_from_dict(data: dict, where: str = "config", check: bool = True) -> RunConfig:
    """Validate a dict into a :class:`RunConfig`.

    Parameters
    ----------
    data : dict
        The parsed JSON.
    where : str
        File name used in error messages.
    check : bool
        Also check pipelines, segmenter parameters and post-processing against
        their registries.

    Raises
    ------
    ConfigError
        One error listing every problem with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a run config must be a JSON object, got {type(data).__name__}", where)
    bad = _non_finite(data)
    if bad:  # JSON's NaN/Infinity would otherwise pass as "no bound" or be recorded as null
        raise ConfigError(f"{bad}: NaN and infinity are not values a config can hold", where)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, RunConfig), where) from None
    if check:
        _check_pipelines(cfg, where)
        _check_segmenters(cfg, where)
        _check_postprocess(cfg, where)
        _check_streaming(cfg, where)
    return cfg


def _check_streaming(cfg: RunConfig, where: str) -> None:
    """``outputs.labels_format: "ome-zarr"`` streams every item tile by tile: it needs
    ``execution.tiling`` and pipelines whose steps run tile by tile (checked before any compute)."""
    if cfg.outputs.labels_format != "ome-zarr":
        return
    if cfg.execution.tiling is None:
        raise ConfigError("outputs.labels_format 'ome-zarr' writes labels tile by tile: give execution.tiling "
                          "(tile_shape, overlap)", where)
    from . import preprocess
    from .postprocess import whole_image_options
    from .preprocess import Pipeline

    if cfg.postprocess is not None and whole_image_options(cfg.postprocess):
        raise ConfigError(f"postprocess {', '.join(whole_image_options(cfg.postprocess))} need(s) the whole label "
                          "image, so they cannot run with outputs.labels_format 'ome-zarr' (tile by tile); the "
                          "object-by-object options (fill_holes, min_size, max_size, remove_border, ranges) can", where)
    for i, p in enumerate(cfg.pipelines):
        pipeline = Pipeline.from_dict(p.model_dump(mode="json"))
        for j, step in enumerate(pipeline.steps):
            info = step.info()
            params = preprocess.registry.validate_params(info, step.params)
            # refused when no input dtype makes it local (whether integer data do is known per item)
            if all(info.tile_halo(params, (1.0, 1.0), dt) is None for dt in ("uint16", "float32")):
                raise ConfigError(f"pipelines[{i}].steps[{j}] ({step.name!r}) needs the whole image (a global "
                                  "statistic or a change of grid), so it cannot run tile by tile with "
                                  "outputs.labels_format 'ome-zarr'", where)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config from JSON.

    A run record (``run.json`` of a finished run) is accepted too: its
    ``config`` section is loaded, with relative paths resolved against the
    folder of the config the run was made from.

    Parameters
    ----------
    path : str or Path
        The JSON file.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        Missing file, invalid JSON, or invalid content (one message naming
        the file and every bad key).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found" if not path.exists() else "not a file", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file", path) from None
    base_dir = path.resolve().parent
    source = path
    record = None
    if isinstance(data, dict) and data.get("kind") == "opsef-run-record":
        record = path.resolve()
        if "config" not in data:
            raise ConfigError("run record has no 'config' section", path)
        resolved = data.get("resolved_paths") or {}
        base_dir = Path(resolved.get("base_dir") or base_dir)
        source = Path(data.get("config_path") or path)
        data = data["config"]
    cfg = config_from_dict(data, where=str(path))
    cfg._record = record
    return cfg.with_base_dir(base_dir, source)


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write a config as JSON (atomically).  Paths are written as given."""
    from .record import atomic_write_text

    return atomic_write_text(Path(path), config.to_json() + "\n")
