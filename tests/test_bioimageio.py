"""bioimage.io packages: export opsef's U-Net and StarDist models, validate, run a package as a model."""

import hashlib
import json
import os
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import REPO

# bioimageio.spec reads its settings at import: keep its cache out of the home folder
os.environ.setdefault("BIOIMAGEIO_CACHE_PATH",
                      str(Path(os.environ.get("TMPDIR", "/tmp")) / "opsef-bioimageio-cache"))

from opsef_core.cli import main
from opsef_core.errors import ModelNotFoundError
from opsef_core.io import read_image
from opsef_core.segment import get_segmenter
from opsef_core.zoo.bioimageio import (
    export_bioimageio,
    extract,
    is_package,
    read_package,
    reproduce_test_outputs,
    validate_package,
)

NUCLEI = REPO / "demo_data" / "nuclei2d" / "images" / "nuclei_04.tif"
SPHEROID = REPO / "demo_data" / "spheroid_clearing" / "noncleared" / "images" / "spheroid_00.tif"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach another machine fails the test (packages are local files only)."""
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError(f"DNS lookup attempted: {a[:2]}")))


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Exported packages, made once for the module: {name: zip}."""
    root = tmp_path_factory.mktemp("pkgs")
    made = {}

    def get(name):
        if name not in made:
            made[name] = export_bioimageio(name, root / f"{name}.zip")
        return made[name]

    return get


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rewrite_rdf(src: Path, dst: Path, edit) -> Path:
    """Copy a package zip, passing its rdf.yaml through ``edit(dict) -> dict``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "rdf.yaml":
                data = yaml.safe_dump(edit(yaml.safe_load(data))).encode()
            zout.writestr(item, data)
    return dst


def _same_labels(backend: str, image_path: Path, bundled: str, package: Path, **params) -> np.ndarray:
    seg = get_segmenter(backend)
    img = read_image(image_path)
    a = seg.segment(img, {"model": bundled, "device": "cpu", **params})
    b = seg.segment(img, {"model": str(package), "device": "cpu", **params})
    assert a.max() > 5, "the bundled model finds the demo nuclei"
    assert a.shape == b.shape and np.array_equal(a, b)
    return b


# ------------------------------------------------------------------------------ export + round trip
@pytest.mark.slow
def test_unet2d_package_validates_reproduces_and_segments_like_the_bundled_model(packages, tmp_path):
    pkg = packages("unet2d_demo")
    summary = validate_package(pkg)
    assert summary["status"] in ("valid-format", "passed"), summary["errors"]
    assert summary["format_version"].startswith("0.5")
    result = reproduce_test_outputs(pkg)
    assert result["status"] == "passed", result
    assert result["outputs"]["probabilities"]["mismatched"] == 0
    info = read_package(pkg)
    assert info.backend == "unet" and info.opsef["variant"] == "3class"
    assert info.opsef["decode"]["prob_threshold"] == 0.5 and info.opsef["normalize"] == [1.0, 99.8]
    x = info.descr.inputs[0]
    assert [str(a.id) for a in x.axes] == ["batch", "channel", "y", "x"]
    assert x.axes[2].scale == 0.5 and x.axes[2].unit == "micrometer"  # the card's pixel size
    assert info.descr.weights.torchscript is not None and info.descr.covers
    with zipfile.ZipFile(pkg) as zf:
        assert "README.md" in zf.namelist()
    for thr in (0.5, 0.7):  # the decoding comes from opsef's decoder, at any threshold
        _same_labels("unet", NUCLEI, "unet2d_demo", pkg, prob_threshold=thr)
    desc = get_segmenter("unet").describe_model({"model": str(pkg)})
    assert desc["checksum"] == _sha256(pkg) and desc["variant"] == "3class"
    rdf = extract(pkg, tmp_path / "unpacked")  # the unpacked folder and its rdf.yaml are packages too
    for unpacked in (rdf.parent, rdf):
        _same_labels("unet", NUCLEI, "unet2d_demo", unpacked)


@pytest.mark.slow
def test_stardist2d_package_validates_reproduces_and_segments_like_the_bundled_model(packages):
    pkg = packages("stardist2d_demo")
    assert validate_package(pkg)["status"] in ("valid-format", "passed")
    result = reproduce_test_outputs(pkg)
    assert result["status"] == "passed", result
    info = read_package(pkg)
    thresholds = json.loads((REPO / "models" / "stardist2d_demo" / "thresholds.json").read_text())
    assert info.opsef["decode"] == {"prob_thresh": thresholds["prob"], "nms_thresh": thresholds["nms"]}
    assert info.opsef["n_rays"] == 32 and info.opsef["grid"] == [2, 2]
    assert info.stardist["thresholds"] == thresholds  # StarDist's own layout too
    prob = next(t for t in info.descr.outputs if str(t.id) == "prob")
    assert prob.axes[1].scale == pytest.approx(1.0)  # 0.5 µm pixels at grid 2
    assert info.descr.weights.keras_hdf5 is not None
    _same_labels("stardist", NUCLEI, "stardist2d_demo", pkg)  # the model's thresholds
    _same_labels("stardist", NUCLEI, "stardist2d_demo", pkg, prob_thresh=0.7, nms_thresh=0.4)
    desc = get_segmenter("stardist").describe_model({"model": str(pkg)})
    assert desc["checksum"] == _sha256(pkg) and desc["thresholds"] == thresholds


@pytest.mark.slow
def test_unet3d_package_segments_like_the_bundled_model(packages):
    pkg = packages("unet3d_demo")
    assert reproduce_test_outputs(pkg)["status"] == "passed"
    axes = read_package(pkg).descr.inputs[0].axes
    assert [str(a.id) for a in axes] == ["batch", "channel", "z", "y", "x"]
    assert [a.scale for a in axes[2:]] == [2.0, 0.5, 0.5]
    _same_labels("unet", SPHEROID, "unet3d_demo", pkg)
    # the package records the decoding stored beside the model's weights (chosen on validation stacks)
    stored = json.loads((REPO / "models" / "unet3d_demo" / "config.json").read_text()).get("decoding") or {}
    decode = read_package(pkg).opsef["decode"]
    assert stored and {k: decode[k] for k in stored} == stored


@pytest.mark.slow
def test_a_foreign_stardist_package_with_config_stardist_runs(packages, tmp_path):
    """StarDist's exporter writes config.stardist (config, thresholds); without config.opsef it still runs."""
    def strip(rdf):
        rdf["config"].pop("opsef")
        return rdf

    foreign = _rewrite_rdf(packages("stardist2d_demo"), tmp_path / "foreign.zip", strip)
    info = read_package(foreign)
    assert info.backend == "stardist" and info.opsef == {}
    _same_labels("stardist", NUCLEI, "stardist2d_demo", foreign)


@pytest.mark.slow
def test_a_package_in_a_run_config_is_recorded_with_the_zip_checksum(packages, tmp_path):
    from opsef_core.run import execute

    shutil.copy(packages("unet2d_demo"), tmp_path / "unet2d_demo.zip")
    cfg = {
        "inputs": {"path": str(NUCLEI.parent), "limit": 1},
        "pipelines": [{"name": "raw", "steps": []}],
        "segmenters": [
            {"name": "bundled", "backend": "unet", "params": {"model": "unet2d_demo", "device": "cpu"}},
            {"name": "pkg", "backend": "unet", "params": {"model": "unet2d_demo.zip", "device": "cpu"}},
        ],
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run = execute(tmp_path / "cfg.json", out=tmp_path / "runs", progress=False)
    record = json.loads((run / "run.json").read_text())
    models = {m["segmenter"]: m for m in record["models"]}
    assert models["pkg"]["checksum"] == _sha256(tmp_path / "unet2d_demo.zip")
    assert Path(models["pkg"]["path"]) == (tmp_path / "unet2d_demo.zip").resolve()  # config-relative
    a, b = (tifffile.imread(next((run / "labels").glob(f"*__*{s}*.tif"))) for s in ("bundled", "pkg"))
    assert a.max() > 5 and np.array_equal(a, b)


# ------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_exports_a_package_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "sub" / "unet.zip"
    assert main(["models", "export-bioimageio", "unet2d_demo", "--out", str(out), "--crop", "64",
                 "--test"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert Path(lines[-1]) == out and out.is_file() and "reproduced" in lines[-2]
    info = read_package(out)
    assert info.descr.inputs[0].test_tensor is not None
    from bioimageio.spec.utils import load_array

    assert load_array(info.descr.inputs[0].test_tensor).shape == (1, 1, 64, 64)


def test_cli_export_refuses_a_model_it_cannot_export(tmp_path, capsys):
    assert main(["models", "export-bioimageio", "cellpose_demo", "--out", str(tmp_path / "c.zip")]) == 2
    assert "cellpose" in capsys.readouterr().err
    assert main(["models", "export-bioimageio", "unet2d_demo", "--out", str(tmp_path / "c.tar")]) == 2
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ bad packages
def test_is_package_recognises_zips_folders_and_rdf(tmp_path):
    (tmp_path / "pkg").mkdir()
    assert not is_package(tmp_path / "pkg")
    (tmp_path / "pkg" / "rdf.yaml").write_text("type: model\n")
    assert is_package(tmp_path / "pkg") and is_package(tmp_path / "pkg" / "rdf.yaml")
    assert not is_package(REPO / "models" / "unet2d_demo")  # a model folder is not a package
    assert not is_package(tmp_path / "missing.zip")


def test_a_zip_that_is_not_a_package_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("notes.txt", "hello")
    for backend in ("unet", "stardist"):
        with pytest.raises(ModelNotFoundError, match="no rdf.yaml|without rdf.yaml") as exc:
            get_segmenter(backend).load_model({"model": str(bad)})
        assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelNotFoundError, match="broken.zip"):
        get_segmenter("unet").load_model({"model": str(broken)})


def test_an_invalid_rdf_is_a_clear_error(tmp_path):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "rdf.yaml").write_text("type: model\nformat_version: 0.5.4\nname: x\n")
    with pytest.raises(ModelNotFoundError, match="invalid bioimage.io package") as exc:
        read_package(folder)
    assert str(folder) in str(exc.value)


@pytest.mark.slow
def test_packages_opsef_cannot_decode_or_of_another_backend_fail_clearly(packages, tmp_path):
    def strip(rdf):
        rdf["config"].pop("opsef")
        return rdf

    foreign = _rewrite_rdf(packages("unet2d_demo"), tmp_path / "foreign_unet.zip", strip)
    with pytest.raises(ModelNotFoundError, match="without config.opsef") as exc:
        get_segmenter("unet").load_model({"model": str(foreign)})
    assert "foreign_unet.zip" in str(exc.value)
    with pytest.raises(ModelNotFoundError, match="backend 'unet'"):  # a U-Net package given to StarDist
        get_segmenter("stardist").describe_model({"model": str(packages("unet2d_demo"))})
    with pytest.raises(ModelNotFoundError, match="ModelNotFound|not a StarDist|backend 'unet'"):
        get_segmenter("stardist").load_model({"model": str(packages("unet2d_demo"))})


# ------------------------------------------------------------------------------ opsef models: packages
@pytest.mark.slow
def test_packages_in_models_and_given_paths_are_listed_with_their_cards(packages, tmp_path, monkeypatch, caplog):
    """A package zip under models/ (or given) is listed like a folder, with the card it carries."""
    from opsef_core.zoo.cards import build_card
    from opsef_core.zoo.listing import find_models, format_models

    project = tmp_path / "models"
    project.mkdir()
    shutil.copy(packages("unet2d_demo"), project / "nuclei_pkg.zip")
    (project / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")

    def strip(rdf):
        rdf["config"].pop("opsef")
        return rdf

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    foreign = _rewrite_rdf(packages("stardist2d_demo"), elsewhere / "foreign_sd.zip", strip)
    monkeypatch.setenv("OPSEF_MODELS_DIR", str(project))
    with caplog.at_level("WARNING"):
        found = {c["name"]: c for c in find_models([elsewhere], caches=False)}
    assert set(found) == {"nuclei_pkg", "foreign_sd"}
    assert any("broken.zip" in r.getMessage() for r in caplog.records)  # skipped, and said so
    pkg, bundled = found["nuclei_pkg"], build_card(REPO / "models" / "unet2d_demo")
    assert (pkg["backend"], pkg["dims"], pkg["source"], pkg["card_file"]) == ("unet", 2, "project", "package")
    assert pkg["sha256"] == _sha256(project / "nuclei_pkg.zip")  # the value run records hold for it
    for key in ("expects", "validation", "training_data"):
        assert pkg[key] == json.loads(json.dumps(bundled[key])), key
    assert pkg["variant"] == bundled["variant"] and pkg["package"]["exported_from"] == "unet2d_demo"
    sd = found["foreign_sd"]  # no config.opsef: what config.stardist says
    thr = json.loads((REPO / "models" / "stardist2d_demo" / "thresholds.json").read_text())
    assert (sd["backend"], sd["dims"], sd["source"]) == ("stardist", 2, "path")
    assert sd["recommended"]["prob_thresh"] == pytest.approx(thr["prob"], abs=1e-4)
    table = format_models(list(found.values()))
    assert "nuclei_pkg" in table and str(foreign) in table
    given = shutil.copy(project / "broken.zip", elsewhere / "given.zip")
    with pytest.raises(ModelNotFoundError, match="given.zip"):  # named by the user: an error, not a skip
        find_models([given], caches=False)


@pytest.mark.slow
def test_evaluate_scores_a_package_like_its_source_model(packages, tmp_path, capsys):
    import pandas as pd

    nuclei = REPO / "demo_data" / "nuclei2d"
    pkg = shutil.copy(packages("unet2d_demo"), tmp_path / "nuclei_pkg.zip")
    rc = main(["models", "evaluate", "--images", str(nuclei / "images"), "--labels", str(nuclei / "labels"),
               "--models", "unet2d_demo", str(pkg), "--limit", "1", "--out", str(tmp_path / "runs"),
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    board = pd.read_csv(run / "leaderboard.csv").set_index("model")
    assert sorted(board.index) == ["nuclei_pkg", "unet2d_demo"]
    assert board.loc["nuclei_pkg", "sha256"] == _sha256(Path(pkg))
    assert board.loc["unet2d_demo", "f1@0.5_mean"] > 0.5
    assert board.loc["nuclei_pkg", "f1@0.5_mean"] == board.loc["unet2d_demo", "f1@0.5_mean"]
