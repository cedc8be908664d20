"""Tables for people, from stored records only: the claims table, shared by the book and `cascade claims`.

Nothing here computes a run; a missing record shows as "not run".
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

NOT_RUN, UNTESTED = "not run", "not yet tested"


def claims(profile) -> list[dict]:
    """One row per (claim, experiment testing it, verdict) of the resolved `profile` (`experiments.Profile`, or a
    profile's name); a claim no experiment tests gets one row too.

    Keys: claim, statement, experiment, notebook, verdict (one of `stats.WORDS`, NOT_RUN or UNTESTED), and for a
    verdict every field of `stats.Verdict.as_dict` (holds, effect, ci95, n_seeds, delta, threshold and above, rule,
    values, expected_half_width, condition, summary, direction, and premise for a conditional claim).
    """
    from . import experiments

    if isinstance(profile, str):
        profile = experiments.Profile.resolve(profile)
    rows, verdicts = [], {}
    for claim, text in experiments.CLAIMS.items():
        base = {"claim": claim, "statement": text, "experiment": None, "notebook": None, "holds": None,
                "effect": None, "ci95": [None, None], "n_seeds": 0, "delta": None, "threshold": None, "above": None,
                "expected_half_width": None, "condition": "", "summary": "", "direction": ""}
        tested = [e for e in experiments.registry().values() if claim in e.claims]
        if not tested:
            rows.append({**base, "verdict": UNTESTED})
        for exp in tested:
            here = {**base, "experiment": exp.name, "notebook": exp.notebook}
            if exp.name not in verdicts:  # analysed once, however many claims it tests
                verdicts[exp.name] = experiments.cached_verdicts(exp.name, profile)
            found = [v for v in verdicts[exp.name] if v.claim == claim]
            if not found:
                rows.append({**here, "verdict": NOT_RUN})
            for v in found:
                rows.append({**here, **v.as_dict()})
    return rows


def effect(row: dict) -> str:
    """'0.2 [0.11, 0.3]': the effect with its 95% CI, or '' when there is none."""
    if row["effect"] is None:
        return ""
    lo, hi = row["ci95"]
    return f"{row['effect']:.3g}" + ("" if lo is None else f" [{lo:.3g}, {hi:.3g}]")


def markdown_table(head: list[str], rows: list[list]) -> str:
    """A Markdown table; '|' inside a cell is escaped."""
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *cells])


def claims_markdown(rows: list[dict], link=None, statements: bool = True) -> str:
    """The claims table as Markdown; `link(row)` gives the evidence cell (default: the notebook's name).
    Without `statements` it fits a terminal."""
    link = link or (lambda row: row["notebook"] or "")
    head = ["Claim", "Verdict", "Effect [95% CI]; δ", "Seeds (± expected)", "Condition", "Evidence"]

    def against(r):
        return effect(r) + ("" if r["delta"] is None or r["effect"] is None else f"; δ = {r['delta']:g}")

    def seeds(r):
        hw = r["expected_half_width"]
        return f"{r['n_seeds'] or ''}" + ("" if hw is None else f" (± {hw:.3g})")

    return markdown_table(head, [[f"**{r['claim']}** {r['statement']}" if statements else r["claim"], r["verdict"],
                                  against(r), seeds(r), r["condition"], link(r)] for r in rows])


def directions_markdown(rows: list[dict]) -> str:
    """What the data say, in words, for each verdict of the claims table (and its premise, where it has one)."""
    out = []
    for r in rows:
        if not r.get("direction"):
            continue
        premise = r.get("premise")
        extra = "" if premise is None else (f" Premise ({premise['statistic']}): "
                                            f"{'present' if premise['present'] else 'absent'}.")
        out.append(f"- **{r['claim']}** ({r['notebook']}, {r['verdict']}): {r['direction'][:1].upper()}"
                   f"{r['direction'][1:]}.{extra}")
    return "\n".join(out)


class Table:
    """A results table that renders as HTML in the book and as aligned text in a terminal and under nbval."""

    def __init__(self, frame, formats: dict | None = None):
        self.frame = frame
        self.formatters = {c: _formatter((formats or {}).get(c)) for c in frame.columns}

    def _repr_html_(self) -> str:
        return self.frame.to_html(index=False, formatters=self.formatters, border=0, classes="cascade-table",
                                  justify="right", na_rep="")

    def __repr__(self) -> str:
        return self.frame.to_string(index=False, formatters=self.formatters, na_rep="")


def table(frame, formats: dict | None = None) -> Table:
    """`frame` as a table for a chapter: `formats` maps a column to a format string ("{:.1%}") or a function;
    other numbers get four significant digits (integers and large values with thousands separators)."""
    import pandas as pd

    named = not isinstance(frame.index, pd.RangeIndex)  # an index that labels rows becomes columns
    return Table(frame.reset_index(drop=not named), formats)


def _formatter(spec):
    if callable(spec):
        return spec
    if spec is not None:
        return lambda v: "" if _missing(v) else spec.format(v)
    return _number


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _number(v) -> str:
    if _missing(v):
        return ""
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        return str(v)
    if float(v).is_integer() and abs(v) >= 1 or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def estimate(effect: float | None, ci95, n: int) -> str:
    """'0.0121 (95% CI −0.0097 to 0.0338, n = 3)': an effect as the chapters' prose states it."""
    if effect is None:
        return f"no estimate (n = {n})"
    lo, hi = ci95
    ci = "" if lo is None else f"95% CI {_signed(lo)} to {_signed(hi)}, "
    return f"{_signed(effect)} ({ci}n = {n})"


def _signed(x: float) -> str:
    return f"{x:.3g}".replace("-", "\u2212")


def glue(result, **extra) -> None:
    """Glue a chapter's verdicts and headline numbers for its prose, so no number there is typed by hand.

    Per verdict (claim C): `C` (the estimate sentence), `C_verdict` (reproduces / does not reproduce /
    inconclusive / not testable), `C_summary`, `C_direction`, and the floats `C_effect`, `C_lo`, `C_hi`, `C_n`,
    `C_delta`, `C_half_width` (expected at its n); for the chapter: `runs`,
    `compute_min`, `command`, and from a backbone config `setup`, `pretrain_steps` and `seeds`; then every
    keyword given. Markdown cells use {glue:md}`C` and
    {glue:text}`C_effect:.3f`."""
    from IPython.display import Markdown
    from myst_nb import glue as _glue

    cfg = result.config
    values = {"runs": len(result.records), "compute_min": result.wall_time_s / 60,
              "command": Markdown(f"`{command(result)}`")}
    if all(hasattr(cfg, a) for a in ("model", "width", "dataset", "train_size", "test_size", "batch_size")):
        sizes = " / ".join(f"{n:,} {what}" if n else f"all {what}" for n, what in
                           ((cfg.train_size, "training"), (cfg.test_size, "test")))
        values["setup"] = Markdown(f"{cfg.model} at width {cfg.width} on {cfg.dataset} ({sizes} images)")
        if cfg.train_size:
            values["pretrain_steps"] = cfg.pretrain_epochs * (cfg.train_size // cfg.batch_size)
    if hasattr(cfg, "seed_list"):
        values["seeds"] = len(list(cfg.seed_list()))
    for v in result.verdicts:
        c = v.claim
        values |= {c: Markdown(estimate(v.effect, v.ci95, v.n_seeds)), f"{c}_verdict": Markdown(f"**{v.word}**"),
                   f"{c}_summary": Markdown(v.summary), f"{c}_direction": Markdown(v.direction[:1].upper()
                                                                                   + v.direction[1:] + "."),
                   f"{c}_n": v.n_seeds, f"{c}_delta": v.delta}
        if v.effect is not None:
            values |= {f"{c}_effect": v.effect, f"{c}_lo": v.ci95[0], f"{c}_hi": v.ci95[1]}
        if v.expected_half_width is not None:
            values[f"{c}_half_width"] = v.expected_half_width
    for name, value in {**values, **extra}.items():  # numpy scalars as Python numbers, which {glue:text} formats
        _glue(name, value.item() if isinstance(value, numbers.Number) and hasattr(value, "item") else value,
              display=False)


def command(result) -> str:
    """The command that regenerates `result`'s chapter (figures included), with any parameter that differs
    from its profile's defaults."""
    import dataclasses

    from . import experiments

    exp = experiments.get(result.experiment)
    default = exp.make_config(result.profile)
    changed = [(f.name, getattr(result.config, f.name)) for f in dataclasses.fields(result.config)
               if getattr(result.config, f.name) != getattr(default, f.name)]
    if not changed:
        return f"python -m cascade book --only {exp.notebook} --profile {result.profile}"
    params = "".join(f" -p {k} {','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in changed)
    return f"papermill notebooks/{exp.notebook}.ipynb out.ipynb -p profile {result.profile}{params}"


def records_frame(records):
    """One row per stored run: its key, kind and labels, then every scalar of its config, result and meta as a
    dotted column. Lists (per-epoch curves, tracker rows) stay in the JSON records."""
    import pandas as pd

    flat = pd.json_normalize([{"key": rec["key"], "kind": run.kind, **run.labels(), "config": rec["config"],
                               "result": rec["result"], "meta": rec["meta"]} for run, rec in records])
    nested = [c for c in flat if flat[c].map(lambda v: isinstance(v, (list, dict))).any()]
    return flat.drop(columns=nested)


def diff(rev: str, profile: str = "paper", everything: bool = False) -> list[dict]:
    """What the claims table says in the working tree against what it said at git revision `rev`: the verdict,
    effect, CI and seeds of every (claim, experiment), as `dvc metrics diff` does for metrics. The table at
    `rev` is computed by that revision's own code from its own committed store. Only changes unless
    `everything`."""
    import os
    import subprocess
    import sys
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(repo)]
    if subprocess.run([*git, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True).returncode:
        raise ValueError(f"unknown revision {rev!r}; allowed: a commit, branch or tag of {repo}")
    if subprocess.run([*git, "cat-file", "-e", f"{rev}:cascade/report.py"], capture_output=True).returncode:
        raise ValueError(f"revision {rev!r} predates the package (it has no cascade/report.py, so no claims table); "
                         "allowed: a later commit")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run([*git, "archive", "--format=tar", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": tmp, "CASCADE_RESULTS": f"{tmp}/results", "CASCADE_CACHE": f"{tmp}/.cache",
               "CASCADE_READ_ONLY": "1"}
        proc = subprocess.run([sys.executable, "-m", "cascade", "claims", "--json", "--profile", profile],
                              cwd=tmp, env=env, capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"`cascade claims --json` failed at {rev}: {last}")
    old = {(r["claim"], r["experiment"]): r for r in json.loads(proc.stdout)}
    new = {(r["claim"], r["experiment"]): r for r in claims(profile)}
    out = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key), new.get(key)
        for field in ("verdict", "effect", "ci95", "n_seeds"):
            va, vb = (r.get(field) if r else None for r in (a, b))
            if everything or va != vb:
                out.append({"claim": key[0], "experiment": key[1], "field": field, rev: va, "working tree": vb,
                            "change": _change(va, vb)})
    return out


def _change(a, b) -> str:
    if a == b:
        return ""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return f"{b - a:+.4g}"
    return "changed"
