"""Synthetic brightfield spheroids among debris (treated-spheroid study), for training and tests.

:func:`make_spheroid` draws one image and its single-spheroid truth, much richer than the six
demo images (``demo_data/make_demo_data.py``):

* one dark, textured spheroid of radius 30–120 px (input grid) with an irregular outline
  (radial harmonics 2–8 plus a few cells budding at the rim), a darker or lighter core and
  a darker rim, optionally a thin bright halo outside it;
* debris: dense clouds of small dark particles and larger blobs centred near the rim (some
  over it), and a *haze* hugging the rim (a smooth dark band just outside the outline);
* uneven illumination (vignetting down to 65 % of the light in the darkest corner, a linear
  gradient of up to ±15 %, low-frequency modulation), blur and
  Gaussian + shot noise of varied strength;
* ``debris=False``: a clean spheroid (same illumination and noise, no debris, no haze).

:func:`make_series` draws several images from one seed and :func:`write_series` writes them as
a debris data folder (``images/bf_tNN.tif``, ``labels/bf_tNN.tif``, ImageJ TIFFs with the pixel
size), the layout :func:`opsef_core.workflows.debris.load_series` and the run engine read.

Every draw comes from ``numpy.random.default_rng(seed)``: the same seed gives the same images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["RADIUS_RANGE", "make_series", "make_spheroid", "write_series"]

log = logging.getLogger(__name__)

#: spheroid radius range in pixels of the input grid (the study's spheroids span this)
RADIUS_RANGE = (30.0, 120.0)


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    s = f.std()
    return f / s if s > 0 else f


def _outline(rng: np.random.Generator, theta: np.ndarray, irregularity: float) -> np.ndarray:
    """Relative radius ``r(θ)/R``: 1 + a sum of random harmonics 2..8 (total amplitude ~ irregularity)."""
    ks = np.arange(2, 9)
    amps = rng.dirichlet(np.ones(len(ks))) * irregularity * rng.uniform(0.4, 1.0)
    amps = amps / np.sqrt(ks / 2.0)  # high harmonics smaller
    return 1.0 + sum(a * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for a, k in zip(amps, ks))


def make_spheroid(seed=0, *, shape: Sequence[int] = (320, 320), radius: float | None = None,
                  radius_range: tuple[float, float] = RADIUS_RANGE, debris: bool = True,
                  debris_density: float | None = None, haze: float | None = None,
                  noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One brightfield image of a dark spheroid (among debris) and its truth mask.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        Source of every random draw (``numpy.random.default_rng(seed)``).
    shape : (int, int)
        Image shape (``YX``).
    radius : float, optional
        Mean spheroid radius in pixels; default: uniform in ``radius_range`` (capped so the
        spheroid fits the image).
    radius_range : (float, float)
        Range of the drawn radius.
    debris : bool
        Draw debris clouds and the rim haze (False: a clean spheroid).
    debris_density : float, optional
        Multiplies the number of debris particles (default drawn in 0.5–2).
    haze : float, optional
        Darkening of the haze band at the rim, 0–1 (default drawn in 0.05–0.35).
    noise : float, optional
        Gaussian noise sigma in grey levels (default drawn in 2–12).

    Returns
    -------
    image : ndarray of uint8, YX
        Bright background, dark spheroid.
    truth : ndarray of uint16, YX
        The spheroid = 1, background 0.

    Raises
    ------
    ConfigError
        A shape that is not 2D or too small for the smallest radius, or a bad radius range.
    """
    from scipy import ndimage as ndi
    from skimage import draw

    rng = _rng(seed)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 64:
        raise ConfigError(f"shape must be 2D with both sides >= 64 px, got {shape}")
    lo, hi = (float(v) for v in radius_range)
    if not 0 < lo <= hi:
        raise ConfigError(f"radius_range must be (low, high) with 0 < low <= high, got {radius_range}")
    irregularity = rng.uniform(0.03, 0.16)
    fit = (min(shape) / 2 - 6) / (1 + irregularity + 0.05)  # the outline and its buds stay inside
    if radius is None:
        radius = rng.uniform(lo, min(hi, max(lo, fit)))
    r0 = float(min(radius, fit))
    if r0 < 8:
        raise ConfigError(f"shape {shape} is too small for a spheroid of radius {radius}")
    margin = r0 * (1 + irregularity + 0.05) + 4
    cy = rng.uniform(margin, shape[0] - margin) if shape[0] > 2 * margin else shape[0] / 2
    cx = rng.uniform(margin, shape[1] - margin) if shape[1] > 2 * margin else shape[1] / 2
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    rad = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    rel = _outline(rng, theta, irregularity)
    sph = rad <= r0 * rel
    # cells budding at the rim (part of the spheroid)
    for _ in range(int(rng.integers(0, 7))):
        a = rng.uniform(0, 2 * np.pi)
        rb = r0 * rng.uniform(0.05, 0.12)
        rim = r0 * float(_outline_at(rel, theta, a))
        p = (cy + (rim + 0.3 * rb) * np.sin(a), cx + (rim + 0.3 * rb) * np.cos(a))
        rr, cc = draw.disk(p, rb, shape=shape)
        sph[rr, cc] = True
    sph = ndi.binary_fill_holes(sph)
    truth = sph.astype(np.uint16)
    # signed distance to the outline (positive inside), for rim effects
    dist_in = ndi.distance_transform_edt(sph)
    dist_out = ndi.distance_transform_edt(~sph)

    # background: bright, unevenly lit
    level = rng.uniform(150, 230)
    vign = rng.uniform(0.0, 0.35)
    oy, ox = rng.uniform(-0.3, 0.3, 2) * np.array(shape)
    rho2 = (yy - shape[0] / 2 - oy) ** 2 + (xx - shape[1] / 2 - ox) ** 2
    rho2 = rho2 / rho2.max()  # the darkest corner keeps 1 - vign of the light (never negative)
    g = rng.uniform(-0.15, 0.15, 2)
    illum = (1 - vign * rho2) * (1 + g[0] * (yy / shape[0] - 0.5) + g[1] * (xx / shape[1] - 0.5))
    illum *= 1 + rng.uniform(0.0, 0.06) * _smooth_field(rng, shape, max(shape) / 8)
    trans = np.ones(shape)  # transmitted fraction
    # spheroid body: dark, textured, core darker or lighter, darker rim
    body = rng.uniform(0.25, 0.6)
    core = rng.uniform(-0.25, 0.25)
    depth = np.clip(dist_in / max(r0, 1), 0, 1)
    tex = 1 + rng.uniform(0.05, 0.2) * _smooth_field(rng, shape, rng.uniform(1.0, 3.0))
    tex *= 1 + rng.uniform(0.0, 0.1) * _smooth_field(rng, shape, rng.uniform(4.0, 10.0))
    inside = body * (1 - core * depth) * tex
    rim_w = rng.uniform(1.5, 5.0)
    inside *= 1 - rng.uniform(0.0, 0.35) * np.exp(-dist_in / rim_w)
    trans = np.where(sph, np.clip(inside, 0.05, 0.95), trans)
    if rng.random() < 0.5:  # thin bright halo outside the rim
        trans = trans + np.where(~sph, rng.uniform(0.03, 0.12) * np.exp(-dist_out / rng.uniform(1.5, 4.0)), 0)

    if debris:
        dens = rng.uniform(0.5, 2.0) if debris_density is None else float(debris_density)
        hz = rng.uniform(0.05, 0.35) if haze is None else float(haze)
        dark = np.zeros(shape)
        area_scale = (shape[0] * shape[1]) / (320.0 * 320.0)
        n_clouds = int(rng.integers(1, 4))
        centres = []
        for _ in range(n_clouds):
            a = rng.uniform(0, 2 * np.pi)
            d = r0 * float(_outline_at(rel, theta, a)) + rng.uniform(-5, 25)
            centres.append((cy + d * np.sin(a), cx + d * np.cos(a), rng.uniform(12, 45)))
        n_part = int(dens * rng.uniform(200, 600) * area_scale)
        for _ in range(n_part):
            if rng.random() < 0.75:
                c = centres[int(rng.integers(len(centres)))]
                p = np.array(c[:2]) + rng.normal(0, c[2], 2)
            else:
                p = rng.uniform(0, 1, 2) * np.array(shape)
            rr, cc = draw.disk(p, rng.uniform(0.7, 3.2), shape=shape)
            dark[rr, cc] = np.maximum(dark[rr, cc], rng.uniform(0.25, 0.75))
        n_blobs = int(dens * rng.uniform(4, 16) * area_scale)
        for _ in range(n_blobs):
            c = centres[int(rng.integers(len(centres)))]
            p = np.array(c[:2]) + rng.normal(0, c[2] * 0.8, 2)
            rr, cc = draw.ellipse(p[0], p[1], rng.uniform(2.5, 12), rng.uniform(2.5, 12), shape=shape,
                                  rotation=rng.uniform(0, np.pi))
            blob = rng.uniform(0.3, 0.7) * (1 + 0.2 * rng.standard_normal(len(rr)))
            dark[rr, cc] = np.maximum(dark[rr, cc], np.clip(blob, 0, 0.85))
        # clumps of dead cells stuck to the rim (not part of the spheroid)
        for _ in range(int(rng.integers(0, 4))):
            a = rng.uniform(0, 2 * np.pi)
            d = r0 * float(_outline_at(rel, theta, a)) + rng.uniform(2, 10)
            p = (cy + d * np.sin(a), cx + d * np.cos(a))
            for _ in range(int(rng.integers(4, 15))):
                q = np.array(p) + rng.normal(0, 5, 2)
                rr, cc = draw.disk(q, rng.uniform(1.5, 4.5), shape=shape)
                dark[rr, cc] = np.maximum(dark[rr, cc], rng.uniform(0.3, 0.6))
        # haze hugging the rim: a smooth dark band outside the outline, patchy along it
        band_w = rng.uniform(6, 35)
        patch = np.clip(0.6 + 0.6 * _smooth_field(rng, shape, rng.uniform(8, 25)), 0, 1.5)
        hazef = hz * np.exp(-dist_out / band_w) * patch * (~sph)
        dark = 1 - (1 - ndi.gaussian_filter(dark, rng.uniform(0.4, 1.0))) * (1 - np.clip(hazef, 0, 0.9))
        trans = trans * (1 - dark)
    img = level * illum * trans
    img = ndi.gaussian_filter(img, rng.uniform(0.6, 1.5))
    sigma = rng.uniform(2, 12) if noise is None else float(noise)
    if rng.random() < 0.5:  # shot noise
        gain = rng.uniform(0.3, 1.5)
        img = rng.poisson(np.clip(img, 0, None) / gain) * gain
    img = img + rng.normal(0, sigma, shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), truth


def _outline_at(rel: np.ndarray, theta: np.ndarray, angle: float) -> float:
    """The relative radius of the outline at ``angle`` (nearest sampled direction)."""
    d = np.abs(np.angle(np.exp(1j * (theta - angle))))
    return float(rel.flat[int(np.argmin(d))])


def make_series(seed=0, n: int = 8, *, shape: Sequence[int] = (320, 320), clean_fraction: float = 0.2,
                radius_range: tuple[float, float] = RADIUS_RANGE) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """``n`` images from one seed: ``(image, truth, has_debris)`` each.

    Parameters
    ----------
    seed : int or numpy.random.Generator
    n : int
        Number of images (at least 1).
    shape, radius_range
        See :func:`make_spheroid`.
    clean_fraction : float
        Fraction of clean spheroids (no debris), 0–1; with ``n`` ≥ 2 and a positive fraction at
        least one image is clean.

    Returns
    -------
    list of (ndarray, ndarray, bool)

    Raises
    ------
    ConfigError
        ``n`` < 1 or ``clean_fraction`` outside 0–1.
    """
    if int(n) < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if not 0 <= clean_fraction <= 1:
        raise ConfigError(f"clean_fraction must be within 0..1, got {clean_fraction}")
    rng = _rng(seed)
    n_clean = round(clean_fraction * n)
    if clean_fraction > 0 and n >= 2:
        n_clean = max(1, n_clean)
    clean = np.zeros(n, bool)
    clean[rng.choice(n, size=n_clean, replace=False)] = True
    out = []
    for c in clean:
        img, lab = make_spheroid(rng, shape=shape, radius_range=radius_range, debris=not c)
        out.append((img, lab, not bool(c)))
    return out


def write_series(folder: str | Path, seed=0, n: int = 8, *, shape: Sequence[int] = (320, 320),
                 clean_fraction: float = 0.2, pixel_size: float = 2.0,
                 radius_range: tuple[float, float] = RADIUS_RANGE) -> Path:
    """Write :func:`make_series` as a debris data folder: ``images/bf_tNN.tif`` + ``labels/bf_tNN.tif``.

    Both are ImageJ TIFFs (zlib) with ``pixel_size`` µm per pixel; ``debris.csv`` lists which
    images carry debris.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    import pandas as pd
    import tifffile

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    res = (1.0 / pixel_size, 1.0 / pixel_size)
    for t, (img, lab, dirty) in enumerate(make_series(seed, n, shape=shape, clean_fraction=clean_fraction,
                                                      radius_range=radius_range)):
        name = f"bf_t{t:02d}.tif"
        for sub, arr in (("images", img), ("labels", lab)):
            tifffile.imwrite(folder / sub / name, arr, imagej=True, resolution=res,
                             metadata={"axes": "YX", "unit": "um"}, compression="zlib")
        rows.append({"file": name, "debris": dirty, "radius_px": float(np.sqrt(lab.sum() / np.pi))})
    pd.DataFrame(rows).to_csv(folder / "debris.csv", index=False)
    log.info("wrote %d generated spheroid images (seed %s) to %s", len(rows), seed, folder)
    return folder
