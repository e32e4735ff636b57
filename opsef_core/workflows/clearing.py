"""Workflow behind ``notebooks/spheroid_clearing``: clearing quality and segmentation along depth.

The science is in :mod:`opsef_core.clearing` (``SCIENCE.md``, "Clearing quality
along depth"); this module strings it together for data laid out as
``DATA/<condition>/images/*.tif`` with instance truth in
``DATA/<condition>/labels/`` (same file names):

* :func:`load_conditions` — read every condition's ``ZYX`` stacks and truth labels;
* :func:`clearing_profiles` — per slice mean intensity, SNR, CNR (Bhattacharyya,
  Fisher) with the depth normalised to percent of the maximum diameter, and
  a signed ``depth_pct`` axis running 0 → 100 (centre) → 200 through the spheroid;
* :func:`band_comparison` — conditions compared in the 70–100 % band;
* :func:`segmentation_along_depth` — several segmenters slice by slice (2D) or
  in 3D, pixel F1, AJI and nuclei counts per slice (:func:`opsef_core.clearing.per_depth_segmentation`);
* :func:`train_condition_unets` / :func:`transfer_matrix` — tiny 2D U-Nets trained
  on the slices of each condition and tested on every condition;
* plotting helpers returning matplotlib figures.

Signal and noise for the contrast metrics come from the **truth** nuclei (the
other pixels of the centred patch are noise) when labels exist, else from a
per-slice Otsu threshold (column ``signal_source``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import ConfigError, EmptyFolderError, InputFileError

__all__ = [
    "load_conditions",
    "clearing_profiles",
    "band_comparison",
    "segment_stack",
    "segmentation_along_depth",
    "slice_pairs",
    "train_condition_unets",
    "transfer_matrix",
    "plot_profiles",
    "plot_segmentation_depth",
    "plot_counts",
    "plot_transfer",
    "CONTRAST_METRICS",
]

log = logging.getLogger(__name__)

CONTRAST_METRICS = ("mean_norm", "snr", "cnr_bc", "cnr_fr")


# ----------------------------------------------------------------------------- loading
def load_conditions(data_dir, conditions=("cleared", "noncleared"), max_images: int | None = None) -> dict:
    """Read the stacks and truth labels of each condition.

    Parameters
    ----------
    data_dir : path
        Folder holding one sub-folder per condition, each with ``images/`` and
        (optionally) ``labels/`` of the same file names.
    conditions : sequence of str
        Sub-folder names, in plotting order.
    max_images : int, optional
        Read only the first ``max_images`` stacks of each condition (demo speed).

    Returns
    -------
    dict
        ``{condition: [{"name", "image" (Image, ZYX), "labels" (ndarray or None)}, ...]}``.

    Raises
    ------
    EmptyFolderError, InputFileError
        Missing folders, no stacks, stacks that are not single-channel ``ZYX`` or
        labels of another shape.
    """
    from ..io import discover, read_image, read_labels

    data_dir = Path(data_dir)
    if not conditions:
        raise ConfigError("no conditions given")
    out = {}
    for cond in conditions:
        img_dir = data_dir / cond / "images"
        if not img_dir.is_dir():
            raise EmptyFolderError(f"condition {cond!r}: no images/ folder", img_dir)
        files = discover(img_dir)
        if max_images is not None:
            files = files[: max(1, int(max_images))]
        entries = []
        for f in files:
            img = read_image(f)
            if img.spatial_axes != "ZYX" or ("C" in img.axes and img.size("C") > 1):
                raise InputFileError(f"expected a single-channel ZYX stack, got axes {img.axes} "
                                     f"shape {img.shape}", f)
            img = img.sel(t=0, c=0) if ("C" in img.axes or "T" in img.axes) else img
            lab_path = data_dir / cond / "labels" / f.name
            labels = None
            if lab_path.is_file():
                labels = read_labels(lab_path)
                if labels.shape != img.spatial().shape:
                    raise InputFileError(f"labels shape {labels.shape} differs from the image's "
                                         f"{img.spatial().shape}", lab_path)
            entries.append({"name": f.stem, "image": img, "labels": labels})
        out[cond] = entries
        log.info("condition %s: %d stacks", cond, len(entries))
    return out


def _iter(data: dict):
    for cond, entries in data.items():
        for e in entries:
            yield cond, e


# ----------------------------------------------------------------------------- contrast
def _signed_depth(prof: pd.DataFrame) -> np.ndarray:
    """0 → 100 (centre) → 200 through the spheroid from its top slice."""
    pct = prof["percent_max_diameter"].to_numpy(float)
    below = prof["z"].to_numpy() > prof["centre_slice"].to_numpy()
    return np.where(below, 200.0 - pct, pct)


def clearing_profiles(data: dict, patch_size: int | None = 64, use_truth: bool = True) -> pd.DataFrame:
    """Clearing metrics of every slice of every stack, depth-normalised.

    Parameters
    ----------
    data : dict
        From :func:`load_conditions`.
    patch_size : int, optional
        YX edge of the patch cropped at the spheroid centre (None: whole slice).
    use_truth : bool
        Signal = truth nuclei pixels when labels exist; otherwise (or when
        False) a per-slice Otsu threshold of the patch.

    Returns
    -------
    DataFrame
        ``condition``, ``image``, the :func:`opsef_core.clearing.clearing_metrics`
        columns (``z``, ``percent_max_diameter``, ``mean_norm``, ``snr``,
        ``cnr_bc``, ``cnr_fr``, ...), ``side`` (``top`` up to the centre slice,
        ``bottom`` beyond) and ``depth_pct`` (0..200, 100 = centre).
    """
    from ..clearing import clearing_metrics

    frames = []
    for cond, e in _iter(data):
        img = e["image"]
        truth = e["labels"] if use_truth else None
        df = clearing_metrics(img.spatial(), truth, patch_size=patch_size,
                              pixel_size=[img.pixel_size.get(a, 1.0) for a in "ZYX"])
        df.insert(0, "image", e["name"])
        df.insert(0, "condition", cond)
        df["side"] = np.where(df["z"] > df["centre_slice"], "bottom", "top")
        df["depth_pct"] = _signed_depth(df)
        frames.append(df)
    if not frames:
        raise ConfigError("no stacks to measure")
    return pd.concat(frames, ignore_index=True)


def band_comparison(profiles: pd.DataFrame, band=(70.0, 100.0), side: str = "top",
                    metrics=CONTRAST_METRICS, x: str = "percent_max_diameter") -> pd.DataFrame:
    """Mean and standard deviation of each metric per condition inside a depth band.

    Parameters
    ----------
    profiles : DataFrame
        From :func:`clearing_profiles` (or a per-slice segmentation table with
        ``percent_max_diameter`` and ``side``).
    band : (float, float)
        Inclusive range of percent of maximum diameter (the study's 70–100 %).
    side : {"top", "bottom", "both"}
        Which half of the spheroid: ``top`` = from the objective to the centre.
    metrics : sequence of str
        Columns to summarise.
    x : str
        The depth column the band applies to.

    Returns
    -------
    DataFrame
        One row per condition: ``n_slices`` and ``<metric>_mean``, ``<metric>_sd``.
    """
    if side not in ("top", "bottom", "both"):
        raise ConfigError(f"side must be 'top', 'bottom' or 'both', got {side!r}")
    lo, hi = float(band[0]), float(band[1])
    sel = profiles[(profiles[x] >= lo) & (profiles[x] <= hi)]
    if side != "both":
        sel = sel[sel["side"] == side]
    rows = []
    for cond, g in sel.groupby("condition", sort=False):
        row = {"condition": cond, "band": f"{lo:g}-{hi:g}%", "side": side, "n_slices": len(g)}
        for m in metrics:
            v = g[m].replace([np.inf, -np.inf], np.nan).astype(float)
            row[f"{m}_mean"] = float(v.mean())
            row[f"{m}_sd"] = float(v.std(ddof=1)) if v.notna().sum() > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- segmentation
def _spec(name: str, spec: dict) -> tuple[str, dict, str]:
    if not isinstance(spec, dict) or "backend" not in spec:
        raise ConfigError(f"model {name!r}: give a dict with 'backend' (and optional 'params', 'mode')")
    unknown = set(spec) - {"backend", "params", "mode"}
    if unknown:
        raise ConfigError(f"model {name!r}: unknown keys {sorted(unknown)}")
    mode = spec.get("mode", "2d")
    if mode not in ("2d", "3d"):
        raise ConfigError(f"model {name!r}: mode must be '2d' (slice by slice) or '3d', got {mode!r}")
    return spec["backend"], dict(spec.get("params") or {}), mode


def segment_stack(image, backend: str, params: dict | None = None, mode: str = "2d") -> np.ndarray:
    """Segment a ``ZYX`` stack slice by slice (``2d``) or as a volume (``3d``).

    Parameters
    ----------
    image : Image
        Single-channel ``ZYX`` image.
    backend : str
        Segmenter name (``classical``, ``unet``, ``stardist``, ``cellpose``).
    params : dict, optional
        Backend parameters.
    mode : {"2d", "3d"}
        ``2d``: every slice is segmented on its own (labels of different
        slices are unrelated; ids are made unique over the stack); ``3d``: one call.

    Returns
    -------
    ndarray of int32
        ``ZYX`` labels.
    """
    from ..segment import get_segmenter

    seg = get_segmenter(backend)
    p = seg.params(params or {})
    if mode == "3d":
        return np.asarray(seg.segment(image, p), np.int32)
    stack = np.zeros(image.spatial().shape, np.int32)
    offset = 0
    for z in range(stack.shape[0]):
        lab = np.asarray(seg.segment(image.sel(z=z), p), np.int32)
        stack[z] = np.where(lab > 0, lab + offset, 0)
        offset = max(offset, int(stack[z].max()))
    return stack


def segmentation_along_depth(data: dict, models: dict, profiles: pd.DataFrame | None = None,
                             keep_labels: bool = False):
    """Run each model on each stack and score it per slice against the truth.

    Parameters
    ----------
    data : dict
        From :func:`load_conditions` (stacks without labels are skipped).
    models : dict
        ``{name: {"backend": str, "params": dict, "mode": "2d" | "3d"}}``.  A
        model that cannot be found (:class:`~opsef_core.errors.ModelNotFoundError`)
        is skipped with a warning and listed in ``attrs["skipped"]``.
    profiles : DataFrame, optional
        From :func:`clearing_profiles`; adds its depth columns
        (``percent_max_diameter``, ``depth_pct``, ``side``) to each slice.
    keep_labels : bool
        Also return the label stacks.

    Returns
    -------
    DataFrame (and dict when ``keep_labels``)
        Per condition, image, model and z: ``pixel_f1``, ``aji``, ``n_true``,
        ``n_pred``, ``count_ratio`` (+ depth columns) and ``seconds`` (per stack).
        The dict maps ``(condition, image, model)`` to labels.
    """
    from ..clearing import per_depth_segmentation
    from ..errors import ModelNotFoundError

    frames, labels_out, skipped = [], {}, {}
    jobs = [(c, e, m) for c, e in _iter(data) if e["labels"] is not None for m in models]
    for cond, e, mname in tqdm(jobs, desc="segmenting stacks", leave=False):
        if mname in skipped:
            continue
        backend, params, mode = _spec(mname, models[mname])
        t0 = time.perf_counter()
        try:
            pred = segment_stack(e["image"], backend, params, mode)
        except ModelNotFoundError as exc:
            log.warning("model %s skipped: %s", mname, exc)
            skipped[mname] = str(exc)
            continue
        dt = time.perf_counter() - t0
        df = per_depth_segmentation(e["labels"], pred)
        df.insert(0, "model", mname)
        df.insert(0, "image", e["name"])
        df.insert(0, "condition", cond)
        df["seconds"] = round(dt, 3)
        frames.append(df)
        if keep_labels:
            labels_out[(cond, e["name"], mname)] = pred
    if not frames:
        raise ConfigError(f"no model could be run on stacks with truth labels (skipped: {skipped})")
    out = pd.concat(frames, ignore_index=True)
    if profiles is not None:
        depth = profiles[["condition", "image", "z", "percent_max_diameter", "depth_pct", "side"]]
        out = out.merge(depth, on=["condition", "image", "z"], how="left")
    out.attrs["skipped"] = skipped
    return (out, labels_out) if keep_labels else out


# ----------------------------------------------------------------------------- transfer
def slice_pairs(entries: list, min_objects: int = 1):
    """2D training pairs: every slice of the stacks holding at least ``min_objects`` truth nuclei.

    Returns
    -------
    opsef_core.train.data.TrainingPairs
    """
    from ..train.data import TrainingPairs

    imgs, labs, names = [], [], []
    for e in entries:
        if e["labels"] is None:
            raise ConfigError(f"stack {e['name']!r} has no truth labels to train on")
        stack = e["image"].spatial()
        for z in range(stack.shape[0]):
            lab = e["labels"][z]
            if np.unique(lab[lab > 0]).size >= min_objects:
                imgs.append(np.asarray(stack[z], np.float32))
                labs.append(np.asarray(lab, np.int32))
                names.append(f"{e['name']}_z{z:03d}")
    if not imgs:
        raise ConfigError("no slice with enough truth nuclei to train on")
    return TrainingPairs(imgs, labs, names)


def _split_entries(entries: list, train_images: int) -> tuple[list, list]:
    """First ``train_images`` stacks train, the rest test (all of them test when there is only one)."""
    n = max(1, min(int(train_images), len(entries)))
    train, test = entries[:n], entries[n:]
    return train, (test or entries)


def train_condition_unets(data: dict, out_dir, train_images: int = 1, seed: int = 0,
                          **train_kwargs) -> pd.DataFrame:
    """Train one small 2D U-Net (3-class) per condition on the slices of its training stacks.

    Parameters
    ----------
    data : dict
        From :func:`load_conditions`.
    out_dir : path
        A model folder ``out_dir/unet_<condition>`` is written per condition.
    train_images : int
        The first ``train_images`` stacks of each condition train; the others
        are kept for :func:`transfer_matrix` (with a single stack, the same
        stack is used for both — said in the ``note`` column).
    seed : int
        Training seed.
    **train_kwargs
        Passed to :func:`opsef_core.train.unet.train_unet` (``epochs``,
        ``patch_size``, ``filters``, ``depth``, ``steps_per_epoch`` ...).

    Returns
    -------
    DataFrame
        Per condition: ``condition``, ``model_dir``, ``train_stacks``,
        ``n_slices``, ``best_val_loss``, ``seconds``, ``note``.
    """
    import json

    from ..train.unet import train_unet

    out_dir = Path(out_dir)
    rows = []
    for cond, entries in data.items():
        train, test = _split_entries(entries, train_images)
        pairs = slice_pairs(train)
        t0 = time.perf_counter()
        folder = train_unet(pairs, out_dir / f"unet_{cond}", variant="3class", dims=2, seed=seed,
                            device="cpu", **train_kwargs)
        info = json.loads((folder / "training.json").read_text())
        rows.append({"condition": cond, "model_dir": str(folder),
                     "train_stacks": ",".join(e["name"] for e in train), "n_slices": len(pairs),
                     "best_val_loss": info["best_val_loss"], "seconds": round(time.perf_counter() - t0, 2),
                     "note": "" if test is not entries else "single stack: tested on its training stack"})
    return pd.DataFrame(rows)


def transfer_matrix(data: dict, trained: pd.DataFrame, train_images: int = 1,
                    unet_params: dict | None = None) -> pd.DataFrame:
    """Models trained on condition A tested on condition B, for every A and B.

    Test stacks are those of B not used for training (see
    :func:`train_condition_unets`); scores are pooled over their slices.

    Parameters
    ----------
    data : dict
        From :func:`load_conditions`.
    trained : DataFrame
        From :func:`train_condition_unets` (``condition``, ``model_dir``).
    train_images : int
        Must equal the value used for training.
    unet_params : dict, optional
        Extra ``unet`` decoding parameters (``prob_threshold``, ``instances`` ...).

    Returns
    -------
    DataFrame
        ``train``, ``test``, ``pixel_f1`` (foreground Dice over all test voxels),
        ``aji`` (mean over slices holding truth nuclei), ``f1@0.5`` (object F1
        pooled over those slices), ``n_slices``.
    """
    from ..clearing import per_depth_segmentation
    from ..evaluate import match, pool

    rows = []
    for _, tr in trained.iterrows():
        params = {"model": tr["model_dir"], "device": "cpu", **(unet_params or {})}
        for cond, entries in data.items():
            _, test = _split_entries(entries, train_images)
            tp = fp_fn = 0
            ajis, matchings = [], []
            for e in test:
                pred = segment_stack(e["image"], "unet", params, mode="2d")
                gt = e["labels"]
                gf, pf = gt > 0, pred > 0
                tp += int(np.count_nonzero(gf & pf))
                fp_fn += int(np.count_nonzero(gf ^ pf))
                per = per_depth_segmentation(gt, pred)
                has = per["n_true"] > 0
                ajis += per.loc[has, "aji"].tolist()
                matchings += [match(gt[z], pred[z], 0.5) for z in np.flatnonzero(has.to_numpy())]
            pooled = pool(matchings)
            rows.append({"train": tr["condition"], "test": cond,
                         "pixel_f1": 2 * tp / (2 * tp + fp_fn) if tp + fp_fn else 1.0,
                         "aji": float(np.mean(ajis)) if ajis else float("nan"),
                         "f1@0.5": float(pooled["f1"]), "n_slices": len(ajis)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures
def plot_profiles(profiles: pd.DataFrame, metrics=CONTRAST_METRICS, band=(70.0, 100.0)):
    """Metrics along depth (``depth_pct``: 0 top, 100 centre, 200 bottom), one line per condition and stack.

    The 70–100 % band is shaded on both sides of the centre.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    colours = dict(zip(profiles["condition"].unique(), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, m in zip(axes[0], metrics):
        for (cond, name), g in profiles.groupby(["condition", "image"], sort=False):
            g = g.sort_values("depth_pct")
            ax.plot(g["depth_pct"], g[m].replace([np.inf, -np.inf], np.nan), ".-", color=colours[cond],
                    alpha=0.8, label=f"{cond} {name}")
        if band is not None:
            ax.axvspan(band[0], band[1], color="0.9", zorder=0)
            ax.axvspan(200 - band[1], 200 - band[0], color="0.9", zorder=0)
        ax.axvline(100, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("depth (% max diameter; 100 = centre)")
        ax.set_title(m)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_segmentation_depth(seg: pd.DataFrame, metrics=("pixel_f1", "aji")):
    """Pixel F1 and AJI along depth: one panel per metric, one line per model and condition."""
    import matplotlib.pyplot as plt

    x = "depth_pct" if "depth_pct" in seg.columns else "z"
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.4), squeeze=False)
    styles = {c: s for c, s in zip(seg["condition"].unique(), ["-", "--", ":", "-."])}
    colours = dict(zip(seg["model"].unique(), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, m in zip(axes[0], metrics):
        for (cond, model), g in seg.groupby(["condition", "model"], sort=False):
            g = g.groupby(x, as_index=False)[m].mean().sort_values(x)
            ax.plot(g[x], g[m], styles[cond], color=colours[model], label=f"{model} / {cond}")
        ax.set_xlabel("depth (% max diameter; 100 = centre)" if x == "depth_pct" else "z")
        ax.set_ylabel(m)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_counts(seg: pd.DataFrame):
    """Nuclei per slice against the truth count, one panel per condition (first stack of each)."""
    import matplotlib.pyplot as plt

    conds = list(seg["condition"].unique())
    fig, axes = plt.subplots(1, len(conds), figsize=(4.8 * len(conds), 3.4), squeeze=False)
    for ax, cond in zip(axes[0], conds):
        sub = seg[seg["condition"] == cond]
        first = sub["image"].iloc[0]
        sub = sub[sub["image"] == first]
        truth = sub.drop_duplicates("z").sort_values("z")
        ax.plot(truth["z"], truth["n_true"], "k-", lw=2, label="truth")
        for model, g in sub.groupby("model", sort=False):
            g = g.sort_values("z")
            ax.plot(g["z"], g["n_pred"], ".-", label=model)
        ax.set_title(f"{cond} ({first})")
        ax.set_xlabel("z slice (top → bottom)")
        ax.set_ylabel("nuclei in slice")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_transfer(matrix: pd.DataFrame, metrics=("pixel_f1", "aji")):
    """Heat maps of the transfer matrix (rows: trained on, columns: tested on)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.2), squeeze=False)
    order = list(dict.fromkeys(matrix["train"]))
    for ax, m in zip(axes[0], metrics):
        tab = matrix.pivot(index="train", columns="test", values=m).reindex(index=order, columns=order)
        im = ax.imshow(tab.to_numpy(float), vmin=0, vmax=1, cmap="viridis")
        for i in range(tab.shape[0]):
            for j in range(tab.shape[1]):
                v = tab.iat[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(order)), order)
        ax.set_yticks(range(len(order)), order)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(m)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig

