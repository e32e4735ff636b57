"""Run integrity: the record is enforced, one writer per run folder, signals recorded.

- :func:`config_digest` — the SHA-256 of a config's canonical JSON, stored in ``run.json`` so a
  resume can tell that the recorded config was edited.
- :func:`verify_record` — a re-run (``opsef run RUN/run.json``) or a resume compares every
  recorded input, ground-truth and class-mask file, and every model checksum, with the files
  now; a difference is a :class:`~opsef_core.errors.RecordMismatchError` naming the file, unless
  the caller accepts the changes (``--accept-changes``), which are then logged and recorded.
- :class:`RunLock` — ``.opsef.lock`` in the run folder, created exclusively; a second run on the
  same folder fails at once naming the holder; a lock whose process is gone is taken over.
- :func:`terminate_as_interrupt` — SIGTERM raises :class:`RunTerminated` (a ``KeyboardInterrupt``)
  so it is recorded as ``interrupted`` like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Iterator

from ..errors import RecordMismatchError, RunFolderError

__all__ = ["config_digest", "verify_record", "RunLock", "RunTerminated", "terminate_as_interrupt",
           "is_write_failure", "LOCK_NAME"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".opsef.lock"


def config_digest(config: dict) -> str:
    """SHA-256 of a config dict's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_record(record, files: list, models: list[dict], *, accept: bool) -> list[str]:
    """Compare a run record with the files and models a re-run or resume would use now.

    Parameters
    ----------
    record : RunRecord
        The recorded run.
    files : list of InputFile
        Every file the run reads now (inputs, ground truth, class masks) with its size and
        checksum now (computed once by the caller, and recorded as they are).
    models : list of dict
        ``describe_model`` entries now (``segmenter``, ``setting``, ``checksum``, ``path``).
    accept : bool
        Proceed despite differences (they are logged and returned).

    Returns
    -------
    list of str
        One line per difference (empty when everything matches).

    Raises
    ------
    RecordMismatchError
        A difference and ``accept`` is False: the message names the first file and says how to
        proceed.
    """
    problems: list[tuple[str, str]] = []
    recorded = {f.path: f for f in record.inputs}
    now = {f.path: f for f in files}
    for path, entry in recorded.items():
        if entry.sha256 is None:
            continue
        if path not in now:  # not read by this run (e.g. --limit); an error only when it is gone
            if not os.path.exists(path):
                problems.append((path, f"{entry.role} file is gone since the run was recorded"))
            continue
        if (now[path].size, now[path].sha256) != (entry.size, entry.sha256):
            problems.append((path, f"{entry.role} file changed since the run was recorded "
                                   f"(sha256 was {entry.sha256[:12]}...)"))
    for path, entry in now.items():
        if path not in recorded:
            problems.append((path, f"{entry.role} file is new: not part of the recorded run"))
    before = {(m.get("segmenter"), m.get("setting")): m for m in record.models}
    for m in models:
        old = before.get((m.get("segmenter"), m.get("setting")))
        if old is None or old.get("checksum") is None or old.get("checksum") == m.get("checksum"):
            continue
        problems.append((str(m.get("path") or m.get("name")),
                         f"model of segmenter {m.get('segmenter')!r} changed since the run was recorded "
                         f"(checksum was {str(old.get('checksum'))[:12]}...)"))
    lines = [f"{path}: {why}" for path, why in problems]
    if problems and not accept:
        path, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RecordMismatchError(f"{why}{more}; pass --accept-changes (accept_changes=True) to run "
                                  "anyway and record the new checksums", path)
    for line in lines:
        logger.warning("accepted change: %s", line)
    return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file in a run folder, held while a run writes it.

    Raises
    ------
    RunFolderError
        When another live process holds the lock.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> "RunLock":
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    logger.warning("%s: taking over the lock of process %d, which is gone", self.path.parent, pid)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise RunFolderError(f"another opsef run (process {pid} on {host}) is writing this run folder; "
                                     f"wait for it, or remove {LOCK_NAME} if that process is gone",
                                     self.path.parent) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RunFolderError("could not take the run folder's lock", self.path.parent)

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunTerminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM during a run."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`RunTerminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise RunTerminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: OS errors that mean the run folder cannot be written (the run stops; resume once fixed)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is an OS error that makes writing the run folder impossible."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
