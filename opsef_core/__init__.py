"""opsef_core — open framework for deep-learning instance segmentation of microscopy images.

Heavy libraries (torch, tensorflow, cellpose, stardist, readlif) are imported
only by the modules that need them, so ``import opsef_core`` stays fast.

Importing it sets one process default, before any OpenMP runtime is loaded:
``OMP_WAIT_POLICY=PASSIVE`` (unless already set).  OpenMP threads then sleep instead of
spinning between parallel regions.  StarDist's non-maximum suppression and torch use OpenMP;
with the default policy, busy-waiting threads fight TensorFlow's pool and any other process
for the cores.  On a loaded 2-core machine that made one NMS call 5-25x slower (0.14 s
single-threaded vs 0.7-3.8 s), and Cellpose passes about 1.4x slower
(``benchmarks/RESULTS.md`` (g)).  Set ``OMP_WAIT_POLICY`` yourself to override it.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import OpsefError
from .image import Image

__version__ = "0.1.0"

__all__ = ["Image", "OpsefError", "__version__"]
