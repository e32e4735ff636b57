"""StarDist 2D/3D backend (stardist 0.9.2, TensorFlow imported lazily).

The network pass (:meth:`StarDistSegmenter.predict`) returns the object
probability and ray distances; decoding (:meth:`StarDistSegmenter.decode`) runs
StarDist's non-maximum suppression and renders polygons/polyhedra with the
requested ``prob_thresh``/``nms_thresh``; one NMS made at the lowest threshold
of a sweep serves the higher ones (:mod:`opsef_core.segment.stardist_nms`).  Both
depend on the structure of the pinned stardist version; they are wrapped in
:func:`network_pass` and :func:`decode_instances` only, and tests check that the
decoded labels equal ``model.predict_instances`` with the same thresholds
(``tests/test_decode_equality.py``).  No private model method is called: the decoding
restates the dense part of ``_instances_from_prediction`` with StarDist's NMS kernels and
renderers, and the tile guess restates ``_guess_n_tiles`` (:func:`guess_n_tiles`).

Models are found by :func:`opsef_core.models.resolve_model`: a path, the
project's ``models/`` folder (``stardist2d_demo``, ``stardist3d_demo``), the
Keras cache (``$KERAS_HOME/models/StarDist2D/<name>``, default
``~/.keras``), and finally StarDist's own download of registered pretrained
models (``2D_versatile_fluo``, ...), which fails fast without network.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import AfterValidator, Field, field_validator

from ..errors import ModelNotFoundError, SegmentationError
from ..image import Image
from ..models import register_fetcher, register_search, resolve_model
from .base import Segmenter, SegmenterParams, check_percentiles, register_segmenter
from .classical import select_channel
from .normalize import fill_nonfinite, finite_percentiles

__all__ = [
    "StarDistParams",
    "StarDistSegmenter",
    "load_stardist_model",
    "load_stardist_folder",
    "network_pass",
    "decode_instances",
    "default_n_tiles",
    "guess_n_tiles",
    "keras_cache_dirs",
]

logger = logging.getLogger(__name__)

_CLASSES = ("StarDist2D", "StarDist3D")


class StarDistParams(SegmenterParams):
    """Parameters of the StarDist backend.

    Attributes
    ----------
    model : str
        Model name (project ``models/`` folder, Keras cache, or a registered
        pretrained StarDist model) or a path to a model folder.
    prob_thresh, nms_thresh : float, optional
        Object probability and non-maximum-suppression overlap thresholds;
        None uses the model's ``thresholds.json``.
    normalize : (float, float) or False
        Percentiles mapped to 0 and 1 before prediction (csbdeep
        ``normalize``), or False when the input is already normalised.
    n_tiles : tuple of int, optional
        Tiles per spatial axis; None: 2D inputs up to 2048 px per side in one pass
        (:func:`default_n_tiles`), 3D from the model's training patch size
        (:func:`guess_n_tiles`, StarDist's own guess).  Tiled runs use one pass per tile.
    scale : float or tuple of float
        Rescale factor applied (linear interpolation) before prediction; the
        polygons/polyhedra are scaled back to the input size, as
        ``predict_instances(scale=...)`` does.  One value or one per spatial axis.
    channel : int or str, optional
        Channel to segment; required for images with several channels.
    device : {"auto", "cpu", "cuda"}
        Where TensorFlow runs the network.
    """

    model: str = "2D_versatile_fluo"
    prob_thresh: Union[float, None] = Field(None, ge=0, le=1)
    nms_thresh: Union[float, None] = Field(None, ge=0, le=1)
    normalize: Annotated[Union[tuple[float, float], Literal[False]],
                         AfterValidator(lambda v: v if v is False else check_percentiles(v))] = (1.0, 99.8)
    n_tiles: Union[tuple[int, ...], None] = None
    scale: Union[float, tuple[float, ...]] = 1.0
    channel: Union[int, str, None] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("n_tiles")
    @classmethod
    def _check_tiles(cls, v):
        if v is not None and any(t < 1 for t in v):
            raise ValueError(f"n_tiles must be >= 1, got {v}")
        return v

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v):
        vals = (v,) if isinstance(v, (int, float)) else v
        if any(s <= 0 for s in vals):
            raise ValueError(f"scale must be > 0, got {v}")
        return v


# ----------------------------------------------------------------- model lookup
def keras_cache_dirs() -> list[Path]:
    """Keras cache roots where StarDist keeps downloaded models (``$KERAS_HOME``, ``~/.keras``)."""
    roots = []
    if os.environ.get("KERAS_HOME"):
        roots.append(Path(os.environ["KERAS_HOME"]))
    roots.append(Path("~/.keras").expanduser())
    return list(dict.fromkeys(roots))


def _cache_candidates(name: str) -> list[Path]:
    """Model folders a StarDist download of ``name`` would create in the Keras caches.

    A folder is returned only when it holds ``config.json``; otherwise the
    ``config.json`` path is returned (it does not exist, so it is only listed as looked-at).
    """
    out = []
    for root in keras_cache_dirs():
        for cls in _CLASSES:
            base = root / "models" / cls / name
            for folder in (base / name, base / f"{name}_extracted", base):
                out.append(folder if (folder / "config.json").exists() else folder / "config.json")
    return out


def _fetch_pretrained(name: str) -> Path | None:
    """StarDist's own download path (``csbdeep.models.pretrained.get_model_folder``).

    Returns None when ``name`` is not a registered pretrained StarDist model;
    raises whatever the download raises (no network: a URL fetch error in
    well under a second).
    """
    from csbdeep.models.pretrained import get_registered_models

    from stardist.models import StarDist2D, StarDist3D

    for cls in (StarDist2D, StarDist3D):
        keys, aliases = get_registered_models(cls)
        known = set(keys) | {a for names in aliases.values() for a in names}
        if name in known:
            from csbdeep.models.pretrained import get_model_folder

            return Path(get_model_folder(cls, name))
    return None


register_search(
    "stardist",
    _cache_candidates,
    hint="Put a StarDist model folder (config.json, thresholds.json, weights_best.h5) under the "
    "project's models/ folder or give its path; pretrained models (2D_versatile_fluo, ...) need "
    "network once, then live in the Keras cache ($KERAS_HOME or ~/.keras).",
)
register_fetcher("stardist", _fetch_pretrained)


def _read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelNotFoundError("not a StarDist model folder (no config.json)", path)
    try:
        return json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"unreadable StarDist config.json: {exc}", cfg_file) from None


def load_stardist_model(spec: str | Path):
    """Load a StarDist2D/StarDist3D model by name or path (2D/3D from its config).

    Parameters
    ----------
    spec : str or Path
        Anything :func:`opsef_core.models.resolve_model` accepts, or a bioimage.io package
        (:func:`opsef_core.zoo.bioimageio.load_stardist_package`).

    Returns
    -------
    stardist.models.StarDist2D or StarDist3D
        Read-only model (``basedir`` None after loading).

    Raises
    ------
    ModelNotFoundError
        When the model cannot be found, has no config, or its weights fail to load.
    """
    from ..zoo.bioimageio import is_package

    resolved = resolve_model("stardist", spec)
    if is_package(resolved.path):  # a bioimage.io package: its weights in a StarDist model
        from ..zoo.bioimageio import load_stardist_package

        return load_stardist_package(resolved)
    return load_stardist_folder(resolved.path, resolved)


def load_stardist_folder(path: Path, resolved):
    """Load the StarDist model folder ``path`` (config.json, thresholds.json, ``*.h5``).

    Parameters
    ----------
    path : Path
        The model folder.
    resolved : opsef_core.models.ResolvedModel
        What the user named (kept as ``model.opsef_resolved``).

    Raises
    ------
    ModelNotFoundError
        No config, no weights, or weights that fail to load.
    """
    cfg = _read_config(path)
    from stardist.models import StarDist2D, StarDist3D

    cls = StarDist3D if int(cfg.get("n_dim", 2)) == 3 else StarDist2D
    weights = sorted(path.glob("*.h5")) + sorted(path.glob("*.hdf5"))
    if not weights:
        raise ModelNotFoundError("StarDist model folder holds no weights (*.h5)", path)
    out = _io.StringIO()
    try:
        with contextlib.redirect_stdout(out):  # stardist prints while loading
            model = cls(None, name=path.name, basedir=str(path.parent))
    except Exception as exc:  # keras raises many types for bad weight files
        raise ModelNotFoundError(f"cannot load StarDist model: {type(exc).__name__}: {exc}", path) from None
    for line in out.getvalue().splitlines():
        logger.info("stardist: %s", line)
    model.basedir = None  # read-only: never write into the model folder
    model.opsef_resolved = resolved
    return model


#: 2D network passes of at most this many pixels per side run whole (about 1.6 GB at 2048²)
MAX_PASS_SIDE_2D = 2048


def default_n_tiles(model, x: np.ndarray) -> tuple[int, ...]:
    """Tiles per axis when ``n_tiles`` is not given.

    2D: ``ceil(size / MAX_PASS_SIDE_2D)`` per axis, so passes up to 2048² run whole.  StarDist's
    own guess (:func:`guess_n_tiles`, from the training patch) cuts a 1152² input into 3x3 calls,
    which took twice as long as one call (benchmarks/RESULTS.md (g)).  3D: :func:`guess_n_tiles`
    (a 3D pass holds far more per voxel).
    """
    if x.ndim == 2:
        return tuple(max(1, int(np.ceil(s / MAX_PASS_SIDE_2D))) for s in x.shape)
    return guess_n_tiles(model, x)


# ----------------------------------------------------------------- the split of predict_instances
def guess_n_tiles(model, x: np.ndarray) -> tuple[int, ...]:
    """Tiles per axis for the network pass, as StarDist guesses them (``optimize_thresholds``).

    Restates stardist 0.9.2's ``StarDistBase._guess_n_tiles`` for single-channel input:
    ``ceil(size / (patch * batch ** (1 / n_dim)))`` per axis, with the model's training patch
    size and batch size.

    Parameters
    ----------
    model : StarDist2D or StarDist3D
    x : ndarray
        The network input, spatial axes only (the model's single channel implied).

    Returns
    -------
    tuple of int
    """
    cfg = model.config
    b = cfg.train_batch_size ** (1.0 / cfg.n_dim)
    return tuple(int(np.ceil(s / (p * b))) for s, p in zip(x.shape, cfg.train_patch_size))


def network_pass(model, x: np.ndarray, n_tiles: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The network pass of a StarDist model: dense ``(prob, dist)`` at grid resolution.

    Wraps ``model.predict`` (public) — kept next to :func:`decode_instances`
    so that both halves of the split live in one place.
    """
    prob, dist = model.predict(x, n_tiles=n_tiles, show_tile_progress=False, verbose=0)[:2]
    return prob, dist


def decode_instances(model, shape: tuple, prob: np.ndarray, dist: np.ndarray,
                     prob_thresh: float | None, nms_thresh: float | None,
                     scale: dict | None = None) -> tuple[np.ndarray, dict]:
    """Non-maximum suppression and rendering, as ``predict_instances`` does.

    :func:`opsef_core.segment.stardist_nms.decode_dense` re-states the dense part of
    stardist 0.9.2's ``_instances_from_prediction`` with the library's NMS kernels and
    renderers, and reuses one NMS across a ``prob_thresh`` sweep (same labels; tested).

    Parameters
    ----------
    model : StarDist2D or StarDist3D
    shape : tuple
        Spatial shape of the label image to render (the unscaled input).
    prob, dist : ndarray
        Output of :func:`network_pass`.
    prob_thresh, nms_thresh : float or None
        None = the model's thresholds.
    scale : dict, optional
        ``{"Y": sy, "X": sx[, "Z": sz]}`` when the input was rescaled before the pass.

    Returns
    -------
    (ndarray, dict)
        Labels (int32, identical to ``predict_instances``' labels for the same thresholds and
        scale) and the kept objects: ``points`` (in input pixels) and ``prob``, plus ``dist``
        in 3D.  opsef uses the labels only.
    """
    from .stardist_nms import decode_dense

    labels, details = decode_dense(model, tuple(shape), prob, dist, prob_thresh, nms_thresh, scale)
    return np.asarray(labels).astype(np.int32, copy=False), details


# ----------------------------------------------------------------- backend
@register_segmenter
class StarDistSegmenter(Segmenter):
    """StarDist2D/StarDist3D segmentation (see :class:`StarDistParams`)."""

    name = "stardist"
    Params = StarDistParams
    network_fields = frozenset({"model", "normalize", "n_tiles", "scale", "channel", "device"})

    def model_key(self, params: StarDistParams) -> str:
        """The loaded model depends on the model spec only."""
        return str(self.params(params).model)

    def load_model(self, params: StarDistParams):
        """Load the StarDist model named by ``params.model``."""
        return load_stardist_model(self.params(params).model)

    def describe_model(self, params) -> dict:
        """Model identity for run records: resolved path, checksum, dims, rays, grid, thresholds."""
        p = self.params(params)
        from ..zoo.bioimageio import is_package, stardist_package_config

        resolved = resolve_model("stardist", p.model)
        if is_package(resolved.path):
            cfg, thresholds = stardist_package_config(resolved.path)
        else:
            cfg = _read_config(resolved.path)
            thr_file = resolved.path / "thresholds.json"
            thresholds = json.loads(thr_file.read_text()) if thr_file.is_file() else None
        return {
            "backend": self.name,
            **resolved.to_dict(),
            "n_dim": cfg.get("n_dim"),
            "n_rays": cfg.get("n_rays"),
            "grid": cfg.get("grid"),
            "anisotropy": cfg.get("anisotropy"),
            "thresholds": thresholds,
        }

    # ------------------------------------------------------------- helpers
    def _input(self, image: Image, p: StarDistParams, model) -> np.ndarray:
        img = select_channel(image, p.channel, self.name)
        n_dim = int(model.config.n_dim)
        x = np.asarray(img.data)
        if n_dim == 2 and x.ndim == 3 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != n_dim:
            raise SegmentationError(
                f"stardist: model {p.model!r} is {n_dim}D but the image is {x.ndim}D "
                f"(axes {img.axes}); use a {x.ndim}D model or select a plane/stack", image.source)
        if int(model.config.n_channel_in) != 1:
            raise SegmentationError(
                f"stardist: model {p.model!r} expects {model.config.n_channel_in} channels; "
                "only single-channel models are supported", image.source)
        return x

    def _scale(self, p: StarDistParams, ndim: int, source) -> tuple | None:
        s = p.scale
        vals = (float(s),) * ndim if isinstance(s, (int, float)) else tuple(float(v) for v in s)
        if len(vals) != ndim:
            raise SegmentationError(f"stardist: scale {s} needs one value per spatial axis ({ndim})", source)
        return None if all(v == 1.0 for v in vals) else vals

    # ------------------------------------------------------------- the two stages
    def predict(self, image: Image, params: StarDistParams) -> dict[str, np.ndarray]:
        """Normalise, rescale, run the network (``prob``, ``dist`` at grid resolution).

        Normalisation is csbdeep's ``normalize_mi_ma`` with the ``normalize`` percentiles of
        the finite pixels; non-finite pixels (NaN, inf) enter the network as the low limit
        (background), with a warning (:mod:`opsef_core.segment.normalize`).

        Returns
        -------
        dict
            ``{"prob": ndarray, "dist": ndarray}``.
        """
        from scipy import ndimage as ndi

        from .device import resolve_device

        p = self.params(params)
        model = self.model(p)
        x = self._input(image, p, model)
        # non-finite pixels are background: the low percentile of the finite pixels, or 0 for
        # pre-normalised input (normalize=False: 0 is the low limit there)
        x = fill_nonfinite(x, None if p.normalize is False else p.normalize,
                           (0.0, 1.0) if p.normalize is False else None, name=image.name, source=image.source)
        if p.normalize is not False:
            from csbdeep.utils import normalize_mi_ma

            # csbdeep's normalize, with the percentiles of the finite pixels
            mi, ma = finite_percentiles(x, p.normalize, name=image.name, source=image.source)
            x = normalize_mi_ma(x, mi, ma, clip=False, eps=1e-20, dtype=np.float32)
        else:
            x = x.astype(np.float32, copy=False)
        scale = self._scale(p, x.ndim, image.source)
        if scale is not None:
            x = ndi.zoom(x, scale, order=1)
        if p.n_tiles is not None:
            if len(p.n_tiles) != x.ndim:
                raise SegmentationError(f"stardist: n_tiles {p.n_tiles} needs {x.ndim} values", image.source)
            n_tiles = tuple(p.n_tiles)
        else:
            n_tiles = default_n_tiles(model, x)
        device = resolve_device(p.device, framework="tensorflow")
        import tensorflow as tf

        logger.debug("stardist predict %s on %s, n_tiles=%s", x.shape, device, n_tiles)
        with tf.device("/GPU:0" if device.startswith("cuda") else "/CPU:0"):
            prob, dist = network_pass(model, x, n_tiles)
        return {"prob": prob, "dist": dist}

    def decode(self, prediction: dict[str, np.ndarray], image: Image, params: StarDistParams) -> np.ndarray:
        """StarDist NMS + rendering at the thresholds of ``params``.

        Returns
        -------
        ndarray of int32
            Labels in the image's spatial shape.
        """
        p = self.params(params)
        model = self.model(p)
        full_shape = tuple(image.size(a) for a in image.spatial_axes)
        shape = full_shape
        if model.config.n_dim == 2 and len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        scale = self._scale(p, len(shape), image.source)
        scale_dict = None if scale is None else dict(zip("ZYX"[-len(shape):], scale))
        labels, _ = decode_instances(model, shape, prediction["prob"], prediction["dist"],
                                     p.prob_thresh, p.nms_thresh, scale_dict)
        return labels.reshape(full_shape)
