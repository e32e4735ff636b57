"""StarDist decoding that shares one non-maximum suppression across a ``prob_thresh`` sweep.

StarDist's NMS sorts the candidates (grid points with ``prob > prob_thresh``, away from a
``b``-pixel border) by descending probability and walks them greedily: a candidate is kept
unless a kept, higher-ranked candidate overlaps it by more than ``nms_thresh``.  Whether a
candidate is kept therefore depends only on the candidates ranked above it.  The candidates
of a higher threshold ``t2 > t1`` are the first ones of the ``t1`` ranking, so their keep/drop
decisions are those made at ``t1``: one NMS at the lowest threshold of a sweep serves every
higher threshold with the same ``nms_thresh``, and each further setting costs a cut of the
ranking.  In 2D the rendering is shared the same way (see :func:`_render_2d`).

The ranking at ``t2`` is recomputed exactly as StarDist does (``argsort`` of the candidates'
probabilities) and compared with the cut of each cached ranking; when none fits (a lower
threshold than any before, or tied probabilities that the sort ranks differently in the
smaller candidate set, which real network outputs do have), the NMS is run again and its
result cached too.  So the labels are always those of ``predict_instances`` with the same
thresholds (a test checks it in 2D and 3D), and a sweep saves whatever the ties allow.

This module re-states the dense-prediction part of stardist 0.9.2's
``StarDist2D/3D._instances_from_prediction`` and ``non_maximum_suppression(_3d)`` using the
library's own NMS kernels and renderers; it is the only place that depends on that structure.
"""

from __future__ import annotations

import logging

import numpy as np

from .memo import ArrayMemo

__all__ = ["decode_dense", "clear_memo"]

logger = logging.getLogger(__name__)

#: border (grid pixels) excluded from the candidates, StarDist's default ``b``
BORDER = 2

_MEMO = ArrayMemo()


def clear_memo() -> None:
    """Forget every cached NMS (they are also dropped when their probability map is freed)."""
    _MEMO.clear()


def _above_threshold(prob: np.ndarray, prob_thresh: float, border: int) -> np.ndarray:
    """Pixels with ``prob > prob_thresh`` at least ``border`` pixels from every edge of the
    (grid-subsampled) probability map: stardist 0.9.2's candidate rule (``nms._ind_prob_thresh``)."""
    mask = prob > prob_thresh
    if border > 0:
        inside = np.zeros_like(mask)
        inside[(slice(border, -border),) * prob.ndim] = True
        mask &= inside
    return mask


def _ranking(prob: np.ndarray, dist: np.ndarray, prob_thresh: float, grid) -> tuple:
    """Candidates above ``prob_thresh`` ranked as StarDist ranks them (points in image pixels)."""
    mask = _above_threshold(prob, prob_thresh, BORDER)
    points = np.stack(np.where(mask), axis=1)
    scores = prob[mask]
    order = np.argsort(scores)[::-1]
    points = points[order] * np.asarray(grid).reshape((1, prob.ndim))
    return points, scores[order], dist[mask][order]


def _nms_inds(points, scores, dist, nms_thresh: float, rays) -> np.ndarray:
    from stardist.nms import non_maximum_suppression_3d_inds, non_maximum_suppression_inds

    if rays is None:
        return non_maximum_suppression_inds(dist, points.astype(np.int32, copy=False), scores=scores,
                                            use_bbox=True, use_kdtree=True, thresh=nms_thresh, verbose=False)
    return non_maximum_suppression_3d_inds(dist, points, rays=rays, scores=scores, thresh=nms_thresh,
                                           use_bbox=True, use_kdtree=True, verbose=False)


def kept_candidates(prob: np.ndarray, dist: np.ndarray, prob_thresh: float, nms_thresh: float, grid,
                    rays=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates StarDist's NMS keeps, reusing an NMS made at a lower ``prob_thresh``.

    Parameters
    ----------
    prob, dist : ndarray
        Network output at grid resolution (``prob`` is the cache key: pass the same array).
    prob_thresh, nms_thresh : float
    grid : tuple of int
        The model's grid.
    rays : stardist Rays, optional
        The 3D model's rays (None for 2D).

    Returns
    -------
    (points, prob, dist)
        As ``stardist.nms.non_maximum_suppression(_3d)`` returns them.
    """
    points, scores, dists, _, _ = _kept(prob, dist, prob_thresh, nms_thresh, grid, rays)
    return points, scores, dists


def _kept(prob, dist, prob_thresh, nms_thresh, grid, rays):
    """:func:`kept_candidates` plus the cache entry used and how many of its kept candidates remain."""
    memo = _MEMO.for_array(prob)
    key = (float(nms_thresh), None if rays is None else id(rays))
    done = memo.setdefault(key, [])  # NMS results at the thresholds run so far, lowest first
    points, scores, dists = _ranking(prob, dist, prob_thresh, grid)
    n = len(scores)
    for cached in done:
        if prob_thresh >= cached["t"] and len(cached["points"]) >= n \
                and np.array_equal(cached["points"][:n], points):
            inds = cached["inds"][:n]
            logger.debug("stardist NMS reused (prob_thresh %.3f from %.3f)", prob_thresh, cached["t"])
            return points[inds], scores[inds], dists[inds], cached, int(inds.sum())
    if done:
        logger.debug("stardist NMS run again at prob_thresh %.3f (lower than before, or tied "
                     "probabilities ranked differently)", prob_thresh)
    inds = np.asarray(_nms_inds(points, scores, dists, nms_thresh, rays), bool)
    entry = {"t": float(prob_thresh), "points": points, "inds": inds, "scores": scores, "dists": dists,
             "render": {}}
    done.append(entry)
    done.sort(key=lambda c: c["t"])
    return points[inds], scores[inds], dists[inds], entry, int(inds.sum())


def _render_2d(entry: dict, n_kept: int, shape: tuple, rescale: tuple) -> np.ndarray:
    """``polygons_to_label`` of the first ``n_kept`` kept polygons of a cached NMS.

    StarDist labels kept polygon ``j`` (in ranking order) ``j + 1`` and paints in ascending
    probability, so the polygons kept at a higher threshold (the first ``n_kept``) are painted
    last and keep their label values: their rendering is the full rendering with every label
    above ``n_kept`` set to 0.  The full rendering is made once per entry, shape and scale.
    """
    from stardist.geometry import polygons_to_label

    key = (tuple(shape), tuple(rescale))
    full = entry["render"].get(key)
    if full is None:
        inds = entry["inds"]
        points = entry["points"][inds] * np.array(rescale).reshape(1, 2) if rescale != (1, 1) \
            else entry["points"][inds]
        full = polygons_to_label(entry["dists"][inds], points, prob=entry["scores"][inds], shape=key[0],
                                 scale_dist=rescale)
        entry["render"][key] = full
    if n_kept == int(entry["inds"].sum()):
        return full.copy()
    return np.where(full <= n_kept, full, 0).astype(full.dtype, copy=False)


def decode_dense(model, shape: tuple, prob: np.ndarray, dist: np.ndarray, prob_thresh: float | None,
                 nms_thresh: float | None, scale: dict | None = None) -> tuple[np.ndarray, dict]:
    """Labels of a dense StarDist prediction, as ``model._instances_from_prediction`` gives them.

    Parameters
    ----------
    model : StarDist2D or StarDist3D
    shape : tuple
        Spatial shape of the label image (the unscaled input).
    prob, dist : ndarray
        Network output (grid resolution, possibly of a rescaled input).
    prob_thresh, nms_thresh : float or None
        None = the model's thresholds.
    scale : dict, optional
        ``{"Y": sy, "X": sx[, "Z": sz]}`` when the input was rescaled before the pass.

    Returns
    -------
    (ndarray, dict)
        Labels and ``points``/``prob`` (and ``dist``) of the kept objects.
    """
    if prob_thresh is None:
        prob_thresh = model.thresholds.prob
    if nms_thresh is None:
        nms_thresh = model.thresholds.nms
    n_dim = int(model.config.n_dim)
    grid = tuple(model.config.grid)
    if n_dim == 2:
        points, probi, disti, entry, n_kept = _kept(prob, dist, prob_thresh, nms_thresh, grid, None)
        if scale is not None:
            if not (isinstance(scale, dict) and "X" in scale and "Y" in scale):
                raise ValueError("scale must be a dictionary with entries for 'X' and 'Y'")
            rescale = (1 / scale["Y"], 1 / scale["X"])
            points = points * np.array(rescale).reshape(1, 2)
        else:
            rescale = (1, 1)
        labels = _render_2d(entry, n_kept, tuple(shape), rescale)
        return labels, {"points": points, "prob": probi}

    from stardist.geometry import polyhedron_to_label
    from stardist.matching import relabel_sequential  # the one StarDist3D uses

    rays = _rays(model)
    points, probi, disti = kept_candidates(prob, dist, prob_thresh, nms_thresh, grid, rays=rays)
    if scale is not None:
        if not (isinstance(scale, dict) and "X" in scale and "Y" in scale and "Z" in scale):
            raise ValueError("scale must be a dictionary with entries for 'X', 'Y', and 'Z'")
        rescale = (1 / scale["Z"], 1 / scale["Y"], 1 / scale["X"])
        points = points * np.array(rescale).reshape(1, 3)
        rays = rays.copy(scale=rescale)
    labels = polyhedron_to_label(disti, points, rays=rays, prob=probi, shape=tuple(shape), overlap_label=None,
                                 verbose=False)
    labels, _, _ = relabel_sequential(labels)
    return labels, {"points": points, "prob": probi, "dist": disti}


def _rays(model):
    """The model's rays, built once per model (the NMS cache is keyed by their identity)."""
    rays = getattr(model, "_opsef_rays", None)
    if rays is None:
        from stardist.rays3d import rays_from_json

        rays = rays_from_json(model.config.rays_json)
        model._opsef_rays = rays
    return rays
