"""bioimage.io model packages (spec 0.5) of opsef's U-Net and StarDist models, and packages as models.

**Export** (:func:`export_bioimageio`, ``opsef models export-bioimageio MODEL --out PKG.zip``)
writes a bioimage.io package (``bioimageio.spec.model.v0_5.ModelDescr``, a zip with ``rdf.yaml``):

- U-Net (``models/unet2d_demo``, ``unet3d_demo``, ``spheroid_debris_unet``): TorchScript weights
  (self-contained: a traced copy of the network, float32), input ``raw`` (``b c [z] y x``), output
  ``probabilities`` (3class; the class logits with a ``softmax`` postprocessing over the channel) or
  ``distance`` (the distance variant);
- StarDist (``models/stardist2d_demo``, ``stardist3d_demo``): Keras HDF5 weights (the whole
  model in Keras' legacy ``.h5`` format, which Keras 3 on TensorFlow 2.20 loads without custom
  objects), input ``raw`` (``b [z] y x c``), outputs ``prob`` and ``dist`` at the model's grid
  (``dist`` clipped at 1e-3, as StarDist does before its NMS).

Each package holds a test input (a crop of a demo image, raw intensities) and the network's
output on it, the percentile normalisation of opsef's backends as a ``scale_range``
preprocessing, pixel sizes on the spatial axes (from the model card), a cover (the test input
next to the labels opsef decodes from the test output), a README, authors/licence/citations, the
card's training facts, and under ``config.opsef`` what opsef needs to decode the output into
labels (backend, architecture and variant, normalisation, thresholds, rays, grid, the decoding
defaults).  StarDist packages also carry ``config.stardist`` in StarDist's own layout (``config``,
``thresholds``, ``weights``).  stardist 0.9.2's ``export_bioimageio`` is not used: it is written
for ``bioimageio.core.build_spec``, which bioimageio.core 0.11 no longer has.

**Packages as models.** A package zip, its unpacked folder (holding ``rdf.yaml``) or the
``rdf.yaml`` itself is a ``model`` of the ``unet`` and ``stardist`` backends like a model folder:
``{"backend": "stardist", "model": "pkg.zip"}``.  The weights are the package's; they are loaded
into the backend (U-Net: the TorchScript module's parameters into opsef's U-Net; StarDist: the
HDF5 weights into a StarDist model built from ``config.stardist``), so the network pass, tiling,
caching and decoding are the backend's own, and the recorded model checksum is the zip's
SHA-256.  Foreign packages: StarDist packages that carry ``config.stardist`` (StarDist's
exporter writes it) work with their Keras HDF5 weights, or the weights file that
``config.stardist.weights`` names among the attachments; anything else without ``config.opsef`` is a
:class:`~opsef_core.errors.ModelNotFoundError` naming the file.

bioimageio.spec (pinned in ``requirements.lock``) is imported on first use only; nothing here
downloads: the packages refer to local files only.  bioimageio.core is not used: its latest
release (0.11.0) pins bioimageio.spec 0.5.12.0, whose file serializer fails under the pinned
pydantic 2.14.3 (pydantic-core 2.50.4); :func:`reproduce_test_outputs` is opsef's reproduction of the
test outputs instead.
"""

from __future__ import annotations

import contextlib
import functools
import io as _io
import json
import logging
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputFileError, ModelNotFoundError, OpsefError
from ..io.atomic import atomic_write

__all__ = [
    "PACKAGE_FORMAT",
    "RDF_NAMES",
    "PackageInfo",
    "export_bioimageio",
    "extract",
    "is_package",
    "load_stardist_package",
    "package_card",
    "read_package",
    "reproduce_test_outputs",
    "stardist_package_config",
    "unet_from_package",
    "validate_package",
]

logger = logging.getLogger(__name__)

#: ``config.opsef.format`` of the packages opsef writes
PACKAGE_FORMAT = "opsef-bioimageio"
#: names of a package's description file
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: percentile-normalisation epsilon of the spec's ``scale_range`` (its default)
_EPS = 1e-6
#: StarDist clips the predicted distances here before the NMS (``StarDistBase.predict``)
_DIST_MIN = 1e-3
_CITE_OPSEF = (("Rasse, Hollandi, Horvath, Kurz, Meyer. OpSeF: Open Source Python Framework for Collaborative "
               "Instance Segmentation of Bioimages. Front. Bioeng. Biotechnol. 2020"), "10.3389/fbioe.2020.558880")
_CITE_UNET = (("Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
              "MICCAI 2015"), "10.1007/978-3-319-24574-4_28")
_CITE_SD2 = ("Schmidt, Weigert, Broaddus, Myers. Cell Detection with Star-Convex Polygons. MICCAI 2018",
             "10.1007/978-3-030-00934-2_30")
_CITE_SD3 = (("Weigert, Schmidt, Haase, Sugawara, Myers. Star-convex Polyhedra for 3D Object Detection and "
             "Segmentation in Microscopy. WACV 2020"), "10.1109/WACV45572.2020.9093435")
#: the licence of opsef (``pyproject.toml``), used when the installed metadata does not say
_LICENSE = "BSD-3-Clause"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- recognising
def _zip_rdf(path: Path) -> str | None:
    """Name of the description file at the top of a zip, or None (not a zip, or none there)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return None
    return next((n for n in RDF_NAMES if n in names), None)


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a bioimage.io package: a ``.zip``, a folder with ``rdf.yaml``, or the yaml.

    Cheap (no bioimageio import): a ``.zip`` counts by its name, so that a damaged zip reaches
    :func:`read_package` and fails there with a clear message.
    """
    path = Path(path)
    if path.is_dir():
        return any((path / n).is_file() for n in RDF_NAMES)
    if path.is_file():
        return path.suffix.lower() == ".zip" or path.name in RDF_NAMES or path.name.endswith(".bioimageio.yaml")
    return False


# ----------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class PackageInfo:
    """A package read with bioimageio.spec.

    Attributes
    ----------
    path : Path
        The zip, folder or yaml given.
    descr : bioimageio.spec.model.v0_5.ModelDescr
        The description (older formats converted to 0.5).
    backend : str
        ``"unet"`` or ``"stardist"``.
    opsef : dict
        ``config.opsef`` (empty for a foreign package).
    stardist : dict
        ``config.stardist`` (StarDist's layout: ``config``, ``thresholds``, ``weights``), or empty.
    """

    path: Path
    descr: Any
    backend: str
    opsef: dict = field(default_factory=dict)
    stardist: dict = field(default_factory=dict)


def _source(path: Path):
    """What bioimageio.spec loads: a zip, or the description file of a folder."""
    if path.is_dir():
        return next(path / n for n in RDF_NAMES if (path / n).is_file())
    return path


def _first_error(summary) -> str:
    errors = [e for d in summary.details for e in d.errors]
    if not errors:
        return f"validation {summary.status}"
    e = errors[0]
    loc = ".".join(str(x) for x in e.loc) if e.loc else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc + ': ' if loc else ''}{e.msg}{more}"


def _load_descr(path: Path, perform_io_checks: bool):
    from bioimageio.spec import InvalidDescr, load_description

    if path.suffix.lower() == ".zip" and _zip_rdf(path) is None:
        raise ModelNotFoundError("not a bioimage.io package: a zip without rdf.yaml (or bioimageio.yaml) "
                                 "at its top level", path)
    try:
        with contextlib.redirect_stdout(_io.StringIO()):
            descr = load_description(_source(path), format_version="latest",
                                     perform_io_checks=perform_io_checks)
    except Exception as exc:  # yaml, zip and io errors come in many types
        raise ModelNotFoundError(f"cannot read bioimage.io package: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}", path) from exc
    if isinstance(descr, InvalidDescr):
        raise ModelNotFoundError(f"invalid bioimage.io package: {_first_error(descr.validation_summary)}", path)
    if getattr(descr, "type", None) != "model":
        raise ModelNotFoundError(f"bioimage.io package describes a {getattr(descr, 'type', '?')}, not a model",
                                 path)
    return descr


def _config_dict(descr) -> dict:
    cfg = descr.config
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg or {})
    return data if isinstance(data, dict) else {}


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int, perform_io_checks: bool) -> PackageInfo:
    p = Path(path)
    descr = _load_descr(p, perform_io_checks)
    cfg = _config_dict(descr)
    opsef = cfg.get("opsef") if isinstance(cfg.get("opsef"), dict) else {}
    sd = cfg.get("stardist") if isinstance(cfg.get("stardist"), dict) else {}
    if opsef:
        backend = opsef.get("backend")
        if backend not in ("unet", "stardist"):
            raise ModelNotFoundError(f"config.opsef.backend is {backend!r}; opsef packages are 'unet' or "
                                     "'stardist'", p)
    elif sd.get("config") and sd.get("thresholds") is not None:
        backend = "stardist"
    else:
        raise ModelNotFoundError(
            "bioimage.io package without config.opsef (and not a StarDist package with config.stardist): "
            "opsef cannot decode its output; run it with bioimageio.core, or export opsef models with "
            "'opsef models export-bioimageio'", p)
    return PackageInfo(path=p, descr=descr, backend=backend, opsef=opsef, stardist=sd)


def read_package(path: str | Path, *, perform_io_checks: bool = True) -> PackageInfo:
    """Read and check a package (cached per file, modification time and size).

    Parameters
    ----------
    path : path
        A package zip, its folder, or its ``rdf.yaml``.
    perform_io_checks : bool
        Let bioimageio.spec check the files' SHA-256 (local files only: nothing is downloaded).

    Returns
    -------
    PackageInfo

    Raises
    ------
    ModelNotFoundError
        Not a package, invalid, not a model, or a package opsef cannot decode (no ``config.opsef``
        and no ``config.stardist``); the message names the file.
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise ModelNotFoundError("bioimage.io package does not exist", p)
    target = _source(p) if p.is_dir() and is_package(p) else p
    if p.is_dir() and not is_package(p):
        raise ModelNotFoundError(f"not a bioimage.io package folder (no {' or '.join(RDF_NAMES)})", p)
    st = target.stat()
    return _read_cached(str(p), st.st_mtime_ns, st.st_size, perform_io_checks)


def package_card(path: str | Path, *, source: str | None = None) -> dict:
    """The model card of a bioimage.io package, as :func:`opsef_core.zoo.cards.build_card` gives for folders.

    An opsef package carries the card of the model it was exported from (``config.opsef.card``:
    training data, expected object and pixel size, recommended parameters, validation scores);
    a StarDist package from elsewhere gives what its ``config.stardist`` holds (dimensionality,
    rays, thresholds).  ``name`` is the zip's stem (the name :func:`opsef_core.models.resolve_model`
    finds it by in ``models/``), ``sha256`` the value run records hold for it.

    Parameters
    ----------
    path : path
        A package zip or folder.
    source : str, optional
        Where it was found (``project``, ``path``).

    Raises
    ------
    ModelNotFoundError
        Not a package opsef can run (see :func:`read_package`).
    """
    from ..models import file_checksum
    from .cards import CARD_VERSION, model_files

    p = Path(path)
    info = read_package(p, perform_io_checks=False)
    ops, sd = info.opsef, info.stardist.get("config") or {}
    embedded = ops.get("card") or {}
    if info.backend == "unet":
        dims, variant = int(ops.get("dims", 2)), ops.get("variant")
    else:
        dims = int(ops.get("dims") or sd.get("n_dim") or 2)
        rays, grid = ops.get("n_rays", sd.get("n_rays")), ops.get("grid", sd.get("grid"))
        variant = f"{rays} rays, grid {list(grid) if grid is not None else None}"
    name = p.stem if p.is_file() else p.name
    recommended = {**(embedded.get("recommended") or {}), "model": p.name}
    thr = info.stardist.get("thresholds") or {}
    if info.backend == "stardist" and "prob_thresh" not in recommended and thr:
        recommended.update(prob_thresh=round(float(thr["prob"]), 4), nms_thresh=round(float(thr["nms"]), 4))
    files, size = model_files(p)
    bio = _config_dict(info.descr).get("bioimageio") or {}
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": name,
        "backend": info.backend,
        "dims": dims,
        "variant": variant,
        "sha256": file_checksum(p),
        "files": files,
        "size_bytes": int(size),
        "training_data": embedded.get("training_data") or {},
        "expects": embedded.get("expects") or {"pixel_size": None, "object_diameter_px": None},
        "recommended": recommended,
        "validation": embedded.get("validation") or {},
        "test": embedded.get("test") or {},
        "training": bio.get("training"),
        "package": {"format": "bioimage.io", "format_version": str(info.descr.format_version),
                    "exported_from": ops.get("model"), "source_sha256": ops.get("source_sha256"),
                    "opsef_version": ops.get("opsef_version")},
    }
    if source is not None:
        card["source"] = source
    return card


def validate_package(path: str | Path) -> dict:
    """Validate a package with bioimageio.spec (``load_description``, file hashes checked).

    Returns
    -------
    dict
        ``status`` (``"valid-format"`` or ``"passed"`` when valid, ``"failed"`` otherwise),
        ``name``, ``format_version`` and ``errors`` (first lines).
    """
    from bioimageio.spec import InvalidDescr, load_description

    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError("bioimage.io package does not exist", path)
    with contextlib.redirect_stdout(_io.StringIO()):
        descr = load_description(_source(path), perform_io_checks=True)
    summary = descr.validation_summary
    errors = [f"{'.'.join(str(x) for x in e.loc)}: {e.msg}" for d in summary.details for e in d.errors]
    return {"status": "failed" if isinstance(descr, InvalidDescr) else summary.status,
            "name": getattr(descr, "name", None), "format_version": getattr(descr, "format_version", None),
            "errors": errors}


def _axis_index(tensor_descr, axis_id) -> int:
    ids = [str(a.id) for a in tensor_descr.axes]
    if str(axis_id) not in ids:
        raise ConfigError(f"tensor {tensor_descr.id} has no axis {axis_id!r} (axes {ids})")
    return ids.index(str(axis_id))


def _apply_ops(x: np.ndarray, tensor_descr, ops) -> np.ndarray:
    """Apply the processing steps opsef's packages use (ensure_dtype, scale_range, softmax, clip)."""
    from scipy.special import softmax

    for op in ops:
        kw = op.kwargs
        if op.id == "ensure_dtype":
            x = x.astype(str(kw.dtype))
        elif op.id == "scale_range":
            axes = tuple(_axis_index(tensor_descr, a) for a in (kw.axes or [a.id for a in tensor_descr.axes]))
            lo = np.percentile(x, kw.min_percentile, axis=axes, keepdims=True)
            hi = np.percentile(x, kw.max_percentile, axis=axes, keepdims=True)
            x = ((x - lo) / (hi - lo + kw.eps)).astype(np.float32)
        elif op.id == "softmax":
            x = softmax(x, axis=_axis_index(tensor_descr, kw.axis)).astype(x.dtype)
        elif op.id == "clip":
            x = np.clip(x, kw.min, kw.max)
        else:
            raise ConfigError(f"processing step {op.id!r} is not one opsef's test runs; test this package "
                              "with bioimageio.core")
    return x


def _run_weights(info: PackageInfo, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The package's network on ``inputs``, run by its framework (TorchScript or Keras HDF5)."""
    w = info.descr.weights
    if w.torchscript is not None:
        import torch

        with _quiet_torchscript():
            module = torch.jit.load(_io.BytesIO(_read_weights(info, "torchscript")), map_location="cpu").eval()
        with torch.inference_mode():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.cpu().numpy() for o in out]
    if w.keras_hdf5 is not None:
        import keras

        with tempfile.TemporaryDirectory(prefix="opsef-bioimageio-") as tmp:
            f = Path(tmp) / "weights.h5"
            f.write_bytes(_read_weights(info, "keras_hdf5"))
            net = keras.models.load_model(str(f), compile=False)
        out = net.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    raise ConfigError("opsef's test runs TorchScript or Keras HDF5 weights; this package has neither",
                      info.path)


def reproduce_test_outputs(path: str | Path) -> dict:
    """Reproduce a package's test outputs from its test inputs, with its own weights and processing.

    The package's description drives the check (what bioimageio.core's ``test_model`` does;
    bioimageio.core 0.11 cannot be installed with opsef's pins, see ``docs/bioimageio.md``): the
    test input goes through the described preprocessing, the weights run in their framework
    (TorchScript in torch, the Keras HDF5 model in Keras), the outputs through the described
    postprocessing, and each is compared with its test tensor at the package's reproducibility
    tolerance (bioimage.io's default: relative and absolute 1e-3, 100 mismatched elements per
    million).  opsef's backends are not involved.

    Returns
    -------
    dict
        ``status`` (``"passed"`` or ``"failed"``), and per output ``max_abs_diff`` and
        ``mismatched`` (elements outside the tolerance).
    """
    from bioimageio.spec.utils import load_array

    info = read_package(path)
    d = info.descr
    inputs = [_apply_ops(np.asarray(load_array(t.test_tensor)), t, t.preprocessing) for t in d.inputs]
    outputs = _run_weights(info, inputs)
    tols = list(getattr(d.config.bioimageio, "reproducibility_tolerance", ()) or ())
    report, ok = {}, True
    for t, y in zip(d.outputs, outputs):
        y = _apply_ops(y, t, t.postprocessing)
        want = np.asarray(load_array(t.test_tensor))
        tol = next((x for x in tols if not x.output_ids or t.id in x.output_ids), None)
        rtol, atol, per_million = ((tol.relative_tolerance, tol.absolute_tolerance, tol.mismatched_elements_per_million)
                                   if tol is not None else (1e-3, 1e-3, 100))
        if y.shape != want.shape:
            report[str(t.id)] = {"error": f"shape {y.shape}, test output {want.shape}"}
            ok = False
            continue
        bad = int((~np.isclose(y, want, rtol=rtol, atol=atol)).sum())
        report[str(t.id)] = {"max_abs_diff": float(np.abs(y.astype(np.float64) - want).max()), "mismatched": bad}
        ok &= bad <= per_million * want.size / 1e6
    return {"status": "passed" if ok else "failed", "outputs": report}


# ----------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _quiet_torchscript():
    """torch 2.13 deprecates TorchScript (``torch.jit``); bioimage.io's torchscript format needs it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit", category=FutureWarning)
        yield


def _read_file(descr) -> bytes:
    """The bytes of a package file (a weights entry, an attachment)."""
    reader = descr.get_reader()
    try:
        return reader.read()
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


def _read_weights(info: PackageInfo, kind: str) -> bytes:
    """The bytes of the package's ``kind`` weights (``torchscript``, ``keras_hdf5``)."""
    entry = getattr(info.descr.weights, kind, None)
    if entry is None:
        have = [k for k in ("torchscript", "pytorch_state_dict", "keras_hdf5", "keras_v3",
                            "tensorflow_saved_model_bundle", "onnx") if getattr(info.descr.weights, k, None)]
        raise ModelNotFoundError(f"bioimage.io package has no {kind} weights (it has {have}); opsef's "
                                 f"{info.backend} backend needs {kind}", info.path)
    return _read_file(entry)


def unet_from_package(path: str | Path, *, weights: bool = True) -> tuple[dict, dict | None]:
    """The U-Net config (``config.opsef.unet``) and the TorchScript weights as a state dict.

    Parameters
    ----------
    path : path
        The package.
    weights : bool
        Read the weights too (False: the config only, the state dict is None).

    Returns
    -------
    (dict, dict or None)
        The ``config.json`` of the exported model folder, and ``{name: tensor}`` (float32) for
        :func:`opsef_core.unet.model.build_unet`'s network.

    Raises
    ------
    ModelNotFoundError
        Not an opsef U-Net package (a StarDist one, a foreign one), or unreadable weights.
    """
    import torch

    info = read_package(path)
    if info.backend != "unet" or not isinstance(info.opsef.get("unet"), dict):
        raise ModelNotFoundError(f"bioimage.io package is a {info.backend} model, not an opsef U-Net; use "
                                 f"backend {info.backend!r}" if info.backend != "unet" else
                                 "bioimage.io package lacks config.opsef.unet (the U-Net architecture)",
                                 info.path)
    if not weights:
        return dict(info.opsef["unet"]), None
    data = _read_weights(info, "torchscript")
    try:
        with _quiet_torchscript():
            module = torch.jit.load(_io.BytesIO(data), map_location="cpu")
        state = {k: v.detach().float() if v.is_floating_point() else v.detach()
                 for k, v in module.state_dict().items()}
    except Exception as exc:  # torch raises RuntimeError and friends for bad archives
        raise ModelNotFoundError(f"cannot load the package's TorchScript weights: {str(exc).splitlines()[0]}",
                                 info.path) from exc
    return dict(info.opsef["unet"]), state


def stardist_package_config(path: str | Path) -> tuple[dict, dict]:
    """StarDist ``config.json`` and ``thresholds.json`` contents of a package (``config.stardist``)."""
    info = read_package(path)
    if info.backend != "stardist":
        raise ModelNotFoundError(f"bioimage.io package is a {info.backend} model, not a StarDist model; use "
                                 f"backend {info.backend!r}", info.path)
    cfg, thr = info.stardist.get("config"), info.stardist.get("thresholds")
    if not isinstance(cfg, dict) or not isinstance(thr, dict):
        raise ModelNotFoundError("bioimage.io package lacks config.stardist.config/thresholds", info.path)
    return dict(cfg), dict(thr)


def load_stardist_package(resolved):
    """A StarDist model with the package's weights (for :func:`~opsef_core.segment.stardist_backend.load_stardist_model`).

    The package's config, thresholds and Keras HDF5 weights are written as a StarDist model
    folder into a temporary folder, loaded by the backend's loader and the folder removed.

    Parameters
    ----------
    resolved : opsef_core.models.ResolvedModel
        The package (its checksum is the zip's).

    Returns
    -------
    stardist.models.StarDist2D or StarDist3D
    """
    from ..segment.stardist_backend import load_stardist_folder

    info = read_package(resolved.path)
    cfg, thr = stardist_package_config(resolved.path)
    if info.descr.weights.keras_hdf5 is not None:
        data = _read_weights(info, "keras_hdf5")
    else:  # StarDist's own exporter ships the weights-only file as an attachment named in config.stardist
        name = info.stardist.get("weights")
        match = [a for a in info.descr.attachments if name and str(a.source).endswith(str(name))]
        if not match:
            raise ModelNotFoundError("bioimage.io StarDist package has neither keras_hdf5 weights nor the "
                                     f"attachment config.stardist.weights ({name!r})", info.path)
        data = _read_file(match[0])
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(resolved.path).stem) or "package"
    with tempfile.TemporaryDirectory(prefix="opsef-bioimageio-") as tmp:
        folder = Path(tmp) / stem
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "thresholds.json").write_text(json.dumps(thr))
        (folder / "weights_best.h5").write_bytes(data)
        model = load_stardist_folder(folder, resolved)
    return model


# ----------------------------------------------------------------------------- export helpers
def _default_image(backend: str, card: dict, cfg: dict) -> Path | None:
    """A demo image for the test tensors: the card's first validation (else training) image that is
    on disk (generated training data are not), else a bundled one."""
    root = _repo_root()
    data = card.get("training_data") or {}
    # "images" names the data folder, or several sources joined by " + " (e.g. a generator + a folder)
    folders = [root / part.strip() for part in str(data.get("images") or "").split(" + ")
               if part.strip() and (root / part.strip()).is_dir()]
    for entry in [*(data.get("validation") or []), *(data.get("train") or [])]:
        name = Path(str(entry))
        for folder in folders:
            cand = folder / name.parent / "images" / f"{name.name}.tif"
            if cand.is_file():
                return cand
    if backend == "unet" and cfg.get("pipeline") is not None:
        cand = root / "demo_data" / "debris_brightfield" / "images" / "bf_t00.tif"
        return cand if cand.is_file() else None
    return None


def _prepare_image(path: Path, cfg: dict, dims: int, channel):
    """Read the test image, apply the model's opsef pipeline (if its config names one), pick the channel."""
    from ..io import read_image
    from ..segment.classical import select_channel

    img = read_image(path)
    if "T" in img.axes:
        img = img.sel(t=0)
    pipe = cfg.get("pipeline")
    if isinstance(pipe, dict):
        from ..workflows.debris import spheroid_pipeline

        img = spheroid_pipeline(**pipe).apply(img)
    img = select_channel(img, channel, "export")
    x = np.asarray(img.data)
    if x.ndim != dims:
        raise ConfigError(f"the test image is {x.ndim}D (axes {img.axes}); the model is {dims}D", path)
    pixel = {a: float(img.pixel_size[a]) for a in img.spatial_axes} if img.calibrated else None
    return x.astype(np.float32), pixel


def _crop(x: np.ndarray, crop, multiple: tuple[int, ...]) -> np.ndarray:
    """A centred crop of ``crop`` (per axis; default 128² in 2D, 16 × 64² in 3D), cut to multiples."""
    if crop is None:
        crop = (128, 128) if x.ndim == 2 else (16, 64, 64)
    crop = (int(crop),) * x.ndim if np.isscalar(crop) else tuple(int(c) for c in crop)
    if len(crop) != x.ndim:
        raise ConfigError(f"crop {crop} needs {x.ndim} values")
    sl = []
    for n, c, m in zip(x.shape, crop, multiple):
        c = min(c, n) // m * m
        if c < m:
            raise ConfigError(f"the test image ({x.shape}) is smaller than the network's size step {multiple}")
        start = (n - c) // 2
        sl.append(slice(start, start + c))
    return np.ascontiguousarray(x[tuple(sl)])


def _normalize(x: np.ndarray, pct) -> np.ndarray:
    """The spec's ``scale_range`` per sample: ``(x - lo) / (hi - lo + eps)``."""
    from ..segment.normalize import finite_percentiles

    lo, hi = finite_percentiles(x, list(pct))
    return ((x - np.float32(lo)) / np.float32(hi - lo + _EPS)).astype(np.float32)


def _card(folder: Path) -> dict:
    from ..models import CARD_NAME

    f = folder / CARD_NAME
    if f.is_file():
        try:
            return json.loads(f.read_text())
        except ValueError:
            logger.warning("unreadable %s; exporting without its facts", f)
    return {}


def _pixel_size(card: dict, measured: dict | None, axes: str) -> dict | None:
    ps = (card.get("expects") or {}).get("pixel_size") or measured
    if not ps or any(a not in ps for a in axes):
        return None
    return {a: float(ps[a]) for a in axes}


def _cover(path: Path, x: np.ndarray, labels: np.ndarray) -> None:
    """A 2:1 PNG: the (mid-plane of the) test input beside the labels opsef decodes."""
    from ..io import glasbey_lut
    from ..viz import save_png

    if x.ndim == 3:
        z = x.shape[0] // 2
        x, labels = x[z], labels[z]
    lo, hi = np.percentile(x, [1, 99.8])
    g = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    left = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=-1)
    lut = glasbey_lut(256).T
    right = lut[np.where(labels > 0, (labels - 1) % 255 + 1, 0)]
    rgb = np.concatenate([left, right], axis=1)
    scale = max(1, 256 // rgb.shape[0])
    rgb = np.kron(rgb, np.ones((scale, scale, 1), np.uint8))
    save_png(rgb, path)


def _save_npy(path: Path, a: np.ndarray) -> Path:
    with atomic_write(path, "wb") as fh:
        np.save(fh, a)
    return path


def _license() -> str:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        lic = metadata("opsef-core").get("License") or ""
    except PackageNotFoundError:
        lic = ""
    return lic if lic and " " not in lic else _LICENSE


def _space_axes(spatial: str, *, pixel: dict | None, size, output_of: str | None = None,
                grid: tuple | None = None):
    """bioimageio spatial axes: ``size`` is ``(min, step)`` per axis for an input, or a reference."""
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        ParameterizedSize,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
    )

    out = []
    for i, a in enumerate(spatial):
        g = 1 if grid is None else int(grid[i])
        kw = {"unit": "micrometer", "scale": pixel[a] * g} if pixel else {"scale": float(g)}
        if output_of is None:
            mn, step = size[i]
            out.append(SpaceInputAxis(id=AxisId(a.lower()), size=ParameterizedSize(min=mn, step=step), **kw))
        else:
            out.append(SpaceOutputAxis(id=AxisId(a.lower()),
                                       size=SizeReference(tensor_id=TensorId(output_of), axis_id=AxisId(a.lower())),
                                       **kw))
    return out


def _readme(*, name: str, backend: str, card: dict, opsef_cfg: dict, inputs: str, outputs: str,
            pipeline: str | None) -> str:
    val = card.get("validation") or {}
    scores = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, (int, float))) or "not recorded"
    data = card.get("training_data") or {}
    ps = (card.get("expects") or {}).get("pixel_size")
    lines = [
        f"# {name} (opsef {backend} model)",
        "",
        f"Exported from opsef's `models/{name}` by `opsef models export-bioimageio`.",
        "",
        "## Network",
        "",
        f"- input: {inputs}",
        f"- output: {outputs}",
        (f"- preprocessing: percentile normalisation, percentiles {opsef_cfg['normalize'][0]:g} and "
         f"{opsef_cfg['normalize'][1]:g} of each image mapped to 0 and 1 (`scale_range`)"),
    ]
    if pipeline:
        lines.append(f"- before that, opsef's pipeline: {pipeline} (the test input has been through it)")
    lines += [
        "",
        "## Decoding into labels (opsef)",
        "",
        "`config.opsef` holds the decoding facts; opsef decodes the output with its own decoders:",
        "",
        "```json",
        json.dumps(opsef_cfg.get("decode", {}), indent=2),
        "```",
        "",
        "Run the package in opsef like a model folder:",
        "",
        "```json",
        json.dumps({"backend": backend, "model": f"./{name}.zip"}),
        "```",
        "",
        "## Training data and scores",
        "",
        (f"- images: {data.get('images') or 'generated (see the opsef repository)'}; "
         f"{len(data.get('train') or [])} training, {len(data.get('validation') or [])} validation images, "
         f"{data.get('n_objects', '?')} objects"),
        f"- pixel size expected: {ps if ps else 'not recorded'} (µm)",
        f"- validation: {scores}",
        "",
        "## Limits",
        "",
        "A demo model, trained on opsef's small synthetic demo data: not a general-purpose model.",
        "",
    ]
    return "\n".join(lines)


def _descr_common(*, name: str, backend: str, dims: int, card: dict, readme: Path, cover: Path,
                  cite: list[tuple[str, str]], tags: list[str], training: dict, n_params: int | None,
                  architecture: str, modality: str):
    from bioimageio.spec.model.v0_5 import Author, CiteEntry, Doi, FileDescr

    opts = training.get("options") or {}
    wall = training.get("wall_time_s")
    bio = {
        "architecture_type": architecture[:32],
        "modality": modality,
        "target_structure": ["nuclei"] if "spheroid" not in name else ["spheroids"],
        "task": "instance segmentation",
        "model_parameter_count": n_params,
        "training": {
            "training_epochs": training.get("epochs_run") or opts.get("epochs") or training.get("best_epoch"),
            "training_batch_size": opts.get("batch_size", (opts.get("config") or {}).get("train_batch_size")),
            "initial_learning_rate": opts.get("lr", opts.get("learning_rate")),
            "training_duration": None if wall is None else float(wall) / 3600.0,
            "training_preprocessing": f"percentile normalisation {opts.get('normalize', [1.0, 99.8])}; "
                                      f"augmentation {json.dumps(opts.get('augmentation'))}",
        },
        "bias_risks_limitations": {
            "limitations": "A demo model trained on opsef's small synthetic demo data; use it to test "
                           "pipelines, not to analyse real data."},
    }
    bio["training"] = {k: v for k, v in bio["training"].items() if v is not None}
    bio = {k: v for k, v in bio.items() if v is not None}
    trained_on = (card.get("training_data") or {}).get("images") or "generated images"
    return {
        "name": name,
        "description": f"opsef {backend} model {name} ({dims}D): {card.get('variant') or ''}; "
                       f"trained on {trained_on}.",
        "authors": [Author(name="opsef developers")],
        "cite": [CiteEntry(text=t, doi=Doi(d)) for t, d in cite],
        "license": _license(),
        "documentation": FileDescr(source=readme),
        "covers": [FileDescr(source=cover)],
        "tags": tags,
        "version": "0.1.0",
        "bio": bio,
    }


def _finish(kwargs: dict, out: Path, opsef_cfg: dict, stardist_cfg: dict | None) -> Path:
    from bioimageio.spec import save_bioimageio_package_to_stream
    from bioimageio.spec.model.v0_5 import ModelDescr

    bio = kwargs.pop("bio")
    config = {"bioimageio": bio, "opsef": opsef_cfg}
    if stardist_cfg is not None:
        config["stardist"] = stardist_cfg
    try:
        descr = ModelDescr(config=config, **kwargs)
    except Exception as exc:  # pydantic ValidationError: a bug here, or a bad model config
        raise OpsefError(f"bioimage.io description of {kwargs['name']} is invalid: "
                         f"{' '.join(str(exc).splitlines()[:3])}") from exc
    with atomic_write(out, "wb") as fh, contextlib.redirect_stdout(_io.StringIO()):
        save_bioimageio_package_to_stream(descr, output_stream=fh)
    logger.info("wrote bioimage.io package %s", out)
    return out


# ----------------------------------------------------------------------------- export: U-Net
def _export_unet(resolved, out: Path, tmp: Path, image, crop, channel) -> Path:
    import torch
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        FileDescr,
        Identifier,
        InputTensorDescr,
        OutputTensorDescr,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        SoftmaxDescr,
        SoftmaxKwargs,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from ..segment.unet_backend import UNetParams, decode_3class, decode_distance
    from ..unet.io import load_unet
    from ..unet.model import count_parameters

    if is_package(resolved.path):
        raise ConfigError("the model is already a bioimage.io package", resolved.path)
    m = load_unet(resolved.path, device="cpu")
    cfg, card = dict(m.config), _card(resolved.path)
    dims, depth, variant = m.dims, m.depth, m.variant
    spatial = "ZYX"[-dims:]
    mult = 2 ** depth
    src = image or _default_image("unet", card, cfg)
    if src is None:
        raise ConfigError(f"no demo image known for {resolved.name}; give one with --image")
    x, measured = _prepare_image(Path(src), cfg, dims, channel)
    x = _crop(x, crop, (mult,) * dims)
    pct = tuple(float(v) for v in cfg["normalize"])
    xn = _normalize(x, pct)
    t_in = torch.from_numpy(xn)[None, None]
    with torch.inference_mode():
        logits = m.net(t_in)
        y = torch.softmax(logits, dim=1) if variant == "3class" else logits
    y = y.numpy().astype(np.float32)
    weights = tmp / "weights_torchscript.pt"
    with _quiet_torchscript(), atomic_write(weights, "wb") as fh:
        torch.jit.save(torch.jit.trace(m.net, torch.from_numpy(xn)[None, None]), fh)
    pixel = _pixel_size(card, measured, spatial)
    defaults = UNetParams(model=str(resolved.path))  # the decoding stored beside the weights, else the defaults
    decode = ({"prob_threshold": defaults.prob_threshold, "boundary_threshold": defaults.boundary_threshold,
               "instances": defaults.instances, "min_size": defaults.min_size} if variant == "3class"
              else {"beta": defaults.beta, "h": defaults.h, "min_size": defaults.min_size})
    if cfg.get("pipeline") is not None:
        decode["note"] = cfg.get("description", "")
    labels = (decode_3class(y[0], defaults.prob_threshold, defaults.boundary_threshold, defaults.instances,
                            defaults.min_size) if variant == "3class"
              else decode_distance(y[0, 0], defaults.beta, defaults.h, defaults.min_size))
    _cover(tmp / "cover.png", x, labels)
    out_id = "probabilities" if variant == "3class" else "distance"
    opsef_cfg = {
        "format": PACKAGE_FORMAT, "format_version": 1, "backend": "unet", "model": resolved.name,
        "source_sha256": resolved.checksum, "opsef_version": _opsef_version(),
        "variant": variant, "dims": dims, "normalize": list(pct), "outputs": {out_id: out_id},
        "unet": cfg, "decode": decode, "pipeline": cfg.get("pipeline"),
        "card": {k: card.get(k) for k in ("training_data", "expects", "recommended", "validation", "test")
                 if k in card},
        "test_labels": int(labels.max()),
    }
    _save_npy(tmp / "test_input.npy", x[None, None])
    _save_npy(tmp / f"test_{out_id}.npy", y)
    classes = cfg.get("classes") or ["background", "boundary", "interior"]
    inp = InputTensorDescr(
        id=TensorId("raw"),
        description="raw intensities, one channel" + (" (after opsef's pipeline)" if cfg.get("pipeline") else ""),
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("raw")]),
              *_space_axes(spatial, pixel=pixel, size=[(mult, mult)] * dims)],
        test_tensor=FileDescr(source=tmp / "test_input.npy"),
        preprocessing=[ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId(a.lower()) for a in spatial],
                                                               min_percentile=pct[0], max_percentile=pct[1]))],
    )
    outp = OutputTensorDescr(
        id=TensorId(out_id),
        description=("class probabilities (background, boundary, interior)" if variant == "3class"
                     else "distance to the background (pixels)"),
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in
                                                      (classes if variant == "3class" else ["distance"])]),
              *_space_axes(spatial, pixel=pixel, size=None, output_of="raw")],
        test_tensor=FileDescr(source=tmp / f"test_{out_id}.npy"),
        postprocessing=[SoftmaxDescr(kwargs=SoftmaxKwargs(axis=AxisId("channel")))] if variant == "3class" else [],
    )
    readme = tmp / "README.md"
    pipe_txt = None
    if cfg.get("pipeline") is not None:
        pipe_txt = ", ".join(f"{k} {v}" for k, v in cfg["pipeline"].items())
    with atomic_write(readme, "w") as fh:
        fh.write(_readme(name=resolved.name, backend="unet", card=card, opsef_cfg=opsef_cfg,
                         inputs=f"`raw`, axes b c {' '.join(spatial.lower())}, sizes multiples of {mult}",
                         outputs=f"`{out_id}` ({'softmax of the class logits' if variant == '3class' else 'ReLU'})",
                         pipeline=pipe_txt))
    kwargs = _descr_common(
        name=resolved.name, backend="unet", dims=dims, card=card, readme=readme, cover=tmp / "cover.png",
        cite=[_CITE_OPSEF, _CITE_UNET], tags=["opsef", "unet", f"{dims}d", "pytorch", "instance-segmentation",
                                               "brightfield" if cfg.get("pipeline") else
                                               "fluorescence-light-microscopy"],
        training=card.get("training") or cfg.get("training") or {},
        n_params=count_parameters(m.net), architecture=f"{dims}D U-Net, depth {depth}",
        modality="brightfield" if cfg.get("pipeline") else "fluorescence microscopy")
    kwargs.update(inputs=[inp], outputs=[outp], weights=WeightsDescr(torchscript=TorchscriptWeightsDescr(
        source=weights, pytorch_version=Version(torch.__version__.split("+")[0]))))
    return _finish(kwargs, out, opsef_cfg, None)


def _opsef_version() -> str:
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------- export: StarDist
def _export_stardist(resolved, out: Path, tmp: Path, image, crop, channel) -> Path:
    import tensorflow as tf
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        ClipDescr,
        ClipKwargs,
        FileDescr,
        Identifier,
        InputTensorDescr,
        KerasHdf5WeightsDescr,
        OutputTensorDescr,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        TensorId,
        Version,
        WeightsDescr,
    )

    from ..segment.stardist_backend import StarDistParams, decode_instances, load_stardist_model

    if is_package(resolved.path):
        raise ConfigError("the model is already a bioimage.io package", resolved.path)
    model = load_stardist_model(resolved.path)
    cfg = json.loads((resolved.path / "config.json").read_text())
    thr = json.loads((resolved.path / "thresholds.json").read_text()) \
        if (resolved.path / "thresholds.json").is_file() else dict(model.thresholds._asdict())
    card = _card(resolved.path)
    dims = int(cfg["n_dim"])
    if int(cfg.get("n_channel_in", 1)) != 1 or cfg.get("n_classes"):
        raise ConfigError("only single-channel StarDist models without classes can be exported", resolved.path)
    spatial = "ZYX"[-dims:]
    grid = tuple(int(g) for g in cfg["grid"])
    pool = tuple(int(p) for p in cfg.get("unet_pool", (2,) * dims))
    div = tuple(p ** int(cfg["unet_n_depth"]) * g for p, g in zip(pool, grid))
    src = image or _default_image("stardist", card, cfg)
    if src is None:
        raise ConfigError(f"no demo image known for {resolved.name}; give one with --image")
    x, measured = _prepare_image(Path(src), cfg, dims, channel)
    x = _crop(x, crop, div)
    pct = tuple(float(v) for v in StarDistParams().normalize)
    xn = _normalize(x, pct)
    prob, dist = model.keras_model.predict(xn[None, ..., None], verbose=0)[:2]
    prob, dist = prob.astype(np.float32), np.maximum(np.float32(_DIST_MIN), dist).astype(np.float32)
    h5 = tmp / f"{resolved.name}_keras.h5"
    with contextlib.redirect_stdout(_io.StringIO()):
        model.keras_model.save(str(h5))  # whole model, legacy HDF5 (bioimageio's keras_hdf5)
    labels, _ = decode_instances(model, x.shape, prob[0, ..., 0], dist[0], thr["prob"], thr["nms"])
    _cover(tmp / "cover.png", x, labels)
    pixel = _pixel_size(card, measured, spatial)
    _save_npy(tmp / "test_input.npy", x[None, ..., None])
    _save_npy(tmp / "test_prob.npy", prob)
    _save_npy(tmp / "test_dist.npy", dist)
    decode = {"prob_thresh": float(thr["prob"]), "nms_thresh": float(thr["nms"])}
    opsef_cfg = {
        "format": PACKAGE_FORMAT, "format_version": 1, "backend": "stardist", "model": resolved.name,
        "source_sha256": resolved.checksum, "opsef_version": _opsef_version(),
        "dims": dims, "normalize": list(pct), "n_rays": int(cfg["n_rays"]), "grid": list(grid),
        "anisotropy": cfg.get("anisotropy"), "outputs": {"prob": "prob", "dist": "dist"},
        "decode": decode, "dist_min": _DIST_MIN,
        "card": {k: card.get(k) for k in ("training_data", "expects", "recommended", "validation", "test")
                 if k in card},
        "test_labels": int(labels.max()),
    }
    import stardist

    stardist_cfg = {"stardist_version": stardist.__version__, "thresholds": thr, "config": cfg,
                    "weights": h5.name}
    norm = [ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId(a.lower()) for a in spatial],
                                                    min_percentile=pct[0], max_percentile=pct[1]))]
    inp = InputTensorDescr(
        id=TensorId("raw"), description="raw intensities, one channel",
        axes=[BatchAxis(), *_space_axes(spatial, pixel=pixel, size=[(d, d) for d in div]),
              ChannelAxis(channel_names=[Identifier("raw")])],
        test_tensor=FileDescr(source=tmp / "test_input.npy"), preprocessing=norm)
    out_axes = functools.partial(_space_axes, spatial, pixel=pixel, size=None, output_of="raw", grid=grid)
    outs = [
        OutputTensorDescr(id=TensorId("prob"), description="object probability at the grid",
                          axes=[BatchAxis(), *out_axes(), ChannelAxis(channel_names=[Identifier("prob")])],
                          test_tensor=FileDescr(source=tmp / "test_prob.npy")),
        OutputTensorDescr(id=TensorId("dist"), description="ray distances (pixels) at the grid",
                          axes=[BatchAxis(), *out_axes(), ChannelAxis(channel_names=[
                              Identifier(f"ray{i:03d}") for i in range(int(cfg["n_rays"]))])],
                          test_tensor=FileDescr(source=tmp / "test_dist.npy"),
                          postprocessing=[ClipDescr(kwargs=ClipKwargs(min=_DIST_MIN))]),
    ]
    readme = tmp / "README.md"
    with atomic_write(readme, "w") as fh:
        fh.write(_readme(name=resolved.name, backend="stardist", card=card, opsef_cfg=opsef_cfg,
                         inputs=f"`raw`, axes b {' '.join(spatial.lower())} c, sizes multiples of {div}",
                         outputs=f"`prob` and `dist` ({cfg['n_rays']} rays) at grid {list(grid)}; "
                                 f"`dist` clipped at {_DIST_MIN} as StarDist does before its NMS",
                         pipeline=None))
    kwargs = _descr_common(
        name=resolved.name, backend="stardist", dims=dims, card=card, readme=readme, cover=tmp / "cover.png",
        cite=[_CITE_OPSEF, _CITE_SD2 if dims == 2 else _CITE_SD3],
        tags=["opsef", "stardist", f"{dims}d", "tensorflow", "instance-segmentation", "nuclei",
              "fluorescence-light-microscopy"],
        training=card.get("training") or {}, n_params=int(model.keras_model.count_params()),
        architecture=f"StarDist {dims}D U-Net", modality="fluorescence microscopy")
    kwargs.update(inputs=[inp], outputs=outs, weights=WeightsDescr(keras_hdf5=KerasHdf5WeightsDescr(
        source=h5, tensorflow_version=Version(tf.__version__))))
    return _finish(kwargs, out, opsef_cfg, stardist_cfg)


# ----------------------------------------------------------------------------- export
def export_bioimageio(model: str | Path, out: str | Path, *, backend: str | None = None,
                      image: str | Path | None = None, crop=None, channel=None,
                      test: bool = False) -> Path:
    """Export an opsef U-Net or StarDist model as a bioimage.io package (zip).

    Parameters
    ----------
    model : str or path
        A model name (``"unet2d_demo"``, looked up like every model) or a model folder.
    out : path
        The zip to write (atomically; its folder is created).
    backend : {"unet", "stardist"}, optional
        The model's backend; detected from the folder when omitted.
    image : path, optional
        Image for the test tensors and the cover (default: the card's first validation image
        from ``demo_data/``).
    crop : int or tuple of int, optional
        Size of the centred test crop per spatial axis (default 128 × 128 in 2D, 16 × 64 × 64
        in 3D), cut down to multiples of the network's size step.
    channel : int or str, optional
        Channel of a multi-channel test image.
    test : bool
        Also reproduce the test outputs from the written package (:func:`reproduce_test_outputs`) and
        raise when they differ.

    Returns
    -------
    Path
        The package.

    Raises
    ------
    ConfigError
        Not a U-Net or StarDist model, no test image, a package that does not validate.
    ModelNotFoundError
        The model cannot be found.
    """
    from ..models import resolve_model
    from .cards import detect_backend

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ConfigError("the bioimage.io package must be a .zip file", out)
    if backend is None:
        for b in ("unet", "stardist"):
            try:
                path = resolve_model(b, model, download=False).path
            except ModelNotFoundError:
                continue
            backend = detect_backend(path)
            break
        if backend not in ("unet", "stardist"):
            raise ConfigError(f"model {str(model)!r} is not an opsef U-Net or StarDist model folder "
                              f"(detected: {backend}); only those can be exported")
    resolved = resolve_model(backend, model, download=False)
    with tempfile.TemporaryDirectory(prefix="opsef-export-") as tmp:
        if backend == "unet":
            _export_unet(resolved, out, Path(tmp), image, crop, channel)
        elif backend == "stardist":
            _export_stardist(resolved, out, Path(tmp), image, crop, channel)
        else:
            raise ConfigError(f"export to bioimage.io supports 'unet' and 'stardist' models, not {backend!r}")
    summary = validate_package(out)
    if summary["status"] not in ("valid-format", "passed"):
        raise ConfigError(f"the written package does not validate: {summary['errors'][:1]}", out)
    if test:
        result = reproduce_test_outputs(out)
        if result["status"] != "passed":
            raise ConfigError(f"the package does not reproduce its test outputs: {result['outputs']}", out)
    return out


def extract(path: str | Path, folder: str | Path) -> Path:
    """Unpack a package zip into ``folder`` (the folder is itself a package); returns its ``rdf.yaml``."""
    path, folder = Path(path), Path(folder)
    rdf = _zip_rdf(path)
    if rdf is None:
        raise InputFileError("not a bioimage.io package zip", path)
    with zipfile.ZipFile(path) as zf:
        for member in zf.infolist():
            target = (folder / member.filename).resolve()
            if folder.resolve() not in target.parents and target != folder.resolve():
                raise InputFileError(f"unsafe member name {member.filename!r}", path)
        zf.extractall(folder)
    return folder / rdf

