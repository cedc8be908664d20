"""One figure style for the whole book, the provenance line under every figure, and the plots
that several chapters share. Plots read tidy frames built from stored records, never models."""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.patheffects  # noqa: F401 (mpl.patheffects)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# The book's text column is about 770 px at 100% zoom: figures are drawn 7 inches wide at 150 dpi and scaled to
# the column (book/_static/cascade.css), so they stay sharp and 10 pt text reads as about 14 px.
COLUMN = 7.0
STYLE = {
    "figure.dpi": 150, "savefig.dpi": 150, "figure.figsize": (COLUMN, 3.0), "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "font.size": 10, "axes.titlesize": 10,
    "legend.fontsize": 9, "legend.frameon": False, "image.cmap": "viridis",
}
PROVENANCE_CHARS = 110  # characters of 7 pt text that fit in COLUMN
VERDICT_COLORS = {"reproduces": "#2ca02c", "does not reproduce": "#d62728", "inconclusive": "#7f7f7f",
                  "not testable": "#9467bd"}
PALETTE = {"gmp": "#1f77b4", "random": "#d62728", "none": "#555555", "layerwise": "#2ca02c",
           "random-layerwise": "#ff7f0e", "l1-filter": "#9467bd", "nm": "#8c564b"}


def use_style() -> None:
    mpl.rcParams.update(STYLE)


def provenance_text(result) -> str:
    from .report import command

    keys = result.keys()
    metas = [rec["meta"] for _, rec in result.records]
    commits = sorted({m.get("commit", "?") for m in metas})
    hardware = sorted({m.get("hardware", "?") for m in metas})
    minutes = result.wall_time_s / 60
    parts = [f"commit {','.join(commits)}", f"profile {result.profile}",
             f"{len(keys)} runs, keys {keys[0]}…{'' if len(keys) == 1 else f' (+{len(keys) - 1})'}",
             "; ".join(hardware), f"compute {minutes:.1f} min"]
    lines = [parts[0]]
    for part in parts[1:]:  # lines no wider than the figure, so the provenance never widens it
        lines[-1:] = [f"{lines[-1]} · {part}"] if len(lines[-1]) + len(part) < PROVENANCE_CHARS else [lines[-1], part]
    return "\n".join(lines + [f"regenerate: {command(result)}"])


def provenance(fig, result) -> None:
    """Stamp the provenance lines (commit, profile, config hashes, hardware, compute time, and the command that
    regenerates the figure) under `fig`."""
    fig.text(0.01, -0.02, provenance_text(result), fontsize=7, color="#666666", ha="left", va="top")


def band(ax, frame: pd.DataFrame, x: str, y: str, label: str, color=None, **kw) -> None:
    """Mean over seeds as a line with a min-max band."""
    g = frame.groupby(x)[y]
    m = g.mean()
    ax.plot(m.index, m.values, label=label, color=color, **kw)
    ax.fill_between(m.index, g.min().values, g.max().values, color=color, alpha=0.15, linewidth=0)


def differences(ax, frame: pd.DataFrame, group: str, value: str, delta: float, color="#333333") -> None:
    """Paired differences per replicate (dots) with their mean and 95% t-interval, one column per `group`, against
    the claim's threshold `delta` (dashed) and zero (grey): what a paired verdict decides on (`verdicts.md`, 12)."""
    from .stats import mean_ci

    groups = list(dict.fromkeys(frame[group]))
    for i, name in enumerate(groups):
        v = frame.loc[frame[group] == name, value].to_numpy(float)
        ax.plot(i + np.linspace(-0.12, 0.12, len(v)), v, "o", color=color, alpha=0.45, markersize=4)
        m, lo, hi = mean_ci(v)
        ax.errorbar([i + 0.25], [m], yerr=[[m - lo], [hi - m]] if np.isfinite(lo) else None, fmt="s", color=color,
                    capsize=4, markersize=6, linewidth=2)
    ax.axhline(0, color="#bbbbbb", linewidth=1)
    ax.axhline(delta, color="#333333", linestyle="--", linewidth=1, label=f"δ = {delta:+g}")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.5, len(groups) - 0.5)


def curves(frame: pd.DataFrame, metrics: list[str], result, x: str = "epoch", ylabel: str = "", titles=None):
    """One panel per metric; one line per (criterion, fraction) with a band over seeds."""
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, figsize=(COLUMN, 3.0))
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


def heatmap(matrices: dict[str, pd.DataFrame], result, cbar: str):
    """Layer x epoch heatmaps side by side, one per title (layers in network order, top to bottom), on one
    colour scale."""
    rows = max(len(m) for m in matrices.values())
    fig, axes = plt.subplots(1, len(matrices), squeeze=False, sharey=True,
                             figsize=(COLUMN, max(2.5, 0.16 * rows + 1)), layout="constrained")
    top = max(float(np.nanmax(m.values)) for m in matrices.values())
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        im = ax.imshow(matrix.values, aspect="auto", interpolation="nearest", vmin=0, vmax=top)
        ax.set_yticks(np.arange(len(matrix)), labels=[s.removesuffix(".weight") for s in matrix.index], fontsize=7)
        ax.set_xticks(np.arange(matrix.shape[1]), labels=matrix.columns)
        ax.set_xlabel("epoch")
        ax.grid(False)
        ax.set_title(title)
    fig.colorbar(im, ax=axes[0].tolist(), label=cbar)
    provenance(fig, result)
    return fig


def grids(matrices: list[dict[str, pd.DataFrame]], result, fmt: str = "{:.2f}", marks: dict | None = None):
    """Annotated heatmaps, one row of panels per dict and one panel per matrix (rows and columns labelled by
    the matrix's index and columns); `marks[title]` is a boolean frame of the same shape whose True cells are
    outlined."""
    ncols = max(len(row) for row in matrices)
    fig, axes = plt.subplots(len(matrices), ncols, squeeze=False, figsize=(COLUMN, 2.3 * len(matrices)))
    panels = [(ax, item) for axrow, row in zip(axes, matrices) for ax, item in zip(axrow, row.items())]
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, m) in panels:
        im = ax.imshow(m.values, aspect="auto", interpolation="nearest", origin="lower")
        ax.set_xticks(np.arange(m.shape[1]), labels=[f"{c:g}" for c in m.columns])
        ax.set_yticks(np.arange(m.shape[0]), labels=[f"{r:g}" for r in m.index])
        ax.set_xlabel(m.columns.name or "")
        ax.set_ylabel(m.index.name or "")
        ax.grid(False)
        ax.set_title(title, fontsize=9)
        for (i, j), v in np.ndenumerate(m.values):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8, color="w")
            if marks is not None and title in marks and bool(marks[title].values[i, j]):
                ax.add_patch(mpl.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    provenance(fig, result)
    return fig


def regime_map(panels: dict[str, tuple[pd.DataFrame, str]], labels: pd.DataFrame, result, predicted=None,
               transitions=(), fmt: str = "{:.3f}"):
    """Temperature x load maps, one panel per title: `panels[title]` = (a density x temperature frame, its colour
    bar's label). Every cell shows its value and its regime label (`labels`, the same shape); thick black lines
    are the regime boundaries (between neighbouring cells of different labels), a red outline marks a cell whose
    label differs from `predicted`'s, and a dashed red line between density rows i and i + 1 for each i in
    `transitions` marks T1's transition (where the temperature effect changes sign)."""
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(COLUMN, 3.6), layout="constrained")
    lab = labels.values
    for ax, (title, (m, cbar)) in zip(axes[0], panels.items()):
        im = ax.imshow(m.values.astype(float), aspect="auto", interpolation="nearest", origin="lower")
        ax.set_xticks(np.arange(m.shape[1]), labels=list(m.columns), fontsize=8)
        ax.set_yticks(np.arange(m.shape[0]), labels=[f"{d:g}" for d in m.index], fontsize=8)
        ax.set_xlabel("dense model (colder → hotter)", fontsize=8)
        ax.set_ylabel("density")
        ax.grid(False)
        ax.set_title(title, fontsize=9)
        for (i, j), v in np.ndenumerate(m.values.astype(float)):
            ax.text(j, i, f"{'–' if np.isnan(v) else fmt.format(v)}\n{lab[i, j]}", ha="center", va="center",
                    fontsize=7, color="w", path_effects=[mpl.patheffects.withStroke(linewidth=2, foreground="k")])
            if predicted is not None and predicted.values[i, j] != lab[i, j]:
                ax.add_patch(mpl.patches.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="red",
                                                   lw=1.5))
            if j + 1 < lab.shape[1] and lab[i, j] != lab[i, j + 1]:
                ax.plot([j + 0.5, j + 0.5], [i - 0.5, i + 0.5], color="k", lw=3)
            if i + 1 < lab.shape[0] and lab[i, j] != lab[i + 1, j]:
                ax.plot([j - 0.5, j + 0.5], [i + 0.5, i + 0.5], color="k", lw=3)
        for i in transitions:
            ax.axhline(i + 0.5, color="red", linestyle="--", lw=2)
        bar = fig.colorbar(im, ax=ax, location="bottom", shrink=0.9)
        bar.set_label(cbar, fontsize=8)
        bar.ax.tick_params(labelsize=7, rotation=45)
    provenance(fig, result)
    return fig


def forest(rows: list[dict]):
    """The claims at a glance: one panel per verdict with an estimate, its effect and 95% CI against its own
    threshold (dashed), coloured by verdict; a "not testable" row is drawn hollow and apart, below the tested
    ones, its premise named. `rows` are `report.claims` rows."""
    rows = [r for r in rows if r["effect"] is not None]
    rows = [r for r in rows if r["verdict"] != "not testable"] + [r for r in rows if r["verdict"] == "not testable"]
    fig, axes = plt.subplots(len(rows), 1, squeeze=False, figsize=(COLUMN, 0.55 * len(rows) + 0.6))
    for ax, r in zip(axes[:, 0], rows):
        lo, hi = (r["effect"], r["effect"]) if r["ci95"][0] is None else r["ci95"]
        color = VERDICT_COLORS.get(r["verdict"], "#7f7f7f")
        untestable = r["verdict"] == "not testable"
        ax.errorbar([r["effect"]], [0], xerr=[[r["effect"] - lo], [hi - r["effect"]]], fmt="o", color=color,
                    capsize=4, markersize=6, linewidth=2, mfc="white" if untestable else color,
                    linestyle=":" if untestable else "-")
        if untestable:
            ax.set_facecolor("#f4f4f4")
        span = [lo, hi] + ([r["threshold"]] if r.get("threshold") is not None else [])
        if r.get("threshold") is not None:
            ax.axvline(r["threshold"], color="#333333", linestyle="--", linewidth=1)
        pad = 0.15 * (max(span) - min(span) or abs(r["effect"]) or 1)
        ax.set_xlim(min(span) - pad, max(span) + pad)
        ax.set_yticks([])
        ax.grid(axis="y", visible=False)
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel(f"{r['claim']}  {r['notebook'][:2]}", rotation=0, ha="right", va="center", fontsize=10)
        label = "not testable:\npremise absent" if untestable else r["verdict"]
        ax.text(1.01, 0.5, label, transform=ax.transAxes, color=color, va="center", fontsize=9)
    axes[-1, 0].set_xlabel("effect, 95% CI (each row on its own scale; dashed: the claim's threshold)")
    fig.tight_layout()
    return fig
