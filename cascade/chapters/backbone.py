"""The dense model every chapter starts from, and the fine-tuning arms that chapters build on it.

An experiment's `Config` subclasses `Backbone` (fields stay flat, so `-p name=value` and papermill set them
directly), overrides the defaults it needs, and adds its own fields. Pre-training and fine-tuning have separate
hyperparameters: `pretrain_*` here, the fine-tuning ones in the experiment. Two experiments whose backbones are
equal share their pre-trained models in the store.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import analysis, models, train
from .. import runs as R
from ..shedding import TrackerConfig
from ..train import TrainConfig


def parse_point(text: str) -> tuple[float, float, str]:
    """(lr, weight_decay, schedule) from "lr/wd/schedule", e.g. "0.3/0.005/cosine"."""
    try:
        lr, wd, schedule = text.split("/")
        lr, wd = float(lr), float(wd)
    except ValueError:
        raise ValueError(f"point {text!r} is invalid; allowed: 'lr/weight_decay/schedule', e.g. '0.3/0.005/cosine'") \
            from None
    if schedule not in train.LR_SCHEDULES:
        raise ValueError(f"point {text!r} is invalid; allowed schedules: {', '.join(train.LR_SCHEDULES)}")
    return lr, wd, schedule


def condition_of(points: dict[str, tuple[float, float, str]], lr: float, wd: float, schedule: str) -> str:
    """The name of the fine-tuning point (lr, wd, schedule) among a chapter's `points`."""
    for name, point in points.items():
        if point == (lr, wd, schedule):
            return name
    raise ValueError(f"point {lr:g}/{wd:g}/{schedule} is invalid; allowed: "
                     + ", ".join(f"{n} {p[0]:g}/{p[1]:g}/{p[2]}" for n, p in points.items()))


def conditions(points: dict[str, tuple[float, float, str]], frame: pd.DataFrame) -> list[str]:
    """The name of each row's fine-tuning point (`condition_of` on its lr, weight_decay and schedule)."""
    return [condition_of(points, *p) for p in frame[["lr", "weight_decay", "schedule"]].itertuples(index=False,
                                                                                                   name=None)]


def finetune_rows(points: dict[str, tuple[float, float, str]], records) -> pd.DataFrame:
    """One row per fine-tuning run (`analysis.final_rows` with the dense model's accuracy), with its `condition`
    (the name of its point) and `start_acc`, the test accuracy of its first evaluation, before any SGD step
    (BatchNorm recomputed where the run does so)."""
    r = analysis.with_dense_acc(analysis.final_rows(records), records)
    start = {rec["key"]: rec["result"]["history"][0].get("test_acc") for run, rec in records if run.kind == "finetune"}
    return r.assign(condition=conditions(points, r), start_acc=r.key.map(start))


def survives(controls: pd.DataFrame, by, survival: float) -> pd.Series:
    """Per group `by` of unpruned controls: whether their removal accuracy is within `survival` of their accuracy
    before fine-tuning (means over seeds). A filter on conditions, as chapter 02's, not a premise with a CI."""
    g = controls.groupby(by)
    return (g.start_acc.mean() - g.removal_acc.mean()) <= survival


@dataclass(frozen=True)
class Backbone:
    model: str = "resnet20"
    width: int = 16
    dataset: str = "fashion-mnist"
    train_size: int | None = 4000
    test_size: int | None = 2000
    seeds: int = 3
    first_seed: int = 0
    pretrain_epochs: int = 15
    pretrain_lr: float = 0.1
    pretrain_weight_decay: float = 5e-4
    batch_size: int = 128
    precision: str = "fp32"

    def __post_init__(self):
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds={self.seeds!r} is invalid; allowed: an int >= 1")
        if not isinstance(self.first_seed, int) or self.first_seed < 0:
            raise ValueError(f"first_seed={self.first_seed!r} is invalid; allowed: an int >= 0")
        if self.model not in models.names():
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(models.names())}")

    def seed_list(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    def data(self) -> R.DataConfig:
        return R.DataConfig(self.dataset, self.train_size, self.test_size)

    def pretrain(self, seed: int, model: str | None = None, width: int | None = None,
                 precision: str | None = None) -> R.PretrainRun:
        """The dense model of `seed` (cosine schedule); `model`, `width` and `precision` override the backbone's."""
        return R.PretrainRun(
            self.data(), model or self.model, width or self.width,
            TrainConfig(epochs=self.pretrain_epochs, batch_size=self.batch_size, lr=self.pretrain_lr,
                        weight_decay=self.pretrain_weight_decay, lr_schedule="cosine",
                        precision=precision or self.precision, seed=seed))

    def finetune(self, seed: int, epochs: int, lr: float, weight_decay: float, schedule: str = "constant",
                 batch_size: int | None = None, precision: str | None = None) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=batch_size or self.batch_size, lr=lr, weight_decay=weight_decay,
                           lr_schedule=schedule, precision=precision or self.precision, seed=seed)


@dataclass(frozen=True)
class SmallResNet(Backbone):
    """The dense model of chapters 02 and 04 (the same runs): ResNet-8 w16, 10,000 training images, 20 epochs."""

    model: str = "resnet8"
    width: int = 16
    train_size: int | None = 10000
    test_size: int | None = 2000
    pretrain_epochs: int = 20


def decomposition_tracker(fractions, every_steps: int = 0) -> TrackerConfig:
    """Tracker settings that `decompose` needs: K(f) and D(f) at each fraction, plus |w| histograms."""
    return TrackerConfig(definitions=tuple(f"gmp:{f:g}" for f in fractions), kept_fractions=tuple(fractions),
                         per_layer=False, every_steps=every_steps, summaries=True)


def arms(bb: Backbone, seed: int, ft: TrainConfig, fractions, control_fraction: float,
         tracker: TrackerConfig) -> list[R.FinetuneRun]:
    """The unpruned control and one-shot GMP at each fraction, all fine-tuned under `ft` from the seed's model."""
    pre = bb.pretrain(seed)
    return [R.FinetuneRun(pre, R.PruneConfig("none", control_fraction, seed), ft, tracker),
            *(R.FinetuneRun(pre, R.PruneConfig("gmp", f, seed), ft, tracker) for f in fractions)]
