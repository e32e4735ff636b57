"""The per-array caches used by the decoders: keyed by identity, dropped with the array."""

import gc

import numpy as np

from opsef_core.segment.memo import ArrayMemo


def test_cache_follows_the_array_and_is_freed_with_it():
    memo = ArrayMemo()
    a, b = np.zeros(4), np.zeros(4)  # equal content, different arrays
    memo.for_array(a)["x"] = 1
    assert memo.for_array(a) == {"x": 1} and memo.for_array(b) == {}
    assert len(memo) == 2
    del a
    gc.collect()
    assert len(memo) == 1  # a's cache went with a
    memo.clear()
    assert len(memo) == 0 and memo.for_array(b) == {}
