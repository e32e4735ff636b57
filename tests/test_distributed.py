"""Dask: cluster helpers, per-item failures, models loaded once per worker, the run engine on dask."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from opsef_core.distributed import get_client, run_items, worker_models
from opsef_core.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    with get_client(workers=2, threads_per_worker=1) as c:
        yield c


def _square_or_fail(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x * x


def test_run_items_captures_failures(client):
    res = run_items(_square_or_fail, range(6), client, progress=False)
    assert [r.index for r in res] == list(range(6))
    assert [r.value for r in res if r.ok] == [0, 1, 4, 16, 25]
    failed = [r for r in res if not r.ok]
    assert len(failed) == 1 and failed[0].index == 3 and failed[0].error == "ValueError: bad item 3"


def _segment_item(seed):
    """Segment a small synthetic image with a counting backend; report process and instance."""
    from opsef_core.segment import base
    from opsef_core.segment.classical import ClassicalSegmenter

    class Counting(ClassicalSegmenter):
        name = "_counting_classical"
        loads = 0

        def load_model(self, params):
            type(self).loads += 1
            return object()

        def predict(self, image, params):
            self.model(params)
            return super().predict(image, params)

    if "_counting_classical" not in base._REGISTRY:
        base.register_segmenter(Counting)
    from opsef_core.image import Image

    seg = base.get_segmenter("_counting_classical")
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64), np.float32)
    img[10:20, 10:20] = 1
    img[40:52, 30:44] = 1
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    labels = seg.segment(Image.from_array(img, "YX"), {"sigma": 1.0})
    return os.getpid(), id(seg), int(labels.max()), type(seg).loads


def _loads_here():
    from opsef_core.segment import base

    seg = base._INSTANCES.get("_counting_classical")
    return type(seg).loads if seg is not None else 0


def test_model_loaded_once_per_worker(client):
    res = run_items(_segment_item, range(8), client, progress=False)
    assert all(r.ok for r in res), [r.error for r in res]
    assert all(r.value[2] == 2 for r in res)
    by_pid = {}
    for r in res:
        by_pid.setdefault(r.value[0], set()).add(r.value[1])
    assert all(len(ids) == 1 for ids in by_pid.values())  # one cached instance per process
    assert os.getpid() not in by_pid  # ran in worker processes
    loads = client.run(_loads_here)
    assert sum(loads.values()) == len(by_pid) and max(loads.values()) == 1
    held = worker_models(client)
    assert sum(len(w["models"].get("_counting_classical", [])) for w in held.values()) == len(by_pid)


def test_bad_scheduler_address_is_config_error():
    with pytest.raises(ConfigError, match="tcp://127.0.0.1:1"):
        with get_client(scheduler="tcp://127.0.0.1:1", timeout=1):
            pass


def _worker_env():
    return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_workers_keep_glibc_malloc_adaptive_unless_configured(client):
    """dask's MALLOC_TRIM_THRESHOLD_ default (which slows opsef items ~25 %) is dropped; a user's value is kept."""
    import dask

    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"] == 65536
    envs = list(client.run(_worker_env).values())
    assert len(envs) == 2 and all(e == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"} for e in envs)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1 << 20}):
        with get_client(workers=1) as c:
            (env,) = c.run(_worker_env).values()
    assert env == {"MALLOC_TRIM_THRESHOLD_": str(1 << 20), "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------- the run engine on dask
def _dataset(root, n=3, corrupt=False):
    import tifffile

    rng = np.random.default_rng(11)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:64, :64]
    for k in range(n):
        img = np.full((64, 64), 100.0)
        for cy, cx in rng.integers(10, 54, (4 + k, 2)):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = 900
        img += rng.normal(0, 20, img.shape)
        tifffile.imwrite(root / "images" / f"img_{k}.tif", np.clip(img, 0, None).astype(np.uint16),
                         imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um", "axes": "YX"})
    if corrupt:
        (root / "images" / "img_bad.tif").write_bytes(b"II*\x00" + b"\x00garbage" * 10)
    cfg = {"inputs": {"path": str(root / "images")},
           "pipelines": [{"name": "raw", "steps": []}],
           "segmenters": [{"name": "classical", "backend": "classical",
                           "params": {"sigma": 1.0, "min_size": 10}, "sweep": {"h": [1.0, 2.0]}}],
           "outputs": {"overlays": False, "montage": False}}
    from opsef_core.config import config_from_dict

    return config_from_dict(cfg)


def _labels(run):
    from opsef_core.io import read_labels

    return {p.name: read_labels(p) for p in sorted((run / "labels").glob("*.tif"))}


def test_dask_run_equals_serial_run(client, tmp_path):
    import pandas as pd

    from opsef_core.run import execute

    cfg = _dataset(tmp_path / "data")
    serial = execute(cfg, out=tmp_path / "serial", progress=False)
    dist = execute(cfg, out=tmp_path / "dask", scheduler=client.scheduler.address, progress=False)
    a, b = _labels(serial), _labels(dist)
    assert len(a) == 6 and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    ma, mb = pd.read_csv(serial / "measurements.csv"), pd.read_csv(dist / "measurements.csv")
    assert len(ma) > 0
    pd.testing.assert_frame_equal(ma, mb)
    sa, sb = pd.read_csv(serial / "summary.csv"), pd.read_csv(dist / "summary.csv")
    assert list(sa["n_objects"]) == list(sb["n_objects"]) and set(sb["status"]) == {"done"}
    import json

    rec = json.loads((dist / "run.json").read_text())
    assert rec["execution"]["scheduler"] == client.scheduler.address and rec["status"] == "completed"


def test_dask_run_records_corrupt_file_and_resume_finishes(client, tmp_path):
    import json

    import pandas as pd
    import tifffile

    from opsef_core.run import execute

    cfg = _dataset(tmp_path / "data", n=2, corrupt=True)
    run = execute(cfg, out=tmp_path / "runs", scheduler=client.scheduler.address, progress=False)
    rec = json.loads((run / "run.json").read_text())
    status = {it["id"]: it["status"] for it in rec["items"]}
    assert status == {"img_0": "done", "img_1": "done", "img_bad": "failed"}
    assert rec["status"] == "completed_with_errors"
    bad = next(it for it in rec["items"] if it["id"] == "img_bad")
    assert "img_bad.tif" in bad["error"]
    summary = pd.read_csv(run / "summary.csv")
    assert set(summary.loc[summary["image"] == "img_bad", "status"]) == {"failed"}
    assert set(summary.loc[summary["image"] != "img_bad", "status"]) == {"done"}
    assert len(_labels(run)) == 4
    # the file is repaired: resuming on dask retries only the failed item and completes the run
    done_marker = (run / "items" / "img_0.json").stat().st_mtime_ns
    img = tifffile.imread(tmp_path / "data" / "images" / "img_0.tif")
    tifffile.imwrite(tmp_path / "data" / "images" / "img_bad.tif", img[::-1].copy(), imagej=True,
                     resolution=(2.0, 2.0), metadata={"unit": "um", "axes": "YX"})
    from opsef_core.errors import RecordMismatchError

    with pytest.raises(RecordMismatchError, match="img_bad.tif"):  # a changed input is never taken silently
        execute(None, resume=run, scheduler=client.scheduler.address, progress=False)
    again = execute(None, resume=run, scheduler=client.scheduler.address, progress=False, accept_changes=True)
    assert again == run
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "completed" and {it["status"] for it in rec["items"]} == {"done"}
    assert (run / "items" / "img_0.json").stat().st_mtime_ns == done_marker  # not redone
    assert len(_labels(run)) == 6
    assert set(pd.read_csv(run / "summary.csv")["status"]) == {"done"}


def test_trim_heap_calls_glibc_malloc_trim_on_linux():
    import sys

    from opsef_core.distributed import trim_heap

    x = [np.ones(2**20) for _ in range(8)]  # 64 MiB of heap/mmap memory, then freed
    del x
    assert trim_heap() is sys.platform.startswith("linux")  # glibc here; False where there is none
    assert trim_heap() is trim_heap()  # the library is looked up once
