"""03 architectures (C2, C3): does the cascade rescue random pruning, and on which architectures?

Protocol (fixed before any result was seen): a CIFAR ResNet and a CIFAR MobileNetV2 are
pre-trained on the same data (one dense model per architecture and seed). Copies are pruned
one-shot by `gmp` and `random` at several fractions, then fine-tuned with a constant learning rate
in two conditions: `hot` (high learning rate and weight decay, where shedding is expected) and
`cold` (low learning rate, no weight decay). At the end the tracker records the effective
sparsity (pruned + shed, where shed means below 5% of the layer's RMS, `effective="rms:0.05"`: below
tau0 would count random's small but untouched survivors as shed from the start) and `removal_acc`, the test accuracy after zeroing the shed
weights without further training: the accuracy of the network at that effective sparsity.

Gap, per (architecture, condition, seed): for each random run, GMP's removal accuracy at the
random run's effective sparsity (linear interpolation along GMP's runs of that seed, clamped at
their ends) minus random's, averaged over the random runs. Positive: random is worse than GMP.

- C2's effect, per seed, on the first architecture (the ResNet): gap_cold - gap_hot, how much of
  random's deficit the hot (cascading) fine-tuning closes. C2 holds when its 95% CI lies above
  0.01 (at least one accuracy point: "greatly improves"), fails when it lies below.
- C3's effect, per seed: C2's effect on the first architecture minus that on the second (the
  MobileNet); seeds are paired by index. C3 holds when its CI lies above 0, fails below.

Mechanism: per layer, the rise over the first fine-tuning epoch of the tau0-shed share, against
depth, and by layer kind (depthwise / pointwise / full conv / linear).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import analysis, models, stats
from .. import experiments as core
from .. import runs as R
from ..shedding import TrackerConfig
from ..train import TrainConfig
from .backbone import Backbone

CONDITIONS = ("hot", "cold")


@dataclass(frozen=True)
class Config:
    archs: tuple[str, ...] = ("resnet8:16", "mobilenetv2:8")
    dataset: str = "fashion-mnist"
    train_size: int | None = 2000
    test_size: int | None = 1000
    seeds: int = 3
    first_seed: int = 0
    criteria: tuple[str, ...] = ("gmp", "random")
    fractions: tuple[float, ...] = (0.3, 0.6)
    pretrain_epochs: int = 8
    pretrain_lr: float = 0.1
    pretrain_weight_decay: float = 5e-4
    batch_size: int = 128
    finetune_epochs: int = 2
    hot_lr: float = 0.1
    hot_wd: float = 5e-3
    cold_lr: float = 0.003
    cold_wd: float = 0.0
    precisions: tuple[str, ...] = ("fp32", "fp32")  # per arch; bf16 depthwise convs were ~3x slower here
    effective: str = "rms:0.05"  # shed = below 5% of the layer RMS: random's small survivors are not "shed"

    def __post_init__(self):
        if len(self.archs) != 2:
            raise ValueError(f"archs={self.archs!r} is invalid; allowed: two 'model:width' entries, ResNet first")
        for arch in self.archs:
            name, _, width = arch.partition(":")
            if name not in models.names() or not width.isdigit():
                raise ValueError(f"arch {arch!r} is invalid; allowed: 'model:width' with model in "
                                 f"{', '.join(models.names())}")
        if len({a.partition(':')[0] for a in self.archs}) != 2:
            raise ValueError(f"archs={self.archs!r} is invalid; allowed: two different models")
        if len(self.precisions) != len(self.archs) or not set(self.precisions) <= {"fp32", "bf16"}:
            raise ValueError(f"precisions={self.precisions!r} is invalid; allowed: one of fp32, bf16 per arch")
        if set(self.criteria) != {"gmp", "random"}:
            raise ValueError(f"criteria={self.criteria!r} is invalid; allowed: gmp, random")
        if self.seeds < 1 or not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"seeds={self.seeds}, fractions={self.fractions!r} are invalid; allowed: seeds >= 1, "
                             "fractions in (0, 1)")
        if (self.hot_lr, self.hot_wd) == (self.cold_lr, self.cold_wd):
            raise ValueError(f"hot and cold conditions are equal ({self.hot_lr}, {self.hot_wd}); allowed: different")

    def arch(self, i: int) -> tuple[str, int]:
        name, _, width = self.archs[i].partition(":")
        return name, int(width)

    def backbone(self, i: int) -> Backbone:
        """The shared pre-training recipe, for architecture i."""
        model, width = self.arch(i)
        fields = {f.name for f in dataclasses.fields(Backbone)} - {"model", "width", "precision"}
        return Backbone(model=model, width=width, precision=self.precisions[i],
                        **{k: getattr(self, k) for k in fields})

    def condition(self, lr: float, wd: float) -> str:
        return "hot" if (lr, wd) == (self.hot_lr, self.hot_wd) else "cold"


def finetune_config(cfg: Config, condition: str, seed: int, precision: str) -> TrainConfig:
    lr, wd = (cfg.hot_lr, cfg.hot_wd) if condition == "hot" else (cfg.cold_lr, cfg.cold_wd)
    return TrainConfig(epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, lr=lr, weight_decay=wd,
                       lr_schedule="constant", precision=precision, seed=seed)


def runs(cfg: Config) -> list[R.FinetuneRun]:
    out = []
    for i in range(len(cfg.archs)):
        bb = cfg.backbone(i)
        precision = bb.precision
        for seed in bb.seed_list():
            pre = bb.pretrain(seed)
            for condition in CONDITIONS:
                ft = finetune_config(cfg, condition, seed, precision)
                for frac in cfg.fractions:
                    for crit in cfg.criteria:
                        out.append(R.FinetuneRun(pre, R.PruneConfig(crit, frac, seed), ft, TrackerConfig(effective=cfg.effective)))
    return out


def final_table(cfg: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: model, condition, criterion, fraction, seed, effective_sparsity, removal_acc."""
    t = analysis.last_global(frame).pivot_table(index=["model", "lr", "weight_decay", "criterion", "fraction", "seed"], columns="metric",
                         values="value")[["effective_sparsity", "removal_acc"]].reset_index()
    t.insert(1, "condition", [cfg.condition(lr, wd) for lr, wd in zip(t.lr, t.weight_decay)])
    return t.drop(columns=["lr", "weight_decay"])


def gaps(final: pd.DataFrame) -> pd.DataFrame:
    """Per (model, condition, seed): GMP's removal accuracy at random's effective sparsity minus random's."""
    rows = []
    for (model, condition, seed), g in final.groupby(["model", "condition", "seed"]):
        gmp = g[g.criterion == "gmp"].sort_values("effective_sparsity")
        rnd = g[g.criterion == "random"]
        at = np.interp(rnd.effective_sparsity, gmp.effective_sparsity, gmp.removal_acc)
        rows.append({"model": model, "condition": condition, "seed": seed,
                     "gap": float(np.mean(at - rnd.removal_acc.to_numpy()))})
    return pd.DataFrame(rows)


def effects(cfg: Config, gap: pd.DataFrame) -> pd.DataFrame:
    """Per model and seed: gap_cold, gap_hot and the C2 effect gap_cold - gap_hot."""
    t = gap.pivot_table(index=["model", "seed"], columns="condition", values="gap")
    t = t.rename(columns={"cold": "gap_cold", "hot": "gap_hot"})
    t["c2_effect"] = t.gap_cold - t.gap_hot
    return t[["gap_cold", "gap_hot", "c2_effect"]]


@functools.lru_cache(maxsize=8)
def layer_kinds(model: str, width: int) -> dict[str, str]:
    """Kind of every conv/linear weight: depthwise, pointwise (1x1), conv (full), linear."""
    net = models.build(model, width=width)
    out = {}
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels
            out[f"{name}.weight"] = "depthwise" if depthwise else "pointwise" if m.kernel_size == (1, 1) else "conv"
        elif isinstance(m, torch.nn.Linear):
            out[f"{name}.weight"] = "linear"
    return out


def layer_shed(cfg: Config, frame: pd.DataFrame, metric: str = "shed_tau0", epoch: int = 1) -> pd.DataFrame:
    """Per model, condition, criterion, fraction and layer (mean over seeds): rise of `metric` over the
    first `epoch` epochs, with the layer's depth (position among tracked layers) and kind."""
    sub = frame[(frame.layer != "global") & (frame.metric == metric) & frame.epoch.isin([0, epoch])]
    by = ["model", "lr", "weight_decay", "criterion", "fraction", "seed", "layer"]
    wide = sub.pivot_table(index=by, columns="epoch", values="value")
    rise = (wide[epoch] - wide[0]).rename("rise").reset_index()
    rise = rise.groupby([c for c in by if c != "seed"], sort=False).rise.mean().reset_index()
    rise.insert(1, "condition", [cfg.condition(lr, wd) for lr, wd in zip(rise.lr, rise.weight_decay)])
    widths = dict(cfg.arch(i) for i in range(len(cfg.archs)))
    order = {m: list(layer_kinds(m, widths[m])) for m in widths}
    rise["depth"] = [order[m].index(layer) for m, layer in zip(rise.model, rise.layer)]
    rise["kind"] = [layer_kinds(m, widths[m])[layer] for m, layer in zip(rise.model, rise.layer)]
    return rise.drop(columns=["lr", "weight_decay"]).sort_values(["model", "condition", "criterion", "fraction",
                                                                   "depth"], ignore_index=True)


def analyze(cfg: Config, records) -> tuple[dict, list[dict]]:
    frame = analysis.tracker_frame(records)
    final = final_table(cfg, frame)
    eff = effects(cfg, gaps(final))
    first, second = cfg.arch(0)[0], cfg.arch(1)[0]
    c2 = eff.loc[first].c2_effect
    c3 = (c2 - eff.loc[second].c2_effect).dropna()
    v2 = stats.verdict(
        "C2", c2.tolist(), 0.01,
        f"C2 {{word}} on {first}: hot fine-tuning closes {{mean:.3f}} of random pruning's accuracy gap to GMP at "
        "equal effective sparsity, relative to cold fine-tuning (95% CI {lo:.3f} to {hi:.3f}, n={n} seeds; "
        "threshold 0.01).", condition=f"{first}, hot vs cold fine-tuning")
    v3 = stats.verdict(
        "C3", c3.tolist(), 0.0,
        f"C3 {{word}}: the gap closed by the cascade is {{mean:.3f}} larger on {first} than on {second} "
        "(95% CI {lo:.3f} to {hi:.3f}, n={n} paired seeds; threshold 0).", condition=f"{first} vs {second}")
    summary = final.groupby(["model", "condition", "criterion", "fraction"])[
        ["effective_sparsity", "removal_acc"]].mean()
    layers = layer_shed(cfg, frame)
    kinds = layers.groupby(["model", "condition", "criterion", "kind"]).rise.mean().unstack("kind")
    return {"summary": summary, "final": final, "effects": eff, "layers": layers, "kinds": kinds,
            "frame": frame}, [v2, v3]


EXPERIMENT = core.Experiment(
    name="architectures", notebook="03_architectures", claims=("C2", "C3"), config=Config,
    profiles={
        "smoke": dict(archs=("resnet8:4", "mobilenetv2:8"), train_size=128, test_size=64, seeds=2,
                      fractions=(0.5,), pretrain_epochs=1, batch_size=64, finetune_epochs=1),
        "paper": {},
        "full": lambda: core.full_data() | dict(archs=("resnet56:16", "mobilenetv2:32"), seeds=5,
                     fractions=(0.2, 0.4, 0.6, 0.8), pretrain_epochs=60, finetune_epochs=20),
    },
    runs=runs, analyze=analyze, figures={"C2": "fig-architectures-accuracy", "C3": "fig-architectures-accuracy"},
    description="Prune a ResNet and a MobileNetV2 with gmp and random, fine-tune hot and cold, and compare "
                "removal accuracy at equal effective sparsity.")
