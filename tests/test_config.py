"""Run configs: JSON round trip, one clear error per bad key, path resolution, sweep expansion."""

import json
from pathlib import Path

import pytest

from opsef_core.config import RunConfig, config_from_dict, expand_sweep, load_config, save_config
from opsef_core.errors import ConfigError
from opsef_core.run import plan

REPO = Path(__file__).resolve().parents[1]


def base(**changes):
    cfg = {
        "inputs": {"path": "images", "ground_truth": "labels"},
        "pipelines": [{"name": "raw", "steps": []},
                      {"name": "smooth", "steps": [{"name": "gaussian", "params": {"sigma": 2.0}}]}],
        "segmenters": [{"name": "classical", "backend": "classical", "params": {"min_size": 5},
                        "sweep": {"sigma": [0.5, 1.0], "h": [1.0, 2.0, 3.0]}},
                       {"name": "cc", "backend": "classical", "params": {"h": 0}}],
    }
    cfg.update(changes)
    return cfg


def write(tmp_path, cfg, name="x.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


def test_json_round_trip(tmp_path):
    cfg = load_config(write(tmp_path, base(seed=7, postprocess={"min_size": 3})))
    assert cfg.seed == 7 and cfg.outputs.overlays and cfg.evaluation.thresholds[0] == 0.5
    out = save_config(cfg, tmp_path / "sub" / "copy.json")
    again = load_config(out)
    assert again.model_dump() == cfg.model_dump()
    assert json.loads(out.read_text())["inputs"]["path"] == "images"  # written as given


def test_demo_config_is_valid_and_resolves_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO / "configs" / "demo.json")
    assert cfg.resolve(cfg.inputs.path) == (REPO / "demo_data" / "nuclei2d" / "images").resolve()
    assert 3 <= len(cfg.pipelines) <= 4
    for example in sorted((REPO / "configs" / "examples").glob("*.json")):
        load_config(example)


def test_every_model_named_in_the_bundled_configs_resolves_offline():
    """Demo and example configs name models that ship in models/ (no download needed)."""
    from opsef_core.models import resolve_model

    named = []
    for path in [REPO / "configs" / "demo.json", *sorted((REPO / "configs" / "examples").glob("*.json"))]:
        cfg = load_config(path)
        for seg in cfg.segmenters:
            models = [seg.params.get("model")] + list(seg.sweep.get("model", []))
            named += [(path.name, seg.backend, m) for m in models if m is not None]
    assert {b for _, b, _ in named} >= {"stardist", "cellpose", "unet"}
    for where, backend, model in named:
        resolved = resolve_model(backend, model)
        assert resolved.path.exists() and resolved.source == "project", (where, model, resolved)
    demo = load_config(REPO / "configs" / "demo.json")
    assert {s.backend for s in demo.segmenters} == {"classical", "stardist", "cellpose", "unet"}


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(pipline=[]), "pipline: unknown key; did you mean 'pipelines'?"),
    (lambda c: c["inputs"].update(ground_truht="x"), "inputs.ground_truht: unknown key; did you mean 'ground_truth'?"),
    (lambda c: c["segmenters"][0]["sweep"].update(min_sise=[1]),
     "segmenters[0].sweep.min_sise: unknown parameter of backend 'classical'; did you mean 'min_size'?"),
    (lambda c: c["segmenters"][1].update(paramz={}), "segmenters[1].paramz: unknown key; did you mean 'params'?"),
    (lambda c: c["segmenters"][0]["sweep"].update(threshold=[0.5, "bogus"]), "segmenters[0].sweep.threshold"),
    (lambda c: c["pipelines"][1]["steps"][0].update(name="gausian"), "pipelines[1]"),
    (lambda c: c["segmenters"][1].update(backend="nope"), "segmenters[1].backend"),
    (lambda c: c.pop("segmenters"), "segmenters: required key missing"),
    (lambda c: c["inputs"].update(z_range=[5, 2]), "inputs.z_range"),
    (lambda c: c.update(postprocess={"min_sise": 3}), "postprocess.min_sise: unknown key; did you mean 'min_size'?"),
])
def test_bad_config_gives_one_error_naming_file_and_key(tmp_path, mutate, expected):
    cfg = base()
    mutate(cfg)
    path = write(tmp_path, cfg, "bad.json")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg


def test_invalid_json_and_missing_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"inputs": {"path": "x"},\n  "pipelines": [}')
    with pytest.raises(ConfigError, match=r"broken.json: invalid JSON at line 2"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.json")


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    cfg = load_config(write(tmp_path / "cfgs", base(inputs={"path": "../data/img", "ground_truth": "/abs/gt"})))
    monkeypatch.chdir("/")
    assert cfg.resolve(cfg.inputs.path) == (tmp_path / "data" / "img").resolve()
    resolved = cfg.resolved_paths()
    assert resolved["inputs.ground_truth"] == "/abs/gt"
    assert resolved["base_dir"] == str((tmp_path / "cfgs").resolve())
    assert cfg.inputs.path == "../data/img"  # kept as given


def test_sweep_expansion_counts_and_ids():
    assert expand_sweep({}) == [{}]
    grid = expand_sweep({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(grid) == 6 and grid[0] == {"a": 1, "b": "x"} and grid[-1] == {"a": 2, "b": "z"}
    cfg = config_from_dict(base())
    combos = plan(cfg)
    assert len(combos) == 2 * (2 * 3 + 1)
    ids = [c.id for c in combos]
    assert len(set(ids)) == len(ids)
    assert all(all(ch.isalnum() or ch in "._+-" for ch in i.replace("__", "")) for i in ids)
    assert ids[0] == "p1-raw__s1-classical_sigma0.5_h1"
    assert ids[-1] == "p2-smooth__s7-cc"
    # sigma changes the classical network pass, h does not: 2 keys for the sweep, and "cc"
    # (default sigma 1.0) shares the sigma=1.0 pass although it is another segmenter entry
    assert len({c.network_key for c in combos}) == 2
    assert combos[-1].network_key == combos[3].network_key and combos[3].sweep["sigma"] == 1.0
    assert combos[0].params["min_size"] == 5 and combos[0].sweep == {"sigma": 0.5, "h": 1.0}


def test_copy_with_overrides_and_validates():
    cfg = config_from_dict(base())
    assert cfg.copy_with(**{"inputs.limit": 3}).inputs.limit == 3
    with pytest.raises(ConfigError, match="inputs.limit"):
        cfg.copy_with(**{"inputs.limit": 0})
    assert isinstance(cfg, RunConfig) and cfg.inputs.limit is None
