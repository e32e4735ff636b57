"""Atomic file writing: write to a temporary file in the target folder, then rename.

Durability: each file is flushed and ``fsync``-ed before its rename, so that after a crash a
file is either whole or absent.  That costs about 3 ms per file on a local disk (far more on
network file systems), and a run item writes over a hundred files (labels, overlays, ROIs,
tables).  Inside :func:`deferred_sync` the per-file ``fsync`` is skipped and the block ends with
one ``syncfs`` of the folder's file system instead; :func:`sync_deferred` does that sync early
(e.g. before a done-marker, so the marker is never durable before the outputs it vouches for).
Where no file-system sync exists (not Linux, and no ``os.sync``), nothing is deferred.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ..errors import InputFileError

__all__ = ["atomic_write", "deferred_sync", "sync_deferred", "sync_filesystem"]

logger = logging.getLogger(__name__)

#: the open :func:`deferred_sync` block of this context: {"folder": Path, "pending": int}, or None
_DEFERRED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("opsef_deferred_sync", default=None)


def _syncfs():
    """libc's ``syncfs`` (Linux), or None."""
    from .._libc import libc

    return getattr(libc(), "syncfs", None)


def _can_sync_filesystem() -> bool:
    return bool(_syncfs()) or hasattr(os, "sync")


def sync_filesystem(folder: str | Path) -> None:
    """Write every modified file of ``folder``'s file system to disk (``syncfs``; else ``os.sync``).

    Raises
    ------
    InputFileError
        The sync failed (e.g. an I/O error of the disk): written files may not be durable.
    """
    folder = Path(folder)
    fn = _syncfs()
    if fn:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError as exc:
            raise InputFileError(f"cannot sync: {exc.strerror or exc}", folder) from exc
        try:
            if fn(fd) != 0:
                import ctypes

                err = ctypes.get_errno()
                raise InputFileError(f"syncfs failed: {os.strerror(err)}", folder)
        finally:
            os.close(fd)
    elif hasattr(os, "sync"):
        os.sync()


@contextlib.contextmanager
def deferred_sync(folder: str | Path) -> Iterator[None]:
    """Within the block, :func:`atomic_write` skips each file's ``fsync``; the block ends with one
    :func:`sync_filesystem` of ``folder`` (also when it raises), so the files are durable then.

    Files stay atomic (each appears whole, by rename); only the moment they reach the disk moves to
    the end of the block.  Blocks nest (the inner one syncs at its end).  Without a file-system sync
    on this platform, the block changes nothing.

    Parameters
    ----------
    folder : path
        A folder on the file system the block writes to (e.g. the run folder).
    """
    if not _can_sync_filesystem():
        yield
        return
    state = {"folder": Path(folder), "pending": 0}
    token = _DEFERRED.set(state)
    try:
        yield
    finally:
        _DEFERRED.reset(token)
        if state["pending"]:
            sync_filesystem(state["folder"])


def sync_deferred() -> None:
    """Make the files written so far in the current :func:`deferred_sync` block durable now (one
    sync; nothing when outside a block or nothing is pending)."""
    state = _DEFERRED.get()
    if state is not None and state["pending"]:
        sync_filesystem(state["folder"])
        state["pending"] = 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success move it onto ``path``.

    Readers never see a half-written file: the data go to a hidden temporary
    file in the same folder (same file system), which is flushed, synced (or, inside
    :func:`deferred_sync`, synced with the block's other files at its end) and renamed
    with :func:`os.replace` only when the ``with`` block ends without an exception.  On an exception the temporary file is removed and ``path`` is
    left as it was.

    Parameters
    ----------
    path : str or Path
        Final file path.  Missing parent folders are created.
    mode : {"wb", "w"}
        Binary or text mode.
    encoding : str, optional
        Text encoding (text mode only; UTF-8 by default).
    newline : str, optional
        Passed to :func:`open` in text mode.

    Yields
    ------
    file object
        Open handle to the temporary file.

    Raises
    ------
    InputFileError
        When the folder cannot be created or written.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputFileError(f"cannot write here: {exc.strerror or exc}", path) from exc
    kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
    try:
        os.close(fd)  # reopen by name: some writers (tifffile) need a named file object
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        deferred = _DEFERRED.get()
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if deferred is None:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if deferred is not None:
            deferred["pending"] += 1
        logger.debug("wrote %s", path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
