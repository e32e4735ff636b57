"""Tests of opsef_core.preprocess.Pipeline: validation errors, JSON round trip, key, describe, apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import exposure

from opsef_core.errors import AxesError, ConfigError
from opsef_core.image import Image
from opsef_core.preprocess import Pipeline, Step, apply_step
from opsef_core.preprocess.filters import MedianParams


def stack(seed=0, shape=(5, 32, 32)):
    """Nuclei-like stack: spots on a dim background with Poisson noise (uint16)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    img = np.full(shape, 40.0)
    for _ in range(6):
        cz, cy, cx = rng.uniform(1, shape[0] - 1), rng.uniform(5, shape[1] - 5), rng.uniform(5, shape[2] - 5)
        img += 400 * ((((z - cz) / 1.5) ** 2 + ((y - cy) / 4) ** 2 + ((x - cx) / 4) ** 2) <= 1)
    return rng.poisson(img).astype(np.uint16)


def fucci_pipeline(name="fucci"):
    return Pipeline(
        name,
        [
            Step("clip", {"low": 60, "mode": "zero_below"}),
            Step("gamma", {"gamma": 0.8}),
            Step("clahe", {"clip_limit": 0.02, "kernel_size": [2, 8, 8]}),
            Step("median", MedianParams(radius=1)),
            Step("tophat", {"radius": 6}),
        ],
    )


def test_unknown_step_name_names_pipeline_index_and_suggestion():
    with pytest.raises(ConfigError) as exc:
        Pipeline("mine", [Step("median"), Step("gausian", {"sigma": 1})])
    msg = str(exc.value)
    assert "pipeline 'mine'" in msg and "steps[1]" in msg and "'gausian'" in msg
    assert "did you mean 'gaussian'" in msg and "rolling_ball" in msg


def test_unknown_parameter_key_and_bad_value_are_config_errors():
    with pytest.raises(ConfigError) as exc:
        Pipeline("p", [Step("invert"), Step("median", {"radius": 2, "radiuss": 3})])
    msg = str(exc.value)
    assert "pipeline 'p'" in msg and "steps[1]" in msg and "'median'" in msg
    assert "unknown parameter 'radiuss'" in msg and "allowed: radius" in msg
    with pytest.raises(ConfigError) as exc:
        Pipeline.from_dict({"name": "q", "steps": [{"name": "clahe", "params": {"clip_limit": 5}}]})
    msg = str(exc.value)
    assert "pipeline 'q'" in msg and "steps[0]" in msg and "clip_limit=5" in msg
    with pytest.raises(ConfigError, match="must be greater than low"):
        Pipeline("r", [Step("normalize_percentile", {"low": 99, "high": 1})])


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"name": "x", "steps": "median"},
        {"name": "x", "steps": [{"step": "median"}]},
        {"name": "x", "steps": [], "colour": "red"},
        {"steps": []},
    ],
)
def test_malformed_dicts_are_config_errors(bad):
    with pytest.raises(ConfigError):
        Pipeline.from_dict(bad)


def test_json_round_trip_is_exact_and_key_is_stable():
    p = fucci_pipeline()
    text = json.dumps(p.to_dict())
    q = Pipeline.from_dict(json.loads(text))
    assert q == p
    assert q.key() == p.key() and len(p.key()) == 16
    assert json.dumps(q.to_dict()) == text  # to_dict is a fixed point
    # defaults are part of the record; giving them explicitly changes nothing
    d = p.to_dict()["steps"][3]
    assert d == {"name": "median", "params": {"radius": 1, "footprint": "disk", "anisotropic": False}}
    same = Pipeline("other name", [Step("median", {"radius": 1}), Step("clip", {})])
    assert same.key() == Pipeline("x", [Step("median", {"radius": 1, "footprint": "disk"}), "clip"]).key()
    assert same.key() != Pipeline("x", [Step("median", {"radius": 2}), "clip"]).key()
    assert same.key() != Pipeline("x", [Step("clip"), Step("median", {"radius": 1})]).key()  # order matters
    assert same != Pipeline("x", [Step("median", {"radius": 1}), "clip"])  # names differ
    geom = Pipeline("g", [Step("bin", {"factors": {"y": 2, "x": 2}}), Step("rescale", {"factor": 0.5})])
    assert Pipeline.from_dict(json.loads(json.dumps(geom.to_dict()))) == geom


def test_describe_for_montage_titles():
    p = Pipeline("a", [Step("median", {"radius": 2}), Step("clahe", {"clip_limit": 0.01})])
    assert p.describe() == "median(r=2) → clahe(clip=0.01)"
    assert Pipeline("raw", []).describe() == "raw"
    z = Pipeline("z", [Step("z_project", {"method": "sum"}), "invert"])
    assert z.describe() == "z_project(sum) → invert"
    assert "mode=zero_below" in fucci_pipeline().describe()


def test_raw_pipeline_returns_image_unchanged():
    img = Image.from_array(stack(), "ZYX", pixel_size={"Z": 2, "Y": 0.5, "X": 0.5})
    out = Pipeline("raw", []).apply(img)
    assert out is img and len(Pipeline("raw", [])) == 0


def test_apply_equals_steps_one_by_one_and_leaves_input_alone():
    raw = stack(1)
    before = raw.copy()
    img = Image.from_array(raw, "ZYX", pixel_size={"Z": 2, "Y": 0.5, "X": 0.5}, name="s1")
    p = fucci_pipeline()
    out = p.apply(img)
    np.testing.assert_array_equal(raw, before)
    # independent reference built from direct library calls
    f = raw.astype(np.float64)
    f = np.where(f < 60, 0, f)
    u = (f - f.min()) / (f.max() - f.min())
    g = (u**0.8).astype(np.float32)
    c = exposure.equalize_adapthist(g, kernel_size=(2, 8, 8), clip_limit=0.02).astype(np.float32)
    from skimage.morphology import ball, white_tophat

    m = ndi.median_filter(c, footprint=ball(1), mode="nearest")
    ref = white_tophat(m, ball(6))
    assert out.dtype == np.float32 and out.shape == raw.shape and out.name == "s1"
    np.testing.assert_allclose(out.data, ref, atol=1e-5)
    step_by_step = img
    for s in p.steps:
        step_by_step = apply_step(step_by_step, s.name, **s.params.model_dump())
    np.testing.assert_array_equal(out.data, step_by_step.data)


def test_projection_pipeline_on_multichannel_time_series():
    data = np.stack([np.stack([stack(2 * t + c) for c in range(2)]) for t in range(3)])  # TCZYX
    ps = {"Z": 2, "Y": 0.5, "X": 0.5}
    img = Image.from_array(data, "TCZYX", pixel_size=ps, channel_names=("red", "green"))
    p = Pipeline("proj", [Step("z_project", {"method": "max"}), Step("bin", {"factors": 2, "reduce": "max"})])
    out = p.apply(img)
    assert out.axes == "TCYX" and out.shape == (3, 2, 16, 16) and out.dtype == np.uint16
    assert out.pixel_size == {"Y": 1.0, "X": 1.0} and out.channel_names == ("red", "green")
    np.testing.assert_array_equal(out.data[2, 1], data[2, 1].max(0).reshape(16, 2, 16, 2).max(axis=(1, 3)))


def test_step_that_cannot_take_the_image_names_pipeline_and_file(tmp_path):
    img = Image.from_array(stack()[0], "YX", source=tmp_path / "plane.tif")
    with pytest.raises(AxesError) as exc:
        Pipeline("proj", [Step("median"), Step("z_project")]).apply(img)
    msg = str(exc.value)
    assert "plane.tif" in msg and "pipeline 'proj'" in msg and "steps[1]" in msg and "Z axis" in msg
