"""ImageJ ROI export and re-import, and the AnnotatorJ round trip.

Outlines are traced on pixel **edges**: every polygon vertex is a pixel corner (ImageJ
coordinates, pixel (row r, column c) covers x ∈ [c, c+1], y ∈ [r, r+1]), so the polygon
encloses exactly the object's pixels — a round trip through :func:`write_roi_zip` and
:func:`read_roi_zip` reproduces the label image pixel for pixel (unlike tracing through pixel
centres, which makes ROIs about one pixel smaller than the mask, Cellpose issue #757).  The
tracing runs ``skimage.measure.find_contours`` on a 2× nearest-neighbour upsampled mask, whose
iso-line at 0.5 runs along the original pixel edges; the corner cuts of that line are snapped to
the pixel corners and collinear vertices are dropped.  ROIs are stored as ImageJ ``TRACED``
polygons (the type ImageJ's wand tool makes) with integer coordinates.

Object shapes a polygon cannot hold:

* **holes** are filled (an ImageJ polygon has no holes); the reimported object includes them;
* **several parts** (pixels connected only diagonally, or separate pieces with one label) give
  one ROI per 4-connected part, all with the same ROI name (zip entries get ``_part2``,
  ``_part3``... so they stay unique); reimport merges them back into one label.

Names: 2D ROIs are named by the zero-padded label (``"0012"``); 3D label images (``ZYX``) give
one ROI per object and slice named ``"zzzz-llll"`` (slice number 1-based, as ImageJ shows it, then
the label) with the ImageJ stack ``position`` and hyperstack ``z`` position set.  Reimport takes
the label from names of that form; any other ROI (drawn or renamed in Fiji / AnnotatorJ) gets a
new label above the largest named one, one per distinct name; where ROIs overlap, the later ROI
in the zip wins.  An empty label image gives a valid zip without entries.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AxesError, ConfigError, EmptyFolderError, InputFileError
from .io.atomic import atomic_write
from .measure import check_labels

__all__ = [
    "labels_to_rois",
    "write_roi_zip",
    "write_roi_zip_tiled",
    "read_roi_zip",
    "rois_to_labels",
    "annotatorj_folder",
    "reimport",
]

log = logging.getLogger(__name__)

_NAME_2D = re.compile(r"^(\d+)$")
_NAME_3D = re.compile(r"^(\d+)-(\d+)$")


# --------------------------------------------------------------------------------------------
# tracing
# --------------------------------------------------------------------------------------------
def _simplify(rc: np.ndarray) -> np.ndarray:
    """Drop repeated and collinear vertices of a closed integer polygon."""
    keep = np.r_[True, np.any(rc[1:] != rc[:-1], axis=1)]
    rc = rc[keep]
    if len(rc) > 1 and np.array_equal(rc[0], rc[-1]):
        rc = rc[:-1]
    prev, nxt = np.roll(rc, 1, axis=0), np.roll(rc, -1, axis=0)
    a, b = rc - prev, nxt - rc
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return rc[cross != 0]


def _trace_parts(obj: np.ndarray) -> list[np.ndarray]:
    """Pixel-corner outlines (row, col) of each 4-connected part of a 2D mask, largest first."""
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    filled = ndi.binary_fill_holes(obj)
    parts, n = ndi.label(filled)
    sizes = np.bincount(parts.ravel())[1:]
    outlines = []
    for k in np.argsort(-sizes, kind="stable") + 1:
        part = np.pad(parts == k, 1)
        up = part.repeat(2, axis=0).repeat(2, axis=1).astype(np.float32)
        contour = max(find_contours(up, 0.5), key=len)
        # upsampled index u <-> corner coordinate (u + 0.5) / 2 in the padded crop; edge points
        # land on integers, corner cuts on quarter values that round to the corner itself.
        rc = np.rint((contour + 0.5) / 2.0).astype(np.int64) - 1
        outlines.append(_simplify(rc))
    return outlines


def _spatial(labels: np.ndarray) -> np.ndarray:
    """2D/3D label image checked by :func:`opsef_core.measure.check_labels` (one rule everywhere)."""
    return check_labels(labels, ndim=(2, 3), what="labels")


def labels_to_rois(labels: np.ndarray, c: int | None = None, t: int | None = None, *,
                   offset: Sequence[int] | None = None, max_label: int | None = None,
                   n_slices: int | None = None) -> list:
    """Convert a label image to ImageJ polygon ROIs traced on pixel edges.

    Parameters
    ----------
    labels : ndarray of int
        2D (``YX``) or 3D (``ZYX``) label image, 0 = background.
    c, t : int, optional
        0-based channel and time point stored as the ROIs' hyperstack position.
    offset : sequence of int, optional
        Where ``labels`` starts in a larger image (one value per axis): coordinates, slice
        numbers and positions are given in that image (a tile of a stitched label image).
    max_label, n_slices : int, optional
        The larger image's largest label and number of slices, which set the zero-padding of
        the names (default: those of ``labels``), so that tiles name like the whole image.

    Returns
    -------
    list of roifile.ImagejRoi
        One ROI per object (and part, and slice for 3D), named as described in the module
        docstring, ordered by label (then slice, then part size).
    """
    from roifile import ROI_TYPE, ImagejRoi
    from skimage.measure import regionprops
    from tqdm.auto import tqdm

    labels = _spatial(labels)
    stack = labels[None] if labels.ndim == 2 else labels
    off = (0,) * labels.ndim if offset is None else tuple(int(v) for v in offset)
    if len(off) != labels.ndim:
        raise ConfigError(f"offset {tuple(off)} needs one value per axis of the {labels.ndim}D labels")
    z0, y0, x0 = (0, *off) if labels.ndim == 2 else off
    top = max_label if max_label is not None else (int(labels.max()) if labels.size else 0)
    width = max(4, len(str(int(top))))
    zwidth = max(4, len(str(n_slices if n_slices is not None else stack.shape[0])))
    found = []
    for z, plane in enumerate(stack):
        for region in regionprops(plane):
            found.append((region.label, z + z0, region))
    found.sort(key=lambda item: (item[0], item[1]))
    rois = []
    for lab, z, region in tqdm(found, desc="ROIs", disable=len(found) < 500):
        r0, c0 = region.bbox[0] + y0, region.bbox[1] + x0
        for rc in _trace_parts(region.image):
            xy = (rc + [r0, c0])[:, ::-1].astype(np.int32)
            if labels.ndim == 2:
                name = f"{lab:0{width}d}"
                roi = ImagejRoi.frompoints(xy, name=name, c=c, t=t)
            else:
                name = f"{z + 1:0{zwidth}d}-{lab:0{width}d}"
                roi = ImagejRoi.frompoints(xy, name=name, position=z, z=z, c=c, t=t)
            roi.roitype = ROI_TYPE.TRACED
            rois.append(roi)
    return rois


def write_roi_zip(path: str | Path, labels: np.ndarray, c: int | None = None, t: int | None = None) -> Path:
    """Write the objects of a label image as an ImageJ ROI set (``.zip``), atomically.

    Parameters
    ----------
    path : str or Path
        Target ``.zip`` file (Fiji: File > Open, or ROI Manager > More > Open).
    labels : ndarray of int
        2D (``YX``) or 3D (``ZYX``) label image.
    c, t : int, optional
        0-based channel / time point stored in the ROIs' hyperstack position.

    Returns
    -------
    Path
        The written file (a valid, empty zip when there is no object).
    """
    return _write_rois(path, [labels_to_rois(labels, c=c, t=t)])


def write_roi_zip_tiled(path: str | Path, labels, tiles: Sequence, *, c: int | None = None,
                        t: int | None = None) -> Path:
    """Write the ImageJ ROI set of a stitched label image read tile by tile (a zarr array).

    Each tile reads its outer region and traces the objects it owns (:meth:`opsef_core.tiling.
    Tile.owns`: each object exactly once), in image coordinates.  The zip holds the same entries
    as :func:`write_roi_zip` of the whole label image; only one tile's labels are in memory.

    Parameters
    ----------
    path : str or Path
        Target ``.zip`` file.
    labels : array-like
        2D or 3D label image supporting slicing (zarr, dask, numpy).
    tiles : sequence of opsef_core.tiling.Tile
        The plan the labels were stitched on (:func:`opsef_core.tiling.plan_tiles`).
    c, t : int, optional
        As for :func:`write_roi_zip`.

    Returns
    -------
    Path
    """
    top = max((int(np.asarray(labels[tile.inner]).max(initial=0)) for tile in tiles), default=0)
    n_slices = int(labels.shape[0]) if len(labels.shape) == 3 else None

    def per_tile():
        for tile in tiles:
            lab = np.asarray(labels[tile.outer])
            mine = np.where(tile.owned(lab)[lab], lab, 0)
            if mine.any():
                yield labels_to_rois(mine, c=c, t=t, offset=tile.origin, max_label=top, n_slices=n_slices)

    return _write_rois(path, per_tile())


def _write_rois(path: str | Path, groups) -> Path:
    """Write groups of ROIs (each group: all parts of its objects) into one zip, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ConfigError(f"an ImageJ ROI set must have the extension .zip, got {path.name!r}", path)
    seen: dict[str, int] = {}
    n = 0
    with atomic_write(path) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rois in groups:
            for roi in rois:
                k = seen[roi.name] = seen.get(roi.name, 0) + 1
                entry = roi.name if k == 1 else f"{roi.name}_part{k}"
                zf.writestr(f"{entry}.roi", roi.tobytes())
                n += 1
    log.info("wrote %d ROIs to %s", n, path)
    return path


# --------------------------------------------------------------------------------------------
# rasterising
# --------------------------------------------------------------------------------------------
def _roi_z(roi, nz: int, path: Path | None) -> int:
    z = roi.z_position if roi.z_position > 0 else roi.position
    if z <= 0:
        raise InputFileError(
            f"ROI {roi.name!r} has no slice position but the labels are 3D ({nz} slices)", path
        )
    if z > nz:
        raise InputFileError(f"ROI {roi.name!r} is on slice {z} but the labels have {nz} slices", path)
    return z - 1


def rois_to_labels(rois: Sequence, shape: Sequence[int], path: str | Path | None = None) -> np.ndarray:
    """Rasterise ImageJ ROIs into a label image.

    A pixel belongs to a ROI when its centre lies inside the polygon (ImageJ's rule; composite
    ROIs are filled even-odd, so their holes stay empty).  Line and point ROIs are skipped.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
        The ROIs, e.g. from ``roifile.roiread``.
    shape : sequence of int
        ``(Y, X)`` or ``(Z, Y, X)``; 3D needs every ROI to carry a slice position.
    path : str or Path, optional
        File named in error messages.

    Returns
    -------
    ndarray
        uint16 (uint32 above 65535 objects) label image; labels from ROI names as in the module
        docstring.
    """
    from roifile import ROI_TYPE
    from skimage.draw import polygon as draw_polygon

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise AxesError(f"shape must be (Y, X) or (Z, Y, X), got {shape}", path)
    pattern = _NAME_2D if len(shape) == 2 else _NAME_3D
    named: list[int | None] = []
    for roi in rois:
        m = pattern.match(roi.name or "")
        named.append(int(m.group(m.lastindex)) if m else None)
    next_label = max([v for v in named if v is not None], default=0) + 1
    fresh: dict[str, int] = {}
    values = []
    for roi, v in zip(rois, named):
        if v is None or v == 0:
            key = roi.name or f"#{id(roi)}"
            if key not in fresh:
                fresh[key], next_label = next_label, next_label + 1
            v = fresh[key]
        values.append(v)
    dtype = np.uint16 if next_label <= 65536 else np.uint32
    out = np.zeros(shape, dtype)
    skip = {ROI_TYPE.LINE, ROI_TYPE.POLYLINE, ROI_TYPE.FREELINE, ROI_TYPE.ANGLE, ROI_TYPE.POINT,
            ROI_TYPE.NOROI}
    for roi, v in zip(rois, values):
        if roi.roitype in skip and not roi.composite:
            log.warning("%s: ROI %r is a line or point, not an area; skipped", path, roi.name)
            continue
        plane = out if len(shape) == 2 else out[_roi_z(roi, shape[0], Path(path) if path else None)]
        mask = np.zeros(plane.shape, bool)
        for xy in roi.coordinates(multi=True):
            xy = np.asarray(xy, float)
            if len(xy) < 3:
                continue
            # ImageJ coordinates are pixel corners; skimage tests pixel centres at integers.
            rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=plane.shape)
            sub = np.zeros(plane.shape, bool)
            sub[rr, cc] = True
            mask ^= sub
        plane[mask] = v
    return out


def read_roi_zip(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    """Read an ImageJ ROI set (``.zip``) or single ``.roi`` file back into a label image.

    Parameters
    ----------
    path : str or Path
        ROI file written by :func:`write_roi_zip`, Fiji's ROI Manager or AnnotatorJ.
    shape : sequence of int
        ``(Y, X)`` or ``(Z, Y, X)`` of the image the ROIs belong to.

    Returns
    -------
    ndarray
        Label image (see :func:`rois_to_labels`).

    Raises
    ------
    InputFileError
        Missing or unreadable file, or a ROI without slice position for 3D shapes.
    """
    import roifile

    path = Path(path)
    if not path.is_file():
        raise InputFileError("ROI file does not exist", path)
    try:
        rois = roifile.roiread(path)
    except Exception as exc:  # roifile/zipfile raise several types on corrupt files
        raise InputFileError(f"cannot read ImageJ ROIs: {exc}", path) from exc
    if not isinstance(rois, list):
        rois = [rois]
    return rois_to_labels(rois, shape, path)


# --------------------------------------------------------------------------------------------
# AnnotatorJ
# --------------------------------------------------------------------------------------------
def _image_for_imagej(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.uint8)
    if image.dtype in (np.uint8, np.uint16, np.float32):
        return image
    return image.astype(np.float32)


def _write_tiff(path: Path, data: np.ndarray, axes: str) -> Path:
    import tifffile

    with atomic_write(path) as fh:
        tifffile.imwrite(fh, data, imagej=True, metadata={"axes": axes})
    return path


def annotatorj_folder(
    out_dir: str | Path,
    images: Sequence[tuple[str, np.ndarray]],
    labels: Sequence[np.ndarray],
    object_type: str = "nuclei",
    axes: str = "YX",
) -> dict[str, dict[str, Path]]:
    """Write images and their segmentations in the layout AnnotatorJ opens and saves.

    AnnotatorJ opens an image from a folder and keeps its annotation in a sub-folder named after
    the object type, as ``<image name>_ROIs.zip`` (an ImageJ ROI set); its mask export goes to
    ``masks/``.  Written here::

        out_dir/<name>.tif                      the image (ImageJ TIFF)
        out_dir/<object_type>/<name>_ROIs.zip   editable outlines (edge-traced ROIs)
        out_dir/masks/<name>.tif                the label image (uint16/uint32)

    After editing, :func:`reimport` on ``out_dir`` reads the (edited) ROI sets back.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write into (created).
    images : sequence of (str, ndarray)
        ``(name, image)`` pairs; names without extension, unique.
    labels : sequence of ndarray
        Label image per entry of ``images``, with the image's spatial shape.
    object_type : str
        AnnotatorJ's annotation type (folder name), e.g. ``"nuclei"``, ``"cells"``.
    axes : str
        Axes of every image: ``"YX"``, ``"ZYX"`` (labels ZYX), or ``"YXS"``/``"ZYXS"`` for RGB.

    Returns
    -------
    dict
        ``name -> {"image": Path, "rois": Path, "mask": Path}``.
    """
    from .io import write_labels

    out_dir = Path(out_dir)
    images = list(images)
    labels = list(labels)
    if len(images) != len(labels):
        raise ConfigError(f"annotatorj_folder: {len(images)} images but {len(labels)} label images", out_dir)
    axes = axes.upper()
    if axes not in ("YX", "ZYX", "YXS", "ZYXS"):
        raise AxesError(f"annotatorj_folder: axes must be YX, ZYX, YXS or ZYXS, got {axes!r}", out_dir)
    names = [n for n, _ in images]
    if len(set(names)) != len(names):
        raise ConfigError(f"annotatorj_folder: image names must be unique, got {names}", out_dir)
    written: dict[str, dict[str, Path]] = {}
    for (name, image), lab in zip(images, labels):
        if not re.fullmatch(r"[\w.\-]+", name):
            raise ConfigError(f"image name {name!r} must use letters, digits, '.', '-', '_' only", out_dir)
        image = np.asarray(image)
        lab = _spatial(lab)
        if image.ndim != len(axes):
            raise AxesError(
                f"image {name!r} has shape {image.shape}, which does not fit axes {axes!r}", out_dir
            )
        spatial = tuple(s for s, a in zip(image.shape, axes) if a != "S")
        if lab.shape != spatial:
            raise AxesError(
                f"labels of {name!r} have shape {lab.shape}, image spatial shape is {spatial}", out_dir
            )
        img_path = _write_tiff(out_dir / f"{name}.tif", _image_for_imagej(image), axes)
        mask_path = write_labels(out_dir / "masks" / f"{name}.tif", lab, axes=axes.replace("S", ""))
        roi_path = write_roi_zip(out_dir / object_type / f"{name}_ROIs.zip", lab)
        written[name] = {"image": img_path, "rois": roi_path, "mask": mask_path}
    return written


def _spatial_shape_of_tiff(path: Path) -> tuple[int, ...]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            shape, axes = series.shape, series.axes
    except Exception as exc:
        raise InputFileError(f"cannot read TIFF: {exc}", path) from exc
    dims = tuple(s for s, a in zip(shape, axes) if a in "ZYX" or (a in "IQ" and s > 1))
    return dims


def _read_label_tiff(path: Path) -> np.ndarray:
    from .io import read_labels

    return read_labels(path)


def _infer_shape(zip_path: Path) -> tuple[int, ...]:
    name = zip_path.name[: -len("_ROIs.zip")] if zip_path.name.endswith("_ROIs.zip") else zip_path.stem
    folder = zip_path.parent
    candidates = [folder.parent / "masks" / f"{name}.tif", folder.parent / f"{name}.tif",
                  folder / "masks" / f"{name}.tif", folder / f"{name}.tif"]
    for cand in candidates:
        if cand.is_file():
            return _spatial_shape_of_tiff(cand)
    raise ConfigError(
        f"the image size of these ROIs is unknown: pass shape=, or keep {name}.tif beside the ROI folder",
        zip_path,
    )


def reimport(path_or_folder: str | Path, shape: Sequence[int] | None = None):
    """Re-import labels edited in Fiji or AnnotatorJ.

    Parameters
    ----------
    path_or_folder : str or Path
        * a label TIFF → its label image;
        * a ROI set (``.zip`` / ``.roi``) → rasterised labels (``shape`` given, or taken from
          ``masks/<name>.tif`` or ``<name>.tif`` of an :func:`annotatorj_folder` layout);
        * a folder → ``{name: labels}`` for every ``*_ROIs.zip`` in it or in its sub-folders
          (the AnnotatorJ layout; edited outlines win), or else for every label TIFF in it.
    shape : sequence of int, optional
        ``(Y, X)`` or ``(Z, Y, X)`` for ROI sets.

    Returns
    -------
    ndarray or dict of str to ndarray
    """
    p = Path(path_or_folder)
    if p.is_dir():
        zips = sorted(p.glob("*_ROIs.zip")) + sorted(q for q in p.glob("*/*_ROIs.zip"))
        if zips:
            out = {}
            for z in zips:
                name = z.name[: -len("_ROIs.zip")]
                if name in out:
                    raise InputFileError(f"two ROI sets for image {name!r} in {p}", z)
                out[name] = reimport(z, shape)
            return out
        tifs = sorted(q for q in p.iterdir() if q.suffix.lower() in (".tif", ".tiff"))
        if not tifs:
            raise EmptyFolderError("no *_ROIs.zip ROI sets or label TIFFs to reimport", p)
        return {re.sub(r"(\.ome)?\.tiff?$", "", q.name, flags=re.I): _read_label_tiff(q) for q in tifs}
    if not p.is_file():
        raise InputFileError("does not exist", p)
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _read_label_tiff(p)
    if suffix in (".zip", ".roi"):
        return read_roi_zip(p, shape if shape is not None else _infer_shape(p))
    raise InputFileError("cannot reimport this file type; give a label TIFF, a ROI .zip/.roi or a folder", p)
