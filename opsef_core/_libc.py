"""The C library of this process (glibc on Linux), for the few calls Python does not expose."""

from __future__ import annotations

import functools
import sys
from typing import Any

__all__ = ["libc"]


@functools.lru_cache(maxsize=1)
def libc() -> Any | None:
    """The process's C library as a :class:`ctypes.CDLL` (``use_errno``), or None off Linux or when
    it cannot be loaded.  Callers check for the function they need (``malloc_trim``, ``syncfs``)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
