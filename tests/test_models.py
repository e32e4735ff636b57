"""The model registry (opsef_core.models): paths, project folder, caches, checksums."""

import hashlib
import os
import time

import pytest

from opsef_core import models
from opsef_core.errors import ModelNotFoundError


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    d = tmp_path / "project_models"
    d.mkdir()
    monkeypatch.setenv("OPSEF_MODELS_DIR", str(d))
    return d


def _model_folder(root, name, weights=b"w" * 1000):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"n_dim": 2}')
    (folder / "weights_best.h5").write_bytes(weights)
    return folder


def test_explicit_path_file_and_folder(tmp_path, project_dir):
    f = tmp_path / "net.pth"
    f.write_bytes(b"abc")
    r = models.resolve_model("unet", str(f))
    assert r.source == "path" and r.path == f.resolve()
    assert r.checksum == hashlib.sha256(b"abc").hexdigest()  # independent reference
    folder = _model_folder(tmp_path, "m")
    r2 = models.resolve_model("stardist", folder)
    assert r2.source == "path" and r2.path == folder.resolve()
    assert r2.to_dict()["path"] == str(folder.resolve())


def test_project_folder_by_name(project_dir):
    folder = _model_folder(project_dir, "mynet")
    (project_dir / "cp_model.pt").write_bytes(b"xyz")
    r = models.resolve_model("stardist", "mynet")
    assert r.source == "project" and r.path == folder.resolve()
    r2 = models.resolve_model("cellpose", "cp_model")  # a file with a suffix
    assert r2.source == "project" and r2.path.name == "cp_model.pt"


def test_missing_path_and_name_errors(tmp_path, project_dir):
    missing = tmp_path / "nope" / "model.pth"
    with pytest.raises(ModelNotFoundError) as exc:
        models.resolve_model("unet", str(missing))
    assert str(missing) in str(exc.value) and "does not exist" in str(exc.value)
    with pytest.raises(ModelNotFoundError) as exc:
        models.resolve_model("unet", "no_such_model", download=False)
    msg = str(exc.value)
    assert "no_such_model" in msg and str(project_dir / "no_such_model") in msg


def test_search_hook_and_fetcher(tmp_path, project_dir):
    cache = tmp_path / "cache"
    _model_folder(cache, "cached_net")
    models.register_search("_testbackend", lambda name: [cache / name], hint="HINT-TEXT")
    r = models.resolve_model("_testbackend", "cached_net")
    assert r.source == "cache" and r.path == (cache / "cached_net").resolve()

    def failing_fetch(name):
        raise ConnectionError("no network here")

    models.register_fetcher("_testbackend", failing_fetch)
    with pytest.raises(ModelNotFoundError) as exc:
        models.resolve_model("_testbackend", "other_net")
    msg = str(exc.value)
    assert "other_net" in msg and "no network here" in msg and "HINT-TEXT" in msg
    assert str(cache / "other_net") in msg


def test_checksum_stable_and_changes_with_content(tmp_path):
    folder = _model_folder(tmp_path, "m")
    c1 = models.file_checksum(folder)
    assert c1 == models.file_checksum(folder)
    # a fresh copy with the same content has the same checksum (names + bytes, not times)
    other = _model_folder(tmp_path / "copy", "m")
    assert models.file_checksum(other) == c1
    # changing one file's bytes (same size) changes the checksum
    w = folder / "weights_best.h5"
    w.write_bytes(b"x" * 1000)
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    os.utime(folder, ns=(folder.stat().st_atime_ns, folder.stat().st_mtime_ns + 5_000_000))
    c2 = models.file_checksum(folder)
    assert c2 != c1
    # a file's checksum is its SHA-256
    assert models.file_checksum(w) == hashlib.sha256(b"x" * 1000).hexdigest()


def test_checksum_sees_changes_inside_folder_without_folder_mtime_change(tmp_path):
    folder = _model_folder(tmp_path, "m")
    c1 = models.file_checksum(folder)
    time.sleep(0.01)
    w = folder / "weights_best.h5"
    before = folder.stat().st_mtime_ns
    w.write_bytes(b"y" * 1000)  # rewriting an existing file leaves the folder's mtime unchanged
    assert folder.stat().st_mtime_ns == before
    assert models.file_checksum(folder) != c1


def test_card_is_not_part_of_a_folder_checksum(tmp_path):
    """A model card (card.json) describes the model; writing it keeps the checksum runs recorded."""
    folder = _model_folder(tmp_path, "m")
    before = models.file_checksum(folder)
    (folder / models.CARD_NAME).write_text('{"card_version": 1}')
    assert models.file_checksum(folder) == before
    (folder / "notes.json").write_text("{}")  # any other file still counts
    assert models.file_checksum(folder) != before
