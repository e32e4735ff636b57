"""Preprocessing: a registry of named steps and ``Pipeline`` = ordered steps.

Each step is a function of an :class:`~opsef_core.image.Image` plus a pydantic
parameter model.  Built-in steps (``available_steps()`` lists them with their
dimensionality and output dtype):

===================== ========= ==================================================
step                  dims      output dtype
===================== ========= ==================================================
median                2d3d      same as input
mean                  2d3d      same as input
gaussian              2d3d      same as input
unsharp               2d3d      same as input
subtract_constant     2d3d      same as input (unsigned clipped at 0)
rolling_ball          2d        same as input; applied to each z plane of a stack
tophat                2d3d      same as input
subtract_tophat       2d3d      same as input (image minus its white top-hat, >= 0)
z_project             3d-to-2d  max/min/median same; sum wider int; mean/std float32
clahe                 2d3d      float32 in [0, 1]
gamma                 2d3d      float32 in [0, 1]
normalize_percentile  2d3d      float32 ([0, 1] when clip)
edges                 2d3d      float32 (roberts: per z plane on stacks)
invert                2d3d      same as input
clip                  2d3d      same as input
bin                   2d3d      mean float32, sum wider int, max same; pixel size x factor
rescale               2d3d      same as input; pixel size updated
colour_deconvolution  rgb C     float32 stain density; C axis consumed
===================== ========= ==================================================

Example
-------
>>> from opsef_core.preprocess import Pipeline, Step
>>> p = Pipeline("fucci", [Step("clip", {"low": 5, "mode": "zero_below"}), Step("median", {"radius": 2})])
>>> p.describe()
'clip(low=5, mode=zero_below) → median(r=2)'
"""

# importing the step modules registers the built-in steps
from . import background, colour, contrast, edges, filters, geometry, intensity, projection  # noqa: F401
from .pipeline import Pipeline, Step, apply_step
from .registry import (
    StepInfo,
    StepParams,
    available_steps,
    get_step,
    map_spatial,
    register_step,
    spatial_step,
)

__all__ = [
    "Pipeline",
    "Step",
    "apply_step",
    "StepInfo",
    "StepParams",
    "available_steps",
    "get_step",
    "register_step",
    "spatial_step",
    "map_spatial",
]
