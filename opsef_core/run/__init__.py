"""The run engine: plan and execute a run, every item × every (pipeline, segmenter setting).

The one path that records, caches network passes, scales out, tiles and resumes.

- :mod:`~opsef_core.run.plan` — :func:`plan` expands a :class:`~opsef_core.config.RunConfig`
  into :class:`Combination` objects (pipelines × segmenter settings, sweeps expanded as
  Cartesian products); :func:`plan_items` lists the run *items*: every (file, series, time
  point), narrowed by ``inputs.scenes`` / ``inputs.time_points``, each paired with its ground
  truth and class mask by name.
- :mod:`~opsef_core.run.item` — :func:`run_item` processes one item: read it; apply each
  pipeline **once**; group the settings by :meth:`Segmenter.network_key` (one network pass per
  (item, pipeline, key), one decoding per setting); map labels made at a pipeline's working
  resolution back to the input grid; post-process, measure, score and write the outputs; write
  the item's done-marker ``items/<id>.json`` **last**.  It is a pure function of (config, item,
  combinations, run folder) returning a JSON-serialisable dict, so items can run on dask.
- :mod:`~opsef_core.run.execute` — :func:`execute` creates a new run folder (or resumes one),
  writes ``run.json`` (:mod:`opsef_core.record`), runs the items serially or on a local dask
  cluster / a remote scheduler, and gathers the tables.
- :mod:`~opsef_core.run.folder` — run folders, done-markers, ``summary.csv``,
  ``measurements.csv``, ``metrics.csv``, ``ranking.csv`` / ``ranking.png``.
"""

from .execute import execute, execute_config, exit_status
from .folder import ITEMS_DIR, RANK_GROUP, create_run_folder
from .item import CombinationResult, load_input, run_item, to_input_grid
from .plan import Combination, Item, plan, plan_items, plan_table, slug

__all__ = [
    "Combination",
    "CombinationResult",
    "Item",
    "ITEMS_DIR",
    "RANK_GROUP",
    "plan",
    "plan_items",
    "plan_table",
    "execute",
    "execute_config",
    "exit_status",
    "run_item",
    "load_input",
    "to_input_grid",
    "create_run_folder",
    "slug",
]
