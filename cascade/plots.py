"""One figure style for the whole book, the provenance line under every figure, and the plots
that several chapters share. Plots read tidy frames built from stored records, never models."""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

STYLE = {
    "figure.dpi": 96, "savefig.dpi": 96, "figure.figsize": (9, 3.4), "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "font.size": 9, "axes.titlesize": 10,
    "legend.fontsize": 8, "legend.frameon": False, "image.cmap": "viridis",
}
PALETTE = {"gmp": "#1f77b4", "random": "#d62728", "none": "#555555", "layerwise": "#2ca02c",
           "random-layerwise": "#ff7f0e", "l1-filter": "#9467bd", "nm": "#8c564b"}


def use_style() -> None:
    mpl.rcParams.update(STYLE)


def provenance_text(result) -> str:
    keys = result.keys()
    metas = [rec["meta"] for _, rec in result.records]
    commits = sorted({m.get("commit", "?") for m in metas})
    hardware = sorted({m.get("hardware", "?") for m in metas})
    minutes = result.wall_time_s / 60
    return (f"commit {','.join(commits)} · profile {result.profile} · {len(keys)} runs, keys {keys[0]}…"
            f"{'' if len(keys) == 1 else f' (+{len(keys) - 1})'} · {'; '.join(hardware)} · compute {minutes:.1f} min")


def provenance(fig, result) -> None:
    """Stamp the small provenance line (commit, profile, config hashes, hardware, wall time) on `fig`."""
    fig.text(0.01, -0.02, provenance_text(result), fontsize=6.5, color="#666666", ha="left", va="top")


def band(ax, frame: pd.DataFrame, x: str, y: str, label: str, color=None, **kw) -> None:
    """Mean over seeds as a line with a min-max band."""
    g = frame.groupby(x)[y]
    m = g.mean()
    ax.plot(m.index, m.values, label=label, color=color, **kw)
    ax.fill_between(m.index, g.min().values, g.max().values, color=color, alpha=0.15, linewidth=0)


def curves(frame: pd.DataFrame, metrics: list[str], result, x: str = "epoch", ylabel: str = "", titles=None):
    """One panel per metric; one line per (criterion, fraction) with a band over seeds."""
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, figsize=(3.2 * len(metrics), 3.2))
    for ax, metric in zip(axes[0], metrics):
        sub = frame[frame.metric == metric]
        for (crit, frac), g in sub.groupby(["criterion", "fraction"]):
            label = "control (unpruned)" if crit == "none" else f"{crit} {frac:.0%}"
            style = {"linestyle": "--"} if crit == "none" else {"alpha": 0.5 + 0.5 * frac / max(sub.fraction.max(), 1e-9)}
            band(ax, g, x, "value", label, PALETTE.get(crit), **style)
        ax.set_title((titles or {}).get(metric, metric))
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
    handles = dict(zip(*reversed(axes[0][-1].get_legend_handles_labels())))  # one entry per label: the control
    axes[0][-1].legend(handles.values(), handles.keys(), loc="best")           # repeats at every fraction
    fig.tight_layout()
    provenance(fig, result)
    return fig


def heatmap(matrix: pd.DataFrame, result, title: str, cbar: str):
    """Layer x epoch heatmap (layers in network order, top to bottom)."""
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.2 * len(matrix))))
    im = ax.imshow(matrix.values, aspect="auto", interpolation="nearest")
    ax.set_yticks(np.arange(len(matrix)), labels=[s.removesuffix(".weight") for s in matrix.index], fontsize=6)
    ax.set_xticks(np.arange(matrix.shape[1]), labels=matrix.columns)
    ax.set_xlabel("epoch")
    ax.grid(False)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    provenance(fig, result)
    return fig


def grids(matrices: dict[str, pd.DataFrame], result, fmt: str = "{:.2f}", marks: dict | None = None):
    """One annotated heatmap per matrix (rows and columns labelled by the matrix's index and columns);
    `marks[title]` is a boolean frame of the same shape whose True cells are outlined."""
    fig, axes = plt.subplots(1, len(matrices), squeeze=False, figsize=(3.4 * len(matrices), 3.0))
    for ax, (title, m) in zip(axes[0], matrices.items()):
        im = ax.imshow(m.values, aspect="auto", interpolation="nearest", origin="lower")
        ax.set_xticks(np.arange(m.shape[1]), labels=[f"{c:g}" for c in m.columns])
        ax.set_yticks(np.arange(m.shape[0]), labels=[f"{r:g}" for r in m.index])
        ax.set_xlabel(m.columns.name or "")
        ax.set_ylabel(m.index.name or "")
        ax.grid(False)
        ax.set_title(title)
        for (i, j), v in np.ndenumerate(m.values):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="w")
            if marks is not None and title in marks and bool(marks[title].values[i, j]):
                ax.add_patch(mpl.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    provenance(fig, result)
    return fig
