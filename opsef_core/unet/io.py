"""U-Net model folders: ``config.json`` (architecture, normalisation, training record) + ``weights.pt``.

``weights.pt`` is a torch ``state_dict`` whose floating-point tensors may be
stored as float16 (half the size); they are loaded back as float32.
"""

from __future__ import annotations

import io as _io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError
from ..io.atomic import atomic_write

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LoadedUNet", "save_unet", "load_unet", "read_config"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.pt"
_REQUIRED = ("variant", "dims", "depth", "filters", "in_channels", "normalize")


@dataclass
class LoadedUNet:
    """A U-Net ready for inference.

    Attributes
    ----------
    net : torch.nn.Module
        The network, in eval mode, on ``device``.
    config : dict
        Contents of ``config.json``.
    device : str
        ``"cpu"`` or ``"cuda"``.
    path : Path
        The model folder.
    """

    net: Any
    config: dict
    device: str
    path: Path

    @property
    def variant(self) -> str:
        return self.config["variant"]

    @property
    def dims(self) -> int:
        return int(self.config["dims"])

    @property
    def depth(self) -> int:
        return int(self.config["depth"])


def read_config(path: str | Path) -> dict:
    """Read and check a model folder's ``config.json`` (or a bioimage.io package's ``config.opsef.unet``).

    Raises
    ------
    ModelNotFoundError
        When the folder, its config or weights are missing, or the config lacks a key.
    """
    from ..zoo.bioimageio import is_package

    path = Path(path)
    if is_package(path):  # a bioimage.io package exported by opsef (opsef_core.zoo.bioimageio)
        from ..zoo.bioimageio import unet_from_package

        return unet_from_package(path, weights=False)[0]
    cfg_path = path / CONFIG_NAME
    if not path.is_dir():
        raise ModelNotFoundError(f"a U-Net model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}", path)
    if not cfg_path.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ModelNotFoundError(f"U-Net model folder lacks {CONFIG_NAME} or {WEIGHTS_NAME}", path)
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"unreadable {CONFIG_NAME}: {exc}", cfg_path) from None
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ModelNotFoundError(f"{CONFIG_NAME} lacks {missing}", cfg_path)
    return cfg


def save_unet(out_dir: str | Path, net, config: dict, half: bool = True) -> Path:
    """Write ``config.json`` and ``weights.pt`` into ``out_dir`` (each file atomically).

    Parameters
    ----------
    out_dir : path
        Model folder (created).
    net : torch.nn.Module or dict
        Network or its state_dict.
    config : dict
        JSON-serialisable config (must hold the architecture keys).
    half : bool
        Store floating-point tensors as float16.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    import torch

    out_dir = Path(out_dir)
    state = net.state_dict() if hasattr(net, "state_dict") else net
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in state.items()}
    buf = _io.BytesIO()
    torch.save(state, buf)
    with atomic_write(out_dir / WEIGHTS_NAME, "wb") as fh:
        fh.write(buf.getvalue())
    with atomic_write(out_dir / CONFIG_NAME, "w") as fh:
        json.dump(config, fh, indent=2)
    return out_dir


def load_unet(path: str | Path, device: str = "cpu") -> LoadedUNet:
    """Build the network described by a model folder and load its weights (as float32).

    ``path`` may also be a bioimage.io package exported by opsef: its TorchScript weights are
    loaded into the same network (:func:`opsef_core.zoo.bioimageio.unet_from_package`).

    Raises
    ------
    ModelNotFoundError
        When the folder is not a valid U-Net model.
    """
    import torch

    from .model import build_unet

    path = Path(path)
    cfg = read_config(path)
    net = build_unet(dims=int(cfg["dims"]), variant=cfg["variant"], in_channels=int(cfg["in_channels"]),
                     depth=int(cfg["depth"]), filters=int(cfg["filters"]))
    from ..zoo.bioimageio import is_package, unet_from_package

    package_state = unet_from_package(path)[1] if is_package(path) else None
    try:
        state = package_state if package_state is not None else \
            torch.load(path / WEIGHTS_NAME, map_location="cpu", weights_only=True)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        net.load_state_dict(state)
    except Exception as exc:  # pickle, size mismatch, missing keys
        raise ModelNotFoundError(f"cannot load {WEIGHTS_NAME}: {str(exc).splitlines()[0]}", path) from None
    net.eval().to(device)
    return LoadedUNet(net=net, config=cfg, device=device, path=path)
