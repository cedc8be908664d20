"""The train step: throughput against the baseline, the mask and tracker costs, and the GEMM peak it is set against."""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from .. import data, models, pruning
from ..train import State
from .clock import interleave, one_thread, paired, seconds
from .loops import Baseline, Cascade, baseline_loader
from .plan import FRACTION, MODELS, Plan, _log, train_config


def tracker_record_s(run: Cascade, repeats: int) -> float:
    """Median time of one `Tracker.record` (what every epoch end costs) on the run's pruned model; no warm-up,
    as a run records only a handful of times."""
    from ..shedding import Tracker, TrackerConfig

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
