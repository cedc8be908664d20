"""The benchmark: its timing arithmetic by hand, its --quick --json smoke run, and the appendix section."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cascade import book, experiments
from cascade.bench import child, clock, plan, step
from cascade.bench import report as bench_report
from cascade.bench import sweeps as bench_sweeps

REPO = Path(__file__).resolve().parents[1]
PER_MODEL = ("speedup_vs_baseline", "mask_overhead", "tracker_overhead", "roofline_fraction")


def test_paired_is_the_median_of_per_repeat_ratios():
    rates = {"a": [2.0, 9.0, 4.0], "b": [1.0, 3.0, 4.0]}  # ratios 2, 3, 1
    assert clock.paired(rates, "a", "b") == 2.0


def test_interleave_warms_up_then_rotates_the_order():
    calls = []
    fns = {k: (lambda k=k: calls.append(k) or 1.0) for k in "xyz"}
    rates = clock.interleave(fns, repeats=3)
    assert calls == list("xyz" + "xyz" + "yzx" + "zxy")
    assert all(len(r) == 3 and all(v > 0 for v in r) for r in rates.values())


def test_summary_by_hand():
    tp = {"models": {"m": {"images_per_s": {"cascade_bf16": [100.0, 200.0, 300.0], "baseline": [50.0, 50.0, 100.0],
                                            "cascade_fp32": [100.0, 100.0, 300.0],
                                            "cascade_bf16_dense": [100.0, 200.0, 300.0]},
                           "mask_ops_s": 0.01, "tracker_record_s": 0.5, "macs": 1e6}}}
    paper = SimpleNamespace(precision="bf16", train_size=4000, batch_size=128)
    out = step.summarize(tp, {"fp32": 6e9, "bf16": 1.2e10}, paper, plan.plan())
    assert out["speedup_vs_baseline"]["m"] == 3.0  # per-repeat ratios 2, 4, 3
    assert out["mask_overhead"]["m"] == pytest.approx(0.01 / (128 / 200))  # mask ops over one step
    assert out["tracker_overhead"]["m"] == pytest.approx(0.5 / (31 * 128 / 200))  # 31 steps of 128 per epoch
    assert out["roofline_fraction"]["m"] == pytest.approx(6e6 * 200 / 1.2e10)  # = 0.1
    assert out["speedup_ceiling_fp32"]["m"] == pytest.approx(20.0)  # 6e9 FLOP/s over 6e6 FLOP x 50 img/s
    assert tp["models"]["m"]["speedup_fp32_vs_baseline"] == 2.0  # ratios 2, 2, 3


def test_quick_json_smoke():
    before = [(p, p.stat().st_mtime) for p in (REPO / "results" / "bench").glob("*")]
    proc = subprocess.run([sys.executable, "-m", "cascade", "bench", "--quick", "--json"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for key in PER_MODEL:
        assert set(report[key]) == set(plan.MODELS), key
        assert all(math.isfinite(v) and v > 0 for v in report[key].values()), (key, report[key])
    assert "paper_profile_minutes" not in report  # the store times the experiments, not the benchmark
    assert report["machine"]["hardware"] and report["raw"]["gemm_flops_per_s"]["fp32"] > 0
    sweep = report["sweeps"]["architectures"]  # --quick: the smoke slice
    assert report["sweep_efficiency"] == {"architectures": sweep["efficiency"]} and 0 < sweep["efficiency"] < 1
    assert sum(sweep["losses"].values()) == pytest.approx(1 - sweep["over_step"])
    assert len(report["peak_rss_mb"]["architectures"]) == 2 and min(report["peak_rss_mb"]["architectures"]) > 100
    assert before == [(p, p.stat().st_mtime) for p in (REPO / "results" / "bench").glob("*")]  # --quick writes nothing


def test_breakdown_by_hand():
    """Two workers; r3 waits for r1 (worker 2 idles 6-10 s), then nothing is left to hand out (idles 10-16 s).
    At a per-core peak of 1 GFLOP/s the 6 train GFLOP take 6 s in 12 s of steps: a roofline fraction of 0.5."""
    def run(start, end, seconds, step, data, eval_, train_gflop, eval_gflop, **more):
        return {"start": start, "end": end, "seconds": seconds, "phases_s": {"step": step, "data": data,
                "eval": eval_, **more}, "model_flops": {"train": train_gflop * 1e9, "eval": eval_gflop * 1e9}}

    runs = [run(0, 10, 9, 5, 1, 1, 2.5, 0.5, tracker=0.5, checkpoint=0.5), run(0, 6, 5, 3, 0.5, 0.5, 1.5, 0.25),
            run(10, 16, 5.5, 4, 0.5, 0.5, 2, 0.25)]
    out = bench_sweeps.breakdown(runs, workers=2, wall=16, last_submit=10, peak={"fp32": 1e9, "bf16": 2e9})
    assert out["step_roofline"] == pytest.approx(0.5)
    assert out["efficiency"] == pytest.approx(7 / 32)  # 7 GFLOP at 1 GFLOP/s over 16 s x 2 workers
    assert out["over_step"] == pytest.approx(7 / 16)
    # eval + tracker: 2.5 s, less 2 s for the 1 eval GFLOP at the step's rate; set-up: 19.5 s in runs less
    # 12 + 2.5 + 2 in phases; start: 1 + 1 + 0.5 s in flight outside the runs
    expected = {"eval_tracker": 0.5, "data": 2, "setup_checkpoints": 3, "start_imports": 2.5, "dependencies": 4,
                "end_idle": 6}
    assert out["losses"] == pytest.approx({k: v / 32 for k, v in expected.items()})
    assert sum(out["losses"].values()) == pytest.approx(1 - out["over_step"])
    assert bench_sweeps.at_peak_s({"train_bf16": 4e9, "eval": 1e9}, {"fp32": 1e9, "bf16": 2e9}) == 3.0


def test_slice_is_one_seeds_runs_after_their_dependencies():
    runs = bench_sweeps.slice_runs("phenomenon", "smoke", (0,))
    every = experiments.get("phenomenon").all_runs(experiments.get("phenomenon").make_config("smoke"))
    assert {r.labels()["seed"] for r in runs} == {0} and {r.kind for r in runs} == {"pretrain", "finetune"}
    assert set(runs) == {r for r in every if r.labels()["seed"] == 0}
    assert all(runs.index(d) < runs.index(r) for r in runs for d in r.deps())


def test_plan_checks_the_chapters_before_measuring():
    assert plan.plan(sweeps="none").sweeps == () and not plan.plan(sweeps="none").dask
    assert plan.plan(sweeps="architectures").dask and plan.plan(quick=True).sweep_profile == "smoke"
    with pytest.raises(ValueError, match="--sweeps 'nope' is invalid; allowed: 'none' or comma-separated "
                                         "chapters from phenomenon, conditions"):
        plan.plan(sweeps="nope")
    proc = subprocess.run([sys.executable, "-m", "cascade", "bench", "--sweeps", "phenomenon,x"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --sweeps 'phenomenon,x' is invalid")
    assert "[bench" not in proc.stderr  # nothing was measured


def test_compile_summary_by_hand():
    warm = {"compile_s": 2.0, "eval_compile_s": 1.0, "speedup": 1.2,
            "images_per_s": {"eager": 1000.0, "compiled": 1280.0}}  # 128-image steps of 128 ms and 100 ms
    slower = {**warm, "images_per_s": {"eager": 1000.0, "compiled": 900.0}}
    out = child.compile_summary({"a": {"warm": warm}, "b": {"warm": slower}, "c": {"warm": {"error": "x"}}}, 128)
    assert out["compile_speedup"] == {"a": 1.2, "b": 1.2}
    assert out["compile_breakeven_steps"]["a"] == pytest.approx(3.0 / 0.028)
    assert out["compile_breakeven_steps"]["b"] == math.inf


def test_book_section(tmp_path):
    assert "No benchmark recorded yet" in book.bench_section(tmp_path)
    report = {"machine": {"hardware": "CPU X (2 cores)", "torch": "2.x", "threads": 2, "loadavg_1min_at_start": 1.0},
              "precision": "bf16", "fraction_pruned": 0.1, "plan": {"batch_size": 128}, "goals": plan.GOALS,
              "speedup_vs_baseline": {"m": 3.456}, "mask_overhead": {"m": 0.0123}, "tracker_overhead": {"m": 0.004},
              "roofline_fraction": {"m": 0.25}, "speedup_ceiling_fp32": {"m": 2.04},
              "raw": {"throughput": {"baseline_workers": 2, "models": {"m": {"width": 16, "median_images_per_s": {
                  "baseline": 100.0, "cascade_fp32": 200.0, "cascade_bf16": 345.6}}}},
                      "gemm_flops_per_s": {"fp32": 4.2e11, "bf16": 8.4e11},
                      "compile": {"m": {"width": 16, "cold": {"compile_s": 47.8}, "warm": {
                          "compile_s": 1.5, "eval_compile_s": 0.25, "new_instance_s": -0.1, "speedup": 1.19,
                          "grad_error": 3e-14, "grad_error_fp32": 5e-3}}},
                      "core_gemm_flops_per_s": {"used": {"fp32": 5e10}},
                      "threads": {"model": "m", "2procs_1thread_images_per_s": 700.0,
                                  "1proc_2threads_images_per_s": 560.0, "ratio_2procs_over_1proc": 1.25},
                      "allocator": {"model": "m", "dask_env": {"MALLOC_TRIM_THRESHOLD_": "65536"},
                                    "images_per_s": {"glibc": 600.0, "glibc_dask": 300.0, "large": 660.0,
                                                     "large_dask": 650.0},
                                    "large_over_glibc": 1.1, "large_over_glibc_dask": 650 / 300}}}
    report.update({"compile_speedup": {"m": 1.19}, "compile_breakeven_steps": {"m": 87.4},
                   "sweeps": {"ch": {"profile": "paper", "seeds": [0], "workers": 2, "runs": 14, "wall_s": 600.0,
                                     "model_tflop": 12.34, "efficiency": 0.3, "step_roofline": 0.4, "over_step": 0.7,
                                     "peak_rss_mb": [1500.4, 1400.0],
                                     "losses": {"eval_tracker": 0.05, "data": 0.01, "setup_checkpoints": 0.02,
                                                "start_imports": 0.01, "dependencies": 0.2, "end_idle": 0.01}}},
                   "dask_scaling": {"chapter": "ch", "runs": 14, "workers": {
                       "1": {"wall_s": 100.0, "efficiency": 0.3, "cluster_start_s": 2.0},
                       "2": {"wall_s": 55.0, "efficiency": 0.27, "cluster_start_s": 3.0}},
                       "speedup": {"1": 1.0, "2": 100 / 55}}})
    (tmp_path / "bench.json").write_text(json.dumps(report))
    (tmp_path / "bench.png").write_bytes(b"\x89PNG")
    text = book.bench_section(tmp_path)
    assert "| m (width 16) | 100 | 200 | 346 | 3.46x | 2.0x | 1.23% | 0.40% | 25.0% |" in text
    assert "fp32 GEMM peak (420 GFLOP/s; bf16 840)" in text
    assert bench_report.markdown(report) in text  # the CLI prints what the book shows
    assert "| m (width 16) | 48 | 1.8 | -0.1 | 1.19x | 87 | 3e-14 | 5e-03 |" in text
    assert "| ch | 14 | 10.0 | 12.3 | 30.0% | 40.0% | 70% (below) | 1500 / 1400 |" in text
    assert "| ch | 5.0% | 1.0% | 2.0% | 1.0% | 20.0% | 1.0% |" in text
    assert "(50 GFLOP/s fp32, measured in the same run)" in text and "at least 75% of it" in text
    assert "1 worker 100 s (efficiency 30.0%, cluster start 2 s); 2 workers 55 s" in text
    assert "speed-up 1.82x on 2 workers" in text
    assert "**GPU:** not measured. This benchmark ran on a CPU-only machine" in text
    assert "- independent runs (m): 2 processes x 1 thread 700 img/s vs 1 process x 2 threads 560 img/s (1.25x)\n" \
        in text
    assert ("- allocator (m, 1 thread): cascade's thresholds (`CASCADE_MALLOC=large`, the default) 660 img/s vs "
            "glibc as it comes 600 img/s (1.10x); in the environment Dask's nanny gives its workers "
            "(MALLOC_TRIM_THRESHOLD_=65536) 650 vs 300 img/s (2.17x)\n") in text
    assert "num_workers=2" in text and "](data:image/png;base64,iVBORw==)" in text
    assert "capped" not in text  # oneDNN ran with its default ISA
    report["machine"]["onednn_max_isa"] = "AVX512_CORE_BF16"
    (tmp_path / "bench.json").write_text(json.dumps(report))
    assert "Here oneDNN was capped at AVX512_CORE_BF16 because its AMX kernels fault" in book.bench_section(tmp_path)
