"""`python -m cascade bench`: how fast cascade trains, against the way research code usually trains.

Why side by side: this machine is shared and its load changes within seconds, so two numbers taken a
minute apart do not make a ratio. Every comparison here is measured in one process, the variants taking
turns in short repeats (in a rotated order), and each figure is a median over repeats; ratios are the
median of per-repeat ratios, so both sides of a ratio saw the same load.

What is measured (the numbers behind each goal, raw repeats included, go into the JSON):

1. throughput of a pruned (10%, gmp) fine-tuning step on 28x28 Fashion-MNIST: a conventional baseline
   (DataLoader over torchvision's FashionMNIST with per-sample transforms, fp32, contiguous,
   torch.nn.utils.prune, plain SGD) against `cascade.train.train` with its defaults, in fp32 and bf16;
2. mask overhead: the cost of the two fused mask ops per step over the step time, and the pruned/dense
   step-time ratio for reference (at the 1% level that ratio is noise on a shared machine);
3. tracker overhead: one `Tracker.record` over the time of an epoch of the paper's 4000 images;
4. roofline: model FLOP/s (6 x MACs per image, forward and backward) over a large GEMM's FLOP/s;
plus torch.compile of the training step and 2 processes x 1 thread against 1 process x 2 threads,
each in child processes so a hang or crash is reported, not fatal.

This module measures and writes bench.json; `bench_report` renders it, for the CLI and the book alike. How long
the experiments take is not a benchmark: the appendix and `cascade status` read it from the stored runs.
"""
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
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from . import bench_report, data, models, provenance, pruning
from ._cpu import MALLOC_ENV
from .store import REPO, atomic_write_text, default_cache
from .train import State, TrainConfig, train

# MobileNetV2 (CIFAR variant) at width 8 (width_mult 0.25), the width the architectures experiment trains on CPU;
# at the default 32 a step is several times slower.
MODELS = {"resnet8": 16, "resnet20": 16, "mobilenetv2": 8}
FRACTION = 0.1
OUT_DIR = REPO / "results" / "bench"
COMPILE_LIMIT_S = 120
# sweep_over_step: a sweep's efficiency over its train step's roofline fraction (overheads <= 25%);
# peak_rss_mb: of every sweep worker, so that many fit on a bigger machine.
GOALS = {"mask_overhead": "<= 0.03", "tracker_overhead": "<= 0.01", "sweep_over_step": ">= 0.75",
         "peak_rss_mb": "<= 2048"}
SWEEP_WORKERS = 2  # what `make book` runs with on this project's 2-core machines
DASK_CHAPTER, DASK_WORKERS = "architectures", (1, 2)  # the shortest chapter slice


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run (written to results/bench) or --quick (a smoke test, < 60 s)."""

    batch_size: int
    steps: int  # optimizer steps per timed repeat
    repeats: int
    gemm: int  # side of the square GEMM for the peak
    levers: bool  # also measure what each lever gives, on the paper model (worker counts, memory format, threads)
    compile: bool
    procs_s: float  # measuring window of the processes-vs-threads test; 0 skips it
    sweeps: tuple[str, ...] = ()  # chapters whose sweep slice is computed and timed
    sweep_profile: str = "paper"
    sweep_seeds: tuple[int, ...] = (0,)
    dask: bool = False  # also time DASK_CHAPTER's slice on local Dask clusters of DASK_WORKERS workers


def plan(quick: bool = False, sweeps: str | None = None) -> Plan:
    """The full plan (every chapter's paper slice) or --quick (one smoke slice); `sweeps` ("a,b" or "none")
    names the chapters instead. Checked before anything is measured."""
    from .experiments import REGISTRY

    # The full plan slices a seed per worker: a chapter's runs of one seed hang off one pretrain, so with fewer
    # seeds than workers the others would idle until it ends, which no full sweep (3+ seeds) does.
    base = (Plan(batch_size=16, steps=1, repeats=1, gemm=512, levers=False, compile=False, procs_s=0.0,
                 sweeps=(DASK_CHAPTER,), sweep_profile="smoke") if quick else
            Plan(batch_size=128, steps=1, repeats=5, gemm=2048, levers=True, compile=True, procs_s=15.0,
                 sweeps=tuple(REGISTRY), sweep_seeds=tuple(range(SWEEP_WORKERS)), dask=True))
    if sweeps is None:
        return base
    names = () if sweeps == "none" else tuple(n.strip() for n in sweeps.split(","))
    bad = [n for n in names if n not in REGISTRY]
    if bad or not (names or sweeps == "none"):
        raise ValueError(f"--sweeps {sweeps!r} is invalid; allowed: 'none' or comma-separated chapters from "
                         f"{', '.join(REGISTRY)}")
    return replace(base, sweeps=names, dask=base.dask and DASK_CHAPTER in names)


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:5.0f} s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- timing
def interleave(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Work per second of each fn in each repeat. An fn does its work and returns how much (images, FLOPs).

    Every fn runs once untimed first (warm-up); then each repeat runs all of them, rotated by one place
    per repeat so no variant always follows the same neighbour.
    """
    for fn in fns.values():
        fn()
    names, rates = list(fns), {name: [] for name in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            work = fns[name]()
            rates[name].append(work / (time.perf_counter() - start))
    return rates


def paired(rates: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of rate a / rate b: each ratio compares two neighbours in time."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


def seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of fn() over `repeats` calls, after one untimed call unless `warmup` is False."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_thread(fn: Callable[[], float]) -> Callable[[], float]:
    """fn run with 1 intra-op thread: on a loaded machine a 2-thread OpenMP region waits for a descheduled thread."""
    def call():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return call


# ------------------------------------------------------------------------------------------ the two loops
def _net(name: str, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build(name, in_channels=1, num_classes=10, width=width)


class Cascade:
    """`cascade.train.train` over `steps` batches per call: the loop the experiments run, per-epoch setup included."""

    def __init__(self, name: str, width: int, split: data.Split, stats, cfg: TrainConfig, pruned: bool = True):
        self.model, self.split, self.stats, self.cfg = _net(name, width), split, stats, cfg
        self.mask = pruning.prune(self.model, "gmp", FRACTION) if pruned else None

    def __call__(self, steps: int) -> int:
        n = steps * self.cfg.batch_size
        train(self.model, self.split.subset(torch.arange(n)), self.cfg, mask=self.mask, stats=self.stats, quiet=True)
        return n


class Baseline:
    """Conventional research code: a DataLoader over torchvision's FashionMNIST with per-sample transforms,
    fp32 in contiguous format, masks as torch.nn.utils.prune forward hooks, plain SGD with momentum."""

    def __init__(self, name: str, width: int, loader, cfg: TrainConfig):
        from torch.nn.utils import prune

        self.model = _net(name, width).train()
        layers = [(m, "weight") for m in self.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=FRACTION)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.batches = self._forever(loader)
        self.running_loss = 0.0

    @staticmethod
    def _forever(loader):
        while True:
            yield from loader

    def __call__(self, steps: int) -> int:
        n = 0
        for _ in range(steps):
            x, y = next(self.batches)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.running_loss += loss.item()
            n += len(y)
        return n


def baseline_loader(batch_size: int, workers: int, stats, size: int):
    """torchvision's FashionMNIST read from the raw files `cascade.data.load` staged, on the same stratified
    subset of `size` images, with the usual per-sample transforms."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms as T

    mean, std = (tuple(s.tolist()) for s in stats)
    tf = T.Compose([T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = datasets.FashionMNIST(root=str(default_cache()), train=True, transform=tf)
    index = data.stratified_index(torch.as_tensor(ds.targets), size, 0)
    return DataLoader(Subset(ds, index.tolist()), batch_size=batch_size, shuffle=True, num_workers=workers)


def paper_config():
    from .experiments import phenomenon

    return phenomenon.EXPERIMENT.make_config("paper")


def train_config(paper, batch_size: int, precision: str, channels_last: bool = True) -> TrainConfig:
    """cascade's defaults with the paper profile's fine-tuning settings (one epoch: calls are timed singly)."""
    return TrainConfig(epochs=1, batch_size=batch_size, lr=paper.finetune_lr, weight_decay=paper.weight_decay,
                       lr_schedule="constant", precision=precision, channels_last=channels_last)


# ------------------------------------------------------------------------------------------- measurements
def tracker_record_s(run: Cascade, repeats: int) -> float:
    """Median time of one `Tracker.record` (what every epoch end costs) on the run's pruned model; no warm-up,
    as a run records only a handful of times."""
    from .shedding import Tracker, TrackerConfig

    tau0 = pruning.gmp_threshold(run.model, None, FRACTION)
    tracker = Tracker(TrackerConfig(), run.mask, tau0)
    optimizer = torch.optim.SGD(run.model.parameters(), lr=0.0)
    state = State(run.model, optimizer, run.cfg, run.stats, torch.device("cpu"), mask=run.mask)
    tracker.on_start(state)
    return seconds(lambda: tracker.record(state), repeats, warmup=False)


def mask_ops_s(run: Cascade, repeats: int) -> float:
    """Median time of the per-step mask work of the loop: zero pruned gradients, re-zero pruned weights."""
    def ops():
        run.mask.zero_grads(run.model)
        run.mask.apply_(run.model)

    return seconds(ops, 10 * repeats)


def throughput(plan: Plan, paper) -> dict:
    """Per model: images/s of every variant per repeat, the mask-op and tracker costs, and the workers choice."""
    train_set, _ = data.load("fashion-mnist", train_size=paper.train_size, test_size=256)
    stats = train_set.stats()
    default, other = paper.precision, ("fp32" if paper.precision == "bf16" else "bf16")
    out, workers = {}, None if plan.levers else 0
    order = [paper.model] + [m for m in MODELS if m != paper.model]
    for name in order:
        width = MODELS.get(name, paper.width)
        _log(f"throughput {name} (width {width})")
        cfgs = {p: train_config(paper, plan.batch_size, p) for p in (default, other)}
        runs = {f"cascade_{default}": Cascade(name, width, train_set, stats, cfgs[default]),
                f"cascade_{other}": Cascade(name, width, train_set, stats, cfgs[other]),
                f"cascade_{default}_dense": Cascade(name, width, train_set, stats, cfgs[default], pruned=False)}
        levers = plan.levers and name == paper.model
        if levers:  # once: per-sample loading with 0 and 2 workers, the memory format, threads
            runs["cascade_fp32_contiguous"] = Cascade(name, width, train_set, stats,
                                                      train_config(paper, plan.batch_size, "fp32", False))
            for w in (0, 2):
                runs[f"baseline_workers{w}"] = Baseline(name, width, baseline_loader(
                    plan.batch_size, w, stats, paper.train_size), cfgs["fp32"])
        else:
            runs["baseline"] = Baseline(name, width, baseline_loader(plan.batch_size, workers, stats,
                                                                     paper.train_size), cfgs["fp32"])
        fns = {k: (lambda run=run: run(plan.steps)) for k, run in runs.items()}
        if levers:  # the same runs with 1 intra-op thread (both loops, so their ratio stays fair)
            for key in (f"cascade_{default}", f"cascade_{other}", "baseline_workers0"):
                fns[f"{key.replace('_workers0', '')}_1thread"] = one_thread(fns[key])
        rates = interleave(fns, plan.repeats)
        if levers:
            workers = 0 if statistics.median(rates["baseline_workers0"]) >= statistics.median(
                rates["baseline_workers2"]) else 2
            rates["baseline"] = rates[f"baseline_workers{workers}"]
        main = runs[f"cascade_{default}"]
        out[name] = {"width": width, "images_per_s": rates, "mask_ops_s": mask_ops_s(main, plan.repeats),
                     "tracker_record_s": tracker_record_s(main, plan.repeats), "macs": models.count(main.model)["macs"]}
        if levers:
            out[name]["tracker_record_s_1thread"] = one_thread(lambda: tracker_record_s(main, plan.repeats))()
        for run in runs.values():  # stop DataLoader workers now, not at exit
            if isinstance(run, Baseline):
                run.batches.close()
    return {"models": out, "baseline_workers": workers}


def gemm_peak(n: int, repeats: int) -> dict[str, float]:
    """FLOP/s of an n x n x n product in fp32 and bf16, interleaved; the roofline's ceiling. Each precision takes
    the faster of torch.mm and the same product as a 1x1 convolution (oneDNN): on AMD CPUs MKL's sgemm, behind
    torch.mm, runs at well under half of what oneDNN reaches, and a ceiling below the step would be no ceiling."""
    side = 16  # the convolution multiplies 4n rows (a batch of 16 x 16 positions, n a multiple of 64) by n x n
    fns = {}
    for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b, c = (torch.randn(n, n).to(dt) for _ in range(3))
        x = torch.randn(4 * n // side ** 2, n, side, side).to(dt).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, n, 1, 1).to(dt).contiguous(memory_format=torch.channels_last)
        rows = x.shape[0] * side * side
        fns[f"{p}_mm"] = lambda a=a, b=b, c=c: torch.mm(a, b, out=c) is not None and 2.0 * n ** 3
        fns[f"{p}_conv"] = lambda x=x, w=w, rows=rows: F.conv2d(x, w) is not None and 2.0 * rows * n * n
    with torch.no_grad():
        rates = interleave(fns, max(repeats, 3) * 2)
    return {p: max(statistics.median(rates[f"{p}_mm"]), statistics.median(rates[f"{p}_conv"]))
            for p in ("fp32", "bf16")}


# ------------------------------------------------------------------------------- child-process measurements
def _launch(spec: dict, **env: str) -> subprocess.Popen:
    """Start `_child(spec)` in a fresh interpreter with spec["threads"] OpenMP threads and `env` added."""
    cmd = [sys.executable, "-c", "import sys, cascade.bench as b; b._child(sys.argv[1])", json.dumps(spec)]
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
    from .train import evaluate

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


# ------------------------------------------------------------------------------------------------ summary
def machine() -> dict:
    load = os.getloadavg()
    return {"hardware": provenance.hardware(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            "loadavg_1min_at_start": round(load[0], 2), "cores": os.cpu_count()}


def summarize(tp: dict, peak: dict, paper, plan: Plan) -> dict:
    default = paper.precision
    speedup, mask, tracker, roof, ceiling = {}, {}, {}, {}, {}
    for name, m in tp["models"].items():
        rates = m["images_per_s"]
        ips = statistics.median(rates[f"cascade_{default}"])
        speedup[name] = paired(rates, f"cascade_{default}", "baseline")
        mask[name] = m["mask_ops_s"] * ips / plan.batch_size
        epoch_s = (paper.train_size // paper.batch_size) * paper.batch_size / ips
        tracker[name] = m["tracker_record_s"] / epoch_s
        roof[name] = 6 * m["macs"] * ips / peak[default]
        # The most any fp32 loop could gain over the baseline: running the model at the GEMM peak.
        ceiling[name] = peak["fp32"] / (6 * m["macs"] * statistics.median(rates["baseline"]))
        m["median_images_per_s"] = {k: statistics.median(v) for k, v in rates.items()}
        m["speedup_fp32_vs_baseline"] = paired(rates, "cascade_fp32", "baseline")
        m["pruned_over_dense_step_time"] = paired(rates, f"cascade_{default}_dense", f"cascade_{default}")
        if "baseline_1thread" in rates:
            m["speedup_vs_baseline_1thread"] = paired(rates, f"cascade_{default}_1thread", "baseline_1thread")
        m["model_gflops"] = {p: 6 * m["macs"] * m["median_images_per_s"][f"cascade_{p}"] / 1e9
                             for p in ("fp32", "bf16")}
    return {"speedup_vs_baseline": speedup, "mask_overhead": mask, "tracker_overhead": tracker,
            "roofline_fraction": roof, "speedup_ceiling_fp32": ceiling}


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


def sweeps(plan: Plan) -> dict:
    """Each chapter's sweep slice, set against the per-core GEMM peak (the mean of one measured before the
    sweeps and one after), and the Dask scaling."""
    from . import bench_sweeps as S

    before = one_thread(lambda: gemm_peak(plan.gemm, plan.repeats))()
    timelines = {}
    for name in plan.sweeps:
        _log(f"sweep {name} [{plan.sweep_profile}, seeds {plan.sweep_seeds}] on {SWEEP_WORKERS} workers")
        timelines[name] = S.sweep(name, plan.sweep_profile, plan.sweep_seeds, SWEEP_WORKERS, _log)
    dask = None
    if plan.dask:
        _log(f"Dask: {DASK_CHAPTER} on {' and '.join(map(str, DASK_WORKERS))} local workers")
        dask = S.dask_scaling(DASK_CHAPTER, plan.sweep_profile, plan.sweep_seeds, DASK_WORKERS, _log)
    after = one_thread(lambda: gemm_peak(plan.gemm, plan.repeats))()
    peak = {p: (before[p] + after[p]) / 2 for p in before}
    if dask:
        for n, w in dask["workers"].items():
            w["efficiency"] = S.at_peak_s(w["model_flops"], peak) / (w["wall_s"] * int(n))
    return {"sweeps": {k: S.summary(t, peak) for k, t in timelines.items()}, "dask_scaling": dask,
            "core_gemm_flops_per_s": {"before": before, "after": after, "used": peak}}


def run(plan: Plan) -> dict:
    start = time.perf_counter()
    paper = paper_config()
    report = {"machine": machine(), "plan": asdict(plan), "models": MODELS, "fraction_pruned": FRACTION,
              "precision": paper.precision, "goals": GOALS}
    tp = throughput(plan, paper)
    _log("GEMM peak")
    peak = gemm_peak(plan.gemm, plan.repeats)
    report.update(summarize(tp, peak, paper, plan))
    raw = {"throughput": tp, "gemm_flops_per_s": peak}
    if plan.compile:
        raw["compile"] = compile_test(plan, paper)
        report.update(compile_summary(raw["compile"], plan.batch_size))
    if plan.procs_s:
        _log("2 processes x 1 thread vs 1 process x 2 threads")
        raw["threads"] = threads_test(plan, paper)
        _log("allocator: glibc as it comes and under Dask's nanny, with and without cascade's thresholds")
        raw["allocator"] = allocator_test(plan, paper)
    if plan.sweeps:
        timed = sweeps(plan)
        raw["core_gemm_flops_per_s"] = timed["core_gemm_flops_per_s"]
        report["sweeps"], report["dask_scaling"] = timed["sweeps"], timed["dask_scaling"]
        report["sweep_efficiency"] = {k: v["efficiency"] for k, v in timed["sweeps"].items()}
        report["peak_rss_mb"] = {k: v["peak_rss_mb"] for k, v in timed["sweeps"].items()}
    report["raw"] = raw
    report["machine"]["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    report["wall_time_s"] = time.perf_counter() - start
    return report


def main(quick: bool = False, as_json: bool = False, sweeps: str | None = None) -> int:
    """Measure, print (a table, or one JSON object), and for the full run write results/bench/."""
    report = run(plan(quick, sweeps))
    if not quick:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT_DIR / "bench.json", json.dumps(report, indent=1) + "\n")
        bench_report.plot(report, OUT_DIR / "bench.png")
        _log(f"wrote {OUT_DIR / 'bench.json'} and bench.png")
    print(json.dumps(report) if as_json else bench_report.markdown(report))
    return 0
