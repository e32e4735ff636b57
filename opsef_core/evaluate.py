"""Evaluation of label images against ground truth.

Definitions follow ``SCIENCE.md`` of the project (and ``stardist.matching`` for instance
matching):

* **Instance matching** — an overlap matrix between truth objects and predicted objects gives a
  score per pair: intersection over union (``"iou"``, default), intersection over truth
  (``"iot"``) or intersection over prediction (``"iop"``).  Objects are paired one-to-one by the
  Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the cost
  ``-(score >= τ) - score / (2 n)`` with ``n = min(n_true, n_pred)``: this maximises the number of
  pairs with score ≥ τ first and the summed score second, exactly as ``stardist.matching``.
  tp = matched pairs with score ≥ τ, fp = n_pred − tp, fn = n_true − tp;
  precision = tp/(tp+fp); recall = tp/(tp+fn); F1 = 2tp/(2tp+fp+fn); accuracy = tp/(tp+fp+fn)
  (Cellpose's "AP"); panoptic quality = Σ score(matched) / (tp + fp/2 + fn/2); mean matched score
  = Σ score(matched) / tp.  Empty cases: truth and prediction both empty → every rate is 1
  (perfect; stardist reports 0 here); exactly one empty → every rate is 0.  Scores are computed in
  float64 (stardist rounds them to float32; values then agree to ~1e-7).
* **Aggregated Jaccard index** (Kumar et al. 2017) — see :func:`aji`.
* **Pixel metrics** — see :func:`pixel_metrics`.
* **Single-spheroid metrics** (JCD, RDD, RCD, invalid / ambiguous fractions, radial error) — see
  :func:`spheroid_metrics` and :func:`spheroid_summary`.
* **Folders and grids** — :func:`evaluate_folders` (what ``opsef evaluate`` runs),
  :func:`format_evaluation`, :func:`rank`, :func:`plot_ranking`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from .errors import AxesError, ConfigError, EmptyFolderError, InputFileError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Overlap",
    "Matching",
    "overlap_matrix",
    "match",
    "matching_table",
    "pool",
    "image_metrics",
    "aji",
    "pixel_metrics",
    "spheroid_metrics",
    "spheroid_summary",
    "evaluate_folders",
    "format_evaluation",
    "rank",
    "plot_ranking",
]

log = logging.getLogger(__name__)

#: IoU thresholds 0.5, 0.55, ..., 0.95 (the usual sweep).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_CRITERIA = ("iou", "iot", "iop")
_RATE_KEYS = ("precision", "recall", "f1", "accuracy", "panoptic_quality", "mean_matched_score")
# A dense pair-code histogram is used while it stays below this many cells (else np.unique).
_DENSE_PAIR_LIMIT = 1 << 22


# --------------------------------------------------------------------------------------------
# overlap
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overlap:
    """Sparse overlap between the objects of a truth and a predicted label image.

    Attributes
    ----------
    gt_labels, pred_labels : ndarray
        The object labels present (background 0 excluded), sorted.
    gt_sizes, pred_sizes : ndarray
        Pixel (voxel) count of each object, aligned with the labels.
    intersection : scipy.sparse.csr_matrix
        ``(n_gt, n_pred)`` pixel counts of each pair's intersection.
    """

    gt_labels: np.ndarray
    pred_labels: np.ndarray
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray
    intersection: sp.csr_matrix

    @property
    def n_true(self) -> int:
        """Number of truth objects."""
        return int(self.gt_labels.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return int(self.pred_labels.size)

    def scores(self, criterion: str = "iou") -> sp.csr_matrix:
        """Sparse score matrix ``(n_gt, n_pred)`` for ``criterion`` in ``iou``, ``iot``, ``iop``.

        Parameters
        ----------
        criterion : {"iou", "iot", "iop"}
            Intersection over union, over the truth object, or over the predicted object.

        Returns
        -------
        scipy.sparse.csr_matrix
            float64 scores; pairs without overlap are structural zeros.
        """
        if criterion not in _CRITERIA:
            raise ConfigError(f"unknown matching criterion {criterion!r}; use one of {_CRITERIA}")
        coo = self.intersection.tocoo()
        inter = coo.data.astype(np.float64)
        g = self.gt_sizes[coo.row].astype(np.float64)
        p = self.pred_sizes[coo.col].astype(np.float64)
        if criterion == "iou":
            data = inter / (g + p - inter)
        elif criterion == "iot":
            data = inter / g
        else:
            data = inter / p
        return sp.csr_matrix((data, (coo.row, coo.col)), shape=coo.shape)


def _check_labels(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputFileError(f"{name} must be an integer label image, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise InputFileError(f"{name} holds negative labels (min {a.min()}); labels must be >= 0")
    return a


def _index_labels(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map labels to 0 (background) and 1..n; return (index per pixel, labels, sizes)."""
    if flat.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.int64), np.zeros(0, np.int64)
    mx = int(flat.max())
    if mx <= 4 * flat.size + (1 << 20):  # O(N) path: histogram + look-up table
        if flat.dtype.itemsize >= 8 or flat.dtype.kind != "u":
            flat = flat.astype(np.intp, copy=False)
        counts = np.bincount(flat, minlength=mx + 1)
        labels = np.flatnonzero(counts[1:]) + 1
        if labels.size == mx:  # already 1..n: the labels are their own indices
            return flat, labels.astype(np.int64), counts[labels].astype(np.int64)
        lut = np.zeros(mx + 1, np.int32 if labels.size < 2**31 - 1 else np.intp)
        lut[labels] = np.arange(1, labels.size + 1)
        return lut[flat], labels.astype(np.int64), counts[labels].astype(np.int64)
    uniq, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if uniq[0] == 0:
        return inv.astype(np.intp), uniq[1:].astype(np.int64), counts[1:].astype(np.int64)
    return inv.astype(np.intp) + 1, uniq.astype(np.int64), counts.astype(np.int64)


def overlap_matrix(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Pixel overlap of every truth object with every predicted object.

    Computed in O(pixels) from one histogram of paired label indices (no per-label loop); the
    result is sparse, so ~1000 objects on a 2048² image take well under a second.

    Parameters
    ----------
    gt, pred : ndarray of int
        Label images of the same shape (2D or 3D), 0 = background; labels need not be sequential.

    Returns
    -------
    Overlap
        Labels, sizes and the sparse intersection matrix.

    Raises
    ------
    AxesError
        When the shapes differ.
    InputFileError
        When an array is not a non-negative integer label image.
    """
    gt = _check_labels(gt, "ground-truth labels")
    pred = _check_labels(pred, "predicted labels")
    if gt.shape != pred.shape:
        raise AxesError(f"ground truth has shape {gt.shape} but prediction has shape {pred.shape}")
    ig, gl, gs = _index_labels(gt.ravel())
    ip, pl, ps = _index_labels(pred.ravel())
    ng, npr = gl.size, pl.size
    width = npr + 1
    if (ng + 1) * width <= _DENSE_PAIR_LIMIT:
        # one histogram over all pixels of (truth index, prediction index), background included
        codes = ig.astype(np.int64) * width + ip
        hist = np.bincount(codes, minlength=(ng + 1) * width).reshape(ng + 1, width)[1:, 1:]
        r, c = np.nonzero(hist)
        v = hist[r, c]
    else:
        both = (ig > 0) & (ip > 0)
        codes, v = np.unique((ig[both].astype(np.int64) - 1) * npr + (ip[both] - 1), return_counts=True)
        r, c = codes // npr, codes % npr
    inter = sp.csr_matrix((v.astype(np.int64), (r, c)), shape=(ng, npr))
    return Overlap(gl, pl, gs, ps, inter)


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------
@dataclass
class Matching:
    """Result of one-to-one instance matching at one threshold.

    Attributes
    ----------
    criterion : str
        ``"iou"``, ``"iot"`` or ``"iop"``.
    threshold : float
        τ: a pair counts as a true positive when its score ≥ τ.
    tp, fp, fn, n_true, n_pred : int
        Counts.
    precision, recall, f1, accuracy, panoptic_quality, mean_matched_score : float
        As defined in the module docstring.
    sum_matched_score : float
        Σ score over the true-positive pairs (used for pooling).
    matched_pairs : tuple of (int, int, float)
        ``(truth label, predicted label, score)`` of every true-positive pair.
    """

    criterion: str
    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    panoptic_quality: float
    mean_matched_score: float
    n_true: int
    n_pred: int
    sum_matched_score: float = 0.0
    matched_pairs: tuple = field(default=(), repr=False)

    def to_dict(self, pairs: bool = False) -> dict:
        """The fields as a plain dict (``matched_pairs`` only when ``pairs`` is true)."""
        d = asdict(self)
        if not pairs:
            d.pop("matched_pairs")
        return d


def _rates(tp: int, fp: int, fn: int, sum_score: float) -> dict:
    """Precision... from counts; both-empty (tp=fp=fn=0) is perfect, zero denominators give 0."""
    if tp + fp + fn == 0:
        return dict.fromkeys(_RATE_KEYS, 1.0)

    def div(a: float, b: float) -> float:
        return float(a) / b if b > 0 else 0.0

    return {
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "accuracy": div(tp, tp + fp + fn),
        "panoptic_quality": div(sum_score, tp + fp / 2 + fn / 2),
        "mean_matched_score": div(sum_score, tp),
    }


def _check_threshold(threshold: float) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"matching threshold must be a number, got {threshold!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"matching threshold must lie in [0, 1], got {t}")
    return t


def _match_scores(ov: Overlap, scores: sp.csr_matrix, threshold: float, criterion: str) -> Matching:
    thr = _check_threshold(threshold)
    n_true, n_pred = ov.n_true, ov.n_pred
    n_matched = min(n_true, n_pred)
    pairs: tuple = ()
    tp, sum_score = 0, 0.0
    if n_matched > 0:
        if thr > 0:
            # Rows/columns without any overlap cannot contribute to the objective: drop them.
            rows = np.flatnonzero(np.diff(scores.indptr))
            cols = np.unique(scores.indices)
        else:
            rows, cols = np.arange(n_true), np.arange(n_pred)
        if rows.size and cols.size:
            sub = scores[rows][:, cols].toarray()
            costs = -(sub >= thr).astype(float) - sub / (2 * n_matched)
            ti, pi = linear_sum_assignment(costs)
            s = sub[ti, pi]
            ok = s >= thr
            tp = int(np.count_nonzero(ok))
            sum_score = float(np.sum(s[ok]))
            pairs = tuple(
                (int(ov.gt_labels[rows[i]]), int(ov.pred_labels[cols[j]]), float(v))
                for i, j, v in zip(ti[ok], pi[ok], s[ok])
            )
    fp, fn = n_pred - tp, n_true - tp
    return Matching(
        criterion=criterion,
        threshold=thr,
        tp=tp,
        fp=fp,
        fn=fn,
        n_true=n_true,
        n_pred=n_pred,
        sum_matched_score=sum_score,
        matched_pairs=pairs,
        **_rates(tp, fp, fn, sum_score),
    )


def match(
    gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5, criterion: str = "iou"
) -> Matching:
    """Match predicted objects to truth objects one-to-one at a score threshold.

    Hungarian assignment as ``stardist.matching.matching``: cost ``-(s >= τ) - s / (2n)``,
    ``n = min(n_true, n_pred)``, which maximises the number of pairs with score ≥ τ, then their
    summed score.  See the module docstring for every metric and the empty cases (both empty →
    1, one empty → 0).

    Parameters
    ----------
    gt, pred : ndarray of int
        Truth and predicted label images of the same shape.
    threshold : float
        τ in [0, 1].
    criterion : {"iou", "iot", "iop"}
        Intersection over union / over truth / over prediction.

    Returns
    -------
    Matching
    """
    ov = overlap_matrix(gt, pred)
    return _match_scores(ov, ov.scores(criterion), threshold, criterion)


def matching_table(
    gt: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    criterion: str = "iou",
) -> pd.DataFrame:
    """Matching metrics at several thresholds from one overlap matrix.

    Parameters
    ----------
    gt, pred : ndarray of int
        Truth and predicted label images.
    thresholds : sequence of float
        τ values (default 0.5, 0.55, ..., 0.95).
    criterion : {"iou", "iot", "iop"}
        Score used for matching.

    Returns
    -------
    pandas.DataFrame
        One row per threshold with the fields of :class:`Matching` (without pairs).
    """
    ov = overlap_matrix(gt, pred)
    scores = ov.scores(criterion)
    rows = [_match_scores(ov, scores, t, criterion).to_dict() for t in thresholds]
    return pd.DataFrame(rows)


def pool(matchings: Iterable[Matching]) -> dict:
    """Data-set level metrics: pooled counts over images plus per-image means.

    Pooled: tp, fp, fn, n_true, n_pred and the summed matched score are added over images and the
    rates computed from the sums (as ``stardist.matching.matching_dataset`` with
    ``by_image=False``).  Per-image means of every rate are reported as ``"mean_<rate>"``.

    Parameters
    ----------
    matchings : iterable of Matching
        One per image, all at the same threshold and criterion.

    Returns
    -------
    dict
        ``criterion, threshold, n_images, tp, fp, fn, n_true, n_pred, sum_matched_score``, the
        pooled rates, and ``mean_<rate>`` for each rate.

    Raises
    ------
    ConfigError
        When the list is empty or mixes thresholds or criteria.
    """
    ms = list(matchings)
    if not ms:
        raise ConfigError("pool() needs at least one Matching")
    if len({(m.threshold, m.criterion) for m in ms}) != 1:
        raise ConfigError("pool() got matchings at different thresholds or criteria; pool each separately")
    tot = {k: int(sum(getattr(m, k) for m in ms)) for k in ("tp", "fp", "fn", "n_true", "n_pred")}
    ssum = float(sum(m.sum_matched_score for m in ms))
    out = {"criterion": ms[0].criterion, "threshold": ms[0].threshold, "n_images": len(ms), **tot}
    out["sum_matched_score"] = ssum
    out.update(_rates(tot["tp"], tot["fp"], tot["fn"], ssum))
    for k in _RATE_KEYS:
        out[f"mean_{k}"] = float(np.mean([getattr(m, k) for m in ms]))
    return out


# --------------------------------------------------------------------------------------------
# AJI and pixel metrics
# --------------------------------------------------------------------------------------------
def _aji_from_overlap(ov: Overlap) -> float:
    if ov.n_true == 0 and ov.n_pred == 0:
        return 1.0
    iou = ov.scores("iou").tocoo()
    inter = ov.intersection.tocoo()  # same sparsity pattern and order as ``iou``
    num, den = 0.0, 0.0
    used = np.zeros(ov.n_pred, bool)
    has = np.zeros(ov.n_true, bool)
    if iou.nnz:
        # best prediction per truth row: sort by row, then IoU descending, then label ascending
        order = np.lexsort((iou.col, -iou.data, iou.row))
        r = iou.row[order]
        first = order[np.r_[True, r[1:] != r[:-1]]]
        gi, pk = iou.row[first], iou.col[first]
        it = inter.data[first].astype(np.float64)
        num = float(it.sum())
        den = float(np.sum(ov.gt_sizes[gi] + ov.pred_sizes[pk] - it))
        used[pk] = True
        has[gi] = True
    den += float(ov.gt_sizes[~has].sum()) + float(ov.pred_sizes[~used].sum())
    return num / den if den > 0 else 0.0


def aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard index (Kumar et al. 2017, clearing study eq. 9).

    For each truth object G_i the predicted object S_k(i) of maximal IoU is taken (argmax, not
    Hungarian: one prediction may serve several truth objects; ties go to the lowest predicted
    label).  AJI = Σ_i |G_i ∩ S_k(i)| / (Σ_i |G_i ∪ S_k(i)| + Σ_{l∈U} |S_l|) with U the predicted
    objects never chosen.  A truth object that overlaps no prediction adds |G_i| to the
    denominator only.  Both images empty → 1.0; only one empty → 0.0.  (Cellpose's
    ``aggregated_jaccard_index`` is a different quantity.)

    Parameters
    ----------
    gt, pred : ndarray of int
        Truth and predicted label images of the same shape.

    Returns
    -------
    float
        AJI in [0, 1].
    """
    return _aji_from_overlap(overlap_matrix(gt, pred))


def _pixel_counts(g: np.ndarray, p: np.ndarray) -> dict:
    tp = int(np.count_nonzero(g & p))
    fp = int(np.count_nonzero(~g & p))
    fn = int(np.count_nonzero(g & ~p))
    if tp + fp + fn == 0:
        rates = {"precision": 1.0, "recall": 1.0, "f1": 1.0, "iou": 1.0}
    else:
        rates = {
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "iou": tp / (tp + fp + fn),
        }
    return {"tp": tp, "fp": fp, "fn": fn, **rates}


def pixel_metrics(gt: np.ndarray, pred: np.ndarray, classes: Iterable[int] | None = None) -> dict:
    """Semantic (pixel) precision, recall, F1 (= Dice) and IoU.

    F1 = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN).  A class absent from both images scores 1.0
    (perfect); a zero denominator otherwise gives 0.0.

    Parameters
    ----------
    gt, pred : ndarray
        Label or class maps of the same shape.
    classes : iterable of int, optional
        None (default): foreground (> 0) against background.  Otherwise the class values of a
        multi-class map (e.g. 0 background, 1 boundary, 2 interior); each class is scored
        one-vs-rest and reported separately (never averaged: background dominates).

    Returns
    -------
    dict
        ``{"tp", "fp", "fn", "precision", "recall", "f1", "iou"}``, or for ``classes`` a dict
        mapping each class value to such a dict.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise AxesError(f"ground truth has shape {gt.shape} but prediction has shape {pred.shape}")
    if classes is None:
        return _pixel_counts(gt > 0, pred > 0)
    return {int(c): _pixel_counts(gt == c, pred == c) for c in classes}


# --------------------------------------------------------------------------------------------
# single-spheroid metrics
# --------------------------------------------------------------------------------------------
def _shape_readouts(mask: np.ndarray, pixel_size, diameter: str, perimeter: str) -> dict:
    from .spheroid import readouts

    r = readouts(mask, pixel_size, diameter=diameter)
    out = {k: float(r[k]) for k in ("area", "perimeter", "diameter", "volume", "circularity")}
    if perimeter in ("4", "neighbourhood4", "neighborhood4"):
        from skimage.measure import perimeter as perimeter_4

        if not np.isscalar(pixel_size):
            raise ConfigError("perimeter='neighbourhood4' needs one isotropic pixel size")
        out["perimeter"] = float(perimeter_4(mask, neighborhood=4)) * float(pixel_size)
        out["circularity"] = 4 * math.pi * out["area"] / out["perimeter"] ** 2 if out["perimeter"] else math.nan
    elif perimeter != "crofton":
        raise ConfigError(f"unknown perimeter method {perimeter!r}; use 'crofton' or 'neighbourhood4'")
    return out


def spheroid_metrics(
    gt_mask: np.ndarray,
    pred_labels: np.ndarray,
    pixel_size: float | dict = 1.0,
    diameter: str = "equivalent",
    perimeter: str = "crofton",
) -> dict:
    """Single-spheroid metrics of one 2D image (treated-spheroid study).

    P = the largest predicted object (``opsef_core.spheroid.largest_object``: by pixel count; a
    boolean prediction is split into connected components first), T = the truth
    (``gt_mask > 0``).  Readouts come from ``opsef_core.spheroid.readouts``.

    * JCD = 1 − |P∩T|/|P∪T|.
    * d = equivalent-circle diameter √(4A/π) (or mean Feret with ``diameter="feret"``);
      circularity c = 4πA/L² with L the Crofton perimeter (``skimage.measure.perimeter_crofton``,
      4 directions; ≈1 for a digital disc) or, with ``perimeter="neighbourhood4"``,
      ``skimage.measure.perimeter(neighborhood=4)``.
    * RDD = |d_P − d_T|/d_T, RCD = |c_P − c_T|/c_T.
    * invalid: P empty or P∩T = ∅ → JCD = RDD = RCD = 1.
    * ambiguous: more than one predicted object (metrics are on the largest).
    * radial error Δr = √((A_T + M)/π) − √(A_T/π) with M = |P∖T| + |T∖P| (in µm).
    * readouts of P and T: area (µm²), perimeter (µm), diameter (µm), volume πd³/6 (µm³),
      circularity.

    Parameters
    ----------
    gt_mask : ndarray
        Truth mask (any value > 0 is spheroid), 2D.
    pred_labels : ndarray
        Predicted label image (or boolean mask), same shape.
    pixel_size : float or dict
        Pixel size in µm (``{"Y": dy, "X": dx}`` for anisotropic pixels).
    diameter : {"equivalent", "feret"}
        Diameter definition.
    perimeter : {"crofton", "neighbourhood4"}
        Perimeter estimator.

    Returns
    -------
    dict
        ``n_objects, invalid, ambiguous, jcd, rdd, rcd, radial_error_um`` and
        ``{area, perimeter, diameter, volume, circularity}_{pred,true}``.

    Raises
    ------
    AxesError
        Shapes differ or the images are not 2D.
    InputFileError
        The truth mask is empty (nothing to compare with).
    """
    from .spheroid import largest_object

    gt_mask, pred_labels = np.asarray(gt_mask), np.asarray(pred_labels)
    if gt_mask.shape != pred_labels.shape:
        raise AxesError(
            f"ground truth has shape {gt_mask.shape} but prediction has shape {pred_labels.shape}"
        )
    if gt_mask.ndim != 2:
        raise AxesError(f"spheroid metrics need 2D images, got shape {gt_mask.shape}")
    t = gt_mask > 0
    if not t.any():
        raise InputFileError("ground-truth spheroid mask is empty")
    p, n_objects = largest_object(pred_labels)
    inter = int(np.count_nonzero(p & t))
    union = int(np.count_nonzero(p | t))
    rt = _shape_readouts(t, pixel_size, diameter, perimeter)
    rp = _shape_readouts(p, pixel_size, diameter, perimeter)
    invalid = n_objects == 0 or inter == 0
    if invalid:
        jcd = rdd = rcd = 1.0
    else:
        jcd = 1.0 - inter / union
        rdd = abs(rp["diameter"] - rt["diameter"]) / rt["diameter"]
        rcd = abs(rp["circularity"] - rt["circularity"]) / rt["circularity"]
    pixel_area = rt["area"] / np.count_nonzero(t)
    mism = (union - inter) * pixel_area
    dr = math.sqrt((rt["area"] + mism) / math.pi) - math.sqrt(rt["area"] / math.pi)
    out = {
        "n_objects": int(n_objects),
        "invalid": bool(invalid),
        "ambiguous": n_objects > 1,
        "jcd": float(jcd),
        "rdd": float(rdd),
        "rcd": float(rcd),
        "radial_error_um": float(dr),
    }
    out.update({f"{k}_pred": v for k, v in rp.items()})
    out.update({f"{k}_true": v for k, v in rt.items()})
    return out


def spheroid_summary(results: Sequence[dict]) -> dict:
    """Summarise :func:`spheroid_metrics` over images.

    Parameters
    ----------
    results : sequence of dict
        One :func:`spheroid_metrics` result per image.

    Returns
    -------
    dict
        ``n_images``; ``<m>_mean`` and ``<m>_std`` (sample standard deviation, ddof=1; 0 for one
        image) for m in jcd, rdd, rcd, radial_error_um; ``isf`` and ``asf`` (invalid / ambiguous
        fractions) with binomial standard errors ``isf_se``, ``asf_se`` = √(p(1−p)/n).
    """
    rs = list(results)
    if not rs:
        raise ConfigError("spheroid_summary() needs at least one result")
    n = len(rs)
    out: dict = {"n_images": n}
    for k in ("jcd", "rdd", "rcd", "radial_error_um"):
        v = np.array([r[k] for r in rs], float)
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if n > 1 else 0.0
    for k, name in (("invalid", "isf"), ("ambiguous", "asf")):
        p = sum(bool(r[k]) for r in rs) / n
        out[name] = float(p)
        out[f"{name}_se"] = float(math.sqrt(p * (1 - p) / n))
    return out


# --------------------------------------------------------------------------------------------
# per-image rows, folders
# --------------------------------------------------------------------------------------------
def _tkey(t: float) -> str:
    return f"{t:g}"


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


def _image_row(gt, pred, thresholds, criterion) -> tuple[dict, list[Matching]]:
    ov = overlap_matrix(gt, pred)
    scores = ov.scores(criterion)
    row: dict = {"n_true": ov.n_true, "n_pred": ov.n_pred, "aji": _aji_from_overlap(ov)}
    px = pixel_metrics(gt, pred)
    row.update({f"pixel_{k}": px[k] for k in ("precision", "recall", "f1", "iou")})
    ms = []
    for t in thresholds:
        m = _match_scores(ov, scores, t, criterion)
        ms.append(m)
        for k in ("tp", "fp", "fn", *_RATE_KEYS):
            row[f"{k}@{_tkey(m.threshold)}"] = getattr(m, k)
    return row, ms


_LABEL_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")


def _stem(path: Path) -> str:
    name = path.name
    low = name.lower()
    for suf in _LABEL_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _list_labels(folder: Path, include: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputFileError(f"{what} folder does not exist or is not a folder", folder)
    files: dict[str, Path] = {}
    for pattern in include:
        for f in sorted(folder.glob(pattern)):
            if f.is_file():
                key = _stem(f)
                if key in files and files[key] != f:
                    raise InputFileError(
                        f"two files have the name {key!r}: {files[key].name}, {f.name}", folder
                    )
                files[key] = f
    if not files:
        raise EmptyFolderError(f"no {what} label images matching {list(include)}", folder)
    return files


def _read_label_file(path: Path) -> np.ndarray:
    from .io import read_labels

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


# --------------------------------------------------------------------------------------------
# ranking of grid combinations
# --------------------------------------------------------------------------------------------
def rank(
    metrics: pd.DataFrame,
    by: str = "f1@0.5",
    group: Sequence[str] = ("pipeline", "segmenter", "params"),
    ascending: bool = False,
) -> pd.DataFrame:
    """Rank the combinations of a grid by a metric averaged over images.

    Parameters
    ----------
    metrics : pandas.DataFrame
        One row per (image, combination), e.g. ``metrics.csv`` of a run.
    by : str
        Metric column to rank by (default ``"f1@0.5"``).
    group : sequence of str
        Columns identifying a combination; those absent from ``metrics`` are ignored (at least
        one must be present).
    ascending : bool
        False (default): higher is better.

    Returns
    -------
    pandas.DataFrame
        Group columns, ``<by>_mean``, ``<by>_std`` (ddof=1, NaN for one image), ``n_images`` and
        ``rank`` (1 = best, ties share the best rank), ordered by rank.  ``.attrs["by"]`` and
        ``.attrs["group"]`` record the arguments.
    """
    if by not in metrics.columns:
        raise ConfigError(
            f"metric {by!r} is not a column of the metrics table; columns: {list(metrics.columns)}"
        )
    keys = [g for g in group if g in metrics.columns]
    if not keys:
        raise ConfigError(f"none of the group columns {list(group)} is in the metrics table")
    values = pd.to_numeric(metrics[by], errors="coerce")
    df = metrics[keys].astype(str).assign(_v=values)
    agg = df.groupby(keys, sort=False)["_v"].agg(["mean", "std", "count"]).reset_index()
    agg = agg.rename(columns={"mean": f"{by}_mean", "std": f"{by}_std", "count": "n_images"})
    agg["rank"] = agg[f"{by}_mean"].rank(ascending=ascending, method="min").astype("Int64")
    agg = agg.sort_values(["rank", *keys], kind="stable").reset_index(drop=True)
    agg.attrs["by"] = by
    agg.attrs["group"] = keys
    return agg


def plot_ranking(ranking: pd.DataFrame, path: str | Path | None = None):
    """Bar chart of a :func:`rank` table, plus a pipeline × segmenter heat map when both vary.

    The heat map shows, per (pipeline, segmenter) cell, the best mean over the other group
    columns (e.g. the best parameter setting).

    Parameters
    ----------
    ranking : pandas.DataFrame
        Result of :func:`rank`.
    path : str or Path, optional
        PNG written atomically when given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    from .analysis import save_figure

    by = ranking.attrs.get("by") or next(c[:-5] for c in ranking.columns if c.endswith("_mean"))
    keys = ranking.attrs.get("group") or [
        c for c in ranking.columns if c not in (f"{by}_mean", f"{by}_std", "n_images", "rank")
    ]
    mean, std = ranking[f"{by}_mean"].to_numpy(float), ranking[f"{by}_std"].to_numpy(float)
    labels = [" | ".join(str(r[k]) for k in keys) for _, r in ranking.iterrows()]
    heat = (
        "pipeline" in ranking.columns
        and "segmenter" in ranking.columns
        and ranking["pipeline"].nunique() > 1
        and ranking["segmenter"].nunique() > 1
    )
    n = len(ranking)
    fig = Figure(figsize=(11 if heat else 7, max(2.5, 0.35 * n + 1.2)), layout="constrained")
    ax = fig.add_subplot(1, 2 if heat else 1, 1)
    y = np.arange(n)
    ax.barh(y, mean, xerr=np.nan_to_num(std), color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{by} (mean ± sd over images)")
    ax.set_title("ranking")
    if heat:
        hm = ranking.pivot_table(index="pipeline", columns="segmenter", values=f"{by}_mean", aggfunc="max")
        ax2 = fig.add_subplot(1, 2, 2)
        im = ax2.imshow(hm.to_numpy(float), cmap="viridis", aspect="auto")
        ax2.set_xticks(range(hm.shape[1]), [str(c) for c in hm.columns], rotation=45, ha="right", fontsize=8)
        ax2.set_yticks(range(hm.shape[0]), [str(i) for i in hm.index], fontsize=8)
        for (i, j), v in np.ndenumerate(hm.to_numpy(float)):
            if np.isfinite(v):
                ax2.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=7)
        ax2.set_title(f"best {by}: pipeline × segmenter")
        fig.colorbar(im, ax=ax2)
    if path is not None:
        save_figure(fig, path)
    return fig
