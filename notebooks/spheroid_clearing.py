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
# # Spheroid clearing: image quality and segmentation along depth
#
# **What it does.** Compares optically cleared and non-cleared spheroids the way the clearing study
# did: per z slice the mean intensity, SNR and contrast-to-noise ratio (Bhattacharyya coefficient and
# Fisher ratio), with the depth normalised to percent of the spheroid's maximum diameter (the slice
# of largest diameter in the binarised x–z projection is the centre, 100 %); the conditions side by
# side on one plot and compared in the 70–100 % band. Then it segments the nuclei slice by slice
# with several models (classical, the U-Net demo model, the StarDist 2D demo model), scores pixel F1
# and AJI along depth and compares nuclei counts per slice with the truth. Finally it trains a tiny
# 2D U-Net on each condition and tests each on every condition (the transfer matrix).
#
# **How it segments.** Every segmentation is a run of the opsef run engine: the `models` below become
# the segmenters of one run config per condition (`wc.segmentation_config`; the config of the
# cleared condition at the default parameters is `configs/spheroid_clearing.json`), and the
# transfer models are applied by runs whose segmenters are the trained model folders. The engine's
# run folders are kept inside this notebook's run folder (`runs/`); each holds `run.json`, the label
# stacks (`labels/`), `summary.csv`, `measurements.csv` and whole-stack `metrics.csv`, and
# `opsef run <run folder>/run.json` repeats it with identical labels. The study scores (per slice,
# transfer matrix) are computed from those label stacks.
#
# **Data it expects.** `data_dir/<condition>/images/*.tif` (single-channel ZYX stacks, imaged from
# the top) and `data_dir/<condition>/labels/*.tif` (3D truth nuclei, same names). The demo is
# `demo_data/spheroid_clearing` (2 stacks of 32×128×128 per condition).
#
# **Parameters that matter most.** `conditions`, `patch_size` (the centred patch the contrast is
# measured on), `band`, `models` (each `{"backend", "params", "mode"}`: `"2d"`, the default, runs a 2D
# model plane by plane; add `"mode": "3d"` to run a 3D model such as `stardist3d_demo` on the whole
# stack), `segment_images` (stacks per condition that are segmented), and the transfer-training budget (`train_epochs`, `train_steps`) — the demo
# values train for seconds and give rough models; raise them (e.g. 40 epochs) for real data.

# %% tags=["parameters"]
data_dir = "../demo_data/spheroid_clearing"
conditions = ["cleared", "noncleared"]
max_images = 2
patch_size = 64
band = [70.0, 100.0]
band_side = "top"
models = {
    "classical": {"backend": "classical", "params": {"sigma": 1.0, "h": 1.0}},
    "unet2d_demo": {"backend": "unet", "params": {"model": "unet2d_demo"}},
    "stardist2d_demo": {"backend": "stardist", "params": {"model": "stardist2d_demo"}},
}
segment_images = 1
train_transfer = True
train_images = 1
train_epochs = 12
train_steps = 8
train_patch = 64
seed = 0
out_root = "../runs"

# %% [markdown]
# The run folder of this notebook: `record.json` holds exactly the parameters above (papermill `-f`
# repeats the notebook), `provenance.json` the versions and the files written.

# %%
from opsef_core.notebook import start_notebook_run

run = start_notebook_run("spheroid_clearing", {k: globals()[k] for k in [
    "data_dir", "conditions", "max_images", "patch_size", "band", "band_side", "models", "segment_images",
    "train_transfer", "train_images", "train_epochs", "train_steps", "train_patch", "seed", "out_root"]})
print("run folder:", run.folder)

# %% [markdown]
# ## 0. The stacks
# Every condition's stacks and truth labels (the first `max_images` of each).

# %%
import logging

from IPython.display import display

from opsef_core.workflows import clearing as wc

logging.basicConfig(level=logging.WARNING)
data = wc.load_conditions(data_dir=data_dir, conditions=conditions, max_images=max_images)
for cond, entries in data.items():
    for e in entries:
        print(cond, e["name"], e["image"].shape, e["image"].pixel_size)

# %% [markdown]
# ## 1. Image quality along depth
# Signal = truth nuclei pixels, noise = the other pixels of a `patch_size` patch centred on the
# spheroid (column `signal_source`). The x axis runs through the spheroid: 0 % at its top, 100 % at
# the centre slice, back to 0 % at its bottom (plotted as 200). Shaded: the 70–100 % band.

# %%
profiles = wc.clearing_profiles(data=data, patch_size=patch_size)
run.save_table(profiles, "clearing_profiles")
fig = wc.plot_profiles(profiles=profiles, band=band)
run.show(fig, "clearing_along_depth")

# %%
comparison = wc.band_comparison(profiles=profiles, band=band, side=band_side)
run.save_table(comparison, "band_comparison")
comparison.round(3)

# %% [markdown]
# ## 2. Segmentation along depth
# One engine run per condition segments its first `segment_images` stack(s) with every model: 2D
# models plane by plane (`"slices": true`: every slice on its own, ids unique over the stack), 3D
# models on the volume. Then pixel F1 (foreground Dice) and AJI (Kumar) per slice against the truth,
# from the run's label stacks; `seconds` is the network pass plus decoding of a stack. Models not
# found under `models/` are skipped (listed below); combinations the engine recorded as failed are
# listed too.

# %%
subset = {c: e[:segment_images] for c, e in data.items()}
seg = wc.segmentation_along_depth(data=subset, models=models, profiles=profiles, out=run.path("runs"),
                                  seed=seed)
print("skipped models:", seg.attrs["skipped"] or "none")
print("failed:", seg.attrs["failed"] or "none")
run.save_json({c: str(p.relative_to(run.folder)) for c, p in seg.attrs["runs"].items()}, "segmentation_runs")
for cond, run_dir in seg.attrs["runs"].items():
    print(f"{cond}: opsef run {run_dir / 'run.json'}")
run.save_table(seg, "segmentation_along_depth")
fig = wc.plot_segmentation_depth(seg=seg)
run.show(fig, "segmentation_along_depth")

# %% [markdown]
# ### Explore one depth at a time
# One explorer per segmented stack: the `z` slider picks a slice and shows its depth (percent of the
# maximum diameter), its SNR and CNR (from the profiles of section 1), and that slice's nuclei as the
# run segmented them (yellow; the model selector switches model) over the truth (white), with the
# slice's pixel F1 and AJI. Nothing is segmented again: the labels are the run's label stacks. The
# static figures are saved as `depth_<condition>_<stack>.png`.

# %%
depth_views = wc.depth_explorers(data=subset, seg=seg, profiles=profiles)
for key, depth_view in depth_views.items():
    run.show(depth_view.figure, "depth_" + key.replace("/", "_"))
    display(depth_view)  # the live depth slider and model selector (in Jupyter)

# %% [markdown]
# The same scores averaged over the 70–100 % band, per condition and model.

# %%
seg_band = wc.band_comparison(profiles=seg.assign(condition=seg["condition"] + " / " + seg["model"]),
                              band=band, side=band_side, metrics=("pixel_f1", "aji", "count_ratio"))
run.save_table(seg_band, "segmentation_band")
seg_band.round(3)

# %% [markdown]
# ## 3. Nuclei per slice against the truth
# Predicted nuclei per slice of the first stack of each condition, against the truth count.

# %%
fig = wc.plot_counts(seg=seg)
run.show(fig, "counts_along_depth")

# %% [markdown]
# ## 4. Transfer matrix: trained on A, tested on B
# A small 3-class 2D U-Net is trained on the slices of the first `train_images` stack(s) of each
# condition and tested on the remaining stacks of every condition (pixel F1, AJI, object F1 at
# IoU 0.5). Training runs outside the engine (it is not segmentation); the trained models are
# applied by one engine run per tested condition (segmenters `trained_on_<condition>`, the model
# folders under `models/`). Demo budget: a few epochs, so absolute values are low; compare rows and
# columns.

# %%
if train_transfer:
    trained = wc.train_condition_unets(data=data, out_dir=run.path("models"), train_images=train_images, seed=seed,
                                       epochs=train_epochs, steps_per_epoch=train_steps,
                                       patch_size=train_patch, batch_size=8, filters=8, depth=2,
                                       val_fraction=0.1, patience=train_epochs)
    run.save_table(trained, "transfer_training")
    matrix = wc.transfer_matrix(data=data, trained=trained, train_images=train_images, out=run.path("runs"),
                                seed=seed)
    run.save_json({c: str(p.relative_to(run.folder)) for c, p in matrix.attrs["runs"].items()}, "transfer_runs")
    run.save_table(matrix, "transfer_matrix")
    fig = wc.plot_transfer(matrix=matrix, metrics=("pixel_f1", "aji", "f1@0.5"))
    run.show(fig, "transfer_matrix")
    display(matrix.round(3))

# %% [markdown]
# ## 5. Done
# `provenance.json` gets the end time. The engine runs are listed in `segmentation_runs.json` and
# `transfer_runs.json` (folders under `runs/`); `opsef run <folder>/run.json` repeats any of them.

# %%
run.finish()
