"""Executing a run: the run folder, the record, items serially or on dask, resume, the tables."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import RunConfig, load_config
from ..errors import ConfigError, RecordMismatchError, RunFolderError, RunWriteError, SegmentationError
from .folder import create_run_folder, load_marker, write_tables
from .item import run_item
from .plan import Item, plan, plan_items

__all__ = ["execute", "execute_config", "exit_status", "EXIT_STATUS"]

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
               progress: bool, lost: Callable[[Item, str], dict] | None = None,
               tiles: bool = False) -> Iterator[dict]:
    """Run ``func`` on every item and yield results as they finish.

    Serially in this process for one worker and no scheduler; otherwise on
    dask (:mod:`opsef_core.distributed`): a local cluster of ``workers``
    processes, or the running scheduler at ``scheduler`` (the run folder and
    inputs must then be on storage all workers share).  Each worker process
    keeps its own segmenter instances, so a model loads once per worker.
    ``func`` catches an image's errors itself; an item whose worker is lost
    becomes ``lost(item, message)`` (a failed result).

    With ``tiles`` (a tiled config) and fewer items than workers, the items run one after the
    other in this process and their tiles are the dask tasks (:func:`tile_client`), so one large
    image uses every worker.
    """
    from tqdm.auto import tqdm

    if tiles and items and (scheduler or (workers or 1) > 1) and len(items) < (workers or 1) + bool(scheduler):
        from ..distributed import get_client
        from ..tiling.images import use_tile_client

        with get_client(workers=None if scheduler else int(workers), scheduler=scheduler) as client, \
                use_tile_client(client):
            for it in tqdm(items, desc="images", unit="image", disable=not progress):
                yield func(it)
        return

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
    from ..record import InputFile, file_size, sha256

    try:
        return InputFile(path=path, size=file_size(path), sha256=sha256(path), role=role)
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
    accept_changes: bool = False,
    allow_large: bool = False,
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
        An existing run folder to finish: every item not fully done (failed or partial) is run
        again; done items are kept.
    workers, scheduler : optional
        Override ``execution.workers`` / ``execution.scheduler``: with more
        than one worker or a scheduler address, images run on dask (see
        :func:`_map_items`); results are identical to a serial run.
    progress : bool
        Show a progress bar over images.
    command_line : list of str, optional
        Recorded in run.json (default ``sys.argv``).
    accept_changes : bool
        A re-run of a ``run.json`` or a resume whose input, ground-truth, class-mask or model
        files changed since the record proceeds (the differences are logged and recorded in
        ``changes_accepted``) instead of failing.
    allow_large : bool
        Run a grid of more than :data:`~opsef_core.run.plan.MAX_COMBINATIONS` combinations.

    Returns
    -------
    Path
        The run folder.  ``run.json``'s ``status`` says whether everything was done
        (``completed``), some items or combinations failed (``completed_with_errors``) or
        every item failed (``failed``); :func:`exit_status` turns it into the CLI's exit code.

    Raises
    ------
    ConfigError, InputFileError, EmptyFolderError, ModelNotFoundError, RunFolderError
        Before any image is processed, for a bad config, input path, model or run folder.
    RecordMismatchError
        A re-run or resume whose files changed since the record (without ``accept_changes``),
        or a resume of a run whose recorded config was edited.
    RunWriteError
        The run folder could not be written (disk full, ...): ``run.json`` says ``failed`` with
        the reason when it can still be written; resume once the cause is fixed.
    KeyboardInterrupt
        Ctrl-C or SIGTERM (:class:`~opsef_core.run.integrity.RunTerminated`): recorded as
        ``interrupted``.  Errors of single items are recorded, not raised.
    """
    from ..record import ItemStatus, new_record, read_record, utc_now, write_record
    from .integrity import RunLock, config_digest, terminate_as_interrupt, verify_record

    if isinstance(config, (str, Path)):
        config = load_config(config)
    record = None
    earlier = None  # the record this run must agree with (a re-run or a resume)
    if resume is not None:
        run_dir = Path(resume)
        record = read_record(run_dir)
        if record.config_sha256 is not None and config_digest(record.config) != record.config_sha256:
            raise RecordMismatchError("the config recorded in run.json was edited after the run started; "
                                      "start a new run with the edited config instead", run_dir / "run.json")
        recorded = load_config(run_dir / "run.json")
        if config is not None and config.model_dump(mode="json") != recorded.model_dump(mode="json"):
            raise RunFolderError("the config differs from the one recorded in run.json; "
                                 "resume without a config or start a new run", run_dir)
        config = recorded
        earlier = record
    if config is None:
        raise ConfigError("no config given (pass a config, or resume=RUN_FOLDER)")
    if earlier is None and config.record_path is not None:
        earlier = read_record(config.record_path)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    workers = workers or config.execution.workers
    scheduler = scheduler or config.execution.scheduler
    given = config
    config = config.resolved()  # every relative path resolved once, against the config's folder

    combos = plan(config, allow_large=allow_large or earlier is not None)  # a recorded run was allowed
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
    files: dict[str, str] = {}  # one entry (one checksum) per file, however many items it gives
    for it in items:
        files.setdefault(it.path, "input")
        if it.ground_truth:
            files.setdefault(it.ground_truth, "ground_truth")
        if it.class_mask:
            files.setdefault(it.class_mask, "class_mask")
    entries = [_file_entry(path, role) for path, role in files.items()]  # each file hashed once
    accepted = verify_record(earlier, entries, models, accept=accept_changes) if earlier is not None else []

    if record is None:
        run_dir = create_run_folder(out if out is not None else Path.cwd() / "runs", config.stem)
        record = new_record(given, run_dir, [c.as_dict() for c in combos], models, entries,
                            command_line=command_line, execution={"workers": workers, "scheduler": scheduler})
        record.items = [ItemStatus(id=it.id, image=it.id, path=it.path, series=it.series, t=it.t,
                                   n_combinations=len(combos)) for it in items]
        record.changes_accepted = accepted
    lock = RunLock(run_dir).acquire()  # one writer per run folder (a second resume fails here)
    try:
        if resume is not None:
            record.status, record.finished, record.error = "running", None, None
            record.resumed.append(utc_now())
            if accepted:  # the files now are the ones this run reads: record their checksums
                record.inputs = entries
                record.models = models
                record.changes_accepted += accepted
        write_record(record, run_dir)
        logger.info("run folder %s: %d items x %d combinations", run_dir, len(items), len(combos))
        with terminate_as_interrupt():
            _run_items(config, record, run_dir, items, combos, resume is not None, workers, scheduler, progress)
    finally:
        lock.release()
    return run_dir


def execute_config(config: dict, out: str | Path, base_dir: str | Path | None = None) -> Path:
    """Validate a config dict and run it with :func:`execute` (how workflows and notebooks run).

    Parameters
    ----------
    config : dict
        A run config (the schema of ``configs/*.json``).
    out : path
        Parent of the new run folder (e.g. a notebook's run folder).
    base_dir : path, optional
        Folder relative paths in the config resolve against (default: the working directory).

    Returns
    -------
    Path
        The run folder; its ``run.json`` repeats the run (``opsef run RUN/run.json``).

    Raises
    ------
    ConfigError, InputFileError, EmptyFolderError, ModelNotFoundError
        As :func:`execute`.
    """
    from ..config import config_from_dict

    name = config.get("name") or "config" if isinstance(config, dict) else "config"
    cfg = config_from_dict(config, where=f"{name} config")
    cfg.with_base_dir(Path(base_dir) if base_dir is not None else Path.cwd())
    return execute(cfg, out=out, progress=False, command_line=["opsef_core.run.execute_config", str(name)])


def _run_items(config: RunConfig, record, run_dir: Path, items: list[Item], combos: list, resume: bool,
               workers, scheduler, progress: bool) -> None:
    """Run the items not yet done, keep ``run.json`` current, write the tables."""
    from ..record import ItemStatus, utc_now, write_record
    from .integrity import RunTerminated, is_write_failure

    results: dict[str, dict] = {}
    todo = []
    for it in items:
        marker = load_marker(run_dir, it) if resume else None
        if marker is not None:
            results[it.id] = marker
            st = record.item(it.id)
            if st is not None:
                st.resumed = True
        else:
            todo.append(it)
    if resume:
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
        for res in _map_items(_one, todo, workers, scheduler, progress, lost=_lost,
                              tiles=config.execution.tiling is not None):
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
        ordered = [results[it.id] for it in items if it.id in results]
        write_tables(config, run_dir, ordered, combos, items)
    except BaseException as exc:
        write_failure = is_write_failure(exc)
        if isinstance(exc, KeyboardInterrupt):
            record.status = "interrupted"
            record.error = str(exc) if isinstance(exc, RunTerminated) else "interrupted (Ctrl-C)"
        else:
            record.status = "failed"
            record.error = (f"cannot write the run folder: {_strerror(exc)}" if write_failure
                            else f"{type(exc).__name__}: {exc}")
        record.finished = utc_now()
        try:
            write_record(record, run_dir)
        except OSError as again:  # the disk is still full: run.json keeps its last consistent state
            logger.error("could not record the failure in run.json: %s", again)
        if write_failure:
            raise RunWriteError(f"{record.error}; the run stopped, finish it once fixed with "
                                f"opsef run --resume {run_dir}", run_dir) from exc
        raise
    n_bad = sum(r["status"] != "done" for r in ordered)
    all_failed = bool(ordered) and all(r["status"] == "failed" for r in ordered)
    record.finished = utc_now()
    record.execution["device"] = _device()
    record.status = "completed" if n_bad == 0 else ("failed" if all_failed else "completed_with_errors")
    record.error = "every item failed; see summary.csv" if all_failed else None
    write_record(record, run_dir)
    if n_bad:
        logger.warning("%d of %d items had failures; see summary.csv", n_bad, len(ordered))


def _device() -> dict:
    """The machine the run used (CPU count, GPUs, the frameworks' builds: ``docs/gpu.md``).  The
    frameworks the run imported are asked for their GPUs; others are described from their
    package metadata only (with several workers, the workers' frameworks are not asked)."""
    from ..device import describe_device

    try:
        return describe_device()
    except Exception as exc:  # noqa: BLE001 - describing the machine must never fail a finished run
        logger.warning("could not describe the device: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _strerror(exc: BaseException) -> str:
    while exc is not None:
        if isinstance(exc, OSError) and exc.strerror:
            return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
        exc = exc.__cause__ or exc.__context__
    return str(exc)


#: exit status of ``opsef run`` by the record's status (README, "Exit status")
EXIT_STATUS = {"completed": 0, "completed_with_errors": 3, "failed": 4, "interrupted": 130, "running": 1}


def exit_status(run_dir: str | Path) -> int:
    """The exit status ``opsef run`` reports for a finished run folder.

    0 every item and combination done; 3 some items or combinations failed; 4 every item
    failed; 130 interrupted.  (2, bad input or config, is raised before a run starts.)
    """
    from ..record import read_record

    return EXIT_STATUS.get(read_record(run_dir).status, 1)
