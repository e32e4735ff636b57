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
# # Single spheroids in brightfield, among debris
#
# **What it does.** Segments the one spheroid of every brightfield image of a time series
# (treated-spheroid study): preprocessing (rescaling — the study found 1/2 resolution best —,
# inversion, rolling-ball background subtraction), several segmenter settings side by side
# (classical threshold, the U-Net demo model, ...), the **largest object** as the spheroid,
# its readouts in µm (equivalent diameter, area, sphere volume, perimeter, circularity) and,
# against the truth, the single-spheroid metrics of `SCIENCE.md`: Jaccard distance (JCD),
# relative diameter and circularity deviations (RDD, RCD), invalid and ambiguous spheroid
# fractions (ISF, ASF, with binomial standard errors) and the average radial error.
# It ends with a growth curve and overlays of the chosen result on every image.
#
# **Data it expects.** `data_dir/images/*.tif`: 2D (YX) brightfield images, dark spheroid on a
# bright background, pixel size in the file; each name carries a time index `_tNN`
# (`bf_t03.tif`). `data_dir/labels/` holds the truth masks under the same names (needed for
# the metrics). The demo data: `demo_data/debris_brightfield` (6 time points, 2 µm pixels).
#
# **Parameters that matter most.** `scale` (resolution fed to the segmenters),
# `background_radius` (rolling ball, in pixels after rescaling: larger than the spheroid
# radius), `settings` (the segmenters compared; add `{"name": ..., "backend": "cellpose",
# "params": {"model": ..., "diameter": ...}}` to compare Cellpose), `smooth_radius` (outer
# contour smoothing of the spheroid, pixels) and `chosen` (`"best"` = lowest mean JCD).
# For real data raise `max_images` (None = all).

# %% tags=["parameters"]
data_dir = "../demo_data/debris_brightfield"
out_root = "../runs"
max_images = 6
scale = 0.5
invert = True
background_radius = 50.0
smooth_radius = 6
settings = [
    {"name": "classical_otsu", "backend": "classical",
     "params": {"threshold": "otsu", "sigma": 2.0, "h": 0.0, "min_size": 100}},
    {"name": "classical_li", "backend": "classical",
     "params": {"threshold": "li", "sigma": 2.0, "h": 0.0, "min_size": 100}},
    {"name": "unet_demo", "backend": "unet",
     "params": {"model": "unet2d_demo", "instances": "connected_components", "min_size": 100}},
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

from opsef_core import io
from opsef_core.spheroid import growth_table
from opsef_core.widgets import parameter_explorer
from opsef_core.workflows import debris

logging.basicConfig(level=logging.WARNING)

# %% [markdown]
# ## Images and preprocessing

# %%
series = debris.load_series(data_dir, max_images=max_images)
pipeline = debris.spheroid_pipeline(scale=scale, invert=invert, background_radius=background_radius)
print(f"{len(series)} images, time points {[s['time'] for s in series]}; pipeline: {pipeline.describe()}")

# %% [markdown]
# ## Segmentation: the settings side by side
# Every setting runs on the same preprocessed images; labels are brought back to the original
# pixel grid (nearest neighbour) and compared with the truth there. A setting whose model is
# not installed is reported as failed and left out of the tables.

# %%
result = debris.segment_series(series, pipeline, settings, smooth_radius=smooth_radius)
for name, err in result["errors"].items():
    print(f"setting {name!r} failed: {err}")
fig = debris.plot_settings(series, result["labels"])
run.save_figure(fig, "settings_montage")
fig

# %% [markdown]
# ## Readouts and single-spheroid metrics
# Per image: the largest object's readouts (µm, µm², µm³) and JCD, RDD, RCD, radial error;
# per setting: means, sample standard deviations, ISF and ASF with binomial standard errors.

# %%
per_image, summary = debris.evaluate_series(series, result["labels"])
summary["seconds"] = summary["setting"].map(result["seconds"])
run.save_table(per_image, "spheroid_metrics")
run.save_table(summary, "spheroid_summary")
best = debris.choose_setting(summary, chosen)
print(f"chosen setting: {best}")
summary.set_index("setting").T.round(4)

# %% [markdown]
# ## Growth curve of the chosen setting

# %%
chosen_rows = per_image[per_image["setting"] == best]
growth = growth_table(chosen_rows, time="time")
run.save_table(growth, "growth")
fig = debris.plot_growth(per_image, best)
run.save_figure(fig, "growth_curve")
fig

# %% [markdown]
# ## The chosen result on every image
# Cyan: the largest predicted object (the spheroid); magenta: the truth.

# %%
fig = debris.plot_overlays(series, result["labels"][best], title=f"{best}: spheroid (cyan) vs truth (magenta)")
run.save_figure(fig, "overlays")
for item, lab in zip(series, result["labels"][best]):
    io.write_labels(run.path(f"labels/{item['name']}.tif"), lab, pixel_size=item["image"].pixel_size, axes="YX")
fig

# %% [markdown]
# ## Explore the classical threshold on one image
# One network pass, re-decoded on every slider move (in a live notebook); the static figure
# shows a sweep of the fixed threshold on the preprocessed image.

# %%
classical = next((s for s in settings if s["backend"] == "classical"), None)
if classical is not None:
    k = min(explorer_image, len(series) - 1)
    explorer = parameter_explorer(result["preprocessed"][k], "classical", classical["params"],
                                  sliders={"threshold": (0.2, 0.8, 0.05), "min_size": (0, 400, 50)})
    run.save_figure(explorer.figure, "threshold_explorer")
    display(explorer.widget if explorer.widget is not None else explorer.figure)  # noqa: F821

# %%
run.finish()
