"""Cellpose mask reconstruction for one 2D plane, sharing work across a threshold sweep.

Cellpose 3.1.1.2 turns flows into masks in stages (``dynamics.compute_masks`` called by
``dynamics.resize_and_compute_masks``):

1. pixels with ``cellprob > cellprob_threshold`` follow the flows for ``niter`` steps and
   are grouped into masks (``follow_flows`` + ``get_masks_torch``);
2. the flow error of every mask is computed (``metrics.flow_error``: flows recomputed from
   the masks, compared with the network's) and masks with an error above
   ``flow_threshold`` are removed;
3. holes are filled and masks smaller than ``min_size`` removed.

Stage 1 and the flow errors of stage 2 do not depend on ``flow_threshold`` or
``min_size``; they are cached per flow field and ``(cellprob_threshold, niter,
max_size_fraction)``, so a sweep over ``flow_threshold`` x ``min_size`` runs the dynamics
once per ``cellprob_threshold``.  The stages call the library's own functions in the same
order; a test checks the labels equal ``CellposeModel.eval`` for the same parameters.
"""

from __future__ import annotations

import logging

import numpy as np

from .memo import ArrayMemo

__all__ = ["plane_masks", "clear_memo"]

logger = logging.getLogger(__name__)

_MEMO = ArrayMemo()

#: above this many pixels on a GPU, Cellpose moves the flow-error step to the CPU; not cached
_LARGE = 10000 * 10000


def clear_memo() -> None:
    """Forget every cached reconstruction (also dropped when the flows are freed)."""
    _MEMO.clear()


def _dynamics_and_errors(dP, cellprob, cellprob_threshold, niter, max_size_fraction, device):
    """Stage 1 (masks from the flows) and the per-mask flow errors of stage 2."""
    import torch
    from cellpose import metrics
    from cellpose.dynamics import follow_flows, get_masks_torch

    fg = cellprob > cellprob_threshold
    if not fg.sum():
        return None, None
    inds = np.nonzero(fg)
    p_final = follow_flows(dP * fg / 5.0, inds=inds, niter=niter, interp=True, device=device)
    p_final = torch.from_numpy(p_final).to(device, dtype=torch.int) if not torch.is_tensor(p_final) \
        else p_final.int()
    if device.type == "mps":
        p_final = p_final.to(torch.device("cpu"))
    mask = get_masks_torch(p_final, inds, dP.shape[1:], max_size_fraction=max_size_fraction)
    del p_final
    errors = metrics.flow_error(mask, dP, device)[0] if mask.max() > 0 else np.zeros(0)
    return mask, errors


def plane_masks(dP: np.ndarray, cellprob: np.ndarray, *, flow_threshold: float, cellprob_threshold: float,
                min_size: int, max_size_fraction: float, niter: float, device) -> np.ndarray:
    """Masks of one plane, as ``resize_and_compute_masks`` makes them (no resize, 2D flows).

    Parameters
    ----------
    dP : ndarray
        ``(2, Y, X)`` float32 flows (the cache key: pass the same array for a sweep).
    cellprob : ndarray
        ``(Y, X)`` cell-probability logits.
    flow_threshold, cellprob_threshold, min_size, max_size_fraction, niter
        As in ``CellposeModel.eval``.
    device : torch.device

    Returns
    -------
    ndarray
        Masks (uint16, or uint32 above 65535 masks), as Cellpose returns them.
    """
    from cellpose import utils

    if dP.size // 2 > _LARGE and device.type == "cuda":  # Cellpose's own memory fallback applies
        from cellpose.dynamics import compute_masks

        mask = compute_masks(dP, cellprob, niter=niter, cellprob_threshold=cellprob_threshold,
                             flow_threshold=flow_threshold, interp=True, do_3D=False,
                             max_size_fraction=max_size_fraction, device=device)
        return utils.fill_holes_and_remove_small_masks(mask, min_size=min_size)
    stages = _MEMO.for_array(dP)
    key = (float(cellprob_threshold), float(niter), float(max_size_fraction), str(device))
    if key not in stages:
        import warnings

        with warnings.catch_warnings():
            # torch warns on every sparse tensor cellpose builds while following the flows
            warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
            stages[key] = _dynamics_and_errors(dP, cellprob, cellprob_threshold, niter, max_size_fraction,
                                               device)
    else:
        logger.debug("cellpose dynamics reused (cellprob_threshold %s)", cellprob_threshold)
    mask0, errors = stages[key]
    if mask0 is None:
        mask = np.zeros(cellprob.shape, "uint16")
    else:
        mask = mask0.copy()
        if mask.max() > 0 and flow_threshold is not None and flow_threshold > 0:
            bad = 1 + (errors > flow_threshold).nonzero()[0]
            mask[np.isin(mask, bad)] = 0
        if mask.max() < 2**16 and mask.dtype != "uint16":
            mask = mask.astype("uint16")
        if mask.dtype == np.uint32:
            logger.warning("more than 65535 masks in image, masks returned as np.uint32")
    return utils.fill_holes_and_remove_small_masks(mask, min_size=min_size)
