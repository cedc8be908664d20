"""Run kinds: what one stored record is, how it is computed, and what it depends on.

A run is a frozen dataclass that subclasses `Run` and is registered with `@register`: its content hash
(with the kind's version) is its key in the store, so two experiments that need the same pre-trained model
share one record and one checkpoint. The executors (`core.execute`) know runs only through this protocol:
`deps()` (runs whose checkpoints it reads, computed first), `compute(store, quiet)` (the result dict),
`labels()` (columns for tables and plots) and `cost()` (for time estimates). Kinds that leave a trained
network also give `network(store)`, which a two-model evaluation (`compare`) reads. Adding a kind is one
module that defines and registers it; nothing else changes.

`ensure(run)` is skip-if-exists: it returns the stored record or computes it, resuming from the
run's last checkpoint if a previous attempt was interrupted.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import torch

from .. import data, models, provenance, pruning
from ..shedding import Tracker, TrackerConfig
from ..store import Store, config_hash
from ..timing import Stopwatch, phase
from ..train import Checkpoint, Evaluate, TrainConfig, default_device, load_weights, train


class Run:
    """The protocol of a run kind (subclasses are frozen dataclasses). `kind` names its folder in the store;
    bump `version` when its code changes what it computes, so old records turn stale instead of being reused."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    def deps(self) -> tuple[Run, ...]:
        """Runs that must be stored (and checkpointed) before this one computes."""
        return ()

    def compute(self, store: Store, quiet: bool = True) -> dict:
        """Compute the run, resuming from its checkpoint, store and return its record."""
        raise NotImplementedError

    def labels(self) -> dict:
        """Columns by which this run's rows are grouped in tables and plots."""
        return {}

    def cost(self) -> float:
        """Training images processed (SGD steps x batch size): what its wall time scales with."""
        return 0.0

    def network(self, store: Store) -> torch.nn.Module:
        """The trained network this run leaves (its checkpoint, recomputed when the cache lacks it)."""
        raise ValueError(f"run kind {self.kind!r} leaves no trained network; allowed: "
                         f"{', '.join(k for k, c in KINDS.items() if c.network is not Run.network)}")


KINDS: dict[str, type[Run]] = {}
K = TypeVar("K", bound=type[Run])


def register(cls: K) -> K:
    """Make a run kind known to the store's migration and status (kinds are found by name in records)."""
    if KINDS.get(cls.kind, cls) is not cls:
        raise ValueError(f"run kind {cls.kind!r} is registered twice; allowed: a new name")
    KINDS[cls.kind] = cls
    return cls


def train_images(data_cfg: DataConfig, cfg: TrainConfig) -> float:
    """Images an SGD run of `cfg` on `data_cfg` trains on (whole batches): what `cost()` measures."""
    n = len(splits(data_cfg)[0])
    return (cfg.epochs - cfg.start_epoch) * (n // cfg.batch_size) * cfg.batch_size


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"
    train_size: int | None = 4000
    test_size: int | None = 2000
    subset_seed: int = 0

    def __post_init__(self):
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; allowed: {', '.join(data.DATASETS)}")


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
    keep_epochs: tuple[int, ...] = ()  # epochs whose weights are kept for weight rewinding (0: the init)

    def __post_init__(self):
        if self.model not in models.names():
            raise ValueError(f"unknown model {self.model!r}; allowed: {', '.join(models.names())}")
        if not all(isinstance(e, int) and 0 <= e <= self.train.epochs for e in self.keep_epochs):
            raise ValueError(f"keep_epochs={self.keep_epochs!r} is invalid; allowed: epochs in "
                             f"[0, {self.train.epochs}]")

    def compute(self, store: Store, quiet: bool = True) -> dict:
        return pretrained(self, store, quiet)[1]

    def labels(self) -> dict:
        t = self.train
        return {"model": self.model, "width": self.width, "seed": t.seed, "lr": t.lr, "weight_decay": t.weight_decay,
                "batch_size": t.batch_size, "epochs": t.epochs, "precision": t.precision}

    def cost(self) -> float:
        return train_images(self.data, self.train)

    def network(self, store: Store) -> torch.nn.Module:
        return pretrained(self, store)[0]


@dataclass(frozen=True)
class PruneConfig:
    """`criterion="none"` is the unpruned control: the tracker still uses GMP's tau0 at `fraction`.
    `stage_ratios` (with fraction 0) and `skip` are l1-filter's per-stage shares and dense blocks."""

    criterion: str
    fraction: float
    seed: int = 0
    stage_ratios: tuple[float, ...] = ()
    skip: tuple[int, ...] = ()

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
                             seed=self.seed, mask=mask, **opts)


@register
@dataclass(frozen=True)
class FinetuneRun(Run):
    """Prune a pre-trained model one-shot, then fine-tune it while the shedding tracker watches."""

    kind: ClassVar[str] = "finetune"
    version: ClassVar[int] = 1
    pretrain: PretrainRun
    prune: PruneConfig
    finetune: TrainConfig
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def deps(self) -> tuple[Run, ...]:
        return (self.pretrain,)

    def compute(self, store: Store, quiet: bool = True) -> dict:
        return finetuned(self, store, quiet)

    def labels(self) -> dict:
        ft = self.finetune
        return {"model": self.pretrain.model, "criterion": self.prune.criterion, "fraction": self.prune.fraction,
                "seed": ft.seed, "lr": ft.lr, "weight_decay": ft.weight_decay, "schedule": ft.lr_schedule,
                "batch_size": ft.batch_size,
                "epochs": ft.epochs, "precision": ft.precision}

    def cost(self) -> float:
        return train_images(self.pretrain.data, self.finetune)

    @property
    def data(self) -> DataConfig:
        return self.pretrain.data

    def network(self, store: Store) -> torch.nn.Module:
        net, _ = pretrained(self.pretrain, store)
        return checkpointed(self, store, net)


@functools.lru_cache(maxsize=4)
def splits(cfg: DataConfig) -> tuple[data.Split, data.Split]:
    with phase("data"):
        return data.load(cfg.dataset, cfg.train_size, cfg.test_size, seed=cfg.subset_seed)


def record_meta(clock: Stopwatch) -> dict:
    """Provenance, plus where the run's time went and the model FLOPs it trained and evaluated."""
    return {**provenance.meta(clock.elapsed(), str(default_device())), "phases_s": clock.phases(),
            "model_flops": clock.model_flops()}


def initial(run: PretrainRun) -> torch.nn.Module:
    """The untrained network of `run`: its init is a function of its seed (the lottery ticket's init)."""
    train_set, _ = splits(run.data)
    torch.manual_seed(run.train.seed)
    return models.build(run.model, in_channels=train_set.in_channels, num_classes=train_set.num_classes,
                        width=run.width)


def checkpointed(run: Run, store: Store, net: torch.nn.Module) -> torch.nn.Module:
    """`net` (built with the run's architecture) holding the run's final weights; recomputes the run when its
    checkpoint is not in the cache (a fresh clone has the records, not the checkpoints)."""
    path = store.checkpoint_dir(run.kind, store_key(run)) / "last.pt"
    if not path.exists():
        run.compute(store, quiet=True)
    load_weights(path, net)
    return net


def pretrained(run: PretrainRun, store: Store, quiet: bool = True) -> tuple[torch.nn.Module, dict]:
    """The trained dense model of `run` and its record; computes (or resumes) it when missing."""
    train_set, test_set = splits(run.data)
    ckdir = store.checkpoint_dir(run.kind, store_key(run))
    record = store.get(run.kind, run, run.version)
    net = initial(run)
    finished = [ckdir / "last.pt", *(ckdir / f"epoch_{e}.pt" for e in run.keep_epochs)]
    if record is not None and all(p.exists() for p in finished):
        load_weights(finished[0], net)
        return net, record
    clock = Stopwatch()
    state = train(net, train_set, run.train, callbacks=[Evaluate(test_set), Checkpoint(ckdir, run.keep_epochs)],
                  quiet=quiet,
                  desc=f"pretrain {run.model} s{run.train.seed}")
    result = {"epochs": run.train.epochs, "history": state.history, "final": state.history[-1],
              "counts": models.count(net)}
    if record is None:
        record = store.put(run.kind, run, run.version, result, record_meta(clock))
    return net, record


def store_key(run) -> str:
    return config_hash(run, run.version)


def finetuned(run: FinetuneRun, store: Store, quiet: bool = True) -> dict:
    """Record of prune-then-fine-tune `run`; computes (or resumes) it when it or its checkpoint is missing.
    A stored record is never overwritten (recomputing on another CPU may differ in the last bits)."""
    record = store.get(run.kind, run, run.version)
    if record is not None and (store.checkpoint_dir(run.kind, store_key(run)) / "last.pt").exists():
        return record
    net, _ = pretrained(run.pretrain, store, quiet)
    clock = Stopwatch()
    train_set, test_set = splits(run.pretrain.data)
    p = run.prune
    tau0 = pruning.gmp_threshold(net, None, p.fraction)
    dense = pruning.Mask.dense(net)
    reference = {n: w.detach().float().cpu().clone() for n, w in net.named_parameters() if n in dense}
    mask = None if p.criterion == "none" else p.apply(net)
    tracker = Tracker(run.tracker, mask if mask is not None else dense, tau0, test_set=test_set, reference=reference)
    state = train(net, train_set, run.finetune, mask=mask, stats=train_set.stats(),
                  callbacks=[Evaluate(test_set), tracker, Checkpoint(store.checkpoint_dir(run.kind, store_key(run)))],
                  quiet=quiet, desc=f"{p.criterion} {p.fraction:g} s{run.finetune.seed}")
    result = {"tau0": tau0, "sparsity": mask.sparsity() if mask is not None else 0.0, "history": state.history,
              "final": state.history[-1], "tracker": [[*r[:4], _round(r[4])] for r in tracker.rows]}
    if run.tracker.summaries:
        result["summaries"] = tracker.summaries
    return record or store.put(run.kind, run, run.version, result, record_meta(clock))


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def ensure(run: Run, store: Store, quiet: bool = True) -> dict:
    """The stored record of `run`, computed first when missing."""
    record = store.get(run.kind, run, run.version)
    return record if record is not None else run.compute(store, quiet)


def closure(runs) -> list[Run]:
    """`runs` and everything they depend on, each once, every run after its dependencies."""
    out: dict[Run, None] = {}

    def visit(run: Run) -> None:
        if run not in out:
            for dep in run.deps():
                visit(dep)
            out[run] = None

    for run in runs:
        visit(run)
    return list(out)
