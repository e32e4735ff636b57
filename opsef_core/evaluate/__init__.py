"""Evaluation of label images against ground truth.

Definitions follow ``docs/definitions.md#instance-matching`` (and ``stardist.matching`` for instance
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


from .matching import (
    DEFAULT_THRESHOLDS,
    Matching,
    Overlap,
    aji,
    match,
    matching_table,
    overlap_blockwise,
    overlap_matrix,
    pixel_metrics,
    pool,
)
from .ranking import plot_ranking, rank
from .report import evaluate_folders, format_evaluation, image_metrics, image_metrics_blockwise
from .single_object import spheroid_metrics, spheroid_summary

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Overlap",
    "Matching",
    "overlap_matrix",
    "overlap_blockwise",
    "match",
    "matching_table",
    "pool",
    "image_metrics",
    "image_metrics_blockwise",
    "aji",
    "pixel_metrics",
    "spheroid_metrics",
    "spheroid_summary",
    "evaluate_folders",
    "format_evaluation",
    "rank",
    "plot_ranking",
]

