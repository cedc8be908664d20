"""Open run kinds: a kind defined outside the package is computed by the executor, dependencies first."""
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import pytest

from cascade import executors, experiments
from cascade import runs as R
from cascade.store import Store


@R.register
@dataclass(frozen=True)
class Square(R.Run):
    """A toy kind: x squared, plus the results of the runs it depends on."""

    kind: ClassVar[str] = "test-square"
    x: int
    after: tuple = ()
    log: ClassVar[list] = []

    def deps(self):
        return self.after

    def compute(self, store, quiet=True):
        if self.x < 0:
            raise ValueError(f"x={self.x} is invalid; allowed: x >= 0")
        time.sleep(0.01 * (self.x % 3))
        below = sum(store.get(d)["result"]["value"] for d in self.after)
        Square.log.append(self.x)
        return {"value": self.x ** 2 + below}

    def labels(self):
        return {"x": self.x}

    def cost(self):
        return float(self.x)


def toy_experiment(runs):
    return experiments.Experiment("toy", "99_toy", (), dict, {}, lambda cfg: runs,
                           lambda cfg, records: ({}, [{"claim": "X", "value": [rec["result"]["value"]
                                                                                for _, rec in records]}]))


@pytest.fixture
def store(tmp_path):
    Square.log.clear()
    return Store("smoke", root=tmp_path)


def test_a_registered_kind_is_computed_dependencies_first(store):
    a, b = Square(2), Square(3)
    c = Square(4, after=(a, b))
    exp = toy_experiment([c, Square(5, after=(c,))])
    assert exp.all_runs({}) == [a, b, c, Square(5, after=(c,))]
    result = experiments.execute(exp, {}, store, quiet=True)
    assert result.verdicts[0]["value"] == [4, 9, 16 + 4 + 9, 25 + 29]  # hand-computed
    assert Square.log == [2, 3, 4, 5] and R.KINDS["test-square"] is Square
    experiments.execute(exp, {}, store, quiet=True)
    assert Square.log == [2, 3, 4, 5]  # stored: nothing recomputed


def test_schedule_submits_a_run_only_after_its_dependencies(store):
    a, b = Square(1), Square(2)
    c, d = Square(3, after=(a,)), Square(4, after=(b, a))
    finished_before = {}

    def submit(run):
        finished_before[run] = set(Square.log)
        return pool.submit(run.ensure, store)

    with ThreadPoolExecutor(2) as pool:
        executors.schedule([a, b, c, d], submit, lambda run, result: None)
    assert sorted(Square.log) == [1, 2, 3, 4]
    assert finished_before[c] >= {1} and finished_before[d] >= {1, 2}


def test_schedule_raises_the_first_failure_and_submits_nothing_after_it(store):
    bad = Square(-1)
    child = Square(6, after=(bad,))
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="x=-1 is invalid"):
        executors.schedule([bad, Square(3), child], lambda r: pool.submit(r.ensure, store),
                           lambda run, result: None)
    assert 6 not in Square.log and 3 in Square.log


def test_registering_a_taken_kind_name_is_refused():
    with pytest.raises(ValueError, match="run kind 'pretrain' is registered twice"):
        @R.register
        @dataclass(frozen=True)
        class Other(R.Run):
            kind: ClassVar[str] = "pretrain"


def test_ported_kinds_declare_dependencies_labels_and_cost():
    exp = experiments.get("phenomenon")
    cfg = exp.make_config("smoke")
    ft = exp.runs(cfg)[0]
    assert ft.deps() == (ft.pretrain,) and ft.pretrain.deps() == ()
    assert ft.labels()["criterion"] == "none" and ft.pretrain.labels()["model"] == cfg.model
    # cost: epochs x full batches x batch size, by hand from the smoke config
    per_epoch = (cfg.train_size // cfg.batch_size) * cfg.batch_size
    assert ft.cost() == cfg.finetune_epochs * per_epoch and ft.pretrain.cost() == cfg.pretrain_epochs * per_epoch


@dataclass(frozen=True)
class Job:
    """A stand-in for a run: a name, a cost and dependencies."""
    name: str
    weight: float
    after: tuple = ()

    def deps(self):
        return list(self.after)

    def cost(self):
        return self.weight


def test_schedule_fills_free_slots_with_the_longest_remaining_chain_first():
    """a (1) leads to c (10): its chain is 11, longer than b's 5, and once a is done c (10) goes before b (5).
    Submission in list order would give a, b, c; with one slot the longest chain goes first."""
    from concurrent.futures import Future

    a, b = Job("a", 1.0), Job("b", 5.0)
    c = Job("c", 10.0, after=(a,))
    order = []

    def submit(job):  # a job that is done as soon as it is submitted
        order.append(job.name)
        fut = Future()
        fut.set_result(None)
        return fut

    executors.schedule([a, b, c], submit, lambda run, result: None, slots=1)
    assert order == ["a", "c", "b"]
    order.clear()
    executors.schedule([a, b, c], submit, lambda run, result: None)  # no slot limit: everything ready at once, longest first
    assert order == ["a", "b", "c"]


def test_a_record_states_the_peak_memory_of_its_process():
    import resource

    from cascade import provenance

    rss = provenance.meta(1.0, "cpu")["peak_rss_mb"]
    assert rss == round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1) and rss > 50  # torch loaded


def test_plan_lists_missing_records_dependencies_first_and_ensure_writes_each_once(store):
    a = Square(2)
    b = Square(3, after=(a,))
    assert R.plan([b], store) == [(a, R.RECORD_MISSING), (b, R.RECORD_MISSING)]
    assert a.compute(store) == {"value": 4} and store.get(a) is None  # compute returns the result, writes nothing
    Square.log.clear()
    records = R.ensure_all([b], store)
    assert [rec["result"]["value"] for rec in records] == [9 + 4] and Square.log == [2, 3]
    assert store.get(a)["result"] == {"value": 4} and R.plan([b], store) == []
    assert "started_from" not in records[0]["meta"]  # a kind without checkpoints names none
    assert R.plan([b], store, force=True) == [(b, R.FORCED)]  # force: the runs asked for, not their stored deps
    store.put(b, {"value": -1})  # a record that force must replace
    assert b.ensure(store) == store.get(b) and Square.log == [2, 3]  # stored: returned as is
    assert b.ensure(store, force=True)["result"] == {"value": 13} == store.get(b)["result"] and Square.log == [2, 3, 3]


def test_unpack_keeps_a_stored_record_unless_told_to_replace_it(store):
    run = Square(2)
    store.put(run, {"value": 4})
    executors._unpack(store, run, {"result": {"value": -1}, "meta": {}}, {"last.pt": b"weights"})
    assert store.get(run)["result"] == {"value": 4}  # kept
    assert (store.checkpoint_dir(run) / "last.pt").read_bytes() == b"weights"  # the files always land
    executors._unpack(store, run, {"result": {"value": -1}, "meta": {"m": 1}}, {}, replace=True)
    assert store.get(run)["result"] == {"value": -1} and store.get(run)["meta"] == {"m": 1}
    executors._unpack(store, Square(7), None, {})  # no record: nothing written
    assert store.get(Square(7)) is None


def test_remote_computes_in_a_private_store_from_its_dependencies_records(store, monkeypatch):
    """What a Dask worker does, in this process: seeded with the dependency's record (and its own, when only its
    checkpoint is missing), it returns the run's record; with force it computes again whatever it was given."""
    monkeypatch.setattr(executors, "_worker_start", lambda: None)
    a = Square(2)
    b = Square(3, after=(a,))
    deps = [(a, (store.put(a, {"value": 4}), {}))]
    record, files = executors._remote(b, "smoke", None, deps, False)
    assert record["result"] == {"value": 9 + 4} and files == {} and Square.log == [3]
    assert store.get(b) is None  # the client writes the records, not the worker
    own = {**record, "result": {"value": -1}}
    assert executors._remote(b, "smoke", own, deps, False)[0]["result"] == {"value": -1} and Square.log == [3]
    assert executors._remote(b, "smoke", own, deps, True)[0]["result"] == {"value": 13} and Square.log == [3, 3]
