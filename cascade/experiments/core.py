"""What an experiment is: a config, the runs it needs, and how records become tables and verdicts.

Profiles are named overrides of the config's defaults (`smoke` for CI, `paper` for the book,
`full` for a GPU). Parameters are checked against the config's fields before any compute.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
from scipy import stats
from tqdm import tqdm

from .. import executors
from ..store import Store, config_hash
from . import runs as R

PROFILES = ("smoke", "paper", "full")
# Set (to anything) to forbid computing: nbval re-executes the notebooks against the committed store with it, so
# the published numbers are shown to regenerate from the records alone, on any CPU.
READ_ONLY = "CASCADE_READ_ONLY"



def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over seeds; the interval is (nan, nan) with fewer than two values."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(values)
    if n < 2:
        return m, math.nan, math.nan
    lo, hi = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    return m, float(lo), float(hi)


def verdict(claim: str, values: list[float], threshold: float, summary: str, above: bool = True,
            condition: str = "") -> dict:
    """A claim holds when the 95% CI of its per-seed effect lies beyond `threshold` (above it, or below it
    with `above=False`), fails when the CI lies on the other side, and is inconclusive (None) when it
    straddles the threshold or there are too few seeds.
    `summary` may use {mean}, {lo}, {hi}, {n} and {word} (holds / does not hold / is inconclusive);
    `condition` says briefly where the effect was measured (model, setting), for the claims table."""
    m, lo, hi = mean_ci(values)
    beyond, short = (lo > threshold, hi < threshold) if above else (hi < threshold, lo > threshold)
    holds = None if math.isnan(lo) else (True if beyond else False if short else None)
    word = {True: "holds", False: "does not hold", None: "is inconclusive"}[holds]
    return {"claim": claim, "holds": holds, "effect": _r(m), "ci95": [_r(lo), _r(hi)], "n_seeds": len(values),
            "threshold": threshold, "above": above, "condition": condition,
            "summary": summary.format(mean=m, lo=lo, hi=hi, n=len(values), word=word)}


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


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
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
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


def full_data() -> dict:
    """The `full` profile's data: all of CIFAR-10 when it is present here, else all of Fashion-MNIST."""
    from ..data import available

    return {"dataset": "cifar10" if available("cifar10") else "fashion-mnist", "train_size": None, "test_size": None}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a CLI/papermill value (often a string) to the field's declared type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
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
        raise ValueError(f"{name}={value!r} is invalid; allowed: a value of type {getattr(hint, '__name__', hint)}") \
            from None


def execute(exp: Experiment, cfg, store: Store, force: bool = False, quiet: bool = False, workers: int = 1,
            scheduler: str | None = None) -> Result:
    """Compute the missing runs of `exp` (all of them with `force`), then analyze the records.

    With `workers > 1`, independent runs go to that many processes with one intra-op thread each (the
    benchmark found this faster than one process with all threads for these small networks); with a Dask
    `scheduler` address, to that cluster's workers (`executors.compute`).
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid; allowed: an int >= 1")
    todo = exp.all_runs(cfg)
    missing = [r for r in todo if force or store.get(r.kind, r, r.version) is None]
    if missing and os.environ.get(READ_ONLY):
        raise ValueError(f"{len(missing)} of {len(todo)} runs of {exp.name} [{store.profile}] are not stored and "
                         f"{READ_ONLY} is set; allowed: only stored runs (compute them with "
                         f"`python -m cascade run {exp.name} --profile {store.profile}`)")
    client = executors.connect(scheduler) if missing else None
    if force:
        forget(store, missing)
    with tqdm(total=len(missing), desc=f"{exp.name} [{store.profile}]", disable=quiet or not missing,
              unit="run") as bar:
        executors.compute(missing, store, workers, client, bar.update)
    records = [(r, store.get(r.kind, r, r.version)) for r in todo]
    tables, verdicts = exp.analyze(cfg, records)
    return Result(exp.name, store.profile, cfg, records, len(missing), tables, verdicts)


def forget(store: Store, runs: list) -> None:
    """Delete the records and checkpoints of `runs`, so they are computed again."""
    for r in runs:
        key = config_hash(r, r.version)
        store.path(r.kind, key).unlink(missing_ok=True)
        shutil.rmtree(store.checkpoint_dir(r.kind, key), ignore_errors=True)


def tracker_frame(records: list[tuple[Any, dict]]) -> pd.DataFrame:
    """Tidy tracker rows of every record that has them, with the run's labels as columns."""
    parts = [pd.DataFrame(rec["result"]["tracker"], columns=["epoch", "step", "layer", "metric", "value"])
             .assign(**run.labels(), key=rec["key"])
             for run, rec in records if "tracker" in rec["result"]]
    return pd.concat(parts, ignore_index=True)


def history_frame(records: list[tuple[Any, dict]], kind: str = "finetune") -> pd.DataFrame:
    """Per-epoch train/test metrics of every `kind` record, tidy (one row per epoch and metric)."""
    parts = [pd.DataFrame(rec["result"]["history"]).melt(id_vars="epoch", var_name="metric").assign(**run.labels())
             for run, rec in records if run.kind == kind]
    return pd.concat(parts, ignore_index=True).dropna(subset=["value"])


def final_delta(frame: pd.DataFrame, metric: str, by=("criterion", "fraction", "seed")) -> pd.Series:
    """Change of a global tracker metric from the first record (right after pruning) to the last."""
    g = frame[(frame.layer == "global") & (frame.metric == metric)].sort_values("step").groupby(list(by))["value"]
    return g.last() - g.first()
