"""Atomic file writing: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ..errors import InputFileError

__all__ = ["atomic_write"]

logger = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success move it onto ``path``.

    Readers never see a half-written file: the data go to a hidden temporary
    file in the same folder (same file system), which is flushed, synced and
    renamed with :func:`os.replace` only when the ``with`` block ends without an
    exception.  On an exception the temporary file is removed and ``path`` is
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
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        logger.debug("wrote %s", path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
