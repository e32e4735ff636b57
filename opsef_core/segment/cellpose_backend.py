"""The Cellpose backend (cellpose 3.1.1.2): 2D, 3D (``do_3D``) and 2D-per-slice with stitching.

The network pass (:meth:`CellposeSegmenter.predict`) runs ``CellposeModel.eval(...,
compute_masks=False)`` and returns the flow field ``dP`` and the cell-probability map
``cellprob`` at the input size, as float32; the decoding
(:meth:`CellposeSegmenter.decode`, :func:`masks_from_flows`) runs Cellpose's own mask
reconstruction with the thresholds, so a sweep over ``flow_threshold``,
``cellprob_threshold``, ``min_size``, ``niter`` or ``stitch_threshold`` re-uses one
network pass.  The decoded labels equal those of ``model.eval(...)`` with the same
parameters exactly (tested).

The decoding calls only cellpose's public stage functions (``dynamics.compute_masks`` /
``follow_flows`` / ``get_masks_torch``, ``metrics.flow_error``, ``utils.stitch3D``,
``utils.fill_holes_and_remove_small_masks``) in the order and with the ``niter``,
``min_size`` and resizing of ``CellposeModel._compute_masks`` (3.1.1.2), which it no
longer calls: :func:`masks_from_flows` restates it for a plane, a stack of planes
(stitched) and a 3D volume.  :mod:`opsef_core.fusion` decodes averaged flows with the
same :func:`masks_from_flows`.

Model names resolve through :func:`opsef_core.models.resolve_model`: the project's
``models/`` folder first (e.g. ``cellpose_demo``), then the Cellpose model folder
(``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``; ``nuclei`` is the file
``nucleitorch_0``, ``cyto``/``cyto2`` are ``cytotorch_0``/``cyto2torch_0``, ``cyto3`` is
``cyto3``), then Cellpose's download from ``https://www.cellpose.org/models`` (fails fast
offline with :class:`~opsef_core.errors.ModelNotFoundError`).  A model *folder* (as
``models/cellpose_demo/``) holds one weights file (``weights.pth`` or any file that is not
``.json``/``.md``/``.txt``) next to its ``training.json``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import numpy as np
from pydantic import Field, model_validator

from ..errors import ModelNotFoundError, SegmentationError
from ..image import Image
from ..models import register_fetcher, register_search, resolve_model
from .base import IntensityLimits, Percentiles, Segmenter, SegmenterParams, check_input, register_segmenter
from .memo import ArrayMemo
from .normalize import fill_nonfinite

__all__ = [
    "CellposeParams",
    "CellposeSegmenter",
    "masks_from_flows",
    "cellpose_model_dir",
    "cellpose_weights_file",
    "BUILTIN_FILES",
]

logger = logging.getLogger(__name__)

#: Cellpose's file names of the named pretrained models that differ from the name.
BUILTIN_FILES = {"nuclei": "nucleitorch_0", "cyto": "cytotorch_0", "cyto2": "cyto2torch_0"}
_CELLPOSE_URL = "https://www.cellpose.org/models"
_DOWNLOAD_TIMEOUT_S = 30.0
_NON_WEIGHT_SUFFIXES = {".json", ".md", ".txt", ".csv", ".npy", ".log"}


# ----------------------------------------------------------------------------- model lookup
def cellpose_model_dir() -> Path:
    """Cellpose's model folder: ``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``."""
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def _search_cellpose_dir(name: str) -> list[Path]:
    root = cellpose_model_dir()
    names = [BUILTIN_FILES.get(name, name)]
    if name not in names:
        names.append(name)
    return [root / n for n in names]


def _fetch_cellpose(name: str) -> Path | None:
    """Download a named pretrained model with cellpose's own downloader (None if not a named model)."""
    import socket

    from cellpose import models as cp_models
    from cellpose import utils as cp_utils

    if name not in cp_models.MODEL_NAMES:
        return None
    basename = BUILTIN_FILES.get(name, name)
    root = cellpose_model_dir()
    root.mkdir(parents=True, exist_ok=True)
    dst = root / basename
    url = f"{getattr(cp_models, '_MODEL_URL', _CELLPOSE_URL)}/{basename}"
    logger.info("downloading cellpose model %s from %s", name, url)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # urlopen has no timeout of its own
    try:
        cp_utils.download_url_to_file(url, os.fspath(dst), progress=False)
    finally:
        socket.setdefaulttimeout(old)
    return dst


register_search(
    "cellpose",
    _search_cellpose_dir,
    hint=(
        "Give a path to Cellpose weights, put a trained model under models/<name>, or copy the "
        "pretrained file (nuclei -> nucleitorch_0, cyto3 -> cyto3) into $CELLPOSE_LOCAL_MODELS_PATH "
        "or ~/.cellpose/models (named models are downloaded from cellpose.org when online)."
    ),
)
register_fetcher("cellpose", _fetch_cellpose)


def cellpose_weights_file(path: str | Path) -> Path:
    """The weights file of a resolved model path (a file, or a folder holding one weights file).

    Raises
    ------
    ModelNotFoundError
        When a folder holds no weights file or several candidates.
    """
    path = Path(path)
    if path.is_file():
        return path
    preferred = path / "weights.pth"
    if preferred.is_file():
        return preferred
    cands = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() not in _NON_WEIGHT_SUFFIXES
                   and not p.name.startswith("."))
    if len(cands) != 1:
        raise ModelNotFoundError(
            f"cellpose model folder must hold exactly one weights file (weights.pth); found "
            f"{[p.name for p in cands]}", path)
    return cands[0]


# ----------------------------------------------------------------------------- parameters
class CellposeParams(SegmenterParams):
    """Parameters of the Cellpose backend.

    Network parameters: ``model``, ``diameter``/``scale_factor``, ``channel``,
    ``nuclear_channel``, ``do_3D``, ``anisotropy``, ``normalize``, ``invert``,
    ``augment``, ``tile_overlap``, ``device``.  Decoding parameters (cheap to sweep):
    ``flow_threshold``, ``cellprob_threshold``, ``min_size``, ``max_size_fraction``,
    ``niter``, ``stitch_threshold``.  ``batch_size`` does not change results.

    Attributes
    ----------
    model : str
        ``nuclei``, ``cyto``, ``cyto2``, ``cyto3`` (Cellpose pretrained), a project model
        name (``cellpose_demo``) or a path to weights.
    diameter : float, optional
        Object diameter in pixels in the image; the image is rescaled by
        ``diam_mean / diameter``.  Exclusive with ``scale_factor``.
    scale_factor : float, optional
        OpSeF style: factor multiplying the image size before the network
        (``= diam_mean / diameter``).  Neither given: factor 1 (objects assumed to be
        ``diam_mean`` pixels wide; note that ``CellposeModel.eval(diameter=None)`` would
        instead use ``diam_mean / diam_labels``, the training objects' mean size).
    channel : int or str, optional
        Channel (index or name) to segment; required when the image has several channels.
    nuclear_channel : int or str, optional
        Optional second input channel (nuclei) for cytoplasm models.
    do_3D : bool
        Run Cellpose in 3D on a ZYX stack (flows with 3 components).  With ``False`` a
        stack is segmented plane by plane and stitched (``stitch_threshold > 0`` required).
    anisotropy : float, optional
        Z sampling relative to XY for ``do_3D``; default pixel_size Z / pixel_size X.
    stitch_threshold : float
        IoU threshold linking 2D masks of consecutive planes (stacks without ``do_3D``).
    flow_threshold, cellprob_threshold : float
        Cellpose's flow error and cell probability thresholds (2D; flow is unused in 3D).
    min_size : int
        Masks smaller than this (pixels/voxels) are removed (-1: keep all).
    max_size_fraction : float
        Masks larger than this fraction of the image are removed.
    niter : int, optional
        Dynamics iterations; default ``200 / rescale`` as in Cellpose.
    normalize : (float, float)
        Percentiles mapped to 0 and 1 per channel (over the whole stack in 3D).
    normalize_limits : (float, float), optional
        Absolute intensities mapped to 0 and 1 instead of the ``normalize`` percentiles
        of this image (tiled segmentation passes the whole image's percentiles here,
        so every tile is normalised alike).
    invert : bool
        Invert intensities after normalisation.
    augment : bool
        Test-time flips of overlapping tiles.
    tile_overlap : float
        Fraction of tile overlap.
    device : str
        ``auto``, ``cpu`` or ``cuda`` (see :func:`opsef_core.segment.device.resolve_device`).
    batch_size : int
        Tiles per network batch.
    """

    model: str = "nuclei"
    diameter: Optional[float] = Field(None, gt=0)
    scale_factor: Optional[float] = Field(None, gt=0)
    channel: Optional[Union[int, str]] = None
    nuclear_channel: Optional[Union[int, str]] = None
    do_3D: bool = False
    anisotropy: Optional[float] = Field(None, gt=0)
    stitch_threshold: float = Field(0.0, ge=0, le=1)
    flow_threshold: float = Field(0.4, ge=0)
    cellprob_threshold: float = Field(0.0, ge=-12, le=12)
    min_size: int = Field(15, ge=-1)
    max_size_fraction: float = Field(0.4, gt=0, le=1)
    niter: Optional[int] = Field(None, gt=0)
    normalize: Percentiles = (1.0, 99.0)
    normalize_limits: Optional[IntensityLimits] = None
    invert: bool = False
    augment: bool = False
    tile_overlap: float = Field(0.1, ge=0.05, lt=0.5)
    device: str = "auto"
    batch_size: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _exclusive_scale(self):
        if self.diameter is not None and self.scale_factor is not None:
            raise ValueError("give either diameter or scale_factor, not both "
                             "(scale_factor = diam_mean / diameter)")
        return self


# ----------------------------------------------------------------------------- decoding
_VOLUME_MEMO = ArrayMemo()


def _stack_masks(dP: np.ndarray, cellprob: np.ndarray, *, flow_threshold: float, cellprob_threshold: float,
                 min_size: int, max_size_fraction: float, niter: float, stitch_threshold: float,
                 device) -> np.ndarray:
    """Masks of a ``(Z, Y, X)`` stack segmented plane by plane, as ``CellposeModel._compute_masks`` makes them.

    Each plane is decoded like a single plane (:func:`~.cellpose_masks.plane_masks`, Cellpose's
    ``resize_and_compute_masks`` without resizing: the flows are at the input size), with
    ``min_size`` off while stitching is to follow; then ``utils.stitch3D`` links the planes at
    ``stitch_threshold`` and ``utils.fill_holes_and_remove_small_masks`` applies ``min_size`` to
    the stitched objects.  The output dtype is that of the first plane's masks, as in Cellpose.
    """
    from cellpose import utils

    from .cellpose_masks import plane_masks

    nimg = cellprob.shape[0]
    min_size0 = min_size if stitch_threshold == 0 or nimg == 1 else -1  # off for stitching
    masks = None
    for i in range(nimg):
        out = plane_masks(dP[:, i], cellprob[i], flow_threshold=flow_threshold,
                          cellprob_threshold=cellprob_threshold, min_size=min_size0,
                          max_size_fraction=max_size_fraction, niter=niter, device=device)
        if nimg == 1:
            return out
        if masks is None:
            masks = np.zeros((nimg,) + cellprob.shape[1:], out.dtype)
        masks[i] = out
    if stitch_threshold > 0:
        logger.info("stitching %d planes using stitch_threshold=%.3f", nimg, stitch_threshold)
        masks = utils.stitch3D(masks, stitch_threshold=stitch_threshold)
        masks = utils.fill_holes_and_remove_small_masks(masks, min_size=min_size)
    return masks


def _volume_masks(dP: np.ndarray, cellprob: np.ndarray, *, cellprob_threshold: float, min_size: int,
                  max_size_fraction: float, niter: float, device) -> np.ndarray:
    """Masks of 3D flows (``do_3D``), as ``CellposeModel._compute_masks`` makes them.

    ``dynamics.compute_masks(..., do_3D=True)`` (its ``min_size`` left off; the flow-error
    check does not apply in 3D) and then ``utils.fill_holes_and_remove_small_masks(min_size)``
    -- Cellpose's ``resize_and_compute_masks`` without resizing.  The dynamics do not depend on
    ``min_size`` (nor on ``flow_threshold``): they are cached per flow array and
    ``(cellprob_threshold, niter, max_size_fraction)``, so a ``min_size`` sweep follows the 3D
    flows once.
    """
    from cellpose import dynamics, utils

    memo = _VOLUME_MEMO.for_array(dP)
    key = (float(cellprob_threshold), float(niter), float(max_size_fraction), str(device))
    if key not in memo:
        memo[key] = dynamics.compute_masks(dP, cellprob, niter=niter, cellprob_threshold=cellprob_threshold,
                                           interp=True, do_3D=True, max_size_fraction=max_size_fraction,
                                           device=device)
    else:
        logger.debug("cellpose 3D dynamics reused (cellprob_threshold %s)", cellprob_threshold)
    # fill_holes_and_remove_small_masks writes into its input: give it a copy of the cached masks
    return utils.fill_holes_and_remove_small_masks(memo[key].copy(), min_size=min_size)


def masks_from_flows(
    dP: np.ndarray,
    cellprob: np.ndarray,
    rescale: float = 1.0,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
    niter: int | None = None,
    do_3D: bool = False,
    stitch_threshold: float = 0.0,
    device: str = "cpu",
) -> np.ndarray:
    """Cellpose's mask reconstruction from flows, exactly as ``CellposeModel.eval`` runs it.

    For a single plane the dynamics and flow errors are computed once per flow array and
    ``cellprob_threshold`` and reused for every ``flow_threshold``/``min_size``
    (:mod:`opsef_core.segment.cellpose_masks`); a stack of planes is decoded plane by plane
    and stitched (:func:`_stack_masks`), 3D flows with ``dynamics.compute_masks``
    (:func:`_volume_masks`, dynamics reused across ``min_size``).  No private cellpose
    method is called.

    Parameters
    ----------
    dP : ndarray
        Flows: ``(2, Y, X)`` for a plane, ``(2, Z, Y, X)`` for a stack of planes (stitched
        when ``stitch_threshold > 0``), ``(3, Z, Y, X)`` with ``do_3D``.
    cellprob : ndarray
        Cell-probability logits with the spatial shape.
    rescale : float
        The image rescaling of the network pass; sets the default ``niter = 200 / rescale``.
    flow_threshold, cellprob_threshold, min_size, max_size_fraction, niter, stitch_threshold
        As in ``CellposeModel.eval``.
    do_3D : bool
        Whether the flows are 3D.
    device : str
        Torch device for the dynamics (``"cpu"`` or ``"cuda"``).

    Returns
    -------
    ndarray of int32
        Label image with ``cellprob``'s shape.

    Raises
    ------
    SegmentationError
        When the arrays do not fit together, or a plane stack has ``stitch_threshold == 0``.
    """
    dP = np.asarray(dP, dtype=np.float32)
    cellprob = np.asarray(cellprob, dtype=np.float32)
    spatial = cellprob.shape
    want = (3 if do_3D else 2,) + spatial
    if dP.shape != want or cellprob.ndim not in (2, 3) or (do_3D and cellprob.ndim != 3):
        raise SegmentationError(
            f"cellpose flows of shape {dP.shape} do not fit cell probabilities {spatial} "
            f"(expected dP {want}{' with do_3D' if do_3D else ''})")
    if cellprob.ndim == 3 and not do_3D and stitch_threshold <= 0 and spatial[0] > 1:
        raise SegmentationError(
            "a Z stack segmented plane by plane needs stitch_threshold > 0 (e.g. 0.3) or do_3D=True")
    if niter is None or niter == 0:
        niter = 1.0 / rescale * 200  # Cellpose's default with resample=True
    import torch

    from .cellpose_masks import plane_masks

    dev = torch.device(device)
    with warnings.catch_warnings():
        # torch warns on every sparse tensor cellpose builds while following the flows
        warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
        if cellprob.ndim == 2:
            masks = plane_masks(dP, cellprob, flow_threshold=flow_threshold, cellprob_threshold=cellprob_threshold,
                                min_size=min_size, max_size_fraction=max_size_fraction, niter=niter, device=dev)
        elif do_3D:
            masks = _volume_masks(dP, cellprob, cellprob_threshold=cellprob_threshold, min_size=min_size,
                                  max_size_fraction=max_size_fraction, niter=niter, device=dev)
        else:
            masks = _stack_masks(dP, cellprob, flow_threshold=flow_threshold, cellprob_threshold=cellprob_threshold,
                                 min_size=min_size, max_size_fraction=max_size_fraction, niter=niter,
                                 stitch_threshold=stitch_threshold, device=dev)
    return np.asarray(masks).squeeze().reshape(spatial).astype(np.int32)


# ----------------------------------------------------------------------------- backend
def _device(choice: str) -> str:
    try:
        from .device import resolve_device
    except ImportError:  # pragma: no cover - the helper ships with the package
        import torch

        return "cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu"
    return resolve_device(choice, framework="torch")


@register_segmenter
class CellposeSegmenter(Segmenter):
    """Cellpose 3 (CPnet) segmentation with a cached network pass.

    ``predict`` returns ``{"dP", "cellprob", "rescale"}``: float32 flows at the input
    size (``(2, Y, X)``, ``(2, Z, Y, X)`` per plane, or ``(3, Z, Y, X)`` with ``do_3D``),
    float32 cell-probability logits, and the rescale factor used (0-d array).
    """

    name: ClassVar[str] = "cellpose"
    Params: ClassVar[type[SegmenterParams]] = CellposeParams
    network_fields: ClassVar[frozenset[str]] = frozenset({
        "model", "diameter", "scale_factor", "channel", "nuclear_channel", "do_3D", "anisotropy",
        "normalize", "normalize_limits", "invert", "augment", "tile_overlap", "device",
    })

    # ------------------------------------------------------------------ models
    def model_key(self, params: SegmenterParams) -> str:
        """Loaded models are shared across diameters/channels: keyed by model and device."""
        p = self.params(params)
        return f"{p.model}|{_device(p.device)}"

    def load_model(self, params: SegmenterParams) -> Any:
        """Load ``CellposeModel`` weights resolved from ``params.model``."""
        import torch
        from cellpose.models import CellposeModel

        p = self.params(params)
        resolved = resolve_model("cellpose", p.model)
        weights = cellpose_weights_file(resolved.path)
        try:
            return CellposeModel(gpu=False, pretrained_model=os.fspath(weights),
                                 device=torch.device(_device(p.device)), nchan=2)
        except (RuntimeError, KeyError, ValueError, OSError, EOFError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelNotFoundError(f"cannot load Cellpose weights ({type(exc).__name__}: {first})",
                                     weights) from None

    def describe_model(self, params: SegmenterParams | dict) -> dict:
        """Model identity (name, path, checksum, source) and the cellpose version."""
        from importlib.metadata import version

        p = self.params(params)
        d = {"backend": self.name, **resolve_model("cellpose", p.model).to_dict()}
        d["library"] = f"cellpose {version('cellpose')}"
        return d

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def rescale(params: CellposeParams, diam_mean: float) -> float:
        """Image rescaling factor of the network pass (``diam_mean / diameter`` or ``scale_factor``)."""
        if params.scale_factor is not None:
            return float(params.scale_factor)
        if params.diameter is not None:
            return diam_mean / params.diameter  # the same expression as CellposeModel.eval
        return 1.0

    def network_input(self, image: Image, params: CellposeParams) -> tuple[np.ndarray, dict]:
        """The array and the eval keywords (channels, axes) for an image.

        Returns
        -------
        (ndarray, dict)
            ``(Z)YX`` for one channel or ``(Z)YXC`` with two (segmented, nuclear), and the
            ``channels``/``channel_axis``/``z_axis`` keywords of ``CellposeModel.eval``.

        Raises
        ------
        SegmentationError
            Several channels and no ``channel`` chosen; ``do_3D`` on a 2D image; no finite pixel.

        Non-finite pixels (NaN, inf) of each channel are set to its background intensity (the
        low ``normalize`` percentile of its finite pixels or the low ``normalize_limits``; the
        high one with ``invert``), with a warning (:mod:`opsef_core.segment.normalize`), so
        Cellpose's own percentile normalisation sees finite values only.
        """
        check_input(image, self.name)
        img = image.sel(t=0) if "T" in image.axes else image
        if "Z" in img.axes and img.size("Z") == 1:
            img = img.sel(z=0)
        if "C" in img.axes:
            if params.channel is None:
                if img.n_channels > 1:
                    raise SegmentationError(
                        f"cellpose: the image has {img.n_channels} channels {list(img.channel_names)}; "
                        "choose one with the 'channel' parameter (and optionally 'nuclear_channel')",
                        img.source)
                chan = 0
            else:
                chan = params.channel
            main = np.asarray(img.sel(c=chan).data)
            nuc = None
            if params.nuclear_channel is not None:
                nuc = np.asarray(img.sel(c=params.nuclear_channel).data)
        else:
            if params.channel not in (None, 0, "0") or params.nuclear_channel is not None:
                raise SegmentationError(
                    f"cellpose: channel={params.channel!r}, nuclear_channel={params.nuclear_channel!r} "
                    "given but the image has no C axis", img.source)
            main, nuc = np.asarray(img.data), None
        # non-finite pixels are background (the low limit; the high one with invert), per channel
        fill = {"percentiles": params.normalize, "limits": params.normalize_limits, "invert": params.invert,
                "name": img.name, "source": img.source}
        main = fill_nonfinite(main, **fill)
        if nuc is not None:
            nuc = fill_nonfinite(nuc, **fill)
        if params.do_3D and main.ndim != 3:
            raise SegmentationError("cellpose: do_3D needs a Z stack; the image is 2D", img.source)
        if min(main.shape[-2:]) < 16:
            raise SegmentationError(f"cellpose: image of spatial shape {main.shape} is too small (< 16 px)",
                                    img.source)
        z_axis = 0 if main.ndim == 3 else None
        if nuc is None:
            return main, {"channels": [0, 0], "channel_axis": None, "z_axis": z_axis}
        x = np.stack([main, nuc], axis=-1)
        return x, {"channels": [1, 2], "channel_axis": x.ndim - 1, "z_axis": z_axis}

    def _anisotropy(self, image: Image, params: CellposeParams) -> float | None:
        if not params.do_3D:
            return None
        if params.anisotropy is not None:
            return params.anisotropy
        ps = image.pixel_size
        return float(ps.get("Z", 1.0)) / float(ps.get("X", 1.0))

    def eval_kwargs(self, image: Image, params: CellposeParams, model: Any) -> dict:
        """Keywords of ``CellposeModel.eval`` for the network pass (without the decode thresholds)."""
        lo, hi = params.normalize
        is_stack = ("Z" in image.axes and image.size("Z") > 1)
        return dict(
            batch_size=params.batch_size,
            normalize={"normalize": True, "percentile": (lo, hi), "lowhigh": params.normalize_limits, "norm3D": True,
                       "sharpen_radius": 0, "smooth_radius": 0, "tile_norm_blocksize": 0,
                       "tile_norm_smooth3D": 1, "invert": params.invert},
            rescale=self.rescale(params, model.diam_mean), diameter=None,
            do_3D=params.do_3D, anisotropy=self._anisotropy(image, params),
            # any stitch_threshold > 0 selects the plane-by-plane network pass of a stack
            stitch_threshold=0.5 if (is_stack and not params.do_3D) else 0.0,
            augment=params.augment, tile_overlap=params.tile_overlap, resample=True,
        )

    # ------------------------------------------------------------------ the two stages
    def predict(self, image: Image, params: SegmenterParams) -> dict[str, np.ndarray]:
        """Run the Cellpose network once (``compute_masks=False``).

        Returns
        -------
        dict
            ``dP`` float32 flows, ``cellprob`` float32 logits, ``rescale`` 0-d array.
        """
        p = self.params(params)
        x, chan_kw = self.network_input(image, p)
        model = self.model(p)
        kw = self.eval_kwargs(image, p, model)
        logger.info("cellpose network pass on %s %s (rescale %.3f, do_3D=%s)",
                    image.name, x.shape, kw["rescale"], p.do_3D)
        _, flows, _ = model.eval(x, compute_masks=False, **chan_kw, **kw)
        spatial = x.shape if chan_kw["channel_axis"] is None else x.shape[:-1]
        dP = np.asarray(flows[1], dtype=np.float32).reshape((-1,) + spatial)
        cellprob = np.asarray(flows[2], dtype=np.float32).reshape(spatial)
        # keep the rescale's own dtype (float32 when computed from a model's diam_mean): the
        # default niter = 200 / rescale is truncated to an integer, as in eval
        return {"dP": dP, "cellprob": cellprob, "rescale": np.asarray(kw["rescale"])}

    def decode(self, prediction: dict[str, np.ndarray], image: Image, params: SegmenterParams) -> np.ndarray:
        """Cellpose mask reconstruction with this parameter set's thresholds (cheap)."""
        p = self.params(params)
        return masks_from_flows(
            prediction["dP"], prediction["cellprob"], rescale=np.asarray(prediction.get("rescale", 1.0))[()],
            flow_threshold=p.flow_threshold, cellprob_threshold=p.cellprob_threshold,
            min_size=p.min_size, max_size_fraction=p.max_size_fraction, niter=p.niter,
            do_3D=p.do_3D, stitch_threshold=p.stitch_threshold, device=_device(p.device))

    def eval_reference(self, image: Image, params: SegmenterParams | dict) -> np.ndarray:
        """Labels from Cellpose's public one-call ``model.eval`` with the same parameters.

        Used to check that :meth:`decode` of :meth:`predict` reproduces Cellpose exactly.
        """
        p = self.params(params)
        x, chan_kw = self.network_input(image, p)
        model = self.model(p)
        kw = self.eval_kwargs(image, p, model)
        kw["stitch_threshold"] = p.stitch_threshold
        masks, _, _ = model.eval(x, flow_threshold=p.flow_threshold, cellprob_threshold=p.cellprob_threshold,
                                 min_size=p.min_size, max_size_fraction=p.max_size_fraction, niter=p.niter,
                                 **chan_kw, **kw)
        return np.asarray(masks).astype(np.int32)
