"""Sweep efficiency for `cascade bench`: how much of the machine a chapter's sweep turns into model FLOPs.

A slice of a chapter's sweep (its runs for some seeds, with what they depend on) is computed for real, with
the executor the book uses, into a temporary store. Efficiency is the model FLOPs it trained and evaluated
(counted by the training loop, `cascade.timing`) over wall time x workers x the per-core peak. Its reference
is the train step's own roofline fraction *in the same sweep*: the sweep could reach it only if nothing but
train steps ran. The gap splits exactly, in core-seconds, into these losses:

- eval_tracker: evaluation and the shedding tracker, less what their FLOPs would take at the step's rate;
- data: loading the dataset and producing batches;
- setup_checkpoints: in the run but in no phase above (building and pruning the model, loading the
  checkpoints it starts from, writing its own) and the checkpoint callback;
- start_imports: in flight but not in the run: process start, imports, and handing the run over;
- dependencies: a worker idle while every waiting run waits for a run still training;
- end_idle: a worker idle after the last run was handed out.

Dask scaling times the same slice on a local cluster of 1 and 2 workers.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path

from .. import executors
from .. import runs as R
from ..experiments import get as experiment
from ..provenance import peak_rss_mb
from ..store import Store
from ..timing import Stopwatch
from .clock import one_thread
from .plan import DASK_CHAPTER, DASK_WORKERS, SWEEP_WORKERS, Plan, _log
from .step import gemm_peak

LOSSES = ("eval_tracker", "data", "setup_checkpoints", "start_imports", "dependencies", "end_idle")
STEP_PHASES = ("step",)
EVAL_PHASES = ("eval", "tracker")


def slice_runs(name: str, profile: str, seeds: tuple[int, ...]) -> list:
    """The runs of chapter `name` under `profile` for `seeds`, with their dependencies, dependencies first.
    A run without a seed (one comparing two others) is in the slice when all it depends on is."""
    exp = experiment(name)
    chosen: list = []
    for run in R.closure(exp.all_runs(exp.make_config(profile))):
        seed = run.labels().get("seed")
        if (seed in seeds) if seed is not None else all(d in chosen for d in run.deps()):
            chosen.append(run)
    return R.closure(chosen)


def _measured(run, store: Store) -> dict:
    """In a sweep worker: compute `run` and say where its time went, with this process's peak memory."""
    clock = Stopwatch()
    run.ensure(store)
    return {"seconds": clock.elapsed(), "phases_s": clock.phases(), "model_flops": clock.model_flops(),
            "pid": os.getpid(), "peak_rss_mb": peak_rss_mb()}


def at_peak_s(flops: dict[str, float], peak: dict[str, float]) -> float:
    """Seconds `flops` ("train", "eval_bf16", ...) take at the per-core `peak` of their precision."""
    return sum(v / peak[k.split("_")[1] if "_" in k else "fp32"] for k, v in flops.items())


def idle(spans: list[tuple[float, float]], workers: int, cut: float, wall: float) -> tuple[float, float]:
    """Idle worker-seconds before and after `cut`, with runs in flight over `spans` (start, end) in [0, wall]."""
    def busy(a: float, b: float) -> float:
        return sum(max(0.0, min(end, b) - max(start, a)) for start, end in spans)

    return workers * cut - busy(0.0, cut), workers * (wall - cut) - busy(cut, wall)


def breakdown(runs: list[dict], workers: int, wall: float, last_submit: float, peak: dict[str, float]) -> dict:
    """Efficiency, the step's roofline fraction and the losses (fractions of wall x workers) of a sweep whose
    runs (`_measured` dicts with "start" and "end" on the sweep's clock) ran in `workers` processes."""
    core_s = wall * workers
    flops: dict[str, Counter] = {"train": Counter(), "eval": Counter()}
    for r in runs:
        for k, v in r["model_flops"].items():
            flops[k.split("_")[0]][k] += v
    train_peak_s, eval_peak_s = at_peak_s(flops["train"], peak), at_peak_s(flops["eval"], peak)
    phase = lambda names: sum(r["phases_s"].get(n, 0.0) for r in runs for n in names)  # noqa: E731
    step_s = phase(STEP_PHASES)
    roofline = train_peak_s / step_s if step_s else float("nan")
    in_runs = sum(r["seconds"] for r in runs)
    dependencies, end_idle = idle([(r["start"], r["end"]) for r in runs], workers, last_submit, wall)
    losses = {"eval_tracker": phase(EVAL_PHASES) - eval_peak_s / roofline,
              "data": phase(("data",)),
              "setup_checkpoints": in_runs - step_s - phase(EVAL_PHASES) - phase(("data",)),
              "start_imports": sum(r["end"] - r["start"] - r["seconds"] for r in runs),
              "dependencies": dependencies, "end_idle": end_idle}
    efficiency = (train_peak_s + eval_peak_s) / core_s
    return {"efficiency": efficiency, "step_roofline": roofline, "over_step": efficiency / roofline,
            "losses": {k: v / core_s for k, v in losses.items()}, "wall_s": wall, "workers": workers,
            "runs": len(runs), "model_tflop": sum(sum(r["model_flops"].values()) for r in runs) / 1e12}


def _worker_peaks(runs: list[dict]) -> list[float]:
    """Peak resident memory of each worker process (MB), largest first."""
    peaks: dict[int, float] = {}
    for r in runs:
        peaks[r["pid"]] = max(peaks.get(r["pid"], 0.0), r["peak_rss_mb"])
    return sorted(peaks.values(), reverse=True)


def sweep(name: str, profile: str, seeds: tuple[int, ...], workers: int, log=lambda msg: None) -> dict:
    """Compute the slice of chapter `name` in `workers` local processes (the book's executor) into a
    temporary store; return its timeline (for `summary`)."""
    runs = slice_runs(name, profile, seeds)
    tmp = Path(tempfile.mkdtemp(prefix="cascade-sweep-"))
    spans: dict = {}  # run -> [future, submitted, finished] on the sweep's clock
    last_submit, done = 0.0, iter(range(1, len(runs) + 1))
    try:
        store = Store(profile, root=tmp / "results", cache=tmp / "cache")
        t0 = time.perf_counter()
        with executors.local_pool(workers) as pool:
            def submit(run) -> Future:
                nonlocal last_submit
                last_submit = time.perf_counter() - t0
                spans[run] = [pool.submit(_measured, run, store), last_submit]
                spans[run][0].add_done_callback(lambda f, run=run: spans[run].append(time.perf_counter() - t0))
                return spans[run][0]

            executors.schedule(runs, submit, lambda run, result: log(f"{name}: {next(done)}/{len(runs)} runs"),
                               slots=workers)
        measured = [{**f.result(), "start": start, "end": end} for f, start, end in spans.values()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": measured, "workers": workers, "wall_s": max(r["end"] for r in measured),
            "last_submit_s": last_submit, "seeds": list(seeds), "profile": profile}


def summary(timeline: dict, peak: dict[str, float]) -> dict:
    """A `sweep` timeline's breakdown against the per-core `peak`, with each worker's peak memory."""
    return {**breakdown(timeline["runs"], timeline["workers"], timeline["wall_s"], timeline["last_submit_s"], peak),
            "seeds": timeline["seeds"], "profile": timeline["profile"], "peak_rss_mb": _worker_peaks(timeline["runs"])}


def dask_scaling(name: str, profile: str, seeds: tuple[int, ...], counts: tuple[int, ...],
                 log=lambda msg: None) -> dict:
    """Wall time and model FLOPs of the slice on a local Dask cluster of each of `counts` single-threaded workers
    (cluster start excluded, reported apart); the speed-up is over the first count."""
    from distributed import Client, LocalCluster

    runs = slice_runs(name, profile, seeds)
    out: dict = {"chapter": name, "profile": profile, "seeds": list(seeds), "runs": len(runs), "workers": {}}
    for n in counts:
        tmp = Path(tempfile.mkdtemp(prefix="cascade-dask-"))
        try:
            start = time.perf_counter()
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, local_directory=str(tmp / "dask"))
            client = Client(cluster)
            started = time.perf_counter() - start
            store = Store(profile, root=tmp / "results", cache=tmp / "cache")
            start = time.perf_counter()
            executors.on_dask(runs, store, client, lambda run, computed: None)
            wall = time.perf_counter() - start
            cluster.close()
            flops: dict[str, float] = {}
            for run in runs:
                for k, v in store.get(run)["meta"]["model_flops"].items():
                    flops[k] = flops.get(k, 0.0) + v
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["workers"][str(n)] = {"wall_s": wall, "cluster_start_s": started, "model_flops": flops}
        log(f"dask {name}: {n} worker(s) {wall:.0f} s")
    first = out["workers"][str(counts[0])]["wall_s"]
    out["speedup"] = {k: first / v["wall_s"] for k, v in out["workers"].items()}
    return out


def sweeps(plan: Plan) -> dict:
    """Each chapter's sweep slice, set against the per-core GEMM peak (the mean of one measured before the
    sweeps and one after), and the Dask scaling."""
    before = one_thread(lambda: gemm_peak(plan.gemm, plan.repeats))()
    timelines = {}
    for name in plan.sweeps:
        _log(f"sweep {name} [{plan.sweep_profile}, seeds {plan.sweep_seeds}] on {SWEEP_WORKERS} workers")
        timelines[name] = sweep(name, plan.sweep_profile, plan.sweep_seeds, SWEEP_WORKERS, _log)
    dask = None
    if plan.dask:
        _log(f"Dask: {DASK_CHAPTER} on {' and '.join(map(str, DASK_WORKERS))} local workers")
        dask = dask_scaling(DASK_CHAPTER, plan.sweep_profile, plan.sweep_seeds, DASK_WORKERS, _log)
    after = one_thread(lambda: gemm_peak(plan.gemm, plan.repeats))()
    peak = {p: (before[p] + after[p]) / 2 for p in before}
    if dask:
        for n, w in dask["workers"].items():
            w["efficiency"] = at_peak_s(w["model_flops"], peak) / (w["wall_s"] * int(n))
    return {"sweeps": {k: summary(t, peak) for k, t in timelines.items()}, "dask_scaling": dask,
            "core_gemm_flops_per_s": {"before": before, "after": after, "used": peak}}
