"""Planning: a missing checkpoint is its own task, computed once before its dependants; pricing a change."""
import json
import shutil
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from cascade import cli, experiments
from cascade import runs as R
from cascade.store import Store


@dataclass(frozen=True)
class Node(R.Run):
    """A run kind of the test: `parents` are its dependencies, `seconds` its cost; it leaves a 'checkpoint'."""

    kind: ClassVar[str] = "test-node"
    name: str
    parents: tuple = ()
    seconds: float = 1.0

    def deps(self):
        return self.parents

    def cost(self):
        return self.seconds

    def checkpoints(self):
        return ("last.pt",)

    def compute(self, store, quiet=True):
        folder = store.checkpoint_dir(self)
        folder.mkdir(parents=True, exist_ok=True)
        calls = folder.parent / "calls.txt"
        calls.write_text((calls.read_text() if calls.exists() else "") + self.name + "\n")
        torch.save({"model": {"w": torch.full((2,), float(len(self.name)))}}, folder / "last.pt")
        return {"name": self.name}


@pytest.fixture
def store(tmp_path):
    return Store("smoke", root=tmp_path / "results", cache=tmp_path / "cache")


def test_plan_lists_a_missing_checkpoint_once_and_only_when_a_dependant_needs_it(store):
    dense = Node("dense")
    a, b = Node("a", (dense,)), Node("b", (dense,))
    assert R.plan([a, b], store) == [(dense, R.RECORD_MISSING), (a, R.RECORD_MISSING), (b, R.RECORD_MISSING)]
    R.ensure_all([a, b], store)
    assert R.plan([a, b], store) == []
    shutil.rmtree(store.cache)  # a fresh clone: the records, not the checkpoints
    assert R.plan([a, b], store) == []  # nothing to compute needs the dense checkpoint
    c = Node("c", (dense,))
    assert R.plan([a, b, c], store) == [(dense, R.CHECKPOINT_MISSING), (c, R.RECORD_MISSING)]
    record = store.path(dense).read_text()
    R.ensure_all([a, b, c], store)
    assert store.path(dense).read_text() == record  # the stored record is kept, not rewritten
    rebuilt = json.loads((store.checkpoint_dir(dense) / R.base.REBUILT).read_text())
    assert store.get(c)["meta"]["started_from"] == {f"test-node/{dense.key}": {**rebuilt["weights"], "rebuilt": True}}
    assert store.get(a)["meta"]["started_from"][f"test-node/{dense.key}"]["rebuilt"] is False
    assert (store.checkpoint_dir(dense).parent / "calls.txt").read_text() == "dense\nc\n"  # dense once, then c
    assert R.plan([a, b], store, force=True) == [(a, R.FORCED), (b, R.FORCED)]  # what was asked for, only
    assert R.plan([dense, a], store, force=True) == [(dense, R.FORCED), (a, R.FORCED)]


def test_a_dependant_never_recomputes_a_missing_checkpoint(store):
    dense = Node("dense")
    a = Node("a", (dense,))
    R.ensure_all([a], store)
    shutil.rmtree(store.checkpoint_dir(dense))
    with pytest.raises(R.CheckpointMissing, match=f"test-node/{Node('b', (dense,)).key} needs the checkpoint of test-node/{dense.key}"):
        Node("b", (dense,)).ensure(store)
    assert not store.path(Node("b", (dense,))).exists()


def test_makespan_by_hand():
    a = Node("a", seconds=10)
    b = Node("b", (a,), seconds=5)
    c = Node("c", seconds=3)
    seconds = {r: r.seconds for r in (a, b, c)}
    assert experiments.makespan([a, b, c], seconds, 2) == 15  # a 0-10, c 0-3, then b 10-15
    assert experiments.makespan([a, b, c], seconds, 1) == 18
    assert experiments.makespan([c, a, b], seconds, 2) == 15  # the longest chain first, whatever the order


def _smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CASCADE_READ_ONLY", raising=False)


def test_a_fresh_clone_trains_each_dense_model_once(tmp_path, monkeypatch, capsys):
    """The smoke phenomenon computed, then the cache emptied and the records kept: a new fraction needs every
    seed's dense model again, and each is trained once, by its own task, on 2 workers."""
    _smoke(tmp_path, monkeypatch)
    experiments.run("phenomenon", "smoke", quiet=True, workers=2, hot="")
    shutil.rmtree(tmp_path / "cache")
    pretrains = {p.stem: p.read_text() for p in (tmp_path / "results" / "smoke" / "pretrain").glob("*.json")}
    assert cli.main(["run", "phenomenon", "--profile", "smoke", "-p", "fractions=0.3", "-p", "hot=",
                     "--dry-run", "--json"]) == 0
    price = json.loads(capsys.readouterr().out)
    needed = [t for t in price["tasks"] if t["kind"] == "pretrain"]
    assert sorted(t["key"] for t in needed) == sorted(pretrains)  # each listed once
    assert {t["why"] for t in needed} == {R.CHECKPOINT_MISSING}
    assert price["estimated_s"] > 0 and 0 < price["wall_s"] <= price["estimated_s"]
    result = experiments.run("phenomenon", "smoke", quiet=True, workers=2, fractions=(0.3,), hot="")
    assert result.computed == len(price["tasks"])
    for key, text in pretrains.items():  # the records stay; the rebuilt checkpoints say so
        assert (tmp_path / "results" / "smoke" / "pretrain" / f"{key}.json").read_text() == text
        rebuilt = json.loads((tmp_path / "cache" / "ckpt" / "pretrain" / key / R.base.REBUILT).read_text())
        for run, rec in result.records:
            if run.kind == "finetune" and run.pretrain.key == key:
                assert rec["meta"]["started_from"][f"pretrain/{key}"] == {**rebuilt["weights"], "rebuilt": True}


def test_status_prices_overrides_and_refuses_a_repeated_parameter(tmp_path, monkeypatch, capsys):
    _smoke(tmp_path, monkeypatch)
    assert cli.main(["status", "phenomenon", "--profile", "smoke", "-p", "fractions=0.3", "--json"]) == 0
    price = json.loads(capsys.readouterr().out)
    assert price["stored"] == 0 and price["estimated_s"] is None  # nothing stored to estimate from
    kinds = [t["kind"] for t in price["tasks"]]
    assert kinds.count("pretrain") == 2 and {t["why"] for t in price["tasks"]} == {R.RECORD_MISSING}
    assert cli.main(["run", "phenomenon", "--profile", "smoke", "-p", "seeds=2", "-p", "seeds=1"]) == 2
    assert "-p seeds is given twice ('2' and '1'); allowed: each parameter once" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
