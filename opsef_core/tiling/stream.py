"""A preprocessing pipeline applied tile by tile to a lazily read image, with the whole-image result.

:class:`TiledPipeline` reads a region of a (lazy) spatial image plus the *halo* the pipeline's
steps need (each step declares it: :meth:`opsef_core.preprocess.registry.StepInfo.tile_halo`;
filters: their kernel radius, 4σ for a Gaussian; openings and the rolling ball: twice their
radius), applies the steps to that block and crops the halo off.  Away from the image's border
the block holds every pixel the steps read, and at the border it reaches the border, so every
pixel of the region equals the same pixel of the pipeline applied to the whole image.  Halos
add up along the pipeline.

Steps whose output depends on the whole image are of two kinds:

* a *global statistic* (``normalize_percentile``): its percentiles are computed once per image,
  from the pipeline's output up to that step over every tile (:meth:`TiledPipeline.sample`,
  strided on the image's own grid when the image has more than ``max_sample`` pixels), and fixed;
  the step is then pointwise.  The limits are recorded (:attr:`TiledPipeline.statistics`);
* anything else (CLAHE's tile grid, min-max ``gamma``, a change of grid such as ``rescale``,
  ``bin`` or ``z_project``): :class:`~opsef_core.errors.ConfigError` naming the step.

See ``docs/definitions.md#tiled-runs``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..image import Image

__all__ = ["TiledPipeline", "read_region", "sample_stride"]

logger = logging.getLogger(__name__)


def read_region(data: Any, index: tuple) -> np.ndarray:
    """``data[index]`` as a numpy array.  A dask array is computed without graph optimisation
    (for one region of a ``from_zarr`` array that is 3-4x faster than ``np.asarray``), in
    the caller's scheduler."""
    part = data[index]
    if hasattr(part, "dask") and hasattr(part, "compute"):
        return np.asarray(part.compute(optimize_graph=False))
    return np.asarray(part)


def sample_stride(shape: tuple, max_pixels: int) -> int:
    """The smallest stride ``s`` (the same on every axis) with at most ``max_pixels`` pixels in
    ``data[::s, ::s, ...]``."""
    s = 1
    while int(np.prod([-(-n // s) for n in shape])) > max_pixels:
        s += 1
    return s


class TiledPipeline:
    """A preprocessing pipeline run on regions of a lazily read spatial (``YX``/``ZYX``) image.

    Parameters
    ----------
    image : Image
        Spatial image (no T or C axis); its data may be numpy, memmap, zarr or dask.
    pipeline : Pipeline, dict or None
        The steps (``None`` or an empty pipeline: regions are read as they are).
    max_sample : int
        Largest number of pixels a whole-image statistic is taken of (a stride on the image's
        grid above it).

    Raises
    ------
    ConfigError
        A step whose output depends on the whole image in a way that cannot be fixed once.
    """

    def __init__(self, image: Image, pipeline: Any = None, *, max_sample: int = 4_000_000):
        from ..preprocess import Pipeline
        from ..preprocess.registry import validate_params

        if pipeline is not None and not isinstance(pipeline, Pipeline):
            pipeline = Pipeline.from_dict(pipeline)
        self.image = image
        self.name = pipeline.name if pipeline is not None else "raw"
        self.shape = tuple(int(n) for n in image.data.shape)
        self.max_sample = int(max_sample)
        self.steps = []
        for i, step in enumerate(pipeline.steps if pipeline is not None else ()):
            where = f"pipeline {self.name!r}, steps[{i}] ({step.name!r})"
            info = step.info(where)
            self.steps.append((info, validate_params(info, step.params, where), where))
        self.step_halos = self._halos()
        self.halo = tuple(int(sum(h[d] for h in self.step_halos)) for d in range(len(self.shape)))
        #: fixed whole-image statistics, per step index: {"step", "percentiles", "limits", "stride"}
        self.statistics: dict[int, dict] = {}
        self._limits: dict[int, tuple[float, float]] = {}
        #: the last untransformed sample: (steps applied, stride, pixels); later samples that only add
        #: pointwise steps (zero halo) are derived from it instead of preprocessing every tile again
        self._sample: tuple[int, int, np.ndarray] | None = None

    # ------------------------------------------------------------------ halos
    def _halos(self) -> list[tuple]:
        """Each step's halo, following the dtype through the pipeline on a small probe block."""
        spacing = tuple(float(s) for s in self.image.spacing)
        probe_shape = tuple(min(n, 64 if (len(self.shape) == 3 and d == 0) else 128)
                            for d, n in enumerate(self.shape))
        probe = self.image.with_data(read_region(self.image.data, tuple(slice(0, n) for n in probe_shape)))
        halos = []
        for info, params, where in self.steps:
            h = info.tile_halo(params, spacing, probe.data.dtype)
            if h is None:
                raise ConfigError(
                    f"{where}: its output depends on the whole image (not on a neighbourhood), so it cannot "
                    "run tile by tile; use a step with a local neighbourhood, or drop execution.tiling / "
                    "outputs.labels_format 'ome-zarr' for this pipeline", self.image.source)
            halos.append(h)
            try:  # the next step's input dtype
                probe = probe if info.global_stat else info.func(probe, params)
            except Exception:  # noqa: BLE001 - a probe too small for the filter: keep the dtype
                logger.debug("%s: probe block too small; assuming the dtype is kept", where)
        return halos

    # ------------------------------------------------------------------ blocks
    def _extended(self, region: tuple[slice, ...], halo: tuple) -> tuple[slice, ...]:
        return tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(region, halo, self.shape))

    def block(self, region: tuple[slice, ...], *, upto: int | None = None, margin: tuple | None = None) -> np.ndarray:
        """The pipeline's output on ``region`` (equal to the whole-image result there).

        Parameters
        ----------
        region : tuple of slice
            One slice per spatial axis (steps of 1).
        upto : int, optional
            Apply only the first ``upto`` steps (the input of step ``upto``).
        margin : tuple of int, optional
            Extra pixels per axis kept around the region (clamped at the image border); the
            returned block then covers ``region`` grown by ``margin``.
        """
        steps = self.steps if upto is None else self.steps[:upto]
        halos = self.step_halos if upto is None else self.step_halos[:upto]
        margin = tuple(margin) if margin is not None else (0,) * len(self.shape)
        want = self._extended(region, margin)
        total = tuple(m + sum(h[d] for h in halos) for d, m in enumerate(margin))
        ext = self._extended(region, total)
        img = self.image.with_data(read_region(self.image.data, ext))
        for k, (info, params, where) in enumerate(steps):
            if info.global_stat:
                img = img.with_data(self._fixed(k, img.data, params))
                continue
            try:
                img = info.func(img, params)
            except ConfigError as exc:
                raise ConfigError(f"{where} on a tile {tuple(s.stop - s.start for s in ext)}: {exc.message}",
                                  self.image.source) from None
        crop = tuple(slice(w.start - e.start, w.stop - e.start) for w, e in zip(want, ext))
        return np.asarray(img.data[crop])

    def _fixed(self, k: int, arr: np.ndarray, params) -> np.ndarray:
        """``normalize_percentile`` with the whole image's limits (computed once)."""
        from ..preprocess.contrast import scale_to_limits

        if k not in self._limits:
            self._limits[k] = self._compute_limits(k, params)
        return scale_to_limits(arr, *self._limits[k], clip=params.clip)

    def _compute_limits(self, k: int, params) -> tuple[float, float]:
        from ..segment.normalize import finite_percentiles

        sample, stride = self.sample(upto=k)
        f = sample.astype(np.float64)
        finite = np.isfinite(f)
        if not finite.any():
            lo = hi = float("nan")
        else:
            lo, hi = (float(v) for v in finite_percentiles(f, [params.low, params.high]))
        self.statistics[k] = {"step": self.steps[k][0].name, "percentiles": [params.low, params.high],
                              "limits": [lo, hi], "stride": stride}
        logger.info("tiled %s: %s limits %.4g..%.4g from %d pixels (stride %d)", self.name,
                    self.steps[k][2], lo, hi, sample.size, stride)
        return lo, hi

    # ------------------------------------------------------------------ statistics
    def fix_statistics(self, limits: dict | None = None) -> None:
        """Compute (or set, from another process's :attr:`_limits`) every whole-image statistic now,
        so that :meth:`block` only applies them."""
        if limits is not None:
            self._limits.update({int(k): tuple(v) for k, v in limits.items()})
        for k, (info, params, _) in enumerate(self.steps):
            if info.global_stat and k not in self._limits:
                self._limits[k] = self._compute_limits(k, params)

    def regions(self, tile: tuple | None = None) -> list[tuple[slice, ...]]:
        """A partition of the image into regions of at most ``tile`` pixels per axis (default 512)."""
        tile = tile or (512,) * len(self.shape)
        ranges = [[slice(a, min(a + t, n)) for a in range(0, n, t)] for n, t in zip(self.shape, tile)]
        return [tuple(ranges[d][i] for d, i in enumerate(idx)) for idx in np.ndindex(*[len(r) for r in ranges])]

    def sample(self, *, upto: int | None = None, transform=None, transform_halo: tuple | None = None,
               max_pixels: int | None = None) -> tuple[np.ndarray, int]:
        """The pipeline's output (up to step ``upto``) over the whole image, strided on the image's grid.

        Every region of a partition is computed with its halo (:meth:`block`), so the sample is
        exactly ``whole_result[::s, ::s, ...]`` with the stride ``s`` of :func:`sample_stride`
        (1 when the image has at most ``max_pixels`` pixels: then it is every pixel).

        Parameters
        ----------
        upto : int, optional
            Number of leading steps applied.
        transform : callable, optional
            ``transform(block) -> array`` applied to each block before sampling (e.g. a backend's
            own smoothing); it reads ``transform_halo`` pixels around each output pixel.
        max_pixels : int, optional
            Default: ``max_sample``.

        Returns
        -------
        (ndarray, int)
            The sampled pixels (flat) and the stride.
        """
        stride = sample_stride(self.shape, max_pixels or self.max_sample)
        n_steps = len(self.steps) if upto is None else int(upto)
        if transform is None:
            derived = self._derived_sample(n_steps, stride)
            if derived is not None:
                return derived, stride
        parts = []
        margin = tuple(transform_halo) if transform_halo is not None else (0,) * len(self.shape)
        for region in self.regions():
            blk = self.block(region, upto=upto, margin=margin if transform is not None else None)
            if transform is not None:
                ext = self._extended(region, margin)
                blk = np.asarray(transform(blk))
                blk = blk[tuple(slice(r.start - e.start, r.stop - e.start) for r, e in zip(region, ext))]
            # pixels whose global index is a multiple of the stride along every axis
            first = tuple((-r.start) % stride for r in region)
            parts.append(np.ascontiguousarray(blk[tuple(slice(f, None, stride) for f in first)]).ravel())
        out = np.concatenate(parts)
        if transform is None:
            self._sample = (n_steps, stride, out)
        return out, stride

    def drop_sample(self) -> None:
        """Forget the cached sample (up to ``max_sample`` pixels) once every statistic is computed."""
        self._sample = None

    def _derived_sample(self, n_steps: int, stride: int) -> np.ndarray | None:
        """The sample after ``n_steps`` steps from the cached one, when the steps in between are
        pointwise (zero halo: each output pixel depends on its own input pixel only), else None."""
        if self._sample is None:
            return None
        done, cached_stride, pixels = self._sample
        if cached_stride != stride or done > n_steps or any(any(self.step_halos[j]) for j in range(done, n_steps)):
            return None
        flat = pixels.reshape((1,) * (len(self.shape) - 1) + (-1,))  # pointwise steps ignore the shape
        img = self.image.with_data(flat)
        for k in range(done, n_steps):
            info, params, _ = self.steps[k]
            img = img.with_data(self._fixed(k, img.data, params)) if info.global_stat else info.func(img, params)
        logger.debug("tiled %s: sample after %d step(s) derived from the one after %d", self.name, n_steps, done)
        return np.asarray(img.data).ravel()
