"""Measurements in child processes, so a hang or a crash is reported, not fatal: torch.compile per model, processes
against threads, and the allocator under Dask's nanny environment."""
from __future__ import annotations

import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .. import data
from .._cpu import MALLOC_ENV
from ..store import REPO
from .clock import interleave, paired, seconds
from .loops import Cascade
from .plan import COMPILE_LIMIT_S, MODELS, Plan, _log, paper_config, train_config


def _launch(spec: dict, **env: str) -> subprocess.Popen:
    """Start `_child(spec)` in a fresh interpreter with spec["threads"] OpenMP threads and `env` added."""
    cmd = [sys.executable, "-c", "import sys, cascade.bench.child as b; b._child(sys.argv[1])", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), **env})


def _collect(proc: subprocess.Popen, timeout: float) -> dict:
    """The child's JSON (its last stdout line); a crash or a timeout becomes {"error": ...}."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = out.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": f"exit code {proc.returncode}: {(err.strip().splitlines() or ['no output'])[-1]}"}
    return json.loads(lines[-1])


def _child(spec_json: str) -> None:
    """Entry point of the child processes (compile, threads); prints one JSON line."""
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    paper = paper_config()
    train_set, test_set = data.load("fashion-mnist", train_size=paper.train_size, test_size=1000)
    cfg = train_config(paper, spec["batch_size"], paper.precision)
    name, width = spec.get("model", paper.model), spec.get("width", paper.width)
    make = lambda: Cascade(name, width, train_set, train_set.stats(), cfg)  # noqa: E731
    if spec["kind"] == "threads":
        run = make()
        run(1)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < spec["seconds"]:
            n += run(1)
        print(json.dumps({"images_per_s": n / (time.perf_counter() - start)}))
        return
    print(json.dumps(compiled_step(make, test_set, spec)))


def compiled_step(make: Callable[[], Cascade], test_set: data.Split, spec: dict) -> dict:
    """In a child: what torch.compile costs and gives one model in a sweep worker. Compile time of the training
    graph, of the evaluation graph, and of a second model instance (a sweep builds one per run); the step
    speed-up, interleaved with eager; and the largest relative gradient error against eager on one batch."""
    from ..train import evaluate

    eager, compiled = make(), make()
    eager_step = seconds(lambda: eager(1), 1)
    eval_s = seconds(lambda: evaluate(eager.model, test_set, eager.stats, torch.device("cpu")), 1)

    def first_call(run: Cascade) -> tuple[float, float]:
        run.model.compile()
        start = time.perf_counter()
        run(1)
        train_s = time.perf_counter() - start - eager_step
        start = time.perf_counter()
        evaluate(run.model, test_set, run.stats, torch.device("cpu"))
        return train_s, time.perf_counter() - start - eval_s

    compile_s, eval_compile_s = first_call(compiled)
    # float32 passes may take different sub-gradients at a ReLU (see `cascade.doctor`), so the check compares
    # the compiled graph with eager in float64, where they cannot; the float32 difference is reported as found.
    reference = copy.deepcopy(eager.model).double()
    out = {"compile_s": compile_s, "eval_compile_s": eval_compile_s,
           "grad_error_fp32": grad_error(eager.model, compiled.model, spec["batch_size"]),
           "grad_error": grad_error(reference, _compiled(copy.deepcopy(reference)), spec["batch_size"])}
    if compile_s > COMPILE_LIMIT_S:
        return {**out, "error": f"compile took {compile_s:.0f} s > {COMPILE_LIMIT_S} s"}
    out["new_instance_s"] = sum(first_call(make()))
    rates = interleave({"eager": lambda: eager(spec["steps"]), "compiled": lambda: compiled(spec["steps"])},
                       spec["repeats"])
    return {**out, "speedup": paired(rates, "compiled", "eager"),
            "images_per_s": {k: statistics.median(v) for k, v in rates.items()}}


def grad_error(eager: torch.nn.Module, compiled: torch.nn.Module, batch_size: int) -> float:
    """Largest relative error (norm of the difference over the norm) of a gradient of `compiled` against
    `eager`, given `eager`'s weights and the same batch in training mode, both in their own dtype. Dropout is
    switched off: compiled code draws other random masks (MobileNetV2's classifier has one)."""
    compiled.load_state_dict(eager.state_dict())
    for m in (*eager.modules(), *compiled.modules()):
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    p0 = next(eager.parameters())
    x = torch.randn(batch_size, 1, 28, 28, dtype=p0.dtype).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    grads = []
    for net in (eager, compiled):
        net.train().zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    return max(float((g - e).norm() / e.norm().clamp_min(1e-30)) for e, g in zip(*grads))


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    model.compile()  # in place: the state-dict keys stay those of the eager model
    return model


def compile_test(plan: Plan, paper) -> dict:
    """torch.compile (inductor) of each model's training step, in child processes sharing one on-disk cache:
    the first compiles cold, the second finds inductor's cache warm (as every worker after the first would)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="cascade-inductor-") as cache:
        for name, width in MODELS.items():
            _log(f"torch.compile {name} (child processes, cold then warm cache)")
            spec = {"kind": "compile", "threads": 1, "batch_size": plan.batch_size, "steps": plan.steps,
                    "repeats": plan.repeats, "model": name, "width": width}
            cold = _collect(_launch(spec, TORCHINDUCTOR_CACHE_DIR=cache), 2 * COMPILE_LIMIT_S + 120)
            warm = _collect(_launch(spec, TORCHINDUCTOR_CACHE_DIR=cache), 2 * COMPILE_LIMIT_S + 120) \
                if "error" not in cold else {}
            out[name] = {"width": width, "cold": cold, "warm": warm}
    return out


def compile_summary(raw: dict, batch_size: int) -> dict:
    """Per model: the warm-cache step speed-up, and the steps after which compiling (warm cache: training and
    evaluation graphs) has paid for itself; inf where compiled steps are not faster."""
    speedup, breakeven = {}, {}
    for name, c in raw.items():
        warm = c["warm"]
        if "speedup" not in warm:
            continue
        speedup[name] = warm["speedup"]
        ips = warm["images_per_s"]
        saved = batch_size / ips["eager"] - batch_size / ips["compiled"]
        breakeven[name] = (warm["compile_s"] + warm["eval_compile_s"]) / saved if saved > 0 else math.inf
    return {"compile_speedup": speedup, "compile_breakeven_steps": breakeven}


def _images_per_s(spec: dict, procs: int = 1, **env: str) -> float:
    """Total images/s of `procs` concurrent "threads" children with `env` added; nan if one fails."""
    outs = [_collect(p, spec["seconds"] + 120) for p in [_launch(spec, **env) for _ in range(procs)]]
    return math.nan if any("error" in o for o in outs) else sum(o["images_per_s"] for o in outs)


def threads_test(plan: Plan, paper) -> dict:
    """Total images/s of independent runs: 1 process with 2 threads against 2 processes with 1 thread each."""
    spec = {"kind": "threads", "batch_size": plan.batch_size, "seconds": plan.procs_s}
    one, two = _images_per_s({**spec, "threads": 2}), _images_per_s({**spec, "threads": 1}, procs=2)
    if math.isnan(one) or math.isnan(two):
        return {"model": paper.model, "error": "a child process failed"}
    return {"model": paper.model, "1proc_2threads_images_per_s": one, "2procs_1thread_images_per_s": two,
            "ratio_2procs_over_1proc": two / one}


def allocator_test(plan: Plan, paper) -> dict:
    """Images/s of the paper model's training in 1-thread children, alternated twice: glibc's allocator as it
    comes and as Dask's nanny starts a worker (its MALLOC_* variables), each with and without cascade's
    thresholds (`_cpu.keep_allocations`)."""
    import importlib

    import dask

    importlib.import_module("distributed")  # registers the nanny's configuration with dask's
    nanny = {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
             if k.startswith("MALLOC") and v is not None}
    envs = {"glibc": {MALLOC_ENV: "glibc"}, "glibc_dask": {MALLOC_ENV: "glibc", **nanny},
            "large": {MALLOC_ENV: "large"}, "large_dask": {MALLOC_ENV: "large", **nanny}}
    spec = {"kind": "threads", "threads": 1, "batch_size": plan.batch_size, "seconds": plan.procs_s}
    rates: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(2):
        for k, env in envs.items():
            rates[k].append(_images_per_s(spec, **env))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"model": paper.model, "dask_env": nanny, "images_per_s": med, "large_over_glibc": med["large"] / med["glibc"],
            "large_over_glibc_dask": med["large_dask"] / med["glibc_dask"]}
