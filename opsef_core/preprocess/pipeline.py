"""``Step`` and ``Pipeline``: an ordered, named list of preprocessing steps.

A pipeline validates every step's parameters when it is built (a
:class:`~opsef_core.errors.ConfigError` names the pipeline, the step's index in
``steps``, the step's name and the bad key or value), round-trips through JSON
exactly (``Pipeline.from_dict(json.loads(json.dumps(p.to_dict()))) == p``), has a
stable content hash (:meth:`Pipeline.key`) for caching and a short description
for montage row titles (:meth:`Pipeline.describe`).  An empty pipeline returns
the image unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import ConfigError, OpsefError
from ..image import Image
from .registry import StepInfo, StepParams, get_step, validate_params

__all__ = ["Step", "Pipeline", "apply_step"]

logger = logging.getLogger(__name__)

# bump when a step's numerical behaviour changes, so cached results are not reused
KEY_VERSION = 1
ARROW = " → "


@dataclass(frozen=True)
class Step:
    """One preprocessing step: a registered name and its parameters.

    Parameters
    ----------
    name : str
        Registry name (see :func:`~opsef_core.preprocess.available_steps`).
    params : dict or StepParams
        Parameters; missing keys take their defaults.  Validated when the step is
        put into a :class:`Pipeline` (or by :meth:`validated`).
    """

    name: str
    params: Any = field(default_factory=dict)

    def validated(self, where: str = "") -> "Step":
        """Return a copy whose ``params`` is the validated parameter model.

        Raises
        ------
        ConfigError
            For an unknown step name, an unknown parameter or a bad value.
        """
        info = self.info(where)
        return Step(self.name, validate_params(info, self.params, where or f"step {self.name!r}"))

    def info(self, where: str = "") -> StepInfo:
        """The registry entry of this step (ConfigError for an unknown name)."""
        try:
            return get_step(self.name)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}" if where else exc.message) from None

    def params_dict(self) -> dict:
        """All parameters (defaults included) as JSON types."""
        p = self.params if isinstance(self.params, StepParams) else self.validated().params
        return p.model_dump(mode="json")

    def describe(self) -> str:
        """Short text such as ``median(r=2)``: headline parameters and those changed from the defaults."""
        info = self.info()
        p = self.params_dict()
        defaults = info.defaults()
        parts = []
        for k, v in p.items():
            if k not in info.headline and v == defaults.get(k):
                continue
            if k in info.headline and v is None:
                continue
            if isinstance(v, str) and k in info.headline:
                parts.append(v)
            else:
                parts.append(f"{info.abbrev.get(k, k)}={_fmt(v)}")
        return f"{self.name}({', '.join(parts)})" if parts else self.name


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return ",".join(f"{k}{_fmt(x)}" for k, x in v.items())
    return str(v)


class Pipeline:
    """An ordered, named list of preprocessing steps.

    Parameters
    ----------
    name : str
        Pipeline name (used in run folders, tables and montage rows).
    steps : iterable of Step, dict or str
        Steps in order; a dict is ``{"name": ..., "params": {...}}``, a string a
        step with default parameters.  An empty list is the ``raw`` pipeline.

    Raises
    ------
    ConfigError
        When a step name, parameter key or value is invalid; the message names
        the pipeline, ``steps[i]`` and the step.
    """

    def __init__(self, name: str, steps: Iterable[Step | dict | str] = ()):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a pipeline needs a non-empty name, got {name!r}")
        self.name = name
        if isinstance(steps, (str, dict, Step)):
            raise ConfigError(f"pipeline {name!r}: steps must be a list, got {steps!r}")
        self._steps = tuple(self._coerce(i, s).validated(self._where(i, s)) for i, s in enumerate(steps))

    # ------------------------------------------------------------------ building
    def _where(self, i: int, step: Any) -> str:
        sname = step.name if isinstance(step, Step) else step.get("name") if isinstance(step, dict) else step
        return f"pipeline {self.name!r}, steps[{i}] ({sname!r})"

    def _coerce(self, i: int, step: Any) -> Step:
        if isinstance(step, Step):
            return step
        if isinstance(step, str):
            return Step(step)
        if isinstance(step, dict):
            extra = sorted(set(step) - {"name", "params"})
            if "name" not in step or extra:
                raise ConfigError(
                    f"pipeline {self.name!r}, steps[{i}]: a step is {{'name': ..., 'params': {{...}}}}, "
                    f"got keys {sorted(step)}"
                )
            return Step(step["name"], step.get("params") or {})
        raise ConfigError(f"pipeline {self.name!r}, steps[{i}]: expected a step, got {step!r}")

    @property
    def steps(self) -> list[Step]:
        """The validated steps (parameters are model instances)."""
        return list(self._steps)

    @classmethod
    def from_dict(cls, d: dict) -> "Pipeline":
        """Build a pipeline from ``{"name": ..., "steps": [{"name": ..., "params": {...}}, ...]}``.

        Raises
        ------
        ConfigError
            For a malformed mapping or invalid steps.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a pipeline is a mapping with 'name' and 'steps', got {d!r}")
        extra = sorted(set(d) - {"name", "steps"})
        if extra or "name" not in d:
            raise ConfigError(
                f"pipeline {d.get('name')!r}: a pipeline has keys 'name' and 'steps'; got {sorted(d)}"
            )
        steps = d.get("steps") or []
        if not isinstance(steps, list):
            raise ConfigError(f"pipeline {d['name']!r}: 'steps' must be a list, got {steps!r}")
        return cls(d["name"], steps)

    def to_dict(self) -> dict:
        """JSON-serialisable form, every parameter included (defaults too)."""
        steps = [{"name": s.name, "params": s.params_dict()} for s in self._steps]
        return {"name": self.name, "steps": steps}

    # ------------------------------------------------------------------ identity
    def key(self) -> str:
        """Stable hash (16 hex digits) of the steps and their full parameters, for caching.

        The pipeline's name is not part of it: two pipelines with the same steps
        produce the same images and share a key.
        """
        payload = json.dumps(
            {"v": KEY_VERSION, "steps": self.to_dict()["steps"]}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """Short human text, e.g. ``"median(r=2) → clahe(clip=0.01)"``; ``"raw"`` when empty."""
        return ARROW.join(s.describe() for s in self._steps) if self._steps else "raw"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.name == other.name and self._steps == other._steps

    def __hash__(self) -> int:
        return hash((self.name, self.key()))

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}: {self.describe()})"

    # ------------------------------------------------------------------ running
    def apply(self, image: Image) -> Image:
        """Run the steps in order on an image.

        Parameters
        ----------
        image : Image
            Input (never modified).

        Returns
        -------
        Image
            The preprocessed image (the input itself for an empty pipeline).

        Raises
        ------
        ConfigError, AxesError
            When a step cannot take the image (e.g. ``z_project`` without a Z axis,
            per-axis parameters of the wrong length); the message names the
            pipeline, the step and the image's source file.
        """
        if not isinstance(image, Image):
            raise TypeError(f"Pipeline.apply takes an opsef_core.image.Image, got {type(image).__name__}")
        for i, step in enumerate(self._steps):
            where = f"pipeline {self.name!r}, steps[{i}] ({step.name!r})"
            info = step.info(where)
            params = validate_params(info, step.params, where)
            t0 = time.perf_counter()
            try:
                image = info.func(image, params)
            except OpsefError as exc:
                raise type(exc)(f"{where}: {exc.message}", exc.path or image.source) from None
            except ValueError as exc:
                raise ConfigError(f"{where}: cannot apply to {image!r}: {exc}", image.source) from exc
            logger.debug("%s: %.3f s -> %r", where, time.perf_counter() - t0, image)
        return image


def apply_step(image: Image, name: str, **params: Any) -> Image:
    """Apply one registered step with keyword parameters (convenience for notebooks).

    Examples
    --------
    >>> out = apply_step(image, "median", radius=2)  # doctest: +SKIP
    """
    return Pipeline("single_step", [Step(name, params)]).apply(image)
