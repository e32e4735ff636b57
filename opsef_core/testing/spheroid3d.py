"""Synthetic 3D spheroid stacks like the demo's clearing stacks, for training the 3D demo models.

The demo stacks (``demo_data/spheroid_clearing``, 2 cleared + 2 non-cleared, 32x128x128, Z step
2 µm, pixel 0.5 µm) are drawn by ``make_spheroid`` of ``demo_data/make_demo_data.py``; this
module draws as many more stacks as wanted from that same function (same nucleus size and
density, anisotropy, noise and depth attenuation, cleared or non-cleared), each from its own
generator ``numpy.random.default_rng([base_seed, index])``.  The default ``base_seed``
(:data:`TRAIN_SEED`) is not the demo's (``make_demo_data.DEFAULT_SEED``, whose spheroid stacks
come from ``default_rng([DEFAULT_SEED, 1])``), so no generated stack repeats a demo stack.

:func:`make_fucci_stack` draws FUCCI-like stacks the same way from the demo's ``make_fucci3d``
(24x96x96, Z step 1 µm, sparse nuclei spanning 5-7 slices; the nuclear channel, preprocessed
like ``notebooks/fucci_3d`` by default), from ``default_rng([FUCCI_SEED, index])``.

The demo generator is loaded from its file (it is a standalone script, not part of the
package), so the demo data stay exactly what ``make_demo_data.py`` writes.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["CONDITIONS", "DEMO_GENERATOR", "FUCCI_PIPELINE", "FUCCI_SAMPLING", "FUCCI_SEED", "SPHEROID_SAMPLING",
           "TRAIN_SEED", "describe", "describe_fucci", "make_fucci_pairs", "make_fucci_stack", "make_pairs",
           "make_stack"]

log = logging.getLogger(__name__)

#: the two imaging conditions of the demo stacks
CONDITIONS = ("cleared", "noncleared")
#: base seed of the generated stacks (the demo data use ``make_demo_data.DEFAULT_SEED``)
TRAIN_SEED = 1402
#: base seed of the generated FUCCI-like stacks (:func:`make_fucci_stack`)
FUCCI_SEED = 1403
#: voxel size of the spheroid stacks relative to their XY pixel (Z step 2 µm, pixel 0.5 µm)
SPHEROID_SAMPLING = (4.0, 1.0, 1.0)
#: voxel size of the FUCCI stacks relative to their XY pixel (Z step 1 µm, pixel 0.5 µm)
FUCCI_SAMPLING = (2.0, 1.0, 1.0)
#: the FUCCI notebook's default preprocessing (``notebooks/fucci_3d``,
#: :func:`opsef_core.workflows.fucci3d.fucci_pipeline` arguments)
FUCCI_PIPELINE = {"zero_below": 0.0, "gamma": 0.8, "clahe_clip": 0.01, "clahe_kernel": None,
                  "median_radius": 1, "artefact_radius": 1}
#: the demo data generator whose ``make_spheroid`` (and ``make_fucci3d``) draws every stack
DEMO_GENERATOR = Path(__file__).resolve().parents[2] / "demo_data" / "make_demo_data.py"


@cache
def _demo_module():
    """``demo_data/make_demo_data.py`` as a module (loaded once)."""
    if not DEMO_GENERATOR.is_file():
        raise ConfigError("the demo data generator is missing (needed for synthetic spheroid stacks)",
                          DEMO_GENERATOR)
    spec = importlib.util.spec_from_file_location("opsef_make_demo_data", DEMO_GENERATOR)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_stack(index: int, *, cleared: bool, base_seed: int = TRAIN_SEED,
               shape: tuple[int, int, int] = (32, 128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic spheroid stack and its 3D instance labels.

    Parameters
    ----------
    index : int
        Stack number; the stack is drawn from ``default_rng([base_seed, index])``.
    cleared : bool
        Cleared (weak depth attenuation) or non-cleared (strong) condition.
    base_seed : int
        Base seed (:data:`TRAIN_SEED` by default; not the demo data's).
    shape : tuple of int
        ZYX shape (the demo stacks' by default).

    Returns
    -------
    image : ndarray of uint16, ZYX
    labels : ndarray of uint16, ZYX
    """
    if int(index) < 0:
        raise ConfigError(f"stack index must be >= 0, got {index}")
    rng = np.random.default_rng([int(base_seed), int(index)])
    return _demo_module().make_spheroid(rng, shape=tuple(shape), cleared=bool(cleared))


def make_pairs(indices: Iterable[int], *, conditions: Iterable[str] = CONDITIONS, base_seed: int = TRAIN_SEED,
               shape: tuple[int, int, int] = (32, 128, 128)):
    """Training pairs of generated stacks: stack ``indices[k]`` in condition ``conditions[k % n]``.

    Parameters
    ----------
    indices : iterable of int
        Stack numbers (see :func:`make_stack`).
    conditions : iterable of {"cleared", "noncleared"}
        Conditions, cycled over the stacks.
    base_seed : int
        Base seed of the stacks.
    shape : tuple of int
        ZYX shape.

    Returns
    -------
    opsef_core.train.data.TrainingPairs
        Named ``gen<base_seed>/<condition>/<index:03d>``.
    """
    from ..train.data import TrainingPairs

    conds = list(conditions)
    bad = [c for c in conds if c not in CONDITIONS]
    if bad or not conds:
        raise ConfigError(f"conditions must be among {list(CONDITIONS)}, got {conds}")
    images, labels, names = [], [], []
    for k, i in enumerate(indices):
        cond = conds[k % len(conds)]
        img, lab = make_stack(i, cleared=cond == "cleared", base_seed=base_seed, shape=shape)
        images.append(img)
        labels.append(lab)
        names.append(f"gen{base_seed}/{cond}/{int(i):03d}")
    log.debug("generated %d spheroid stacks (base seed %d)", len(names), base_seed)
    return TrainingPairs(images, labels, names)


def describe(indices: Iterable[int], *, conditions: Iterable[str] = CONDITIONS,
             base_seed: int = TRAIN_SEED) -> dict:
    """What :func:`make_pairs` draws, for a model's ``training.json``."""
    return {"generator": "opsef_core.testing.spheroid3d.make_pairs "
                         "(make_spheroid of demo_data/make_demo_data.py)",
            "rng": "numpy.random.default_rng([base_seed, index])", "base_seed": int(base_seed),
            "indices": [int(i) for i in indices], "conditions": list(conditions)}


def make_fucci_stack(index: int, *, base_seed: int = FUCCI_SEED,
                     preprocess: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The nuclear channel of one synthetic FUCCI stack and its 3D instance labels.

    Drawn by ``make_fucci3d`` of ``demo_data/make_demo_data.py`` (24x96x96, Z step 1 µm,
    pixel 0.5 µm, 26 nuclei) from ``default_rng([base_seed, index])``.

    Parameters
    ----------
    index : int
        Stack number.
    base_seed : int
        Base seed (:data:`FUCCI_SEED` by default; not the demo data's).
    preprocess : bool
        Apply the FUCCI notebook's default preprocessing (:data:`FUCCI_PIPELINE`: gamma, CLAHE,
        median, white top-hat) to the nuclear channel, as the notebook's segmenters see it.

    Returns
    -------
    image : ndarray, ZYX
        ``uint16`` raw, or ``float32`` preprocessed.
    labels : ndarray of uint16, ZYX
    """
    if int(index) < 0:
        raise ConfigError(f"stack index must be >= 0, got {index}")
    rng = np.random.default_rng([int(base_seed), int(index)])
    image, labels, _ = _demo_module().make_fucci3d(rng)
    nuclear = image[0]
    if preprocess:
        from ..image import Image
        from ..workflows.fucci3d import fucci_pipeline

        pipe = fucci_pipeline(**FUCCI_PIPELINE)
        nuclear = np.asarray(pipe.apply(Image.from_array(nuclear, "ZYX")).data, np.float32)
    return nuclear, labels


def make_fucci_pairs(indices: Iterable[int], *, base_seed: int = FUCCI_SEED, preprocess: bool = True):
    """Training pairs of generated FUCCI-like stacks (:func:`make_fucci_stack`).

    Returns
    -------
    opsef_core.train.data.TrainingPairs
        Named ``fucci<base_seed>/<index:03d>``.
    """
    from ..train.data import TrainingPairs

    images, labels, names = [], [], []
    for i in indices:
        img, lab = make_fucci_stack(i, base_seed=base_seed, preprocess=preprocess)
        images.append(img)
        labels.append(lab)
        names.append(f"fucci{base_seed}/{int(i):03d}")
    return TrainingPairs(images, labels, names)


def describe_fucci(indices: Iterable[int], *, base_seed: int = FUCCI_SEED, preprocess: bool = True) -> dict:
    """What :func:`make_fucci_pairs` draws, for a model's ``training.json``."""
    return {"generator": "opsef_core.testing.spheroid3d.make_fucci_pairs "
                         "(make_fucci3d of demo_data/make_demo_data.py, nuclear channel)",
            "rng": "numpy.random.default_rng([base_seed, index])", "base_seed": int(base_seed),
            "indices": [int(i) for i in indices],
            "preprocessing": dict(FUCCI_PIPELINE) if preprocess else None}
