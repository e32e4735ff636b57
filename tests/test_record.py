"""The run record (run.json): environment facts, checksums, JSON round trip, atomic writes."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from opsef_core.config import config_from_dict
from opsef_core.errors import RunFolderError
from opsef_core.record import (
    InputFile,
    ItemStatus,
    atomic_write_text,
    git_commit,
    new_record,
    package_versions,
    read_record,
    sha256,
    write_record,
)


def test_package_versions_without_importing_heavy_libraries():
    code = ("import sys; from opsef_core.record import package_versions; v = package_versions(); "
            "print(v['numpy'], 'torch' in sys.modules, 'tensorflow' in sys.modules, 'cellpose' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [np.__version__, "False", "False", "False"]
    assert "not-a-package-xyz" not in package_versions(("numpy", "not-a-package-xyz"))


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert git_commit(tmp_path) is None
    here = git_commit()
    assert here is None or (len(here) == 40 and int(here, 16) >= 0)


def test_sha256_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several chunks
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert sha256(p) == hashlib.sha256(data).hexdigest()


def test_record_round_trip(tmp_path):
    cfg = config_from_dict({"inputs": {"path": "imgs"}, "pipelines": [{"name": "raw"}],
                            "segmenters": [{"name": "c", "backend": "classical"}], "seed": 3})
    cfg.with_base_dir(tmp_path)
    rec = new_record(cfg, tmp_path, combinations=[{"id": "p1-raw__s1-c"}], models=[{"backend": "classical"}],
                     inputs=[InputFile(path="/x/a.tif", size=10, sha256="0" * 64)], command_line=["opsef", "run"])
    rec.items = [ItemStatus(id="a", image="a", path="/x/a.tif", status="done", n_combinations=1)]
    path = write_record(rec, tmp_path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["seed"] == 3 and data["command_line"] == ["opsef", "run"]
    assert data["resolved_paths"]["inputs.path"] == str((tmp_path / "imgs").resolve())
    assert data["python"] == sys.version.split()[0] and data["packages"]["pydantic"]
    again = read_record(tmp_path)
    assert again == rec and again.item("a").status == "done" and again.item("b") is None


def test_read_record_errors(tmp_path):
    with pytest.raises(RunFolderError, match="not an opsef run folder"):
        read_record(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="run.json: run.json is not valid JSON"):
        read_record(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"kind": "opsef-run-record", "config": {}}))
    with pytest.raises(RunFolderError, match="not a valid run record"):
        read_record(tmp_path / "run.json")


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "run.json"
    atomic_write_text(p, "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    from opsef_core.record import _atomic

    with pytest.raises(RuntimeError):
        with _atomic(p, "w") as fh:
            fh.write("half")
            str(Boom())
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["run.json"]  # no temporary file left
