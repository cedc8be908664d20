"""The chapter contract: a config, the runs it needs, and how records become tables and verdicts; and the
registry of chapters (`cascade.chapters`), with what it takes to compute them.

Profiles are named overrides of the config's defaults (`smoke` for CI, `paper` for the book, `full` for a GPU).
Parameters are checked against the config's fields before any compute. `Profile.resolve` makes the store and
every chapter's config once, and a build passes it down.
"""
from __future__ import annotations

import dataclasses
import functools
import heapq
import math
import os
import statistics
import tempfile
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
from tqdm import tqdm

from . import data, executors
from . import runs as R
from .store import Store, from_canonical, read_record

PROFILES = ("smoke", "paper", "full")
# Set (to anything) to forbid computing: nbval re-executes the notebooks against the committed store with it, so
# the published numbers are shown to regenerate from the records alone, on any CPU.
READ_ONLY = "CASCADE_READ_ONLY"

CLAIMS = {
    "C1": "Cascade shedding exists: pruning a small fraction is followed by shedding of a much larger fraction "
          "during fine-tuning.",
    "C2": "When cascade is present, it greatly improves an otherwise sub-optimal scheme such as random pruning.",
    "C3": "This explains why a pruning method works in some settings and fails in others: random pruning does well "
          "on ResNet50 and badly on MobileNetV3.",
    "C4": "Cascade helps explain why global magnitude pruning (GMP) is competitive across many scenarios.",
    "C5": "Cascade can improve GMP's accuracy and reduce its compute. Pruning and learning-rate schedules matter.",
    "C6": "Weight rewinding and learning-rate rewinding are connected to cascade, which may explain their advantage "
          "over fine-tuning.",
    "C7": "Cascade changes which weights are kept, with implications for semi-structured (for example N:M) pruning.",
    "R1": "For structured pruning with a predefined target architecture, training the pruned architecture from "
          "scratch matches or beats fine-tuning the pruned model.",
    "R2": "With the optimal learning rate, the lottery-ticket initialization brings no improvement over random "
          "re-initialization.",
    "T1": "Sharp transition: depending on the load, raising the temperature of the dense model's training either "
          "improves or impairs pruning performance.",
    "T2": "Three regimes of the pruned loss landscape, told apart by linear mode connectivity and output "
          "similarity: I, II-A, II-B.",
    "T3": "Case studies: choosing the direction of a hyperparameter; selecting which dense model to prune; tuning "
          "SAM's rho.",
}


@dataclass
class Result:
    """Everything a notebook needs: the config, the runs with their records, tables and verdicts."""

    experiment: str
    profile: str
    config: Any
    records: list[tuple[Any, dict]]
    computed: int
    tables: dict[str, pd.DataFrame]
    verdicts: list[dict]

    @property
    def wall_time_s(self) -> float:
        return sum(rec["meta"].get("wall_time_s", 0.0) for _, rec in self.records)

    def keys(self) -> list[str]:
        return [rec["key"] for _, rec in self.records]


@dataclass(frozen=True)
class Experiment:
    name: str
    notebook: str
    claims: tuple[str, ...]
    config: type
    profiles: dict[str, dict | Callable[[], dict]]  # a callable is resolved when the config is made
    runs: Callable[[Any], list]
    analyze: Callable[[Any, list[tuple[Any, dict]]], tuple[dict[str, pd.DataFrame], list[dict]]]
    description: str = ""
    # claim -> label of the figure in the notebook that decides it, so the claims table links to that figure
    figures: dict[str, str] = dataclasses.field(default_factory=dict)

    def make_config(self, profile: str = "paper", **overrides) -> Any:
        """The profile's config with `overrides` applied; bad names or values raise ValueError."""
        check_profile(profile)
        fields = {f.name for f in dataclasses.fields(self.config)}
        for name in overrides:
            if name not in fields:
                raise ValueError(f"unknown parameter {name!r} for {self.name}; allowed: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(self.config)
        defaults = self.profiles.get(profile, {})
        values = {**(defaults() if callable(defaults) else defaults), **overrides}
        return self.config(**{k: coerce(k, v, hints[k]) for k, v in values.items()})

    def all_runs(self, cfg) -> list:
        """Every run the experiment needs, dependencies first, without duplicates."""
        return R.closure(self.runs(cfg))


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")


def full_data() -> dict:
    """The `full` profile's data: all of CIFAR-10 when it is present here, else all of Fashion-MNIST."""
    from .data import available

    return {"dataset": "cifar10" if available("cifar10") else "fashion-mnist", "train_size": None, "test_size": None}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a CLI/papermill value (often a string) to the field's declared type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is tuple:
            # "0.05,0.3", or the Python and YAML forms "(0.05, 0.3)" and "[0.05, 0.3]" (papermill passes strings)
            items = value.strip().strip("()[]").split(",") if isinstance(value, str) else list(value)
            return tuple(coerce(name, v.strip() if isinstance(v, str) else v, args[0]) for v in items if v != "")
        if origin in (typing.Union, types.UnionType):
            if value is None or (isinstance(value, str) and value.lower() == "none"):
                if type(None) in args:
                    return None
            return coerce(name, value, next(a for a in args if a is not type(None)))
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        return str(value)
    except (ValueError, TypeError):
        if origin is tuple:
            item = getattr(args[0], "__name__", args[0])
            raise ValueError(f"{name}={value!r} is invalid; allowed: values of type {item} as 'a,b', '(a, b)' or "
                             f"'[a, b]' (papermill: -p {name} a,b)") from None
        raise ValueError(f"{name}={value!r} is invalid; allowed: a value of type {getattr(hint, '__name__', hint)}") \
            from None


# ------------------------------------------------------------------------------------------------ registry
@functools.cache
def registry() -> dict[str, Experiment]:
    """Every chapter by name, in notebook order; found on first use, so a chapter module can import this one."""
    from .chapters import discover

    return discover()


def __getattr__(name: str):
    if name == "REGISTRY":  # `experiments.REGISTRY`: the registry, found on first use
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(name: str) -> Experiment:
    if name not in registry():
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(registry())}")
    return registry()[name]


def parameters(name: str) -> list[str]:
    """The names a notebook's parameters cell declares: profile, force, then every config field of `name`."""
    return ["profile", "force", *(f.name for f in dataclasses.fields(get(name).config))]


def overrides(name: str, namespace: dict) -> dict:
    """The config fields of experiment `name` that a notebook's parameters set (not None) in `namespace`."""
    return {k: namespace[k] for k in parameters(name)[2:] if namespace.get(k) is not None}


@dataclass(frozen=True)
class Profile:
    """A profile resolved once: its store and the config of every chapter (or of those named)."""

    name: str
    store: Store
    configs: dict[str, Any]

    @classmethod
    def resolve(cls, profile: str = "paper", root=None, names=None) -> Profile:
        check_profile(profile)
        names = list(registry()) if names is None else names
        return cls(profile, Store(profile, root), {n: get(n).make_config(profile) for n in names})

    def runs(self, name: str) -> list:
        return get(name).all_runs(self.configs[name])


# ------------------------------------------------------------------------------------------------ computing
def run(name: str, profile: str = "paper", force: bool = False, quiet: bool = False, root=None, workers: int = 1,
        scheduler: str | None = None, **params) -> Result:
    """Compute what is missing for experiment `name` under `profile` (+ overrides) and analyze it;
    `workers` > 1 runs independent runs in that many single-threaded processes, and a Dask `scheduler`
    address (default $CASCADE_SCHEDULER) sends them to that cluster."""
    exp = get(name)
    cfg = exp.make_config(profile, **params)
    return execute(exp, cfg, Store(profile, root), force=force, quiet=quiet, workers=workers, scheduler=scheduler)


def notebook(name: str, namespace: dict) -> Result:
    """What a chapter's notebook shows: `run` of experiment `name` with the parameters its parameters cell set in
    `namespace` (profile, force, and any config field not None). A bad parameter is a one-line error raised here,
    so the notebook's traceback ends after this frame instead of deep inside the package."""
    try:
        return run(name, namespace.get("profile", "paper"), force=bool(namespace.get("force")), quiet=True,
                   **overrides(name, namespace))
    except ValueError as e:
        raise ValueError(str(e)) from None


def check_workers(workers) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid; allowed: an int >= 1")


def compute(label: str, runs: list, store: Store, force: bool = False, quiet: bool = False, workers: int = 1,
            scheduler: str | None = None) -> list:
    """Compute what `runs` need (`runs.plan`; all of them with `force`) for `label` (a chapter, or the book);
    return the tasks this call computed (not those another process stored meanwhile). Every check (workers,
    read-only store, writable store, data, scheduler address) comes before anything is computed or replaced."""
    check_workers(workers)
    work = [r for r, _ in R.plan(runs, store, force)]
    if work and os.environ.get(READ_ONLY):
        raise ValueError(f"{len(work)} runs of {label} [{store.profile}] must be computed and {READ_ONLY} is "
                         f"set; allowed: only stored runs (compute them with "
                         f"`python -m cascade run {label} --profile {store.profile}`)")
    for cfg in {r.data for r in work if hasattr(r, "data")}:
        if not data.available(cfg.dataset):
            raise ValueError(f"dataset={cfg.dataset!r} is not available here (nothing downloads at run time); "
                             f"allowed: a dataset whose files are here ({data.HOW_TO_GET.get(cfg.dataset, '')})")
    client = executors.connect(scheduler) if work else None
    if work:
        writable(store)
    computed = set()
    with tqdm(total=len(work), desc=f"{label} [{store.profile}]", disable=quiet or not work, unit="run") as bar:
        def done(run, ran: bool) -> None:
            if ran:
                computed.add(run)
            bar.update()

        executors.compute(work, store, workers, client, done, force=force)
    return [r for r in work if r in computed]


def writable(store: Store) -> None:
    """A one-line error, before any compute, when the store's records or checkpoints cannot be written (tried in
    the nearest folder that exists, which is left as it was)."""
    for folder, what in ((store.root / store.profile, "results"), (store.cache, "cache")):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
                pass
        except OSError as e:
            raise ValueError(f"the {what} folder {folder} is not writable ({e.strerror}); allowed: a writable "
                             f"folder (set CASCADE_{what.upper()} to move it)") from None


def execute(exp: Experiment, cfg, store: Store, force: bool = False, quiet: bool = False, workers: int = 1,
            scheduler: str | None = None) -> Result:
    """Compute the missing runs of `exp` (all of them with `force`), then analyze the records.

    With `workers > 1`, independent runs go to that many processes with one intra-op thread each (the
    benchmark found this faster than one process with all threads for these small networks); with a Dask
    `scheduler` address, to that cluster's workers (`executors.compute`).
    """
    todo = exp.all_runs(cfg)
    computed = compute(exp.name, todo, store, force, quiet, workers, scheduler)
    records = [(r, store.get(r)) for r in todo]
    tables, verdicts = exp.analyze(cfg, records)
    return Result(exp.name, store.profile, cfg, records, len(computed), tables, verdicts)


# ------------------------------------------------------------------------------------------------ pricing
class Estimator:
    """Seconds a run is expected to take: its `cost()` times the median seconds per unit of cost of the stored runs
    of its kind on the same model (of its kind on any model when none; nan when none is stored). The one run-time
    estimate: `cascade status`, `run --dry-run` and the book's appendix all use it."""

    def __init__(self, store: Store):
        self.store, self._rates = store, {}

    def rates(self, kind: str) -> list[tuple[Any, float]]:
        if kind not in self._rates:
            out = []
            for path in sorted(self.store.folder(kind).glob("*.json")):
                try:
                    rec = read_record(path, R.KINDS[kind].schema)
                    other = from_canonical(R.KINDS[kind], rec["config"])
                except (TypeError, ValueError, KeyError):
                    continue  # a corrupt record, or a stale one of an older schema
                if other.cost() > 0 and rec["meta"].get("wall_time_s"):
                    out.append((other.labels().get("model"), rec["meta"]["wall_time_s"] / other.cost()))
            self._rates[kind] = out
        return self._rates[kind]

    def __call__(self, run: R.Run) -> float:
        model = run.labels().get("model")
        rates = self.rates(run.kind)
        same = [r for m, r in rates if m == model] or [r for _, r in rates]
        return statistics.median(same) * run.cost() if same else math.nan


def makespan(work: list, seconds: dict, workers: int) -> float:
    """Wall seconds `workers` take for `work` (dependencies first), scheduled as `executors.schedule` does: a run
    starts once its dependencies among `work` are done, the longest remaining chain first."""
    among = set(work)
    after: dict[Any, list] = {r: [] for r in work}
    for r in work:
        for d in r.deps():
            if d in among:
                after[d].append(r)
    chain: dict[Any, float] = {}
    for r in reversed(work):
        chain[r] = seconds[r] + max((chain[a] for a in after[r]), default=0.0)
    waiting = {r: sum(d in among for d in r.deps()) for r in work}
    ready = [r for r in work if not waiting[r]]
    running: list[tuple[float, int, Any]] = []  # (end time, tie-break, run)
    now, n = 0.0, 0
    while ready or running:
        ready.sort(key=lambda r: -chain[r])
        while ready and len(running) < workers:
            r = ready.pop(0)
            n += 1
            heapq.heappush(running, (now + seconds[r], n, r))
        now, _, r = heapq.heappop(running)
        for a in after[r]:
            waiting[a] -= 1
            if not waiting[a]:
                ready.append(a)
    return now


def price(name: str, profile: str = "paper", root=None, workers: int = 1, **params) -> dict:
    """What `run name` with these parameters would compute, without computing: each task's kind, key, why and
    estimated seconds, their sum, and the wall time on `workers` processes."""
    check_workers(workers)
    exp = get(name)
    cfg = exp.make_config(profile, **params)
    store = Store(profile, root)
    runs = exp.all_runs(cfg)
    work = R.plan(runs, store)
    estimate = Estimator(store)
    seconds = {r: estimate(r) for r, _ in work}
    total = sum(seconds.values())
    wall = makespan([r for r, _ in work], seconds, workers) if not math.isnan(total) else math.nan
    return {"experiment": name, "profile": profile, "runs": len(runs), "stored": len(runs) - sum(
                why in (R.RECORD_MISSING, R.RECORD_CORRUPT) for _, why in work),
            "tasks": [{"kind": r.kind, "key": r.key, "why": why, "estimated_s": _round(seconds[r]),
                       **({"problem": R.corrupt(r, store)} if why == R.RECORD_CORRUPT else {})} for r, why in work],
            "estimated_s": _round(total), "workers": workers, "wall_s": _round(wall)}


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 1)


def stale(profile: Profile) -> list[str]:
    """Stored records (kind/key) that no experiment's config of `profile` produces any more."""
    current: dict[str, set[str]] = {}
    for name in profile.configs:
        for r in profile.runs(name):
            current.setdefault(r.kind, set()).add(r.key)
    folder = profile.store.root / profile.name
    kinds = {p.name for p in folder.iterdir() if p.is_dir()} if folder.exists() else set()
    return [f"{kind}/{key}" for kind in sorted(kinds | set(current))
            for key in sorted(profile.store.keys(kind) - current.get(kind, set()))]


def cached_verdicts(name: str, profile: Profile) -> list[dict]:
    """The verdicts from stored records only (no compute); [] when any run is missing."""
    cfg = profile.configs[name]
    records = [(r, profile.store.get(r)) for r in profile.runs(name)]
    if any(rec is None for _, rec in records):
        return []
    return get(name).analyze(cfg, records)[1]
