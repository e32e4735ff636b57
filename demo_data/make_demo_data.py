"""Generate the bundled synthetic demo data of opsef (deterministic, seeded).

Run as a script::

    python demo_data/make_demo_data.py                 # every data set into demo_data/
    python demo_data/make_demo_data.py --only nuclei2d --out /tmp/demo

or import the ``make_*`` functions, which take a ``numpy.random.Generator`` and
return arrays (so tests can build tiny versions in memory):

- :func:`make_nuclei2d` -> ``(image YX uint16, labels YX uint16)``
- :func:`make_spheroid` -> ``(image ZYX uint16, labels ZYX uint16)``
- :func:`make_fucci3d` -> ``(image CZYX uint16, labels ZYX uint16, phases DataFrame)``
- :func:`make_hcs` -> ``(image CYX uint16, nuclei YX uint16, cells YX uint16)``
- :func:`make_debris_brightfield` -> ``(image YX uint8, labels YX uint16)``

Every data set is drawn from its own generator seeded with ``(seed, dataset index)``,
so ``--only`` reproduces exactly the files of a full run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from skimage import draw, segmentation

__all__ = [
    "make_nuclei2d",
    "make_spheroid",
    "make_fucci3d",
    "make_hcs",
    "make_debris_brightfield",
    "write_tiff",
    "generate",
    "DATASETS",
    "FUCCI_CHANNELS",
    "HCS_CHANNELS",
]

logger = logging.getLogger(__name__)

FUCCI_CHANNELS = ("hoechst", "cdt1_red", "geminin_green")
FUCCI_PHASES = ("G1", "S/G2/M", "G1/S", "unlabeled")
HCS_CHANNELS = ("nuclei_cyto", "cytoplasm", "mito", "membrane")
DEFAULT_SEED = 20240611


# ----------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, shape, sigma, spacing=None) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit std."""
    field = rng.normal(size=shape)
    if spacing is not None:
        sigma = tuple(sigma / s for s in spacing)
    field = ndi.gaussian_filter(field, sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def _camera(rng: np.random.Generator, photons: np.ndarray, read_noise: float, dtype=np.uint16) -> np.ndarray:
    """Poisson shot noise plus Gaussian read noise, clipped to the dtype's range."""
    img = rng.poisson(np.clip(photons, 0, None)).astype(np.float64)
    img += rng.normal(0.0, read_noise, img.shape)
    info = np.iinfo(dtype)
    return np.clip(np.round(img), info.min, info.max).astype(dtype)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Sequential labels 1..n in uint16, dropping ids that lost all their pixels."""
    out, _, _ = segmentation.relabel_sequential(labels)
    return out.astype(np.uint16)


def _paint_ellipsoid(labels: np.ndarray, centre, radii, angle: float, label_id: int,
                     min_keep: float = 0.6, margin: int = 0) -> np.ndarray | None:
    """Paint an ellipsoid (ellipse in 2D; 3D axis ``0`` unrotated) where ``labels`` is 0.

    Returns the painted mask (in a bounding-box-free boolean of ``labels.shape``) or
    ``None`` (nothing painted) when less than ``min_keep`` of it is free or it
    touches an existing object within ``margin`` pixels (``margin`` only when > 0).
    """
    nd = labels.ndim
    centre = np.asarray(centre, float)
    radii = np.asarray(radii, float)
    rmax = radii.max() + margin + 1
    lo = [max(0, int(np.floor(centre[i] - (radii[i] if (nd == 3 and i == 0) else rmax) - margin - 1)))
          for i in range(nd)]
    hi = [min(labels.shape[i], int(np.ceil(centre[i] + (radii[i] if (nd == 3 and i == 0) else rmax)
                                           + margin + 2))) for i in range(nd)]
    if any(h <= low for low, h in zip(lo, hi)):
        return None
    grids = np.meshgrid(*[np.arange(low, h, dtype=float) for low, h in zip(lo, hi)], indexing="ij")
    d = [g - c for g, c in zip(grids, centre)]
    ca, sa = np.cos(angle), np.sin(angle)
    y, x = d[-2], d[-1]
    u = ca * y + sa * x
    v = -sa * y + ca * x
    r2 = (u / radii[-2]) ** 2 + (v / radii[-1]) ** 2
    if nd == 3:
        r2 = r2 + (d[0] / radii[0]) ** 2
    inside = r2 <= 1.0
    n_in = int(inside.sum())
    if n_in == 0:
        return None
    box = tuple(slice(low, h) for low, h in zip(lo, hi))
    sub = labels[box]
    if margin > 0:
        grown = (u / (radii[-2] + margin)) ** 2 + (v / (radii[-1] + margin)) ** 2
        if nd == 3:
            grown = grown + (d[0] / (radii[0] + margin / 2)) ** 2
        if np.any(sub[grown <= 1.0] > 0):
            return None
    free = inside & (sub == 0)
    if free.sum() < min_keep * n_in:
        return None
    sub[free] = label_id
    mask = np.zeros(labels.shape, bool)
    mask[box] = free
    return mask


def _object_profile(labels: np.ndarray, edge_width: float, spacing=None) -> np.ndarray:
    """Per-object intensity profile: 1 inside, falling towards each object's edge."""
    # distance of each pixel to the nearest pixel outside its own object
    bounds = segmentation.find_boundaries(labels, mode="inner") | (labels == 0)
    dist = ndi.distance_transform_edt(~bounds, sampling=spacing)
    prof = 0.6 + 0.4 * np.clip(dist / edge_width, 0, 1)
    prof[labels == 0] = 0
    return prof


def write_tiff(path: str | Path, data: np.ndarray, axes: str, pixel_size: float,
               z_spacing: float | None = None, extra: dict | None = None) -> Path:
    """Write an ImageJ TIFF with calibration, zlib compression, atomically.

    Parameters
    ----------
    path : path
        Output file.
    data : ndarray
        Array whose axes are ``axes`` (ImageJ order, a subset of ``TZCYX``).
    axes : str
        Axes of ``data``.
    pixel_size : float
        X/Y pixel size in µm.
    z_spacing : float, optional
        Z step in µm (stacks only).
    extra : dict, optional
        More ImageJ metadata (e.g. ``Labels``, ``channel_names``).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"axes": axes, "unit": "um"}
    if z_spacing is not None:
        metadata["spacing"] = float(z_spacing)
    metadata.update(extra or {})
    fd, tmp = tempfile.mkstemp(suffix=".tif", dir=path.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / pixel_size, 1.0 / pixel_size),
                         metadata=metadata, compression="zlib")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- nuclei2d
def make_nuclei2d(rng: np.random.Generator, shape=(256, 256), n_nuclei: int = 42,
                  radius_range=(5.0, 12.0), pair_fraction: float = 0.5,
                  brightness_range=(1.0, 3.0), signal: float = 110.0, background: float = 100.0,
                  psf_sigma: float = 1.4, read_noise: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic fluorescent nuclei (2D, widefield-like).

    Ellipses of random radii, orientation and brightness (``brightness_range`` is a
    3x range by default) with a textured interior and a dimmer rim; a fraction of
    them are placed as touching or slightly overlapping pairs.  The clean image is
    blurred by a Gaussian PSF, put on an uneven background and degraded by Poisson
    and Gaussian noise.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Image shape (YX).
    n_nuclei : int
        Number of nuclei attempted (some placements are rejected).
    radius_range : (float, float)
        Semi-axis range in pixels.
    pair_fraction : float
        Probability that a placed nucleus gets a touching partner.
    brightness_range : (float, float)
        Per-nucleus brightness factor range.
    signal, background : float
        Photons for brightness 1 and background offset.
    psf_sigma : float
        Gaussian PSF sigma in pixels.
    read_noise : float
        Camera read noise (counts).

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
    labels : ndarray of uint16, shape ``shape``
    """
    labels = np.zeros(shape, np.int32)
    brightness = {}
    next_id = 1
    attempts = 0
    while next_id <= n_nuclei and attempts < 40 * n_nuclei:
        attempts += 1
        radii = rng.uniform(*radius_range, 2)
        radii[1] = np.clip(radii[0] * rng.uniform(0.65, 1.0), radius_range[0], radius_range[1])
        centre = rng.uniform(0, 1, 2) * np.array(shape)
        angle = rng.uniform(0, np.pi)
        if _paint_ellipsoid(labels, centre, radii, angle, next_id, min_keep=1.0, margin=3) is None:
            continue
        brightness[next_id] = rng.uniform(*brightness_range)
        next_id += 1
        if rng.random() < pair_fraction and next_id <= n_nuclei:
            for _ in range(10):
                r2 = rng.uniform(*radius_range, 2)
                r2[1] = np.clip(r2[0] * rng.uniform(0.65, 1.0), radius_range[0], radius_range[1])
                direction = rng.uniform(0, 2 * np.pi)
                dist = (radii.mean() + r2.mean()) * rng.uniform(0.7, 0.95)
                c2 = centre + dist * np.array([np.sin(direction), np.cos(direction)])
                if _paint_ellipsoid(labels, c2, r2, rng.uniform(0, np.pi), next_id, min_keep=0.7) is not None:
                    brightness[next_id] = rng.uniform(*brightness_range)
                    next_id += 1
                    break
    # drop slivers cut by the image border
    sizes = np.bincount(labels.ravel(), minlength=next_id)
    for lab in np.flatnonzero(sizes[1:] < 25) + 1:
        labels[labels == lab] = 0
    b = np.zeros(next_id, float)
    for k, v in brightness.items():
        b[k] = v
    texture = 1.0 + 0.2 * _smooth_noise(rng, shape, 1.5)
    clean = b[labels] * texture * _object_profile(labels, edge_width=3.0)
    clean = ndi.gaussian_filter(clean, psf_sigma) * signal
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    bg = background * (1.0 + 0.25 * (yy - 0.5) + 0.15 * (xx - 0.5) + 0.05 * _smooth_noise(rng, shape, 30))
    image = _camera(rng, clean + bg, read_noise)
    return image, _relabel(labels)


# ----------------------------------------------------------------------------- spheroid
def make_spheroid(rng: np.random.Generator, shape=(32, 128, 128), pixel_size: float = 0.5,
                  z_spacing: float = 2.0, cleared: bool = True, nucleus_radius_um=(2.6, 4.0),
                  signal: float = 900.0, background: float = 90.0,
                  read_noise: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """A spheroid of packed nuclei imaged from the top, with depth-dependent degradation.

    Signal decays as ``exp(-depth / L)`` (``L`` = 70 µm cleared, 16 µm non-cleared);
    blur and scattered background grow with depth, much more without clearing.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        ZYX shape.
    pixel_size, z_spacing : float
        XY pixel size and Z step in µm.
    cleared : bool
        Cleared (weak attenuation) or non-cleared (strong) condition.
    nucleus_radius_um : (float, float)
        Range of nucleus semi-axes in µm.
    signal, background, read_noise : float
        Photon scale, background offset, read noise.

    Returns
    -------
    image : ndarray of uint16, ZYX
    labels : ndarray of uint16, ZYX (3D instances)
    """
    spacing = np.array([z_spacing, pixel_size, pixel_size])
    extent = np.array(shape) * spacing
    centre = extent / 2.0
    big_r = 0.45 * min(extent[1], extent[2])
    big_r_z = min(big_r, 0.5 * extent[0] - 2.0)
    labels = np.zeros(shape, np.int32)
    next_id = 1
    for _ in range(4000):
        radii_um = rng.uniform(*nucleus_radius_um, 3)
        u = rng.uniform(-1, 1, 3)
        if (u ** 2).sum() > 1:
            continue
        c_um = centre + u * np.array([big_r_z - radii_um[0], big_r - radii_um[1], big_r - radii_um[2]])
        if _paint_ellipsoid(labels, c_um / spacing, radii_um / spacing, rng.uniform(0, np.pi), next_id,
                            min_keep=0.8) is not None:
            next_id += 1
    sizes = np.bincount(labels.ravel(), minlength=next_id)
    for lab in np.flatnonzero(sizes[1:] < 30) + 1:
        labels[labels == lab] = 0
    b = np.concatenate([[0.0], rng.uniform(0.6, 1.4, next_id - 1)])
    texture = 1.0 + 0.2 * _smooth_noise(rng, shape, 0.8, spacing=spacing)
    clean = b[labels] * texture * _object_profile(labels, edge_width=1.0, spacing=spacing)
    clean = ndi.gaussian_filter(clean, (0.6, 1.2, 1.2))
    depth = np.arange(shape[0]) * z_spacing
    att_len, blur_max, scatter_max = (70.0, 1.0, 0.15) if cleared else (16.0, 3.0, 0.6)
    out = np.empty(shape, float)
    for z in range(shape[0]):
        frac = depth[z] / max(depth[-1], 1e-9)
        sl = clean[z]
        extra = blur_max * frac
        if extra > 0.05:
            sl = ndi.gaussian_filter(sl, extra)
        scatter = ndi.gaussian_filter(clean[z], 10.0) * scatter_max * frac
        out[z] = (sl + scatter) * np.exp(-depth[z] / att_len)
    image = _camera(rng, out * signal + background, read_noise)
    return image, _relabel(labels)


# ----------------------------------------------------------------------------- fucci3d
def make_fucci3d(rng: np.random.Generator, shape=(24, 96, 96), pixel_size: float = 0.5,
                 z_spacing: float = 1.0, n_nuclei: int = 26, n_artefacts: int = 8,
                 read_noise: float = 5.0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """FUCCI cell-cycle reporter stack: Hoechst, Cdt1 (red, G1) and Geminin (green, S/G2/M).

    Phase mix: G1 high red; S/G2/M high green; G1/S both; unlabeled neither (all four
    phases always occur).  A few small very bright artefacts are added to every channel.

    Returns
    -------
    image : ndarray of uint16, CZYX (channels :data:`FUCCI_CHANNELS`)
    labels : ndarray of uint16, ZYX
    phases : pandas.DataFrame with columns ``label``, ``phase``
    """
    spacing = np.array([z_spacing, pixel_size, pixel_size])
    extent = np.array(shape) * spacing
    labels = np.zeros(shape, np.int32)
    next_id = 1
    for _ in range(60 * n_nuclei):
        if next_id > n_nuclei:
            break
        radii_um = rng.uniform(3.0, 5.0, 3)
        radii_um[0] = rng.uniform(2.5, 3.5)
        c_um = np.array([rng.uniform(0.35, 0.65) * extent[0], rng.uniform(0, extent[1]),
                         rng.uniform(0, extent[2])])
        if _paint_ellipsoid(labels, c_um / spacing, radii_um / spacing, rng.uniform(0, np.pi), next_id,
                            min_keep=1.0, margin=1) is not None:
            next_id += 1
    sizes = np.bincount(labels.ravel(), minlength=next_id)
    for lab in np.flatnonzero(sizes[1:] < 60) + 1:
        labels[labels == lab] = 0
    labels = _relabel(labels).astype(np.int32)
    n = int(labels.max())
    phases = list(FUCCI_PHASES[: min(4, n)]) + list(rng.choice(FUCCI_PHASES, size=max(0, n - 4),
                                                                 p=[0.35, 0.3, 0.15, 0.2]))
    phases = [phases[i] for i in rng.permutation(n)]
    high = {"G1": (1, 0), "S/G2/M": (0, 1), "G1/S": (1, 1), "unlabeled": (0, 0)}
    hoechst = np.concatenate([[0.0], rng.uniform(0.6, 1.3, n)])
    red = np.concatenate([[0.0], [rng.uniform(0.7, 1.2) if high[p][0] else rng.uniform(0.0, 0.12)
                                  for p in phases]])
    green = np.concatenate([[0.0], [rng.uniform(0.7, 1.2) if high[p][1] else rng.uniform(0.0, 0.12)
                                    for p in phases]])
    prof = _object_profile(labels, edge_width=1.5, spacing=spacing)
    chans = []
    for lut, sig, bg in ((hoechst, 700.0, 80.0), (red, 500.0, 60.0), (green, 450.0, 70.0)):
        tex = 1.0 + 0.25 * _smooth_noise(rng, shape, 0.7, spacing=spacing)
        clean = ndi.gaussian_filter(lut[labels] * tex * prof, (0.7, 1.2, 1.2)) * sig
        chans.append(clean + bg)
    # small, very bright artefacts (for a white top-hat)
    for _ in range(n_artefacts):
        pos = [int(rng.integers(0, s)) for s in shape]
        sl = tuple(slice(max(0, p - 1), p + 1) for p in pos)
        for ch in rng.choice(3, size=int(rng.integers(1, 4)), replace=False):
            chans[ch][sl] += rng.uniform(2000, 4000)
    image = np.stack([_camera(rng, c, read_noise) for c in chans])
    table = pd.DataFrame({"label": np.arange(1, n + 1), "phase": phases})
    return image, labels.astype(np.uint16), table


# ----------------------------------------------------------------------------- hcs
def make_hcs(rng: np.random.Generator, shape=(256, 256), n_cells: int = 30,
             nucleus_radius=(7.0, 11.0), cell_extent: int = 16,
             read_noise: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """High-content screening field: 4 channels of cells as touching Voronoi-like regions.

    Channels :data:`HCS_CHANNELS`: ``nuclei_cyto`` (bright nuclei, dim cytoplasm),
    ``cytoplasm``, ``mito`` (punctate/filamentous texture in the cytoplasm),
    ``membrane`` (cell outlines).

    Returns
    -------
    image : ndarray of uint16, CYX
    nuclei : ndarray of uint16, YX
    cells : ndarray of uint16, YX (same ids as the nuclei they contain)
    """
    nuclei = np.zeros(shape, np.int32)
    next_id = 1
    for _ in range(60 * n_cells):
        if next_id > n_cells:
            break
        radii = rng.uniform(*nucleus_radius, 2)
        c = rng.uniform(0, 1, 2) * np.array(shape)
        if _paint_ellipsoid(nuclei, c, radii, rng.uniform(0, np.pi), next_id, min_keep=1.0,
                            margin=cell_extent // 2 + 2) is not None:
            next_id += 1
    sizes = np.bincount(nuclei.ravel(), minlength=next_id)
    for lab in np.flatnonzero(sizes[1:] < 40) + 1:
        nuclei[nuclei == lab] = 0
    nuclei = _relabel(nuclei).astype(np.int32)
    n = int(nuclei.max())
    # cells: nuclei grown by a wobbly distance, touching where they meet (Voronoi)
    grown = segmentation.expand_labels(nuclei, cell_extent + 6)
    wobble = ndi.distance_transform_edt(nuclei == 0) < (cell_extent + 4 * _smooth_noise(rng, shape, 6))
    cells = np.where(wobble, grown, 0)
    cells = np.where(nuclei > 0, nuclei, cells)
    # keep one connected piece per cell
    for lab in range(1, n + 1):
        m = cells == lab
        cc, k = ndi.label(m)
        if k > 1:
            keep = np.bincount(cc.ravel())[1:].argmax() + 1
            cells[m & (cc != keep)] = 0
    cyto = (cells > 0) & (nuclei == 0)
    cell_b = np.concatenate([[0.0], rng.uniform(0.6, 1.4, n)])
    nuc_b = np.concatenate([[0.0], rng.uniform(0.7, 1.3, n)])
    tex = 1.0 + 0.2 * _smooth_noise(rng, shape, 2.0)
    c0 = (nuc_b[nuclei] * 1.0 + 0.15 * cell_b[cells] * cyto) * tex
    c1 = (0.8 * cell_b[cells] * cyto + 0.25 * cell_b[cells] * (nuclei > 0)) \
        * (1 + 0.3 * _smooth_noise(rng, shape, 3))
    fil = _smooth_noise(rng, shape, 1.2)
    puncta = np.zeros(shape)
    k = int(0.01 * cyto.sum())
    ys, xs = np.nonzero(cyto)
    idx = rng.choice(len(ys), size=min(k, len(ys)), replace=False)
    puncta[ys[idx], xs[idx]] = rng.uniform(2, 5, len(idx))
    c2 = (np.clip(fil - 0.8, 0, None) * 1.5 + ndi.gaussian_filter(puncta, 0.8)) * cyto * cell_b[cells]
    c3 = ndi.gaussian_filter(segmentation.find_boundaries(cells, mode="inner").astype(float), 0.8) * 2.0
    chans = []
    for c, sig, bg in ((c0, 800.0, 100.0), (c1, 500.0, 90.0), (c2, 500.0, 80.0), (c3, 600.0, 90.0)):
        chans.append(_camera(rng, ndi.gaussian_filter(c, 1.0) * sig + bg, read_noise))
    return np.stack(chans), nuclei.astype(np.uint16), cells.astype(np.uint16)


# ----------------------------------------------------------------------------- brightfield
def make_debris_brightfield(rng: np.random.Generator, t: int = 0, shape=(256, 256),
                            radius0: float = 38.0, growth: float = 6.0, n_particles: int = 260,
                            n_blobs: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Brightfield image of one dark, textured spheroid among debris, radius growing with ``t``.

    Returns
    -------
    image : ndarray of uint8, YX
    labels : ndarray of uint16, YX (the spheroid = 1)
    """
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    cy, cx = np.array(shape) / 2 + rng.uniform(-12, 12, 2)
    r = radius0 + growth * t
    theta = np.arctan2(yy - cy, xx - cx)
    rad = np.hypot(yy - cy, xx - cx)
    wob = sum(rng.uniform(0, 0.04) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    sph = rad <= r * (1 + wob)
    labels = sph.astype(np.uint16)
    # background: bright, uneven illumination (vignetting + gradient)
    bg = 205 - 35 * ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (0.5 * max(shape)) ** 2
    bg = bg + 10 * (xx / shape[1] - 0.5) + 4 * _smooth_noise(rng, shape, 20)
    # spheroid: darker core, textured, slightly brighter halo outside the rim
    core = 1 - 0.35 * np.clip(1 - rad / max(r, 1), 0, 1)
    sph_tex = 1 + 0.15 * _smooth_noise(rng, shape, 2.0)
    img = np.where(sph, 90 * core * sph_tex, bg)
    halo = (rad > r * (1 + wob)) & (rad < r * (1 + wob) + 4)
    img = np.where(halo, img + 15, img)
    # debris cloud: small dark particles and a few larger blobs, some over the spheroid edge
    debris_c = np.array([cy, cx]) + r * np.array([np.sin(a := rng.uniform(0, 2 * np.pi)), np.cos(a)])
    dark = np.zeros(shape)
    for _ in range(n_particles):
        p = debris_c + rng.normal(0, 35, 2) if rng.random() < 0.6 else rng.uniform(0, 1, 2) * np.array(shape)
        rr, cc = draw.disk(p, rng.uniform(0.8, 2.8), shape=shape)
        dark[rr, cc] = np.maximum(dark[rr, cc], rng.uniform(0.3, 0.7))
    for _ in range(n_blobs):
        p = debris_c + rng.normal(0, 25, 2)
        rr, cc = draw.ellipse(p[0], p[1], rng.uniform(3, 9), rng.uniform(3, 9), shape=shape,
                              rotation=rng.uniform(0, np.pi))
        dark[rr, cc] = np.maximum(dark[rr, cc], rng.uniform(0.3, 0.6))
    img = img * (1 - ndi.gaussian_filter(dark, 0.7))
    img = ndi.gaussian_filter(img, 1.0) + rng.normal(0, 4, shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), labels


# ----------------------------------------------------------------------------- writing
def _gen_nuclei2d(rng, out: Path):
    for i in range(8):
        img, lab = make_nuclei2d(rng)
        write_tiff(out / "nuclei2d/images" / f"nuclei_{i:02d}.tif", img, "YX", 0.5)
        write_tiff(out / "nuclei2d/labels" / f"nuclei_{i:02d}.tif", lab, "YX", 0.5)


def _gen_spheroid(rng, out: Path):
    for cond in ("cleared", "noncleared"):
        for i in range(2):
            img, lab = make_spheroid(rng, cleared=cond == "cleared")
            name = f"spheroid_{i:02d}.tif"
            write_tiff(out / "spheroid_clearing" / cond / "images" / name, img, "ZYX", 0.5, 2.0)
            write_tiff(out / "spheroid_clearing" / cond / "labels" / name, lab, "ZYX", 0.5, 2.0)


def _gen_fucci3d(rng, out: Path):
    img, lab, phases = make_fucci3d(rng)
    nz = img.shape[1]
    extra = {"Labels": list(FUCCI_CHANNELS) * nz, "channel_names": ",".join(FUCCI_CHANNELS)}
    # ImageJ stores hyperstacks in TZCYX order: the file's axes are ZCYX
    write_tiff(out / "fucci3d/images/fucci_00.tif", np.moveaxis(img, 0, 1), "ZCYX", 0.5, 1.0, extra)
    write_tiff(out / "fucci3d/labels/fucci_00.tif", lab, "ZYX", 0.5, 1.0)
    (out / "fucci3d/phases").mkdir(parents=True, exist_ok=True)
    phases.to_csv(out / "fucci3d/phases/fucci_00.csv", index=False)


def _gen_hcs(rng, out: Path):
    extra = {"Labels": list(HCS_CHANNELS), "channel_names": ",".join(HCS_CHANNELS)}
    for i in range(4):
        img, nuc, cells = make_hcs(rng)
        name = f"hcs_{i:02d}.tif"
        write_tiff(out / "hcs_channels/images" / name, img, "CYX", 0.5, extra=extra)
        write_tiff(out / "hcs_channels/labels/nuclei" / name, nuc, "YX", 0.5)
        write_tiff(out / "hcs_channels/labels/cells" / name, cells, "YX", 0.5)


def _gen_debris(rng, out: Path):
    for t in range(6):
        img, lab = make_debris_brightfield(rng, t=t)
        name = f"bf_t{t:02d}.tif"
        write_tiff(out / "debris_brightfield/images" / name, img, "YX", 2.0)
        write_tiff(out / "debris_brightfield/labels" / name, lab, "YX", 2.0)


DATASETS = {
    "nuclei2d": _gen_nuclei2d,
    "spheroid_clearing": _gen_spheroid,
    "fucci3d": _gen_fucci3d,
    "hcs_channels": _gen_hcs,
    "debris_brightfield": _gen_debris,
}


def generate(out: str | Path, only: list[str] | None = None, seed: int = DEFAULT_SEED) -> Path:
    """Write the demo data sets into ``out``.

    Parameters
    ----------
    out : path
        Target folder (``demo_data/`` by default in the script).
    only : list of str, optional
        Names from :data:`DATASETS`; all when None.
    seed : int
        Base seed; data set ``k`` uses ``default_rng([seed, k])``.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    out = Path(out)
    names = list(DATASETS) if not only else only
    for name in names:
        if name not in DATASETS:
            raise ValueError(f"unknown data set {name!r}; choose from {list(DATASETS)}")
        k = list(DATASETS).index(name)
        logger.info("generating %s", name)
        DATASETS[name](np.random.default_rng([seed, k]), out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=list(DATASETS),
                        help="generate only this data set (repeatable)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.out, args.only, args.seed)


if __name__ == "__main__":
    main()
