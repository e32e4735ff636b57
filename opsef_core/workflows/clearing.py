"""Workflow behind ``notebooks/spheroid_clearing``: clearing quality and segmentation along depth.

The science is in :mod:`opsef_core.science.clearing`
(``docs/definitions.md#clearing-quality-along-depth``); this module strings it together for data laid out as
``DATA/<condition>/images/*.tif`` with instance truth in
``DATA/<condition>/labels/`` (same file names):

* :func:`load_conditions` — read every condition's ``ZYX`` stacks and truth labels;
* :func:`clearing_profiles` — per slice mean intensity, SNR, CNR (Bhattacharyya,
  Fisher) with the depth normalised to percent of the maximum diameter, and
  a signed ``depth_pct`` axis running 0 → 100 (centre) → 200 through the spheroid;
* :func:`band_comparison` — conditions compared in the 70–100 % band;
* :func:`segmentation_config` — the run config of one condition: its stacks are the items,
  each model a segmenter (2D models plane by plane, ``"slices": true``; 3D models on the
  volume); :func:`execute_config` runs it with :func:`opsef_core.run.execute`;
* :func:`depth_scores` — pixel F1, AJI and nuclei counts per slice of a run's label stacks
  against its truth (:func:`opsef_core.science.clearing.per_depth_segmentation`);
* :func:`segmentation_along_depth` — both: one engine run per condition, then the per-slice
  scores (models whose files are missing are skipped, :func:`usable_models`);
* :func:`run_stack_labels` / :func:`depth_explorers` — a run's label stacks of one image, and
  a depth slider per stack showing SNR/CNR and the segmentation at that depth
  (:func:`opsef_core.widgets.depth_explorer`; nothing is segmented again);
* :func:`train_condition_unets` / :func:`transfer_matrix` — tiny 2D U-Nets trained
  on the slices of each condition (outside the engine: training is not segmentation) and
  applied to every condition by engine runs whose segmenters are the trained model folders;
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
from ..run.execute import execute_config
from ..viz import new_figure

__all__ = [
    "CONTRAST_METRICS",
    "RUN_OUTPUTS",
    "band_comparison",
    "clearing_profiles",
    "depth_explorers",
    "depth_scores",
    "execute_config",
    "load_conditions",
    "model_segmenters",
    "plot_counts",
    "plot_profiles",
    "plot_segmentation_depth",
    "plot_transfer",
    "run_stack_labels",
    "segmentation_along_depth",
    "segmentation_config",
    "slice_pairs",
    "train_condition_unets",
    "transfer_matrix",
    "usable_models",
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
        ``{condition: [{"name", "image" (Image, ZYX), "labels" (ndarray or None), "path"
        (the stack's file, absolute), "labels_path" (its truth file or None)}, ...]}``.

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
            entries.append({"name": f.stem, "image": img, "labels": labels, "path": str(Path(f).resolve()),
                            "labels_path": str(lab_path.resolve()) if labels is not None else None})
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
        ``condition``, ``image``, the :func:`opsef_core.science.clearing.clearing_metrics`
        columns (``z``, ``percent_max_diameter``, ``mean_norm``, ``snr``,
        ``cnr_bc``, ``cnr_fr``, ...), ``side`` (``top`` up to the centre slice,
        ``bottom`` beyond) and ``depth_pct`` (0..200, 100 = centre).
    """
    from ..science.clearing import clearing_metrics

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
#: what the engine writes for these runs: labels and tables (the notebook draws its own figures)
RUN_OUTPUTS = {"overlays": False, "montage": False, "rois": False, "measurements": True}


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


def model_segmenters(models: dict) -> list[dict]:
    """The run config's ``segmenters`` for a notebook's ``models`` dict.

    Parameters
    ----------
    models : dict
        ``{name: {"backend": str, "params": dict, "mode": "2d" | "3d"}}``; ``2d`` (the
        default) segments the stack plane by plane with a 2D model (``"slices": true``: one
        network pass per plane, ids unique over the stack), ``3d`` segments the volume.

    Returns
    -------
    list of dict
        One :class:`~opsef_core.config.SegmenterConfig` entry per model, named by its key.

    Raises
    ------
    ConfigError
        No model, or a model that is not ``{"backend", "params", "mode"}``.
    """
    if not models:
        raise ConfigError("models: give at least one model")
    out = []
    for name, spec in models.items():
        backend, params, mode = _spec(name, spec)
        out.append({"name": str(name), "backend": backend, "params": params, "slices": mode == "2d"})
    return out


def usable_models(models: dict) -> tuple[dict, dict]:
    """Split ``models`` into those whose model files are found and those that are not.

    Each model is resolved the way the run engine does before it starts
    (``Segmenter.describe_model``: :func:`opsef_core.models.resolve_model`), so a model the
    engine would refuse (:class:`~opsef_core.errors.ModelNotFoundError`) is left out here
    with a warning instead of failing the run.  Invalid parameters still raise.

    Returns
    -------
    (dict, dict)
        The usable part of ``models`` and ``{name: reason}`` of the missing ones.
    """
    from ..errors import ModelNotFoundError
    from ..segment import get_segmenter

    usable, skipped = {}, {}
    for entry in model_segmenters(models):
        seg = get_segmenter(entry["backend"])
        params = seg.params(entry["params"])
        try:
            seg.describe_model(params)
        except ModelNotFoundError as exc:
            log.warning("model %s skipped: %s", entry["name"], exc)
            skipped[entry["name"]] = str(exc)
            continue
        usable[entry["name"]] = models[entry["name"]]
    return usable, skipped


def _run_config(images, labels, models: dict, files=None, name: str = "spheroid_clearing",
                description: str = "", seed: int = 0) -> dict:
    inputs: dict = {"path": Path(images).as_posix(),
                    "include": list(files) if files else ["*.tif", "*.tiff"]}
    if labels is not None:
        inputs["ground_truth"] = Path(labels).as_posix()
    return {
        "schema_version": 1,
        "name": name,
        "description": description,
        "inputs": inputs,
        "pipelines": [{"name": "raw", "steps": []}],
        "segmenters": model_segmenters(models),
        "outputs": dict(RUN_OUTPUTS),
        "seed": int(seed),
    }


def segmentation_config(data_dir, condition: str, models: dict, files=None, name: str | None = None,
                        seed: int = 0) -> dict:
    """The run config segmenting one condition's stacks with every model.

    One run per condition: ``inputs.path`` is ``data_dir/<condition>/images`` and the truth
    ``data_dir/<condition>/labels`` (same file names, so ``label_suffix`` stays empty); the
    condition is the run's (its name and folders), not a column the engine knows.  Every
    stack is an item; each model is a segmenter (:func:`model_segmenters`) with the raw
    image as its only pipeline.  The engine writes ``labels/``, ``summary.csv``,
    ``measurements.csv`` and ``metrics.csv`` (whole-stack scores); the per-slice study
    scores come from :func:`depth_scores`.

    Parameters
    ----------
    data_dir : path
        Kept as given: relative paths resolve against the config's folder (or the
        ``base_dir`` of :func:`execute_config`).
    condition : str
        Sub-folder of ``data_dir``.
    models : dict
        As :func:`model_segmenters`.
    files : list of str, optional
        File names to segment (``inputs.include``; default every TIFF of the folder).
    name : str, optional
        Config name, the run folder's stem (default ``spheroid_clearing-<condition>``).
    seed : int
        Recorded in the config.

    Returns
    -------
    dict
        A run config (validate with :func:`opsef_core.config.config_from_dict`).
    """
    data_dir = Path(data_dir)
    return _run_config(data_dir / condition / "images", data_dir / condition / "labels", models, files=files,
                       name=name or f"spheroid_clearing-{condition}", seed=seed,
                       description=_description(condition, models))


def _description(condition: str, models: dict) -> str:
    names = ", ".join(f"{e['name']} ({'plane by plane' if e['slices'] else '3D'})"
                      for e in model_segmenters(models))
    return (f"Spheroid clearing, condition {condition!r}: nuclei segmented by {names}, scored against the "
            "truth; what notebooks/spheroid_clearing runs per condition (the other condition: the same "
            "config with inputs.path and inputs.ground_truth in its folder)")


def _condition_run(cond: str, entries: list, models: dict, out, name: str, description: str,
                   seed: int = 0) -> Path:
    """Run ``models`` on the stacks ``entries`` (from :func:`load_conditions`) of one condition."""
    from ..config import config_from_dict
    from ..run import plan_items

    if not entries:
        raise ConfigError(f"condition {cond!r}: no stack to segment")
    missing = [e["name"] for e in entries if not e.get("path")]
    if missing:
        raise ConfigError(f"condition {cond!r}: stacks {missing} have no file (the run engine reads files; "
                          "use load_conditions)")
    folders = {Path(e["path"]).parent for e in entries}
    label_folders = {Path(e["labels_path"]).parent for e in entries if e.get("labels_path")}
    if len(folders) != 1 or len(label_folders) > 1:
        raise ConfigError(f"condition {cond!r}: the stacks of one run must share one image folder and one "
                          f"label folder, got {sorted(map(str, folders | label_folders))}")
    files = [Path(e["path"]).name for e in entries]
    config = _run_config(folders.pop(), label_folders.pop() if label_folders else None, models, files=files,
                         name=name, description=description, seed=seed)
    # include patterns without wildcards match substrings: check that the run reads exactly these stacks
    planned = sorted(Path(it.path).name for it in plan_items(config_from_dict(config).resolved()))
    if planned != sorted(files):
        raise ConfigError(f"condition {cond!r}: the run would read {planned}, not the stacks {sorted(files)}")
    return execute_config(config, out=out)


def _run_stacks(run_dir) -> pd.DataFrame:
    """``summary.csv`` of a run with its ground-truth file per image (from the recorded config)."""
    from ..config import load_config
    from ..errors import RunFolderError
    from ..run import plan_items

    run_dir = Path(run_dir)
    if not (run_dir / "summary.csv").is_file():
        raise RunFolderError("no summary.csv in the run folder", run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    truth = {it.id: it.ground_truth for it in plan_items(load_config(run_dir / "run.json").resolved())}
    summary["truth"] = summary["image"].map(truth)
    return summary


def depth_scores(run_dir, condition: str | None = None, keep_labels: bool = False, names: dict | None = None):
    """Per-slice scores of every stack × segmenter of a run (:func:`~opsef_core.science.clearing.per_depth_segmentation`).

    The labels are the run's (``labels/``, via ``summary.csv``), the truth the label image the
    run paired with each stack (re-planned from ``run.json``).  Combinations that failed or
    stacks without truth are left out with a warning and listed in ``attrs["failed"]`` /
    ``attrs["no_truth"]``.

    Parameters
    ----------
    run_dir : path
        A finished run folder (e.g. from :func:`segmentation_config`).
    condition : str, optional
        Value of the ``condition`` column (default: the config's name).
    keep_labels : bool
        Also return ``{(condition, image, segmenter): labels}``.
    names : dict, optional
        ``{file name: image name}`` for the ``image`` column (default: the run's item ids,
        the file stems).

    Returns
    -------
    DataFrame (and dict when ``keep_labels``)
        ``condition``, ``image``, ``model`` (the segmenter's name), ``z``, ``pixel_f1``,
        ``aji``, ``n_true``, ``n_pred``, ``count_ratio`` and ``seconds`` (network pass +
        decoding of the whole stack, ``t_network_s + t_decode_s`` of ``summary.csv``).
    """
    from ..io import read_labels
    from ..science.clearing import per_depth_segmentation

    run_dir = Path(run_dir)
    summary = _run_stacks(run_dir)
    if condition is None:
        from ..config import load_config

        condition = load_config(run_dir / "run.json").stem
    frames, labels_out, failed, no_truth = [], {}, [], []
    truth_cache: dict[str, np.ndarray] = {}
    for row in summary.itertuples(index=False):
        if row.status != "done":
            log.warning("%s / %s failed: %s", row.image, row.segmenter, row.error)
            failed.append({"condition": condition, "image": row.image, "model": row.segmenter,
                           "error": row.error})
            continue
        if not isinstance(row.truth, str):
            no_truth.append(row.image)
            continue
        if row.truth not in truth_cache:
            truth_cache[row.truth] = read_labels(row.truth)
        pred = np.asarray(read_labels(run_dir / row.labels))
        df = per_depth_segmentation(truth_cache[row.truth], pred)
        image = (names or {}).get(row.file, row.image)
        df.insert(0, "model", row.segmenter)
        df.insert(0, "image", image)
        df.insert(0, "condition", condition)
        df["seconds"] = round(float(row.t_network_s) + float(row.t_decode_s), 3)
        frames.append(df)
        if keep_labels:
            labels_out[(condition, image, row.segmenter)] = pred
    if no_truth:
        log.warning("%s: no truth labels for %s (not scored per slice)", run_dir.name, sorted(set(no_truth)))
    cols = ["condition", "image", "model", "z", "pixel_f1", "aji", "n_true", "n_pred", "count_ratio", "seconds"]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    out.attrs.update(failed=failed, no_truth=sorted(set(no_truth)))
    return (out, labels_out) if keep_labels else out


def segmentation_along_depth(data: dict, models: dict, profiles: pd.DataFrame | None = None,
                             keep_labels: bool = False, out=None, seed: int = 0):
    """Run each model on each stack with the run engine and score it per slice against the truth.

    One engine run per condition (:func:`segmentation_config`: the condition's stacks are
    the items, each model a segmenter; ``mode: 2d`` is ``"slices": true``), then
    :func:`depth_scores` on each run folder.

    Parameters
    ----------
    data : dict
        From :func:`load_conditions` (stacks without labels are skipped).
    models : dict
        ``{name: {"backend": str, "params": dict, "mode": "2d" | "3d"}}``.  A
        model that cannot be found (:class:`~opsef_core.errors.ModelNotFoundError`)
        is skipped with a warning and listed in ``attrs["skipped"]`` (:func:`usable_models`).
    profiles : DataFrame, optional
        From :func:`clearing_profiles`; adds its depth columns
        (``percent_max_diameter``, ``depth_pct``, ``side``) to each slice.
    keep_labels : bool
        Also return the label stacks.
    out : path, optional
        Parent of the run folders (default ``runs/`` in the working directory).
    seed : int
        Recorded in the run configs.

    Returns
    -------
    DataFrame (and dict when ``keep_labels``)
        Per condition, image, model and z: ``pixel_f1``, ``aji``, ``n_true``,
        ``n_pred``, ``count_ratio`` (+ depth columns) and ``seconds`` (network pass +
        decoding per stack).  ``attrs``: ``skipped`` (models not found), ``failed``
        (combinations the engine recorded as failed), ``runs`` (``{condition: run
        folder}``).  The dict maps ``(condition, image, model)`` to labels.
    """
    for name, spec in models.items():
        _spec(name, spec)  # bad model entries fail before anything runs
    usable, skipped = usable_models(models)
    frames, labels_out, failed, runs = [], {}, [], {}
    if usable:
        for cond, entries in tqdm(list(data.items()), desc="segmenting conditions", leave=False):
            entries = [e for e in entries if e["labels"] is not None]
            if not entries:
                continue
            run_dir = _condition_run(cond, entries, usable, out, name=f"spheroid_clearing-{cond}", seed=seed,
                                     description=_description(cond, usable))
            runs[cond] = run_dir
            res = depth_scores(run_dir, condition=cond, keep_labels=keep_labels,
                               names={Path(e["path"]).name: e["name"] for e in entries})
            df, labs = res if keep_labels else (res, {})
            failed += df.attrs["failed"]
            frames.append(df)
            labels_out.update(labs)
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ConfigError(f"no model could be run on stacks with truth labels (skipped: {skipped}, "
                          f"failed: {failed})")
    out_df = pd.concat(frames, ignore_index=True)
    if profiles is not None:
        depth = profiles[["condition", "image", "z", "percent_max_diameter", "depth_pct", "side"]]
        out_df = out_df.merge(depth, on=["condition", "image", "z"], how="left")
    out_df.attrs.update(skipped=skipped, failed=failed, runs=runs)
    return (out_df, labels_out) if keep_labels else out_df


def run_stack_labels(run_dir, file: str) -> dict[str, np.ndarray]:
    """``{segmenter: ZYX labels}`` of one stack of a run, read from its ``labels/``.

    Parameters
    ----------
    run_dir : path
        A finished run folder.
    file : str
        The stack's file name (``summary.csv``'s ``file``) or item id (``image``).

    Returns
    -------
    dict
        Finished segmenters only, in run order.

    Raises
    ------
    RunFolderError
        The run has no finished segmentation of that stack.
    """
    from ..errors import RunFolderError
    from ..io import read_labels

    run_dir = Path(run_dir)
    summary = _run_stacks(run_dir)
    rows = summary[((summary["file"].astype(str) == str(file)) | (summary["image"].astype(str) == str(file)))
                   & (summary["status"] == "done")]
    if rows.empty:
        raise RunFolderError(f"no finished segmentation of {file!r} in the run", run_dir)
    return {str(r.segmenter): np.asarray(read_labels(run_dir / r.labels)) for r in rows.itertuples(index=False)}


def depth_explorers(data: dict, seg: pd.DataFrame, profiles: pd.DataFrame, interactive: bool = True) -> dict:
    """One depth explorer per segmented stack: SNR/CNR and the segmentation at a chosen depth.

    Parameters
    ----------
    data : dict
        From :func:`load_conditions` (the stacks segmented).
    seg : DataFrame
        From :func:`segmentation_along_depth` (its ``attrs["runs"]`` name the run folders; its
        rows give pixel F1 and AJI per slice).
    profiles : DataFrame
        From :func:`clearing_profiles`.
    interactive : bool
        Build the widgets.

    Returns
    -------
    dict
        ``{"<condition>/<image>": Explorer}`` (:func:`opsef_core.widgets.depth_explorer`).
    """
    from ..widgets import depth_explorer

    out = {}
    for cond, run_dir in seg.attrs.get("runs", {}).items():
        for e in data.get(cond, []):
            if e["labels"] is None:
                continue
            labels = run_stack_labels(run_dir, Path(e["path"]).name)
            prof = profiles[(profiles["condition"] == cond) & (profiles["image"] == e["name"])]
            scores = seg[(seg["condition"] == cond) & (seg["image"] == e["name"])]
            out[f"{cond}/{e['name']}"] = depth_explorer(e["image"], labels, prof, truth=e["labels"],
                                                        scores=scores, interactive=interactive)
    return out


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
                    unet_params: dict | None = None, out=None, seed: int = 0) -> pd.DataFrame:
    """Models trained on condition A tested on condition B, for every A and B.

    Test stacks are those of B not used for training (see
    :func:`train_condition_unets`); scores are pooled over their slices.  The trained
    models are applied by the run engine: one run per test condition B whose segmenters are
    the trained models (``"model"``: the model folder, ``"slices": true``), named
    ``trained_on_<A>``; ``attrs["runs"]`` maps B to its run folder.

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
    out : path, optional
        Parent of the run folders (default ``runs/`` in the working directory).
    seed : int
        Recorded in the run configs.

    Returns
    -------
    DataFrame
        ``train``, ``test``, ``pixel_f1`` (foreground Dice over all test voxels),
        ``aji`` (mean over slices holding truth nuclei), ``f1@0.5`` (object F1
        pooled over those slices), ``n_slices``.
    """
    from ..errors import SegmentationError
    from ..evaluate import match, pool
    from ..io import read_labels
    from ..science.clearing import per_depth_segmentation

    if trained["condition"].duplicated().any():
        raise ConfigError(f"trained: one model per condition, got {list(trained['condition'])}")
    names = {f"trained_on_{tr['condition']}": tr["condition"] for _, tr in trained.iterrows()}
    models = {name: {"backend": "unet", "params": {"model": str(Path(tr["model_dir"]).resolve()), "device": "cpu",
                                                   **(unet_params or {})}}
              for name, (_, tr) in zip(names, trained.iterrows())}
    scores: dict[tuple[str, str], dict] = {}
    runs = {}
    for cond, entries in data.items():
        _, test = _split_entries(entries, train_images)
        run_dir = _condition_run(cond, test, models, out, name=f"spheroid_clearing-transfer-{cond}", seed=seed,
                                 description=f"spheroid clearing transfer: the per-condition U-Nets tested on "
                                             f"{cond!r}")
        runs[cond] = run_dir
        summary = _run_stacks(run_dir)
        for row in summary.itertuples(index=False):
            if row.status != "done":
                raise SegmentationError(f"{row.segmenter} on {row.image} failed in {run_dir}: {row.error}")
            if not isinstance(row.truth, str):
                raise ConfigError(f"stack {row.image!r} of condition {cond!r} has no truth labels to test on")
            acc = scores.setdefault((names[row.segmenter], cond), {"tp": 0, "fp_fn": 0, "ajis": [], "matchings": []})
            gt = np.asarray(read_labels(row.truth))
            pred = np.asarray(read_labels(run_dir / row.labels))
            gf, pf = gt > 0, pred > 0
            acc["tp"] += int(np.count_nonzero(gf & pf))
            acc["fp_fn"] += int(np.count_nonzero(gf ^ pf))
            per = per_depth_segmentation(gt, pred)
            has = per["n_true"] > 0
            acc["ajis"] += per.loc[has, "aji"].tolist()
            acc["matchings"] += [match(gt[z], pred[z], 0.5) for z in np.flatnonzero(has.to_numpy())]
    rows = []
    for a in trained["condition"]:
        for b in data:
            acc = scores[(a, b)]
            tp, fp_fn, ajis = acc["tp"], acc["fp_fn"], acc["ajis"]
            rows.append({"train": a, "test": b,
                         "pixel_f1": 2 * tp / (2 * tp + fp_fn) if tp + fp_fn else 1.0,
                         "aji": float(np.mean(ajis)) if ajis else float("nan"),
                         "f1@0.5": float(pool(acc["matchings"])["f1"]), "n_slices": len(ajis)})
    matrix = pd.DataFrame(rows)
    matrix.attrs["runs"] = runs
    return matrix


# ----------------------------------------------------------------------------- figures
# Figures are made with :func:`opsef_core.viz.new_figure` (no global figure state); the notebook shows
# them with ``run.show(fig, name)``.
def _colour_cycle():
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"]


def plot_profiles(profiles: pd.DataFrame, metrics=CONTRAST_METRICS, band=(70.0, 100.0)):
    """Metrics along depth (``depth_pct``: 0 top, 100 centre, 200 bottom), one line per condition and stack.

    The 70–100 % band is shaded on both sides of the centre.
    """
    fig = new_figure((3.6 * len(metrics), 3.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    colours = dict(zip(profiles["condition"].unique(), _colour_cycle().by_key()["color"]))
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
    x = "depth_pct" if "depth_pct" in seg.columns else "z"
    fig = new_figure((5 * len(metrics), 3.4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    styles = {c: s for c, s in zip(seg["condition"].unique(), ["-", "--", ":", "-."])}
    colours = dict(zip(seg["model"].unique(), _colour_cycle().by_key()["color"]))
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
    conds = list(seg["condition"].unique())
    fig = new_figure((4.8 * len(conds), 3.4))
    axes = fig.subplots(1, len(conds), squeeze=False)
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
    fig = new_figure((3.8 * len(metrics), 3.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)
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

