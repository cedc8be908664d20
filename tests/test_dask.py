"""Sweeps on Dask: a LocalCluster on the loopback address computes the same records as a local run, and a
worker killed mid-sweep costs nothing but time."""
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import cloudpickle
import pytest

distributed = pytest.importorskip("distributed")

from cascade import cli, experiments  # noqa: E402
from cascade import runs as R  # noqa: E402
from cascade.store import Store  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


@dataclass(frozen=True)
class Slow(R.Run):
    """A toy kind that takes `seconds` and sums the values of the runs it depends on."""

    kind: ClassVar[str] = "test-slow"
    x: int
    seconds: float = 0.0
    after: tuple = ()

    def deps(self):
        return self.after

    def compute(self, store, quiet=True):
        time.sleep(self.seconds)
        below = sum(store.get(d)["result"]["value"] for d in self.after)
        return {"value": 10 * self.x + below, "pid": os.getpid()}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as c:
        yield c


def _records(root):
    return {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


def test_phenomenon_on_dask_writes_the_records_of_a_local_run(cluster, tmp_path, capsys, monkeypatch):
    args = ["run", "phenomenon", "--profile", "smoke", "--json", "--scheduler", cluster.scheduler_address]
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "dask"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "dask-cache"))
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "local-cache"))  # the local run starts from nothing
    local = experiments.run("phenomenon", "smoke", quiet=True, root=tmp_path / "local")
    assert out["computed"] == out["runs"] == len(local.records) == 12  # 8 cold, 4 at the hot condition
    on_dask, here = _records(tmp_path / "dask"), _records(tmp_path / "local")
    assert list(on_dask) == list(here)  # same keys
    assert all(on_dask[k]["result"] == here[k]["result"] for k in here)  # same CPU and threads: same numbers


def test_on_dask_a_missing_checkpoint_is_rebuilt_once_and_the_record_kept(cluster, tmp_path, monkeypatch):
    """A store with its records but no checkpoints (a fresh clone): a new fraction needs each dense model again;
    on Dask each is rebuilt by its own task, its record kept, and the new records say so."""
    import shutil

    from cascade import runs as R

    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    experiments.run("phenomenon", "smoke", quiet=True, hot="", scheduler=cluster.scheduler_address)
    shutil.rmtree(tmp_path / "cache")
    pretrains = {p.stem: p.read_text() for p in (tmp_path / "results" / "smoke" / "pretrain").glob("*.json")}
    price = experiments.price("phenomenon", "smoke", fractions=(0.3,), hot="")
    assert sorted(t["key"] for t in price["tasks"] if t["why"] == R.CHECKPOINT_MISSING) == sorted(pretrains)
    result = experiments.run("phenomenon", "smoke", quiet=True, fractions=(0.3,), hot="",
                             scheduler=cluster.scheduler_address)
    assert result.computed == len(price["tasks"])
    for key, text in pretrains.items():
        assert (tmp_path / "results" / "smoke" / "pretrain" / f"{key}.json").read_text() == text
        assert (tmp_path / "cache" / "ckpt" / "pretrain" / key / R.base.REBUILT).exists()
    assert all(rec["meta"]["started_from"][f"pretrain/{run.pretrain.key}"]["rebuilt"]
               for run, rec in result.records if run.kind == "finetune")


def test_a_worker_killed_mid_sweep_loses_nothing(cluster, tmp_path):
    from cascade import executors

    client = distributed.Client(cluster.scheduler_address)
    first = [Slow(i, seconds=2.0) for i in range(3)]
    last = Slow(9, after=tuple(first))
    store = Store("smoke", root=tmp_path / "results", cache=tmp_path / "cache")
    killed = []

    def kill_a_busy_worker():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            busy = [w for w, keys in client.processing().items() if any(k.startswith("test-slow") for k in keys)]
            if busy:
                time.sleep(0.5)  # mid-run
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    executors.compute([*first, last], store, client=executors.connect(cluster.scheduler_address))
    killer.join()
    client.close()
    assert killed
    values = {run.x: store.get(run)["result"]["value"] for run in [*first, last]}
    assert values == {0: 0, 1: 10, 2: 20, 9: 90 + 30}  # hand-computed: the dependent run saw all three
    assert not list((tmp_path / "results").rglob("*.tmp")) and len(_records(tmp_path / "results")) == 4


def test_an_address_without_a_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path))
    monkeypatch.setenv("CASCADE_SCHEDULER", "tcp://127.0.0.1:9")  # the environment variable is honoured too
    assert cli.main(["run", "phenomenon", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Dask scheduler answers at 'tcp://127.0.0.1:9'") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())
