"""The committed paper-profile records must match what the current code would compute.

A record is stale when no experiment's paper config hashes to its key any more (a changed default, field,
or run-kind version). The book must neither show stale numbers nor have to recompute on a fresh clone.
"""
import json

import pytest

from cascade import experiments
from cascade import runs as R
from cascade.store import REPO, Store

ROOT = REPO / "results"


@pytest.fixture(scope="module")
def paper():
    return experiments.Profile.resolve("paper", ROOT)


def test_no_stale_paper_records(paper):
    assert experiments.stale(paper) == []


@pytest.mark.parametrize("name", list(experiments.REGISTRY))
def test_paper_records_complete(name, paper):
    """`make book` on a fresh clone only re-plots: every paper run of every experiment is stored."""
    missing = [r for r, why in R.plan(paper.runs(name), paper.store) if why == R.RECORD_MISSING]
    assert not missing, f"{name}: {len(missing)} paper runs missing; run `python -m cascade run {name} --profile paper`"


def test_stale_detection_can_fail(tmp_path):
    """A record whose config no experiment produces is reported, and a current one is not."""
    exp = experiments.get("phenomenon")
    run = exp.all_runs(exp.make_config("smoke"))[0]
    store = Store("smoke", tmp_path)
    store.put(run, {"ok": True})
    smoke = experiments.Profile.resolve("smoke", tmp_path)
    assert experiments.stale(smoke) == []
    old = json.loads(store.path(run).read_text())
    (tmp_path / "smoke" / run.kind / "000000000000.json").write_text(json.dumps(old))
    (tmp_path / "smoke" / "retired-kind").mkdir()
    (tmp_path / "smoke" / "retired-kind" / "111111111111.json").write_text(json.dumps(old))
    assert experiments.stale(smoke) == [f"{run.kind}/000000000000", "retired-kind/111111111111"]
    only = experiments.Profile.resolve("smoke", tmp_path, names=["conditions"])  # not among 02's runs
    assert f"{run.kind}/{run.key}" in experiments.stale(only)


@pytest.mark.parametrize("name", [n for n, e in experiments.REGISTRY.items() if e.claims])
def test_claim_chapters_have_the_verdict_heading_the_claims_table_links_to(name):
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / f"{experiments.get(name).notebook}.ipynb", as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()]
    assert "## Verdict" in headings
