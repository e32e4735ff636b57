"""File names: stems, file-name-safe names and partner files (ground truth, masks) matched by name.

One implementation for everything that pairs files by name: run items and their ground truth
or class masks, ``opsef evaluate``, training pairs and curated annotations.

- :func:`file_stem` drops the image extensions opsef reads (``.ome.tif`` as one suffix).
- :func:`safe_name` makes a string file-name safe (run item ids, output file names).
- :func:`find_partner` looks up ``<name><suffix><ext>`` in a folder, for the label extensions
  the readers accept (TIFF only: a ``.png`` would be found but could not be read).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

__all__ = ["IMAGE_SUFFIXES", "LABEL_SUFFIXES", "file_stem", "safe_name", "find_partner"]

#: extensions whose removal gives a file's stem, longest first (``.ome.tif`` before ``.tif``)
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".lif", ".ome.zarr", ".zarr")
#: extensions of label images / masks that :func:`opsef_core.io.read_labels` reads
LABEL_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def file_stem(path: str | Path) -> str:
    """A file's name without its image extension (case-insensitive; ``a.ome.tif`` -> ``a``).

    Other extensions are removed like :attr:`pathlib.Path.stem` does.
    """
    path = Path(path)
    low = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix) and len(low) > len(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def safe_name(text: str, default: str = "image") -> str:
    """``text`` made file-name safe: runs of other characters become ``-``, ``__`` is kept for
    the separators opsef adds itself (callers join parts with ``__`` after cleaning each part).

    Examples
    --------
    >>> safe_name("Series 1/pos 2")
    'Series-1-pos-2'
    """
    out = re.sub(r"_{2,}", "_", _UNSAFE.sub("-", str(text))).strip("-_")
    return out or default


def find_partner(folder: str | Path, names: Iterable[str], suffix: str = "",
                 exact: str | None = None) -> Path | None:
    """The first file ``<name><suffix><ext>`` in ``folder`` for the names in order, or None.

    Parameters
    ----------
    folder : str or Path
        Folder to look in.
    names : iterable of str
        Candidate names, most specific first (e.g. a run item's id, then its file's stem).
    suffix : str
        Text between the name and the extension (``"_masks"``: ``img1_masks.tif``).
    exact : str, optional
        A file name tried first when ``suffix`` is empty (the image's own file name, so a
        truth folder may mirror the image folder).

    Returns
    -------
    Path or None
    """
    folder = Path(folder)
    candidates = [folder / exact] if exact and not suffix and exact.lower().endswith(LABEL_SUFFIXES) else []
    for name in names:
        candidates += [folder / f"{name}{suffix}{ext}" for ext in LABEL_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)
