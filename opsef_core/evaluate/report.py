"""Per-image metric rows, folder-against-folder evaluation (``opsef evaluate``) and its text report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import AxesError, ConfigError, EmptyFolderError, InputFileError
from ..io.naming import file_stem

from .matching import (
    _RATE_KEYS,
    DEFAULT_THRESHOLDS,
    Matching,
    _aji_from_overlap,
    _match_scores,
    overlap_blockwise,
    overlap_matrix,
    pixel_metrics,
    pixel_rates,
    pool,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# per-image rows, folders
# --------------------------------------------------------------------------------------------
def _tkey(t: float) -> str:
    return f"{t:g}"


def metric_names(thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[str]:
    """The columns :func:`image_metrics` gives for these thresholds (what ``rank_by`` may name)."""
    names = ["n_true", "n_pred", "aji", *(f"pixel_{k}" for k in ("precision", "recall", "f1", "iou"))]
    names += [f"{k}@{_tkey(t)}" for t in thresholds for k in ("tp", "fp", "fn", *_RATE_KEYS)]
    return names


def image_metrics(
    gt: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    criterion: str = "iou",
) -> dict:
    """One flat row of metrics for one image (what ``metrics.csv`` holds per image).

    Parameters
    ----------
    gt, pred : ndarray of int
        Truth and predicted label images.
    thresholds : sequence of float
        Matching thresholds.
    criterion : {"iou", "iot", "iop"}
        Matching score.

    Returns
    -------
    dict
        ``n_true, n_pred, aji, pixel_{precision,recall,f1,iou}`` and for each threshold t
        ``{tp,fp,fn,precision,recall,f1,accuracy,panoptic_quality,mean_matched_score}@t``
        (t written as ``f"{t:g}"``, e.g. ``f1@0.5``).
    """
    return _image_row(gt, pred, thresholds, criterion)[0]


def image_metrics_blockwise(gt, pred, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, criterion: str = "iou",
                            *, block_pixels: int = 1 << 22) -> dict:
    """:func:`image_metrics` of label images read in slabs (:func:`~opsef_core.evaluate.matching.
    overlap_blockwise`): the same row, with only a slab of each image in memory at a time."""
    ov, counts = overlap_blockwise(gt, pred, block_pixels=block_pixels)
    return _row(ov, pixel_rates(counts["tp"], counts["fp"], counts["fn"]), thresholds, criterion)[0]


def _image_row(gt, pred, thresholds, criterion) -> tuple[dict, list[Matching]]:
    return _row(overlap_matrix(gt, pred), pixel_metrics(gt, pred), thresholds, criterion)


def _row(ov, px: dict, thresholds, criterion) -> tuple[dict, list[Matching]]:
    scores = ov.scores(criterion)
    row: dict = {"n_true": ov.n_true, "n_pred": ov.n_pred, "aji": _aji_from_overlap(ov)}
    row.update({f"pixel_{k}": px[k] for k in ("precision", "recall", "f1", "iou")})
    ms = []
    for t in thresholds:
        m = _match_scores(ov, scores, t, criterion)
        ms.append(m)
        for k in ("tp", "fp", "fn", *_RATE_KEYS):
            row[f"{k}@{_tkey(m.threshold)}"] = getattr(m, k)
    return row, ms


def _list_labels(folder: Path, include: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputFileError(f"{what} folder does not exist or is not a folder", folder)
    files: dict[str, Path] = {}
    for pattern in include:
        for f in sorted(folder.glob(pattern)):
            if f.is_file():
                key = file_stem(f)
                if key in files and files[key] != f:
                    raise InputFileError(
                        f"two files have the name {key!r}: {files[key].name}, {f.name}", folder
                    )
                files[key] = f
    if not files:
        raise EmptyFolderError(f"no {what} label images matching {list(include)}", folder)
    return files


def _read_label_file(path: Path) -> np.ndarray:
    from ..io import read_labels

    arr = read_labels(path)
    if arr.ndim not in (2, 3):
        raise InputFileError(f"label image must be 2D or 3D, got shape {arr.shape}", path)
    return arr


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    include: Sequence[str] = ("*.tif", "*.tiff"),
    criterion: str = "iou",
) -> tuple[pd.DataFrame, dict]:
    """Evaluate every predicted label image against the truth image of the same name.

    Files are paired by name without extension (``a.tif``, ``a.tiff`` and ``a.ome.tif`` all give
    ``a``).  Files present on one side only are listed in the summary and logged as a warning.

    Parameters
    ----------
    pred_dir, gt_dir : str or Path
        Folders of predicted and truth label images (TIFF).
    thresholds : sequence of float
        Matching thresholds.
    include : sequence of str
        Glob patterns of the files to consider in both folders.
    criterion : {"iou", "iot", "iop"}
        Matching score.

    Returns
    -------
    per_image : pandas.DataFrame
        One row per pair: ``image, pred_file, gt_file`` and the columns of :func:`image_metrics`.
    summary : dict
        JSON-ready: ``n_images, criterion, thresholds, unpaired_pred, unpaired_gt``, ``pooled``
        (threshold string → :func:`pool` result), ``aji_mean`` and ``pixel_f1_mean``.

    Raises
    ------
    EmptyFolderError
        A folder holds no matching file.
    InputFileError
        No file pairs by name, a folder is missing, or a file is unreadable.
    AxesError
        A pair's shapes differ.
    """
    from tqdm.auto import tqdm

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds = _list_labels(pred_dir, include, "prediction")
    gts = _list_labels(gt_dir, include, "ground-truth")
    common = sorted(set(preds) & set(gts))
    only_pred = sorted(set(preds) - set(gts))
    only_gt = sorted(set(gts) - set(preds))
    if not common:
        raise InputFileError(
            f"no prediction file has a ground-truth file of the same name in {gt_dir} "
            f"(predictions: {only_pred[:5]}, truth: {only_gt[:5]})",
            pred_dir,
        )
    if only_pred:
        log.warning("%d prediction(s) without ground truth in %s: %s", len(only_pred), gt_dir, only_pred)
    if only_gt:
        log.warning("%d ground-truth file(s) without prediction in %s: %s", len(only_gt), pred_dir, only_gt)
    rows, per_t = [], {t: [] for t in thresholds}
    for key in tqdm(common, desc="evaluate", disable=len(common) < 5):
        gt, pred = _read_label_file(gts[key]), _read_label_file(preds[key])
        if gt.shape != pred.shape:
            raise AxesError(
                f"shape {pred.shape} differs from ground truth {gts[key]} with shape {gt.shape}", preds[key]
            )
        vals, ms = _image_row(gt, pred, thresholds, criterion)
        rows.append({"image": key, "pred_file": str(preds[key]), "gt_file": str(gts[key]), **vals})
        for t, m in zip(thresholds, ms):
            per_t[t].append(m)
    df = pd.DataFrame(rows)
    summary = {
        "n_images": len(rows),
        "criterion": criterion,
        "thresholds": [float(t) for t in thresholds],
        "unpaired_pred": only_pred,
        "unpaired_gt": only_gt,
        "pooled": {_tkey(float(t)): pool(ms) for t, ms in per_t.items()},
        "aji_mean": float(df["aji"].mean()),
        "pixel_f1_mean": float(df["pixel_f1"].mean()),
    }
    return df, summary


def format_evaluation(per_image: pd.DataFrame, summary: dict, threshold: float = 0.5) -> str:
    """Human-readable report of :func:`evaluate_folders` (what ``opsef evaluate`` prints).

    Parameters
    ----------
    per_image : pandas.DataFrame
        First result of :func:`evaluate_folders`.
    summary : dict
        Second result of :func:`evaluate_folders`.
    threshold : float
        Threshold whose per-image values are shown (must be one that was evaluated).

    Returns
    -------
    str
        Per-image lines, the pooled table over thresholds, and unpaired files.
    """
    tk = _tkey(float(threshold))
    if f"f1@{tk}" not in per_image.columns:
        raise ConfigError(f"threshold {threshold} was not evaluated; available: {summary.get('thresholds')}")
    lines = [f"{summary['n_images']} image(s), criterion {summary['criterion']}", ""]
    lines.append(f"{'image':<30} {'n_true':>6} {'n_pred':>6} {'tp':>5} {'fp':>5} {'fn':>5} "
                 f"{'prec':>6} {'rec':>6} {'F1':>6} {'AJI':>6}   (@{tk})")
    for _, r in per_image.iterrows():
        lines.append(
            f"{str(r['image'])[:30]:<30} {r['n_true']:>6} {r['n_pred']:>6} {r[f'tp@{tk}']:>5} "
            f"{r[f'fp@{tk}']:>5} {r[f'fn@{tk}']:>5} {r[f'precision@{tk}']:>6.3f} "
            f"{r[f'recall@{tk}']:>6.3f} {r[f'f1@{tk}']:>6.3f} {r['aji']:>6.3f}"
        )
    lines += ["", "pooled over images:",
              f"{'thresh':>6} {'tp':>6} {'fp':>6} {'fn':>6} {'prec':>6} {'rec':>6} {'F1':>6} "
              f"{'acc':>6} {'PQ':>6}"]
    for t, p in summary["pooled"].items():
        lines.append(
            f"{t:>6} {p['tp']:>6} {p['fp']:>6} {p['fn']:>6} {p['precision']:>6.3f} {p['recall']:>6.3f} "
            f"{p['f1']:>6.3f} {p['accuracy']:>6.3f} {p['panoptic_quality']:>6.3f}"
        )
    lines.append(f"mean AJI {summary['aji_mean']:.3f}, mean pixel F1 {summary['pixel_f1_mean']:.3f}")
    if summary.get("unpaired_pred"):
        lines.append(f"predictions without ground truth: {', '.join(summary['unpaired_pred'])}")
    if summary.get("unpaired_gt"):
        lines.append(f"ground truth without prediction: {', '.join(summary['unpaired_gt'])}")
    return "\n".join(lines)


