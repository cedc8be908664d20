"""All of `cascade bench`, in order: the train step, torch.compile, threads and the allocator, then the sweeps."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import torch

from .. import provenance
from ..store import atomic_write_text
from . import report as bench_report
from .child import allocator_test, compile_summary, compile_test, threads_test
from .plan import FRACTION, GOALS, MODELS, OUT_DIR, Plan, _log, paper_config, plan
from .step import gemm_peak, summarize, throughput
from .sweeps import sweeps


def machine() -> dict:
    load = os.getloadavg()
    return {"hardware": provenance.hardware(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            "loadavg_1min_at_start": round(load[0], 2), "cores": os.cpu_count()}


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
