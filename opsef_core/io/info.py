"""File descriptions for ``opsef info FILE``."""

from __future__ import annotations

from pathlib import Path

from .read import file_format, list_scenes

__all__ = ["describe_file", "format_info"]


def describe_file(path: str | Path) -> list[dict]:
    """Describe every scene of a file (no pixels loaded).

    Returns
    -------
    list of dict
        :func:`opsef_core.io.list_scenes` entries plus ``file``, ``file_format``
        and ``file_size`` (bytes).
    """
    path = Path(path)
    fmt = file_format(path)
    from ..record import file_size

    size = file_size(path)  # a zarr store: all its files
    return [{"file": str(path), "file_format": fmt, "file_size": size, **s} for s in list_scenes(path)]


def _fmt_size(v: float) -> str:
    return f"{v:.4g}"


def format_info(path: str | Path) -> str:
    """Human-readable description of a file: one block per scene.

    Lists the series, axes, shape, dtype, pixel sizes (µm), channel names, time
    interval, and any problem (e.g. axes that need an ``axes=`` override).
    """
    scenes = describe_file(path)
    first = scenes[0]
    lines = [f"{first['file']}  ({first['format']}, {first['file_size']:,} bytes, {len(scenes)} scene(s))"]
    for s in scenes:
        lines.append(f"scene {s['index']}: {s['name']}")
        axes = s["axes"] or f"? (file says {s['file_axes']!r})"
        lines.append(f"  axes: {axes}   shape: {tuple(s['shape'])}   dtype: {s['dtype']}")
        if s["calibrated"] or s["pixel_size"]:
            ps = ", ".join(f"{a}={_fmt_size(v)}" for a, v in s["pixel_size"].items())
            lines.append(f"  pixel size (µm): {ps}")
        else:
            lines.append("  pixel size: uncalibrated")
        if s["channel_names"]:
            lines.append(f"  channels: {', '.join(s['channel_names'])}")
        if s.get("time_interval"):
            lines.append(f"  time interval: {_fmt_size(s['time_interval'])} s")
        if s.get("n_tiles", 1) > 1:
            lines.append(f"  mosaic: {s['n_tiles']} tiles")
        if s.get("problem"):
            lines.append(f"  problem: {s['problem']}")
    return "\n".join(lines)
