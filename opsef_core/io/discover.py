"""Finding input files in a folder: include/exclude patterns, natural sort order."""

from __future__ import annotations

import fnmatch
import logging
import re
from pathlib import Path
from typing import Iterable

from ..errors import EmptyFolderError
from ._meta import check_path

__all__ = ["discover", "natural_key"]

logger = logging.getLogger(__name__)

DEFAULT_INCLUDE = ("*.tif", "*.tiff", "*.lif", "*.zarr")


def natural_key(path: str | Path) -> list:
    """Sort key that orders embedded numbers by value (``img2`` before ``img10``), case-insensitively."""
    text = str(path)
    return [(0, int(tok), tok) if tok.isdigit() else (1, tok.lower(), tok) for tok in re.split(r"(\d+)", text) if tok]


def _matches(name: str, pattern: str) -> bool:
    """Glob match when the pattern has wildcards, else a substring match (both case-insensitive)."""
    name, pattern = name.lower(), pattern.lower()
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def discover(folder: str | Path, include: Iterable[str] | str = DEFAULT_INCLUDE,
             exclude: Iterable[str] | str = (), recursive: bool = False) -> list[Path]:
    """List the input files of a folder.

    Parameters
    ----------
    folder : str or Path
        Folder to search.
    include : str or sequence of str
        A file is kept when its name matches any of these: glob patterns
        (``"*.tif"``) or, without wildcards, substrings of the file name
        (``"DAPI"``).  Matching is case-insensitive.
    exclude : str or sequence of str
        Files whose name matches any of these are dropped (same rules).
    recursive : bool
        Also search sub-folders (hidden folders are skipped).

    Returns
    -------
    list of Path
        Files in natural order of their path relative to ``folder``
        (``img2`` before ``img10``).  Hidden files (``.name``) are skipped.

    Raises
    ------
    InputFileError
        When ``folder`` does not exist, is not a folder, is a symbolic-link loop or a
        broken link.  Entries inside it that are such links are skipped (with a warning).
    EmptyFolderError
        When no file remains; the message names the patterns.
    """
    folder = Path(folder)
    include = (include,) if isinstance(include, str) else tuple(include)
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    check_path(folder, "folder")  # not found, not a folder, symlink loop, broken link: InputFileError
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = []
    for p in candidates:
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if any(part.lower().endswith(".zarr") for part in rel.parts[:-1]):
            continue  # inside a zarr store
        if p.is_dir() and p.name.lower().endswith(".zarr"):
            pass  # a zarr store is one input, like a file
        elif not p.is_file():
            if p.is_symlink() and not p.exists():
                logger.warning("%s: skipped (a broken symbolic link or a symbolic-link loop)", p)
            continue
        if include and not any(_matches(p.name, pat) for pat in include):
            continue
        if any(_matches(p.name, pat) for pat in exclude):
            continue
        found.append(p)
    if not found:
        raise EmptyFolderError(
            f"no input file{' (searched recursively)' if recursive else ''} matches include={list(include)}"
            + (f" and not exclude={list(exclude)}" if exclude else ""), folder)
    found.sort(key=lambda p: natural_key(p.relative_to(folder).as_posix()))
    logger.debug("found %d files in %s", len(found), folder)
    return found
