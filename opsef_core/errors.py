"""Exception types raised by opsef.

Every error that is caused by the user's input (a file, a folder, a config, a
model name) is an :class:`OpsefError`.  The CLI turns these into one line on
stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "OpsefError",
    "InputFileError",
    "UnsupportedFormatError",
    "EmptyFolderError",
    "AxesError",
    "ConfigError",
    "ModelNotFoundError",
    "SegmentationError",
    "RunFolderError",
]


class OpsefError(Exception):
    """Base class of every error opsef raises on bad input.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    path : str or pathlib.Path, optional
        The file or folder concerned; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputFileError(OpsefError):
    """A file cannot be read: missing, truncated, not an image, corrupt metadata."""


class UnsupportedFormatError(InputFileError):
    """A file extension opsef has no reader for."""


class EmptyFolderError(OpsefError):
    """A folder (after include/exclude patterns) holds no usable file."""


class AxesError(OpsefError):
    """An axes string that is invalid or does not fit the data's shape."""


class ConfigError(OpsefError):
    """A run config or parameter set that is invalid (unknown key, bad value)."""


class ModelNotFoundError(OpsefError):
    """A model name or path that cannot be resolved to weights on disk."""


class SegmentationError(OpsefError):
    """A segmenter that cannot run on the given input (wrong dimensionality, channels)."""


class RunFolderError(OpsefError):
    """A run folder that cannot be created, resumed or re-run."""


class RecordMismatchError(RunFolderError):
    """A re-run or resume whose inputs, models or recorded config differ from the run record."""


class RunWriteError(RunFolderError):
    """The run folder cannot be written (disk full, quota, read-only): the run stopped, resumable."""
