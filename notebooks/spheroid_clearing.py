# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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
# **Data it expects.** `data_dir/<condition>/images/*.tif` (single-channel ZYX stacks, imaged from
# the top) and `data_dir/<condition>/labels/*.tif` (3D truth nuclei, same names). The demo is
# `demo_data/spheroid_clearing` (2 stacks of 32×128×128 per condition).
#
# **Parameters that matter most.** `conditions`, `patch_size` (the centred patch the contrast is
# measured on), `band`, `models` (add `"mode": "3d"` to run a 3D model such as `stardist3d_demo`
# on the whole stack), and the transfer-training budget (`train_epochs`, `train_steps`) — the demo
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

# %%
from opsef_core.notebook import start_notebook_run

run = start_notebook_run("spheroid_clearing", {k: globals()[k] for k in [
    "data_dir", "conditions", "max_images", "patch_size", "band", "band_side", "models", "segment_images",
    "train_transfer", "train_images", "train_epochs", "train_steps", "train_patch", "seed", "out_root"]})
print("run folder:", run.folder)

# %%
import logging

import matplotlib.pyplot as plt

from opsef_core.workflows import clearing as wc

logging.basicConfig(level=logging.WARNING)
data = wc.load_conditions(data_dir, conditions, max_images)
for cond, entries in data.items():
    for e in entries:
        print(cond, e["name"], e["image"].shape, e["image"].pixel_size)

# %% [markdown]
# ## 1. Image quality along depth
# Signal = truth nuclei pixels, noise = the other pixels of a `patch_size` patch centred on the
# spheroid (column `signal_source`). The x axis runs through the spheroid: 0 % at its top, 100 % at
# the centre slice, back to 0 % at its bottom (plotted as 200). Shaded: the 70–100 % band.

# %%
profiles = wc.clearing_profiles(data, patch_size=patch_size)
run.save_table(profiles, "clearing_profiles")
fig = wc.plot_profiles(profiles, band=band)
run.save_figure(fig, "clearing_along_depth")
plt.show()

# %%
comparison = wc.band_comparison(profiles, band=band, side=band_side)
run.save_table(comparison, "band_comparison")
comparison.round(3)

# %% [markdown]
# ## 2. Segmentation along depth
# Every slice is segmented on its own (2D models); pixel F1 (foreground Dice) and AJI (Kumar) per
# slice against the truth. Models not found under `models/` are skipped (listed below).

# %%
subset = {c: e[:segment_images] for c, e in data.items()}
seg = wc.segmentation_along_depth(subset, models, profiles)
print("skipped models:", seg.attrs.get("skipped") or "none")
run.save_table(seg, "segmentation_along_depth")
fig = wc.plot_segmentation_depth(seg)
run.save_figure(fig, "segmentation_along_depth")
plt.show()

# %%
seg_band = wc.band_comparison(seg.assign(condition=seg["condition"] + " / " + seg["model"]), band=band,
                              side=band_side, metrics=("pixel_f1", "aji", "count_ratio"))
run.save_table(seg_band, "segmentation_band")
seg_band.round(3)

# %% [markdown]
# ## 3. Nuclei per slice against the truth

# %%
fig = wc.plot_counts(seg)
run.save_figure(fig, "counts_along_depth")
plt.show()

# %% [markdown]
# ## 4. Transfer matrix: trained on A, tested on B
# A small 3-class 2D U-Net is trained on the slices of the first `train_images` stack(s) of each
# condition and tested on the remaining stacks of every condition (pixel F1, AJI, object F1 at
# IoU 0.5). Demo budget: a few epochs, so absolute values are low; compare rows and columns.

# %%
if train_transfer:
    trained = wc.train_condition_unets(data, run.path("models"), train_images=train_images, seed=seed,
                                       epochs=train_epochs, steps_per_epoch=train_steps,
                                       patch_size=train_patch, batch_size=8, filters=8, depth=2,
                                       val_fraction=0.1, early_stopping_patience=train_epochs)
    run.save_table(trained, "transfer_training")
    matrix = wc.transfer_matrix(data, trained, train_images=train_images)
    run.save_table(matrix, "transfer_matrix")
    fig = wc.plot_transfer(matrix, metrics=("pixel_f1", "aji", "f1@0.5"))
    run.save_figure(fig, "transfer_matrix")
    plt.show()
    display(matrix.round(3))

# %%
run.finish()
