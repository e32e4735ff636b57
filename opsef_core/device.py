"""What the machine offers for deep learning: CPUs, NVIDIA GPUs, the torch and TensorFlow builds.

:func:`describe_device` returns a JSON-ready dictionary for the run record (``run.json``): the
CPU count, the NVIDIA driver and GPUs (from ``nvidia-smi``, when present), and for PyTorch and
TensorFlow their installed version, whether the build is a CPU or a CUDA build, and the GPUs
each one sees.  A framework that the process has already imported is asked directly (free); one
that is not imported is described from its installed package metadata only, unless
``import_frameworks=True`` (importing TensorFlow costs seconds).  Which device a backend runs
on is chosen by :func:`opsef_core.segment.device.resolve_device`; the GPU install option is
described in ``docs/gpu.md``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata

__all__ = ["describe_device", "main", "nvidia_gpus"]

logger = logging.getLogger(__name__)

#: distributions that provide the ``tensorflow`` module, the CUDA build (PyPI's ``tensorflow``) first
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")
_NVIDIA_SMI_TIMEOUT_S = 10.0
_PROC_DRIVER = "/proc/driver/nvidia/version"


def _installed(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions among ``names``, in that order."""
    found = []
    for name in names:
        try:
            found.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            continue
    return found


def _distribution(names: tuple[str, ...]) -> metadata.Distribution | None:
    found = _installed(names)
    return found[0] if found else None


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 normalises it (``tensorflow_cpu`` -> ``tensorflow-cpu``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires_cuda(dist: metadata.Distribution) -> bool:
    """Whether a distribution's unconditional or installed requirements pull NVIDIA runtime wheels."""
    for req in dist.requires or []:
        name = req.split(";")[0].strip().lower()
        if name.startswith(("nvidia-", "cuda-toolkit", "cuda-bindings")) and "extra ==" not in req:
            return True
    return False


def _cpu_count() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        usable = os.cpu_count()
    return {"cpu_count": os.cpu_count(), "cpu_usable": usable}


def nvidia_gpus(*, timeout_s: float = _NVIDIA_SMI_TIMEOUT_S) -> dict:
    """The NVIDIA driver and GPUs as ``nvidia-smi`` lists them (no framework imported).

    Parameters
    ----------
    timeout_s : float
        Longest wait for ``nvidia-smi``.

    Returns
    -------
    dict
        ``{"driver": str or None, "gpus": [{"index", "name", "memory_mib"}, ...], "source": str}``;
        ``source`` is ``"nvidia-smi"``, ``/proc/driver/nvidia/version`` (a driver but no
        ``nvidia-smi``: no GPU list), ``"none"`` (neither) or the reason the query failed.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        driver = None
        try:  # the kernel module's version file exists wherever an NVIDIA driver is loaded
            with open(_PROC_DRIVER) as fh:
                words = fh.readline().split()
            driver = next((w for w in words if w[:1].isdigit() and "." in w), None)
        except OSError:
            pass
        return {"driver": driver, "gpus": [], "source": "none" if driver is None else _PROC_DRIVER}
    cmd = [exe, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("nvidia-smi failed: %s", exc)
        return {"driver": None, "gpus": [], "source": f"nvidia-smi failed: {type(exc).__name__}"}
    gpus, driver = [], None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:
            memory = int(float(parts[2]))
        except ValueError:
            memory = None
        gpus.append({"index": int(parts[0]), "name": parts[1], "memory_mib": memory})
        driver = parts[3]
    return {"driver": driver, "gpus": gpus, "source": "nvidia-smi"}


def _torch_info(import_frameworks: bool) -> dict:
    dist = _distribution(("torch",))
    info = {"installed": dist is not None, "version": None, "build": None, "imported": "torch" in sys.modules,
            "checked": False, "cuda_available": None, "cuda_version": None, "devices": None}
    if dist is None:
        return info
    version = dist.version
    info["version"] = version
    local = version.partition("+")[2]
    if local:  # e.g. 2.13.0+cpu, 2.13.0+cu128 (the PyTorch index's wheels)
        info["build"] = "cpu" if local == "cpu" else local
    else:  # PyPI's own wheels: the linux one is a CUDA build that requires NVIDIA runtime wheels
        info["build"] = "cuda" if _requires_cuda(dist) else "cpu"
    if not (info["imported"] or import_frameworks):
        return info
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install fails in many ways; recorded
        info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return info
    info["imported"] = True
    info["checked"] = True
    info["cuda_version"] = torch.version.cuda
    info["build"] = "cpu" if torch.version.cuda is None else f"cuda {torch.version.cuda}"
    available = bool(torch.cuda.is_available())
    info["cuda_available"] = available
    info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return info


def _tensorflow_info(import_frameworks: bool) -> dict:
    found = _installed(_TF_DISTRIBUTIONS)
    dist = found[0] if found else None
    info = {"installed": dist is not None, "version": None, "distribution": None, "build": None,
            "imported": "tensorflow" in sys.modules, "checked": False, "cuda_version": None, "gpus": None}
    if dist is None:
        return info
    info["version"] = dist.version
    info["distribution"] = _canonical(dist.metadata["Name"])
    info["build"] = "cpu" if info["distribution"] == "tensorflow-cpu" else "cuda"
    if len(found) > 1:  # both write the same tensorflow/ folder: the one installed last is in use
        info["also_installed"] = [f"{_canonical(d.metadata['Name'])}=={d.version}" for d in found[1:]]
        logger.warning("several TensorFlow distributions are installed (%s, %s); uninstall all but one",
                       info["distribution"], ", ".join(info["also_installed"]))
    if not (info["imported"] or import_frameworks):
        return info
    try:
        import tensorflow as tf
    except Exception as exc:  # noqa: BLE001 - as for torch: recorded, never fatal
        info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return info
    info["imported"] = True
    info["checked"] = True
    build = dict(tf.sysconfig.get_build_info())
    info["build"] = f"cuda {build.get('cuda_version')}" if build.get("is_cuda_build") else "cpu"
    info["cuda_version"] = build.get("cuda_version")
    gpus = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            name = tf.config.experimental.get_device_details(dev).get("device_name", dev.name)
        except (RuntimeError, ValueError):
            name = dev.name
        gpus.append(name)
    info["gpus"] = gpus
    return info


def describe_device(*, import_frameworks: bool = False) -> dict:
    """The compute device of this process, for the run record.

    Parameters
    ----------
    import_frameworks : bool
        Import torch and TensorFlow to ask them which GPUs they see.  False (default): a
        framework the process has not imported yet is described from its package metadata only
        (version, CPU or CUDA build) and its GPU fields are None (``checked`` False).

    Returns
    -------
    dict
        JSON-ready: ``python``, ``platform``, ``machine``, ``cpu_count`` (logical CPUs),
        ``cpu_usable`` (those this process may use), ``nvidia`` (:func:`nvidia_gpus`),
        ``torch`` (``installed``, ``version``, ``build``, ``imported``, ``checked``,
        ``cuda_available``, ``cuda_version``, ``devices``), ``tensorflow`` (``installed``,
        ``version``, ``distribution``, ``build``, ``imported``, ``checked``, ``cuda_version``,
        ``gpus``), and ``gpu``: True when a framework asked sees a GPU; False when none can
        (every installed framework asked and none sees one, or the ones not asked are CPU
        builds, or there is no NVIDIA driver); None when a CUDA build was not asked.
    """
    torch_info = _torch_info(import_frameworks)
    tf_info = _tensorflow_info(import_frameworks)
    nvidia = nvidia_gpus()
    seen = [bool(torch_info["cuda_available"])] if torch_info["checked"] else []
    if tf_info["checked"]:
        seen.append(bool(tf_info["gpus"]))
    unchecked = [f for f in (torch_info, tf_info) if f["installed"] and not f["checked"]]
    if any(seen):
        gpu = True
    elif not unchecked or all(f["build"] == "cpu" for f in unchecked) or nvidia["driver"] is None:
        gpu = False  # every framework asked, or CPU builds only, or no NVIDIA driver at all
    else:
        gpu = None  # a CUDA build and a driver, not asked
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        **_cpu_count(),
        "nvidia": nvidia,
        "torch": torch_info,
        "tensorflow": tf_info,
        "gpu": gpu,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m opsef_core.device [--no-import]``: print :func:`describe_device` as JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m opsef_core.device",
                                     description="Print the compute device (CPUs, GPUs, torch/TensorFlow builds).")
    parser.add_argument("--no-import", action="store_true",
                        help="do not import torch/TensorFlow (versions and builds from package metadata only)")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(describe_device(import_frameworks=not args.no_import), indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
