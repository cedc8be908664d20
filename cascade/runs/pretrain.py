"""Run kind `pretrain`: a dense model trained from scratch, the start of every chapter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import models
from ..store import Store
from ..train import Checkpoint, Evaluate, TrainConfig, check_eval_every, train
from .base import DataConfig, Run, load_network, register, splits, train_images


@register
@dataclass(frozen=True)
class PretrainRun(Run):
    """Train a dense model from scratch (its seed is `train.seed`)."""

    kind: ClassVar[str] = "pretrain"
    version: ClassVar[int] = 1
    data: DataConfig
    model: str
    width: int
    train: TrainConfig
    # Epochs whose weights are kept for weight rewinding (0: the init). Epoch 1 by default, 5% of the book's 20-epoch
    # recipe (Renda et al. rewind to 6-7%): any chapter can rewind to it without a dense run of its own. A checkpoint
    # is not a result, so the default leaves every key as it was; a cache without it is rebuilt once (`Run.ensure`).
    keep_epochs: tuple[int, ...] = (1,)
    eval_every: int = 1  # test evaluations every k epochs and at the last (`Evaluate`)
    schema: ClassVar[dict[str, type]] = {"epochs": int, "history": list, "final.test_acc": float, "counts": dict}

    def __post_init__(self):
        if self.model not in models.names():
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(models.names())}")
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise ValueError(f"width={self.width!r} is invalid; allowed: an int >= 1")
        if self.data.train_size is not None and self.train.batch_size > self.data.train_size:
            raise ValueError(f"batch_size={self.train.batch_size} exceeds the training set "
                             f"(train_size={self.data.train_size}); allowed: <= it")
        if not all(isinstance(e, int) and 0 <= e <= self.train.epochs for e in self.keep_epochs):
            raise ValueError(f"keep_epochs={self.keep_epochs!r} is invalid; allowed: epochs in "
                             f"[0, {self.train.epochs}]")
        check_eval_every(self.eval_every)

    def compute(self, store: Store, quiet: bool = True) -> dict:
        train_set, test_set = splits(self.data)
        net = initial(self)
        state = train(net, train_set, self.train, quiet=quiet, desc=f"pretrain {self.model} s{self.train.seed}",
                      callbacks=[Evaluate(test_set, self.eval_every),
                                 Checkpoint(store.checkpoint_dir(self), self.keep_epochs)])
        return {"epochs": self.train.epochs, "history": state.history, "final": state.history[-1],
                "counts": models.count(net)}

    def labels(self) -> dict:
        t = self.train
        return {"model": self.model, "width": self.width, "seed": t.seed, "lr": t.lr, "weight_decay": t.weight_decay,
                "batch_size": t.batch_size, "epochs": t.epochs, "precision": t.precision}

    def cost(self) -> float:
        return train_images(self.data, self.train)

    def checkpoints(self) -> tuple[str, ...]:
        return ("last.pt", *(f"epoch_{e}.pt" for e in self.keep_epochs))

    def network(self, store: Store) -> torch.nn.Module:
        return load_network(self, store, initial(self))


def initial(run: PretrainRun) -> torch.nn.Module:
    """The untrained network of `run`: its init is a function of its seed (the lottery ticket's init)."""
    train_set, _ = splits(run.data)
    torch.manual_seed(run.train.seed)
    return models.build(run.model, in_channels=train_set.in_channels, num_classes=train_set.num_classes,
                        width=run.width)
