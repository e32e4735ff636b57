"""Measure (and score) labels that were edited by hand in Fiji or AnnotatorJ.

The round trip: a run exports label TIFFs and ROI zips (or
:func:`opsef_core.export.annotatorj_folder` writes the AnnotatorJ layout); an analyst
corrects outlines in Fiji's ROI manager or AnnotatorJ; :func:`measure_curated` reads
the edited ROI sets or label images back (:func:`opsef_core.export.reimport`), pairs
each with its image by name and measures it exactly like a run's result
(:func:`opsef_core.measure.measure_objects`, physical units from the image), and,
when ground truth is given, scores it (:func:`opsef_core.evaluate.image_metrics`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from .errors import EmptyFolderError, InputFileError

__all__ = ["measure_curated", "find_image"]

logger = logging.getLogger(__name__)



def find_image(folder: str | Path, name: str) -> Path | None:
    """The image file ``<name>.tif`` (``.tiff``, ``.ome.tif``) in ``folder``, or None.

    Parameters
    ----------
    folder : str or Path
        Folder of images (an AnnotatorJ layout keeps them at its top level).
    name : str
        Image name without extension.

    Returns
    -------
    Path or None
    """
    from .io.naming import find_partner

    return find_partner(folder, [name])


def _name_of(path: Path) -> str:
    name = path.name
    if name.endswith("_ROIs.zip"):
        return name[: -len("_ROIs.zip")]
    return re.sub(r"(\.ome)?\.(tiff?|zip|roi)$", "", name, flags=re.I)


def measure_curated(
    annotations: str | Path,
    images: str | Path | None = None,
    ground_truth: str | Path | None = None,
    thresholds: Sequence[float] = (0.5, 0.75, 0.9),
    channel_ratios: Sequence[tuple[str, str]] = (),
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Measure hand-edited labels like any other result, and score them against truth.

    Parameters
    ----------
    annotations : str or Path
        What :func:`opsef_core.export.reimport` reads: an AnnotatorJ folder (its
        ``<type>/<name>_ROIs.zip`` sets win over label TIFFs), a folder of label TIFFs, or
        one label TIFF / ROI zip.
    images : str or Path, optional
        Folder holding ``<name>.tif`` for every annotated image (intensities and pixel
        size).  Default: the annotation folder itself (the AnnotatorJ layout keeps the
        images there).  Without a matching image the objects are measured in pixel units
        and without intensity columns (a warning says so).
    ground_truth : str or Path, optional
        Folder of truth label images named like the annotations.
    thresholds : sequence of float
        IoU thresholds of the matching metrics.
    channel_ratios : sequence of (str, str)
        Channel pairs for ``ratio_<a>_<b>`` columns.

    Returns
    -------
    measurements : DataFrame
        One row per object: ``image``, ``source`` (``"curated"``), then the columns of
        :func:`~opsef_core.measure.measure_objects`.
    metrics : DataFrame or None
        One row per image with ``image`` and the :func:`~opsef_core.evaluate.image_metrics`
        columns; None without ground truth.

    Raises
    ------
    InputFileError
        A missing annotation path, an unreadable file, a ground-truth file missing for an
        annotated image, or an image whose shape differs from its labels.
    EmptyFolderError
        Nothing to re-import in the folder.
    """
    from . import evaluate, io
    from .export import reimport
    from .measure import measure_objects

    src = Path(annotations)
    if not src.exists():
        raise InputFileError("annotations not found", src)
    loaded = reimport(src)
    named = loaded if isinstance(loaded, dict) else {_name_of(src): loaded}
    if not named:
        raise EmptyFolderError("no annotations to measure", src)
    image_dir = Path(images) if images is not None else (src if src.is_dir() else src.parent)
    if images is not None and not image_dir.is_dir():
        raise InputFileError("image folder not found", image_dir)
    gt_dir = Path(ground_truth) if ground_truth is not None else None
    if gt_dir is not None and not gt_dir.is_dir():
        raise InputFileError("ground-truth folder not found", gt_dir)

    tables, metrics = [], []
    for name, labels in sorted(named.items()):
        img_path = find_image(image_dir, name)
        image = None
        if img_path is not None:
            image = io.read_image(img_path)
            spatial = tuple(image.size(a) for a in image.spatial_axes)
            if spatial[-labels.ndim:] != labels.shape:
                raise InputFileError(f"image of spatial shape {spatial} does not fit the edited labels of "
                                     f"shape {labels.shape} for {name!r}", img_path)
        else:
            logger.warning("%s: no image %s.tif in %s; measuring in pixel units without intensities",
                           name, name, image_dir)
        tables.append(measure_objects(labels, image, extra={"image": name, "source": "curated"},
                                      channel_ratios=channel_ratios))
        if gt_dir is not None:
            gt_path = find_image(gt_dir, name)
            if gt_path is None:
                raise InputFileError(f"no ground truth {name}.tif for the annotated image {name!r}", gt_dir)
            gt = io.read_labels(gt_path)
            if gt.shape != labels.shape:
                raise InputFileError(f"ground truth of shape {gt.shape} differs from the edited labels "
                                     f"{labels.shape}", gt_path)
            metrics.append({"image": name, **evaluate.image_metrics(gt, labels, thresholds)})
    measurements = pd.concat(tables, ignore_index=True)
    return measurements, (pd.DataFrame(metrics) if gt_dir is not None else None)
