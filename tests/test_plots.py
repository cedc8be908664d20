"""Figures: one legend entry per curve family, and the provenance line names what the figure was made from."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from cascade import experiments, plots  # noqa: E402


def test_curves_legend_lists_the_control_once_and_stamps_provenance():
    rows = [dict(epoch=e, metric="shed_tau0", criterion=c, fraction=f, seed=s, value=0.1 * e)
            for e in (0, 1) for c in ("none", "gmp") for f in (0.1, 0.2) for s in (0, 1)]
    result = SimpleNamespace(keys=lambda: ["abc", "def"], profile="smoke", wall_time_s=90.0,
                             experiment="phenomenon", config=experiments.get("phenomenon").make_config("smoke"),
                             records=[(None, {"meta": {"commit": "1234567", "hardware": "CPU X"}})] * 2)
    fig = plots.curves(pd.DataFrame(rows), ["shed_tau0"], result)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["gmp 10%", "gmp 20%", "control (unpruned)"]
    assert fig.texts[0].get_text() == ("commit 1234567 · profile smoke · 2 runs, keys abc… (+1) · CPU X · "
                                       "compute 1.5 min\n"
                                       "regenerate: python -m cascade book --only 01_phenomenon --profile smoke")
    assert fig.get_size_inches()[0] == plots.COLUMN  # drawn at the book's column width


def test_forest_draws_each_claim_against_its_own_threshold():
    rows = [{"claim": "C1", "notebook": "01_a", "verdict": "does not reproduce", "effect": 0.04, "ci95": [0.03, 0.05],
             "threshold": 1.0},
            {"claim": "R1", "notebook": "04_b", "verdict": "inconclusive", "effect": 0.01, "ci95": [-0.01, 0.03],
             "threshold": -0.005},
            {"claim": "T1", "notebook": "05_c", "verdict": "not run", "effect": None, "ci95": [None, None],
             "threshold": None}]
    fig = plots.forest(rows)
    assert len(fig.axes) == 2  # the claim without an estimate has no row
    c1, r1 = fig.axes
    assert [line.get_xdata()[0] for line in c1.lines if line.get_linestyle() == "--"] == [1.0]
    lo, hi = c1.get_xlim()
    assert lo < 0.03 and hi > 1.0  # the CI and the threshold are both in view
    assert [t.get_text() for t in r1.texts] == ["inconclusive"]
    assert r1.texts[0].get_color() == plots.VERDICT_COLORS["inconclusive"]
