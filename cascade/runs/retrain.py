"""Run kind `retrain`: prune a trained dense model, choose its survivors' starting weights, train again.

One kind covers the protocols that start over from a pruned model instead of fine-tuning it in place:

- `init="trained"`: the survivors keep their trained values (fine-tuning; with `train.start_epoch > 0` the LR
  schedule is replayed from there, which is learning-rate rewinding);
- `init="rewind"`: the survivors take their values at epoch `rewind_epoch` of the dense run. Epoch 0 is the
  original init, Frankle & Carbin's winning ticket; epoch k > 0 is weight rewinding and needs k in the
  pretrain run's `keep_epochs`;
- `init="random"`: a fresh init drawn with `init_seed` (Liu et al.'s random re-initialisation, Scratch-E/B).

A structured criterion (`l1-filter`) builds the thin network (`pruning.thin`), so the pruned architecture is
trained as a network of its own; the other criteria train the dense architecture under a fixed mask.
`budget="flops"` scales the epochs by MACs(dense) / MACs(pruned), capped at `budget_cap` (Scratch-B).
`rounds > 1` is iterative pruning: every round removes the same share of the survivors, so that
1 - (1 - fraction)^(i / rounds) of the weights is gone after round i, and trains again under the same init rule.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import models, pruning
from ..store import Store
from ..train import Checkpoint, Evaluate, TrainConfig, check_eval_every, load_weights, train
from .base import Run, load_network, register, splits, train_images
from .finetune import PruneConfig
from .pretrain import PretrainRun, initial

INITS = ("trained", "rewind", "random")
BUDGETS = ("epochs", "flops")
STRUCTURED = ("l1-filter",)


@register
@dataclass(frozen=True)
class RetrainRun(Run):
    """Prune `pretrain`'s trained model by `prune`, start the survivors from `init`, train under `train`."""

    kind: ClassVar[str] = "retrain"
    version: ClassVar[int] = 1
    pretrain: PretrainRun
    prune: PruneConfig
    train: TrainConfig
    init: str = "trained"
    rewind_epoch: int = 0
    init_seed: int = 0
    budget: str = "epochs"
    budget_cap: float = 2.0
    rounds: int = 1
    eval_every: int = 1  # test evaluations every k epochs and at the last (`Evaluate`)
    schema: ClassVar[dict[str, type]] = {"sparsity": float, "epochs": int, "counts.macs_kept": int,
                                         "counts.params_kept": int, "history": list, "final.test_acc": float,
                                         "macs_dense": int, "rounds": list}

    def __post_init__(self):
        checks = [
            ("init", self.init in INITS, ", ".join(INITS)),
            ("budget", self.budget in BUDGETS, ", ".join(BUDGETS)),
            ("budget_cap", self.budget_cap >= 1, "a float >= 1"),
            ("rounds", isinstance(self.rounds, int) and self.rounds >= 1
             and (self.rounds == 1 or not self.structured), "an int >= 1 (1 for structured criteria)"),
            ("prune.criterion", self.prune.criterion != "none", ", ".join(pruning.CRITERIA)),
            ("rewind_epoch", self.rewind_epoch == 0 or (self.init == "rewind"
                                                        and self.rewind_epoch in self.pretrain.keep_epochs),
             f"0, or with init='rewind' an epoch in pretrain.keep_epochs={self.pretrain.keep_epochs}"),
            ("init_seed", self.init != "random" or self.init_seed != self.pretrain.train.seed,
             f"a seed other than the pretrain seed {self.pretrain.train.seed} (that init is the ticket)"),
        ]
        check_eval_every(self.eval_every)
        for name, ok, allowed in checks:
            if not ok:
                value = self.prune.criterion if name == "prune.criterion" else getattr(self, name)
                raise ValueError(f"{name}={value!r} is invalid for a retrain run; allowed: {allowed}")

    @property
    def structured(self) -> bool:
        return self.prune.criterion in STRUCTURED

    @property
    def data(self):
        return self.pretrain.data

    def deps(self) -> tuple[Run, ...]:
        return (self.pretrain,)

    def compute(self, store: Store, quiet: bool = True) -> dict:
        return retrained(self, store, quiet)

    def checkpoints(self) -> tuple[str, ...]:
        return ("last.pt",)

    def labels(self) -> dict:
        t, p = self.train, self.prune
        return {"model": self.pretrain.model, "criterion": p.criterion, "fraction": p.fraction,
                "stage_ratios": ",".join(f"{r:g}" for r in p.stage_ratios), "init": self.init,
                "rewind_epoch": self.rewind_epoch, "budget": self.budget, "rounds": self.rounds,
                "seed": self.pretrain.train.seed, "data_seed": t.seed, "lr": t.lr, "weight_decay": t.weight_decay,
                "schedule": t.lr_schedule,
                "batch_size": t.batch_size, "precision": t.precision}

    def cost(self) -> float:
        """Training images, all rounds; with `budget="flops"` an upper bound (the cap)."""
        scale = self.budget_cap if self.budget == "flops" else 1.0
        return self.rounds * scale * train_images(self.data, self.train)

    def network(self, store: Store) -> torch.nn.Module:
        record = store.get(self)
        if record is None:
            raise ValueError(f"retrain/{self.key} is not stored; allowed: a computed run (its record gives the "
                             "thin architecture)")
        return load_network(self, store, _architecture(self, record["result"].get("mid_channels")))


def _architecture(run: RetrainRun, mid_channels: list[int] | None) -> torch.nn.Module:
    """A freshly initialised network of `run`'s architecture: thin when `mid_channels` is given."""
    train_set, _ = splits(run.data)
    extra = {"mid_channels": mid_channels} if mid_channels is not None else {}
    return models.build(run.pretrain.model, in_channels=train_set.in_channels, num_classes=train_set.num_classes,
                        width=run.pretrain.width, **extra)


def _source(run: RetrainRun, trained: torch.nn.Module, store: Store) -> torch.nn.Module:
    """The dense-architecture weights the survivors start from."""
    if run.init == "trained":
        return copy.deepcopy(trained)
    if run.init == "random":
        torch.manual_seed(run.init_seed)
        return _architecture(run, None)
    net = initial(run.pretrain)
    if run.rewind_epoch:
        load_weights(store.checkpoint_dir(run.pretrain) / f"epoch_{run.rewind_epoch}.pt", net)
    return net


def _start(run: RetrainRun, trained: torch.nn.Module, mask: pruning.Mask, store: Store) -> torch.nn.Module:
    """The network a round trains: the source's survivors, thin for structured criteria."""
    source = _source(run, trained, store)
    if not run.structured:
        return mask.apply(source)
    train_set, _ = splits(run.data)
    if run.init == "random":  # the thin network's own init: its layers have their own fan-out
        torch.manual_seed(run.init_seed)
    return pruning.thin(source, mask, run.pretrain.model, copy_weights=run.init != "random",
                        in_channels=train_set.in_channels, num_classes=train_set.num_classes,
                        width=run.pretrain.width)


def budgeted(run: RetrainRun, macs_dense: int, macs: int) -> TrainConfig:
    """`run.train`, with its epochs scaled by min(cap, MACs(dense) / MACs(pruned)) under `budget="flops"`."""
    if run.budget == "epochs":
        return run.train
    return dataclasses.replace(run.train, epochs=round(run.train.epochs * min(run.budget_cap, macs_dense / macs)))


def retrained(run: RetrainRun, store: Store, quiet: bool = True) -> dict:
    """The result of `run`: prune, restart and train, round by round (each round resumes from its checkpoint)."""
    trained = run.pretrain.network(store)
    train_set, test_set = splits(run.data)
    ckdir = store.checkpoint_dir(run)
    macs_dense = models.count(trained)["macs"]
    mask, gone, rounds = run.prune.dense(trained), 0.0, []
    for i in range(1, run.rounds + 1):
        target = 1 - (1 - run.prune.fraction) ** (i / run.rounds)
        mask = run.prune.apply(trained, mask, target - gone)
        gone = target
        net = _start(run, trained, mask, store)
        counts = models.count(net, None if run.structured else mask)
        cfg = budgeted(run, macs_dense, counts["macs_kept"])
        folder = ckdir if i == run.rounds else ckdir / f"round_{i}"
        state = train(net, train_set, cfg, mask=None if run.structured else mask,
                      callbacks=[Evaluate(test_set, run.eval_every), Checkpoint(folder)], quiet=quiet,
                      desc=f"retrain {run.init} {run.prune.criterion} round {i}/{run.rounds} s{run.train.seed}")
        rounds.append({"round": i, "sparsity": mask.sparsity(), "epochs": cfg.epochs, "counts": counts,
                       "history": state.history, "final": state.history[-1]})
        trained = net
    result = {**rounds[-1], "macs_dense": macs_dense, "rounds": rounds}
    if run.structured:
        result["mid_channels"] = [m.out_channels for n, m in trained.named_modules() if n.endswith(".conv1")]
    return result
