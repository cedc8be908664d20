"""04 Rethinking: is the pruned architecture, trained from scratch, as good as the pruned model fine-tuned
(R1)? Does the lottery-ticket init beat a random one at the optimal learning rate (R2)? (Liu et al., ICLR 2019)

Protocol and verdict rules, fixed before any result existed (the chapter states them in full):
- The dense model is the backbone of chapter 02 (the same runs): ResNet-8 w16, 10k Fashion-MNIST images, SGD with a
  cosine schedule from `pretrain_lr`, `pretrain_epochs` epochs.
- R1 targets. Structured: L1-norm filter pruning of every block's first conv with per-stage shares
  `stage_ratios` (A and B of the paper's ResNet-56). Unstructured: global magnitude pruning at `sparsities`.
  Three arms on each target, per seed: fine-tuned (trained weights, constant LR `finetune_lr`, `finetune_epochs`),
  Scratch-E (random init, the dense recipe and its epochs) and Scratch-B (Scratch-E with the epochs scaled by
  MACs(dense)/MACs(pruned), capped at `budget_cap`). Random inits use seed + `init_offset`.
- R1 verdict: per seed, Scratch-B minus fine-tuned test accuracy, averaged over the structured targets. R1 holds
  when the 95% CI's lower end is above -`delta`, fails when its upper end is below -`delta`.
- R2: one-shot global magnitude pruning at `ticket_sparsity` of a dense model trained at each of `ticket_lrs`;
  the mask retrained with that dense recipe from the original init (the winning ticket) and from a random init.
- R2 verdict: per seed, ticket minus random test accuracy at `pretrain_lr` (the backbone's, optimal) LR. R2 holds
  when the CI's upper end is below `delta` (no gain beyond delta), fails when its lower end is above `delta`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from ..runs import RetrainRun
from .backbone import SmallResNet


def parse_ratios(text: str) -> tuple[float, ...]:
    """Per-stage filter shares from "0.6/0.3/0.1"."""
    try:
        ratios = tuple(float(r) for r in text.split("/"))
    except ValueError:
        ratios = ()
    if not ratios or not all(0 <= r < 1 for r in ratios):
        raise ValueError(f"stage ratios {text!r} are invalid; allowed: shares in [0, 1) per stage, e.g. '0.6/0.3/0.1'")
    return ratios


@dataclass(frozen=True)
class Config(SmallResNet):
    stage_ratios: tuple[str, ...] = ("0.1/0.1/0.1", "0.6/0.3/0.1")  # the paper's ResNet-56-A and -B
    sparsities: tuple[float, ...] = (0.5, 0.9)
    finetune_epochs: int = 5
    finetune_lr: float = 0.001
    budget_cap: float = 2.0
    init_offset: int = 1000
    ticket_sparsity: float = 0.8
    ticket_lrs: tuple[float, ...] = (0.1, 0.01)
    delta: float = 0.005

    def __post_init__(self):
        super().__post_init__()
        for text in self.stage_ratios:
            parse_ratios(text)
        if not all(0 < s < 1 for s in (*self.sparsities, self.ticket_sparsity)):
            raise ValueError(f"sparsities={self.sparsities!r}, ticket_sparsity={self.ticket_sparsity!r} are "
                             "invalid; allowed: values in (0, 1)")
        if self.pretrain_lr not in self.ticket_lrs:
            raise ValueError(f"ticket_lrs={self.ticket_lrs!r} is invalid; allowed: LRs that include "
                             f"pretrain_lr={self.pretrain_lr}")

    def targets(self, seed: int) -> dict[str, R.PruneConfig]:
        """R1's pruned targets by name: 'A'/'B'... (structured, in order), then 'U50'... (unstructured)."""
        names = [chr(ord("A") + i) for i in range(len(self.stage_ratios))]
        out = {n: R.PruneConfig("l1-filter", 0.0, seed, stage_ratios=parse_ratios(t))
               for n, t in zip(names, self.stage_ratios)}
        return out | {f"U{s * 100:g}": R.PruneConfig("gmp", s, seed) for s in self.sparsities}

    def dense(self, seed: int, lr: float | None = None) -> R.PretrainRun:
        pre = self.pretrain(seed)
        return pre if lr is None else dataclasses.replace(pre, train=dataclasses.replace(pre.train, lr=lr))


def arms(cfg: Config, seed: int) -> dict[tuple[str, str], RetrainRun]:
    """R1's runs of one seed by (target, arm)."""
    pre = cfg.dense(seed)
    tune = cfg.finetune(seed, cfg.finetune_epochs, cfg.finetune_lr, cfg.pretrain_weight_decay)
    scratch = pre.train
    out = {}
    for name, prune in cfg.targets(seed).items():
        out[name, "fine-tuned"] = RetrainRun(pre, prune, tune, init="trained")
        out[name, "Scratch-E"] = RetrainRun(pre, prune, scratch, init="random", init_seed=seed + cfg.init_offset)
        out[name, "Scratch-B"] = RetrainRun(pre, prune, scratch, init="random", init_seed=seed + cfg.init_offset,
                                            budget="flops", budget_cap=cfg.budget_cap)
    return out


def tickets(cfg: Config, seed: int) -> dict[tuple[float, str], RetrainRun]:
    """R2's runs of one seed by (lr, init): the mask of the dense model trained at lr, retrained at lr."""
    out = {}
    for lr in cfg.ticket_lrs:
        pre = cfg.dense(seed, lr)
        prune = R.PruneConfig("gmp", cfg.ticket_sparsity, seed)
        out[lr, "ticket"] = RetrainRun(pre, prune, pre.train, init="rewind")
        out[lr, "random"] = RetrainRun(pre, prune, pre.train, init="random", init_seed=seed + cfg.init_offset)
    return out


def runs(cfg: Config) -> list[RetrainRun]:
    return [r for seed in cfg.seed_list() for r in [*arms(cfg, seed).values(), *tickets(cfg, seed).values()]]


def rows(cfg: Config, records) -> pd.DataFrame:
    """One row per run: study (R1/R2), target or lr, arm, seed, test accuracy, MACs, parameters and epochs."""
    stored = {rec["key"]: rec["result"] for _, rec in records}
    out = []
    for seed in cfg.seed_list():
        for (target, arm), run in arms(cfg, seed).items():
            out.append({"study": "R1", "target": target, "arm": arm, "seed": seed, "run": run})
        for (lr, init), run in tickets(cfg, seed).items():
            out.append({"study": "R2", "target": f"lr {lr:g}", "arm": init, "seed": seed, "run": run})
    for row in out:
        result = stored[row.pop("run").key]
        row.update(test_acc=result["final"]["test_acc"], macs=result["counts"]["macs_kept"],
                   params=result["counts"]["params_kept"], macs_dense=result["macs_dense"], epochs=result["epochs"],
                   sparsity=result["sparsity"])
    return pd.DataFrame(out)


def dense_rows(cfg: Config, records) -> pd.DataFrame:
    """Test accuracy of every dense model, by lr and seed."""
    return analysis.dense_frame(records)[["lr", "seed", "test_acc", "params", "macs"]]


def effects(table: pd.DataFrame, study: str, base: str) -> pd.DataFrame:
    """Per target of `study`, each arm minus `base` (paired by seed): mean, 95% CI and paired-t p."""
    out = []
    for target, g in table[table.study == study].groupby("target", sort=False):
        acc = g.pivot_table(index="seed", columns="arm", values="test_acc")
        for arm in [a for a in acc.columns if a != base]:
            out.append({"target": target, "arm": arm, "minus": base, **stats.paired(acc[arm], acc[base])})
    return pd.DataFrame(out)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy with its 95% CI, MACs and parameters per (study, target, arm)."""
    out = []
    for (study, target, arm), g in table.groupby(["study", "target", "arm"], sort=False):
        m, lo, hi = stats.mean_ci(g.test_acc)
        out.append({"study": study, "target": target, "arm": arm, "test_acc": m, "ci_lo": lo, "ci_hi": hi,
                    "macs": g.macs.mean(), "params": g.params.mean(), "epochs": g.epochs.mean(),
                    "sparsity": g.sparsity.mean(), "seeds": len(g)})
    return pd.DataFrame(out)


def analyze(cfg: Config, records) -> tuple[dict, list[dict]]:
    table = rows(cfg, records)
    r1 = table[table.study == "R1"]
    structured = [t for t in cfg.targets(cfg.first_seed) if not t.startswith("U")]
    acc = r1[r1.target.isin(structured)].pivot_table(index=["seed", "target"], columns="arm", values="test_acc")
    per_seed = (acc["Scratch-B"] - acc["fine-tuned"]).groupby("seed").mean()
    v1 = stats.verdict(
        "R1", per_seed.tolist(), -cfg.delta,
        "Training the pruned architecture from scratch {word}: Scratch-B minus fine-tuned test accuracy, averaged "
        f"over the structured targets {', '.join(structured)}, is {{mean:+.4f}} (95% CI {{lo:+.4f}} to {{hi:+.4f}}, "
        f"n={{n}} seeds; it holds when the CI lies above -{cfg.delta:g}).",
        condition=f"{cfg.model} w{cfg.width}, L1-filter targets {', '.join(cfg.stage_ratios)}")
    r2 = table[(table.study == "R2") & (table.target == f"lr {cfg.pretrain_lr:g}")]
    acc2 = r2.pivot_table(index="seed", columns="arm", values="test_acc")
    v2 = stats.verdict(
        "R2", (acc2["ticket"] - acc2["random"]).tolist(), cfg.delta,
        "That the winning ticket brings no improvement at the optimal learning rate {word}: ticket minus random "
        f"re-init test accuracy at lr {cfg.pretrain_lr:g} is {{mean:+.4f}} (95% CI {{lo:+.4f}} to {{hi:+.4f}}, "
        f"n={{n}} seeds; it holds when the CI lies below {cfg.delta:g}).",
        above=False, condition=f"{cfg.model} w{cfg.width}, one-shot GMP {cfg.ticket_sparsity:g}")
    tables = {"rows": table, "summary": summary(table), "dense": dense_rows(cfg, records),
              "r1_effects": effects(table, "R1", "fine-tuned"), "r2_effects": effects(table, "R2", "random")}
    return tables, [v1, v2]


EXPERIMENT = core.Experiment(
    name="rethinking", notebook="04_rethinking", claims=("R1", "R2"), config=Config,
    profiles={
        "smoke": dict(width=4, train_size=256, test_size=128, seeds=2, pretrain_epochs=2, finetune_epochs=1,
                      batch_size=64),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", seeds=5, pretrain_epochs=160, finetune_epochs=40),
    },
    runs=runs, analyze=analyze, figures={"R1": "fig-rethinking-r1", "R2": "fig-rethinking-r2"},
    description="Fine-tuned vs Scratch-E/B on structured and unstructured targets (R1); winning ticket vs random "
                "re-init at two learning rates (R2).")
