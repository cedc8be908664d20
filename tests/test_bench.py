"""The benchmark: its timing arithmetic by hand, its --quick --json smoke run, and the appendix section."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cascade import bench, bench_report, book

REPO = Path(__file__).resolve().parents[1]
PER_MODEL = ("speedup_vs_baseline", "mask_overhead", "tracker_overhead", "roofline_fraction")


def test_paired_is_the_median_of_per_repeat_ratios():
    rates = {"a": [2.0, 9.0, 4.0], "b": [1.0, 3.0, 4.0]}  # ratios 2, 3, 1
    assert bench.paired(rates, "a", "b") == 2.0


def test_interleave_warms_up_then_rotates_the_order():
    calls = []
    fns = {k: (lambda k=k: calls.append(k) or 1.0) for k in "xyz"}
    rates = bench.interleave(fns, repeats=3)
    assert calls == list("xyz" + "xyz" + "yzx" + "zxy")
    assert all(len(r) == 3 and all(v > 0 for v in r) for r in rates.values())


def test_summary_by_hand():
    tp = {"models": {"m": {"images_per_s": {"cascade_bf16": [100.0, 200.0, 300.0], "baseline": [50.0, 50.0, 100.0],
                                            "cascade_fp32": [100.0, 100.0, 300.0],
                                            "cascade_bf16_dense": [100.0, 200.0, 300.0]},
                           "mask_ops_s": 0.01, "tracker_record_s": 0.5, "macs": 1e6}}}
    paper = SimpleNamespace(precision="bf16", train_size=4000, batch_size=128)
    out = bench.summarize(tp, {"fp32": 6e9, "bf16": 1.2e10}, paper, bench.FULL)
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
        assert set(report[key]) == set(bench.MODELS), key
        assert all(math.isfinite(v) and v > 0 for v in report[key].values()), (key, report[key])
    assert "paper_profile_minutes" not in report  # the store times the experiments, not the benchmark
    assert report["machine"]["hardware"] and report["raw"]["gemm_flops_per_s"]["fp32"] > 0
    assert before == [(p, p.stat().st_mtime) for p in (REPO / "results" / "bench").glob("*")]  # --quick writes nothing


def test_book_section(tmp_path):
    assert "No benchmark recorded yet" in book.bench_section(tmp_path)
    report = {"machine": {"hardware": "CPU X (2 cores)", "torch": "2.x", "threads": 2, "loadavg_1min_at_start": 1.0},
              "precision": "bf16", "fraction_pruned": 0.1, "plan": {"batch_size": 128}, "goals": bench.GOALS,
              "speedup_vs_baseline": {"m": 3.456}, "mask_overhead": {"m": 0.0123}, "tracker_overhead": {"m": 0.004},
              "roofline_fraction": {"m": 0.25}, "speedup_ceiling_fp32": {"m": 2.04},
              "raw": {"throughput": {"baseline_workers": 2, "models": {"m": {"width": 16, "median_images_per_s": {
                  "baseline": 100.0, "cascade_fp32": 200.0, "cascade_bf16": 345.6}}}},
                      "gemm_flops_per_s": {"fp32": 4.2e11, "bf16": 8.4e11},
                      "compile": {"model": "m", "compile_s": 47.8, "speedup": 0.99},
                      "threads": {"model": "m", "2procs_1thread_images_per_s": 700.0,
                                  "1proc_2threads_images_per_s": 560.0, "ratio_2procs_over_1proc": 1.25}}}
    (tmp_path / "bench.json").write_text(json.dumps(report))
    (tmp_path / "bench.png").write_bytes(b"\x89PNG")
    text = book.bench_section(tmp_path)
    assert "| m (width 16) | 100 | 200 | 346 | 3.46x | 2.0x | 1.23% | 0.40% | 25.0% |" in text
    assert "fp32 GEMM peak (420 GFLOP/s; bf16 840)" in text
    assert bench_report.markdown(report) in text  # the CLI prints what the book shows
    assert "- torch.compile (m): compiles in 48 s, step speed-up 0.99x\n" in text
    assert "- independent runs (m): 2 processes x 1 thread 700 img/s vs 1 process x 2 threads 560 img/s (1.25x)\n" \
        in text
    assert "num_workers=2" in text and "](data:image/png;base64,iVBORw==)" in text
    assert "capped" not in text  # oneDNN ran with its default ISA
    report["machine"]["onednn_max_isa"] = "AVX512_CORE_BF16"
    (tmp_path / "bench.json").write_text(json.dumps(report))
    assert "Here oneDNN was capped at AVX512_CORE_BF16 because its AMX kernels fault" in book.bench_section(tmp_path)
