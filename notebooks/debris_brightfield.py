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
# # Single spheroids in brightfield, among debris
#
# **What it does.** Segments the one spheroid of every brightfield image of a time series
# (treated-spheroid study) with the run engine: the notebook's parameters become a run config —
# one preprocessing pipeline (rescaling — the study found 1/2 resolution best —, inversion,
# optionally rolling-ball background subtraction), the segmenter settings compared side by side
# (by default the bundled **spheroid U-Net** `models/spheroid_debris_unet`, trained as the study
# did — binary spheroid vs background at half resolution, probability threshold 0.5 — and a
# classical Otsu threshold beside it) and the single-spheroid post-processing (the **largest
# object**'s outer contour) — which `opsef_core.run.execute` runs into a run folder inside this
# notebook's run folder (its `run.json` repeats it: `opsef run RUN/run.json`). The study
# analyses then read that run's label images: the spheroid's readouts in µm (equivalent
# diameter, area, sphere volume, perimeter, circularity) and, against the truth, the
# [single-spheroid metrics](../docs/definitions.md#single-spheroid-metrics): Jaccard distance
# (JCD), relative diameter and circularity deviations (RDD, RCD), invalid and ambiguous spheroid
# fractions (ISF, ASF, with binomial standard errors) and the average radial error.
# It ends with a growth curve and overlays of the chosen result on every image.
#
# **Data it expects.** `data_dir/images/*.tif`: 2D (YX) brightfield images, dark spheroid on a
# bright background, pixel size in the file; each name carries a time index `_tNN`
# (`bf_t03.tif`). `data_dir/labels/` holds the truth masks under the same names (needed for
# the metrics). The demo data: `demo_data/debris_brightfield` (6 time points, 2 µm pixels);
# `configs/debris_brightfield.json` is this notebook's run config on all of it.
#
# **Parameters that matter most.** `scale` (resolution fed to the segmenters; the spheroid
# U-Net expects 0.5), `background_radius` (rolling ball, in pixels after rescaling: larger than
# the spheroid radius; None = off, what the U-Net was trained on), `settings` (the segmenters compared, run-config segmenter entries; add
# `{"name": ..., "backend": "cellpose", "params": {"model": ..., "diameter": ...}}` to compare
# Cellpose), `smooth_radius` (outer contour smoothing of the spheroid, pixels of the input
# image) and `chosen` (`"best"` = lowest mean JCD). For real data raise `max_images` (None = all).

# %% tags=["parameters"]
data_dir = "../demo_data/debris_brightfield"
out_root = "../runs"
max_images = 6
scale = 0.5
invert = True
background_radius = None
smooth_radius = 12
settings = [
    {"name": "spheroid_unet", "backend": "unet",
     "params": {"model": "spheroid_debris_unet", "prob_threshold": 0.5, "instances": "watershed",
                "min_size": 250}},
    {"name": "classical_otsu", "backend": "classical",
     "params": {"threshold": "otsu", "sigma": 2.0, "h": 0.0, "min_size": 100}},
]
chosen = "best"
explorer_image = 0

# %%
from opsef_core.notebook import start_notebook_run

run = start_notebook_run("debris_brightfield", {
    "data_dir": data_dir, "out_root": out_root, "max_images": max_images, "scale": scale,
    "invert": invert, "background_radius": background_radius, "smooth_radius": smooth_radius,
    "settings": settings, "chosen": chosen, "explorer_image": explorer_image,
})
run.folder

# %%
import logging

from opsef_core.config import config_from_dict
from opsef_core.run import plan_table
from opsef_core.science.spheroid import growth_table
from opsef_core.widgets import parameter_explorer
from opsef_core.workflows import debris

logging.basicConfig(level=logging.WARNING)

# %% [markdown]
# ## The run config
# The parameters as a run config (the schema of `configs/`): `inputs` (the images, their truth,
# the first `max_images`), one pipeline (`rescale` by `scale`, `invert`, optionally `rolling_ball`), one
# `segmenters` entry per setting and `postprocess.smooth_radius` (the largest object's holes
# filled and opened with a disk; the other objects are kept, so the ambiguous-spheroid call can
# count them). A setting whose model is not installed is left out of the config and reported
# (the engine would refuse the whole run). The plan lists the images and the combinations.

# %%
usable, skipped = debris.usable_settings(settings=settings)
for s in skipped:
    print(f"setting {s['name']!r} left out: {s['reason']}")
config = debris.run_config(data_dir=data_dir, settings=usable, scale=scale, invert=invert,
                           background_radius=background_radius, smooth_radius=smooth_radius,
                           max_images=max_images)
print(plan_table(config_from_dict(config)))

# %% [markdown]
# ## Segmentation with the run engine
# Every setting runs on the same preprocessed images (the pipeline is applied once per image).
# The engine segments at half resolution, keeps those labels in `labels_working/`, maps them back
# to the input grid (nearest neighbour: `labels/`), post-processes them there
# (`labels_filtered/`), measures every object in µm (`measurements.csv`) and scores them against
# the truth (`metrics.csv`). The run folder lies inside this notebook's run folder.

# %%
run_dir = debris.execute_run(config=config, out=run.folder)
run.save_json({"run_folder": run_dir.name, "rerun": f"opsef run {run_dir / 'run.json'}"}, "engine_run")
print(f"run folder: {run_dir}\nrepeat with: opsef run {run_dir / 'run.json'}")

# %% [markdown]
# ## The settings side by side
# The post-processed labels read back from the run folder (nothing is segmented again): judge by
# eye which setting outlines the spheroid and which one is led astray by the debris around it.

# %%
result = debris.read_run(run_dir=run_dir)
for name, err in result["errors"].items():
    print(f"setting {name!r} failed: {err}")
fig = debris.plot_settings(series=result["series"], labels=result["labels"])
run.show(fig, "settings_montage")

# %% [markdown]
# ## Readouts and single-spheroid metrics
# Per image (from the run's `labels_filtered/`): the largest object's readouts (µm, µm², µm³)
# and JCD, RDD, RCD, radial error; per setting: means, sample standard deviations, ISF and ASF
# with binomial standard errors, and the segmentation time (network + decoding).

# %%
per_image, summary = debris.evaluate_run(run_dir=run_dir)
run.save_table(per_image, "spheroid_metrics")
run.save_table(summary, "spheroid_summary")
best = debris.choose_setting(summary=summary, chosen=chosen)
print(f"chosen setting: {best}")
summary.set_index("setting").round(4).T

# %% [markdown]
# ## Growth curve of the chosen setting
# The study's question: does the treated spheroid grow? The chosen setting's diameter per time
# point, next to the truth's, shows whether the segmentation follows the growth (a setting that
# grabs debris inflates the diameter at the early, small time points).

# %%
chosen_rows = per_image[per_image["setting"] == best]
growth = growth_table(df=chosen_rows, time="time")
run.save_table(growth, "growth")
fig = debris.plot_growth(per_image=per_image, setting=best)
run.show(fig, "growth_curve")

# %% [markdown]
# ## The chosen result on every image
# Cyan: the largest predicted object (the spheroid); magenta: the truth. The chosen setting's
# label images are copied from the run folder to this notebook's `labels/`.

# %%
fig = debris.plot_overlays(series=result["series"], labels=result["labels"][best],
                           title=f"{best}: spheroid (cyan) vs truth (magenta)")
run.show(fig, "overlays")
copies = debris.copy_labels(run_dir=run_dir, setting=best, dest=run.folder / "labels")

# %% [markdown]
# ## Explore the threshold on one image
# On the preprocessed image the run saved (`preprocessed/`): one network pass, re-decoded on
# every slider move — the U-Net's spheroid probability threshold (the study's 0.5) when a U-Net
# setting is compared, else the classical fixed threshold. The static figure (saved, and what a
# papermill run shows) is a sweep of that threshold; below it, in a live notebook, the sliders
# re-draw the overlay.

# %%
explored = debris.explorer_setting(settings=usable)
if explored is not None:
    setting, sliders = explored
    pre = debris.preprocessed_image(run_dir=run_dir, image=explorer_image)
    explorer = parameter_explorer(image=pre, segmenter=setting["backend"], params=setting["params"],
                                  sliders=sliders)
    print(f"explorer: {setting['name']} ({setting['backend']}), sliders {list(sliders)}")
    run.show(explorer.figure, "threshold_explorer")
    if explorer.widget is not None:
        display(explorer.widget)  # noqa: F821

# %%
run.finish()
