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

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import bench_report, data, models, provenance, pruning
from .store import REPO, atomic_write_text, default_cache
from .train import State, TrainConfig, train

# MobileNetV2 (CIFAR variant) at width 8 (width_mult 0.25), the width the architectures experiment trains on CPU;
# at the default 32 a step is several times slower.
MODELS = {"resnet8": 16, "resnet20": 16, "mobilenetv2": 8}
FRACTION = 0.1
OUT_DIR = REPO / "results" / "bench"
COMPILE_LIMIT_S = 120
GOALS = {"speedup_vs_baseline": ">= 3", "mask_overhead": "<= 0.03", "tracker_overhead": "<= 0.01"}


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


FULL = Plan(batch_size=128, steps=1, repeats=5, gemm=2048, levers=True, compile=True, procs_s=15.0)
QUICK = Plan(batch_size=16, steps=1, repeats=1, gemm=512, levers=False, compile=False, procs_s=0.0)


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
    """FLOP/s of an n x n x n matmul in fp32 and bf16, interleaved; the roofline's ceiling."""
    mats = {p: [torch.randn(n, n).to(dt) for _ in range(3)] for p, dt in (("fp32", torch.float32),
                                                                          ("bf16", torch.bfloat16))}

    def mm(p):
        a, b, c = mats[p]
        torch.mm(a, b, out=c)
        return 2.0 * n ** 3

    rates = interleave({p: (lambda p=p: mm(p)) for p in mats}, max(repeats, 3) * 2)
    return {p: statistics.median(r) for p, r in rates.items()}


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
    train_set, _ = data.load("fashion-mnist", train_size=paper.train_size, test_size=16)
    cfg = train_config(paper, spec["batch_size"], paper.precision)
    make = lambda: Cascade(paper.model, paper.width, train_set, train_set.stats(), cfg)  # noqa: E731
    if spec["kind"] == "threads":
        run = make()
        run(1)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < spec["seconds"]:
            n += run(1)
        print(json.dumps({"images_per_s": n / (time.perf_counter() - start)}))
        return
    eager, compiled = make(), make()
    eager_step = seconds(lambda: eager(1), 1)
    compiled.model.compile()
    start = time.perf_counter()
    compiled(1)
    compile_s = time.perf_counter() - start - eager_step
    if compile_s > COMPILE_LIMIT_S:
        print(json.dumps({"compile_s": compile_s, "error": f"compile took {compile_s:.0f} s > {COMPILE_LIMIT_S} s"}))
        return
    rates = interleave({"eager": lambda: eager(spec["steps"]), "compiled": lambda: compiled(spec["steps"])},
                       spec["repeats"])
    print(json.dumps({"compile_s": compile_s, "speedup": paired(rates, "compiled", "eager"),
                      "images_per_s": {k: statistics.median(v) for k, v in rates.items()}}))


def compile_test(plan: Plan, paper) -> dict:
    """torch.compile (inductor) of the paper model's training step: compile time and step speed-up."""
    spec = {"kind": "compile", "threads": torch.get_num_threads(), "batch_size": plan.batch_size,
            "steps": plan.steps, "repeats": plan.repeats}
    cold = _launch(spec, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")  # a cached compile would time only a cache read
    return {"model": paper.model, **_collect(cold, COMPILE_LIMIT_S + 90)}


def threads_test(plan: Plan, paper) -> dict:
    """Total images/s of independent runs: 1 process with 2 threads against 2 processes with 1 thread each."""
    def total(threads: int, procs: int) -> float:
        spec = {"kind": "threads", "threads": threads, "batch_size": plan.batch_size, "seconds": plan.procs_s}
        outs = [_collect(p, plan.procs_s + 120) for p in [_launch(spec) for _ in range(procs)]]
        return math.nan if any("error" in o for o in outs) else sum(o["images_per_s"] for o in outs)

    one, two = total(2, 1), total(1, 2)
    if math.isnan(one) or math.isnan(two):
        return {"model": paper.model, "error": "a child process failed"}
    return {"model": paper.model, "1proc_2threads_images_per_s": one, "2procs_1thread_images_per_s": two,
            "ratio_2procs_over_1proc": two / one}


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
        _log("torch.compile (child process)")
        raw["compile"] = compile_test(plan, paper)
    if plan.procs_s:
        _log("2 processes x 1 thread vs 1 process x 2 threads")
        raw["threads"] = threads_test(plan, paper)
    report["raw"] = raw
    report["machine"]["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    report["wall_time_s"] = time.perf_counter() - start
    return report


def main(quick: bool = False, as_json: bool = False) -> int:
    """Measure, print (a table, or one JSON object), and for the full run write results/bench/."""
    report = run(QUICK if quick else FULL)
    if not quick:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT_DIR / "bench.json", json.dumps(report, indent=1) + "\n")
        bench_report.plot(report, OUT_DIR / "bench.png")
        _log(f"wrote {OUT_DIR / 'bench.json'} and bench.png")
    print(json.dumps(report) if as_json else bench_report.markdown(report))
    return 0
