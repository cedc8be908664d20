"""06 rewinding (C6, C7): are weight and LR rewinding connected to cascade, and does cascade change which weights are
kept, with implications for 2:4 pruning?

Protocol (fixed before any of its results existed; the chapter states it in full):

- Dense models: the shared backbone, chapter 02's pretrains by key (ResNet-8 w16, 10,000 Fashion-MNIST images,
  cosine from LR 0.1, weight decay 5e-4, 20 epochs), whose epoch-`rewind_epoch` weights are kept (epoch 1: 5% of
  training, the epoch nearest Renda et al.'s 6-7%).
- C6. GMP one-shot to each of `fractions` on the trained weights, then `retrain_epochs` of retraining in three ways,
  each beside its unpruned control under the same schedule and start (the tracker's E, `analysis.decompose`):
  FT, the trained survivors at a constant LR `ft_lr`; LRR, the trained survivors under the dense schedule compressed
  into the retraining budget and replayed from its start (cosine from `pretrain_lr`; the LR at the rewind point,
  0.0994, is within 1% of it); WR, the survivors reset to their epoch-`rewind_epoch` values under LRR's schedule.
  Weight decay is the dense recipe's throughout. Per seed and fraction: a method's advantage = its final test
  accuracy minus FT's, and its excess shedding = its E minus FT's. Premise: some rewinding cell (method, fraction)
  has an advantage whose 95% CI lies above `delta`. Effect: per seed, the least-squares slope of the advantage on the
  excess shedding over the four rewinding cells (LRR and WR at both fractions); reproduces when its CI lies above
  `delta_slope` (= delta / delta_e: an excess E of delta_e buys delta of accuracy), does not when it lies below;
  not testable without the premise.
- C7. At the moderate fraction (`fractions[0]`, which must be N:M's 1 - n/m), GMP and `nm` pruning (one-shot from the
  dense model, fixed mask; the stem conv, whose 9 inputs do not split into groups of 4, stays dense) fine-tuned for
  `retrain_epochs` at a shedding point, chapter 03's `shed_point`, and at a non-shedding one, LRR's (chapter 03's
  cold point), each beside its unpruned control. Premise: shedding is active at the shed point and not at the cold
  one: per seed, the share of GMP's survivors below GMP's threshold at pruning (`kept_shed@f`) at the shed point
  minus that at the cold point, CI above `delta_shed`, and the shed point survives (chapter 03's filter). (a) The
  kept set: drift = 1 - the Jaccard index between the set GMP would keep at `overlap` sparsity now and the set it
  kept of the pruning-time weights (at `fractions[0]` itself the index is 1 by construction: pruned weights are 0
  and rank last); per seed, GMP's drift minus the control's at the shed point, against `delta_drift`. (b) N:M: per
  seed, the cost (GMP's final test accuracy minus N:M's) at the shed point minus that at the cold point, against
  `delta`. Also recorded: the share of 2:4 groups holding fewer or more than 2 weights in use (not shed under
  `effective`, chapter 03's 5% of the layer's RMS) at the end. BatchNorm statistics are recomputed before every
  evaluation, as in chapters 03 and 05. C7 reproduces when both CIs lie above their thresholds, does not when
  either lies below, is inconclusive otherwise, and is not testable without the premise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from ..shedding import TrackerConfig, nm_spec, parse
from . import backbone
from .backbone import SmallResNet

POINT = ["lr", "weight_decay", "schedule", "init"]
METHODS = ("FT", "LRR", "WR")
REWINDING = METHODS[1:]


@dataclass(frozen=True)
class Config(SmallResNet):
    fractions: tuple[float, ...] = (0.5, 0.8)
    rewind_epoch: int = 1  # 5% of the dense run's 20 epochs (Renda et al.: 6-7%)
    retrain_epochs: int = 4  # 312 SGD steps: chapters 03 and 05's fine-tuning length, what the 45-minute budget allows
    ft_lr: float = 0.001  # Renda et al.'s FT: a small constant LR
    shed_point: str = "0.1/0.005/cosine"  # chapter 03's shed point
    nm: str = "2:4"
    overlap: float = 0.8  # the sparsity at which the kept set's drift is read (above fractions[0]: not trivial)
    effective: str = "rms:0.05"  # chapter 03's: what is in use for the removal accuracy and the N:M groups
    delta: float = 0.01  # one accuracy point, as chapters 03 and 05
    delta_e: float = 0.1  # pruning sheds a tenth of the pruned fraction beyond the control, as chapters 03 and 05
    delta_slope: float = 0.1  # delta / delta_e: accuracy per unit of excess E
    delta_shed: float = 0.02  # two in a hundred survivors more shed at the shed point than at the cold one
    delta_drift: float = 0.02  # two points of the Jaccard index beyond the control
    survival: float = 0.02
    planned_sd: float = 0.01  # a difference of two accuracies of one dense model (chapters 03 and 05)
    budget_min: float = 45

    def __post_init__(self):
        super().__post_init__()
        if not self.fractions or not all(0 < f < 1 for f in self.fractions) or len(set(self.fractions)) < len(
                self.fractions):
            raise ValueError(f"fractions={self.fractions!r} are invalid; allowed: distinct values in (0, 1)")
        parse(self.effective)
        n, m = nm_spec(self.nm)
        if not np.isclose(self.fractions[0], 1 - n / m):
            raise ValueError(f"fractions[0]={self.fractions[0]!r} is invalid with nm={self.nm!r}; allowed: "
                             f"{1 - n / m:g}, the N:M pattern's sparsity")
        if not self.fractions[0] < self.overlap < 1:
            raise ValueError(f"overlap={self.overlap!r} is invalid; allowed: in ({self.fractions[0]:g}, 1)")
        if not isinstance(self.rewind_epoch, int) or not 1 <= self.rewind_epoch < self.pretrain_epochs:
            raise ValueError(f"rewind_epoch={self.rewind_epoch!r} is invalid; allowed: an int in "
                             f"[1, pretrain_epochs={self.pretrain_epochs})")
        if not isinstance(self.retrain_epochs, int) or self.retrain_epochs < 1:
            raise ValueError(f"retrain_epochs={self.retrain_epochs!r} is invalid; allowed: an int >= 1")
        if self.points()["shed"] in (self.points()["FT"], self.points()["replay"]):
            raise ValueError(f"shed_point={self.shed_point!r} is invalid; allowed: a point other than FT's and "
                             "the replayed schedule's")
        for name in ("ft_lr", "delta", "delta_e", "delta_slope", "delta_shed", "delta_drift", "planned_sd",
                     "survival"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: a number > 0")

    def points(self) -> dict[str, tuple[float, float, str]]:
        """FT's point, the replayed dense schedule (LRR and WR; C7's cold point) and C7's shed point."""
        wd = self.pretrain_weight_decay
        return {"FT": (self.ft_lr, wd, "constant"), "replay": (self.pretrain_lr, wd, "cosine"),
                "shed": backbone.parse_point(self.shed_point)}

    def dense(self, seed: int) -> R.PretrainRun:
        """The seed's dense model, keeping the rewind epoch's weights (epoch 1 by default: the shared key)."""
        pre = self.pretrain(seed)
        if self.rewind_epoch in pre.keep_epochs:
            return pre
        return dataclasses.replace(pre, keep_epochs=(*pre.keep_epochs, self.rewind_epoch))

    def tracker(self) -> TrackerConfig:
        """E at each fraction (chapter 02's decomposition), per layer, the kept set's overlap at `overlap` and the
        N:M groups' occupancy."""
        return dataclasses.replace(backbone.decomposition_tracker(self.fractions), per_layer=True, summaries=False,
                                   overlap_sparsities=(self.overlap,), nm_groups=(self.nm,), effective=self.effective)


def runs(cfg: Config) -> list[R.FinetuneRun]:
    out = []
    for seed in cfg.seed_list():
        pre = cfg.dense(seed)

        def arm(point: str, criterion: str, fraction: float, rewind: bool = False) -> R.FinetuneRun:
            ft = cfg.finetune(seed, cfg.retrain_epochs, *cfg.points()[point])
            return R.FinetuneRun(pre, R.PruneConfig(criterion, fraction, seed), ft, cfg.tracker(), recompute_bn=True,
                                 eval_every=cfg.retrain_epochs, rewind_epoch=cfg.rewind_epoch if rewind else None)

        for point, rewind in (("FT", False), ("replay", False), ("replay", True)):  # C6: FT, LRR, WR
            out += [arm(point, "none", cfg.fractions[0], rewind)]
            out += [arm(point, "gmp", f, rewind) for f in cfg.fractions]
        out += [arm("shed", "none", cfg.fractions[0]), arm("shed", "gmp", cfg.fractions[0])]  # C7's shed point
        out += [arm(p, "nm", cfg.fractions[0]) for p in ("shed", "replay")]  # LRR's GMP and control are the cold arms
    return out


# ------------------------------------------------------------------------------------------------ analysis
def with_method(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with `condition` and `init`) with each run's `method`: FT, LRR or WR for C6's runs (by point and
    start), "shed" for C7's shed point."""
    return frame.assign(method=[("LRR" if i == "trained" else "WR") if c == "replay" else c
                                for c, i in zip(frame.condition, frame.init)])


def rows(cfg: Config, records) -> pd.DataFrame:
    """One row per run (`backbone.finetune_rows`) with its `method`, and 1 - jaccard@overlap as `drift`."""
    r = with_method(backbone.finetune_rows(cfg.points(), records))
    return r.assign(drift=1 - r[f"jaccard@{cfg.overlap:g}"])


def c6_cells(cfg: Config, dec: pd.DataFrame) -> pd.DataFrame:
    """Per rewinding method, fraction and seed: test accuracy and E, FT's, the advantage (accuracy minus FT's), the
    excess shedding (E minus FT's) and, scale-aware, the same for the share of survivors below 5% of their layer's
    RMS beyond the control (`rms_excess`: E's threshold is the trained weights', which rewound weights may start
    below)."""
    rms = "shed_rms@0.05_excess"
    t = dec[dec.method.isin(METHODS)].pivot_table(index=["fraction", "seed"], columns="method",
                                                  values=["test_acc", "cascade", rms])
    out = [pd.DataFrame({"method": m, "test_acc": t.test_acc[m], "test_acc_ft": t.test_acc["FT"],
                         "cascade": t.cascade[m], "cascade_ft": t.cascade["FT"],
                         "advantage": t.test_acc[m] - t.test_acc["FT"],
                         "excess": t.cascade[m] - t.cascade["FT"],
                         "rms_excess": t[rms][m] - t[rms]["FT"]}).reset_index() for m in REWINDING]
    return pd.concat(out, ignore_index=True)


def by_cell(cells: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per (method, fraction): the mean and 95% CI of `value` over seeds."""
    est = cells.groupby(["method", "fraction"])[value].apply(lambda v: stats.mean_ci(v.tolist()))
    return pd.DataFrame(est.tolist(), index=est.index, columns=[value, "lo", "hi"])


def slopes(cells: pd.DataFrame) -> pd.Series:
    """Per seed: the least-squares slope of the advantage on the excess shedding over its rewinding cells (NaN when
    the excess does not vary)."""
    def fit(g):
        return sps.linregress(g.excess, g.advantage).slope if g.excess.nunique() > 1 else np.nan
    return cells.groupby("seed")[["excess", "advantage"]].apply(fit).rename("slope")


def cascade_over_time(cfg: Config, records) -> pd.DataFrame:
    """E at every tracker record of C6's GMP runs against their controls: (1 - f)(K_p - K_c) / f per epoch, with K
    the share of GMP's kept set at f below tau(f) (`analysis.decompose`, read at each record instead of the last)."""
    frame = analysis.tracker_frame([(run, rec) for run, rec in records if run.kind == "finetune"])
    frame = frame[frame.layer == "global"]
    frame = with_method(frame.assign(condition=backbone.conditions(cfg.points(), frame)))
    out = []
    for f in cfg.fractions:
        k = frame[(frame.metric == f"kept_shed@{f:g}") & frame.method.isin(METHODS)]
        t = k.pivot_table(index=["method", "seed", "epoch"], columns=["criterion", "fraction"], values="value")
        out.append(pd.DataFrame({"fraction": f, "cascade": (1 - f) * (t[("gmp", f)] - t[("none", cfg.fractions[0])])
                                 / f}).reset_index())
    return pd.concat(out, ignore_index=True)


def c7_seeds(cfg: Config, r: pd.DataFrame) -> pd.DataFrame:
    """Per seed, at the moderate fraction: GMP's shed share, drift and accuracy at the shed and cold (LRR) points, the
    controls' drift, N:M's accuracy, and the statistics: shed difference, drift excess, cost and its difference;
    also, scale-aware, GMP's share of survivors below 5% of the layer's RMS minus the control's at each point, and
    the share of the set kept at `overlap` that GMP and the control retain at the shed point."""
    f = cfg.fractions[0]
    use = r[r.method.isin(["shed", "LRR"]) & (r.fraction == f)]
    k, rms, kept = f"kept_shed@{f:g}", "shed_rms@0.05", f"retained@{cfg.overlap:g}"
    t = use.pivot_table(index="seed", columns=["method", "criterion"],
                        values=["test_acc", "drift", k, rms, kept, "nm_under@" + cfg.nm, "nm_over@" + cfg.nm])
    out = pd.DataFrame({
        "shed_gmp": t[k][("shed", "gmp")], "cold_gmp": t[k][("LRR", "gmp")],
        "shed_minus_cold": t[k][("shed", "gmp")] - t[k][("LRR", "gmp")],
        "rms_excess_shed": t[rms][("shed", "gmp")] - t[rms][("shed", "none")],
        "rms_excess_cold": t[rms][("LRR", "gmp")] - t[rms][("LRR", "none")],
        "retained_gmp_shed": t[kept][("shed", "gmp")], "retained_control_shed": t[kept][("shed", "none")],
        "drift_gmp_shed": t.drift[("shed", "gmp")], "drift_control_shed": t.drift[("shed", "none")],
        "drift_gmp_cold": t.drift[("LRR", "gmp")], "drift_control_cold": t.drift[("LRR", "none")],
        "cost_shed": t.test_acc[("shed", "gmp")] - t.test_acc[("shed", "nm")],
        "cost_cold": t.test_acc[("LRR", "gmp")] - t.test_acc[("LRR", "nm")]})
    for p, m in (("shed", "shed"), ("cold", "LRR")):
        out[f"drift_excess_{p}"] = out[f"drift_gmp_{p}"] - out[f"drift_control_{p}"]
        for c in ("gmp", "nm"):
            out[f"nm_under_{c}_{p}"] = t["nm_under@" + cfg.nm][(m, c)]
            out[f"nm_over_{c}_{p}"] = t["nm_over@" + cfg.nm][(m, c)]
    return out.assign(cost_difference=out.cost_shed - out.cost_cold).reset_index()


def c6_verdict(cfg: Config, cells: pd.DataFrame, slope: pd.Series) -> stats.Verdict:
    adv = by_cell(cells, "advantage")
    best = adv.lo.idxmax()  # the cell whose CI reaches highest: present exactly when it clears delta
    premise = stats.Premise(f"the rewinding advantage over FT whose CI reaches highest ({best[0]}, f = {best[1]:g})",
                            float(adv.advantage[best]), (float(adv.lo[best]), float(adv.hi[best])), cfg.delta,
                            bool((adv.lo > cfg.delta).any()))
    return stats.verdict(
        "C6", slope.dropna().tolist(), cfg.delta_slope,
        "C6 {word}: the rewinding methods' accuracy advantage over FT rises by {mean:+.3f} per unit of their excess "
        f"cascade E over FT's (per-seed slope over LRR and WR at {', '.join(f'{f:g}' for f in cfg.fractions)}; 95% "
        f"CI {{lo:.3f}} to {{hi:.3f}}, n={{n}} seeds; δ = {cfg.delta_slope:g}).",
        condition=f"{cfg.model} w{cfg.width}, GMP, {cfg.retrain_epochs} epochs of FT (LR {cfg.ft_lr:g}), LRR and WR "
                  f"(epoch {cfg.rewind_epoch})", premise=premise)


def c7_verdict(cfg: Config, seeds: pd.DataFrame, alive: pd.Series) -> stats.Verdict:
    premise = stats.Premise.of(
        "the share of GMP's survivors shed at the shed point minus at the cold point", seeds.shed_minus_cold.tolist(),
        cfg.delta_shed).surviving(bool(alive.get("shed", False)))
    kept = stats.verdict("C7", seeds.drift_excess_shed.tolist(), cfg.delta_drift, "", premise=premise)
    nm = stats.verdict("C7", seeds.cost_difference.tolist(), cfg.delta, "", premise=premise)
    words = {kept.word, nm.word}
    word = ("not testable" if not premise.present else "reproduces" if words == {"reproduces"} else
            "does not reproduce" if "does not reproduce" in words else "inconclusive")
    c, d = nm.effect, nm.ci95
    summary = (f"C7 {stats.SPOKEN[word]}: at the shed point fine-tuning moves GMP's kept set (drift at "
               f"{cfg.overlap:g} sparsity) by {kept.effect:+.4f} beyond the unpruned control's (95% CI "
               f"{kept.ci95[0]:.4f} to {kept.ci95[1]:.4f}; δ = {cfg.delta_drift:g}), and {cfg.nm}'s accuracy cost "
               f"against GMP at {cfg.fractions[0]:g} is {c:+.4f} larger there than at the cold point (95% CI "
               f"{d[0]:.4f} to {d[1]:.4f}; δ = {cfg.delta:g}); n={len(seeds)} seeds.")
    rule = (f"reproduces when the drift excess's 95% CI lies above δ = {cfg.delta_drift:g} and the N:M cost "
            f"difference's above δ = {cfg.delta:g}; does not when either lies below its δ; inconclusive otherwise; "
            "not testable when the premise is absent")
    direction = (f"kept set: {kept.direction}; N:M: {nm.direction}" if premise.present else kept.direction)
    return dataclasses.replace(kept, word=word, rule=rule, summary=summary, direction=direction, condition=(
        f"{cfg.model} w{cfg.width}, GMP and {cfg.nm} at {cfg.fractions[0]:g}, {cfg.retrain_epochs} epochs at "
        f"{cfg.shed_point} against {cfg.pretrain_lr:g}/{cfg.pretrain_weight_decay:g}/cosine"))


def analyze(cfg: Config, records) -> tuple[dict, list]:
    r = rows(cfg, records)
    dec = analysis.decompose(r[r.criterion.isin(["none", "gmp"])], POINT)  # keeps each run's method
    cells = c6_cells(cfg, dec)
    slope = slopes(cells)
    alive = backbone.survives(r[(r.criterion == "none") & r.method.isin(["shed", "LRR"])], "method", cfg.survival)
    alive = alive.rename({"LRR": "cold"})
    seeds = c7_seeds(cfg, r)
    tables = {"rows": r, "decomposition": dec, "cells": cells, "advantage": by_cell(cells, "advantage"),
              "excess": by_cell(cells, "excess"), "slopes": slope.reset_index(), "over_time": cascade_over_time(
                  cfg, records), "c7": seeds, "survives": alive, "dense": analysis.dense_frame(records)}
    return tables, [c6_verdict(cfg, cells, slope), c7_verdict(cfg, seeds, alive)]


EXPERIMENT = core.Experiment(
    name="rewinding", notebook="06_rewinding", claims=("C6", "C7"), config=Config,
    profiles={
        "smoke": dict(width=4, train_size=256, test_size=128, seeds=2, pretrain_epochs=2, batch_size=64,
                      retrain_epochs=2, shed_point="0.3/0.005/cosine"),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", seeds=5, pretrain_epochs=60, retrain_epochs=20,
                                                rewind_epoch=4),
    },
    runs=runs, analyze=analyze, figures={"C6": "fig-rewinding-slopes", "C7": "fig-rewinding-kept"},
    description="Prune the shared ResNet-8 with GMP at two sparsities and retrain by fine-tuning, LR rewinding and "
                "weight rewinding, each against its unpruned control; compare 2:4 with GMP where shedding is "
                "active and where it is not, and track the kept set.")
