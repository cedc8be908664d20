"""01 phenomenon: the pilot of C1 (does pruning a small fraction set off shedding of a much larger one?).

Chapter 02 supersedes this chapter's C1 estimate: E below counts the relaxation of the kept set (which the unpruned
control shows too) as cascade, so 02 splits it off with the control's kept set and decides C1. This chapter stays
as the pilot, and tests no claim in the claims table.

Protocol (fixed before any result was seen): a dense ResNet is pre-trained; copies are pruned
one-shot by `gmp` and `random` at small fractions and fine-tuned with a constant learning rate;
a control is fine-tuned the same way without pruning. Shedding is measured on the survivors.

C1's effect, per seed: excess shedding in units of the pruned fraction,
    E = (dS_pruned * (1 - f) - dS_control) / f,
where dS is the rise, over fine-tuning, of the share of tracked weights below tau0 (GMP's
threshold at fraction f). E is averaged over criteria and fractions. C1 holds when the 95% CI
of E lies above 1 (more weights shed than were pruned), fails when it lies below 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from ..shedding import TrackerConfig
from . import backbone
from .backbone import Backbone


@dataclass(frozen=True)
class Config(Backbone):
    seeds: int = 4
    criteria: tuple[str, ...] = ("gmp", "random")
    fractions: tuple[float, ...] = (0.05, 0.1, 0.2)
    finetune_epochs: int = 6
    finetune_lr: float = 0.01
    weight_decay: float = 5e-4
    hot: str = "0.1/0.0005/cosine"  # chapter 02's confirmed condition (its `confirm`), where the analysis is repeated
    # bf16 is slower here (oneDNN cannot use this VM's AMX); 90_precision checks it

    def __post_init__(self):
        super().__post_init__()
        if not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions={self.fractions!r} is invalid; allowed: values in (0, 1)")
        if self.hot and backbone.parse_point(self.hot) == (self.finetune_lr, self.weight_decay, "constant"):
            raise ValueError(f"hot={self.hot!r} is invalid; allowed: a condition other than the cold protocol's")


def seed_runs(cfg: Config, seed: int, precision: str) -> list[R.FinetuneRun]:
    """One seed's prune-then-fine-tune runs (control first at each fraction), fine-tuned in `precision`."""
    pre = cfg.pretrain(seed)
    ft = cfg.finetune(seed, cfg.finetune_epochs, cfg.finetune_lr, cfg.weight_decay, precision=precision)
    return [R.FinetuneRun(pre, R.PruneConfig(crit, frac, seed), ft, TrackerConfig())
            for frac in cfg.fractions for crit in ("none", *cfg.criteria)]


def hot_runs(cfg: Config, seed: int) -> list[R.FinetuneRun]:
    """The control and GMP at each fraction, fine-tuned at the `hot` condition, tracked for `analysis.decompose`."""
    if not cfg.hot:
        return []
    lr, wd, schedule = backbone.parse_point(cfg.hot)
    return backbone.arms(cfg, seed, cfg.finetune(seed, cfg.finetune_epochs, lr, wd, schedule), cfg.fractions,
                         cfg.fractions[0], backbone.decomposition_tracker(cfg.fractions))


def runs(cfg: Config) -> list[R.FinetuneRun]:
    return [r for seed in cfg.seed_list() for r in (*seed_runs(cfg, seed, cfg.precision), *hot_runs(cfg, seed))]


def is_cold(cfg: Config, run) -> bool:
    ft = run.finetune
    return (ft.lr, ft.weight_decay, ft.lr_schedule) == (cfg.finetune_lr, cfg.weight_decay, "constant")


def hot_analysis(cfg: Config, records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The decomposition at the hot condition: one row per GMP run, and per fraction the means with E's CI."""
    rows = analysis.with_dense_acc(analysis.final_rows(records), records)
    dec = analysis.decompose(rows, ["lr", "weight_decay", "schedule"])
    cols = ["cascade", "temperature", "relaxation", "survivors_shed", "dead_bn_excess", "test_acc", "removal_acc",
            "dense_acc", "acc_drop"]
    table = dec.groupby("fraction")[cols].mean()
    ci = dec.groupby("fraction").cascade.apply(lambda v: stats.mean_ci(v.tolist()))
    table["cascade_lo"], table["cascade_hi"] = [c[1] for c in ci], [c[2] for c in ci]
    table["n_seeds"] = dec.groupby("fraction").size()
    return dec, table


def excess(frame: pd.DataFrame, metric: str = "shed_tau0") -> pd.DataFrame:
    """Per (criterion, fraction, seed): rise of shed share vs the control, in units of the pruned fraction."""
    d = analysis.final_delta(frame, metric).rename("d_shed").reset_index()
    ctrl = d[d.criterion == "none"].set_index(["fraction", "seed"])["d_shed"]
    d = d[d.criterion != "none"].copy()
    d["d_control"] = [ctrl[(f, s)] for f, s in zip(d.fraction, d.seed)]
    d["excess_ratio"] = (d.d_shed * (1 - d.fraction) - d.d_control) / d.fraction
    return d


def analyze(cfg: Config, records) -> tuple[dict, list[dict]]:
    hot = [(r, rec) for r, rec in records if r.kind == "pretrain" or not is_cold(cfg, r)]
    records = [(r, rec) for r, rec in records if r.kind == "pretrain" or is_cold(cfg, r)]
    frame = analysis.tracker_frame(records)
    hist = analysis.history_frame(records)
    ex = excess(frame)
    final = analysis.last_global(frame).pivot_table(index=["criterion", "fraction", "seed"], columns="metric", values="value")
    acc = hist[hist.metric == "test_acc"]
    final["test_acc"] = acc[acc.epoch == acc.epoch.max()].set_index(["criterion", "fraction", "seed"])["value"]
    cols = ["test_acc", "removal_acc", "effective_sparsity", "shed_tau0", "dead_bn", "dead_filters"]
    summary = final[[c for c in cols if c in final]].groupby(["criterion", "fraction"]).mean()
    summary = summary.join(ex.groupby(["criterion", "fraction"])[["d_shed", "d_control", "excess_ratio"]].mean())
    per_seed = ex.groupby("seed").excess_ratio.mean().tolist()
    v = stats.verdict(
        "C1", per_seed, 1.0,
        "Pilot estimate (superseded by chapter 02, whose decomposition separates relaxation from cascade): after "
        "pruning, fine-tuning sheds {mean:.2f}x the pruned fraction beyond the unpruned control (95% CI {lo:.2f} to "
        "{hi:.2f}, n={n} seeds; threshold 1x).",
        condition=f"{cfg.model} w{cfg.width}, one-shot {'+'.join(cfg.criteria)} at "
                  f"{', '.join(f'{f:g}' for f in cfg.fractions)}")
    tables = {"summary": summary, "excess": ex, "frame": frame, "history": hist}
    if cfg.hot:
        tables["hot_rows"], tables["hot"] = hot_analysis(cfg, hot)
    return tables, [v]


EXPERIMENT = core.Experiment(
    name="phenomenon", notebook="01_phenomenon", claims=(), config=Config,
    profiles={
        "smoke": dict(model="resnet8", width=4, train_size=256, test_size=128, seeds=2, fractions=(0.1,),
                      pretrain_epochs=2, finetune_epochs=2, batch_size=64),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", seeds=5, pretrain_epochs=60,
                     finetune_epochs=20),
    },
    runs=runs, analyze=analyze,
    description="Prune a pre-trained ResNet one-shot (gmp, random) at small fractions and track shedding "
                "during fine-tuning against an unpruned control.")
