"""Run a grid of experiment cells locally, on a Dask cluster, or on SLURM.

An experiment grid (arms x ratios x seeds x classifiers) is a list of *cells*: one function and one
dict of keyword arguments each. A cell must be idempotent — it reads and writes its artifacts through
:mod:`cxrlib.cache`, so a cell that already ran (here, on another worker, or before an interrupt)
costs one cache lookup, and two workers computing the same artifact never corrupt it::

    from cxrlib.executor import run_grid
    results = run_grid(train_and_score, [{"arm": a, "seed": s} for a in arms for s in seeds],
                       executor=cfg.executor)        # "local" | "local:4" | "serial" | "tcp://host:8786"

``executor`` (a string, so it can be a notebook parameter):

* ``"local"`` (default) — a ``concurrent.futures.ProcessPoolExecutor`` with one worker per core
  (``"local:N"`` for N workers; never more workers than cells, and one worker runs in this process);
  torch threads are split between workers.
* ``"serial"`` — in this process, in order (debugging, and grids of one cell).
* ``"tcp://host:port"`` (or ``"dask://host:port"``) — a running Dask scheduler; or pass a
  ``distributed.Client`` / cluster object directly, e.g. :func:`slurm_cluster`.

Results come back in grid order. The first failing cell cancels the cells not yet started and
raises :class:`CellError` naming the cell's function and keyword arguments.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence


class CellError(RuntimeError):
    """A grid cell raised; the message names the cell."""


def describe_cell(fn: Callable, kwargs: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}({args})"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or SLURM's share), not
    every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _call(fn: Callable, kwargs: Mapping[str, Any]) -> Any:
    return fn(**kwargs)


def _init_worker(threads: int) -> None:
    # N workers x all cores each would oversubscribe the CPU; give each worker its share. A spawned
    # worker has not imported torch yet, and torch sizes its thread pool from OMP_NUM_THREADS.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)


def parse_executor(spec: str) -> tuple[str, Any]:
    """``"local"`` -> ("local", None); ``"local:4"`` -> ("local", 4); ``"serial"``; a scheduler address
    -> ("dask", "tcp://..."). Anything else is an error naming the value."""
    s = spec.strip()
    if s == "serial":
        return "serial", None
    if s == "local":
        return "local", None
    if s.startswith("local:"):
        n = s.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"executor {spec!r}: expected local:N with N >= 1 workers")
        return "local", int(n)
    if s.startswith("dask://"):
        return "dask", "tcp://" + s[len("dask://"):]
    if s.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return "dask", s
    raise ValueError(
        f"executor {spec!r}: expected 'local', 'local:N', 'serial', or a Dask scheduler address like 'tcp://host:8786'"
    )


def run_grid(
    fn: Callable[..., Any],
    cells: Sequence[Mapping[str, Any]],
    *,
    executor: Any = "local",
    desc: str | None = None,
    progress: bool = True,
) -> list[Any]:
    """Run ``fn(**cell)`` for every cell; return the results in grid order (see module docstring)."""
    from .utils import tqdm

    cells = [dict(c) for c in cells]
    if not cells:
        return []
    desc = desc or getattr(fn, "__name__", "cells")
    if isinstance(executor, str):
        kind, arg = parse_executor(executor)
    else:
        kind, arg = "dask", executor
    bar = {"desc": desc, "unit": "cell", "disable": not progress}
    if kind == "local":
        arg = min(arg or usable_cores(), len(cells))
    if kind == "serial" or (kind == "local" and arg == 1):
        out = []
        for c in tqdm(cells, **bar):
            try:
                out.append(fn(**c))
            except Exception as e:
                raise CellError(f"cell {describe_cell(fn, c)} failed: {type(e).__name__}: {e}") from e
        return out
    if kind == "local":
        return _run_local(fn, cells, arg, bar)
    return _run_dask(fn, cells, arg, bar)


def _run_local(fn, cells, workers, bar_opts):
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    from .utils import tqdm

    cores = usable_cores()
    threads = max(1, cores // workers)
    # "spawn": a fresh interpreter per worker; forking a process that already runs torch threads can deadlock.
    ctx = mp.get_context("spawn")
    results: list[Any] = [None] * len(cells)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_call, fn, c): i for i, c in enumerate(cells)}
        with tqdm(total=len(cells), **bar_opts) as bar:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    i = futures[f]
                    err = f.exception()
                    if err is not None:
                        for p in pending:
                            p.cancel()
                        raise CellError(f"cell {describe_cell(fn, cells[i])} failed: {type(err).__name__}: {err}") from err
                    results[i] = f.result()
                    bar.update(1)
    return results


def _scatter_arguments(client, cells):
    """Send every distinct non-scalar argument (a dataset, a config) to the cluster once, not once per
    cell: the cells get futures in their place, which Dask resolves on the worker."""
    scalar = (str, bytes, int, float, bool, type(None))
    big = {id(v): v for c in cells for v in c.values() if not isinstance(v, scalar)}
    futures = dict(zip(big, client.scatter(list(big.values()), hash=False))) if big else {}
    return [{k: futures.get(id(v), v) if not isinstance(v, scalar) else v for k, v in c.items()} for c in cells]


def _run_dask(fn, cells, target, bar_opts):
    from distributed import Client, as_completed

    from .utils import tqdm

    own_client = False
    if isinstance(target, Client):
        client = target
    elif isinstance(target, str):
        client, own_client = Client(target, set_as_default=False), True
    else:  # a cluster object (LocalCluster, SLURMCluster, ...)
        client, own_client = Client(target, set_as_default=False), True
    try:
        # pure=False: a cell's identity is its cache key, not Dask's hash of the arguments.
        futures = [client.submit(_call, fn, c, pure=False) for c in _scatter_arguments(client, cells)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(cells)
        with client.as_current(), tqdm(total=len(cells), **bar_opts) as bar:
            for f in as_completed(futures):
                i = index[f.key]
                if f.status == "error":
                    err = f.exception()
                    client.cancel([g for g in futures if not g.done()])
                    raise CellError(f"cell {describe_cell(fn, cells[i])} failed: {type(err).__name__}: {err}") from err
                results[i] = f.result()
                bar.update(1)
        return results
    finally:
        if own_client:
            client.close()


def slurm_cluster(
    *,
    cores: int = 8,
    memory: str = "32GB",
    gpus: int = 1,
    walltime: str = "04:00:00",
    queue: str | None = None,
    account: str | None = None,
    jobs: int = 1,
    job_extra_directives: Sequence[str] = (),
    local_directory: str | None = None,
    **kwargs: Any,
):
    """A ``dask_jobqueue.SLURMCluster`` of ``jobs`` SLURM jobs, each one Dask worker with ``cores``
    cores, ``memory`` and ``gpus`` GPUs (``#SBATCH --gres=gpu:N``). Pass it as ``executor=``.

    The jobs are submitted when the cluster is scaled (here, on creation if ``jobs > 0``); check
    ``cluster.job_script()`` before submitting to a new site.
    """
    from dask_jobqueue import SLURMCluster

    directives = list(job_extra_directives)
    if gpus:
        directives.append(f"--gres=gpu:{gpus}")
    cluster = SLURMCluster(
        cores=cores, processes=1, memory=memory, walltime=walltime, queue=queue, account=account,
        job_extra_directives=directives, local_directory=local_directory, **kwargs,
    )
    if jobs:
        cluster.scale(jobs=jobs)
    return cluster
