"""Records prove their integrity: an edited number, a removed key or a truncated file is named and never used,
`status` lists it, `run` recomputes it; `migrate` signs old records without recomputing; nothing invalid is written."""
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest

from cascade import cli, experiments
from cascade import runs as R
from cascade.store import CorruptRecord, Store, digest


@pytest.fixture(scope="module")
def smoke(smoke_phenomenon):
    return smoke_phenomenon


def _finetune(result):
    return next((run, rec) for run, rec in result.records if run.kind == "finetune" and run.prune.criterion == "gmp")


def _damaged(path, how):
    text = path.read_text()
    if how == "edit":
        rec = json.loads(text)
        rec["result"]["tracker"][-1][4] += 7.0
        path.write_text(json.dumps(rec, indent=1, sort_keys=True))
    elif how == "remove":
        rec = json.loads(text)
        del rec["result"]["final"]
        rec["digest"] = digest(rec)  # even a record re-signed after the edit is caught by its schema
        path.write_text(json.dumps(rec, indent=1, sort_keys=True))
    elif how == "truncate":
        path.write_text(text[: len(text) // 2])
    elif how == "empty":
        path.write_text("")
    elif how == "type":
        rec = json.loads(text)
        rec["result"]["tracker"] = "rows"
        rec["digest"] = digest(rec)
        path.write_text(json.dumps(rec))
    return text


@pytest.mark.parametrize("how, reason", [("edit", "does not match its digest"), ("remove", "no result.final"),
                                         ("truncate", "is not valid JSON"), ("empty", "is not valid JSON"),
                                         ("type", "result.tracker is a str, not a list")])
def test_a_damaged_record_is_named_never_used_listed_and_recomputed(smoke, how, reason, capsys, monkeypatch):
    root, result = smoke
    run, rec = _finetune(result)
    store = Store("smoke")
    path = store.path(run)
    original = _damaged(path, how)
    with pytest.raises(CorruptRecord, match=f"record {path} .*{reason}"):
        store.get(run)
    with pytest.raises(CorruptRecord, match=reason):  # never used: the analysis refuses it, naming the file
        experiments.cached_verdicts("phenomenon", experiments.Profile.resolve("smoke", names=["phenomenon"]))
    assert cli.main(["status", "phenomenon", "--profile", "smoke", "-p", "hot=", "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert [(t["key"], t["why"]) for t in tasks] == [(run.key, R.RECORD_CORRUPT)] and reason in tasks[0]["problem"]
    assert cli.main(["run", "phenomenon", "--profile", "smoke", "-p", "hot=", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 1
    again = store.get(run)
    assert again["result"] == rec["result"]  # recomputed on the same CPU and threads: the same numbers
    assert json.loads(original)["result"] == again["result"]


def test_migrate_signs_an_unsigned_record_without_changing_its_content(smoke):
    root, result = smoke
    run, rec = _finetune(result)
    store = Store("smoke")
    unsigned = {k: v for k, v in store.get(run).items() if k != "digest"}
    store.path(run).write_text(json.dumps(unsigned, indent=1, sort_keys=True) + "\n")
    with pytest.raises(CorruptRecord, match="has no digest"):
        store.get(run)
    assert cli.main(["migrate", "--profile", "smoke"]) == 0
    signed = store.get(run)
    assert {k: v for k, v in signed.items() if k != "digest"} == unsigned and signed["digest"] == digest(unsigned)


@dataclass(frozen=True)
class Tiny:
    kind: ClassVar[str] = "test-tiny"
    version: ClassVar[int] = 1
    n: int = 0


def test_a_non_finite_number_is_written_as_null(tmp_path):
    store = Store("smoke", root=tmp_path)
    run = Tiny()
    rec = store.put(run, {"loss": math.nan, "curve": [1.0, math.inf]})
    assert rec["result"] == {"loss": None, "curve": [1.0, None]}
    assert json.loads(store.path(run).read_text())["result"] == {"loss": None, "curve": [1.0, None]}


@pytest.mark.parametrize("profile", ["../../x", "paper/../..", ""])
def test_a_profile_that_would_leave_the_store_is_refused_by_every_command(profile, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path))
    for argv in (["migrate"], ["claims"], ["status"], ["run", "phenomenon"], ["book"], ["diff", "HEAD"]):
        assert cli.main([*argv, "--profile", profile]) == 2, argv
        assert "profile" in capsys.readouterr().err
    with pytest.raises(ValueError, match="allowed: letters, digits"):
        Store(profile)
