"""Dask helpers: a client on a local cluster or a remote scheduler, and fault-tolerant item mapping.

Models load once per worker
---------------------------
Segmenter instances are per-process singletons (``segment.get_segmenter``
caches them, and each instance caches its loaded models), so workers are
*processes* with one thread each by default: every worker loads a given model
at most once, whatever number of items it runs.  :func:`worker_models` lists
the models each worker holds.

HPC
---
Any dask scheduler works, e.g. a SLURM cluster via the optional
``dask-jobqueue`` (``pip install dask-jobqueue``)::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=8, processes=8, memory="64GB", walltime="02:00:00")
    cluster.scale(jobs=4)
    # then: opsef run config.json --scheduler tcp://HOST:PORT  (cluster.scheduler_address)

The run folder and the inputs must be on storage every worker can read/write.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .errors import ConfigError

__all__ = ["ItemResult", "get_client", "worker_environ", "trim_heap", "run_items", "iter_items", "worker_models"]

logger = logging.getLogger(__name__)


@dataclass
class ItemResult:
    """Outcome of one item.

    Attributes
    ----------
    index : int
        Position of the item in the input list.
    ok : bool
        False when the item raised (or its worker died).
    value : Any
        The function's return value (None when failed).
    error : str, optional
        ``"ExceptionType: message"`` of a failure.
    """

    index: int
    ok: bool
    value: Any = None
    error: str | None = None


#: environment of single-threaded worker processes (set before they start)
WORKER_THREAD_ENV = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1,
                     "TF_NUM_INTRAOP_THREADS": 1, "TF_NUM_INTEROP_THREADS": 1}


#: distributed's default ``MALLOC_TRIM_THRESHOLD_`` for worker processes (``distributed.yaml``)
_DASK_DEFAULT_TRIM = 65536


def worker_environ(pre_spawn: dict, *, single: bool = True) -> dict:
    """Environment of local worker processes: dask's pre-spawn settings, one thread, glibc's malloc.

    distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers so that freed memory goes back
    to the system.  Setting any glibc malloc threshold also turns off glibc's adaptive mmap threshold,
    so every array over 128 KiB is mapped and unmapped anew: an opsef item (many image-sized
    temporaries) then runs about 25 % slower than in a plain process (``benchmarks/RESULTS.md`` (c)).
    That default is dropped here; a value the user configured (any other value) is kept.

    Parameters
    ----------
    pre_spawn : dict
        ``distributed.nanny.pre-spawn-environ`` from the dask config.
    single : bool
        Add :data:`WORKER_THREAD_ENV` (one thread per worker process).

    Returns
    -------
    dict
        The environment to set before the workers start.
    """
    env = {k: v for k, v in dict(pre_spawn).items()
           if not (k == "MALLOC_TRIM_THRESHOLD_" and str(v) == str(_DASK_DEFAULT_TRIM))}
    if single:
        env.update(WORKER_THREAD_ENV)
    return env


def trim_heap() -> bool:
    """Give the memory freed on glibc's heap back to the system (``malloc_trim(0)``); False elsewhere.

    With the adaptive mmap threshold that :func:`worker_environ` keeps, image-sized temporaries that
    were freed once come from the heap afterwards, and the heap's free space is not returned by
    itself: a tiled run's RSS crept up by about 5 MiB per tile.  Called once per tile (it costs well
    under a millisecond when there is little to return), it keeps the peak at the one tile's working
    set: 4096² StarDist in 16 tiles peaked at 1452 MiB instead of 1532 MiB (``benchmarks/RESULTS.md`` (g)).

    Returns
    -------
    bool
        Whether glibc's ``malloc_trim`` was called (False on other C libraries and platforms).
    """
    from ._libc import libc

    trim = getattr(libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


@contextmanager
def get_client(workers: int | None = None, scheduler: str | None = None, threads_per_worker: int = 1,
               memory_limit: str | float | None = "auto", processes: bool = True, timeout: float = 30):
    """Yield a ``distributed.Client`` on a new local cluster or an existing scheduler.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the local cluster (default: number of CPU cores).
        Ignored when ``scheduler`` is given.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``), e.g. a
        dask-jobqueue ``SLURMCluster``'s ``scheduler_address``.
    threads_per_worker : int
        Threads per worker process (1: one model instance per process).
    memory_limit : str, float or None
        Per-worker memory limit of the local cluster ("auto": RAM / workers).
    processes : bool
        Workers as processes (default, needed for per-process model caches and
        to sidestep the GIL) or threads.
    timeout : float
        Seconds to wait for the scheduler.

    Yields
    ------
    distributed.Client
        Closed (with its local cluster) on exit.

    Raises
    ------
    ConfigError
        When the scheduler cannot be reached or ``workers`` < 1.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot connect to the dask scheduler {scheduler!r}: {exc}") from None
        logger.info("connected to dask scheduler %s (%d workers)", scheduler,
                    len(client.scheduler_info().get("workers", {})))
        try:
            yield client
        finally:
            client.close()
        return
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    import dask

    # one thread per worker process: numpy's BLAS/OpenMP (dask pins those by default), torch (it
    # follows OMP_NUM_THREADS) and TensorFlow's own pools, so workers do not oversubscribe the cores.
    # The nanny lets this process's environment override its pre-spawn settings (e.g. an
    # OMP_NUM_THREADS set here), so the values are also given as the workers' own environment.
    single = threads_per_worker == 1
    environ = worker_environ(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}, single=single)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=processes,
                               memory_limit=memory_limit, dashboard_address=None,
                               **({"env": {k: str(v) for k, v in WORKER_THREAD_ENV.items()}} if single and processes
                                  else {}))
    client = Client(cluster)
    logger.info("local dask cluster: %d workers x %d threads", len(cluster.workers), threads_per_worker)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _call(func: Callable, item: Any) -> tuple[bool, Any, str | None]:
    """Run one item on a worker, turning an exception into a failed result."""
    try:
        return True, func(item), None
    except Exception as exc:  # per-item failure capture: the others go on
        return False, None, f"{type(exc).__name__}: {exc}"


def iter_items(func: Callable[[Any], Any], items: Iterable[Any], client, progress: bool = True,
               desc: str = "items") -> Iterator[ItemResult]:
    """Submit ``func(item)`` for every item and yield :class:`ItemResult` as they finish.

    An exception in one item (or the loss of its worker) becomes a failed
    result carrying the error message; the other items complete.

    Parameters
    ----------
    func : callable
        Picklable function of one item (runs on a worker).
    items : iterable
        Picklable items.
    client : distributed.Client
    progress : bool
        tqdm bar over completed items.
    desc : str
        Progress bar label.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    import uuid

    items = list(items)
    tag = uuid.uuid4().hex[:8]
    futures = [client.submit(_call, func, item, pure=False, key=f"opsef-{desc}-{tag}-{i}")
               for i, item in enumerate(items)]
    index = {f.key: i for i, f in enumerate(futures)}
    with tqdm(total=len(futures), desc=desc, disable=not progress) as bar:
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                ok, value, error = fut.result()
            except Exception as exc:  # worker died, cancelled, unpicklable result...
                ok, value, error = False, None, f"{type(exc).__name__}: {exc}"
            if not ok:
                logger.warning("item %d failed: %s", i, error)
            bar.update(1)
            fut.release()
            yield ItemResult(index=i, ok=ok, value=value, error=error)


def run_items(func: Callable[[Any], Any], items: Iterable[Any], client, progress: bool = True,
              desc: str = "items") -> list[ItemResult]:
    """Run ``func`` on every item on the dask cluster; results in input order.

    Parameters
    ----------
    func, items, client, progress, desc
        See :func:`iter_items`.

    Returns
    -------
    list of ItemResult
        One per item, in the order of ``items``; failed items have
        ``ok=False`` and ``error`` set.
    """
    results = list(iter_items(func, items, client, progress=progress, desc=desc))
    return sorted(results, key=lambda r: r.index)


def _models_here() -> dict:
    import os

    from .segment import base

    return {"pid": os.getpid(),
            "models": {name: sorted(seg._models) for name, seg in base._INSTANCES.items()}}


def worker_models(client) -> dict:
    """Which segmenter models each worker process holds (loaded once each).

    Returns
    -------
    dict
        ``{worker_address: {"pid": int, "models": {backend: [model keys]}}}``.
    """
    return client.run(_models_here)
