"""03 architectures (C2, C3): does shedding caused by pruning rescue random pruning, and on which architectures?

Protocol (fixed before any of its results existed; the chapter states it in full):

- Dense models: the shared backbone (ResNet-8 w16 on 10,000 Fashion-MNIST images, chapter 02's recipe; its
  pretrains by key) and a MobileNetV3-small (`mobilenet`, `mobilenet_width`) with the same data and recipe, one
  per architecture and seed.
- Conditions: two fine-tuning points of chapter 02's map, `finetune_epochs` each: `shed_point`, where chapter 02's
  control sheds most while accuracy survives, and `cold_point`, where nothing sheds.
- Arms, per architecture, seed and condition: the unpruned control, and one-shot GMP and random pruning at each of
  `fractions`, all fine-tuned from the seed's dense model. BatchNorm statistics are recomputed on the training data
  before every evaluation (`FinetuneRun.recompute_bn`).
- Per pruned run: chapter 02's decomposition for its own criterion's kept set (`analysis.decompose`: cascade E,
  temperature, relaxation), the accuracy after removing the shed weights (`removal_acc`, shed = below 5% of the
  layer's RMS, so random's small survivors are not shed from the start) and the effective sparsity.
- gap = GMP's removal accuracy minus random's, at the same architecture, condition, fraction and seed (one dense
  model: paired). closing = gap(cold) - gap(shed), per seed, the mean over fractions.
- A condition survives on an architecture when its control's removal accuracy is within `survival` of the same
  control's accuracy before fine-tuning, BatchNorm recomputed likewise (means over seeds): a filter on
  conditions, as in chapter 02, not a premise with a CI.
- C2, on the first architecture (the ResNet). Premise: random's E at the shed point (per seed, the mean over
  fractions) has its 95% CI above `delta_e`, and the shed point survives. Effect: the closing; reproduces when its
  CI lies above `delta` and random's own removal accuracy does not fall at the shed point (the CI of its shed minus
  cold change does not lie below 0: otherwise the gap closes because GMP falls, and C2 does not reproduce); does
  not reproduce when the closing's CI lies below `delta`; not testable when the premise is absent.
- C3. Premise: C2 reproduces (there is a benefit to explain). Effect: the ResNet's closing minus the MobileNet's,
  Welch's t (the two architectures share no dense model); the same rule and δ. Reported beside it: random's E at
  the shed point, ResNet minus MobileNet (Welch), and the descriptive half, random's cold gap on the MobileNet
  minus on the ResNet (Welch).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from .. import analysis, models, stats
from .. import experiments as core
from .. import runs as R
from ..shedding import TrackerConfig
from . import backbone
from .backbone import SmallResNet

POINT = ["model", "lr", "weight_decay", "schedule"]
CONDITIONS = ("shed", "cold")


@dataclass(frozen=True)
class Config(SmallResNet):
    mobilenet: str = "mobilenet_v3_small"
    mobilenet_width: int = 8
    fractions: tuple[float, ...] = (0.6,)
    shed_point: str = "0.1/0.005/cosine"  # chapter 02: the control's largest shedding where accuracy survives
    cold_point: str = "0.1/0.0005/cosine"  # chapter 02's confirmation point: the control sheds nothing
    finetune_epochs: int = 4
    record_every: int = 39
    effective: str = "rms:0.05"
    survival: float = 0.02
    delta: float = 0.01  # one accuracy point of gap closed: "greatly improves" cannot mean less
    delta_e: float = 0.1  # pruning sheds at least a tenth of the pruned fraction beyond the control
    planned_sd: float = 0.01  # of a closing: four removal accuracies, each with a per-seed SD up to 0.006 in chapter 02
    budget_min: float = 40

    def __post_init__(self):
        super().__post_init__()
        if self.mobilenet not in models.names() or self.mobilenet == self.model:
            raise ValueError(f"mobilenet={self.mobilenet!r} is invalid; allowed: a model other than {self.model!r} "
                             f"among {', '.join(models.names())}")
        if not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"fractions={self.fractions!r} are invalid; allowed: values in (0, 1)")
        if backbone.parse_point(self.shed_point) == backbone.parse_point(self.cold_point):
            raise ValueError(f"shed_point and cold_point are both {self.shed_point!r}; allowed: two different points")
        for name in ("delta", "delta_e", "planned_sd", "survival"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: a number > 0")

    def archs(self) -> list[tuple[str, int]]:
        return [(self.model, self.width), (self.mobilenet, self.mobilenet_width)]

    def points(self) -> dict[str, tuple[float, float, str]]:
        return dict(zip(CONDITIONS, map(backbone.parse_point, (self.shed_point, self.cold_point))))

    def condition(self, lr: float, wd: float, schedule: str) -> str:
        return backbone.condition_of(self.points(), lr, wd, schedule)

    def tracker(self) -> TrackerConfig:
        """Chapter 02's decomposition measures, for GMP's and random's kept sets at each fraction."""
        return dataclasses.replace(backbone.decomposition_tracker(self.fractions, self.record_every),
                                   kept_random=tuple(self.fractions), effective=self.effective, summaries=False)


def runs(cfg: Config) -> list[R.FinetuneRun]:
    out = []
    for model, width in cfg.archs():
        for seed in cfg.seed_list():
            pre = cfg.pretrain(seed, model=model, width=width)
            for lr, wd, schedule in cfg.points().values():
                ft = cfg.finetune(seed, cfg.finetune_epochs, lr, wd, schedule)
                prunes = [R.PruneConfig("none", cfg.fractions[0], seed)] + [
                    R.PruneConfig(c, f, seed) for f in cfg.fractions for c in ("gmp", "random")]
                out += [R.FinetuneRun(pre, p, ft, cfg.tracker(), recompute_bn=True, eval_every=cfg.finetune_epochs)
                        for p in prunes]
    return out


# ------------------------------------------------------------------------------------------------ analysis
def rows(cfg: Config, records) -> pd.DataFrame:
    """One row per fine-tuning run (`backbone.finetune_rows`): labels, `condition`, final global measures, the dense
    model's accuracy and `start_acc` (right after pruning, BatchNorm recomputed)."""
    return backbone.finetune_rows(cfg.points(), records)


def controls(r: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, condition and seed: the unpruned control's accuracy after removing its shed weights, its
    accuracy before fine-tuning (`start_acc`: the dense model with BatchNorm recomputed), its effective sparsity and
    its dense model's recorded accuracy."""
    c = r[r.criterion == "none"].set_index(["model", "condition", "seed"])
    return c[["removal_acc", "start_acc", "effective_sparsity", "dense_acc"]].sort_index()


def per_seed(dec: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, condition, fraction and seed: each criterion's E, removal accuracy and effective sparsity
    side by side, and the gap (GMP minus random removal accuracy)."""
    t = dec.pivot_table(index=["model", "condition", "fraction", "seed"], columns="criterion",
                        values=["cascade", "removal_acc", "effective_sparsity"])
    t.columns = [f"{m}_{c}" for m, c in t.columns]
    return t.assign(gap=t.removal_acc_gmp - t.removal_acc_random).reset_index()


def closing(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per architecture and seed (means over fractions): the gap at each condition, random's E at the shed point,
    closing = gap(cold) - gap(shed), and its two parts, random's and GMP's own change of removal accuracy from the
    cold to the shed point (closing = random_change - gmp_change)."""
    cols = ["gap", "cascade_random", "removal_acc_random", "removal_acc_gmp"]
    g = seeds.groupby(["model", "seed", "condition"])[cols].mean().unstack("condition")
    out = pd.DataFrame({"gap_cold": g["gap"]["cold"], "gap_shed": g["gap"]["shed"],
                        "e_random_shed": g["cascade_random"]["shed"],
                        "random_change": g["removal_acc_random"]["shed"] - g["removal_acc_random"]["cold"],
                        "gmp_change": g["removal_acc_gmp"]["shed"] - g["removal_acc_gmp"]["cold"]})
    return out.assign(closing=out.gap_cold - out.gap_shed).reset_index()


def point_table(dec: pd.DataFrame, ctrl: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, condition, criterion and fraction (means over seeds): E with its 95% CI, temperature,
    relaxation, removal accuracy, effective sparsity, and the control's removal accuracy."""
    g = dec.groupby(["model", "condition", "criterion", "fraction"])
    out = g[["cascade", "temperature", "relaxation", "removal_acc", "effective_sparsity", "dense_acc"]].mean()
    ci = g.cascade.apply(lambda v: stats.mean_ci(v.tolist()))
    out.insert(1, "cascade_lo", [c[1] for c in ci])
    out.insert(2, "cascade_hi", [c[2] for c in ci])
    control = ctrl.groupby(level=["model", "condition"]).removal_acc.mean()
    out["removal_acc_control"] = [control[m, c] for m, c, _, _ in out.index]
    out["n_seeds"] = g.size()
    return out


def welch_table(close: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Between architectures (Welch's t, seeds unpaired): `difference` is the ResNet minus the MobileNet in each
    per-seed measure."""
    a, b = close[close.model == first], close[close.model == second]
    rows_ = []
    for col in ("gap_cold", "gap_shed", "e_random_shed", "random_change", "gmp_change", "closing"):
        m, lo, hi = stats.welch(a[col], b[col])
        rows_.append({"measure": col, first: a[col].mean(), second: b[col].mean(), "difference": m, "ci_lo": lo,
                      "ci_hi": hi})
    return pd.DataFrame(rows_).set_index("measure")


def verdicts(cfg: Config, close: pd.DataFrame, alive: pd.Series) -> list:
    (first, width), (second, width2) = cfg.archs()
    a = close[close.model == first].sort_values("seed")
    b = close[close.model == second].sort_values("seed")
    found = stats.Premise.of(f"random's cascade E at the shed point on {first}", a.e_random_shed.tolist(),
                             cfg.delta_e)
    premise = found.surviving(bool(alive.get((first, "shed"), False)))
    e = math.nan if found.effect is None else found.effect
    where = f"{first} w{width}, {cfg.shed_point} against {cfg.cold_point}, {cfg.finetune_epochs} epochs"
    v2 = stats.verdict(
        "C2", a.closing.tolist(), cfg.delta,
        f"C2 {{word}} on {first}: fine-tuning at the shed point closes {{mean:+.3f}} of random pruning's accuracy gap "
        f"to GMP, relative to the cold point (95% CI {{lo:.3f}} to {{hi:.3f}}, n={{n}} seeds; δ = {cfg.delta:g}); "
        f"random's cascade E there is {e:+.3f} (premise threshold {cfg.delta_e:g}).",
        condition=where, premise=premise, planned_sd=cfg.planned_sd, units="points")
    v2 = stats.unless_own_falls(v2, a.random_change, "random's")
    needs = stats.Premise(f"the gap closed on {first}, where C2's verdict is \"{v2.word}\",", v2.effect, v2.ci95,
                          cfg.delta, v2.word == "reproduces")
    v3 = stats.verdict(
        "C3", a.closing.tolist(), cfg.delta,
        f"C3 {{word}}: the gap closed at the shed point is {{mean:+.3f}} larger on {first} than on {second} "
        f"(Welch 95% CI {{lo:.3f}} to {{hi:.3f}}, {{n}} seeds each; δ = {cfg.delta:g}).",
        condition=f"{first} w{width} against {second} w{width2}, {cfg.shed_point} against {cfg.cold_point}",
        premise=needs, planned_sd=cfg.planned_sd, units="points", against=b.closing.tolist(),
        replicate=f"{first} seeds, each against {second}'s mean")
    return [v2, v3]


def analyze(cfg: Config, records) -> tuple[dict, list]:
    r = rows(cfg, records)
    dec = analysis.decompose(r, POINT)
    ctrl = controls(r)
    alive = backbone.survives(ctrl, ["model", "condition"], cfg.survival)
    seeds = per_seed(dec)
    close = closing(seeds)
    (first, _), (second, _) = cfg.archs()
    tables = {"rows": r, "decomposition": dec, "controls": ctrl, "survives": alive, "per_seed": seeds,
              "closing": close, "points": point_table(dec, ctrl), "between": welch_table(close, first, second),
              "dense": analysis.dense_frame(records)}
    return tables, verdicts(cfg, close, alive)


EXPERIMENT = core.Experiment(
    name="architectures", notebook="03_architectures", claims=("C2", "C3"), config=Config,
    profiles={
        "smoke": dict(width=4, mobilenet_width=8, train_size=256, test_size=128, seeds=2, pretrain_epochs=1,
                      batch_size=64, fractions=(0.5,), finetune_epochs=2, record_every=2,
                      shed_point="0.3/0.005/cosine", cold_point="0.03/0.0005/cosine"),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", mobilenet_width=16, seeds=5, pretrain_epochs=60,
                                                finetune_epochs=20, record_every=0),
    },
    runs=runs, analyze=analyze, figures={"C2": "fig-architectures-closing", "C3": "fig-architectures-closing"},
    description="Prune a ResNet and a MobileNetV3-small with GMP and random, fine-tune where the control sheds and "
                "where it does not, and ask whether shedding caused by pruning closes random's gap to GMP.")
