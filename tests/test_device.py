"""opsef_core.device.describe_device on this CPU machine, and its parsing of nvidia-smi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from opsef_core import device

REPO = Path(__file__).resolve().parents[1]


def _pins(lock: str) -> dict[str, str]:
    """``name -> version`` of a requirements lock (names normalised, extras dropped)."""
    pins = {}
    for line in (REPO / lock).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[device._canonical(name.split("[")[0])] = version.strip()
    return pins


def _run(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and parse its JSON output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_describe_device_without_imports_is_cheap_and_reports_the_cpu_builds():
    code = ("import json, sys; from opsef_core.device import describe_device; d = describe_device(); "
            "d['_loaded'] = sorted(m for m in ('torch', 'tensorflow') if m in sys.modules); print(json.dumps(d))")
    d = _run(code)
    assert d["_loaded"] == []  # neither framework was imported to describe it
    assert d["cpu_count"] == os.cpu_count() and 1 <= d["cpu_usable"] <= d["cpu_count"]
    pins = _pins("requirements.lock")
    torch, tf = d["torch"], d["tensorflow"]
    assert torch["installed"] and torch["version"].split("+")[0] == pins["torch"]
    assert torch["version"] == metadata.version("torch")
    assert tf["installed"] and tf["version"] == pins["tensorflow-cpu"] and tf["distribution"] == "tensorflow-cpu"
    # this machine: CPU builds, no NVIDIA driver, so no GPU without asking the frameworks
    assert torch["build"] == "cpu" and tf["build"] == "cpu"
    assert not torch["checked"] and torch["cuda_available"] is None and tf["gpus"] is None
    assert d["nvidia"] == {"driver": None, "gpus": [], "source": "none"}
    assert d["gpu"] is False


@pytest.mark.slow
def test_describe_device_asks_the_frameworks_and_they_see_no_gpu():
    d = _run("import json; from opsef_core.device import describe_device; "
             "print(json.dumps(describe_device(import_frameworks=True)))", env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    torch, tf = d["torch"], d["tensorflow"]
    assert torch["checked"] and torch["imported"] and torch["cuda_available"] is False and torch["devices"] == []
    assert torch["cuda_version"] is None and torch["build"] == "cpu"
    assert tf["checked"] and tf["gpus"] == [] and tf["build"] == "cpu"
    assert d["gpu"] is False


def test_an_imported_framework_is_asked_without_being_told(monkeypatch):
    import torch

    d = device.describe_device()
    assert d["torch"]["imported"] and d["torch"]["checked"]
    assert d["torch"]["cuda_available"] is torch.cuda.is_available() is False
    json.dumps(d)  # JSON-ready for run.json


def test_missing_frameworks_are_reported_not_raised(monkeypatch):
    real = metadata.distribution

    def no_frameworks(name):
        if device._canonical(name) in ("torch", "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(device.metadata, "distribution", no_frameworks)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    d = device.describe_device()
    assert d["torch"]["installed"] is False and d["torch"]["version"] is None
    assert d["tensorflow"]["installed"] is False and d["tensorflow"]["version"] is None
    assert d["gpu"] is False


def test_nvidia_smi_output_is_parsed(tmp_path, monkeypatch):
    """A fake nvidia-smi listing two GPUs: names, memory and driver come through as listed."""
    rows = [("0", "NVIDIA H200", "143771", "580.65.06"), ("1", "NVIDIA A100-SXM4-40GB", "40960", "580.65.06")]
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + "".join(f"echo '{', '.join(r)}'\n" for r in rows))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info = device.nvidia_gpus()
    assert info["source"] == "nvidia-smi" and info["driver"] == rows[0][3]
    assert info["gpus"] == [{"index": int(i), "name": n, "memory_mib": int(m)} for i, n, m, _ in rows]
    # a CUDA build not asked, with a driver present: unknown, not "no GPU"
    monkeypatch.setattr(device, "_torch_info", lambda _: {"installed": True, "checked": False, "build": "cuda"})
    monkeypatch.setattr(device, "_tensorflow_info", lambda _: {"installed": False, "checked": False, "build": None})
    assert device.describe_device()["gpu"] is None


def test_failing_nvidia_smi_is_a_recorded_reason(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info = device.nvidia_gpus()
    assert info["gpus"] == [] and info["driver"] is None and "CalledProcessError" in info["source"]


def test_gpu_lock_swaps_only_the_framework_builds():
    """requirements-gpu.lock = requirements.lock with tensorflow[and-cuda] for tensorflow-cpu, plus CUDA wheels."""
    cpu, gpu = _pins("requirements.lock"), _pins("requirements-gpu.lock")
    assert gpu["tensorflow"] == cpu.pop("tensorflow-cpu") and "tensorflow-cpu" not in gpu
    assert "tensorflow[and-cuda]==" in (REPO / "requirements-gpu.lock").read_text()
    assert {k: gpu[k] for k in cpu} == cpu  # every CPU pin kept, same version
    extra = set(gpu) - set(cpu) - {"tensorflow"}
    assert extra and all(k.startswith(("nvidia-", "cuda-", "triton")) for k in extra), sorted(extra)


def test_main_prints_json(capsys):
    assert device.main(["--no-import"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cpu_count"] == os.cpu_count() and "torch" in d and "tensorflow" in d
