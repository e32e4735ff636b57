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
# # 00 · Quickstart: explore a grid, pick the best, run it, study the objects
#
# The OpSeF way of working in one notebook:
#
# 1. **explore** — a few conceptually different preprocessing *pipelines* × several *models*
#    (classical threshold + watershed, and the StarDist, Cellpose and U-Net demo models under
#    `models/`) × *scale factors* and thresholds, on the first `n_explore_images` images only;
# 2. **look and rank** — the montage (rows = pipelines, columns = models/settings) and, with ground
#    truth, the ranking by F1 at IoU 0.5;
# 3. **run the chosen combination** on the whole folder;
# 4. **study the objects** — filter them by region properties (scatter with the kept ranges),
#    PCA / t-SNE coloured by cluster, and export the kept objects as ROI sets for Fiji.
#
# **Data it expects**: a folder of 2D single-channel images (`data_dir`, TIFF) and, optionally, a
# folder of ground-truth label images with the same file names (`ground_truth_dir`). The defaults
# use the bundled synthetic nuclei `demo_data/nuclei2d` (8 images of 256×256, 0.5 µm pixels).
#
# **Parameters that matter most**: `pipelines` and `models` (what is compared), `scale_factors`
# (set so that your objects have the size the models were trained on), `choose` (`"auto"` takes the
# best ranked combination — it needs ground truth; otherwise put a combination id read off the
# montage), and `filter_ranges` (in physical units: area in µm²). For real data raise
# `n_explore_images` to 3–5 representative images and use real models (e.g. Cellpose `nuclei`,
# StarDist `2D_versatile_fluo` once downloaded, or your own from `opsef train`).
# Models that cannot be found are left out of the grid with a warning (train the demo models with
# `python scripts/train_demo_models.py`).

# %% tags=["parameters"]
data_dir = "../demo_data/nuclei2d/images"
ground_truth_dir = "../demo_data/nuclei2d/labels"
n_explore_images = 2
pipelines = [
    {"name": "raw", "steps": []},
    {"name": "median_clahe", "steps": [
        {"name": "median", "params": {"radius": 2}},
        {"name": "clahe", "params": {"clip_limit": 0.01}}]},
    {"name": "gaussian_tophat", "steps": [
        {"name": "gaussian", "params": {"sigma": 1.0}},
        {"name": "tophat", "params": {"radius": 20}}]},
    {"name": "rollingball_unsharp", "steps": [
        {"name": "rolling_ball", "params": {"radius": 30}},
        {"name": "unsharp", "params": {"radius": 2.0, "amount": 1.0}}]},
]
models = [
    {"name": "classical", "backend": "classical", "params": {"sigma": 1.0, "min_size": 20},
     "sweep": {"h": [1.0, 2.0]}},
    {"name": "stardist", "backend": "stardist", "params": {"model": "stardist2d_demo"},
     "sweep": {"prob_thresh": [0.4, 0.6]}},
    {"name": "cellpose", "backend": "cellpose", "params": {"model": "cellpose_demo"}},
    {"name": "unet", "backend": "unet", "params": {"model": "unet2d_demo"}},
]
scale_factors = [0.75, 1.0]
choose = "auto"
filter_ranges = {"area": [15.0, 200.0], "solidity": [0.85, 1.0]}
seed = 0
out_root = "../runs"

# %%
from opsef_core.notebook import start_notebook_run

run = start_notebook_run("00_quickstart", {
    "data_dir": data_dir, "ground_truth_dir": ground_truth_dir, "n_explore_images": n_explore_images,
    "pipelines": pipelines, "models": models, "scale_factors": scale_factors, "choose": choose,
    "filter_ranges": filter_ranges, "seed": seed, "out_root": out_root,
}, out_root=out_root)
print("run folder:", run.folder)

# %%
import logging

import pandas as pd
from IPython.display import Markdown, display

from opsef_core import widgets
from opsef_core.workflows import quickstart as qs

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
pd.set_option("display.width", 160)

# %% [markdown]
# ## 1 · Which models can be used?
# A model entry is kept when its weights are found (project `models/`, the Cellpose/StarDist caches,
# or a path); the others are listed with the reason. Checking first means a missing model is
# reported here, by name, instead of failing the whole grid later.

# %%
usable, skipped = qs.usable_models(models=models)
display(Markdown("**In the grid:** " + ", ".join(f"`{m['name']}` ({m['backend']})" for m in usable)))
if skipped:
    display(pd.DataFrame(skipped)[["name", "backend", "model"]])
_ = run.save_json({"usable": usable, "skipped": skipped}, "models")

# %% [markdown]
# ## 2 · Explore: pipelines × models × scale factors on a few images
# Which preprocessing and which model suit these images is an empirical question, so OpSeF tries
# them all on a few representative images before committing to one. The grid is an ordinary run
# config (saved as `explore_config.json`; `opsef run` runs the same file). Each pipeline is applied
# once per image and each network runs once per (image, pipeline, scale): threshold sweeps only
# re-decode — the next section shows why that is cheap.

# %% [markdown]
# ### One network pass, two decodings
# A segmenter works in two steps: `predict` runs the network (the expensive part) and `decode`
# turns its output into labels with the *decoding* parameters (probability or intensity
# thresholds, minimum size). Here, by hand on the first image: one `predict`, then `decode` twice
# with two thresholds, each step timed. The run engine does the same for every sweep value, so
# a threshold sweep costs one network pass plus a few fast decodings (with StarDist the second
# decoding is faster still: the non-maximum suppression is shared across a `prob_thresh` sweep).

# %%
import time

from opsef_core.io import discover, read_image
from opsef_core.segment import get_segmenter

demo = next((m for m in usable if m["backend"] == "stardist"), None) or next(
    m for m in usable if m["backend"] == "classical")  # StarDist when its model is found
threshold_name = "prob_thresh" if demo["backend"] == "stardist" else "threshold"
thresholds = [0.3, 0.7] if demo["backend"] == "stardist" else [0.3, 0.5]
segmenter = get_segmenter(demo["backend"])
first_image = read_image(discover(data_dir)[0])
params = segmenter.params(demo["params"])
segmenter.model(params)  # load the weights first (once per process), so the pass below is timed alone

start = time.perf_counter()
prediction = segmenter.predict(image=first_image, params=params)  # the network pass: once
print(f"{demo['name']}: predict {time.perf_counter() - start:.3f} s -> {sorted(prediction)}")
for value in thresholds:
    start = time.perf_counter()
    decoding = segmenter.params({**demo["params"], threshold_name: value})
    labels = segmenter.decode(prediction=prediction, image=first_image, params=decoding)
    print(f"  decode with {threshold_name}={value}: {int(labels.max())} objects "
          f"in {time.perf_counter() - start:.3f} s")

# %% [markdown]
# ### The grid, run by the engine

# %%
explore = qs.explore_config(data_dir=data_dir, ground_truth_dir=ground_truth_dir, pipelines=pipelines,
                            models=usable, scale_factors=scale_factors, n_images=n_explore_images, seed=seed)
_ = run.save_json(explore, "explore_config")
explore_dir = qs.execute_config(config=explore, out=run.folder)
summary = pd.read_csv(explore_dir / "summary.csv")
print(f"{summary['combination'].nunique()} combinations x {summary['image'].nunique()} images "
      f"-> {explore_dir}")
failed = summary[summary["status"] != "done"]
if len(failed):
    display(failed[["image", "combination", "error"]])

# %% [markdown]
# ### The montage: rows = pipelines, columns = segmenter settings
# Classify each panel by eye: correct, under-segmented (touching nuclei merged), over-segmented
# (nuclei split), failed. The column titles are the setting ids used by `choose`. The first
# image's montage is shown; in a live notebook the browser below pages through every image's.

# %%
montages = sorted((explore_dir / "montage").glob("*.png"))
for png in montages[:1]:
    run.show(png)
browser = widgets.grid_browser(explore_dir, max_static=len(montages))
run.save_figure(browser.figure, "montages")
browser  # browse every image's montage (in Jupyter)

# %% [markdown]
# ### Ranking against ground truth (F1 at IoU 0.5, mean over the explored images)

# %%
if (explore_dir / "ranking.csv").is_file():
    ranking = pd.read_csv(explore_dir / "ranking.csv")
    run.save_table(ranking, "ranking")
    display(ranking[["rank", "combination", "pipeline", "segmenter", "f1@0.5_mean", "f1@0.5_std", "n_images"]])
    run.show(explore_dir / "ranking.png")
else:
    display(Markdown("No ground truth: choose a combination by eye from the montage."))

# %% [markdown]
# ### Decoding thresholds on any image of the grid
# The sweep above tried two or three threshold values; the explorers below try any value, on any
# image of the grid (the selector), for each model: StarDist's `prob_thresh` and `nms_thresh`,
# Cellpose's `cellprob_threshold` and `flow_threshold`, the U-Net's `prob_threshold` (and the
# classical backend's `h`). Each image's network pass runs once, when the image is first chosen,
# and is kept: a slider move only decodes (as in the two decodings above), so dragging is fast.
# The images go through the run's first pipeline (`raw` by default) before the network; the titles
# give the object count and, with ground truth, F1 at IoU 0.5. The static figure (saved as
# `thresholds_<model>.png`) is a sweep of the first slider on the first image.

# %%
threshold_explorers = qs.threshold_explorers(run_dir=explore_dir, models=usable)
for model_name, threshold_explorer in threshold_explorers.items():
    run.show(threshold_explorer.figure, f"thresholds_{model_name}")
    display(threshold_explorer)  # the live sliders and image selector (in Jupyter)

# %% [markdown]
# ## 3 · Run the chosen combination on the whole folder
# `choose = "auto"` takes the best ranked combination; to override the ranking (e.g. it looks better
# by eye), set `choose` to one of the combination ids above and re-run.

# %%
chosen = qs.choose_combination(run_dir=explore_dir, choose=choose)
_ = run.save_json(chosen, "chosen")
score = f" (mean F1@0.5 {chosen['score']:.3f} on the explored images)" if chosen["score"] is not None else ""
display(Markdown(f"**Chosen ({chosen['how']}):** `{chosen['combination']}` — pipeline `{chosen['pipeline']}`, "
                 f"segmenter `{chosen['segmenter']}`{score}"))
final = qs.final_config(explore=explore, combination=chosen["combination"])
_ = run.save_json(final, "final_config")
final_dir = qs.execute_config(config=final, out=run.folder)
metrics = qs.final_metrics(run_dir=final_dir)
run.save_table(metrics, "final_metrics")
display(metrics)
if "f1@0.5" in metrics:
    display(Markdown(f"Mean F1@0.5 over all {len(metrics)} images: **{metrics['f1@0.5'].mean():.3f}**, "
                     f"mean AJI **{metrics['aji'].mean():.3f}**"))

# %% [markdown]
# The chosen combination's contours on the first image: judge by eye that the ranking's winner
# really segments well.

# %%
overlays = sorted((final_dir / "overlays").glob("*.png"))
if overlays:
    run.show(overlays[0])

# %% [markdown]
# ## 4 · Filter objects by region properties
# Measurements are in physical units (area in µm², perimeter in µm). The filter spans every image
# of the final run: the sliders start at `filter_ranges` (their limits include those ranges), the
# scatter shows every object (kept blue, removed grey, the kept range shaded) and follows the
# sliders, and the overlay shows the image picked in the selector (kept green, removed red).
# Filtering removes what no segmenter setting can tell from a nucleus (debris, clumps); it never
# re-segments.

# %%
objects_all, labels_all, images_all = qs.run_view(run_dir=final_dir)
props = list(filter_ranges) or ["area", "circularity"]
x, y = (props + [c for c in ("area", "circularity") if c not in props])[:2]
explorer = widgets.object_filter(table=objects_all, labels=labels_all, image=images_all, x=x, y=y,
                                 properties=props, ranges={k: tuple(v) for k, v in filter_ranges.items()})
run.show(explorer.figure, "object_filter")
explorer  # the live sliders (in Jupyter)

# %% [markdown]
# The explorer's current ranges (`explorer.state["ranges"]`: `filter_ranges` until a slider is
# moved) are applied to every image of the final run and the kept objects are exported. Moved
# the sliders? Re-run this cell (and the ones below) to export what you now see; the ranges used
# are saved as `export_ranges.json`.

# %%
export_ranges = explorer.state["ranges"]
_ = run.save_json({k: list(v) for k, v in export_ranges.items()}, "export_ranges")
objects, zips = qs.filter_and_export(run_dir=final_dir, ranges=export_ranges, roi_dir=run.path("rois"))
run.save_table(objects, "objects")
kept = objects[objects["kept"]]
display(objects.groupby("image")["kept"].agg(objects="size", kept="sum"))

# %% [markdown]
# ## 5 · PCA and t-SNE of the kept objects, coloured by k-means cluster
# Do the kept objects form groups (e.g. by size or shape)? PCA shows the main axes of variation
# of the measurements, t-SNE their neighbourhoods; the colours are k-means clusters.

# %%
embedding = qs.embed_objects(table=kept, seed=seed)
run.save_table(embedding, "embedding")
fig = qs.plot_embedding(embedding=embedding)
run.show(fig, "embedding")

# %% [markdown]
# ## 6 · Open the objects in Fiji
# `rois/<image>.zip` in the run folder holds one ImageJ ROI per kept object. In Fiji: open the image
# (`File > Open`), then drag the zip onto the Fiji window (or `Analyze > Tools > ROI Manager >
# More > Open...`) and tick *Show All*. `opsef_core.export.read_roi_zip(path, shape)` reads them back
# into a label image.

# %%
display(Markdown("\n".join(f"- `{p}`" for p in zips) or "no ROI written"))
run.finish()
