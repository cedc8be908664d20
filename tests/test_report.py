"""`cascade claims` and the book's claims page render the same rows, from stored records only."""
import json

from cascade import cli, experiments, report, stats


def test_claims_json_lists_every_claim_from_the_committed_store(capsys, monkeypatch):
    monkeypatch.setenv("CASCADE_READ_ONLY", "1")  # computing anything would raise
    assert cli.main(["claims", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["claim"] for r in rows if r["experiment"] is None] == [
        c for c in experiments.CLAIMS if not any(c in e.claims for e in experiments.REGISTRY.values())]
    assert {r["claim"] for r in rows} == set(experiments.CLAIMS)
    assert all(r["verdict"] in {*stats.WORDS, report.NOT_RUN, report.UNTESTED} for r in rows)
    tested = [r for r in rows if r["verdict"] in stats.WORDS]
    assert tested and all({"delta", "n_seeds", "ci95", "expected_half_width", "direction"} <= set(r) for r in tested)
    assert all(r["direction"] and r["delta"] is not None for r in tested)
    c1 = next(r for r in rows if r["experiment"] == "conditions")
    stored = experiments.cached_verdicts("conditions", experiments.Profile.resolve("paper"))[0]
    assert {k: c1[k] for k in stored.as_dict()} == stored.as_dict() and c1["verdict"] == stored.word


def test_claims_reads_the_store_of_the_resolved_profile(tmp_path):
    """A profile's name reads the default store; a resolved profile reads its own root (here an empty one)."""
    by_name = report.claims("paper")
    assert by_name == report.claims(experiments.Profile.resolve("paper"))
    assert any(r["verdict"] in stats.WORDS for r in by_name)
    empty = report.claims(experiments.Profile.resolve("paper", tmp_path))
    assert {r["verdict"] for r in empty if r["experiment"]} == {report.NOT_RUN}
    assert [r["claim"] for r in empty] == [r["claim"] for r in by_name]


def test_claims_text_is_the_books_table_without_statements(capsys):
    assert cli.main(["claims", "--profile", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| Claim | Verdict | Effect [95% CI]; δ | Seeds (± expected) | Condition | Evidence |"
    t3 = next(line for line in lines if line.startswith("| T3 |"))
    assert t3.startswith("| T3 | inconclusive | 0.5; δ = 0.5 | 4 |")  # a tally: the share that came true, no CI


def test_claims_refuses_an_unknown_profile(capsys):
    assert cli.main(["claims", "--profile", "huge"]) == 2
    assert capsys.readouterr().err == "error: unknown profile 'huge'; allowed: smoke, paper, full\n"


def test_effect_and_table_by_hand():
    assert report.effect({"effect": 0.12345, "ci95": [0.05, 0.2]}) == "0.123 [0.05, 0.2]"
    assert report.effect({"effect": None, "ci95": [None, None]}) == ""
    assert report.markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n| --- | --- |\n| 1 | x\\|y |"


def test_table_renders_html_and_text_with_formats_and_the_index_as_a_column():
    import pandas as pd

    frame = pd.DataFrame({"acc": [0.91234, 0.5], "macs": [1234567.0, 20.0], "note": ["x", None]},
                         index=pd.Index(["A", "B"], name="target"))
    t = report.table(frame, {"acc": "{:.1%}"})
    assert repr(t).splitlines() == ["target   acc      macs note",
                                    "     A 91.2% 1,234,567    x",
                                    "     B 50.0%        20     "]
    html = t._repr_html_()
    assert 'class="dataframe cascade-table"' in html
    assert "<td>91.2%</td>" in html and "<td>1,234,567</td>" in html and "<th>target</th>" in html
    plain = report.table(pd.DataFrame({"x": [0.000123456, 2.5, float("nan")]}))  # a RangeIndex is dropped
    assert repr(plain).splitlines() == ["        x", "0.0001235", "      2.5", "         "]


def test_estimate_reads_as_the_chapters_prose_states_it():
    three = stats.verdict("X", [-0.03, -0.0097, 0.0106], 0.0, "")  # mean -0.0097
    lo, hi = three.ci95
    assert report.estimate(three.effect, three.ci95, 3) == f"\u22120.0097 (95% CI \u2212{-lo:.3g} to {hi:.3g}, n = 3)"
    assert report.estimate(0.5, (None, None), 1) == "0.5 (n = 1)"
    assert report.estimate(None, (None, None), 0) == "no estimate (n = 0)"


def _result(name, **overrides):
    from types import SimpleNamespace

    exp = experiments.get(name)
    return SimpleNamespace(experiment=name, profile="smoke", config=exp.make_config("smoke", **overrides),
                           records=[(None, {"meta": {"wall_time_s": 90.0}})] * 2, wall_time_s=180.0,
                           verdicts=[stats.Verdict("R1", "inconclusive", -0.005, True, "", (0.0, 0.0121, 0.0242),
                                                   0.0121, (-0.0097, 0.0338), 0.02, "", "R1 is inconclusive.",
                                                   "the effect is +0.0121")])


def test_command_regenerates_the_chapter_with_its_overrides():
    assert report.command(_result("rethinking")) == "python -m cascade book --only 04_rethinking --profile smoke"
    assert report.command(_result("rethinking", finetune_lr=0.01, ticket_lrs="0.1,0.03")) == (
        "papermill notebooks/04_rethinking.ipynb out.ipynb -p profile smoke -p finetune_lr 0.01 "
        "-p ticket_lrs 0.1,0.03")


def test_glue_names_the_verdicts_and_the_setup(monkeypatch):
    import myst_nb
    import numpy as np

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.setdefault(name, (value, display)))
    report.glue(_result("rethinking"), dense_acc=np.float64(0.8945))
    values = {k: getattr(v, "data", v) for k, (v, display) in glued.items()}
    assert all(not display for _, display in glued.values())  # shown only where the prose pastes them
    assert values["R1"] == "0.0121 (95% CI \u22120.0097 to 0.0338, n = 3)"
    assert (values["R1_effect"], values["R1_lo"], values["R1_hi"], values["R1_n"]) == (0.0121, -0.0097, 0.0338, 3)
    assert values["R1_verdict"] == "**inconclusive**" and values["R1_summary"] == "R1 is inconclusive."
    assert values["R1_direction"] == "The effect is +0.0121." and values["R1_delta"] == -0.005
    assert values["R1_half_width"] == 0.02
    # smoke: resnet8 at width 4, 256 training and 128 test images, 2 epochs of 256 // 64 = 4 steps, 2 seeds
    assert values["setup"] == "resnet8 at width 4 on fashion-mnist (256 training / 128 test images)"
    assert (values["pretrain_steps"], values["seeds"], values["runs"], values["compute_min"]) == (8, 2, 2, 3.0)
    assert type(values["dense_acc"]) is float and values["dense_acc"] == 0.8945  # numpy scalars become floats
    assert values["command"] == "`python -m cascade book --only 04_rethinking --profile smoke`"


def test_records_frame_has_one_row_per_run_and_only_scalars():
    from types import SimpleNamespace

    run = SimpleNamespace(kind="finetune", labels=lambda: {"criterion": "gmp", "seed": 0})
    rec = {"key": "abc", "config": {"lr": 0.1, "pretrain": {"epochs": 20}}, "meta": {"wall_time_s": 9.5},
           "result": {"final": {"test_acc": 0.9}, "history": [{"epoch": 0}], "sparsity": 0.5}}
    frame = report.records_frame([(run, rec), (run, {**rec, "key": "def"})])
    assert frame.columns.tolist() == ["key", "kind", "criterion", "seed", "config.lr", "config.pretrain.epochs",
                                      "result.final.test_acc", "result.sparsity", "meta.wall_time_s"]
    assert frame.key.tolist() == ["abc", "def"] and frame["result.final.test_acc"].tolist() == [0.9, 0.9]


def test_diff_against_head_of_an_unchanged_store_lists_no_change(capsys):
    """HEAD's own code on HEAD's store against the working tree's: the same table when nothing changed
    (run on a clean checkout); every row of it with --all."""
    rows = report.diff("HEAD", "paper", everything=True)
    assert {r["change"] for r in rows} == {""}
    assert {(r["claim"], r["field"]) for r in rows} >= {("R1", "verdict"), ("C1", "effect"), ("T3", "n_seeds")}
    r1 = next(r for r in rows if r["claim"] == "R1" and r["field"] == "effect")
    assert r1["HEAD"] == r1["working tree"] == experiments.cached_verdicts("rethinking", experiments.Profile.resolve("paper"))[0].effect
    assert cli.main(["diff", "HEAD"]) == 0
    assert capsys.readouterr().out.startswith("no verdict, effect, CI or seed count changed between HEAD")


def test_diff_reports_a_change_and_refuses_bad_input(capsys, monkeypatch):
    assert report._change(0.25, 0.5) == "+0.25" and report._change("not run", "inconclusive") == "changed"
    assert report._change([1, 2], [1, 2]) == ""
    assert cli.main(["diff", "no-such-rev"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown revision 'no-such-rev'; allowed: a commit, branch or tag")
    assert cli.main(["diff", "HEAD", "--profile", "huge"]) == 2
    assert capsys.readouterr().err == "error: unknown profile 'huge'; allowed: smoke, paper, full\n"
