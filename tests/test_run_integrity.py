"""Run integrity: the record is enforced on re-run and resume, exit codes tell the truth, one
writer per run folder, SIGTERM and a full disk leave a consistent, resumable run.json."""

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core import io
from opsef_core.cli import main
from opsef_core.errors import RecordMismatchError, RunFolderError, RunWriteError
from opsef_core.record import read_record
from opsef_core.run import execute
from opsef_core.run.integrity import LOCK_NAME, RunLock, config_digest

REPO = Path(__file__).resolve().parents[1]


def _dataset(root: Path, n=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:48, :48]
    for k in range(n):
        lab = np.zeros((48, 48), np.uint16)
        for i, (cy, cx) in enumerate([(12, 12), (12, 36), (36, 24)][: 2 + k % 2], start=1):
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = i
        img = (60 + 700 * (lab > 0) + rng.normal(0, 10, lab.shape)).clip(0).astype(np.uint16)
        tifffile.imwrite(root / "images" / f"im{k}.tif", img)
        tifffile.imwrite(root / "labels" / f"im{k}.tif", lab)
    cfg = {"inputs": {"path": "images", "ground_truth": "labels"},
           "pipelines": [{"name": "raw", "steps": []}],
           "segmenters": [{"name": "classical", "backend": "classical", "params": {"min_size": 5},
                           "sweep": {"h": [1.0, 2.0]}}],
           "outputs": {"montage": False}}
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _labels(run: Path) -> dict:
    return {p.name: tifffile.imread(p) for p in sorted((run / "labels").glob("*.tif"))}


def test_rerun_and_resume_refuse_changed_inputs_unless_accepted(tmp_path, capsys):
    cfg = _dataset(tmp_path / "d")
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    img = tmp_path / "d" / "images" / "im1.tif"
    tifffile.imwrite(img, np.flipud(tifffile.imread(img)))  # the input changes after the run
    assert main(["run", str(run / "run.json"), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "im1.tif" in err[0] and "changed since the run was recorded" in err[0]
    with pytest.raises(RecordMismatchError, match="im1.tif"):
        execute(None, resume=run, progress=False)
    # a new file in the input folder is a change too
    tifffile.imwrite(tmp_path / "d" / "images" / "im9.tif", tifffile.imread(img))
    with pytest.raises(RecordMismatchError, match="new"):
        execute(run / "run.json", out=tmp_path / "runs", progress=False, accept_changes=False)
    again = execute(run / "run.json", out=tmp_path / "runs", progress=False, accept_changes=True)
    rec = read_record(again)
    assert any("im1.tif" in line for line in rec.changes_accepted)
    entry = next(f for f in rec.inputs if f.path.endswith("im1.tif"))
    from opsef_core.record import sha256

    assert entry.sha256 == sha256(img)  # the new checksum is the one recorded


def test_resume_refuses_an_edited_recorded_config(tmp_path):
    run = execute(_dataset(tmp_path / "d"), out=tmp_path / "runs", progress=False)
    data = json.loads((run / "run.json").read_text())
    assert data["config_sha256"] == config_digest(data["config"])
    data["config"]["segmenters"][0]["params"]["min_size"] = 200
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(RecordMismatchError, match="edited"):
        execute(None, resume=run, progress=False)


def test_resume_retries_partial_items(tmp_path, monkeypatch):
    cfg = _dataset(tmp_path / "d")
    from opsef_core.segment import get_segmenter

    seg = type(get_segmenter("classical"))
    orig = seg.decode
    calls = {"n": 0}

    def flaky(self, pred, image, params):
        calls["n"] += 1
        if params.h == 2.0 and calls["n"] <= 2:  # h=2 fails on the first image: it is partial
            raise RuntimeError("transient")
        return orig(self, pred, image, params)

    monkeypatch.setattr(seg, "decode", flaky)
    run = execute(cfg, out=tmp_path / "runs", progress=False)
    rec = read_record(run)
    assert rec.status == "completed_with_errors" and rec.items[0].status == "partial"
    monkeypatch.setattr(seg, "decode", orig)
    execute(None, resume=run, progress=False)
    rec = read_record(run)
    assert rec.status == "completed" and all(it.status == "done" for it in rec.items)
    summary = pd.read_csv(run / "summary.csv")
    assert (summary["status"] == "done").all() and len(summary) == 3 * 2
    ranking = pd.read_csv(run / "ranking.csv")
    assert (ranking["n_images"] == 3).all()


def test_exit_status_tells_what_was_done(tmp_path, capsys):
    cfg = _dataset(tmp_path / "d")
    assert main(["run", str(cfg), "--out", str(tmp_path / "ok"), "--no-progress"]) == 0
    (tmp_path / "d" / "images" / "im_bad.tif").write_bytes(b"II*\x00" + b"\x00junk" * 8)
    assert main(["run", str(cfg), "--out", str(tmp_path / "some"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "completed_with_errors: 1 of 4 items" in err and "im_bad" in err
    for f in (tmp_path / "d" / "images").glob("im?.tif"):
        f.write_bytes(b"II*\x00" + b"\x00junk" * 8)
    assert main(["run", str(cfg), "--out", str(tmp_path / "none"), "--no-progress"]) == 4
    run = next((tmp_path / "none").iterdir())
    rec = read_record(run)
    assert rec.status == "failed" and "every item failed" in rec.error


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    run = execute(_dataset(tmp_path / "d"), out=tmp_path / "runs", progress=False)
    assert not (run / LOCK_NAME).exists()  # released after the run
    with RunLock(run):
        with pytest.raises(RunFolderError, match="another opsef run"):
            execute(None, resume=run, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    execute(None, resume=run, progress=False)  # the holder is gone: the lock is taken over
    assert not (run / LOCK_NAME).exists()


def test_disk_full_stops_with_one_line_and_resumes_once_space_is_back(tmp_path, monkeypatch, capsys):
    cfg = _dataset(tmp_path / "d")
    reference = execute(cfg, out=tmp_path / "ref", progress=False)
    real = io.write_labels
    state = {"n": 0}

    def full(path, *a, **k):
        state["n"] += 1
        if state["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)

    import opsef_core.io.writers as writers

    monkeypatch.setattr(writers, "write_labels", full)
    monkeypatch.setattr(io, "write_labels", full)
    assert main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0]
    run = next((tmp_path / "runs").iterdir())
    rec = read_record(run)
    assert rec.status == "failed" and "No space left on device" in rec.error
    assert state["n"] == 4  # it stopped at the first failed write, not one traceback per combination
    with pytest.raises(RunWriteError):
        execute(None, resume=run, progress=False)
    monkeypatch.setattr(writers, "write_labels", real)
    monkeypatch.setattr(io, "write_labels", real)
    execute(None, resume=run, progress=False)
    assert read_record(run).status == "completed"
    ref, got = _labels(reference), _labels(run)
    assert ref.keys() == got.keys()
    for name in ref:
        np.testing.assert_array_equal(ref[name], got[name])


@pytest.mark.slow
def test_sigterm_is_recorded_as_interrupted_and_resumable(tmp_path):
    cfg = _dataset(tmp_path / "d", n=40)
    proc = subprocess.Popen([sys.executable, "-m", "opsef_core.cli", "run", str(cfg), "--out",
                             str(tmp_path / "runs"), "--no-progress"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some items are done
        runs = list((tmp_path / "runs").glob("*/items/*.json")) if (tmp_path / "runs").exists() else []
        if len(runs) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    run = next((tmp_path / "runs").iterdir())
    rec = read_record(run)
    assert rec.status == "interrupted" and "SIGTERM" in rec.error
    assert not (run / LOCK_NAME).exists()
    execute(None, resume=run, progress=False)
    assert read_record(run).status == "completed"
    assert len(pd.read_csv(run / "summary.csv")) == 40 * 2


def test_numbers_and_bounds_of_a_config_are_checked_before_any_compute(tmp_path, capsys):
    cfg = json.loads(_dataset(tmp_path / "d").read_text())
    from opsef_core.config import config_from_dict
    from opsef_core.errors import ConfigError

    base = {**cfg, "inputs": {"path": str(tmp_path / "d" / "images")}}
    with pytest.raises(ConfigError, match="rank_by 'f1@0.3' is not a metric"):
        config_from_dict({**base, "evaluation": {"rank_by": "f1@0.3"}})
    with pytest.raises(ConfigError, match="at least 16"):
        config_from_dict({**base, "execution": {"tiling": {"tile_shape": 1, "overlap": 0}}})
    with pytest.raises(ConfigError, match="twice the overlap"):
        config_from_dict({**base, "execution": {"tiling": {"tile_shape": 64, "overlap": 32}}})
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "d" / "cfg.json"), "--workers", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_tiles_smaller_than_the_objects_fail_the_combination(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:96, :96]
    big = ((yy - 48) ** 2 + (xx - 48) ** 2 <= 30 ** 2)  # a 60 px object, overlap 4
    tifffile.imwrite(root / "images" / "big.tif", (50 + 600 * big).astype(np.uint16))
    cfg = {"inputs": {"path": "images"}, "pipelines": [{"name": "raw", "steps": []}],
           "segmenters": [{"name": "c", "backend": "classical",
                           "params": {"threshold": 0.5, "normalize_limits": [0, 700]}}],
           "execution": {"tiling": {"tile_shape": 32, "overlap": 4}}, "outputs": {"montage": False}}
    (root / "cfg.json").write_text(json.dumps(cfg))
    run = execute(root / "cfg.json", out=tmp_path / "runs", progress=False)
    row = pd.read_csv(run / "summary.csv").iloc[0]
    assert row["status"] == "failed" and "reach the tile overlap" in row["error"]


def test_a_million_combinations_are_refused_at_once(tmp_path, capsys):
    cfg = json.loads(_dataset(tmp_path / "d").read_text())
    cfg["segmenters"][0]["sweep"] = {"h": [0.5 + i / 1000 for i in range(1000)],
                                     "min_size": list(range(1, 1001))}
    path = tmp_path / "d" / "huge.json"
    path.write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert time.perf_counter() - t0 < 1.0
    assert "1,000,000 combinations: more than the limit of 10,000" in out
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--allow-large" in err and not (tmp_path / "runs").exists()


def test_a_symlink_loop_as_input_is_one_clear_line(tmp_path, capsys):
    cfg = json.loads(_dataset(tmp_path / "d").read_text())
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    cfg["inputs"] = {"path": str(tmp_path / "loop_a")}
    path = tmp_path / "loop.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loop_a" in err[0]


def test_nan_anywhere_in_a_config_file_is_a_config_error(tmp_path, capsys):
    text = _dataset(tmp_path / "d").read_text()
    cfg = json.loads(text)
    cfg["pipelines"][0]["steps"] = [{"name": "clip", "params": {"low": float("nan")}}]
    path = tmp_path / "d" / "nan.json"
    path.write_text(json.dumps(cfg))  # json writes NaN, and reads it back as a float
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pipelines[0].steps[0].params.low: NaN and infinity" in err and "nan.json" in err


def test_tiled_and_whole_runs_normalise_alike(tmp_path):
    """A fixed threshold with the default percentiles after a gaussian pipeline: identical labels."""
    from opsef_core.config import config_from_dict

    base = {"inputs": {"path": str(REPO / "demo_data" / "nuclei2d" / "images"), "limit": 1},
            "pipelines": [{"name": "g", "steps": [{"name": "gaussian", "params": {"sigma": 2.0}}]}],
            "segmenters": [{"name": "c", "backend": "classical", "params": {"threshold": 0.3, "sigma": 1.5}}],
            "outputs": {"montage": False, "overlays": False, "measurements": False}}
    whole = execute(config_from_dict(base), out=tmp_path / "w", progress=False)
    tiled = execute(config_from_dict({**base, "execution": {"tiling": {"tile_shape": 160, "overlap": 48}}}),
                    out=tmp_path / "t", progress=False)
    row = pd.read_csv(tiled / "summary.csv").iloc[0]
    assert row["status"] == "done" and row["tiles"] > 1 and row["tile_normalization"] == "global"
    (a,), (b,) = _labels(whole).values(), _labels(tiled).values()
    np.testing.assert_array_equal(a > 0, b > 0)  # the same foreground
    from opsef_core import evaluate

    assert evaluate.match(a, b, threshold=0.5).f1 == 1.0
