"""05 magnitude (C4, C5): does shedding explain why GMP is hard to beat, and do cascade-aware schedules improve it?

Protocol (fixed before any of its results existed; the chapter states it in full):

- Dense models: the shared backbone (ResNet-8 w16 on 10,000 Fashion-MNIST images, chapter 02's recipe and its
  pretrains by key), one per seed.
- C4. Conditions: chapter 03's two fine-tuning points, `shed_point` and `cold_point`, `finetune_epochs` each.
  Arms per seed and condition: the unpruned control, and one-shot pruning by each of `criteria` (GMP first) at each
  of `fractions`. BatchNorm statistics are recomputed before every evaluation. Per pruned run: the cascade E of its
  own criterion's kept set (`analysis.decompose`), the removal accuracy (shed = below 5% of the layer's RMS), and
  `gmp_jaccard`, the Jaccard index of the weights in use against the set GMP keeps of the dense weights at the
  same density, before and after fine-tuning. gap = GMP's removal accuracy minus the criterion's (paired: one dense
  model); closing = gap(cold) - gap(shed).
  Premise: some non-GMP (criterion, fraction) cell has its E at the shed point with a 95% CI above `delta_e`, and
  the shed point survives (chapter 03's filter). Effect: per seed, the mean closing over the cells where the
  premise holds; reproduces when its CI lies above `delta` and those criteria's own removal accuracy does not fall
  from the cold to the shed point (CI of the change not below 0); does not reproduce when the CI lies below
  `delta`; not testable without the premise (then the cells are described: why GMP wins at our scale).
- C5. GMP to `target` sparsity under three pruning schedules, one-shot, gradual (Zhu & Gupta's cubic, an event
  every `prune_every` steps until `prune_end` of the steps) and cascade-aware (the same events; before each, the
  survivors that shed become pruned and GMP prunes only what the event's target lacks), each at two LR schedules:
  the shed point (cosine) and the same point with a constant LR (`constant_point`). Training compute: 3 x the
  kept MACs per image x the images seen, summed over the fine-tuning (the pretrain is shared and left out).
  Effect: cascade-aware minus gradual final test accuracy at the cosine point, per seed (paired). With the ratio
  of their training compute r (cascade-aware over gradual, per seed): reproduces when the accuracy CI lies above
  `delta` and r's CI does not exceed 1 + `compute_margin` (better at equal compute), or the accuracy CI lies above
  -`delta` and r's CI lies below 1 - `compute_margin` (as good at clearly less compute); does not reproduce when
  the accuracy CI lies below -`delta`, or below `delta` while r's CI does not reach below 1 - `compute_margin`;
  otherwise inconclusive. The constant-LR point gets the same statistics, with no verdict.
- Exploration, added after the results at `target` (the chapter discloses it): the same three schedules at each of
  `explore_targets`, for accuracy against final sparsity; no verdict reads them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from ..runs.finetune import SCHEDULES
from ..shedding import TrackerConfig
from . import backbone
from .backbone import SmallResNet

POINT = ["lr", "weight_decay", "schedule"]
CONDITIONS = ("shed", "cold", "constant")


@dataclass(frozen=True)
class Config(SmallResNet):
    criteria: tuple[str, ...] = ("gmp", "layerwise", "random")
    fractions: tuple[float, ...] = (0.8,)  # one heavy fraction: a second (0.5) would take the sweep past its budget
    shed_point: str = "0.1/0.005/cosine"  # chapter 03's shed point: chapter 02's control sheds most, accuracy survives
    cold_point: str = "0.1/0.0005/cosine"  # chapter 03's cold point: the control sheds nothing
    constant_point: str = "0.1/0.005/constant"  # C5's second LR schedule: the shed point without the cosine decay
    target: float = 0.8
    explore_targets: tuple[float, ...] = (0.9,)  # exploration, added after the results at `target`
    prune_every: int = 39  # steps between a schedule's events: half an epoch
    prune_end: float = 0.5
    finetune_epochs: int = 4
    record_every: int = 78
    effective: str = "rms:0.05"
    survival: float = 0.02
    delta: float = 0.01  # one accuracy point, as chapter 03
    delta_e: float = 0.1  # pruning sheds at least a tenth of the pruned fraction beyond the control, as chapter 03
    planned_sd: float = 0.01  # a difference of two accuracies of one dense model (chapter 03's per-seed SDs)
    compute_margin: float = 0.05  # "clearly less compute": at least 5% fewer training MACs
    budget_min: float = 45

    def __post_init__(self):
        super().__post_init__()
        if (not self.criteria or self.criteria[0] != "gmp" or not set(self.criteria) <= set(analysis.KEPT)
                or len(set(self.criteria)) < len(self.criteria)):
            raise ValueError(f"criteria={self.criteria!r} is invalid; allowed: 'gmp' first, then others of "
                             f"{', '.join(analysis.KEPT)}, each once")
        if not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions={self.fractions!r} are invalid; allowed: values in (0, 1)")
        if self.target not in self.fractions:
            raise ValueError(f"target={self.target!r} is invalid; allowed: one of fractions={self.fractions}")
        if not all(0 < t < 1 and t != self.target for t in self.explore_targets):
            raise ValueError(f"explore_targets={self.explore_targets!r} are invalid; allowed: values in (0, 1) other "
                             f"than target={self.target!r}")
        points = [backbone.parse_point(p) for p in (self.shed_point, self.cold_point, self.constant_point)]
        if len(set(points)) < 3:
            raise ValueError(f"shed_point, cold_point and constant_point are {self.shed_point!r}, "
                             f"{self.cold_point!r}, {self.constant_point!r}; allowed: three different points")
        for name in ("delta", "delta_e", "planned_sd", "survival", "compute_margin"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: a number > 0")

    def points(self) -> dict[str, tuple[float, float, str]]:
        return dict(zip(CONDITIONS, map(backbone.parse_point, (self.shed_point, self.cold_point,
                                                               self.constant_point))))

    def condition(self, lr: float, wd: float, schedule: str) -> str:
        return backbone.condition_of(self.points(), lr, wd, schedule)

    def tracker(self) -> TrackerConfig:
        """Chapter 02's decomposition measures for each criterion's kept set at each fraction, and `gmp_jaccard`."""
        return dataclasses.replace(backbone.decomposition_tracker(self.fractions, self.record_every),
                                   kept_random=self.fractions, kept_layerwise=self.fractions, gmp_jaccard=True,
                                   effective=self.effective, summaries=False)


def runs(cfg: Config) -> list[R.FinetuneRun]:
    out = []
    for seed in cfg.seed_list():
        pre = cfg.pretrain(seed)

        def arm(point: str, prune: R.PruneConfig, schedule: str = "one-shot") -> R.FinetuneRun:
            ft = cfg.finetune(seed, cfg.finetune_epochs, *cfg.points()[point])
            return R.FinetuneRun(pre, prune, ft, cfg.tracker(), recompute_bn=True, eval_every=cfg.finetune_epochs,
                                 schedule=schedule, **({} if schedule == "one-shot" else dict(
                                     prune_end=cfg.prune_end, prune_every=cfg.prune_every)))

        for point in ("shed", "cold"):
            out += [arm(point, R.PruneConfig("none", cfg.fractions[0], seed))]
            out += [arm(point, R.PruneConfig(c, f, seed)) for f in cfg.fractions for c in cfg.criteria]
        for t in (cfg.target, *cfg.explore_targets):  # one-shot at the shed point and `target` is C4's GMP arm
            gmp = R.PruneConfig("gmp", t, seed)
            out += [arm(p, gmp, s) for p in ("shed", "constant") for s in SCHEDULES
                    if (p, s, t) != ("shed", "one-shot", cfg.target)]
    return out


# ------------------------------------------------------------------------------------------------ analysis
def training_macs(rec: dict, batch: int) -> float:
    """3 x the kept MACs per image x the images seen (forward once, backward twice), over the fine-tuning's steps
    (its tracker's last record): the mask of a scheduled run changes at each event of its `prune_path` and is dense
    before the first."""
    res = rec["result"]
    steps = max(row[1] for row in res["tracker"])
    path = res.get("prune_path") or []
    edges = [0] + [p[0] for p in path] + [steps]
    kept = [res["macs"] if path else res["macs_kept"]] + [p[4] for p in path]
    return 3.0 * batch * sum((b - a) * m for a, b, m in zip(edges, edges[1:], kept))


def rows(cfg: Config, records) -> pd.DataFrame:
    """One row per fine-tuning run (`backbone.finetune_rows`: labels, `condition`, final global measures, the dense
    model's accuracy, `start_acc`, the accuracy before any SGD step: right after pruning for one-shot, the dense
    model's for a schedule), with its `prune_schedule` and `train_macs`."""
    ft = [(run, rec) for run, rec in records if run.kind == "finetune"]
    sched = {rec["key"]: run.schedule for run, rec in ft}
    macs = {rec["key"]: training_macs(rec, run.finetune.batch_size) for run, rec in ft}
    r = backbone.finetune_rows(cfg.points(), records)
    return r.assign(prune_schedule=r.key.map(sched), train_macs=r.key.map(macs))


def per_seed(dec: pd.DataFrame) -> pd.DataFrame:
    """Per condition, fraction and seed: each criterion's E, removal accuracy, Jaccard index to GMP's set (before
    and after fine-tuning) side by side, and each other criterion's gap (GMP minus its removal accuracy)."""
    t = dec.pivot_table(index=["condition", "fraction", "seed"], columns="criterion",
                        values=["cascade", "removal_acc", "effective_sparsity", "gmp_jaccard", "gmp_jaccard_start"])
    t.columns = [f"{m}_{c}" for m, c in t.columns]
    others = sorted({c for c in dec.criterion if c != "gmp"})
    return t.assign(**{f"gap_{c}": t.removal_acc_gmp - t[f"removal_acc_{c}"] for c in others}).reset_index()


def cells(cfg: Config, seeds: pd.DataFrame) -> pd.DataFrame:
    """Per non-GMP criterion, fraction and seed: its E at the shed point, the gap at both points, the closing
    gap(cold) - gap(shed), and its own and GMP's change of removal accuracy from the cold to the shed point."""
    out = []
    for c in cfg.criteria[1:]:
        g = seeds.pivot_table(index=["fraction", "seed"], columns="condition",
                              values=[f"cascade_{c}", f"gap_{c}", f"removal_acc_{c}", "removal_acc_gmp"])
        out.append(pd.DataFrame({
            "criterion": c, "e_shed": g[f"cascade_{c}"]["shed"], "gap_cold": g[f"gap_{c}"]["cold"],
            "gap_shed": g[f"gap_{c}"]["shed"], "closing": g[f"gap_{c}"]["cold"] - g[f"gap_{c}"]["shed"],
            "own_change": g[f"removal_acc_{c}"]["shed"] - g[f"removal_acc_{c}"]["cold"],
            "gmp_change": g["removal_acc_gmp"]["shed"] - g["removal_acc_gmp"]["cold"]}).reset_index())
    return pd.concat(out, ignore_index=True)


def premise_cells(cfg: Config, cell: pd.DataFrame) -> pd.DataFrame:
    """Per non-GMP criterion and fraction: the mean and 95% CI of its E at the shed point, and whether the CI lies
    above `delta_e` (C4's premise holds in that cell)."""
    est = cell.groupby(["criterion", "fraction"]).e_shed.apply(lambda v: stats.mean_ci(v.tolist()))
    out = pd.DataFrame(est.tolist(), index=est.index, columns=["e_shed", "e_lo", "e_hi"])
    return out.assign(sheds=out.e_lo > cfg.delta_e)


def schedules(cfg: Config, r: pd.DataFrame) -> pd.DataFrame:
    """C5's runs: per final sparsity (`target`, then the exploration's), LR schedule ("cosine" at the shed point,
    "constant"), seed and pruning schedule, the final test accuracy, its removal accuracy, the mask's sparsity and
    the training MACs."""
    s = r[(r.criterion == "gmp") & r.fraction.isin([cfg.target, *cfg.explore_targets])
          & r.condition.isin(["shed", "constant"])]
    s = s.assign(lr_schedule=s.condition.map({"shed": "cosine", "constant": "constant"}))
    return s[["fraction", "lr_schedule", "seed", "prune_schedule", "test_acc", "removal_acc", "effective_sparsity",
              "pruned", "train_macs"]].sort_values(["fraction", "lr_schedule", "prune_schedule", "seed"]).reset_index(
        drop=True)


def paired(sched: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per final sparsity, LR schedule and seed: pruning schedule `a` minus `b` in final test accuracy, and a's
    training MACs over b's (both from the seed's dense model: paired)."""
    t = sched.pivot_table(index=["fraction", "lr_schedule", "seed"], columns="prune_schedule",
                          values=["test_acc", "train_macs"])
    return pd.DataFrame({"accuracy": t.test_acc[a] - t.test_acc[b],
                         "compute": t.train_macs[a] / t.train_macs[b]}).reset_index()


def c5_word(cfg: Config, acc: tuple[float, float], ratio: tuple[float, float]) -> str:
    """C5's rule (module docstring) from the accuracy difference's and the compute ratio's 95% CIs."""
    (lo, hi), (rlo, rhi), d, m = acc, ratio, cfg.delta, cfg.compute_margin
    if (lo > d and rhi <= 1 + m) or (lo > -d and rhi < 1 - m):
        return "reproduces"
    if hi < -d or (hi < d and rlo >= 1 - m):
        return "does not reproduce"
    return "inconclusive"


def verdicts(cfg: Config, cell: pd.DataFrame, prem: pd.DataFrame, alive: pd.Series, pairs: pd.DataFrame) -> list:
    where = f"{cfg.model} w{cfg.width}, {cfg.shed_point} against {cfg.cold_point}, {cfg.finetune_epochs} epochs"
    best = prem.e_lo.idxmax()  # the cell whose CI reaches highest: present exactly when it clears delta_e
    found = stats.Premise(f"the cascade E at the shed point whose CI reaches highest among "
                          f"{', '.join(cfg.criteria[1:])} ({best[0]}, f = {best[1]:g})", float(prem.e_shed[best]),
                          (float(prem.e_lo[best]), float(prem.e_hi[best])), cfg.delta_e, bool(prem.sheds.any()))
    premise = found.surviving(bool(alive.get("shed", False)))
    chosen = prem.index[prem.sheds] if prem.sheds.any() else prem.index
    use = cell.set_index(["criterion", "fraction"]).loc[list(chosen)].groupby("seed")[["closing", "own_change"]].mean()
    v4 = stats.verdict(
        "C4", use.closing.tolist(), cfg.delta,
        "C4 {word}: at the shed point, fine-tuning closes {mean:+.3f} of the criteria's accuracy gap to GMP, "
        f"relative to the cold point (95% CI {{lo:.3f}} to {{hi:.3f}}, n={{n}} seeds; δ = {cfg.delta:g}), averaged "
        f"over {', '.join(f'{c} f = {f:g}' for c, f in chosen)}"
        f"{' (the cells where pruning makes them shed)' if prem.sheds.any() else ' (no cell sheds: all of them)'}.",
        condition=where, premise=premise, planned_sd=cfg.planned_sd, units="points")
    v4 = stats.unless_own_falls(v4, use.own_change, "the criteria's")
    cos = pairs[(pairs.lr_schedule == "cosine") & (pairs.fraction == cfg.target)].sort_values("seed")
    acc, ratio = stats.mean_ci(cos.accuracy.tolist()), stats.mean_ci(cos.compute.tolist())
    word = c5_word(cfg, acc[1:], ratio[1:])
    spoken = stats.SPOKEN[word]
    v5 = stats.verdict(
        "C5", cos.accuracy.tolist(), cfg.delta,
        f"C5 {spoken}: the cascade-aware schedule's final test accuracy minus gradual GMP's is {{mean:+.4f}} (95% CI "
        f"{{lo:.4f}} to {{hi:.4f}}, n={{n}} seeds; δ = {cfg.delta:g}) at {cfg.target:g} sparsity, with "
        f"{ratio[0]:.3f} of its training compute (95% CI {ratio[1]:.3f} to {ratio[2]:.3f}; margin "
        f"{cfg.compute_margin:g}).",
        condition=f"{cfg.model} w{cfg.width}, GMP to {cfg.target:g}, {cfg.shed_point}, {cfg.finetune_epochs} epochs, "
                  f"an event every {cfg.prune_every} steps until {cfg.prune_end:g} of them",
        planned_sd=cfg.planned_sd, units="points")
    rule = (f"reproduces when the accuracy CI lies above δ = {cfg.delta:g} at a compute ratio whose CI stays below "
            f"1 + {cfg.compute_margin:g}, or above −δ at a ratio whose CI lies below 1 − {cfg.compute_margin:g}; "
            "does not when the accuracy CI lies below −δ, or below δ while the ratio's CI does not reach below "
            f"1 − {cfg.compute_margin:g}; inconclusive otherwise")
    head = v5.direction.split("; ")[0]
    v5 = dataclasses.replace(v5, word=word, rule=rule, direction=(
        f"{head}; the accuracy's 95% CI is {acc[1] * 100:+.3g} to {acc[2] * 100:+.3g} points at a compute ratio of "
        f"{ratio[0]:.3f} (95% CI {ratio[1]:.3f} to {ratio[2]:.3f}), so it "
        f"{'is inconclusive' if word == 'inconclusive' else word}"))
    return [v4, v5]


def analyze(cfg: Config, records) -> tuple[dict, list]:
    r = rows(cfg, records)
    one = r[(r.prune_schedule == "one-shot") & r.condition.isin(["shed", "cold"]) & r.fraction.isin(cfg.fractions)]
    dec = analysis.decompose(one, POINT)
    alive = backbone.survives(r[r.criterion == "none"], "condition", cfg.survival)
    seeds = per_seed(dec)
    cell = cells(cfg, seeds)
    prem = premise_cells(cfg, cell)
    sched = schedules(cfg, r)
    pairs = paired(sched, "cascade", "gradual")
    tables = {"rows": r, "decomposition": dec, "survives": alive, "per_seed": seeds, "cells": cell,
              "premise": prem, "schedules": sched, "pairs": pairs, "dense": analysis.dense_frame(records)}
    return tables, verdicts(cfg, cell, prem, alive, pairs)


EXPERIMENT = core.Experiment(
    name="magnitude", notebook="05_magnitude", claims=("C4", "C5"), config=Config,
    profiles={
        "smoke": dict(width=4, train_size=256, test_size=128, seeds=2, pretrain_epochs=1, batch_size=64,
                      fractions=(0.5,), target=0.5, explore_targets=(0.7,), finetune_epochs=2, record_every=2,
                      prune_every=1,
                      shed_point="0.3/0.005/cosine", cold_point="0.03/0.0005/cosine",
                      constant_point="0.3/0.005/constant"),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", seeds=5, pretrain_epochs=60, finetune_epochs=20,
                                                record_every=0, prune_every=0),
    },
    runs=runs, analyze=analyze, figures={"C4": "fig-magnitude-closing", "C5": "fig-magnitude-schedules"},
    description="Prune the shared ResNet-8 with GMP, layerwise magnitude and random, fine-tune where the control "
                "sheds and where it does not, and compare one-shot, gradual and cascade-aware GMP schedules at "
                "two LR schedules.")
