"""`cascade claims` and the book's claims page render the same rows, from stored records only."""
import json

from cascade import cli, experiments, report


def test_claims_json_lists_every_claim_from_the_committed_store(capsys, monkeypatch):
    monkeypatch.setenv("CASCADE_READ_ONLY", "1")  # computing anything would raise
    assert cli.main(["claims", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["claim"] for r in rows if r["experiment"] is None] == [
        c for c in experiments.CLAIMS if not any(c in e.claims for e in experiments.REGISTRY.values())]
    assert {r["claim"] for r in rows} == set(experiments.CLAIMS)
    assert all(r["verdict"] in {*report.VERDICTS.values(), report.NOT_RUN, report.UNTESTED} for r in rows)
    c1 = next(r for r in rows if r["experiment"] == "phenomenon")
    stored = experiments.cached_verdicts("phenomenon", "paper")[0]
    assert (c1["holds"], c1["effect"], c1["ci95"], c1["n_seeds"]) == (
        stored["holds"], stored["effect"], stored["ci95"], stored["n_seeds"])
    assert c1["verdict"] == report.VERDICTS[stored["holds"]] and c1["condition"].startswith("resnet20 w16")


def test_claims_text_is_the_books_table_without_statements(capsys):
    assert cli.main(["claims", "--profile", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| Claim | Verdict | Effect [95% CI] | Seeds | Condition | Evidence |"
    assert "| T3 | not yet tested |  |  |  |  |" in lines


def test_claims_refuses_an_unknown_profile(capsys):
    assert cli.main(["claims", "--profile", "huge"]) == 2
    assert capsys.readouterr().err == "error: unknown profile 'huge'; allowed: smoke, paper, full\n"


def test_effect_and_table_by_hand():
    assert report.effect({"effect": 0.12345, "ci95": [0.05, 0.2]}) == "0.123 [0.05, 0.2]"
    assert report.effect({"effect": None, "ci95": [None, None]}) == ""
    assert report.markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n| --- | --- |\n| 1 | x\\|y |"
