"""A small configurable U-Net in PyTorch, 2D (``YX``) or 3D (``ZYX``).

Two output variants:

- ``"3class"``: 3 logits per pixel (background 0, boundary 1, interior 2),
  softmax at inference;
- ``"distance"``: one channel regressing the Chebyshev distance to the
  background, with a ReLU output (the clearing study's "Dist" model).

Spatial sizes must be multiples of ``2**depth`` (see :func:`pad_to_multiple`).
torch is imported inside the functions only.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["VARIANTS", "build_unet", "out_channels", "pad_to_multiple", "count_parameters"]

VARIANTS = ("3class", "distance")


def out_channels(variant: str) -> int:
    """Number of output channels of a variant (3 for ``"3class"``, 1 for ``"distance"``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown U-Net variant {variant!r}; use one of {list(VARIANTS)}")
    return 3 if variant == "3class" else 1


@functools.lru_cache(maxsize=None)
def _classes():
    """Define the torch module classes (once, on first use)."""
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        """Two (conv 3, batch norm, ReLU) layers."""

        def __init__(self, dims: int, cin: int, cout: int):
            super().__init__()
            conv = nn.Conv2d if dims == 2 else nn.Conv3d
            norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
            self.body = nn.Sequential(
                conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
                conv(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
            )

        def forward(self, x):
            return self.body(x)

    class UNet(nn.Module):
        """U-Net with ``depth`` poolings and ``filters * 2**level`` channels per level."""

        def __init__(self, dims: int = 2, in_channels: int = 1, n_out: int = 3, depth: int = 3,
                     filters: int = 16, relu_output: bool = False):
            super().__init__()
            self.dims, self.depth, self.relu_output = dims, depth, relu_output
            pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
            up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            conv = nn.Conv2d if dims == 2 else nn.Conv3d
            chans = [filters * 2 ** i for i in range(depth + 1)]
            self.down = nn.ModuleList()
            cin = in_channels
            for c in chans[:-1]:
                self.down.append(ConvBlock(dims, cin, c))
                cin = c
            self.pool = pool(2)
            self.bottom = ConvBlock(dims, chans[-2], chans[-1])
            self.ups = nn.ModuleList()
            self.up_blocks = nn.ModuleList()
            for i in range(depth - 1, -1, -1):
                self.ups.append(up(chans[i + 1], chans[i], 2, stride=2))
                self.up_blocks.append(ConvBlock(dims, 2 * chans[i], chans[i]))
            self.head = conv(chans[0], n_out, 1)

        def forward(self, x):
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottom(x)
            for up_, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
                x = block(torch.cat([up_(x), skip], dim=1))
            x = self.head(x)
            return torch.relu(x) if self.relu_output else x

    return UNet


def build_unet(dims: int = 2, variant: str = "3class", in_channels: int = 1, depth: int = 3,
               filters: int = 16):
    """Build an (untrained) U-Net.

    Parameters
    ----------
    dims : {2, 3}
        2D (convolutions over YX) or 3D (over ZYX).
    variant : {"3class", "distance"}
        Output head: 3 class logits, or one ReLU distance channel.
    in_channels : int
        Input channels.
    depth : int
        Number of 2x poolings (inputs must be multiples of ``2**depth``).
    filters : int
        Channels of the first level (doubled at each level).

    Returns
    -------
    torch.nn.Module
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if depth < 1 or filters < 1:
        raise ValueError("depth and filters must be at least 1")
    return _classes()(dims=dims, in_channels=in_channels, n_out=out_channels(variant), depth=depth,
                      filters=filters, relu_output=variant == "distance")


def pad_to_multiple(x: np.ndarray, multiple: int, axes) -> tuple[np.ndarray, tuple]:
    """Pad ``x`` at the end of ``axes`` (reflect, or edge for tiny axes) to multiples of ``multiple``.

    Returns
    -------
    (ndarray, tuple of slice)
        The padded array and the index that crops it back to ``x``'s shape.
    """
    pad = [(0, 0)] * x.ndim
    crop = [slice(None)] * x.ndim
    for ax in axes:
        n = x.shape[ax]
        target = max(multiple, int(math.ceil(n / multiple)) * multiple)
        pad[ax] = (0, target - n)
        crop[ax] = slice(0, n)
    if any(p[1] for p in pad):
        mode = "reflect" if all(x.shape[a] > p[1] for a, p in enumerate(pad)) else "edge"
        x = np.pad(x, pad, mode=mode)
    return x, tuple(crop)


def count_parameters(net) -> int:
    """Number of trainable parameters of a torch module."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))
