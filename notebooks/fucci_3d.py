# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # FUCCI in 3D: nuclei, cell-cycle phases, radial distribution
#
# **What it does.** Preprocesses a 3-channel FUCCI stack (nuclear stain, red Cdt1 = G1, green
# Geminin = S/G2/M) with the study's chain (values below a small threshold set to zero, gamma,
# CLAHE, median, white top-hat against small bright artefacts), segments the nuclei in 3D with
# several models side by side (classical threshold + watershed, StarDist 3D, Cellpose 3D, the
# distance U-Net with instances by connected components *and* by seeded watershed), scores them
# against the truth (F1 at IoU 0.5, AJI), measures per-nucleus red and green intensities, calls
# phases with explained, adjustable thresholds, and reports phase fractions, the radial
# distribution of phases from the spheroid centre, 3D shape (volume, sphericity) and the phase
# accuracy against the truth (confusion matrix).
#
# **How.** The segmentation is an ordinary run of the run engine: the preprocessing chain and the
# models become a run config (`pipelines` × `segmenters`, the schema of `configs/demo.json`;
# `configs/fucci_3d.json` is this notebook's default config). The engine's run folder (inside this
# notebook's run folder) holds `run.json`, `summary.csv`, the label images (`labels/`),
# `measurements.csv` (per nucleus, in µm, with every channel's intensities) and `metrics.csv`
# (scores against the truth). Everything after the run — scores, phase calls, radial
# distribution, shapes, phase accuracy — is read from that folder, and
# `opsef run <run folder>/run.json` repeats the segmentation with identical labels.
#
# **Data it expects.** `data_dir/images/<name>.tif` with axes CZYX (ImageJ ZCYX is fine) and
# channel names; optionally `labels/<name>.tif` (3D truth nuclei) and `phases/<name>.csv`
# (`label,phase`). The demo is `demo_data/fucci3d` (24×96×96, 26 nuclei, 4 phases).
#
# **Parameters that matter most.** `channels` (names of nuclear, red, green channels; the
# nuclear one is segmented), `red_threshold` / `green_threshold` (`"otsu"` or a number on the
# normalised scale, 1 ≈ a bright nucleus), `models` (segmenter entries `name`, `backend`,
# `params`, optionally `sweep`, as in a run config; model names under `models/`), `phase_model`
# (whose nuclei the phases are called on; `"best"` = highest F1 against the truth, or
# `"classical"` when there is no truth), and the preprocessing values (`gamma`, `clahe_clip`,
# `median_radius`, `artefact_radius`). For real data: point `data_dir` at your folder, use your
# trained models, raise `radial_bins`.
#
# **StarDist 3D `scale`.** A StarDist model expects objects of the size and voxel anisotropy it was
# trained on. The demo model learnt on `spheroid_clearing` (nuclei about 3 × 13 × 13 voxels in
# Z, Y, X); the FUCCI demo nuclei are about 6 × 16 × 16 voxels, so the stack is rescaled by
# `[3/6, 13/16, 13/16] ≈ [0.5, 0.8, 0.8]` before the network (labels come back at full size).
# Without it the model splits each nucleus (F1 ≈ 0.07 instead of ≈ 0.89 on the demo stack). Set
# it the same way for your data and model.

# %% tags=["parameters"]
data_dir = "../demo_data/fucci3d"
image_name = None
channels = ["hoechst", "cdt1_red", "geminin_green"]
zero_below = 0.0
gamma = 0.8
clahe_clip = 0.01
clahe_kernel = None
median_radius = 1
artefact_radius = 1
models = [
    {"name": "classical", "backend": "classical", "params": {"sigma": 1.0}},
    {"name": "stardist3d_demo", "backend": "stardist",
     "params": {"model": "stardist3d_demo", "scale": [0.5, 0.8, 0.8]}},
    {"name": "cellpose_demo_3D", "backend": "cellpose",
     "params": {"model": "cellpose_demo", "do_3D": True, "diameter": 14.0}},
    {"name": "unet3d_watershed", "backend": "unet", "params": {"model": "unet3d_demo"}},
    {"name": "unet3d_connected", "backend": "unet", "params": {"model": "unet3d_demo", "h": 0.0}},
]
phase_model = "best"
red_threshold = "otsu"
green_threshold = "otsu"
background_percentile = 50.0
norm_percentile = 99.0
radial_bins = 3
match_distance_px = 5.0
out_root = "../runs"

# %%
from opsef_core.notebook import start_notebook_run

run = start_notebook_run("fucci_3d", {k: globals()[k] for k in [
    "data_dir", "image_name", "channels", "zero_below", "gamma", "clahe_clip", "clahe_kernel",
    "median_radius", "artefact_radius", "models", "phase_model", "red_threshold", "green_threshold",
    "background_percentile", "norm_percentile", "radial_bins", "match_distance_px", "out_root"]})
print("run folder:", run.folder)

# %%
import logging

import pandas as pd

from opsef_core import widgets
from opsef_core.science import fucci
from opsef_core.workflows import fucci3d as wf

logging.basicConfig(level=logging.WARNING)
data = wf.load_fucci(data_dir=data_dir, name=image_name, channels=channels)
raw = data["image"]
truth = data["labels"]
nuc, red_ch, green_ch = channels
print(data["name"], raw.axes, raw.shape, raw.pixel_size, raw.channel_names)

# %% [markdown]
# ## 1. Preprocessing
# Every channel goes through `clip(zero_below) → gamma → CLAHE (3D) → median → subtract_tophat`:
# the white top-hat with a ball of `artefact_radius` isolates bright specks smaller than the ball,
# which are subtracted (right column: what was removed). This pipeline is the run config's only
# `pipelines` entry; the figure applies it here only to show it. The segmenters see the processed
# nuclear channel; intensities for the phase calls come from the raw channels (background-corrected
# per channel).

# %%
pipeline = wf.fucci_pipeline(zero_below=zero_below, gamma=gamma, clahe_clip=clahe_clip,
                             clahe_kernel=clahe_kernel, median_radius=median_radius,
                             artefact_radius=artefact_radius)
processed, artefacts = wf.preprocess(image=raw, pipeline=pipeline)
print("pipeline:", pipeline.describe())
z_show = wf.busiest_slice(labels_or_none=truth, nz=raw.spatial(c=0).shape[0])
fig = wf.before_after_figure(raw=raw, processed=processed, artefacts=artefacts, z=z_show)
run.save_json(pipeline.to_dict(), "pipeline")
run.show(fig, "preprocessing")

# %% [markdown]
# ## 2. The run: 3D segmentation with several models
# The run config holds the image, its truth labels (when `labels/` exists), the pipeline and one
# segmenter entry per model. Each segmenter gets the nuclear channel through its own `channel`
# parameter (`inputs.channel` stays unset, so `measurements.csv` keeps every channel's
# intensities). Models not found under `models/` are left out of the config and listed as
# `missing`. The two U-Net entries use the 3D U-Net `unet3d_demo` (it predicts each nucleus's
# distance to the background; trained on generated clearing-like and FUCCI-like stacks) and share
# one network pass: `unet3d_connected` (`h` 0: one nucleus per connected component of the
# foreground, the FUCCI study's way; touching nuclei merge) against `unet3d_watershed` (a seeded
# watershed from the distance maxima, with the decoding stored beside the model's weights).

# %%
config = wf.run_config(data_dir=data_dir, models=models, pipeline=pipeline, channels=channels,
                       image_name=data["name"])
run.save_json(config, "run_config")
run_dir, skipped = wf.run_fucci(config=config, out=run.folder)
print("engine run folder:", run_dir)
seg_table = wf.segmentation_table(run_dir=run_dir, skipped=skipped)
run.save_table(seg_table, "segmentation_runs")
seg_table

# %% [markdown]
# Scores against the truth come from the run's `metrics.csv` (F1, precision and recall at IoU 0.5,
# mean IoU of the matched pairs, AJI); the label images from its `labels/`.

# %%
results = wf.run_labels(run_dir=run_dir)
scores = None
if truth is not None:
    scores = wf.scores_from_run(run_dir=run_dir)
    run.save_table(scores, "scores")
    display(scores.round(3))
fig = wf.labels_figure(image2d=processed.spatial(c=nuc), results=results, truth=truth, z=z_show)
run.show(fig, "segmentations")

# %% [markdown]
# ## 3. Phase calls
# On the nuclei of `phase_model` (read from the run's labels). Per nucleus: mean red and green
# minus each channel's background (the `background_percentile` percentile of the pixels outside
# nuclei), divided by the `norm_percentile` percentile over nuclei. "High" = strictly above the
# threshold; `"otsu"` splits each channel's per-nucleus values into a low and a high group (exact
# Otsu on the values). G1 = red high & green low; S/G2/M = green high & red low; G1/S = both
# high; unlabeled = both low. The 3D shape of each nucleus (volume in µm³, equivalent diameter,
# sphericity, surface area) comes from the run's `measurements.csv`.

# %%
if phase_model == "best":
    chosen = scores["model"].iloc[0] if scores is not None else "classical"
else:
    chosen = phase_model
if chosen not in results:
    raise ValueError(f"phase_model {chosen!r} did not run; available: {sorted(results)}")
labels = results[chosen]
phases = wf.phase_table(labels=labels, image=raw, red_channel=red_ch, green_channel=green_ch,
                        red_threshold=red_threshold, green_threshold=green_threshold,
                        background_percentile=background_percentile, norm_percentile=norm_percentile)
shape = wf.shape_table(run_dir=run_dir, model=chosen)
nuclei = phases.merge(shape, on="label")
nuclei.insert(0, "model", chosen)
run.save_table(nuclei, "nuclei")
run.save_json({"model": chosen, "thresholds": phases.attrs["thresholds"],
               "threshold_methods": phases.attrs["threshold_methods"],
               "background": phases.attrs["background"], "normaliser": phases.attrs["normaliser"]},
              "thresholds")
print("thresholds:", phases.attrs["thresholds"], phases.attrs["threshold_methods"])
fig = wf.phase_scatter(df=phases, title=f"nuclei from {chosen}")
run.show(fig, "phase_scatter")

# %% [markdown]
# ### Explore the phase thresholds, slice by slice
# The thresholds decide every phase call, so look at what they do: the `z` slider browses the
# stack (nuclear channel) with each nucleus's contour in its phase's colour, and the red and green
# threshold sliders re-call the phases from the per-nucleus values above (no re-segmentation, no
# re-measuring): the counts, the contour colours and the scatter follow. The sliders start at the
# thresholds used above; a value you prefer can be put into `red_threshold` / `green_threshold`
# and the notebook re-run. The static figure is saved as `phase_explorer.png`.

# %%
phase_view = widgets.phase_explorer(labels=labels, image=raw, table=phases, nuclear_channel=nuc,
                                    red_threshold=red_threshold, green_threshold=green_threshold, z=z_show)
run.save_json({"thresholds": phase_view.state["thresholds"], "counts": phase_view.state["counts"]},
              "phase_explorer")
run.show(phase_view.figure, "phase_explorer")
phase_view  # the live z and threshold sliders (in Jupyter)

# %%
fractions = fucci.phase_fractions(df=phases)
run.save_table(fractions, "phase_fractions")
fractions

# %% [markdown]
# ## 4. Radial distribution and 3D shape
# Distances (µm) from the spheroid centre (mean of the nuclei centroids), in `radial_bins`
# equal-width bins; volume (µm³) and sphericity per phase.

# %%
spacing = [raw.pixel_size.get(a, 1.0) for a in "ZYX"]
radial = fucci.radial_distribution(df=phases, pixel_size=spacing, bins=radial_bins)
run.save_table(radial, "radial_distribution")
run.show(wf.radial_figure(radial=radial), "radial_distribution")
run.show(wf.shape_figure(df=nuclei), "shape_by_phase")
radial.round(3)

# %% [markdown]
# ## 5. Phase accuracy against the truth
# Predicted nuclei are matched one-to-one to truth nuclei by centroid distance (Hungarian,
# at most `match_distance_px` pixels). The second matrix calls phases on the *truth* nuclei: it
# isolates the threshold step from the segmentation.

# %%
if data["phases"] is not None and truth is not None:
    truth_df = wf.truth_phase_table(truth_labels=truth, phases=data["phases"])
    acc = fucci.phase_accuracy(pred_df=phases, truth_df=truth_df, match="centroid", max_distance=match_distance_px)
    on_truth = wf.phase_table(labels=truth, image=raw, red_channel=red_ch, green_channel=green_ch,
                              red_threshold=red_threshold, green_threshold=green_threshold,
                              background_percentile=background_percentile, norm_percentile=norm_percentile)
    acc_truth = fucci.phase_accuracy(pred_df=on_truth, truth_df=truth_df, match="label")
    summary = pd.DataFrame([
        {"nuclei": chosen, "accuracy": acc["accuracy"], "n_matched": acc["n_matched"],
         "n_truth": acc["n_truth"], "n_pred": acc["n_pred"]},
        {"nuclei": "truth labels", "accuracy": acc_truth["accuracy"], "n_matched": acc_truth["n_matched"],
         "n_truth": acc_truth["n_truth"], "n_pred": acc_truth["n_pred"]},
    ])
    run.save_table(summary, "phase_accuracy")
    run.save_table(acc["confusion"].reset_index(), "confusion")
    fig = wf.confusion_figure(confusion=acc["confusion"],
                              title=f"phases on {chosen} nuclei: accuracy {acc['accuracy']:.2f}")
    run.show(fig, "confusion")
    display(summary)

# %%
run.finish()
