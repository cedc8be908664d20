"""Tables for people, from stored records only: the claims table, shared by the book and `cascade claims`.

Nothing here computes a run; a missing record shows as "not run".
"""
from __future__ import annotations

VERDICTS = {True: "reproduces", False: "does not reproduce", None: "inconclusive"}
NOT_RUN, UNTESTED = "not run", "not yet tested"


def claims(profile: str = "paper", root=None) -> list[dict]:
    """One row per (claim, experiment testing it, verdict); a claim no experiment tests gets one row too.

    Keys: claim, statement, experiment, notebook, verdict (a VERDICTS word, NOT_RUN or UNTESTED), holds,
    effect, ci95, n_seeds, condition, summary.
    """
    from . import experiments

    rows = []
    for claim, text in experiments.CLAIMS.items():
        base = {"claim": claim, "statement": text, "experiment": None, "notebook": None, "holds": None,
                "effect": None, "ci95": [None, None], "n_seeds": 0, "condition": "", "summary": ""}
        tested = [e for e in experiments.REGISTRY.values() if claim in e.claims]
        if not tested:
            rows.append({**base, "verdict": UNTESTED})
        for exp in tested:
            here = {**base, "experiment": exp.name, "notebook": exp.notebook}
            found = [v for v in experiments.cached_verdicts(exp.name, profile, root) if v["claim"] == claim]
            if not found:
                rows.append({**here, "verdict": NOT_RUN})
            for v in found:
                rows.append({**here, "verdict": VERDICTS[v["holds"]], "holds": v["holds"], "effect": v["effect"],
                             "ci95": v["ci95"], "n_seeds": v["n_seeds"], "condition": v.get("condition", ""),
                             "summary": v["summary"]})
    return rows


def effect(row: dict) -> str:
    """'0.2 [0.11, 0.3]': the effect with its 95% CI, or '' when there is none."""
    if row["effect"] is None:
        return ""
    lo, hi = row["ci95"]
    return f"{row['effect']:.3g} [{lo:.3g}, {hi:.3g}]"


def markdown_table(head: list[str], rows: list[list]) -> str:
    """A Markdown table; '|' inside a cell is escaped."""
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *cells])


def claims_markdown(rows: list[dict], link=None, statements: bool = True) -> str:
    """The claims table as Markdown; `link(row)` gives the evidence cell (default: the notebook's name).
    Without `statements` it fits a terminal."""
    link = link or (lambda row: row["notebook"] or "")
    head = ["Claim", "Statement", "Verdict", "Effect [95% CI]", "Seeds", "Condition", "Evidence"]
    body = [[r["claim"], r["statement"], r["verdict"], effect(r), r["n_seeds"] or "", r["condition"], link(r)]
            for r in rows]
    if not statements:
        head, body = head[:1] + head[2:], [b[:1] + b[2:] for b in body]
    return markdown_table(head, body)
