"""02 conditions (of C1): where do weights shed, and how much of it does pruning cause?

Protocol (fixed before any result was seen; the chapter states it in full):

- Backbone: a ResNet-8 at width 16 pre-trained on 10,000 Fashion-MNIST images (cosine schedule), one per seed.
- Map: copies pruned one-shot by GMP at `fraction`, and the unpruned control, are fine-tuned at every point of
  learning rate x weight decay x schedule (constant or cosine) for `finetune_epochs`; batch size and length are
  varied through the centre point (`finetune_lr`, `weight_decay`, `schedule`).
- Dose-response at `dose_points`: GMP at each of `dose_fractions`, against the same control.
- The tracker records, for each fraction f, K(f) = the share of the weights that GMP at f keeps (chosen on the
  pre-trained weights) that are now below GMP's threshold tau(f), and D(f) = the share of all weights below
  tau(f). Both are 0 and f right after pruning. At a point and seed, with the control's K_c, D_c and the pruned
  run's K_p (its survivors' shed share):
    (a) cascade, caused by pruning: E = (1 - f)(K_p - K_c) / f, in units of the pruned fraction;
    (b) temperature: T = D_c(end) - f, what the fine-tuning sheds with no pruning at all;
    (c) relaxation: K_c(end), the drift across tau(f) of the same kept set with no pruning, which a pruned
        network's survivors show too as they refill the gap that pruning cut: it is not caused by pruning.
- Accuracy survives at a point when the pruned run's accuracy after removing its shed weights (`removal_acc`)
  is within `survival` of its dense model's test accuracy (mean over seeds).
- Exploration (seeds `first_seed` ..): the point for confirmation is the map point with the largest mean E
  among the points where accuracy survives (the largest overall when none survives).
- Confirmation (`confirm`, fixed in the chapter before its runs exist; seeds after the exploration's): the
  dose-response at that point. C1 holds there when the 95% CI of E at `fraction` lies above 1, fails when it
  lies below 1. Only confirmation seeds enter the verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import analysis, stats
from .. import experiments as core
from .. import runs as R
from ..shedding import TrackerConfig
from . import backbone
from .backbone import SmallResNet

POINT = ["lr", "weight_decay", "schedule", "batch_size", "epochs"]


@dataclass(frozen=True)
class Config(SmallResNet):
    fraction: float = 0.1
    lrs: tuple[float, ...] = (0.1, 0.3)
    weight_decays: tuple[float, ...] = (5e-4, 2e-3, 5e-3)
    schedules: tuple[str, ...] = ("constant", "cosine")
    finetune_epochs: int = 4
    finetune_lr: float = 0.1
    weight_decay: float = 2e-3
    schedule: str = "cosine"
    batch_sizes: tuple[int, ...] = (32,)
    epoch_sweep: tuple[int, ...] = (8,)
    dose_points: tuple[str, ...] = ("0.1/0.002/cosine", "0.3/0.005/cosine")
    dose_fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)
    record_every: int = 39
    survival: float = 0.02
    confirm: str = "0.1/0.0005/cosine"  # the exploration's choice (rule above), fixed before its runs existed
    confirm_seeds: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.fraction not in self.dose_fractions:
            raise ValueError(f"fraction={self.fraction!r} is invalid; allowed: one of dose_fractions="
                             f"{self.dose_fractions}")
        if not all(0 < f < 1 for f in self.dose_fractions):
            raise ValueError(f"dose_fractions={self.dose_fractions!r} is invalid; allowed: values in (0, 1)")
        if (self.finetune_lr, self.weight_decay, self.schedule) not in self.grid():
            raise ValueError(f"centre {self.finetune_lr}/{self.weight_decay}/{self.schedule} is invalid; allowed: "
                             f"a point of lrs x weight_decays x schedules")
        for text in (*self.dose_points, *([self.confirm] if self.confirm else [])):
            backbone.parse_point(text)
        if not all(b >= 1 for b in self.batch_sizes) or not all(e >= 1 for e in self.epoch_sweep):
            raise ValueError(f"batch_sizes={self.batch_sizes!r}, epoch_sweep={self.epoch_sweep!r} are invalid; "
                             "allowed: ints >= 1")

    def grid(self) -> list[tuple[float, float, str]]:
        return [(lr, wd, s) for s in self.schedules for wd in self.weight_decays for lr in self.lrs]

    def tracker(self) -> TrackerConfig:
        return backbone.decomposition_tracker(self.dose_fractions, self.record_every)

    def confirm_seed_list(self) -> range:
        start = self.first_seed + self.seeds
        return range(start, start + self.confirm_seeds)


def arms(cfg: Config, seed: int, point: tuple, fractions) -> list[R.FinetuneRun]:
    """The control and GMP at each fraction, fine-tuned at `point` = (lr, wd, schedule, batch size, epochs)."""
    lr, wd, schedule, batch, epochs = point
    return backbone.arms(cfg, seed, cfg.finetune(seed, epochs, lr, wd, schedule, batch_size=batch), fractions,
                         cfg.fraction, cfg.tracker())


def exploration_points(cfg: Config) -> dict[tuple, tuple[float, ...]]:
    """Every fine-tuning point of the exploration with the fractions pruned there."""
    base = (cfg.batch_size, cfg.finetune_epochs)
    out: dict[tuple, tuple[float, ...]] = {(*p, *base): (cfg.fraction,) for p in cfg.grid()}
    centre = (cfg.finetune_lr, cfg.weight_decay, cfg.schedule)
    for b in cfg.batch_sizes:
        out.setdefault((*centre, b, cfg.finetune_epochs), (cfg.fraction,))
    for e in cfg.epoch_sweep:
        out.setdefault((*centre, cfg.batch_size, e), (cfg.fraction,))
    for text in cfg.dose_points:
        out[(*backbone.parse_point(text), *base)] = cfg.dose_fractions
    return out


def runs(cfg: Config) -> list[R.FinetuneRun]:
    out = [r for seed in cfg.seed_list() for point, fr in exploration_points(cfg).items()
           for r in arms(cfg, seed, point, fr)]
    if cfg.confirm:
        point = (*backbone.parse_point(cfg.confirm), cfg.batch_size, cfg.finetune_epochs)
        out += [r for seed in cfg.confirm_seed_list() for r in arms(cfg, seed, point, cfg.dose_fractions)]
    return out


# ------------------------------------------------------------------------------------------------ analysis
def rows(records) -> pd.DataFrame:
    """One row per fine-tuning run: labels, final global measures, the dense model's accuracy."""
    return analysis.with_dense_acc(analysis.final_rows(records), records)


QUANTITIES = ["cascade", "temperature", "relaxation", "survivors_shed", "dead_bn", "dead_bn_excess",
              "shed_rms@0.05_excess", "test_acc", "test_acc_control", "removal_acc", "dense_acc", "acc_drop"]


def point_table(dec: pd.DataFrame, seeds) -> pd.DataFrame:
    """Mean over `seeds` per point and fraction, with the 95% CI of the cascade E."""
    d = dec[dec.seed.isin(list(seeds))]
    g = d.groupby([*POINT, "fraction"])
    out = g[QUANTITIES].mean()
    ci = g.cascade.apply(lambda v: stats.mean_ci(v.tolist()))
    out["cascade_lo"] = [c[1] for c in ci]
    out["cascade_hi"] = [c[2] for c in ci]
    out["n_seeds"] = g.size()
    return out


def choose(cfg: Config, table: pd.DataFrame) -> tuple[str, bool]:
    """The exploration's choice: the map point with the largest mean E where accuracy survives (else overall)."""
    grid = table.xs((cfg.batch_size, cfg.finetune_epochs, cfg.fraction), level=("batch_size", "epochs", "fraction"))
    grid = grid[[p in cfg.grid() for p in grid.index]]
    alive = grid[grid.acc_drop <= cfg.survival]
    pick = (alive if len(alive) else grid).cascade.idxmax()
    return f"{pick[0]:g}/{pick[1]:g}/{pick[2]}", bool(len(alive))


def hottest_surviving(cfg: Config, table: pd.DataFrame) -> tuple:
    """The map point (lr, weight decay, schedule) where accuracy survives (`survival`) with the largest temperature
    shedding T of the control: where the exploration should have looked for a cascade (`verdicts.md`, rule 8)."""
    grid = table.xs((cfg.batch_size, cfg.finetune_epochs, cfg.fraction), level=("batch_size", "epochs", "fraction"))
    grid = grid[[p in cfg.grid() for p in grid.index]]
    return grid[grid.acc_drop <= cfg.survival].temperature.idxmax()


def slopes(dec: pd.DataFrame, seeds) -> pd.DataFrame:
    """Per dose point and seed, the least-squares slope of the excess shed share (1 - f)(K_p - K_c) against f
    (a cascade: slope > 1), then mean and 95% CI over seeds per point."""
    d = dec[dec.seed.isin(list(seeds))].assign(excess=lambda x: x.cascade * x.fraction)
    per_seed = {k: np.polyfit(g.fraction, g.excess, 1)[0] for k, g in d.groupby([*POINT, "seed"])
                if g.fraction.nunique() > 2}
    s = pd.Series(per_seed, name="slope")
    s.index.names = [*POINT, "seed"]
    out = pd.DataFrame([(*k, *stats.mean_ci(v.tolist()), len(v)) for k, v in s.groupby(POINT)],
                       columns=[*POINT, "slope", "slope_lo", "slope_hi", "n_seeds"])
    return out.set_index(POINT)


def curves(records, fractions) -> pd.DataFrame:
    """Per run and record: K(f) and D(f) at the run's own fraction, for the timing plots."""
    frame = analysis.tracker_frame(records)
    frame = frame[frame.layer == "global"]
    parts = []
    for f in fractions:
        sel = frame[frame.metric.isin([f"kept_shed@{f:g}", f"shed_gmp@{f:g}"])]
        sel = sel[(sel.criterion == "none") | (sel.fraction == f)]
        parts.append(sel.assign(at=f, metric=sel.metric.str.split("@").str[0]))
    out = pd.concat(parts, ignore_index=True)
    return out.pivot_table(index=[*POINT, "criterion", "fraction", "at", "seed", "step", "epoch"], columns="metric",
                           values="value").reset_index()


def half_times(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run: the epoch at which K first reaches half its final value (linear interpolation between records;
    nan when K ends at or below 0)."""
    keys = [*POINT, "criterion", "fraction", "at", "seed"]
    out = []
    for key, g in curve.groupby(keys):
        g = g.sort_values("step")
        k, t = g.kept_shed.to_numpy(), g.step.to_numpy() * g.epoch.max() / g.step.max()
        half, i = k[-1] / 2, int(np.argmax(k >= k[-1] / 2))
        t_half = np.nan if k[-1] <= 0 else t[i] if i == 0 else \
            t[i - 1] + (half - k[i - 1]) * (t[i] - t[i - 1]) / (k[i] - k[i - 1])
        out.append({**dict(zip(keys, key)), "t_half": t_half, "final": k[-1]})
    return pd.DataFrame(out)


def matrix(table: pd.DataFrame, column: str, cfg: Config, schedule: str) -> pd.DataFrame:
    """lr (rows) x weight decay (columns) of `column` on the map (its batch size, length and fraction)."""
    t = table.reset_index()
    t = t[(t.schedule == schedule) & (t.batch_size == cfg.batch_size) & (t.epochs == cfg.finetune_epochs)
          & (t.fraction == cfg.fraction)]
    return t.pivot_table(index="lr", columns="weight_decay", values=column)


def verdict(cfg: Config, dec: pd.DataFrame) -> dict:
    if not cfg.confirm:
        return stats.no_estimate("C1", 1.0, "exploration only: no confirmation point fixed",
                                 "C1 is not yet tested here: the confirmation runs are not part of this configuration.")
    lr, wd, schedule = backbone.parse_point(cfg.confirm)
    d = dec[(dec.lr == lr) & (dec.weight_decay == wd) & (dec.schedule == schedule) & (dec.fraction == cfg.fraction)
            & (dec.batch_size == cfg.batch_size) & (dec.epochs == cfg.finetune_epochs)
            & dec.seed.isin(list(cfg.confirm_seed_list()))]
    per_seed = d.sort_values("seed").cascade.tolist()
    drop = d.acc_drop.mean()
    return stats.verdict(
        "C1", per_seed, 1.0,
        f"C1 {{word}} at the confirmed point lr={lr:g}, wd={wd:g}, {schedule} ({cfg.fraction:.0%} pruned by GMP, "
        f"{cfg.model} w{cfg.width}): pruning causes shedding of {{mean:.2f}}x the pruned fraction beyond the "
        f"control's drift (95% CI {{lo:.2f}} to {{hi:.2f}}, n={{n}} fresh seeds; threshold 1x). Accuracy after "
        f"removing the shed weights, minus the dense model's: {-drop:+.3f} (mean).",
        condition=f"{cfg.model} w{cfg.width}, lr={lr:g}, wd={wd:g}, {schedule}, {cfg.finetune_epochs} epochs, "
                  f"GMP {cfg.fraction:g}; confirmation seeds")


def analyze(cfg: Config, records) -> tuple[dict, list[dict]]:
    r = rows(records)
    dec = analysis.decompose(r, POINT)
    explore = point_table(dec, cfg.seed_list())
    pick, survived = choose(cfg, explore)
    tables = {"rows": r, "decomposition": dec, "explore": explore, "choice": pd.Series(
                  {"point": pick, "accuracy_survives": survived}),
              "slopes": slopes(dec, cfg.seed_list()),
              "history": analysis.history_frame(records)}
    if cfg.confirm:
        tables["confirm"] = point_table(dec, cfg.confirm_seed_list())
        tables["confirm_slopes"] = slopes(dec, cfg.confirm_seed_list())
    return tables, [verdict(cfg, dec)]


EXPERIMENT = core.Experiment(
    name="conditions", notebook="02_conditions", claims=("C1",), config=Config,
    profiles={
        "smoke": dict(width=4, train_size=256, test_size=128, seeds=2, pretrain_epochs=1, batch_size=64,
                      lrs=(0.03, 0.3), weight_decays=(5e-3,), schedules=("cosine",), finetune_lr=0.3,
                      weight_decay=5e-3, finetune_epochs=2, batch_sizes=(32,), epoch_sweep=(), record_every=2,
                      dose_points=("0.3/0.005/cosine",), dose_fractions=(0.05, 0.1, 0.2),
                      confirm="0.3/0.005/cosine", confirm_seeds=2),
        "paper": {},
        "full": lambda: core.full_data() | dict(model="resnet56", seeds=5, pretrain_epochs=60, finetune_epochs=20,
                                                record_every=0),
    },
    runs=runs, analyze=analyze, figures={"C1": "fig-conditions-dose"},
    description="Map shedding over fine-tuning learning rate x weight decay x schedule against the unpruned "
                "control, split it into cascade, temperature and relaxation, and confirm C1 on fresh seeds.")
