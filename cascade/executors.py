"""Where runs are computed: in this process, in local worker processes, or on a Dask cluster.

Every executor sees runs only through their protocol (`runs.Run`): it is handed the tasks of `runs.plan` (a run
whose record is missing, or a stored run whose checkpoint a dependant needs), and submits each once the tasks it
depends on are done, and the record of a run appears in the store only whole (atomic writes), so a crash
leaves nothing half-written. On Dask, workers need no shared file system: each computes in a private
temporary store, the client writes the records, and a dependency's checkpoint files travel with the task
that needs them. A worker that dies mid-run costs only that run's progress: Dask runs it again elsewhere.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

import torch

from .store import Store

SCHEDULER_ENV = "CASCADE_SCHEDULER"


def connect(scheduler: str | None = None):
    """A Dask client for `scheduler` (default $CASCADE_SCHEDULER), or None for local computing.

    Called before any compute or progress bar, so a wrong address is a one-line error up front.
    """
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address is None:
        return None
    try:
        from distributed import Client
    except ImportError:
        raise ValueError(f"scheduler {address!r} needs dask.distributed; allowed: no scheduler, or "
                         "`pip install dask distributed`") from None
    try:
        return Client(address, timeout=5)
    except (OSError, TimeoutError) as e:
        raise ValueError(f"no Dask scheduler answers at {address!r} ({e}); allowed: the address a running "
                         "`dask scheduler` prints, e.g. tcp://127.0.0.1:8786") from None


def compute(runs: list, store: Store, workers: int = 1, client=None,
            done: Callable[[Any, bool], Any] = lambda run, computed: None, force: bool = False) -> None:
    """Compute the tasks `runs` (from `runs.plan`, dependencies first) into `store`, calling `done(run, computed)`
    after each (computed False: another process had stored it meanwhile, and it was read back): on the Dask cluster of `client`
    (see `connect`), or in `workers` local processes of one intra-op thread each. With `force`, each is computed
    again and its record replaced when the new one is written."""
    if client is not None:
        on_dask(runs, store, client, done, force)
    elif workers == 1:
        for run in runs:
            done(run, run.task(store, force))
    else:
        with local_pool(workers) as pool:
            schedule(runs, lambda r: pool.submit(_task, r, store, force), done, slots=workers)


def _task(run, store: Store, force: bool) -> bool:
    return run.task(store, force)


def local_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` fresh processes (spawned: no state forked from the caller) that live for the whole sweep, so
    each pays for its start and imports once."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start)


def _worker_start() -> None:
    """One intra-op thread per sweep process, and the AMX cap before its first convolution."""
    from ._cpu import guard_amx

    torch.set_num_threads(1)
    guard_amx()


def schedule(runs: list, submit: Callable[[Any], Future], done: Callable[[Any, Any], Any],
             slots: int | None = None) -> None:
    """Submit each of `runs` once those of its dependencies that are among `runs` have finished; wait for all,
    calling `done(run, result)` as each job ends.

    `runs` must list dependencies first. With `slots` (the workers), at most that many are submitted at a time,
    the ready run with the longest chain of cost still behind it first, so no worker idles at the end of a sweep
    while another finishes a long run started late. The first failure is raised once the runs already under way
    have finished, and nothing is submitted after it.
    """
    among = set(runs)
    waiting = {r: {d for d in r.deps() if d in among} for r in runs}
    after: dict[Any, list] = {r: [] for r in runs}
    for r, deps in waiting.items():
        for d in deps:
            after[d].append(r)
    chain: dict[Any, float] = {}
    for r in reversed(runs):  # dependencies first, so every run's dependents are ranked before it
        chain[r] = r.cost() + max((chain[a] for a in after[r]), default=0.0)
    running: dict[Future, Any] = {}
    error = None
    while waiting or running:
        if error is None:
            ready = sorted((r for r, deps in waiting.items() if not deps), key=lambda r: -chain[r])
            for r in ready[:None if slots is None else max(slots - len(running), 0)]:
                running[submit(r)] = r
                del waiting[r]
        if not running:
            break
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for job in finished:
            r = running.pop(job)
            if job.exception() is not None:
                error = error or job.exception()
                continue
            done(r, job.result())
            for deps in waiting.values():
                deps.discard(r)
    if error is not None:
        raise error


# ------------------------------------------------------------------------------------------------------- Dask
def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()} if folder.exists() else {}


def _unpack(store: Store, run, record: dict | None, files: dict[str, bytes], replace: bool = False) -> None:
    """Put a run's record and checkpoint files into `store` (a worker's private one, or the client's); a stored
    record is kept unless `replace`."""
    if record is not None and (replace or store.get(run) is None):
        store.put(run, record["result"], record["meta"])
    folder = store.checkpoint_dir(run)
    for name, data in files.items():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)


def _remote(run, profile: str, own: dict | None, deps: list, force: bool) -> tuple[dict, dict[str, bytes]]:
    """On a Dask worker: compute `run` in a private store seeded with its own record (`own`, when only its
    checkpoint is missing) and its dependencies' records and checkpoints (`deps`: (run, (record, files)) each);
    return its record and checkpoint files."""
    _worker_start()
    tmp = Path(tempfile.mkdtemp(prefix="cascade-"))
    try:
        store = Store(profile, root=tmp / "results", cache=tmp / "cache")
        _unpack(store, run, own, {})
        for dep, (record, files) in deps:
            _unpack(store, dep, record, files)
        record = run.ensure(store, True, force)
        return record, _files(store.checkpoint_dir(run))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def on_dask(runs: list, store: Store, client, done: Callable[[Any, bool], Any], force: bool = False) -> None:
    """Compute `runs` on the Dask cluster of `client`, which it closes; records are written here, by the client."""
    from distributed import as_completed

    with client:
        futures, by_future = {}, {}
        for run in runs:
            deps = []  # a future Dask resolves on the worker, or what the client has of an already stored run
            for dep in run.deps():
                deps.append((dep, futures[dep] if dep in futures else (
                    store.get(dep), _files(store.checkpoint_dir(dep)))))
            own = None if force else store.get(run)
            futures[run] = client.submit(_remote, run, store.profile, own, deps, force, key=f"{run.kind}-{run.key}",
                                         pure=False, retries=2)
            by_future[futures[run]] = run
        for future in as_completed(list(by_future)):
            record, files = future.result()
            run = by_future[future]
            computed = force or store.get(run) is None or not run.has_checkpoint(store)
            _unpack(store, run, record, files, replace=force)
            done(run, computed)
