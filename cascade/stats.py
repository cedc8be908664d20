"""Intervals, tests and verdicts over replicates (seeds): the statistics every chapter shares.

A verdict is built here and nowhere else, so the claims table, the forest plot and each chapter read one schema.
"""
from __future__ import annotations

import math
import statistics
import dataclasses
from dataclasses import dataclass

import pandas as pd
from scipy import stats

def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over seeds; the interval is (nan, nan) with fewer than two values."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(values)
    if n < 2:
        return m, math.nan, math.nan
    if len(set(values)) == 1:  # no spread: the interval is the point (scipy warns and may lose precision)
        return m, m, m
    lo, hi = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    return m, float(lo), float(hi)


def paired(a: pd.Series, b: pd.Series) -> dict:
    """Per-seed paired effect a - b (both indexed by seed): mean, 95% t-interval and the paired t-test's p."""
    d = (a - b).dropna()
    m, lo, hi = mean_ci(d.tolist())
    p = float(stats.ttest_rel(a[d.index], b[d.index]).pvalue) if len(d) > 1 else float("nan")
    return {"effect": m, "ci_lo": lo, "ci_hi": hi, "p": p, "n_seeds": len(d)}


def welch(a, b) -> tuple[float, float, float]:
    """Mean of `a` minus mean of `b` with the 95% Welch interval, for replicates that share nothing (`verdicts.md`,
    rule 6: seeds of two architectures are two dense models each); the interval is (nan, nan) with fewer than two
    values on a side."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if not a or not b:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return m, math.nan, math.nan
    lo, hi = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return m, float(lo), float(hi)


WORDS = ("reproduces", "does not reproduce", "inconclusive", "not testable")


@dataclass(frozen=True)
class Premise:
    """The "when A is present" of a conditional claim: A's statistic with its CI, present when the CI lies beyond
    its own threshold on A's side (`verdicts.md`, rule 5)."""

    statistic: str
    effect: float | None
    ci95: tuple[float | None, float | None]
    threshold: float
    present: bool

    @classmethod
    def of(cls, statistic: str, values, threshold: float, above: bool = True) -> Premise:
        m, lo, hi = mean_ci(values)
        present = not math.isnan(lo) and (lo > threshold if above else hi < threshold)
        return cls(statistic, _r(m), (_r(lo), _r(hi)), threshold, present)

    def surviving(self, survived: bool) -> Premise:
        """This premise, absent too where the condition does not survive (its accuracy is lost)."""
        return dataclasses.replace(self, present=self.present and survived, statistic=self.statistic + (
            "" if survived else ", where accuracy does not survive"))

    def as_dict(self) -> dict:
        return {"statistic": self.statistic, "effect": self.effect, "ci95": list(self.ci95),
                "threshold": self.threshold, "present": self.present}


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict under the book's standard (`verdicts.md`): the word, δ and the rule, the per-replicate
    values with their mean and 95% CI, the half-width expected at the pre-registered n, the premise of a
    conditional claim, and sentences that state the direction and size. The claims table, the forest plot, the CLI
    and every chapter read this one object."""

    claim: str
    word: str
    delta: float
    above: bool
    rule: str
    values: tuple[float, ...]
    effect: float | None
    ci95: tuple[float | None, float | None]
    expected_half_width: float | None
    condition: str
    summary: str
    direction: str
    premise: Premise | None = None

    @property
    def holds(self) -> bool | None:
        """True (reproduces), False (does not reproduce) or None (inconclusive, not testable)."""
        return {"reproduces": True, "does not reproduce": False}.get(self.word)

    @property
    def n_seeds(self) -> int:
        return len(self.values)

    def as_dict(self) -> dict:
        out = {"claim": self.claim, "verdict": self.word, "holds": self.holds, "effect": self.effect,
               "ci95": list(self.ci95), "n_seeds": self.n_seeds, "delta": self.delta, "threshold": self.delta,
               "above": self.above, "rule": self.rule, "values": list(self.values),
               "expected_half_width": self.expected_half_width, "condition": self.condition,
               "summary": self.summary, "direction": self.direction}
        return out | ({"premise": self.premise.as_dict()} if self.premise is not None else {})


def half_width(sd: float, n: int) -> float:
    """The expected 95% CI half-width t(n - 1) SD / sqrt(n) of a mean over n replicates (rule 3)."""
    return float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.inf


def seeds_for(sd: float, delta: float, at_least: int = 3, at_most: int = 100) -> int:
    """The smallest n >= `at_least` whose expected half-width is at most `delta` (`at_most` if none is)."""
    return next((n for n in range(max(at_least, 2), at_most + 1) if half_width(sd, n) <= delta), at_most)


SPOKEN = {"reproduces": "holds", "does not reproduce": "does not hold", "inconclusive": "is inconclusive",
          "not testable": "is not testable"}  # a verdict's word as a summary's verb


def unless_own_falls(v: Verdict, changes, who: str) -> Verdict:
    """`v` turned into "does not reproduce" when it reproduces on a gap that closes because the reference fell:
    the 95% CI of `changes` (the lagging arm's own accuracy change, per replicate) lies below 0."""
    own, lo, hi = mean_ci(list(changes))
    if v.word != "reproduces" or not hi < 0:
        return v
    return dataclasses.replace(
        v, word="does not reproduce", summary=v.summary.replace(SPOKEN["reproduces"], SPOKEN["does not reproduce"], 1),
        direction=(f"{v.direction[:v.direction.rindex(', so')]}; but {who} own accuracy falls at the shed point "
                   f"({own * 100:+.3g} points, 95% CI {lo * 100:+.3g} to {hi * 100:+.3g}): the gap closes because "
                   "GMP falls further, so it does not reproduce"))


def verdict(claim: str, values, delta: float, summary: str, above: bool = True, condition: str = "",
            premise: Premise | None = None, planned_sd: float | None = None, units: str = "",
            replicate: str = "seeds", against=None) -> Verdict:
    """The verdict on `values`, one effect per replicate. The claim reproduces when their 95% CI lies beyond
    `delta` on the claim's side (above it, or below it with `above=False`), does not reproduce when the CI lies on
    the other side, and is inconclusive when it straddles `delta` (or there are too few replicates). With a
    `premise` that is absent, it is not testable, whatever the effect.

    `summary` may use {mean}, {lo}, {hi}, {n} and {word} (holds / does not hold / is inconclusive / is not
    testable). `planned_sd`, the per-replicate SD the design was sized with (a pilot's, or earlier records'),
    gives the expected half-width at this n; without it the observed SD stands in. `units` follow numbers in the
    direction sentence ("points"; values are then scaled by 100). With `against` (another group's replicates, unpaired
    with `values`), the effect is the difference of their means with Welch's interval (`welch`), and each replicate
    of `values` is shown against the other group's mean (`Verdict.values` holds those differences); the expected
    half-width is that of two groups with one SD (the planned one, else the pooled one)."""
    values = tuple(float(v) for v in values)
    if against is None:
        m, lo, hi = mean_ci(values)
    else:
        other = [float(v) for v in against]
        m, lo, hi = welch(values, other)
        values = tuple(v - statistics.fmean(other) for v in values) if other else values
    if premise is not None and not premise.present:
        word = "not testable"
    elif math.isnan(lo):
        word = "inconclusive"
    else:
        beyond, short = (lo > delta, hi < delta) if above else (hi < delta, lo > delta)
        word = "reproduces" if beyond else "does not reproduce" if short else "inconclusive"
    n = len(values)
    sd = planned_sd if planned_sd is not None else (statistics.stdev(values) if n > 1 else math.nan)
    hw = half_width(sd, n) if n > 1 and not math.isnan(sd) else math.nan
    if against is not None and n > 1 and len(against) > 1:  # two groups of one SD, pooled: t(n + k - 2)
        k = len(against)
        if planned_sd is None:
            sd = math.sqrt(((n - 1) * statistics.variance(values) + (k - 1) * statistics.variance(other)) / (n + k - 2))
        hw = float(stats.t.ppf(0.975, n + k - 2) * sd * math.sqrt(1 / n + 1 / k))
    rule = (f"reproduces when the 95% CI lies {'above' if above else 'below'} δ = {delta:g}, does not when it lies "
            f"{'below' if above else 'above'}; inconclusive when it straddles δ"
            + ("; not testable when the premise is absent" if premise is not None else ""))
    spoken = SPOKEN[word]
    return Verdict(claim, word, delta, above, rule, values, _r(m), (_r(lo), _r(hi)), _r(hw), condition,
                   summary.format(mean=m, lo=lo, hi=hi, n=n, word=spoken),
                   direction(values, m, lo, hi, delta, above, word, premise, units, replicate), premise)


def direction(values, m, lo, hi, delta, above, word, premise, units, replicate) -> str:
    """The result in words: which way and how far, in how many replicates, and where the CI lies against δ."""
    scale = 100 if units == "points" else 1
    unit = f" {units}" if units else ""

    def num(x):
        return f"{x * scale:+.3g}{unit}"

    if not values:
        return "no estimate: the configuration has no replicate for this claim"
    positive = sum(v > 0 for v in values)
    head = (f"the effect is {num(m)} on average, positive in {positive} of {len(values)} {replicate}"
            if len(values) > 1 else f"the effect is {num(m)} from a single replicate")
    if premise is not None and not premise.present:
        return (f"{head}; but its premise is absent ({premise.statistic} is {premise.effect:+.3g}, 95% CI "
                f"{premise.ci95[0]:+.3g} to {premise.ci95[1]:+.3g}, against its threshold {premise.threshold:g}), "
                "so the claim is not testable here" if premise.ci95[0] is not None else
                f"{head}; but its premise is absent ({premise.statistic}), so the claim is not testable here")
    if math.isnan(lo):
        return f"{head}; too few replicates for a CI"
    where = f"the 95% CI {num(lo)} to {num(hi)}"
    if word == "inconclusive":
        toward = (m > delta) == above
        return (f"{head}; {where} straddles δ = {num(delta)}, so inconclusive, leaning "
                f"{'toward' if toward else 'against'} the claim")
    side = "above" if (lo > delta) else "below"
    return f"{head}; {where} lies {side} δ = {num(delta)}, so it {'reproduces' if word == 'reproduces' else 'does not reproduce'}"


def tally(claim: str, predictions, condition: str = "") -> Verdict:
    """The verdict on a set of predictions, each (text, the word of its own verdict: "reproduces" means it came
    true): reproduces when more than half of the testable ones came true, does not when more than half came out
    false, inconclusive otherwise, and not testable with none testable. The effect is the share that came true;
    `values` holds 1 (true) or 0 per testable prediction, so n counts predictions, not seeds."""
    testable = [(text, w) for text, w in predictions if w != "not testable"]
    true = sum(w == "reproduces" for _, w in testable)
    false = sum(w == "does not reproduce" for _, w in testable)
    n = len(testable)
    word = ("not testable" if not n else "reproduces" if true > n / 2 else "does not reproduce" if false > n / 2
            else "inconclusive")
    share = true / n if n else None
    told = "; ".join(f"{text}: {OUTCOME[w]}" for text, w in predictions)
    head = (f"{true} of {n} testable predictions came true, {false} came out false, {n - true - false} "
            f"undecided" + (f" ({len(predictions) - n} not testable)" if len(predictions) > n else ""))
    return Verdict(claim, word, 0.5, True, "reproduces when more than half of the testable predictions came true "
                   "(each: its statistic's 95% CI above its δ), does not when more than half came out false (CI "
                   "below), inconclusive otherwise; not testable with none testable",
                   tuple(float(w == "reproduces") for _, w in testable), share, (None, None), None, condition,
                   f"{claim} {SPOKEN[word]}: {head}. {told}.", f"{head}, so {word}")


OUTCOME = {"reproduces": "came true", "does not reproduce": "came out false", "inconclusive": "undecided",
           "not testable": "not testable"}  # a prediction's verdict word, as `tally` reports it


def no_estimate(claim: str, threshold: float, condition: str, summary: str, above: bool = True) -> Verdict:
    """The verdict of a claim this configuration does not estimate (no runs for it): inconclusive, no effect."""
    return verdict(claim, (), threshold, summary, above, condition)


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)
