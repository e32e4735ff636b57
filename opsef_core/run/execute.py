"""Executing a run: the run folder, the record, items serially or on dask, resume, the tables."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import RunConfig, load_config
from ..errors import ConfigError, RunFolderError, SegmentationError
from .folder import create_run_folder, load_marker, write_tables
from .item import run_item
from .plan import Item, plan, plan_items

__all__ = ["execute"]

logger = logging.getLogger(__name__)


#: the deep-learning library that runs each backend's network (for the device record)
_FRAMEWORK = {"cellpose": "torch", "fusion": "torch", "unet": "torch", "stardist": "tensorflow"}


def _device_entry(backend: str, params: Any) -> dict:
    """``device_requested`` and the ``device`` it resolves to here, for backends that have one.

    With a remote scheduler the workers may see other devices than this machine: then the
    resolution fails here (``cuda`` asked, no GPU seen) and ``device`` is recorded as None.
    """
    requested = getattr(params, "device", None)
    if requested is None or backend not in _FRAMEWORK:
        return {}
    from ..segment.device import resolve_device

    try:
        used = resolve_device(requested, _FRAMEWORK[backend])
    except SegmentationError as exc:
        logger.warning("%s: %s (recording the device as unresolved)", backend, exc)
        used = None
    return {"device_requested": requested, "device": used, "framework": _FRAMEWORK[backend]}


def _map_items(func: Callable[[Item], dict], items: list[Item], workers: int, scheduler: str | None,
               progress: bool, lost: Callable[[Item, str], dict] | None = None) -> Iterator[dict]:
    """Run ``func`` on every item and yield results as they finish.

    Serially in this process for one worker and no scheduler; otherwise on
    dask (:mod:`opsef_core.distributed`): a local cluster of ``workers``
    processes, or the running scheduler at ``scheduler`` (the run folder and
    inputs must then be on storage all workers share).  Each worker process
    keeps its own segmenter instances, so a model loads once per worker.
    ``func`` catches an image's errors itself; an item whose worker is lost
    becomes ``lost(item, message)`` (a failed result).
    """
    from tqdm.auto import tqdm

    if ((workers or 1) <= 1 or len(items) <= 1) and not scheduler:  # no cluster for one image
        for it in tqdm(items, desc="images", unit="image", disable=not progress):
            yield func(it)
        return
    if not items:
        return
    from ..distributed import get_client, iter_items

    with get_client(workers=None if scheduler else min(int(workers), len(items)), scheduler=scheduler) as client:
        for res in iter_items(func, items, client, progress=progress, desc="images"):
            if res.ok:
                yield res.value
            else:
                it = items[res.index]
                logger.error("%s: lost on its dask worker: %s", it.id, res.error)
                if lost is None:
                    raise RunFolderError(f"item {it.id} failed on its dask worker: {res.error}")
                yield lost(it, res.error)


def _file_entry(path: str, role: str):
    from ..record import InputFile, sha256

    try:
        return InputFile(path=path, size=os.path.getsize(path), sha256=sha256(path), role=role)
    except OSError:
        return InputFile(path=path, role=role)


def execute(
    config: RunConfig | str | Path | None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    command_line: list[str] | None = None,
) -> Path:
    """Run a config and write a new run folder (or finish an interrupted one).

    Parameters
    ----------
    config : RunConfig, path or None
        The config (or a config/run.json file).  May be None with ``resume``
        (the recorded config is used).
    out : str or Path, optional
        Parent of the run folder (default ``runs/`` in the working directory).
    resume : str or Path, optional
        An existing run folder to finish: items with a done-marker are skipped.
    workers, scheduler : optional
        Override ``execution.workers`` / ``execution.scheduler``: with more
        than one worker or a scheduler address, images run on dask (see
        :func:`_map_items`); results are identical to a serial run.
    progress : bool
        Show a progress bar over images.
    command_line : list of str, optional
        Recorded in run.json (default ``sys.argv``).

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    ConfigError, InputFileError, EmptyFolderError, ModelNotFoundError, RunFolderError
        Before any image is processed, for a bad config, input path, model or
        run folder.  Errors of single images are recorded, not raised.
    """
    from ..record import ItemStatus, new_record, read_record, utc_now, write_record

    if isinstance(config, (str, Path)):
        config = load_config(config)
    record = None
    if resume is not None:
        run_dir = Path(resume)
        record = read_record(run_dir)
        recorded = load_config(run_dir / "run.json")
        if config is not None and config.model_dump(mode="json") != recorded.model_dump(mode="json"):
            raise RunFolderError("the config differs from the one recorded in run.json; "
                                 "resume without a config or start a new run", run_dir)
        config = recorded
    if config is None:
        raise ConfigError("no config given (pass a config, or resume=RUN_FOLDER)")
    workers = workers or config.execution.workers
    scheduler = scheduler or config.execution.scheduler
    given = config
    config = config.resolved()  # every relative path resolved once, against the config's folder

    combos = plan(config)
    items = plan_items(config)
    models = []
    from ..segment import get_segmenter

    seen_models = set()
    for c in combos:
        if (c.segmenter, c.network_key) in seen_models:
            continue
        seen_models.add((c.segmenter, c.network_key))
        seg = get_segmenter(c.backend)
        p = seg.params(c.params)
        desc = seg.describe_model(p)
        models.append({"segmenter": c.segmenter, "setting": c.setting_id, **desc, **_device_entry(c.backend, p)})

    if record is None:
        run_dir = create_run_folder(out if out is not None else Path.cwd() / "runs", config.stem)
        files = {}  # one entry (one checksum) per file, however many items it gives
        for it in items:
            files.setdefault(it.path, "input")
            if it.ground_truth:
                files.setdefault(it.ground_truth, "ground_truth")
            if it.class_mask:
                files.setdefault(it.class_mask, "class_mask")
        inputs = [_file_entry(path, role) for path, role in files.items()]
        record = new_record(given, run_dir, [c.as_dict() for c in combos], models, inputs,
                            command_line=command_line, execution={"workers": workers, "scheduler": scheduler})
        record.items = [ItemStatus(id=it.id, image=it.id, path=it.path, series=it.series, t=it.t,
                                   n_combinations=len(combos)) for it in items]
    else:
        record.status = "running"
        record.finished = None
        record.resumed.append(utc_now())
    write_record(record, run_dir)
    logger.info("run folder %s: %d items x %d combinations", run_dir, len(items), len(combos))

    results: dict[str, dict] = {}
    todo = []
    for it in items:
        marker = load_marker(run_dir, it) if resume is not None else None
        if marker is not None:
            results[it.id] = marker
            st = record.item(it.id)
            if st is not None:
                st.resumed = True
        else:
            todo.append(it)
    if resume is not None:
        logger.info("resuming %s: %d of %d items already done", run_dir, len(items) - len(todo), len(items))

    def _one(it: Item) -> dict:
        return run_item(config, it, combos, run_dir)

    def _lost(it: Item, msg: str) -> dict:
        rows = [{**it.columns(), **c.columns(), "status": "failed", "error": msg} for c in combos]
        return {"id": it.id, "image": it.id, "path": it.path, "series": it.series, "t": it.t,
                "status": "failed", "error": msg,
                "summary": rows, "metrics": [], "measurements": None,
                "counts": {"preprocess": 0, "network": 0, "decode": 0}}

    try:
        for res in _map_items(_one, todo, workers, scheduler, progress, lost=_lost):
            results[res["id"]] = res
            st = record.item(res["id"])
            if st is None:
                st = ItemStatus(id=res["id"], image=res["image"], path=res["path"], series=res.get("series"),
                                t=res.get("t"), n_combinations=len(combos))
                record.items.append(st)
            st.status = res["status"]
            st.error = res["error"]
            st.n_failed = sum(r["status"] != "done" for r in res["summary"])
            write_record(record, run_dir)
    except BaseException as exc:
        record.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        record.finished = utc_now()
        write_record(record, run_dir)
        raise

    ordered = [results[it.id] for it in items if it.id in results]
    write_tables(config, run_dir, ordered, combos, items)
    record.finished = utc_now()
    record.status = "completed" if all(r["status"] == "done" for r in ordered) else "completed_with_errors"
    write_record(record, run_dir)
    n_bad = sum(r["status"] != "done" for r in ordered)
    if n_bad:
        logger.warning("%d of %d items had failures; see summary.csv", n_bad, len(ordered))
    return run_dir


