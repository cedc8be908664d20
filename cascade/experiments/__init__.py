"""The experiments behind the book: one per notebook, each testing claims from papers.md."""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
import statistics

from ..store import Store, from_canonical
from . import runs as R
from .core import PROFILES, Experiment, Result, execute  # noqa: F401 (PROFILES: for the CLI and the book)

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



def _discover() -> dict[str, Experiment]:
    """Every module of this package that defines EXPERIMENT, in notebook order; importing them also registers
    the run kinds they define. A new chapter is one module here and its notebook."""
    found = [getattr(importlib.import_module(f"{__name__}.{m.name}"), "EXPERIMENT", None)
             for m in pkgutil.iter_modules(__path__)]
    return {e.name: e for e in sorted((e for e in found if isinstance(e, Experiment)), key=lambda e: e.notebook)}


REGISTRY: dict[str, Experiment] = _discover()


def get(name: str) -> Experiment:
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def parameters(name: str) -> list[str]:
    """The names a notebook's parameters cell declares: profile, force, then every config field of `name`."""
    return ["profile", "force", *(f.name for f in dataclasses.fields(get(name).config))]


def overrides(name: str, namespace: dict) -> dict:
    """The config fields of experiment `name` that a notebook's parameters set (not None) in `namespace`."""
    return {k: namespace[k] for k in parameters(name)[2:] if namespace.get(k) is not None}


def run(name: str, profile: str = "paper", force: bool = False, quiet: bool = False, root=None, workers: int = 1,
        scheduler: str | None = None, **params) -> Result:
    """Compute what is missing for experiment `name` under `profile` (+ overrides) and analyze it;
    `workers` > 1 runs independent runs in that many single-threaded processes, and a Dask `scheduler`
    address (default $CASCADE_SCHEDULER) sends them to that cluster."""
    exp = get(name)
    cfg = exp.make_config(profile, **params)
    return execute(exp, cfg, Store(profile, root), force=force, quiet=quiet, workers=workers, scheduler=scheduler)


def status(name: str, profile: str = "paper", root=None, **params) -> dict:
    """Runs of `name` under `profile` (+ overrides) that are done and those that are missing."""
    exp = get(name)
    store = Store(profile, root)
    todo = exp.all_runs(exp.make_config(profile, **params))
    done = [r for r in todo if store.get(r.kind, r, r.version) is not None]
    return {"done": done, "missing": [r for r in todo if r not in set(done)]}


def estimate_s(run: R.Run, store: Store) -> float:
    """Seconds a missing run is expected to take: its `cost()` times the median seconds per unit of cost of the
    stored runs of its kind on the same model (of its kind on any model when none; nan when none is stored).
    The one run-time estimate: `cascade status` and the book's appendix both use it."""
    folder = store.root / store.profile / run.kind
    rates: dict[bool, list[float]] = {True: [], False: []}
    model = run.labels().get("model")
    for path in sorted(folder.glob("*.json")) if folder.exists() else ():
        rec = json.loads(path.read_text())
        try:
            other = from_canonical(R.KINDS[run.kind], rec["config"])
        except (TypeError, ValueError):
            continue  # a stale record of an older schema
        if other.cost() > 0 and rec["meta"].get("wall_time_s"):
            rates[other.labels().get("model") == model].append(rec["meta"]["wall_time_s"] / other.cost())
    rates_ = rates[True] or rates[False]
    return statistics.median(rates_) * run.cost() if rates_ else math.nan


def stale(profile: str = "paper", root=None) -> list[str]:
    """Stored records (kind/key) that no experiment's `profile` config produces any more."""
    store = Store(profile, root)
    current: dict[str, list] = {}
    for exp in REGISTRY.values():
        for r in exp.all_runs(exp.make_config(profile)):
            current.setdefault(r.kind, []).append(r)
    kinds = {p.name for p in (store.root / profile).iterdir() if p.is_dir()} if (store.root / profile).exists() else set()
    out = []
    for kind in sorted(kinds | set(current)):
        runs = current.get(kind, [])
        version = runs[0].version if runs else 0
        out += [f"{kind}/{key}" for key in store.status(kind, runs, version)["stale"]]
    return out


def cached_verdicts(name: str, profile: str = "paper", root=None) -> list[dict]:
    """The verdicts from stored records only (no compute); [] when any run is missing."""
    exp = get(name)
    cfg = exp.make_config(profile)
    store = Store(profile, root)
    records = [(r, store.get(r.kind, r, r.version)) for r in exp.all_runs(cfg)]
    if any(rec is None for _, rec in records):
        return []
    return exp.analyze(cfg, records)[1]
