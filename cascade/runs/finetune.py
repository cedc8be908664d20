"""Run kind `finetune`: prune a pre-trained model (one-shot or by a schedule), then fine-tune it while the shedding
tracker watches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import models, pruning
from ..shedding import Tracker, TrackerConfig, parse
from ..store import Store
from ..train import Checkpoint, Evaluate, PruneSchedule, TrainConfig, check_eval_every, load_weights, train
from .base import DataConfig, Run, load_network, register, splits, train_images
from .pretrain import PretrainRun, initial

SCHEDULES = ("one-shot", "gradual", "cascade")


@dataclass(frozen=True)
class PruneConfig:
    """`criterion="none"` is the unpruned control: the tracker still uses GMP's tau0 at `fraction`.
    `stage_ratios` (with fraction 0) and `skip` are l1-filter's per-stage shares and dense blocks.
    `include_first=False` / `include_last=False` keep the stem conv / the classifier dense and out of every measure
    over the mask (`pruning.prunable_names`): at a few percent density a layer-uniform stem of 144 weights keeps 4."""

    criterion: str
    fraction: float
    seed: int = 0
    stage_ratios: tuple[float, ...] = ()
    skip: tuple[int, ...] = ()
    include_first: bool = True
    include_last: bool = True

    def __post_init__(self):
        allowed = ("none", *pruning.CRITERIA)
        if self.criterion not in allowed:
            raise ValueError(f"unknown criterion {self.criterion!r}; allowed: {', '.join(allowed)}")
        if not 0 <= self.fraction < 1:
            raise ValueError(f"fraction={self.fraction!r} is invalid; allowed: [0, 1)")
        if (self.stage_ratios or self.skip) and self.criterion != "l1-filter":
            raise ValueError(f"stage_ratios={self.stage_ratios!r}, skip={self.skip!r} are invalid for criterion "
                             f"{self.criterion!r}; allowed: empty, or criterion 'l1-filter'")
        if self.stage_ratios and self.fraction:
            raise ValueError(f"fraction={self.fraction!r} is invalid with stage_ratios; allowed: 0")

    def apply(self, model: torch.nn.Module, mask: pruning.Mask | None = None,
              fraction: float | None = None) -> pruning.Mask:
        """The mask this config prunes `model` to (from `mask`'s survivors; `fraction` overrides its own)."""
        opts = {k: v for k, v in (("stage_ratios", self.stage_ratios), ("skip", self.skip)) if v}
        return pruning.prune(model, self.criterion, self.fraction if fraction is None else fraction,
                             seed=self.seed, mask=self.dense(model) if mask is None else mask, **opts)

    def dense(self, model: torch.nn.Module) -> pruning.Mask:
        """The unpruned mask over the layers this config prunes."""
        return pruning.Mask.dense(model, self.include_first, self.include_last)


@register
@dataclass(frozen=True)
class FinetuneRun(Run):
    """Prune a pre-trained model, then fine-tune it while the shedding tracker watches.

    `schedule` says when the pruning happens: "one-shot" (all of it before fine-tuning), "gradual" (Zhu & Gupta's
    cubic schedule from the dense model to `prune.fraction`, an event every `prune_every` steps, one epoch's by
    default, until `prune_end` of the fine-tuning's steps) or "cascade" (the same events, cascade-aware: before each,
    the survivors that shed under the tracker's `effective` definition become pruned, and the criterion prunes only
    what the event's target still lacks; `train.PruneSchedule`).
    """

    kind: ClassVar[str] = "finetune"
    version: ClassVar[int] = 1
    pretrain: PretrainRun
    prune: PruneConfig
    finetune: TrainConfig
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    recompute_bn: bool = False  # BatchNorm statistics recomputed on the training data before every evaluation
    eval_every: int = 1  # test evaluations every k epochs and at the last (`Evaluate`)
    schedule: str = "one-shot"
    prune_end: float = 0.5
    prune_every: int = 0
    rewind_epoch: int | None = None
    schema: ClassVar[dict[str, type]] = {"tau0": float, "sparsity": float, "history": list, "final.test_acc": float,
                                         "tracker": list}

    def __post_init__(self):
        size = self.pretrain.data.train_size
        if size is not None and self.finetune.batch_size > size:
            raise ValueError(f"batch_size={self.finetune.batch_size} exceeds the training set (train_size={size}); "
                             "allowed: <= it")
        check_eval_every(self.eval_every)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is invalid; allowed: {', '.join(SCHEDULES)}")
        if not 0 < self.prune_end < 1 or not isinstance(self.prune_every, int) or self.prune_every < 0:
            raise ValueError(f"prune_end={self.prune_end!r}, prune_every={self.prune_every!r} are invalid; allowed: "
                             "prune_end in (0, 1), prune_every an int >= 0 (0: one epoch)")
        if self.schedule != "one-shot" and not (self.prune.include_first and self.prune.include_last):
            raise ValueError(f"include_first={self.prune.include_first!r}, include_last={self.prune.include_last!r} "
                             f"are invalid with schedule={self.schedule!r}; allowed: True with a pruning schedule "
                             "(its events prune every layer), or schedule 'one-shot'")
        if self.schedule != "one-shot" and self.prune.criterion == "none":
            raise ValueError(f"schedule={self.schedule!r} needs a pruning criterion; allowed with criterion 'none': "
                             "one-shot")
        if self.rewind_epoch is not None and (self.rewind_epoch not in self.pretrain.keep_epochs
                                              or self.schedule != "one-shot"):
            raise ValueError(f"rewind_epoch={self.rewind_epoch!r} is invalid with schedule={self.schedule!r}; "
                             f"allowed: None, or with schedule 'one-shot' an epoch in pretrain.keep_epochs="
                             f"{self.pretrain.keep_epochs}")
        if self.schedule == "cascade" and parse(self.tracker.effective)[0] in ("tau0", "gmp"):
            raise ValueError(f"schedule='cascade' with effective={self.tracker.effective!r} would prune by magnitude, "
                             "not by shedding; allowed: a scale-aware definition such as 'rms:0.05' or 'abs:0.001'")

    def deps(self) -> tuple[Run, ...]:
        return (self.pretrain,)

    def compute(self, store: Store, quiet: bool = True) -> dict:
        net = self.pretrain.network(store)
        train_set, test_set = splits(self.data)
        p = self.prune
        dense = p.dense(net)
        tau0 = pruning.gmp_threshold(net, dense, p.fraction)
        reference = {n: w.detach().float().cpu().clone() for n, w in net.named_parameters() if n in dense}
        mask = None if p.criterion == "none" or self.schedule != "one-shot" else p.apply(net)
        if self.rewind_epoch is not None:
            load_weights(store.checkpoint_dir(self.pretrain) / f"epoch_{self.rewind_epoch}.pt", net)
        bn_from = train_set if self.recompute_bn else None
        tracker = Tracker(self.tracker, mask if mask is not None else dense, tau0, test_set=test_set,
                          reference=reference, seed=p.seed, bn_from=bn_from)
        callbacks = [Evaluate(test_set, self.eval_every, bn_from=bn_from), tracker,
                     Checkpoint(store.checkpoint_dir(self))]
        if self.schedule != "one-shot":
            steps = self.finetune.epochs * (len(train_set) // self.finetune.batch_size)
            events = pruning.schedule("gradual", steps, p.fraction, t1=max(1, round(self.prune_end * steps)),
                                      every=self.prune_every or steps // self.finetune.epochs,
                                      num_weights=dense.num_total())
            callbacks.insert(0, PruneSchedule(p.criterion, events, seed=p.seed, final=p.fraction,
                                              shed=tracker.shed_masks if self.schedule == "cascade" else None))
        state = train(net, train_set, self.finetune, mask=mask, stats=train_set.stats(), quiet=quiet,
                      callbacks=callbacks, desc=f"{p.criterion} {p.fraction:g} s{self.finetune.seed}")
        macs = models.count(net, state.mask)
        result = {"tau0": tau0, "sparsity": state.mask.sparsity() if state.mask is not None else 0.0,
                  "macs": macs["macs"], "macs_kept": macs["macs_kept"],  # per image, of the final mask (`count`)
                  "history": state.history, "final": state.history[-1],
                  "tracker": [[*r[:4], float(f"{r[4]:.6g}")] for r in tracker.rows]}
        if self.schedule != "one-shot":
            result["prune_path"] = callbacks[0].path
        if self.tracker.summaries:
            result["summaries"] = tracker.summaries
        return result

    def labels(self) -> dict:
        ft = self.finetune
        return {"model": self.pretrain.model, "criterion": self.prune.criterion, "fraction": self.prune.fraction,
                "seed": ft.seed, "lr": ft.lr, "weight_decay": ft.weight_decay, "schedule": ft.lr_schedule,
                "batch_size": ft.batch_size, "epochs": ft.epochs, "precision": ft.precision,
                "init": "trained" if self.rewind_epoch is None else f"epoch {self.rewind_epoch}"}

    def cost(self) -> float:
        return train_images(self.data, self.finetune)

    @property
    def data(self) -> DataConfig:
        return self.pretrain.data

    def checkpoints(self) -> tuple[str, ...]:
        return ("last.pt",)

    def network(self, store: Store) -> torch.nn.Module:
        return load_network(self, store, initial(self.pretrain))
