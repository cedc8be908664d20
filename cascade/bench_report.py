"""Renders `python -m cascade bench`'s bench.json: one Markdown text for the CLI and the book, and its figure.

Kept apart from `bench`, which measures: the book renders a stored report without importing the measuring code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .report import markdown_table


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


def goal(report: dict, key: str) -> float:
    return float(report["goals"][key].split()[-1])


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
    levers += [text_of(report["raw"][key]) for key, text_of in (("compile", compile_text), ("threads", threads_text))
               if key in report["raw"]]
    return text + "".join(f"- {line}\n" for line in levers)


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
    m = report["machine"]
    fig.suptitle(f"{m['hardware']}; torch {m['torch']}, {m['threads']} threads; load {m['loadavg_1min_at_start']}",
                 fontsize=9)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as f:
        tmp = Path(f.name)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


