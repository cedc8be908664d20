"""One training loop for pre-training, fine-tuning, rewinding and training from scratch.

The loop only steps the optimizer; evaluation, the shedding tracker, pruning events and checkpoints
are callbacks. Every epoch's batches depend only on (seed, epoch) and the LR only on the global
step, so a run resumed from an epoch checkpoint ends with exactly the metrics of an uninterrupted one.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import models, pruning
from ._cpu import guard_amx, keep_allocations
from .timing import FLOPS, phase, timed
from .data import Loader, Split

LR_SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")
SEEDS = 2 ** 32  # seeds are below this: the loader seeds a generator with seed * 100_003 + epoch
OPTIMIZERS = ("sgd", "sam")  # the training loop takes its optimizer by name from the config (`make_optimizer`)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that can change a training run's result (it is hashed into the run's key).

    Weight decay applies to every parameter, BatchNorm and biases included, by default
    (`decay_norm_and_bias=True`): that is what the reference CIFAR code of Liu et al. and Zhou et al.
    does, and shrinking BN gammas is one route by which channels die, which is what we measure.
    `start_epoch > 0` replays the schedule of an `epochs`-long run from that epoch: LR rewinding.
    `optimizer="sam"` is sharpness-aware SGD with radius `sam_rho` (`SAM`); both are left out of a run's key at
    their defaults, so every SGD record keeps its key.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    sam_rho: float = 0.05
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True
    lr_schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: int = 0
    start_epoch: int = 0
    augment: bool = True
    precision: str = "fp32"
    channels_last: bool = True
    seed: int = 0

    def __post_init__(self):
        # Lazy checks, in order, so a wrongly typed value ("10" for epochs) is reported, not a TypeError.
        checks = [
            ("lr_schedule", lambda: self.lr_schedule in LR_SCHEDULES, ", ".join(LR_SCHEDULES)),
            ("optimizer", lambda: self.optimizer in OPTIMIZERS, ", ".join(OPTIMIZERS)),
            ("sam_rho", lambda: 0 < self.sam_rho < math.inf, "a finite float > 0"),
            ("precision", lambda: self.precision in PRECISIONS, ", ".join(PRECISIONS)),
            ("epochs", lambda: _is_int(self.epochs) and self.epochs >= 0, "an int >= 0"),
            ("batch_size", lambda: _is_int(self.batch_size) and self.batch_size >= 1, "an int >= 1"),
            ("lr", lambda: 0 <= self.lr < math.inf, "a finite float >= 0"),
            ("momentum", lambda: 0 <= self.momentum < 1, "a float in [0, 1)"),
            ("nesterov", lambda: not self.nesterov or self.momentum > 0, "False when momentum is 0"),
            ("weight_decay", lambda: 0 <= self.weight_decay < math.inf, "a finite float >= 0"),
            ("gamma", lambda: 0 < self.gamma < math.inf, "a finite float > 0"),
            ("seed", lambda: _is_int(self.seed) and 0 <= self.seed < SEEDS, f"an int in [0, {SEEDS})"),
            ("warmup_epochs", lambda: _is_int(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
             f"an int in [0, epochs={self.epochs}]"),
            ("start_epoch", lambda: _is_int(self.start_epoch) and 0 <= self.start_epoch <= self.epochs,
             f"an int in [0, epochs={self.epochs}]"),
            ("milestones", lambda: all(0 < m < 1 for m in self.milestones), "fractions of the run in (0, 1)"),
        ]
        for name, ok, allowed in checks:
            try:
                valid = ok()
            except TypeError:
                valid = False
            if not valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global `step` of an `epochs`-long run (warm-up, then the schedule)."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.gamma ** sum(step >= m * total for m in cfg.milestones)
    if cfg.lr_schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
    # one-cycle: linear rise from lr/25 over the first 30%, then cosine annealing to 0
    return cfg.lr * (0.04 + 0.96 * t / 0.3) if t < 0.3 else 0.5 * cfg.lr * (1 + math.cos(math.pi * (t - 0.3) / 0.7))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@dataclass
class State:
    """What callbacks see: the live model, optimizer and mask, counters, and the metric history."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    stats: tuple[torch.Tensor, torch.Tensor]
    device: torch.device
    mask: pruning.Mask | None = None
    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def set_mask(self, mask) -> None:
        """Install a new mask: zero pruned weights and their momentum so nothing revives them."""
        self.mask = mask
        mask.apply_(self.model)
        mask.zero_state(self.optimizer, self.model)


class Callback:
    """Hooks of the loop. `every_steps > 0` also calls on_step every that many steps. Their time counts as
    `phase` in the run's record."""

    every_steps = 0
    phase = "callbacks"

    def on_start(self, state: State) -> None: ...

    def on_step(self, state: State) -> None: ...

    def on_epoch_end(self, state: State) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None: ...


def evaluate(model, split: Split, stats, device, precision: str = "fp32", batch_size: int = 1000,
             bn_from: Split | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on `split`, in eval mode. With `bn_from`, a copy of the model is evaluated,
    its BatchNorm statistics recomputed on that split first: running averages lag behind weights that a hot
    fine-tuning moves fast, and a stale average can put a network that trains well at chance on the test set."""
    if bn_from is not None:
        model = copy.deepcopy(model)
        reset_bn(model, Loader(bn_from, batch_size, train=False, stats=stats, device=device))
        FLOPS[flops_key("eval", precision)] += 2 * macs(model, bn_from) * len(bn_from)
    loader = Loader(split, batch_size, train=False, stats=stats, device=device)
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    with torch.no_grad(), autocast(device, precision):
        for x, y in loader.epoch():
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    FLOPS[flops_key("eval", precision)] += 2 * macs(model, split) * len(split)
    return loss.item() / len(split), correct.item() / len(split)


@torch.no_grad()
def reset_bn(net: torch.nn.Module, loader: Loader) -> None:
    """Running BatchNorm statistics recomputed as the exact average over one pass of `loader`."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for x, _ in loader.epoch():
        net(x)
    net.eval()


def macs(model: torch.nn.Module, split: Split) -> int:
    """MACs of one forward pass of one of `split`'s images, pruned weights included (they are computed)."""
    return models.count(model, input_size=split.x.shape[-1])["macs"]


def flops_key(work: str, precision: str) -> str:
    """The `cascade.timing.FLOPS` entry of `work` ("train", "eval") in `precision`: "train", "eval_bf16", ..."""
    return work if precision == "fp32" else f"{work}_{precision}"


def check_eval_every(every) -> None:
    """A run kind's `eval_every`, checked when the run is made rather than when its training reaches it."""
    if not _is_int(every) or every < 1:
        raise ValueError(f"eval_every={every!r} is invalid; allowed: an int >= 1")


class Evaluate(Callback):
    """Test loss and accuracy before the first epoch (as epoch 0), at every `every`-th epoch end and at the last.

    `every > 1` saves the evaluation time of long runs on a large test set; the final accuracy is the same.
    `bn_from` recomputes the BatchNorm statistics on that split before each evaluation (`evaluate`).
    """

    phase = "eval"

    def __init__(self, test_set: Split, every: int = 1, bn_from: Split | None = None):
        check_eval_every(every)
        self.test_set, self.every, self.bn_from = test_set, every, bn_from

    def _evaluate(self, state: State) -> None:
        state.metrics["test_loss"], state.metrics["test_acc"] = evaluate(
            state.model, self.test_set, state.stats, state.device, state.cfg.precision, bn_from=self.bn_from)

    on_start = _evaluate

    def on_epoch_end(self, state: State) -> None:
        if state.epoch % self.every == 0 or state.epoch == state.cfg.epochs:
            self._evaluate(state)


class Checkpoint(Callback):
    """Atomic checkpoint at every epoch end (`last.pt`), plus `epoch_K.pt` for each K in `keep`.

    `restore` is used by train() to resume; `keep` serves weight rewinding.
    """

    phase = "checkpoint"

    def __init__(self, directory: str | os.PathLike, keep: tuple[int, ...] = ()):
        self.dir, self.keep = Path(directory), tuple(keep)

    def _payload(self, state: State, callbacks) -> dict:
        return {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                "mask": state.mask.state_dict() if state.mask is not None else None,
                "epoch": state.epoch, "step": state.step, "history": state.history,
                "callbacks": [cb.state_dict() for cb in callbacks]}

    def save(self, state: State, callbacks) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = self._payload(state, callbacks)
        names = ["last.pt"] + ([f"epoch_{state.epoch}.pt"] if state.epoch in self.keep else [])
        for name in names:
            tmp = self.dir / f".{name}.{os.getpid()}.tmp"
            torch.save(payload, tmp)
            os.replace(tmp, self.dir / name)

    def restore(self, state: State, callbacks) -> bool:
        """Resume from `last.pt`; False when there is none, or when it cannot be read (it is then deleted, and the
        run starts over). One that reads but does not fit the run is deleted too, raising RestartRun, as the state
        may be half loaded by then."""
        path = self.dir / "last.pt"
        if not path.exists():
            return False
        try:
            ck = read_checkpoint(path, state.device)
        except CorruptCheckpoint:
            path.unlink()
            return False
        try:
            state.model.load_state_dict(ck["model"])
            state.optimizer.load_state_dict(ck["optimizer"])
            if ck["mask"] is not None:
                from .pruning import Mask
                state.mask = Mask.from_state_dict(state.model, ck["mask"])
            state.epoch, state.step, state.history = ck["epoch"], ck["step"], ck["history"]
            for cb, d in zip(callbacks, ck["callbacks"]):
                cb.load_state_dict(d)
        except (KeyError, RuntimeError, ValueError, TypeError):
            path.unlink()
            raise RestartRun(f"checkpoint {path} does not fit this run and is deleted; allowed: run again, "
                             "from the start") from None
        return True


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read as one (truncated, not a checkpoint, or refused by weights_only)."""


class RestartRun(Exception):
    """A run's checkpoint was unusable and is deleted: the run starts over from its initial state."""


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint's payload, loaded with weights_only (no code runs); CorruptCheckpoint names the file otherwise."""
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, a pickle weights_only refuses, not a torch file at all
        first = next(iter(str(e).strip().splitlines()), "")
        raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({type(e).__name__}: {first[:120]}); "
                                "allowed: a checkpoint cascade wrote (delete it, and `run` recomputes it)") from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise CorruptCheckpoint(f"checkpoint {path} holds no model weights; allowed: a checkpoint cascade wrote "
                                "(delete it, and `run` recomputes it)")
    return ck


def load_weights(path: str | os.PathLike, model: torch.nn.Module, mask=None) -> None:
    """Load a checkpoint's weights into `model` (weight rewinding when `mask` is given: survivors only)."""
    ck = read_checkpoint(path)
    model.load_state_dict(ck["model"])
    if mask is not None:
        mask.apply(model)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    if cfg.decay_norm_and_bias:
        return [{"params": list(model.parameters())}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]


class SAM(torch.optim.SGD):
    """Sharpness-aware minimisation (Foret et al. 2021) over SGD: the gradient is taken again at w + rho g / ||g||
    (g the gradient at w, its norm over every parameter), and SGD steps from w with it. The loop calls `perturb`
    after the first backward pass and `restore` after the second; `step` is SGD's, so momentum and weight decay
    act as in SGD. Pruned weights have zero gradients, so they are not perturbed either."""

    def __init__(self, params, rho: float, **sgd):
        super().__init__(params, **sgd)
        self.rho, self._shift = rho, []

    @torch.no_grad()
    def perturb(self) -> None:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / norm.clamp_min(1e-12)
        self._shift = [(p, p.grad * scale) for p in params]
        for p, e in self._shift:
            p.add_(e)

    @torch.no_grad()
    def restore(self) -> None:
        for p, e in self._shift:
            p.sub_(e)
        self._shift = []


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names, over `param_groups(model, cfg)`."""
    sgd = dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups(model, cfg), **sgd)
    if cfg.optimizer == "sam":
        return SAM(param_groups(model, cfg), cfg.sam_rho, **sgd)
    raise ValueError(f"optimizer={cfg.optimizer!r} is invalid; allowed: {', '.join(OPTIMIZERS)}")


@contextmanager
def frozen_norm_statistics(model: torch.nn.Module):
    """BatchNorm running statistics left as they are (momentum 0) inside: SAM's second, perturbed pass normalises
    with its own batch statistics but does not update the running ones, which then move once per step, from the
    unperturbed pass (as in Zhou et al.'s code)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def train(model: torch.nn.Module, train_set: Split, cfg: TrainConfig, *, mask=None, callbacks=(),
          device=None, stats=None, quiet: bool = False, desc: str = "train") -> State:
    """Train `model` in place under `cfg` from epoch `cfg.start_epoch` to `cfg.epochs`.

    With a mask, pruned gradients are zeroed before and pruned weights re-zeroed after every
    optimizer step (one fused op each), so masked weights stay exactly 0 under momentum and
    weight decay. A `Checkpoint` callback makes the run resumable.
    """
    state, loader = setup(model, train_set, cfg, mask=mask, device=device, stats=stats)
    callbacks = list(callbacks)
    restore(state, callbacks)
    epochs(state, loader, 6 * macs(model, train_set), callbacks, quiet, desc)  # forward 2, backward 4 x MACs
    return state


def setup(model: torch.nn.Module, train_set: Split, cfg: TrainConfig, *, mask=None, device=None,
          stats=None) -> tuple[State, Loader]:
    """The state at `cfg.start_epoch` (model on its device and memory format, optimizer, mask installed) and the
    loader whose batches depend only on (seed, epoch)."""
    guard_amx()
    keep_allocations()
    device = torch.device(device) if device is not None else default_device()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt).train()
    stats = stats if stats is not None else train_set.stats()
    loader = Loader(train_set, cfg.batch_size, train=True, seed=cfg.seed, augment=cfg.augment, stats=stats,
                    device=device, channels_last=cfg.channels_last)
    if len(loader) == 0:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the training set ({len(train_set)}); allowed: <= it")
    state = State(model, make_optimizer(model, cfg), cfg, stats, device, epoch=cfg.start_epoch,
                  step=cfg.start_epoch * len(loader), steps_per_epoch=len(loader))
    if mask is not None:
        state.set_mask(mask)
    return state, loader


def restore(state: State, callbacks: list) -> None:
    """Resume from the `Checkpoint` callback's last checkpoint; without one, start: the callbacks' `on_start`, the
    first history row, and a checkpoint of the start where rewinding needs it or nothing is left to train."""
    ckpt = next((cb for cb in callbacks if isinstance(cb, Checkpoint)), None)
    if ckpt and ckpt.restore(state, callbacks):
        return
    for cb in callbacks:
        with phase(cb.phase):
            cb.on_start(state)
    state.history.append({"epoch": state.epoch, **state.metrics})
    if ckpt is not None and (state.epoch in ckpt.keep or state.epoch >= state.cfg.epochs):
        with phase(ckpt.phase):
            ckpt.save(state, callbacks)  # rewinding to the starting weights, or a run with nothing to train


def epochs(state: State, loader: Loader, flops_per_image: float, callbacks: list, quiet: bool = False,
           desc: str = "train") -> None:
    """The epoch loop from `state.epoch` to `cfg.epochs`: steps, step callbacks, epoch-end callbacks, checkpoints;
    `flops_per_image` (model FLOPs of one trained image) is counted for the run's record."""
    cfg, model, optimizer, device = state.cfg, state.model, state.optimizer, state.device
    ckpt = next((cb for cb in callbacks if isinstance(cb, Checkpoint)), None)
    stepped = [cb for cb in callbacks if cb.every_steps]
    key = flops_key("train", cfg.precision)
    bar = tqdm(total=(cfg.epochs - cfg.start_epoch) * len(loader), initial=state.step - cfg.start_epoch * len(loader),
               desc=desc, disable=quiet, leave=False, dynamic_ncols=True)
    while state.epoch < cfg.epochs:
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for x, y in timed(loader.epoch(state.epoch), "data"):
            with phase("step"):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, state.step, len(loader))
                with autocast(device, cfg.precision):
                    out = model(x)
                    loss = F.cross_entropy(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if state.mask is not None:
                    state.mask.zero_grads(model)
                if isinstance(optimizer, SAM):  # the gradient again, at the perturbed weights
                    optimizer.perturb()
                    with frozen_norm_statistics(model), autocast(device, cfg.precision):
                        perturbed = F.cross_entropy(model(x).float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    perturbed.backward()
                    if state.mask is not None:
                        state.mask.zero_grads(model)
                    optimizer.restore()
                optimizer.step()
                if state.mask is not None:
                    state.mask.apply_(model)
                loss_sum += loss.detach() * len(y)
                correct += (out.argmax(1) == y).sum()
            FLOPS[key] += flops_per_image * len(y) * (2 if isinstance(optimizer, SAM) else 1)
            state.step += 1
            for cb in stepped:
                if state.step % cb.every_steps == 0:
                    with phase(cb.phase):
                        cb.on_step(state)
            bar.update()
        state.epoch += 1
        n = len(loader) * cfg.batch_size
        state.metrics = {"lr": lr_at(cfg, state.step - 1, len(loader)), "train_loss": loss_sum.item() / n,
                         "train_acc": correct.item() / n}
        for cb in callbacks:
            with phase(cb.phase):
                cb.on_epoch_end(state)
        state.history.append({"epoch": state.epoch, **state.metrics})
        bar.set_postfix(epoch=state.epoch, loss=f"{state.metrics['train_loss']:.3f}",
                        acc=f"{state.metrics.get('test_acc', state.metrics['train_acc']):.3f}")
        if ckpt is not None:
            with phase(ckpt.phase):
                ckpt.save(state, callbacks)
    bar.close()


class PruneSchedule(Callback):
    """Training-loop callback that carries out `pruning.schedule(...)` events: before optimizer step `step` it prunes
    `fraction` more with `criterion` among the current survivors, and installs the new mask (which zeroes the
    pruned weights and their momentum). Used for iterative and gradual pruning; one-shot can prune up front.

    With `shed` (a function of the loop's state that marks the survivors that shed, such as
    `Tracker.shed_masks`) the schedule is cascade-aware: before each event the survivors that shed become pruned,
    the smallest first and never beyond `final` sparsity, and the criterion prunes only what the event's cumulative
    target still lacks. `path` lists every event: (step, pruned weights in all after it, those this event's criterion
    pruned, those this event turned from shed weights, MACs the kept weights cost per image).
    """

    every_steps = 1
    phase = "prune"

    def __init__(self, criterion: str, events: list[tuple[int, float]], seed: int = 0, shed=None,
                 final: float | None = None, **opts):
        pruning.check_criterion(criterion, opts)
        if shed is not None and (final is None or not 0 < final < 1):
            raise ValueError(f"final={final!r} is invalid with shed; allowed: the schedule's target in (0, 1)")
        self.criterion, self.events, self.seed, self.opts = criterion, dict(events), seed, opts
        self.shed, self.final = shed, final
        self.targets = dict(zip(self.events, itertools.accumulate(self.events.values())))
        self.path: list[list[int]] = []

    def _maybe_prune(self, state) -> None:
        fraction = self.events.get(state.step)
        if not fraction:
            return
        mask = state.mask if state.mask is not None else pruning.Mask.dense(state.model)
        before, total = mask.num_total() - mask.num_kept(), mask.num_total()
        if self.shed is not None:
            mask = pruning.absorb(state.model, mask, self.shed(state), max(0, round(self.final * total) - before))
            fraction = max(0.0, self.targets[state.step] - mask.sparsity())
        turned = mask.num_total() - mask.num_kept() - before
        if fraction:
            mask = pruning.prune(state.model, self.criterion, fraction, seed=self.seed + state.step, mask=mask,
                                 **self.opts)
        pruned = mask.num_total() - mask.num_kept()
        self.path.append([state.step, pruned, pruned - before - turned, turned,
                          models.count(state.model, mask)["macs_kept"]])
        state.set_mask(mask)

    def state_dict(self) -> dict:
        return {"path": self.path}

    def load_state_dict(self, d: dict) -> None:
        self.path = [list(p) for p in d["path"]]

    on_start = on_step = _maybe_prune
