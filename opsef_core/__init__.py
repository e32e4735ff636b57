"""opsef_core — open framework for deep-learning instance segmentation of microscopy images.

Heavy libraries (torch, tensorflow, cellpose, stardist, readlif) are imported
only by the modules that need them, so ``import opsef_core`` stays fast.
"""

from .errors import OpsefError
from .image import Image

__version__ = "0.1.0"

__all__ = ["Image", "OpsefError", "__version__"]
