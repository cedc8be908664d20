"""90 precision: may bf16 autocast stand in for fp32 in the fine-tuning that the book measures?

bf16 autocast is the usual speed lever (about 1.7x for small ResNets on CPUs where oneDNN can use AMX, and on
GPUs), but shedding is about small magnitudes, so it is checked on the phenomenon setup itself before anyone
relies on it: the phenomenon's pretrained models are pruned (gmp, random, and the unpruned control) and
fine-tuned once in fp32 and once under bf16 autocast (master weights and the tracker stay fp32 either way).
Per criterion and seed we take the fp32 - bf16 difference of (a) the rise of the tau0-shed share and (b) the
final test accuracy.

Verdict "bf16" (fixed in advance): bf16 is acceptable when, for both quantities, the mean paired
difference is smaller than the seed-to-seed standard deviation of the fp32 runs (`effect` is the
larger of the two ratios |mean difference| / seed std; `holds` is True when the 95% CI of the per-seed
ratio lies below 1, False when it lies above 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from . import phenomenon


@dataclass(frozen=True)
class Config(phenomenon.Config):
    fractions: tuple[float, ...] = (0.1,)
    precisions: tuple[str, ...] = ("bf16", "fp32")


def runs(cfg: Config) -> list[R.FinetuneRun]:
    return [r for seed in cfg.seed_list() for precision in cfg.precisions
            for r in phenomenon.seed_runs(cfg, seed, precision)]


def analyze(cfg: Config, records) -> tuple[dict, list[dict]]:
    frame = analysis.tracker_frame(records)
    by = ("precision", "criterion", "fraction", "seed")
    d_shed = analysis.final_delta(frame, "shed_tau0", by)
    hist = analysis.history_frame(records)
    acc = hist[hist.metric == "test_acc"]
    acc = acc[acc.epoch == acc.epoch.max()].set_index(list(by))["value"]
    table = pd.DataFrame({"d_shed_tau0": d_shed, "test_acc": acc}).reset_index()
    wide = table.pivot_table(index=["criterion", "fraction", "seed"], columns="precision",
                             values=["d_shed_tau0", "test_acc"])
    ratios = []
    for q in ("d_shed_tau0", "test_acc"):
        diff = (wide[(q, "fp32")] - wide[(q, "bf16")]).groupby("seed").mean()
        noise = wide[(q, "fp32")].groupby(["criterion", "fraction"]).std().mean()
        ratios.append((diff.abs() / noise).tolist() if noise > 0 else [float("inf")] * len(diff))
    per_seed = [max(a, b) for a, b in zip(*ratios)]
    v = stats.verdict("bf16", per_seed, 1.0,
                     "bf16 as a stand-in for fp32 {word}: the larger paired fp32-bf16 difference is {mean:.2f} "
                     "seed standard deviations (95% CI {lo:.2f} to {hi:.2f}, n={n} seeds; acceptable below 1).",
                     above=False, condition="bf16 vs fp32 fine-tuning")
    summary = table.groupby(["precision", "criterion"])[["d_shed_tau0", "test_acc"]].agg(["mean", "std"])
    return {"summary": summary, "paired": table, "frame": frame}, [v]


EXPERIMENT = core.Experiment(
    name="precision", notebook="90_precision", claims=(), config=Config,
    profiles={
        "smoke": dict(model="resnet8", width=4, train_size=256, test_size=128, seeds=2, pretrain_epochs=2,
                      finetune_epochs=2, batch_size=64),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", seeds=5, pretrain_epochs=60,
                     finetune_epochs=20),
    },
    runs=runs, analyze=analyze,
    description="Fine-tune the phenomenon setup in fp32 and bf16 side by side; is bf16 within seed noise?")
