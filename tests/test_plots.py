"""Figures: one legend entry per curve family, and the provenance line names what the figure was made from."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from cascade import plots  # noqa: E402


def test_curves_legend_lists_the_control_once_and_stamps_provenance():
    rows = [dict(epoch=e, metric="shed_tau0", criterion=c, fraction=f, seed=s, value=0.1 * e)
            for e in (0, 1) for c in ("none", "gmp") for f in (0.1, 0.2) for s in (0, 1)]
    result = SimpleNamespace(keys=lambda: ["abc", "def"], profile="smoke", wall_time_s=90.0,
                             records=[(None, {"meta": {"commit": "1234567", "hardware": "CPU X"}})] * 2)
    fig = plots.curves(pd.DataFrame(rows), ["shed_tau0"], result)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["gmp 10%", "gmp 20%", "control (unpruned)"]
    assert fig.texts[0].get_text() == ("commit 1234567 · profile smoke · 2 runs, keys abc… (+1) · CPU X · "
                                       "compute 1.5 min")
