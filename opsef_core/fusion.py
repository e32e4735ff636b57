"""Combining segmentations of several channels (or models) of one image.

Methods (``docs/definitions.md#channel-fusion``):

- **flow averaging** (:func:`flow_average`, default): the Cellpose network runs on every
  channel alone; the flow fields (dY, dX) and cell-probability maps are averaged over the
  channels, and Cellpose's mask reconstruction runs once on the averages
  (:func:`opsef_core.segment.cellpose_backend.masks_from_flows`, the backend's decoder);
- **pixel voting** (:func:`pixel_vote`): foreground where at least ``k`` of ``n`` masks say so
  (``k = ceil(n / 2)``), then instances by :func:`instances_from_mask`;
- **majority voting on objects** (:func:`majority_vote`): an object is kept when a majority
  of the raters have a matching object (IoU ≥ threshold);
- **STAPLE** (:func:`staple`): Warfield et al. 2004, binary expectation–maximisation of each
  rater's sensitivity and specificity and of the consensus probability.

:func:`fusion_table` scores every non-empty channel subset (:func:`channel_power_set`) with
every method against ground truth (F1 at IoU 0.5 by default); it runs the network once per
channel, whatever the number of subsets and methods.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed
from tqdm.auto import tqdm

from .errors import ConfigError, SegmentationError
from .image import Image

__all__ = [
    "flow_average",
    "fuse_flows_for_channels",
    "channel_predictions",
    "pixel_vote",
    "instances_from_mask",
    "majority_vote",
    "staple",
    "channel_power_set",
    "fuse",
    "fusion_table",
    "FUSION_METHODS",
]

logger = logging.getLogger(__name__)

FUSION_METHODS = ("flow_average", "pixel_vote", "majority_vote", "staple")


# ----------------------------------------------------------------------------- flow averaging
def _cellpose_params(params):
    from .segment import get_segmenter

    return get_segmenter("cellpose").params(params)


def flow_average(segmenter_outputs: Sequence[dict], params=None, cellprob_space: str = "logit") -> np.ndarray:
    """Average Cellpose flows and cell probabilities over channels, then decode once.

    The flow fields (dY, dX) are averaged as they are.  Cellpose's ``cellprob`` output is the
    network's logit of the cell probability (``cellprob_threshold`` is a logit too); with
    ``cellprob_space="logit"`` (default) these logits are averaged, as Cellpose itself averages
    network outputs over tiles and test-time augmentations.  With ``"probability"`` the
    logits are turned into probabilities (sigmoid), averaged, and turned back into a logit so
    that ``cellprob_threshold`` keeps its meaning.  The two agree on one channel and differ
    where channels disagree strongly (the logit mean follows the most confident channel).

    Parameters
    ----------
    segmenter_outputs : list of dict
        Cellpose backend predictions (``dP``, ``cellprob``, ``rescale``), one per channel,
        all of the same image and network parameters.
    params : dict or CellposeParams, optional
        Decoding parameters (``flow_threshold``, ``cellprob_threshold``, ``min_size``,
        ``stitch_threshold``, ``do_3D``, ...).
    cellprob_space : {"logit", "probability"}
        Where the cell-probability maps are averaged (see above).

    Returns
    -------
    ndarray of int32
        Label image.

    Raises
    ------
    SegmentationError
        When no output is given or their shapes or rescale factors differ.
    """
    from .segment.cellpose_backend import masks_from_flows

    outs = list(segmenter_outputs)
    if not outs:
        raise SegmentationError("flow_average needs at least one Cellpose prediction")
    shapes = {(o["dP"].shape, o["cellprob"].shape) for o in outs}
    if len(shapes) != 1:
        raise SegmentationError(f"flow_average: predictions differ in shape: {sorted(shapes)}")
    rescales = [np.asarray(o.get("rescale", 1.0))[()] for o in outs]
    if not np.allclose(np.asarray(rescales, dtype=np.float64), float(rescales[0])):
        raise SegmentationError(f"flow_average: predictions made at different scales {rescales}")
    if cellprob_space not in ("logit", "probability"):
        raise ConfigError(f"flow_average: cellprob_space must be 'logit' or 'probability', not {cellprob_space!r}")
    p = _cellpose_params(params)
    dP = np.mean([np.asarray(o["dP"], np.float32) for o in outs], axis=0, dtype=np.float32)
    logits = [np.asarray(o["cellprob"], np.float32) for o in outs]
    if cellprob_space == "logit":
        cellprob = np.mean(logits, axis=0, dtype=np.float32)
    else:
        from scipy.special import expit, logit

        prob = np.mean([expit(x.astype(np.float64)) for x in logits], axis=0)
        eps = 1e-7
        cellprob = logit(np.clip(prob, eps, 1 - eps)).astype(np.float32)
    from .segment.cellpose_backend import _device

    return masks_from_flows(dP, cellprob, rescale=rescales[0], flow_threshold=p.flow_threshold,
                            cellprob_threshold=p.cellprob_threshold, min_size=p.min_size,
                            max_size_fraction=p.max_size_fraction, niter=p.niter, do_3D=p.do_3D,
                            stitch_threshold=p.stitch_threshold, device=_device(p.device))


def channel_predictions(image: Image, channels: Sequence[int | str], params=None,
                        cache: dict | None = None) -> dict[int, dict]:
    """Cellpose network pass on each channel alone (``channel=c``, no nuclear channel).

    Parameters
    ----------
    image : Image
        Image with a C axis.
    channels : list of int or str
        Channels to run.
    params : dict or CellposeParams, optional
        Backend parameters (``channel``/``nuclear_channel`` are replaced per channel).
    cache : dict, optional
        Per-image cache of predictions (keyed by channel index and network key); pass the
        same dict for repeated calls on the same image to run the network once per channel.

    Returns
    -------
    dict
        ``{channel index: prediction}``.
    """
    from .segment import get_segmenter

    seg = get_segmenter("cellpose")
    base = seg.params(params).model_dump()
    out = {}
    for c in channels:
        ci = image.channel_index(c)
        p = seg.params({**base, "channel": ci, "nuclear_channel": None})
        key = (ci, seg.network_key(p))
        if cache is not None and key in cache:
            out[ci] = cache[key]
            continue
        pred = seg.predict(image, p)
        if cache is not None:
            cache[key] = pred
        out[ci] = pred
    return out


def fuse_flows_for_channels(image: Image, channels: Sequence[int | str], params=None,
                            cache: dict | None = None) -> np.ndarray:
    """Flow-averaging fusion of ``channels`` of ``image`` (network once per channel, cached).

    Parameters
    ----------
    image : Image
        Image with a C axis.
    channels : list of int or str
        The channel subset to fuse.
    params : dict or CellposeParams, optional
        Cellpose parameters (model, diameter, thresholds, ...).
    cache : dict, optional
        See :func:`channel_predictions`.

    Returns
    -------
    ndarray of int32
        Label image.
    """
    if not channels:
        raise ConfigError("fuse_flows_for_channels: no channel given")
    preds = channel_predictions(image, channels, params, cache)
    return flow_average(list(preds.values()), params)


# ----------------------------------------------------------------------------- voting
def _stack_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    arrs = [np.asarray(m) for m in masks]
    if not arrs:
        raise SegmentationError("no masks to fuse")
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise SegmentationError(f"masks to fuse differ in shape: {sorted(shapes)}")
    return np.stack([a > 0 for a in arrs])


def pixel_vote(masks: Sequence[np.ndarray], k: int | None = None) -> np.ndarray:
    """Foreground where at least ``k`` of the ``n`` masks (or label images) are foreground.

    Parameters
    ----------
    masks : list of ndarray
        Binary masks or label images (foreground = non-zero), same shape.
    k : int, optional
        Votes needed; default ``ceil(n / 2)``.

    Returns
    -------
    ndarray of bool
    """
    stack = _stack_masks(masks)
    n = stack.shape[0]
    k = math.ceil(n / 2) if k is None else int(k)
    if not 1 <= k <= n:
        raise ConfigError(f"pixel_vote: k must lie in 1..{n}, got {k}")
    return stack.sum(axis=0) >= k


def instances_from_mask(mask: np.ndarray, reference_labels: np.ndarray | None = None,
                        min_distance: int = 5, min_size: int = 15) -> np.ndarray:
    """Split a binary consensus mask into instances.

    With ``reference_labels`` (e.g. the best single-channel segmentation), the reference
    objects inside the mask are the seeds of a watershed on the distance transform,
    restricted to the mask; mask parts no seed reaches become objects of their own.
    Without, seeds are the local maxima of the distance transform (``min_distance`` apart).

    Parameters
    ----------
    mask : ndarray of bool
        Consensus foreground (2D or 3D).
    reference_labels : ndarray of int, optional
        Labels with the mask's shape.
    min_distance : int
        Minimum seed separation (pixels) for the distance-transform seeds.
    min_size : int
        Objects smaller than this are removed.

    Returns
    -------
    ndarray of int32
        Labels 1..n (sequential), 0 outside the mask.
    """
    mask = np.asarray(mask) > 0
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    dist = ndi.distance_transform_edt(mask)
    if reference_labels is not None:
        ref = np.asarray(reference_labels)
        if ref.shape != mask.shape:
            raise SegmentationError(f"reference labels of shape {ref.shape} do not fit the mask {mask.shape}")
        markers = np.where(mask, ref, 0).astype(np.int64)
    else:
        cc, _ = ndi.label(mask)
        peaks = peak_local_max(dist, min_distance=min_distance, labels=cc, exclude_border=False)
        markers = np.zeros(mask.shape, np.int64)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    rest, n_rest = ndi.label(mask & (labels == 0))
    if n_rest:
        labels = np.where(rest > 0, rest + labels.max(), labels)
    if min_size > 0:
        counts = np.bincount(labels.ravel())
        small = np.flatnonzero(counts < min_size)
        labels[np.isin(labels, small[small > 0])] = 0
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32))[0].astype(np.int32)


def majority_vote(label_list: Sequence[np.ndarray], iou_threshold: float = 0.5,
                  min_votes: int | None = None) -> np.ndarray:
    """Object-level majority voting.

    Every object of every rater looks for its best-matching object (IoU ≥ ``iou_threshold``)
    in each other rater; it is kept when the number of raters having it (itself included)
    reaches ``min_votes`` (default: a majority, ``n // 2 + 1``).  Raters are visited in
    order and an object already counted in a kept group is not used again.  The consensus
    object is the pixel majority of its group's members (at least half of them).

    Parameters
    ----------
    label_list : list of ndarray of int
        Label images of the raters (same shape).
    iou_threshold : float
        Match threshold.
    min_votes : int, optional
        Raters needed to keep an object.

    Returns
    -------
    ndarray of int32
        Consensus label image (objects do not overlap; earlier groups win contested pixels).
    """
    from .evaluate import overlap_matrix

    labs = [np.asarray(lab) for lab in label_list]
    _stack_masks(labs)  # shape check
    n = len(labs)
    need = n // 2 + 1 if min_votes is None else int(min_votes)
    if not 1 <= need <= n:
        raise ConfigError(f"majority_vote: min_votes must lie in 1..{n}, got {need}")
    # pairwise best matches: best[(a, b)][label in a] = (label in b) with IoU >= threshold
    best: dict[tuple[int, int], dict[int, int]] = {}
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            ov = overlap_matrix(labs[a], labs[b])
            s = ov.scores("iou").tocsr()
            m = {}
            for i in range(s.shape[0]):
                row = s.getrow(i)
                if row.nnz:
                    j = row.indices[np.argmax(row.data)]
                    if row.data.max() >= iou_threshold:
                        m[int(ov.gt_labels[i])] = int(ov.pred_labels[j])
            best[(a, b)] = m
    used = [set() for _ in range(n)]
    out = np.zeros(labs[0].shape, np.int32)
    nxt = 1
    for a in range(n):
        for lab in np.unique(labs[a]):
            lab = int(lab)
            if lab == 0 or lab in used[a]:
                continue
            group = {a: lab}
            for b in range(n):
                if b != a:
                    m = best[(a, b)].get(lab)
                    if m is not None and m not in used[b]:
                        group[b] = m
            if len(group) < need:
                continue
            votes = sum((labs[r] == g).astype(np.int32) for r, g in group.items())
            obj = (votes >= math.ceil(len(group) / 2)) & (out == 0)
            if obj.any():
                out[obj] = nxt
                nxt += 1
            for r, g in group.items():
                used[r].add(g)
    return out


def staple(masks: Sequence[np.ndarray], max_iter: int = 100, tol: float = 1e-6,
           prior: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STAPLE for binary masks (Warfield, Zou & Wells 2004), by expectation–maximisation.

    E-step: ``W = f·Π p_j^D (1-p_j)^(1-D) / (that + (1-f)·Π q_j^(1-D) (1-q_j)^D)``;
    M-step: ``p_j = Σ W D_j / Σ W``, ``q_j = Σ (1-W)(1-D_j) / Σ (1-W)``; the prior ``f`` is
    the mean foreground fraction of the raters (fixed).  Starts from ``p = q = 0.99`` and
    stops when no sensitivity or specificity changes by more than ``tol``.

    Parameters
    ----------
    masks : list of ndarray
        Binary masks or label images (foreground = non-zero) of the raters, same shape.
    max_iter : int
        Maximum EM iterations.
    tol : float
        Convergence tolerance.
    prior : float, optional
        Foreground prior; default the mean foreground fraction.

    Returns
    -------
    probability : ndarray of float64
        Posterior probability that each pixel is foreground (``>= 0.5`` gives the consensus).
    sensitivities, specificities : ndarray of float64
        One value per rater.
    """
    D = _stack_masks(masks).reshape(len(masks), -1).astype(np.float64)
    n, npix = D.shape
    f = float(D.mean()) if prior is None else float(prior)
    eps = 1e-10
    f = min(max(f, eps), 1 - eps)
    p = np.full(n, 0.99)
    q = np.full(n, 0.99)
    W = np.zeros(npix)
    for it in range(max_iter):
        lp, l1p = np.log(np.clip(p, eps, 1 - eps)), np.log(np.clip(1 - p, eps, 1 - eps))
        lq, l1q = np.log(np.clip(q, eps, 1 - eps)), np.log(np.clip(1 - q, eps, 1 - eps))
        la = math.log(f) + lp @ D + l1p @ (1 - D)
        lb = math.log(1 - f) + lq @ (1 - D) + l1q @ D
        W = 1.0 / (1.0 + np.exp(np.clip(lb - la, -700, 700)))
        sw, sn = W.sum(), (1 - W).sum()
        p_new = (D @ W) / sw if sw > 0 else np.ones(n)
        q_new = ((1 - D) @ (1 - W)) / sn if sn > 0 else np.ones(n)
        delta = max(np.abs(p_new - p).max(), np.abs(q_new - q).max())
        p, q = p_new, q_new
        if delta < tol:
            logger.debug("STAPLE converged after %d iterations", it + 1)
            break
    return W.reshape(np.asarray(masks[0]).shape), p, q


# ----------------------------------------------------------------------------- tables
def channel_power_set(channels: Sequence) -> list[tuple]:
    """All non-empty subsets of ``channels`` (by size, then in the given order)."""
    ch = list(channels)
    if len(set(map(str, ch))) != len(ch):
        raise ConfigError(f"channels repeat: {ch}")
    return [c for r in range(1, len(ch) + 1) for c in itertools.combinations(ch, r)]


def _f1_at_05(gt: np.ndarray, pred: np.ndarray) -> float:
    from .evaluate import match

    return float(match(gt, pred, threshold=0.5).f1)


def _best_reference(labels: dict, mask: np.ndarray) -> np.ndarray:
    """The single-channel labels whose foreground agrees best (pixel IoU) with ``mask``."""
    def iou(lab):
        fg = lab > 0
        union = np.logical_or(fg, mask).sum()
        return np.logical_and(fg, mask).sum() / union if union else 0.0

    return max(labels.values(), key=iou)


def fuse(predictions: dict, channels: Sequence[int], method: str, params=None,
         single: dict | None = None) -> np.ndarray:
    """Fuse the per-channel Cellpose outputs of ``channels`` into one label image.

    Parameters
    ----------
    predictions : dict
        Channel index -> Cellpose network output, from :func:`channel_predictions`.
    channels : sequence of int
        The channel subset to combine (keys of ``predictions``).
    method : str
        ``flow_average`` (mean flows and cell probability, then Cellpose's mask
        reconstruction), ``pixel_vote`` (foreground where at least half of the channels
        agree), ``majority_vote`` (objects matched across channels at IoU 0.5, kept when
        a majority has them) or ``staple`` (STAPLE posterior >= 0.5).  Pixel vote and
        STAPLE give a mask; its instances come from the single-channel labels agreeing
        best with it (:func:`instances_from_mask`).
    params : dict or CellposeParams, optional
        Cellpose decoding parameters (thresholds, ``min_size``).
    single : dict, optional
        Channel index -> single-channel labels already decoded (reused, not recomputed).

    Returns
    -------
    ndarray of int32
        Fused instance labels.
    """
    if method not in FUSION_METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; use {list(FUSION_METHODS)}")
    p = _cellpose_params(params)
    if method == "flow_average":
        return flow_average([predictions[c] for c in channels], p)
    single = {} if single is None else single
    labs = {c: single[c] if c in single else flow_average([predictions[c]], p) for c in channels}
    if method == "majority_vote":
        return majority_vote(list(labs.values()))
    if method == "pixel_vote":
        mask = pixel_vote(list(labs.values()))
    else:
        mask = staple(list(labs.values()))[0] >= 0.5
    return instances_from_mask(mask, _best_reference(labs, mask), min_size=max(p.min_size, 0))


def fusion_table(
    image: Image,
    gt: np.ndarray,
    channels: Sequence[int | str] | None = None,
    methods: Sequence[str] = FUSION_METHODS,
    params=None,
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
    cache: dict | None = None,
) -> pd.DataFrame:
    """Score every channel subset with every fusion method against ground truth.

    Parameters
    ----------
    image : Image
        Multichannel image (C axis).
    gt : ndarray of int
        Truth labels with the image's spatial shape.
    channels : list of int or str, optional
        Channels to combine (default: all).
    methods : list of str
        Among ``flow_average``, ``pixel_vote``, ``majority_vote``, ``staple``.  The voting
        methods and STAPLE combine the single-channel Cellpose segmentations; pixel vote
        and STAPLE (posterior ≥ 0.5) get instances from the single-channel labels agreeing
        best with the consensus mask (:func:`instances_from_mask`).
    params : dict or CellposeParams, optional
        Cellpose parameters.
    metric : callable, optional
        ``metric(gt, pred) -> float``; default F1 at IoU 0.5 (:func:`opsef_core.evaluate.match`).
    cache : dict, optional
        Per-image prediction cache (see :func:`channel_predictions`).

    Returns
    -------
    DataFrame
        Index: channel subsets (names joined with ``+``); columns: methods.
    """
    bad = [m for m in methods if m not in FUSION_METHODS]
    if bad:
        raise ConfigError(f"unknown fusion method(s) {bad}; use {list(FUSION_METHODS)}")
    if "C" not in image.axes:
        raise SegmentationError("fusion_table needs an image with a C axis", image.source)
    metric = metric or _f1_at_05
    chans = list(range(image.n_channels)) if channels is None else [image.channel_index(c) for c in channels]
    cache = {} if cache is None else cache
    preds = channel_predictions(image, chans, params, cache)
    p = _cellpose_params(params)
    single = {c: flow_average([preds[c]], p) for c in chans}
    rows, index = [], []
    for subset in tqdm(channel_power_set(chans), desc="channel subsets", leave=False):
        row = {m: metric(gt, fuse(preds, subset, m, p, single)) for m in methods}
        rows.append(row)
        index.append("+".join(image.channel_names[c] for c in subset))
    return pd.DataFrame(rows, index=pd.Index(index, name="channels"), columns=list(methods))
