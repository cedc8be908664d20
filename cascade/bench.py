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
5. end to end: minutes of each experiment's paper profile, from stored records where present and
   estimated from the measured step times otherwise;
plus torch.compile of the training step and 2 processes x 1 thread against 1 process x 2 threads,
each in child processes so a hang or crash is reported, not fatal.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import data, models, provenance, pruning
from .store import REPO, atomic_write_text, default_cache
from .train import State, TrainConfig, evaluate, train

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
class Meter:
    """Seconds per trained image, per evaluated image and per tracker record, by model setting; measured
    once on first use at the plan's batch size, or filled in by the throughput section (the end-to-end
    estimate reuses them). Per-image costs at one batch size stand in for the others."""

    def __init__(self, plan: Plan, paper):
        self.plan, self.paper = plan, paper
        self.image: dict[tuple, float] = {}
        self.eval: dict[tuple, float] = {}
        self.record: dict[tuple, float] = {}
        self._splits = {}

    def splits(self, size: int):
        if size not in self._splits:
            self._splits[size] = data.load("fashion-mnist", train_size=size, test_size=256)
        return self._splits[size]

    def train_image_s(self, name: str, width: int, precision: str, channels_last: bool) -> float:
        key = (name, width, precision, channels_last)
        if key not in self.image:
            train_set, _ = self.splits(self.paper.train_size)
            cfg = train_config(self.paper, self.plan.batch_size, precision, channels_last)
            run = Cascade(name, width, train_set, train_set.stats(), cfg)
            self.image[key] = seconds(lambda: run(self.plan.steps), 1) / (self.plan.steps * self.plan.batch_size)
        return self.image[key]

    def eval_image_s(self, name: str, width: int, precision: str) -> float:
        key = (name, width, precision)
        if key not in self.eval:
            train_set, test_set = self.splits(self.paper.train_size)
            net, stats = _net(name, width), train_set.stats()
            self.eval[key] = seconds(lambda: evaluate(net, test_set, stats, torch.device("cpu"), precision),
                                     1) / len(test_set)
        return self.eval[key]

    def record_s(self, name: str, width: int) -> float:
        key = (name, width)
        if key not in self.record:
            train_set, _ = self.splits(self.paper.train_size)
            run = Cascade(name, width, train_set, train_set.stats(), train_config(self.paper, 128, "fp32"))
            self.record[key] = tracker_record_s(run, 1)
        return self.record[key]


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


def throughput(plan: Plan, paper, meter: Meter) -> dict:
    """Per model: images/s of every variant per repeat, the mask-op and tracker costs, and the workers choice."""
    train_set, _ = meter.splits(paper.train_size)
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
        for p in cfgs:
            meter.image[(name, width, p, True)] = 1 / statistics.median(rates[f"cascade_{p}"])
        meter.record[(name, width)] = tracker_record_s(main, plan.repeats)
        out[name] = {"width": width, "images_per_s": rates, "mask_ops_s": mask_ops_s(main, plan.repeats),
                     "tracker_record_s": meter.record[(name, width)], "macs": models.count(main.model)["macs"]}
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


def paper_profile(meter: Meter) -> dict:
    """Per experiment: minutes of its paper profile from an empty store; stored wall times where a record
    exists, else the estimate (steps x step time + evaluations + tracker records; checkpoint I/O excluded)."""
    from .experiments import REGISTRY
    from .store import Store

    store, out = Store("paper"), {}
    for name, exp in REGISTRY.items():
        stored = estimated = estimate_all = 0.0
        n_stored = 0
        for run in exp.all_runs(exp.make_config("paper")):
            est = estimate_run_s(run, meter)
            estimate_all += est
            rec = store.get(run.kind, run, run.version)
            if rec is not None and rec["meta"].get("wall_time_s") is not None:
                stored += rec["meta"]["wall_time_s"]
                n_stored += 1
            else:
                estimated += est
        runs = len(exp.all_runs(exp.make_config("paper")))
        out[name] = {"minutes": (stored + estimated) / 60, "runs": runs, "stored_runs": n_stored,
                     "stored_minutes": stored / 60, "estimated_minutes_all_runs": estimate_all / 60,
                     "source": "stored" if n_stored == runs else "estimated" if n_stored == 0 else "mixed"}
    return out


def estimate_run_s(run, meter: Meter) -> float:
    from .experiments import runs as R

    pre = run if isinstance(run, R.PretrainRun) else run.pretrain
    cfg = run.train if isinstance(run, R.PretrainRun) else run.finetune
    train_set, test_set = R.splits(pre.data)
    epochs = cfg.epochs - cfg.start_epoch
    steps = epochs * (len(train_set) // cfg.batch_size)
    evals = epochs + 1 + isinstance(run, R.FinetuneRun)  # + the tracker's removal accuracy at the end
    seconds_ = (steps * cfg.batch_size * meter.train_image_s(pre.model, pre.width, cfg.precision, cfg.channels_last)
                + evals * len(test_set) * meter.eval_image_s(pre.model, pre.width, cfg.precision))
    if isinstance(run, R.FinetuneRun):
        seconds_ += (epochs + 1) * meter.record_s(pre.model, pre.width)
    return seconds_


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


# ------------------------------------------------------------------------------------------------ report
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
    meter = Meter(plan, paper)
    report = {"machine": machine(), "plan": asdict(plan), "models": MODELS, "fraction_pruned": FRACTION,
              "precision": paper.precision, "goals": GOALS}
    tp = throughput(plan, paper, meter)
    _log("GEMM peak")
    peak = gemm_peak(plan.gemm, plan.repeats)
    report.update(summarize(tp, peak, paper, plan))
    _log("paper profile minutes")
    e2e = paper_profile(meter)
    report["paper_profile_minutes"] = {name: v["minutes"] for name, v in e2e.items()}
    raw = {"throughput": tp, "gemm_flops_per_s": peak, "paper_profile": e2e}
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


def table(report: dict) -> str:
    """The readable form: one row per model, then the paper profile's minutes and the extra measurements."""
    p = report["precision"]
    head = ["model", "baseline img/s", "cascade fp32", "cascade bf16", f"speed-up ({p})", "mask ovh", "tracker ovh",
            "roofline"]
    rows = []
    for name, m in report["raw"]["throughput"]["models"].items():
        med = m["median_images_per_s"]
        rows.append([f"{name} (w{m['width']})", f"{med['baseline']:.0f}", f"{med['cascade_fp32']:.0f}",
                     f"{med['cascade_bf16']:.0f}", f"{report['speedup_vs_baseline'][name]:.2f}x",
                     f"{report['mask_overhead'][name]:.2%}", f"{report['tracker_overhead'][name]:.2%}",
                     f"{report['roofline_fraction'][name]:.1%}"])
    lines = [_row(head), _row(["---"] * len(head))] + [_row(r) for r in rows]
    raw = report["raw"]
    workers = raw["throughput"]["baseline_workers"]
    lines += ["", f"baseline DataLoader num_workers={workers} (the faster of 0 and 2); goals: "
              + ", ".join(f"{k} {v}" for k, v in report["goals"].items())]
    for name, m in raw["throughput"]["models"].items():
        variants = {k: v for k, v in m["median_images_per_s"].items() if k not in rows_keys(p)}
        if variants:
            lines.append(f"levers on {name}, img/s: " + ", ".join(f"{k} {v:.0f}" for k, v in variants.items())
                         + f"; speed-up with 1 thread each: {m['speedup_vs_baseline_1thread']:.2f}x")
    peak = raw["gemm_flops_per_s"]
    lines.append(f"GEMM peak: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s; "
                 "fp32 speed-up ceiling over the baseline (model at the fp32 GEMM peak): "
                 + ", ".join(f"{n} {c:.1f}x" for n, c in report["speedup_ceiling_fp32"].items()))
    for name, v in raw["paper_profile"].items():
        lines.append(f"paper profile {name}: {v['minutes']:.0f} min ({v['source']}: {v['stored_runs']}/{v['runs']} "
                     f"runs stored; estimate for all runs {v['estimated_minutes_all_runs']:.0f} min)")
    for key, text in (("compile", compile_text), ("threads", threads_text)):
        if key in raw:
            lines.append(text(raw[key]))
    m = report["machine"]
    lines.append(f"machine: {m['hardware']}, torch {m['torch']}, {m['threads']} threads, oneDNN ISA "
                 f"{m['onednn_max_isa']}, load {m['loadavg_1min_at_start']} -> {m['loadavg_1min_at_end']}")
    return "\n".join(lines)


def rows_keys(precision: str) -> set[str]:
    """The variants every model has; the others are the levers measured on the paper model."""
    return {"baseline", "cascade_fp32", "cascade_bf16", f"cascade_{precision}_dense"}


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def compile_text(c: dict) -> str:
    if "speedup" not in c:
        return f"torch.compile ({c['model']}): {c.get('error', 'failed')}"
    return f"torch.compile ({c['model']}): compiles in {c['compile_s']:.0f} s, step speed-up {c['speedup']:.2f}x"


def threads_text(t: dict) -> str:
    if "error" in t:
        return f"independent runs ({t['model']}): {t['error']}"
    return (f"independent runs ({t['model']}): 2 processes x 1 thread {t['2procs_1thread_images_per_s']:.0f} img/s "
            f"vs 1 process x 2 threads {t['1proc_2threads_images_per_s']:.0f} img/s "
            f"({t['ratio_2procs_over_1proc']:.2f}x)")


def _goal(key: str) -> float:
    return float(GOALS[key].split()[-1])


def plot(report: dict, path: Path) -> None:
    """Bar charts: throughput of baseline and cascade per model, and the two overheads against their goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models_ = list(report["speedup_vs_baseline"])
    tp = report["raw"]["throughput"]["models"]
    p = report["precision"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    series = [("baseline", "baseline (DataLoader, fp32)", "#999999"), ("cascade_fp32", "cascade fp32", "#1f77b4"),
              ("cascade_bf16", "cascade bf16", "#9ecae1")]
    default = [key for key, _, _ in series].index(f"cascade_{p}")  # the speed-up is written above its bar
    width = 0.8 / len(series)
    for i, (key, label, color) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(models_))]
        ax1.bar(xs, [tp[m]["median_images_per_s"][key] for m in models_], width, label=label, color=color)
    for j, m in enumerate(models_):
        ax1.annotate(f"{report['speedup_vs_baseline'][m]:.1f}x",
                     (j + (default - 1) * width, tp[m]["median_images_per_s"][f"cascade_{p}"]),
                     ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(range(len(models_)), [f"{m} (w{tp[m]['width']})" for m in models_])
    ax1.set_ylabel("training images / s")
    ax1.set_title(f"pruned fine-tuning step ({FRACTION:.0%} gmp), 28x28 Fashion-MNIST")
    top = max(tp[m]["median_images_per_s"][key] for m in models_ for key, _, _ in series)
    ax1.set_ylim(0, 1.25 * top)  # room for the legend above the bars
    ax1.legend(loc="upper left", ncol=3, fontsize=7)
    for i, (key, label, color) in enumerate([("mask_overhead", "mask", "#2ca02c"),
                                             ("tracker_overhead", "tracker", "#ff7f0e")]):
        ax2.bar([j + (i - 0.5) * 0.4 for j in range(len(models_))], [100 * report[key][m] for m in models_], 0.4,
                label=f"{label} (goal <= {100 * _goal(key):g}%)", color=color)
        ax2.axhline(100 * _goal(key), color=color, linestyle="--", linewidth=1)
    ax2.set_xticks(range(len(models_)), models_)
    ax2.set_ylabel("overhead, % of step / epoch time")
    ax2.set_title("overheads")
    ax2.legend()
    m = report["machine"]
    fig.suptitle(f"{m['hardware']}; torch {m['torch']}, {m['threads']} threads; load {m['loadavg_1min_at_start']}",
                 fontsize=9)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as f:
        tmp = Path(f.name)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def main(quick: bool = False, as_json: bool = False) -> int:
    """Measure, print (a table, or one JSON object), and for the full run write results/bench/."""
    report = run(QUICK if quick else FULL)
    if not quick:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT_DIR / "bench.json", json.dumps(report, indent=1) + "\n")
        plot(report, OUT_DIR / "bench.png")
        _log(f"wrote {OUT_DIR / 'bench.json'} and bench.png")
    print(json.dumps(report) if as_json else table(report))
    return 0
