"""Caches attached to a network output array, for decoding work shared across a sweep.

A run keeps one network pass (an array) per (image, pipeline, model) and decodes it once per
threshold setting; the decoders in :mod:`.stardist_nms` and :mod:`.cellpose_masks` keep what
the settings share in an :class:`ArrayMemo`, keyed by the array's identity and dropped when
the array is freed, so nothing outlives the prediction it was computed from.
"""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["ArrayMemo"]


class ArrayMemo:
    """Per-array dictionaries, keyed by array identity and freed with the array."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, dict]] = {}

    def for_array(self, array: np.ndarray) -> dict:
        """The cache dictionary of ``array`` (a new empty one the first time).

        Parameters
        ----------
        array : ndarray
            The network output the cached values were computed from.

        Returns
        -------
        dict
        """
        key = id(array)
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not array:
            entry = (weakref.ref(array), {})
            self._entries[key] = entry
            weakref.finalize(array, self._entries.pop, key, None)
        return entry[1]

    def clear(self) -> None:
        """Forget every cache."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
