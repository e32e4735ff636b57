"""Choice of the compute device for the deep-learning backends.

One helper, :func:`resolve_device`, shared by the cellpose, stardist and unet
backends and the trainers.  The frameworks are imported lazily, only to ask
whether they see a GPU.
"""

from __future__ import annotations

import logging

from ..errors import ConfigError, SegmentationError

__all__ = ["resolve_device", "gpu_available"]

logger = logging.getLogger(__name__)

_DEVICES = ("auto", "cpu", "cuda", "gpu")
_FRAMEWORKS = ("torch", "tensorflow")


def gpu_available(framework: str = "torch") -> bool:
    """Whether ``framework`` (``"torch"`` or ``"tensorflow"``) sees a GPU.

    Parameters
    ----------
    framework : {"torch", "tensorflow"}
        Library to ask.

    Returns
    -------
    bool
        False when the library is not installed or sees no GPU.
    """
    if framework not in _FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}; use one of {list(_FRAMEWORKS)}")
    try:
        if framework == "torch":
            import torch

            return bool(torch.cuda.is_available())
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU")) > 0
    except ImportError:
        return False


def resolve_device(device: str = "auto", framework: str = "torch") -> str:
    """Turn a device request into ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "gpu"}
        ``"auto"`` picks the GPU when the framework sees one, else the CPU;
        ``"gpu"`` is a synonym of ``"cuda"``; ``"cuda:N"`` is accepted and
        returned as given when a GPU is present.
    framework : {"torch", "tensorflow"}
        Library that will run the model.

    Returns
    -------
    str
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"`` when asked for).

    Raises
    ------
    SegmentationError
        When a GPU is asked for and the framework sees none.
    ConfigError
        When ``device`` or ``framework`` is not a known value.
    """
    req = str(device).strip().lower()
    base = req.split(":", 1)[0]
    if base not in _DEVICES or (":" in req and base not in ("cuda", "gpu")):
        raise ConfigError(f"unknown device {device!r}; use one of 'auto', 'cpu', 'cuda'")
    if framework not in _FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}; use one of {list(_FRAMEWORKS)}")
    if base == "cpu":
        return "cpu"
    has_gpu = gpu_available(framework)
    if base == "auto":
        chosen = "cuda" if has_gpu else "cpu"
        logger.debug("device auto -> %s (%s)", chosen, framework)
        return chosen
    if not has_gpu:
        raise SegmentationError(
            f"device {device!r} was requested but {framework} sees no GPU on this machine; "
            "use device='cpu' or 'auto'"
        )
    return "cuda" + req[len(base):] if ":" in req else "cuda"
