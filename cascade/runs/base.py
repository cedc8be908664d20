"""The run protocol: what one stored record is, what it depends on, and how it is computed exactly once.

A run is a frozen dataclass that subclasses `Run` and is registered with `@register`: its content hash (with the
kind's version) is its key in the store, so two chapters that need the same pre-trained model share one record and
one checkpoint. The executors know runs only through this protocol: `deps()` (runs whose checkpoints it reads),
`compute(store, quiet)` (the result dict, resuming from the run's checkpoint folder), `labels()` (columns for
tables and plots), `cost()` (for time estimates) and, for kinds that leave a trained network, `checkpoints()` (the
files a dependant reads) and `network(store)`.

`plan` says what must be computed and why: a run whose record is missing, and a stored run whose checkpoint a
run to be computed needs but the cache lacks (a fresh clone has the records, not the checkpoints). Each is its own
task, scheduled before its dependants, so a dense model is trained once however many fine-tuning runs need it.
`Run.ensure` is the one place that turns a task into a record: it computes, writes the record (or, for a rebuilt
checkpoint, keeps the stored one and says so beside the checkpoint), and names in the record the digests of the
weights it started from, so a dependency recomputed on another CPU is visible.
"""
from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch

from .. import data, provenance
from ..store import CorruptRecord, Store, atomic_write_text, key
from ..timing import Stopwatch, phase
from ..train import CorruptCheckpoint, RestartRun, TrainConfig, default_device, load_weights, read_checkpoint

RECORD_MISSING, RECORD_CORRUPT, CHECKPOINT_MISSING, FORCED = ("record missing", "record corrupt", "checkpoint missing",
                                                             "forced")
REBUILT = "rebuilt.json"  # beside a checkpoint recomputed for a record that already existed: when and where


class CheckpointMissing(RuntimeError):
    """A dependant needs a checkpoint that is not in the cache: the scheduler should have computed it first."""


class Run:
    """The protocol of a run kind (subclasses are frozen dataclasses). `kind` names its folder in the store;
    bump `version` when its code changes what it computes, so old records turn stale instead of being reused."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1
    # The result fields the kind's readers use (dotted path -> type): a stored record lacking one is corrupt.
    schema: ClassVar[dict[str, type]] = {}

    def deps(self) -> tuple[Run, ...]:
        """Runs whose checkpoints this one reads: computed (or checkpointed) before it."""
        return ()

    def compute(self, store: Store, quiet: bool = True) -> dict:
        """The run's result, trained into (and resumed from) `store.checkpoint_dir(self)`; deps are ready."""
        raise NotImplementedError

    def labels(self) -> dict:
        """Columns by which this run's rows are grouped in tables and plots."""
        return {}

    def cost(self) -> float:
        """Training images processed (SGD steps x batch size): what its wall time scales with."""
        return 0.0

    def checkpoints(self) -> tuple[str, ...]:
        """The checkpoint files a dependant reads (none: the kind leaves no trained network)."""
        return ()

    def network(self, store: Store) -> torch.nn.Module:
        """The trained network this run leaves, from its checkpoint."""
        raise ValueError(f"run kind {self.kind!r} leaves no trained network; allowed: "
                         f"{', '.join(k for k, c in KINDS.items() if c.network is not Run.network)}")

    @property
    def key(self) -> str:
        return key(self)

    def has_checkpoint(self, store: Store) -> bool:
        """Whether every checkpoint file a dependant reads is there and readable (a truncated one is missing)."""
        folder = store.checkpoint_dir(self)
        for name in self.checkpoints():
            try:
                read_checkpoint(folder / name)
            except CorruptCheckpoint:
                return False
        return True

    def task(self, store: Store, force: bool = False) -> bool:
        """An executor's task: `ensure` the run; True when this process computed it, False when it was read back
        (another process stored it since the plan was made)."""
        if not force and readable(self, store) is not None and self.has_checkpoint(store):
            return False
        self.ensure(store, True, force)
        return True

    def ensure(self, store: Store, quiet: bool = True, force: bool = False) -> dict:
        """The stored record of this run, computed when it (or, for a stored record, its checkpoint) is missing;
        with `force`, computed again from scratch and the record replaced. Its dependencies must be ready."""
        record = None if force else readable(self, store)
        if record is not None and self.has_checkpoint(store):
            return record
        for dep in self.deps():
            if not dep.has_checkpoint(store):
                raise CheckpointMissing(f"{self.kind}/{self.key} needs the checkpoint of {dep.kind}/{dep.key}, "
                                        f"which is not in {store.cache}; allowed: compute it first (`plan`)")
        if force or record is not None:  # a stored record's checkpoints are rebuilt from scratch: resuming from a
            shutil.rmtree(store.checkpoint_dir(self), ignore_errors=True)  # last.pt would skip a kept epoch it lacks
        clock = Stopwatch()
        try:
            result = self.compute(store, quiet)
        except RestartRun:  # its checkpoint did not fit and is gone: once more, from the start
            result = self.compute(store, quiet)
        if record is not None:  # the checkpoint was rebuilt: the record, made elsewhere, stays as it is
            atomic_write_text(store.checkpoint_dir(self) / REBUILT, json.dumps(
                {"record_created": record["meta"].get("created"), "record_hardware": record["meta"].get("hardware"),
                 "weights": weight_digests(self, store), **provenance.meta(clock.elapsed(), str(default_device()))},
                indent=1) + "\n")
            return record
        return store.put(self, result, {**record_meta(clock), **started_from(self, store)})


KINDS: dict[str, type[Run]] = {}
K = TypeVar("K", bound=type[Run])


def register(cls: K) -> K:
    """Make a run kind known to the store's migration and status (kinds are found by name in records)."""
    if KINDS.get(cls.kind, cls) is not cls:
        raise ValueError(f"run kind {cls.kind!r} is registered twice; allowed: a new name")
    KINDS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"
    train_size: int | None = 4000
    test_size: int | None = 2000
    subset_seed: int = 0

    def __post_init__(self):
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; allowed: {', '.join(data.DATASETS)}")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}={value!r} is invalid; allowed: an int >= 1, or None (the whole split)")


@functools.lru_cache(maxsize=4)
def splits(cfg: DataConfig) -> tuple[data.Split, data.Split]:
    with phase("data"):
        return data.load(cfg.dataset, cfg.train_size, cfg.test_size, seed=cfg.subset_seed)


def train_images(data_cfg: DataConfig, cfg: TrainConfig) -> float:
    """Images an SGD run of `cfg` on `data_cfg` trains on (whole batches): what `cost()` measures."""
    n = len(splits(data_cfg)[0])
    return (cfg.epochs - cfg.start_epoch) * (n // cfg.batch_size) * cfg.batch_size


def record_meta(clock: Stopwatch) -> dict:
    """Provenance, plus where the run's time went and the model FLOPs it trained and evaluated."""
    return {**provenance.meta(clock.elapsed(), str(default_device())), "phases_s": clock.phases(),
            "model_flops": clock.model_flops()}


def load_network(run: Run, store: Store, net: torch.nn.Module) -> torch.nn.Module:
    """`net` (built with the run's architecture) holding the run's final weights from its checkpoint."""
    path = store.checkpoint_dir(run) / "last.pt"
    if not path.exists():
        raise CheckpointMissing(f"the checkpoint of {run.kind}/{run.key} is not in {store.cache}; allowed: "
                                f"compute it first (`python -m cascade run` schedules it)")
    load_weights(path, net)
    return net


def weight_digest(path) -> str:
    """sha256 (16 hex digits) over a checkpoint's model tensors, by name: the same weights give the same digest
    whatever else the checkpoint holds."""
    state = read_checkpoint(path)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def weight_digests(run: Run, store: Store) -> dict[str, str]:
    folder = store.checkpoint_dir(run)
    return {name: weight_digest(folder / name) for name in run.checkpoints()}


def started_from(run: Run, store: Store) -> dict:
    """A record's account of the checkpoints it read: {"kind/key": {file: digest, ..., "rebuilt": bool}}, where
    rebuilt means the checkpoint was recomputed for a record made elsewhere (its last bits may differ)."""
    deps = {f"{d.kind}/{d.key}": {**weight_digests(d, store),
                                  "rebuilt": (store.checkpoint_dir(d) / REBUILT).exists()}
            for d in run.deps() if d.checkpoints()}
    return {"started_from": deps} if deps else {}


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


def plan(runs, store: Store, force: bool = False) -> list[tuple[Run, str]]:
    """What computing `runs` takes: (run, why) for each run of their closure that must be computed, dependencies
    first. Why: `FORCED` (every run of `runs` with `force`), `RECORD_MISSING`, `RECORD_CORRUPT` (stored, but it
    fails its checks: `corrupt` says why), or `CHECKPOINT_MISSING` (stored, but a run to be computed reads its
    checkpoint, which the cache lacks)."""
    order = closure(runs)
    forced = set(runs) if force else set()
    dependants: dict[Run, list[Run]] = {r: [] for r in order}
    for r in order:
        for d in r.deps():
            dependants[d].append(r)
    why: dict[Run, str] = {}
    for r in reversed(order):  # dependants before their dependencies
        if r in forced:
            why[r] = FORCED
        elif not store.path(r).exists():
            why[r] = RECORD_MISSING
        elif readable(r, store) is None:
            why[r] = RECORD_CORRUPT if corrupt(r, store) else RECORD_MISSING
        elif any(d in why for d in dependants[r]) and not r.has_checkpoint(store):
            why[r] = CHECKPOINT_MISSING
    return [(r, why[r]) for r in order if r in why]


def corrupt(run: Run, store: Store) -> str | None:
    """The one-line reason the stored record of `run` fails its checks, or None."""
    try:
        store.get(run)
    except CorruptRecord as e:
        return str(e)
    return None


def readable(run: Run, store: Store) -> dict | None:
    """The stored record of `run`, or None when it is missing or corrupt (which `plan` recomputes)."""
    try:
        return store.get(run)
    except CorruptRecord:
        return None


def ensure_all(runs, store: Store, quiet: bool = True) -> list[dict]:
    """The records of `runs`, computing in this process, in order, whatever `plan` says is missing."""
    for run, _ in plan(runs, store):
        run.ensure(store, quiet)
    return [store.get(r) for r in runs]
