"""07 regimes (T1, T2, T3): does the dense model's training temperature help or hurt pruning depending on the load,
do linear mode connectivity and output similarity tell three regimes apart, and do the regimes predict what to do?

Protocol (fixed before any of its results existed; the chapter will state it in full):

- Dense models, per seed, three temperatures: `cold`, the shared backbone (chapter 02's pretrains by key: ResNet-8
  w16, 10,000 Fashion-MNIST images, cosine from LR 0.1, weight decay 5e-4, 20 epochs, 1,560 SGD steps); `short`,
  the same recipe compressed into `hot_epochs` (390 steps); `sam`, `short` with SAM at radius `sam_rho` (BatchNorm
  statistics frozen in the perturbed pass, so they move once per step, as in Zhou et al.'s code). Fewer epochs and a
  larger rho are hotter (Zhou et al.). Every dense model runs its own schedule to its end, so the length knob
  compares finished cosine decays: it is not confounded with a first LR decay, as the paper's checkpoint epochs
  are (all of theirs up to epoch 80 are at LR 0.1); it cannot separate the number of steps from the steps spent
  at each LR, which scale together.
- Load: layer-uniform magnitude pruning (`layerwise`) of every conv but the stem to each of `densities`, one-shot
  from the trained dense weights; the stem conv and the classifier stay dense (Zhou et al. prune the stem too; at a
  few percent ours would keep 4 of its 144 weights, and retrains collapsed to chance in a quick check). Density is
  over the pruned convs.
- Retraining: the dense recipe compressed into `retrain_epochs` (312 SGD steps: cosine from 0.1, weight decay
  5e-4), from the pruned trained weights (Zhou et al.'s full-schedule retraining, i.e. LR rewinding to epoch 0), the
  same for every temperature; `copies` retrains per cell that differ only in their data order (seeds
  s + k x `copy_seed`, k = 1, 2: neither replays the dense run's order). BatchNorm statistics are recomputed before
  every evaluation. A cell's test error is the mean of its copies' final test errors on the same 2,000 test images
  for every seed and cell (test-sampling noise is left out of the CIs).
- T1. Per seed and density d: Δ(d) = err(short) - err(cold), the length knob's temperature effect (positive:
  heating hurts). The interaction I = Δ(high d) - Δ(low d). The paper: heating helps at low density and hurts at
  moderate density, so I > 0. Reproduces when I's 95% CI lies above `delta_t1`, does not when it lies below,
  inconclusive otherwise. The sign flip is reported apart: it is shown when Δ(low d)'s CI lies below 0 and
  Δ(high d)'s above 0; an interaction with Δ of one sign at both densities reproduces the interaction, not the flip.
  With one hot length and two densities, "where it flips" can only be "between them" (the paper's flip is at
  8-14% density). Our knob is not the paper's: under-trained but annealed, not stopped at a high LR, so a null
  result cannot tell "no transition" from "another knob". The SAM knob, Δ_sam(d) = err(sam) - err(short), and its
  interaction are reported beside it and feed T3 (no T1 verdict reads them).
- T2. Per cell and seed, a `compare` of the two copies: Zhou et al.'s signed barrier on training error (11 points,
  BatchNorm recomputed at each, on the first `compare_images` training images) and linear CKA of the softmax
  outputs on the same images, in float64. `cka_b` is taken from the paper's CIFAR-10 range before any of our
  values exist; the chapter reports where our CKA values fall, and the two-label agreement (I against II, which
  reads only `barrier_i`) beside the three-label one. Labels, fixed here: regime I when the signed barrier < -`barrier_i` (the
  path's training error rises more than that above the ends' mean); otherwise II-B when CKA >= `cka_b`, else II-A.
  Predicted labels (the paper's map: the cold, low-density corner is poorly connected; hotter models at moderate
  density are connected but dissimilar; the cold model at moderate density is connected and similar):
  I for (cold, low d); II-A for (short, low d), (sam, low d), (short, high d), (sam, high d); II-B for (cold,
  high d). Per seed: agreement = the share of the six cells whose label matches. Reproduces when the mean
  agreement's 95% CI lies above `agreement_min` (4 of 6: what labelling every cell II-A scores), does not when it
  lies below, inconclusive otherwise; with no spread over seeds the CI is the point, and a point at
  `agreement_min` is inconclusive. Premise: the labels vary (not one label in all 24 cell-seed pairs), else not
  testable. Whether the map lines up with T1's transition is T3's first study (the cold cell's label against the
  sign of Δ at each density).
- T3, three studies, each a prediction of the regime model that comes true when its statistic's 95% CI lies above
  its δ, false when it lies below, undecided otherwise. A cell's label below is the seed-majority label (ties: I).
  1. Direction: at each density, from the cold cell's label: regime I predicts heating helps (statistic -Δ(d)),
     regime II predicts it hurts (statistic Δ(d)); δ = `delta_dir`. Two predictions; they read T1's Δ, so T3 is
     not evidence independent of T1.
  2. Selection: per seed and density, among the three dense models choose the one to prune by training-set
     measures only: the connected ones (signed barrier >= -`barrier_i`) with the largest CKA, or, with none
     connected, the largest signed barrier. Regret = its cell's test error minus the family's best. Statistic: per
     seed, the smaller of the two baselines' mean regret (the best dense test accuracy; the longest-trained model)
     minus the rule's, over densities; δ = `delta_sel`. One prediction; not testable when the rule picks what the
     better baseline picks in every seed and density (the statistic is then 0 by construction). The rule reads
     the pruned and retrained copies of every member, so it selects with more information than the baselines.
  3. SAM's rho at the low density: from the short model's label there, regime I predicts that rho helps
     (statistic -Δ_sam(low d)), regime II that it hurts (statistic Δ_sam(low d)); δ = `delta_dir`. One prediction.
     SAM sits on the short recipe, not the cold one (SAM on 20 epochs would cost 27 more minutes): the paper's case,
     rho rescuing a regime-I model, is tested only if the short model's low-density cell is labelled I.
  Verdict T3: reproduces when more than half of the testable predictions came true, does not when more than half
  came out false, inconclusive otherwise (and not testable with none testable).
- Exploration (no verdict): the tracker during every first-copy retrain, and an unpruned control per seed for the
  cold and short temperatures retrained alike (none for sam: the budget); cascade E of the layer-uniform kept set (`analysis.decompose`) and the excess share of
  survivors below 5% of their layer's RMS, drawn on the regime map.
- Power: the sizing check in `protocols.md` put the per-seed SD of I near 0.008 (one retrain per cell, 10,000 test
  images); with 2,000 test images and two copies we plan on 0.012. With 4 seeds the expected half-width is
  t(3) x 0.012 / 2 = 0.019 <= `delta_t1`, with almost no margin: if the measured half-width exceeds `delta_t1`, the
  verdict can only be inconclusive unless |I| is at least that half-width, and no seeds are added. `delta_t1` is
  0.02, about half the paper's interaction (2-3 points at low density, 1-2 at moderate, of opposite signs).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from ..shedding import TrackerConfig
from . import backbone
from .backbone import SmallResNet

TEMPERATURES = ("cold", "short", "sam")  # coldest first
REGIMES = ("I", "II-A", "II-B")


@dataclass(frozen=True)
class Config(SmallResNet):
    seeds: int = 4  # the power rule: t(3) x 0.012 / 2 = 0.019 <= delta_t1
    densities: tuple[float, ...] = (0.03, 0.3)  # low first: a few percent (Zhou et al.'s barrier), and moderate
    hot_epochs: int = 5  # `short`: a quarter of the backbone's 20 epochs
    sam_rho: float = 0.5  # the middle of Zhou et al.'s 0.1-0.8
    retrain_epochs: int = 4  # 312 SGD steps, as chapters 03, 05 and 06
    copies: int = 2
    copy_seed: int = 1000  # copy k (0-based) retrains with data-order seed s + (k + 1) * copy_seed
    compare_points: int = 11
    compare_images: int = 2000  # the floor for CKA; eleven passes over all 10,000 cost more than the retrains
    barrier_i: float = 0.05  # regime I: the path's training error rises 5 points above its ends' mean
    cka_b: float = 0.95  # II-B at or above: the middle of the paper's 0.88-0.98 range, fixed before any result
    delta_t1: float = 0.02  # about half the paper's interaction
    delta_dir: float = 0.01  # one point of test error, as chapters 03, 05 and 06
    delta_sel: float = 0.005  # half a point of regret
    agreement_min: float = 2 / 3  # four of the six cells: labelling every cell II-A
    planned_sd: float = 0.012  # of I per seed, from the sizing check (see Power)
    budget_min: float = 75

    def __post_init__(self):
        super().__post_init__()
        d = self.densities
        if len(d) < 2 or not all(0 < x < 1 for x in d) or list(d) != sorted(set(d)):
            raise ValueError(f"densities={d!r} are invalid; allowed: two or more increasing values in (0, 1)")
        for name in ("hot_epochs", "retrain_epochs", "copies", "compare_points"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (2 if name in ("copies", "compare_points") else 1):
                raise ValueError(f"{name}={v!r} is invalid; allowed: an int >= "
                                 f"{2 if name in ('copies', 'compare_points') else 1}")
        if not self.hot_epochs < self.pretrain_epochs:
            raise ValueError(f"hot_epochs={self.hot_epochs!r} is invalid; allowed: below pretrain_epochs="
                             f"{self.pretrain_epochs}")
        if not 0 < self.cka_b < 1 or not 0 < self.agreement_min < 1:
            raise ValueError(f"cka_b={self.cka_b!r}, agreement_min={self.agreement_min!r} are invalid; allowed: "
                             "values in (0, 1)")
        for name in ("sam_rho", "barrier_i", "delta_t1", "delta_dir", "delta_sel", "copy_seed"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: a number > 0")

    def dense(self, seed: int, temperature: str) -> R.PretrainRun:
        """The seed's dense model at `temperature` (`cold` is the shared backbone, by key)."""
        pre = self.pretrain(seed)
        if temperature == "cold":
            return pre
        if temperature not in TEMPERATURES:
            raise ValueError(f"temperature={temperature!r} is invalid; allowed: {', '.join(TEMPERATURES)}")
        sam = dict(optimizer="sam", sam_rho=self.sam_rho) if temperature == "sam" else {}
        return dataclasses.replace(pre, train=dataclasses.replace(pre.train, epochs=self.hot_epochs, **sam))

    def tracker(self) -> TrackerConfig:
        """Chapter 02's decomposition measures for the layer-uniform kept set at each pruned fraction."""
        fractions = tuple(round(1 - d, 10) for d in self.densities)
        return dataclasses.replace(backbone.decomposition_tracker(fractions), kept_layerwise=fractions,
                                   summaries=False)

    def prune(self, seed: int, density: float, criterion: str = "layerwise") -> R.PruneConfig:
        return R.PruneConfig(criterion, round(1 - density, 10), seed, include_first=False, include_last=False)

    def retrain(self, seed: int, temperature: str, density: float, copy: int = 0,
                criterion: str = "layerwise") -> R.FinetuneRun:
        """One retrain of the cell: the compressed dense recipe from the pruned trained weights (the first copy
        tracked)."""
        ft = self.finetune(seed + (copy + 1) * self.copy_seed, self.retrain_epochs, self.pretrain_lr,
                           self.pretrain_weight_decay, "cosine")
        tracker = self.tracker() if copy == 0 else TrackerConfig()
        return R.FinetuneRun(self.dense(seed, temperature), self.prune(seed, density, criterion), ft, tracker,
                             recompute_bn=True, eval_every=self.retrain_epochs)

    def compare(self, seed: int, temperature: str, density: float) -> R.CompareRun:
        a, b = (self.retrain(seed, temperature, density, k) for k in range(2))
        return R.CompareRun(a, b, points=self.compare_points, images=self.compare_images)


def runs(cfg: Config) -> list[R.Run]:
    """Per seed and temperature: the copies of every cell, their comparison, and (cold and short) the unpruned
    control (pruned nothing, at the lowest density's fraction for the tracker's thresholds)."""
    out: list[R.Run] = []
    for seed in cfg.seed_list():
        for t in TEMPERATURES:
            for d in cfg.densities:
                out += [cfg.retrain(seed, t, d, k) for k in range(cfg.copies)]
                out += [cfg.compare(seed, t, d)]
            if t != "sam":
                out += [cfg.retrain(seed, t, cfg.densities[0], criterion="none")]
    return out


# ------------------------------------------------------------------------------------------------ rules
def regime(signed_barrier: float, cka: float, barrier_i: float, cka_b: float) -> str:
    """The pre-registered label of one comparison."""
    if signed_barrier < -barrier_i:
        return "I"
    return "II-B" if cka >= cka_b else "II-A"


def predicted(temperature: str, low: bool) -> str:
    """The paper's label for a cell: the cold, low-density corner is I; the cold model at moderate density II-B;
    hotter models II-A."""
    if temperature == "cold":
        return "I" if low else "II-B"
    return "II-A"


def majority(labels) -> str:
    """The most frequent label (ties go to I, then II-A: the order of `REGIMES`)."""
    labels = list(labels)
    counts = {r: labels.count(r) for r in REGIMES}
    return max(REGIMES, key=lambda r: (counts[r], -REGIMES.index(r)))


def select(members: dict[str, tuple[float, float]], barrier_i: float) -> str:
    """The dense model to prune, from {temperature: (signed barrier, CKA)} of its pruned copies: the connected ones
    with the largest CKA, or with none connected the largest signed barrier (ties: the colder)."""
    connected = {t: v for t, v in members.items() if v[0] >= -barrier_i}
    order = {t: -TEMPERATURES.index(t) for t in members}
    if connected:
        return max(connected, key=lambda t: (connected[t][1], order[t]))
    return max(members, key=lambda t: (members[t][0], order[t]))


def interaction(delta: dict[float, float]) -> float:
    """Δ at the highest density minus Δ at the lowest."""
    d = sorted(delta)
    return float(delta[d[-1]] - delta[d[0]])


# ------------------------------------------------------------------------------------------------ analysis
def cells(cfg: Config, records) -> pd.DataFrame:
    """One row per seed, temperature and density: each copy's final test error, their mean (`err`), the copies'
    signed barrier and CKA, the regime label and the predicted one."""
    stored = dict(records)
    out = []
    for seed in cfg.seed_list():
        for t in TEMPERATURES:
            for d in cfg.densities:
                errs = [1 - stored[cfg.retrain(seed, t, d, k)]["result"]["final"]["test_acc"]
                        for k in range(cfg.copies)]
                c = stored[cfg.compare(seed, t, d)]["result"]
                b = c["barrier_signed_train_err"]
                out.append({"seed": seed, "temperature": t, "density": d, "err": sum(errs) / len(errs),
                            **{f"err_{k}": e for k, e in enumerate(errs)}, "barrier": b, "cka": c["cka"],
                            "agreement": c["agreement"], "label": regime(b, c["cka"], cfg.barrier_i, cfg.cka_b),
                            "predicted": predicted(t, d == cfg.densities[0])})
    return pd.DataFrame(out)


def effects(cfg: Config, cell: pd.DataFrame) -> pd.DataFrame:
    """Per seed and density: Δ = err(short) - err(cold) and Δ_sam = err(sam) - err(short)."""
    e = cell.pivot_table(index=["seed", "density"], columns="temperature", values="err")
    return pd.DataFrame({"delta": e.short - e.cold, "delta_sam": e.sam - e.short}).reset_index()


def interactions(cfg: Config, eff: pd.DataFrame) -> pd.DataFrame:
    """Per seed: I = Δ(highest density) - Δ(lowest), and the same for Δ_sam."""
    g = eff.groupby("seed")
    return pd.DataFrame({c: g.apply(lambda s, c=c: interaction(dict(zip(s.density, s[c])))) for c in
                         ("delta", "delta_sam")}).rename(columns=lambda c: c.replace("delta", "I")).reset_index()


def by_density(eff: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per density: the mean of `value` over seeds with its 95% CI."""
    est = eff.groupby("density")[value].apply(lambda v: stats.mean_ci(v.tolist()))
    return pd.DataFrame(est.tolist(), index=est.index, columns=[value, "lo", "hi"])


def flip(cfg: Config, eff: pd.DataFrame) -> dict:
    """The sign flip, reported apart from T1's verdict: shown when Δ's CI lies below 0 at the lowest density and
    above 0 at the highest."""
    t = by_density(eff, "delta")
    low, high = t.loc[cfg.densities[0]], t.loc[cfg.densities[-1]]
    return {"shown": bool(low.hi < 0 < high.lo), "low": low.to_dict(), "high": high.to_dict()}


def by_cell(cfg: Config, cell: pd.DataFrame) -> pd.DataFrame:
    """Per temperature and density: the mean error, CKA and barrier, the seed-majority label, the predicted one
    and the number of seeds whose label matches the prediction."""
    g = cell.groupby(["temperature", "density"], sort=False)
    return pd.DataFrame({"err": g.err.mean(), "cka": g.cka.mean(), "barrier": g.barrier.mean(),
                         "label": g.label.apply(majority), "predicted": g.predicted.first(),
                         "matches": g.apply(lambda s: int((s.label == s.predicted).sum())),
                         "seeds": g.size()}).reset_index()


def grid(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """`value` of a per-(temperature, density) frame as a density x temperature grid, coldest first."""
    return frame.pivot(index="density", columns="temperature", values=value)[list(TEMPERATURES)]


def transitions(eff: pd.DataFrame) -> list[int]:
    """The density rows i after which the mean Δ changes sign (T1's transition lies between rows i and i + 1)."""
    m = eff.groupby("density").delta.mean().to_numpy()
    return [i for i in range(len(m) - 1) if (m[i] > 0) != (m[i + 1] > 0)]


def t1_verdict(cfg: Config, inter: pd.DataFrame, eff: pd.DataFrame) -> stats.Verdict:
    t, f = by_density(eff, "delta"), flip(cfg, eff)
    lo, hi = cfg.densities[0], cfg.densities[-1]
    summary = (f"T1 {{word}}: shortening the dense schedule ({cfg.pretrain_epochs} to {cfg.hot_epochs} epochs) changes "
               f"the retrained test error by {t.delta[hi]:+.4f} at density {hi:g} and {t.delta[lo]:+.4f} at "
               f"{lo:g}; the interaction is {{mean:+.4f}} (95% CI {{lo:.4f}} to {{hi:.4f}}, n={{n}} seeds; δ = "
               f"{cfg.delta_t1:g}); the sign flip is {'shown' if f['shown'] else 'not shown'}.")
    return stats.verdict("T1", inter.I.tolist(), cfg.delta_t1, summary, planned_sd=cfg.planned_sd, units="points",
                         condition=f"{cfg.model} w{cfg.width}, layer-uniform magnitude to {lo:g} and {hi:g} density, "
                                   f"{cfg.retrain_epochs}-epoch cosine retraining")


def t2_verdict(cfg: Config, cell: pd.DataFrame) -> stats.Verdict:
    share = cell.assign(hit=cell.label == cell.predicted).groupby("seed").hit.mean()
    labels = sorted(set(cell.label))
    premise = stats.Premise(f"the labels in use over all {len(cell)} cell-seed pairs: {', '.join(labels)}",
                            None, (None, None), 2, len(labels) >= 2)
    return stats.verdict(
        "T2", share.tolist(), cfg.agreement_min,
        f"T2 {{word}}: the share of the {cell.groupby(['temperature', 'density']).ngroups} cells per seed whose "
        f"pre-registered regime label matches the paper's predicted map is {{mean:.3f}} on average (95% CI "
        f"{{lo:.3f}} to {{hi:.3f}}, n={{n}} seeds; δ = {cfg.agreement_min:.3g}, what labelling every cell II-A "
        "scores).",
        premise=premise, condition=f"signed barrier < -{cfg.barrier_i:g}: I; else CKA >= {cfg.cka_b:g}: II-B; "
                                   f"else II-A ({cfg.compare_points} points, {cfg.compare_images} training images)")


def two_labels(cell: pd.DataFrame) -> pd.Series:
    """Per seed: the share of cells whose I-or-II label matches the prediction's (reads only `barrier_i`)."""
    hit = (cell.label == "I") == (cell.predicted == "I")
    return cell.assign(hit=hit).groupby("seed").hit.mean()


def choices(cfg: Config, cell: pd.DataFrame, dense: pd.DataFrame) -> pd.DataFrame:
    """Per seed and density, T3's selection: the rule's pick and the baselines' (the best dense test accuracy;
    the longest-trained model, `cold`), each with its regret (its cell's error minus the family's best)."""
    acc = dense.set_index(["seed", "temperature"]).test_acc
    out = []
    for (seed, d), g in cell.groupby(["seed", "density"]):
        g = g.set_index("temperature")
        picks = {"rule": select({t: (g.barrier[t], g.cka[t]) for t in g.index}, cfg.barrier_i),
                 "best_dense": max(g.index, key=lambda t: (acc[(seed, t)], -TEMPERATURES.index(t))),
                 "longest": TEMPERATURES[0]}
        out.append({"seed": seed, "density": d, **picks,
                    **{f"regret_{k}": g.err[t] - g.err.min() for k, t in picks.items()}})
    return pd.DataFrame(out)


def selection(cfg: Config, chosen: pd.DataFrame) -> tuple[list[float], bool]:
    """Per seed: the better baseline's mean regret minus the rule's (over densities); and whether the study is
    testable (the rule does not always pick what a better baseline picks)."""
    values, same = [], []
    for _, g in chosen.groupby("seed"):
        regret = {k: g[f"regret_{k}"].mean() for k in ("rule", "best_dense", "longest")}
        better = min(regret["best_dense"], regret["longest"])
        values.append(better - regret["rule"])
        same.append(any(regret[k] == better and (g.rule == g[k]).all() for k in ("best_dense", "longest")))
    return values, not all(same)


def predictions(cfg: Config, cell: pd.DataFrame, eff: pd.DataFrame, chosen: pd.DataFrame) -> list[stats.Verdict]:
    """T3's predictions, each a verdict of its own: reproduces means it came true."""
    labels = by_cell(cfg, cell).set_index(["temperature", "density"]).label
    out = []
    for d in cfg.densities:
        label = labels[("cold", d)]
        sign = -1 if label == "I" else 1
        text = "heating helps" if label == "I" else "heating hurts"
        values = (sign * eff[eff.density == d].delta).tolist()
        out.append(stats.verdict("T3", values, cfg.delta_dir, f"direction at density {d:g}: cold cell {label}, so "
                                 f"{text}", units="points", condition=f"statistic {'-' if sign < 0 else ''}Δ({d:g})"))
    values, testable = selection(cfg, chosen)
    premise = stats.Premise("the rule picks other models than the better baseline", None, (None, None), 0, testable)
    out.append(stats.verdict("T3", values, cfg.delta_sel, "selection: the rule's regret is below the better "
                             "baseline's", units="points", premise=premise,
                             condition="better baseline's mean regret minus the rule's"))
    low = cfg.densities[0]
    label = labels[("short", low)]
    sign = -1 if label == "I" else 1
    values = (sign * eff[eff.density == low].delta_sam).tolist()
    out.append(stats.verdict("T3", values, cfg.delta_dir, f"SAM at density {low:g}: short cell {label}, so rho "
                             f"{'helps' if sign < 0 else 'hurts'}", units="points",
                             condition=f"statistic {'-' if sign < 0 else ''}Δ_sam({low:g})"))
    return out


def prediction_table(preds: list[stats.Verdict]) -> pd.DataFrame:
    """One row per T3 prediction: what it predicts, its statistic with its CI and δ, and its outcome."""
    return pd.DataFrame([{"prediction": p.summary, "statistic": p.condition, "effect": p.effect, "lo": p.ci95[0],
                          "hi": p.ci95[1], "delta": p.delta, "outcome": stats.OUTCOME[p.word], "direction": p.direction}
                         for p in preds])


def t3_verdict(cfg: Config, preds: list[stats.Verdict]) -> stats.Verdict:
    """The tally of T3's predictions, each told with its statistic's estimate, so the summary states sizes."""
    told = [(f"{p.summary} ({p.condition.removeprefix('statistic ')} = {p.effect:+.4f}, 95% CI {p.ci95[0]:+.4f} "
             f"to {p.ci95[1]:+.4f}; δ = {p.delta:g})" if p.ci95[0] is not None else p.summary, p.word) for p in preds]
    return stats.tally("T3", told, condition=(
        f"{len(preds)} predictions (n counts them) of the seed-majority labels: direction at "
        f"{len(cfg.densities)} densities, "
        f"selection among {len(TEMPERATURES)} dense models, SAM (rho {cfg.sam_rho:g}) at {cfg.densities[0]:g}"))


def exploration(cfg: Config, records) -> pd.DataFrame:
    """Cascade E of the layer-uniform kept set, temperature shedding (`temperature_shed`, the control's D - f) and
    the excess share of survivors below 5% of their layer's RMS, per tracked retrain against its temperature's
    unpruned control (`analysis.decompose`; sam has no control, so NaN)."""
    key = {}
    for seed in cfg.seed_list():
        for t in TEMPERATURES:
            key |= {cfg.retrain(seed, t, d).key: t for d in cfg.densities}
            key[cfg.retrain(seed, t, cfg.densities[0], criterion="none").key] = t
    stored = dict(records)
    acc = {run.key: stored[run.pretrain]["result"]["final"]["test_acc"] for run, _ in records
           if run.kind == "finetune"}
    rows = analysis.final_rows([(r, rec) for r, rec in records if r.kind == "finetune" and r.key in key])
    rows = rows.assign(heat=rows.key.map(key), dense_acc=rows.key.map(acc))
    dec = analysis.decompose(rows, ["heat"])  # its `temperature` is chapter 02's temperature shedding
    dec = dec.rename(columns={"temperature": "temperature_shed", "heat": "temperature"})
    return dec.assign(density=(1 - dec.fraction).round(10))


def controlled(cfg: Config, records, eff: pd.DataFrame) -> pd.DataFrame:
    """Per seed and density (added after the results, not a verdict): Δ_control, the unpruned controls' test error
    of the short model minus the cold one's (retrained alike), and Δ - Δ_control, the part of the temperature effect
    that the pruned cells add to it."""
    stored = dict(records)
    err = {(s, t): 1 - stored[cfg.retrain(s, t, cfg.densities[0], criterion="none")]["result"]["final"]["test_acc"]
           for s in cfg.seed_list() for t in TEMPERATURES[:2]}
    control = eff.seed.map(lambda s: err[(s, "short")] - err[(s, "cold")])
    return eff[["seed", "density", "delta"]].assign(delta_control=control, delta_pruning=eff.delta - control)


def dense_models(cfg: Config, records) -> pd.DataFrame:
    """Per seed and temperature: the dense model's final test accuracy and SGD steps."""
    stored = dict(records)
    return pd.DataFrame([{"seed": s, "temperature": t, "test_acc": stored[run]["result"]["final"]["test_acc"],
                          "epochs": run.train.epochs, "optimizer": run.train.optimizer}
                         for s in cfg.seed_list() for t in TEMPERATURES for run in [cfg.dense(s, t)]])


def analyze(cfg: Config, records) -> tuple[dict, list]:
    cell = cells(cfg, records)
    eff = effects(cfg, cell)
    inter = interactions(cfg, eff)
    dense = dense_models(cfg, records)
    chosen = choices(cfg, cell, dense)
    preds = predictions(cfg, cell, eff, chosen)
    two = two_labels(cell)
    tables = {"cells": cell, "effects": eff, "interactions": inter, "delta": by_density(eff, "delta"),
              "delta_sam": by_density(eff, "delta_sam"), "controlled": controlled(cfg, records, eff),
              "map": by_cell(cfg, cell), "dense": dense, "choices": chosen, "predictions": prediction_table(preds),
              "exploration": exploration(cfg, records),
              "two_labels": pd.DataFrame([stats.mean_ci(two.tolist())], columns=["agreement", "lo", "hi"]),
              "flip": pd.DataFrame([flip(cfg, eff)["shown"]], columns=["shown"])}
    return tables, [t1_verdict(cfg, inter, eff), t2_verdict(cfg, cell), t3_verdict(cfg, preds)]


EXPERIMENT = core.Experiment(
    name="regimes", notebook="07_regimes", claims=("T1", "T2", "T3"), config=Config,
    profiles={
        "smoke": dict(width=4, train_size=256, test_size=128, seeds=2, pretrain_epochs=2, hot_epochs=1,
                      batch_size=64, retrain_epochs=1, compare_points=3, compare_images=128),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="preresnet20", seeds=4, pretrain_epochs=160, hot_epochs=40,
                                                retrain_epochs=160, densities=(0.02, 0.05, 0.1, 0.2, 0.4)),
    },
    runs=runs, analyze=analyze, figures={"T1": "fig-regimes-t1", "T2": "fig-regimes-map", "T3": "fig-regimes-t3"},
    description="Prune dense ResNet-8s of three training temperatures (the shared 20-epoch backbone, a 5-epoch "
                "schedule, and the 5-epoch one with SAM) layer-uniformly to a low and a moderate density, retrain "
                "each twice, and read the temperature x load map of error, LMC barrier and CKA against the "
                "three-regime model's predictions; track shedding against unpruned controls.")
