"""Renders `python -m cascade bench`'s bench.json: one Markdown text for the CLI and the book, and its figure.

Kept apart from `suite`, which measures: the book renders a stored report without importing the measuring code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..doctor import TOLERANCE
from ..report import markdown_table


def threads_text(t: dict) -> str:
    if "error" in t:
        return f"independent runs ({t['model']}): {t['error']}"
    return (f"independent runs ({t['model']}): 2 processes x 1 thread {t['2procs_1thread_images_per_s']:.0f} img/s "
            f"vs 1 process x 2 threads {t['1proc_2threads_images_per_s']:.0f} img/s "
            f"({t['ratio_2procs_over_1proc']:.2f}x)")


def allocator_text(a: dict) -> str:
    med, nanny = a["images_per_s"], ", ".join(f"{k}={v}" for k, v in a["dask_env"].items())
    return (f"allocator ({a['model']}, 1 thread): cascade's thresholds (`CASCADE_MALLOC=large`, the default) "
            f"{med['large']:.0f} img/s vs glibc as it comes {med['glibc']:.0f} img/s ({a['large_over_glibc']:.2f}x); "
            f"in the environment Dask's nanny gives its workers ({nanny}) {med['large_dask']:.0f} vs "
            f"{med['glibc_dask']:.0f} img/s ({a['large_over_glibc_dask']:.2f}x)")


def goal(report: dict, key: str) -> float:
    return float(report["goals"][key].split()[-1])


LOSS_NAMES = {"eval_tracker": "eval + tracker", "data": "data", "setup_checkpoints": "set-up + checkpoints",
              "start_imports": "start + imports", "dependencies": "dependencies", "end_idle": "end idle"}


def sweeps_text(report: dict) -> str:
    """The sweep tables (efficiency against the step's roofline, then the losses) and the Dask scaling."""
    sw = report.get("sweeps")
    if not sw:
        return ""
    core = report["raw"]["core_gemm_flops_per_s"]["used"]
    first = next(iter(sw.values()))
    ratio, rss = goal(report, "sweep_over_step"), goal(report, "peak_rss_mb")
    text = (f"**Sweep efficiency.** Each chapter's `{first['profile']}` runs for seed(s) "
            f"{', '.join(map(str, first['seeds']))}, with what they depend on, computed by the book's executor "
            f"({first['workers']} worker processes) into a temporary store. Efficiency is the model FLOPs trained "
            "(6 x MACs per image) and evaluated (2 x MACs) over wall time x workers x the per-core GEMM peak "
            f"({core['fp32'] / 1e9:.0f} GFLOP/s fp32, measured in the same run). Its reference is the train "
            f"step's roofline fraction in the same sweep; goal: at least {ratio:.0%} of it, and at most "
            f"{rss:.0f} MB per worker.\n\n")
    rows = [(name, f"{s['runs']}", f"{s['wall_s'] / 60:.1f}", f"{s['model_tflop']:.1f}", f"{s['efficiency']:.1%}",
             f"{s['step_roofline']:.1%}", f"{s['over_step']:.0%}" + ("" if s["over_step"] >= ratio else " (below)"),
             " / ".join(f"{m:.0f}" for m in s["peak_rss_mb"]))
            for name, s in sw.items()]
    text += markdown_table(["chapter", "runs", "wall (min)", "model TFLOP", "efficiency", "step roofline",
                            "sweep / step", "peak RSS per worker (MB)"], rows) + "\n\n"
    text += ("Where the rest of the time went, as shares of wall time x workers (they add up to 1 - sweep / step; "
             "eval + tracker counts only the time beyond what their FLOPs would take at the step's rate):\n\n")
    text += markdown_table(["chapter", *LOSS_NAMES.values()],
                           [(name, *(f"{s['losses'][k]:.1%}" for k in LOSS_NAMES)) for name, s in sw.items()])
    text += "\n\n"
    d = report.get("dask_scaling")
    if d:
        parts = [f"{n} worker{'s' if n != '1' else ''} {w['wall_s']:.0f} s (efficiency {w['efficiency']:.1%}, "
                 f"cluster start {w['cluster_start_s']:.0f} s)" for n, w in d["workers"].items()]
        last = list(d["workers"])[-1]
        text += (f"**Dask scaling** ({d['chapter']}, the same slice of {d['runs']} runs on a local cluster): "
                 + "; ".join(parts) + f"; speed-up {d['speedup'][last]:.2f}x on {last} workers.\n\n")
    return text


def compile_table(report: dict) -> str:
    """torch.compile per model: compile times, speed-up, break-even, and the gradient check."""
    raw = report["raw"].get("compile")
    if not raw or "compile_speedup" not in report:
        return ""
    rows = []
    for name, c in raw.items():
        cold, warm = c["cold"], c["warm"]
        if "speedup" not in warm:
            rows.append((f"{name} (width {c['width']})", (warm or cold).get("error", "failed"), *[""] * 6))
            continue
        rows.append((f"{name} (width {c['width']})", f"{cold['compile_s']:.0f}",
                     f"{warm['compile_s'] + warm['eval_compile_s']:.1f}", f"{warm['new_instance_s']:.1f}",
                     f"{report['compile_speedup'][name]:.2f}x", f"{report['compile_breakeven_steps'][name]:.0f}",
                     f"{warm['grad_error']:.0e}" + (" (fails)" if warm["grad_error"] > TOLERANCE else ""),
                     f"{warm['grad_error_fp32']:.0e}"))
    return ("**torch.compile** (inductor), per model in a child process with 1 thread: the first compiles with an "
            "empty on-disk cache, the second with the cache the first left. The gradient check compares the "
            "compiled graph with eager in float64; in float32 a compiled pass may take another sub-gradient at a "
            "ReLU, which the last column shows as found.\n\n"
            + markdown_table(["model", "cold compile (s)", "warm compile, train + eval (s)", "new instance (s)",
                              "step speed-up", "break-even steps", "grad error fp64", "fp32 difference"], rows)
            + "\n\n")


def markdown(report: dict) -> str:
    """What was measured, on which machine, the table per model, and the levers tried."""
    m, p = report["machine"], report["precision"]
    tp = report["raw"]["throughput"]
    rows = []
    for name, t in tp["models"].items():
        med = t["median_images_per_s"]
        rows.append((f"{name} (width {t['width']})", f"{med['baseline']:.0f}", f"{med['cascade_fp32']:.0f}",
                     f"{med['cascade_bf16']:.0f}", f"{report['speedup_vs_baseline'][name]:.2f}x",
                     f"{report['speedup_ceiling_fp32'][name]:.1f}x", f"{report['mask_overhead'][name]:.2%}",
                     f"{report['tracker_overhead'][name]:.2%}", f"{report['roofline_fraction'][name]:.1%}"))
    text = (f"Measured by `python -m cascade bench` (`make bench`) on {m['hardware']}, torch {m['torch']}, "
            f"{m['threads']} threads, 1-minute load average {m['loadavg_1min_at_start']} (the machine was shared; "
            "every ratio compares variants measured in alternation, as medians over repeats). Throughput is "
            f"training images per second of a fine-tuning step with {report['fraction_pruned']:.0%} of the weights "
            f"pruned (gmp), batch {report['plan']['batch_size']}, on 28x28 Fashion-MNIST. The baseline is "
            f"conventional research code: a DataLoader (num_workers={tp['baseline_workers']}) with torchvision "
            "transforms, fp32, contiguous memory, `torch.nn.utils.prune` masks. Goals: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["goals"].items()) + ".\n\n")
    text += markdown_table(["model", "baseline img/s", "cascade fp32 img/s", "cascade bf16 img/s",
                            f"speed-up ({p})", "fp32 ceiling", "mask overhead", "tracker overhead", "roofline"],
                           rows) + "\n\n"
    peak = report["raw"]["gemm_flops_per_s"]
    text += (f"*fp32 ceiling*: the speed-up over the baseline if the whole model ran at this machine's fp32 GEMM "
             f"peak ({peak['fp32'] / 1e9:.0f} GFLOP/s; bf16 {peak['bf16'] / 1e9:.0f}), an upper bound that no fp32 "
             "loop reaches (convolutions, BatchNorm and activations run below the GEMM peak: see *roofline*). "
             "Beyond it only lower precision helps (the bf16 column).")
    if max(report["roofline_fraction"].values()) > 1:
        text += (" A roofline fraction above 100% means this run's GEMM reference (torch.mm alone) was below what "
                 "the convolutions reached: on AMD CPUs MKL's sgemm runs far below oneDNN. Runs since take the "
                 "faster of torch.mm and a oneDNN 1x1 convolution. The sweep / step ratios below do not depend on "
                 "the reference.")
    if m.get("onednn_max_isa", "default") != "default":
        text += (f" Here oneDNN was capped at {m['onednn_max_isa']} because its AMX kernels fault on this machine "
                 "(a VM that hides the AMX tile palette, CPUID leaf 0x1D: `cascade/_cpu.py`), so bf16 runs "
                 "without AMX.")
    text += "\n\n"
    levers = []
    for name, t in tp["models"].items():
        if "speedup_vs_baseline_1thread" in t:
            med = t["median_images_per_s"]
            levers.append(f"with 1 intra-op thread in both loops ({name}): baseline {med['baseline_1thread']:.0f} "
                          f"img/s, cascade {p} {med[f'cascade_{p}_1thread']:.0f} img/s, speed-up "
                          f"{t['speedup_vs_baseline_1thread']:.2f}x")
    levers += [threads_text(report["raw"]["threads"])] if "threads" in report["raw"] else []
    levers += [allocator_text(report["raw"]["allocator"])] if "allocator" in report["raw"] else []
    text += "".join(f"- {line}\n" for line in levers)
    text += "\n" + compile_table(report) + sweeps_text(report)
    if m["hardware"].endswith("cores)"):  # `provenance.hardware` names a CPU so, a GPU by its own name
        text += ("**GPU:** not measured. This benchmark ran on a CPU-only machine, and training several small models "
                 "of a sweep at once on one GPU (stacked with `torch.func`) is not implemented yet.\n")
    return text


def sweep_panel(ax, report: dict) -> None:
    """One bar per chapter: the share of wall time x workers doing step-rate work, then each loss."""
    import matplotlib.pyplot as plt

    sw = report["sweeps"]
    names = list(sw)[::-1]
    left = [sw[n]["over_step"] for n in names]
    ax.barh(names, left, color="#1f77b4", label="train step (and eval at its rate)")
    colors = plt.get_cmap("tab10").colors[1:]
    for (key, label), color in zip(LOSS_NAMES.items(), colors):
        widths = [max(sw[n]["losses"][key], 0.0) for n in names]
        ax.barh(names, widths, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, widths)]
    ax.axvline(goal(report, "sweep_over_step"), color="black", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of wall time x workers (dashed: the goal for the step's share)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=4, fontsize=7, frameon=False)


def plot(report: dict, path: Path) -> None:
    """Bar charts: throughput of baseline and cascade per model, and the two overheads against their goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models_ = list(report["speedup_vs_baseline"])
    tp = report["raw"]["throughput"]["models"]
    p = report["precision"]
    sw = report.get("sweeps") or {}
    fig = plt.figure(figsize=(10, 3.8 + 0.4 * (len(sw) + 2) * bool(sw)))
    grid = fig.add_gridspec(2 if sw else 1, 2, width_ratios=[3, 2],
                            height_ratios=[3.8, 0.4 * (len(sw) + 2)] if sw else None)
    ax1, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
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
    ax1.set_title(f"pruned fine-tuning step ({report['fraction_pruned']:.0%} gmp), 28x28 Fashion-MNIST")
    top = max(tp[m]["median_images_per_s"][key] for m in models_ for key, _, _ in series)
    ax1.set_ylim(0, 1.25 * top)  # room for the legend above the bars
    ax1.legend(loc="upper left", ncol=3, fontsize=7)
    for i, (key, label, color) in enumerate([("mask_overhead", "mask", "#2ca02c"),
                                             ("tracker_overhead", "tracker", "#ff7f0e")]):
        ax2.bar([j + (i - 0.5) * 0.4 for j in range(len(models_))], [100 * report[key][m] for m in models_], 0.4,
                label=f"{label} (goal <= {100 * goal(report, key):g}%)", color=color)
        ax2.axhline(100 * goal(report, key), color=color, linestyle="--", linewidth=1)
    ax2.set_xticks(range(len(models_)), models_)
    ax2.set_ylabel("overhead, % of step / epoch time")
    ax2.set_title("overheads")
    ax2.legend()
    if sw:
        sweep_panel(fig.add_subplot(grid[1, :]), report)
    m = report["machine"]
    fig.suptitle(f"{m['hardware']}; torch {m['torch']}, {m['threads']} threads; load {m['loadavg_1min_at_start']}",
                 fontsize=9)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as f:
        tmp = Path(f.name)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


