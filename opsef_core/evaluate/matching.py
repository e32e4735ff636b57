"""Instance matching (Hungarian on IoU / IoT / IoP), the aggregated Jaccard index and pixel metrics.

Definitions: see the package docstring of :mod:`opsef_core.evaluate`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from ..errors import AxesError, ConfigError, InputFileError
from ..measure import check_labels

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
        When an array is not a label image (:func:`opsef_core.measure.check_labels`: integral
        floats are accepted; fractions, NaN and negative values are not).
    """
    gt = check_labels(gt, ndim=None, what="ground-truth labels")
    pred = check_labels(pred, ndim=None, what="predicted labels")
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


def overlap_blockwise(gt, pred, *, block_pixels: int = 1 << 22) -> tuple[Overlap, dict]:
    """:func:`overlap_matrix` and the foreground pixel counts of two label images read block by block.

    For label images too large to hold twice (a streamed run's OME-Zarr labels against its
    ground truth): slabs along the first axis of about ``block_pixels`` pixels are read from
    both (anything that slices: zarr, dask, memmap, numpy), their (truth label, predicted label)
    pairs counted, and the counts summed.  The result equals ``overlap_matrix(gt, pred)``
    exactly (tested), so every metric computed from it is the whole-image metric.

    Parameters
    ----------
    gt, pred : array-like of int
        Label images of the same shape.
    block_pixels : int
        About how many pixels each slab holds (at least one row / plane).

    Returns
    -------
    (Overlap, dict)
        The overlap and ``{"tp", "fp", "fn"}`` foreground pixel counts (:func:`pixel_metrics`).
    """
    shape = tuple(gt.shape)
    if shape != tuple(pred.shape):
        raise AxesError(f"ground truth has shape {shape} but prediction has shape {tuple(pred.shape)}")
    per_row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rows = max(1, int(block_pixels) // max(1, per_row))
    codes, counts = [], []
    for r0 in range(0, shape[0] if shape else 0, rows):
        g = check_labels(np.asarray(gt[r0:r0 + rows]), ndim=None, what="ground-truth labels").ravel()
        p = check_labels(np.asarray(pred[r0:r0 + rows]), ndim=None, what="predicted labels").ravel()
        if (g.size and int(g.max()) >= 1 << 32) or (p.size and int(p.max()) >= 1 << 32):
            raise InputFileError(f"labels above 2**32 - 1 in rows {r0}..{r0 + rows}: relabel them first")
        c, n = np.unique(g.astype(np.uint64) << np.uint64(32) | p.astype(np.uint64), return_counts=True)
        codes.append(c)
        counts.append(n)
    if codes:
        c, inv = np.unique(np.concatenate(codes), return_inverse=True)
        n = np.bincount(inv, weights=np.concatenate(counts)).astype(np.int64)
    else:
        c, n = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    g_lab = (c >> np.uint64(32)).astype(np.int64)
    p_lab = (c & np.uint64(0xFFFFFFFF)).astype(np.int64)
    gl, g_inv = np.unique(g_lab, return_inverse=True)
    pl, p_inv = np.unique(p_lab, return_inverse=True)
    gs = np.bincount(g_inv, weights=n, minlength=gl.size).astype(np.int64)
    ps = np.bincount(p_inv, weights=n, minlength=pl.size).astype(np.int64)
    g0 = 1 if gl.size and gl[0] == 0 else 0  # drop background
    p0 = 1 if pl.size and pl[0] == 0 else 0
    both = (g_lab > 0) & (p_lab > 0)
    inter = sp.csr_matrix((n[both], (g_inv[both] - g0, p_inv[both] - p0)), shape=(gl.size - g0, pl.size - p0))
    ov = Overlap(gl[g0:], pl[p0:], gs[g0:], ps[p0:], inter)
    tp = int(n[both].sum())
    px = {"tp": tp, "fp": int(n[(g_lab == 0) & (p_lab > 0)].sum()), "fn": int(n[(g_lab > 0) & (p_lab == 0)].sum())}
    return ov, px


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
    return pixel_rates(int(np.count_nonzero(g & p)), int(np.count_nonzero(~g & p)), int(np.count_nonzero(g & ~p)))


def pixel_rates(tp: int, fp: int, fn: int) -> dict:
    """Pixel precision, recall, F1 and IoU from counts (as :func:`pixel_metrics` defines them)."""
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


