"""From records to tidy frames, and the decomposition of shedding that chapters share.

Every chapter reads its runs' records through these helpers: the tracker's rows, the per-epoch history, each
fine-tuning run's last global tracker values, and its dense model's accuracy.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

TRACKER_COLUMNS = ["epoch", "step", "layer", "metric", "value"]


def tracker_frame(records: list[tuple[Any, dict]]) -> pd.DataFrame:
    """Tidy tracker rows of every record that has them, with the run's labels as columns."""
    parts = [pd.DataFrame(rec["result"]["tracker"], columns=TRACKER_COLUMNS).assign(**run.labels(), key=rec["key"])
             for run, rec in records if "tracker" in rec["result"]]
    return pd.concat(parts, ignore_index=True)


def history_frame(records: list[tuple[Any, dict]], kind: str = "finetune") -> pd.DataFrame:
    """Per-epoch train/test metrics of every `kind` record, tidy (one row per epoch and metric)."""
    parts = [pd.DataFrame(rec["result"]["history"]).melt(id_vars="epoch", var_name="metric").assign(**run.labels())
             for run, rec in records if run.kind == kind]
    return pd.concat(parts, ignore_index=True).dropna(subset=["value"])


def final_delta(frame: pd.DataFrame, metric: str, by=("criterion", "fraction", "seed")) -> pd.Series:
    """Change of a global tracker metric from the first record (right after pruning) to the last."""
    g = frame[(frame.layer == "global") & (frame.metric == metric)].sort_values("step").groupby(list(by))["value"]
    return g.last() - g.first()


def last_global(frame: pd.DataFrame) -> pd.DataFrame:
    """The global tracker rows of each run's last record (tidy: one row per metric)."""
    g = frame[frame.layer == "global"]
    return g[g.step == g.groupby("key").step.transform("max")]


def final_rows(records) -> pd.DataFrame:
    """One row per fine-tuning run: its labels, its last global tracker values and its final test accuracy, and
    each kept-set measure's and `gmp_jaccard`'s first value as `<metric>_start` (a random kept set starts partly
    below tau)."""
    frame = tracker_frame(records)
    labels = [c for c in frame.columns if c not in TRACKER_COLUMNS]
    out = last_global(frame).pivot_table(index=labels, columns="metric", values="value").reset_index()
    g = frame[(frame.layer == "global") & frame.metric.str.startswith(("kept_shed", "gmp_jaccard"))]
    start = g[g.step == g.groupby("key").step.transform("min")]
    if len(start):
        first = start.pivot_table(index="key", columns="metric", values="value").add_suffix("_start")
        out = out.join(first, on="key")
    acc = {rec["key"]: rec["result"]["final"].get("test_acc") for _, rec in records if "tracker" in rec["result"]}
    out["test_acc"] = out.key.map(acc)
    out.columns.name = None
    return out


def dense_frame(records) -> pd.DataFrame:
    """One row per dense (pretrain) model: its labels, final test accuracy, parameters and MACs."""
    return pd.DataFrame([{**run.labels(), "test_acc": rec["result"]["final"]["test_acc"],
                          **{k: v for k, v in rec["result"]["counts"].items() if k in ("params", "macs")}}
                         for run, rec in records if run.kind == "pretrain"])


def with_dense_acc(rows: pd.DataFrame, records, on=("model", "seed")) -> pd.DataFrame:
    """`rows` with `dense_acc`, the test accuracy of the dense model each row's run started from."""
    dense = dense_frame(records).set_index(list(on)).test_acc
    return rows.assign(dense_acc=[dense[k] for k in rows[list(on)].itertuples(index=False, name=None)])


def over_control(rows: pd.DataFrame, columns: list[str], on: list[str]) -> pd.DataFrame:
    """The pruned rows with `<column>_control` (the unpruned run that matches on `on`) and
    `<column>_excess` (pruned minus control) added for each column."""
    ctrl = rows[rows.criterion == "none"].set_index(on)[columns].add_suffix("_control")
    out = rows[rows.criterion != "none"].join(ctrl, on=on)
    for c in columns:
        out[f"{c}_excess"] = out[c] - out[f"{c}_control"]
    return out.reset_index(drop=True)


KEPT = {"gmp": "kept_shed@{f:g}", "random": "kept_shed_random@{f:g}",  # the kept-set measure of each criterion
        "layerwise": "kept_shed_layerwise@{f:g}"}


def decompose(rows: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """Per GMP-, layerwise- or random-pruned run (rows from `final_rows` of runs tracked by
    `backbone.decomposition_tracker`, with `dense_acc`): (a) `cascade` E = (1 - f)(K_p - K_c) / f, (b)
    `temperature` D_c - f, (c) `relaxation`, the control's drift K_c(end) - K_c(start), where K is the share of the criterion's kept set below GMP's threshold
    tau(f) (`KEPT`; a GMP set starts with none below it, a random set with some) and the control is the unpruned
    run that matches on `on` and the seed; also excesses of scale-aware measures over the control and `acc_drop`,
    the dense accuracy minus the accuracy after removing the shed weights."""
    ctrl = rows[rows.criterion == "none"].set_index([*on, "seed"])
    scale = ["dead_bn", "dead_filters", "shed_rms@0.05"]
    out = []
    for (criterion, f), g in rows[rows.criterion.isin(list(KEPT))].groupby(["criterion", "fraction"]):
        k, d = KEPT[criterion].format(f=f), f"shed_gmp@{f:g}"
        k0 = f"{k}_start"
        pruned = g.assign(**{k0: g[k0] if k0 in g else 0.0})
        control = ctrl.assign(**{k0: ctrl[k0] if k0 in ctrl else 0.0})
        pruned = pruned.join(control[[k, k0, d, "test_acc", *scale]].add_suffix("_control"), on=[*on, "seed"])
        pruned["cascade"] = (1 - f) * (pruned[k] - pruned[f"{k}_control"]) / f
        pruned["temperature"] = pruned[f"{d}_control"] - f
        pruned["relaxation"] = pruned[f"{k}_control"] - pruned[f"{k0}_control"]
        pruned["survivors_shed"] = pruned[k]
        for m in scale:
            pruned[f"{m}_excess"] = pruned[m] - pruned[f"{m}_control"]
        pruned["acc_drop"] = pruned.dense_acc - pruned.removal_acc
        out.append(pruned.drop(columns=[k, k0, d, f"{k}_control", f"{k0}_control", f"{d}_control"]))
    return pd.concat(out, ignore_index=True)
