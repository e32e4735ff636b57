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
# # High-content screening without structural labels: which channels, which fusion?
#
# **What it does.** Segments nuclei and cells from every channel alone and from every
# non-empty channel subset (the power set), fusing the per-channel Cellpose results by
# **flow averaging** (the network runs once per channel; flows and cell probabilities are
# averaged, then Cellpose's mask reconstruction runs once), **pixel voting**, **majority
# voting** on objects and **STAPLE**. It scores every (subset, method) pair by F1 at IoU 0.5
# against the truth and shows the study's table — rows: channel combinations, columns: fusion
# methods — as a styled table and a heat map with the best combination highlighted, plus the
# fused segmentations of the best subset next to the truth.
#
# **How.** The segmentation is an ordinary run of the run engine, one per target: the `fusion`
# segmenter with a sweep over `channels` (the power set) × `method`. The run folders (inside this
# notebook's run folder) hold `run.json`, the labels and `metrics.csv`; the tables and figures
# here are read from them, and `opsef run <run folder>/run.json` repeats a run with identical
# labels. `configs/hcs_channels.json` is the same config for the whole demo data (nuclei).
#
# **Data it expects.** `data_dir/images/*.tif`: multichannel 2D fields (CYX) with channel
# names in the file; `data_dir/labels/nuclei/` and `data_dir/labels/cells/`: instance truth
# under the same names. The demo data: `demo_data/hcs_channels` (4 channels `nuclei_cyto`,
# `cytoplasm`, `mito`, `membrane`; 0.5 µm pixels).
#
# **Parameters that matter most.** `cellpose` (per target: the model and the object
# `diameter` in pixels — nuclei ≈ 17 px, cells ≈ 43 px in the demo), `channels` (the power set
# grows as 2^n − 1 subsets), `methods`, and `crop`/`max_images` (demo scale: one cropped
# field; set `crop = None` and `max_images = None` for real data).
#
# **Honest caveat.** The bundled `cellpose_demo` model was trained on *nuclei* only (no
# pretrained weights can be downloaded here), so the *cells* scores are expected to be low:
# they show how the comparison is run, not how well Cellpose segments cells. Use a cytoplasm
# model (e.g. `cyto3`, or one fine-tuned with `opsef_core.train.cellpose`) for real cell scores.

# %% tags=["parameters"]
data_dir = "../demo_data/hcs_channels"
out_root = "../runs"
max_images = 1
crop = [48, 208, 48, 208]
channels = ["nuclei_cyto", "cytoplasm", "mito", "membrane"]
methods = ["flow_average", "pixel_vote", "majority_vote", "staple"]
cellpose = {
    "nuclei": {"model": "cellpose_demo", "diameter": 17.0},
    "cells": {"model": "cellpose_demo", "diameter": 43.0},
}
example_target = "nuclei"

# %%
from opsef_core.notebook import start_notebook_run

run = start_notebook_run("hcs_channels", {
    "data_dir": data_dir, "out_root": out_root, "max_images": max_images, "crop": crop,
    "channels": channels, "methods": methods, "cellpose": cellpose, "example_target": example_target,
}, out_root=out_root)
run.folder

# %%
import logging
from pathlib import Path

from opsef_core.config import config_from_dict
from opsef_core.record import atomic_write_text
from opsef_core.run import plan_table
from opsef_core.workflows import hcs

logging.basicConfig(level=logging.WARNING)

# %% [markdown]
# ## Fields and truth
# The run engine segments whole files. With a `crop` (demo scale), the first `max_images` fields
# and their truth are cropped and written to `inputs/` in the run folder, and the runs read those
# copies (their checksums are recorded like any input); without a crop the runs read `data_dir`.

# %%
inputs = hcs.prepare_inputs(data_dir=data_dir, dest=run.path("inputs"), targets=list(cellpose),
                            max_images=max_images, crop=crop)
inputs = Path(inputs).resolve()
fields = hcs.load_fields(data_dir=inputs, targets=list(cellpose), max_images=max_images)
for f in fields:
    print(f["name"], f["image"].shape, f["image"].channel_names,
          {t: int(len(set(lab.ravel())) - 1) for t, lab in f["truth"].items()}, "truth objects")

# %% [markdown]
# ## The run configs: the channel power set × the fusion methods
# One config per target (the truth differs): the `fusion` segmenter with that target's Cellpose
# parameters, a Cellpose network pass on every channel of `channels`, and a sweep over
# `channels` (every non-empty subset) × `method`. The plan shows the combinations and that they
# share one network pass per image. Each config is saved in the run folder
# (`config_<target>.json`, absolute paths: `opsef run` runs it as it is).

# %%
configs = {target: hcs.fusion_config(data_dir=inputs, target=target, cellpose_params=params, channels=channels,
                                     methods=methods, max_images=max_images)
           for target, params in cellpose.items()}
for target, config in configs.items():
    run.save_json(config, f"config_{target}")
    print(target, plan_table(config_from_dict(config)).splitlines()[-2])

# %% [markdown]
# ## Run them
# `hcs.run_fusion` executes each config with the run engine (`opsef_core.run.execute`); the run
# folders go inside this notebook's run folder. Per image it runs Cellpose once on each channel,
# then decodes every (subset, method) combination from those passes: only the mask reconstruction
# and the voting run per cell of the table.

# %%
runs = {target: hcs.run_fusion(config=config, out=run.folder) for target, config in configs.items()}
run.save_json({t: Path(d).name for t, d in runs.items()}, "runs")
for target, folder in runs.items():
    print(f"{target}: {folder}  (repeat with: opsef run {folder / 'run.json'})")

# %% [markdown]
# ## F1 at IoU 0.5 over the channel power set and the fusion methods
# The long table comes from each run's `metrics.csv` (every combination present; one that could not
# be scored would show as NaN with a warning); the study's table has the mean F1 over the fields.

# %%
scores = hcs.fusion_scores(runs=runs)
run.save_table(scores, "fusion_scores")
tables = {target: hcs.score_table(scores=scores, target=target) for target in cellpose}
best = {}
for target, table in tables.items():
    run.save_table(table.reset_index(), f"f1_{target}")
    combo, method, value = hcs.best_cell(table=table)
    best[target] = {"channels": combo, "method": method, "f1": value}
    print(f"{target}: best {combo} with {method}, F1@0.5 = {value:.3f}")
run.save_json(best, "best")

# %% [markdown]
# The styled tables (mean F1 over the fields; best cell outlined):

# %%
styled = {t: hcs.style_table(table=tab, caption=f"{t}: F1 at IoU 0.5") for t, tab in tables.items()}
for t, s in styled.items():
    atomic_write_text(run.path(f"f1_{t}.html"), s.to_html())
    display(s)  # noqa: F821

# %%
fig = hcs.plot_heatmap(tables=tables)
run.show(fig, "f1_heatmap")

# %% [markdown]
# ## The best subset, fused every way, next to the truth
# The label images are the run's own (`labels/` of the run folder, listed in `summary.csv`).

# %%
if example_target in runs:
    view = hcs.subset_view(run_dir=runs[example_target], channels=best[example_target]["channels"])
    fig = hcs.plot_examples(view=view, target=example_target)
    run.show(fig, "fusion_examples")

# %% [markdown]
# ## Explore channel subsets: single-channel masks next to the fused one
# Tick channels and pick a method: each ticked channel's own segmentation is shown next to their
# fusion (and the truth, with F1 at IoU 0.5 in the titles). The explorer uses the run's fusion
# parameters and runs Cellpose once per channel when it is built; every tick or method change only
# decodes (`fusion.fuse`: averaging flows, or voting on the single-channel masks), which is why
# the whole power set above costs one network pass per channel. It starts at the best cell of the
# table, and its first result is checked against the run's label image of that cell
# (`matches_run` in `fusion_explorer.json`).

# %%
if example_target in runs:
    fusion_view = hcs.subset_explorer(run_dir=runs[example_target], channels=best[example_target]["channels"],
                                      method=best[example_target]["method"])
    run.save_json({"channels": fusion_view.state["channels"], "method": fusion_view.state["method"],
                   "matches_run": fusion_view.state["matches_run"], "f1": fusion_view.state["f1"],
                   "n_predict": fusion_view.state["n_predict"]}, "fusion_explorer")
    run.show(fusion_view.figure, "fusion_explorer")
    display(fusion_view)  # noqa: F821 - the live channel boxes and method selector (in Jupyter)

# %%
run.finish()
