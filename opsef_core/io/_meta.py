"""Small helpers shared by the readers: physical units and axis-letter mapping."""

from __future__ import annotations

import math

from ..errors import AxesError

# factor converting a length in the given unit to micrometres
_UNIT_TO_UM = {
    "micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0,
    "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6, "metre": 1e6,
    "å": 1e-4, "angstrom": 1e-4, "pm": 1e-6,
}


def unit_factor(unit: str | None) -> float | None:
    """Factor from ``unit`` to micrometres, or None for unknown/pixel units."""
    if unit is None:
        return None
    return _UNIT_TO_UM.get(str(unit).strip().lower())


def positive(value) -> float | None:
    """``float(value)`` when it is a finite positive number, else None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def map_axes(file_axes: str, source, stack_letter_is_z: bool) -> str:
    """Translate tifffile axis letters to opsef letters (``TCZYX``).

    ``S`` (samples, e.g. RGB) becomes ``C``; ``I``/``Q`` (an unspecified
    sequence of planes) become ``Z`` only when ``stack_letter_is_z`` (the file
    declares the planes a stack, as ImageJ does); anything else is an error.

    Raises
    ------
    AxesError
        Naming the file, the letters and suggesting the ``axes=`` override.
    """
    out = []
    for a in file_axes.upper():
        if a in "TCZYX":
            out.append(a)
        elif a == "S":
            out.append("C")
        elif a in "IQ" and stack_letter_is_z:
            out.append("Z")
        else:
            kind = ("an unspecified sequence of planes" if a in "IQ" else f"axis letter {a!r}")
            raise AxesError(
                f"cannot interpret the file's axes {file_axes!r}: {kind} has no opsef meaning; "
                f"pass axes= (one letter of TCZYX per dimension, e.g. axes='ZYX' or 'TYX')",
                source,
            )
    mapped = "".join(out)
    if len(set(mapped)) != len(mapped):
        raise AxesError(
            f"the file's axes {file_axes!r} map to {mapped!r}, which repeats an axis "
            f"(e.g. both channels and RGB samples); pass axes= to say what each dimension is",
            source,
        )
    return mapped


def check_path(path, kind: str = "file"):
    """Check that ``path`` is an existing file (or folder), naming the reason in one line if not.

    Unlike ``Path.exists()`` (False for a symlink loop, which then reads "not found") and
    ``Path.resolve(strict=True)`` (a bare ``RuntimeError`` on a loop before Python 3.13),
    this tells a symbolic-link loop, a broken link and a permission problem apart.

    Parameters
    ----------
    path : str or Path
    kind : {"file", "folder"}
        What the path must be.

    Returns
    -------
    Path

    Raises
    ------
    InputFileError
        Naming the path and the reason.
    """
    import errno
    import os
    from pathlib import Path

    from ..errors import InputFileError

    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputFileError("symbolic link loop (too many levels of symbolic links)", path) from None
        if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
            if os.path.islink(path):
                raise InputFileError(f"broken symbolic link (points to {os.readlink(path)!r}, which does "
                                     "not exist)", path) from None
            raise InputFileError(f"{kind} not found", path) from None
        if isinstance(exc, PermissionError):
            raise InputFileError("permission denied", path) from None
        raise InputFileError(f"cannot access the {kind} ({exc.strerror or exc})", path) from None
    except (RuntimeError, ValueError) as exc:  # e.g. an embedded NUL byte
        raise InputFileError(f"invalid path ({exc})", path) from None
    import stat as _stat

    if kind == "folder" and not _stat.S_ISDIR(st.st_mode):
        raise InputFileError("not a folder", path)
    if kind == "file" and not _stat.S_ISREG(st.st_mode):
        raise InputFileError("not a file (a folder)" if _stat.S_ISDIR(st.st_mode) else "not a file", path)
    return path
