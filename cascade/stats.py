"""Intervals, tests and verdicts over replicates (seeds): the statistics every chapter shares.

A verdict is built here and nowhere else, so the claims table, the forest plot and each chapter read one schema.
"""
from __future__ import annotations

import math
import statistics

import pandas as pd
from scipy import stats

VERDICT_KEYS = ("claim", "holds", "effect", "ci95", "n_seeds", "threshold", "above", "condition", "summary")


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


def paired(a: pd.Series, b: pd.Series) -> dict:
    """Per-seed paired effect a - b (both indexed by seed): mean, 95% t-interval and the paired t-test's p."""
    d = (a - b).dropna()
    m, lo, hi = mean_ci(d.tolist())
    p = float(stats.ttest_rel(a[d.index], b[d.index]).pvalue) if len(d) > 1 else float("nan")
    return {"effect": m, "ci_lo": lo, "ci_hi": hi, "p": p, "n_seeds": len(d)}


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


def no_estimate(claim: str, threshold: float, condition: str, summary: str, above: bool = True) -> dict:
    """The verdict of a claim this configuration does not estimate (no runs for it): inconclusive, no effect."""
    return {"claim": claim, "holds": None, "effect": None, "ci95": [None, None], "n_seeds": 0,
            "threshold": threshold, "above": above, "condition": condition, "summary": summary}


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)
