"""Faults a user can cause: each is one line before any compute, or recovers with identical records; nothing
destructive happens before every check has passed."""
import errno
import json
import os
import pickle
import shutil

import pytest

from cascade import cli, experiments
from cascade import runs as R
from cascade.store import Store


@pytest.fixture(scope="module")
def smoke(smoke_phenomenon):
    return smoke_phenomenon[0]


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("how", ["read-only", "scheduler"])
def test_book_force_deletes_nothing_when_it_refuses(smoke, how, monkeypatch, capsys):
    before = _snapshot(smoke)
    args = ["book", "--profile", "smoke", "--only", "phenomenon", "--force"]
    if how == "read-only":
        monkeypatch.setenv("CASCADE_READ_ONLY", "1")
    else:
        args += ["--scheduler", "tcp://127.0.0.1:1"]
    assert cli.main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert _snapshot(smoke) == before


def test_a_store_that_cannot_be_written_is_one_line_before_any_compute(smoke, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(experiments.tempfile, "NamedTemporaryFile", refuse)
    before = _snapshot(smoke)
    assert cli.main(["run", "phenomenon", "--profile", "smoke", "-p", "fractions=0.3", "-p", "hot="]) == 2
    err = capsys.readouterr().err
    assert "is not writable (Read-only file system)" in err and err.count("\n") == 1
    assert _snapshot(smoke) == before


def test_a_full_disk_is_one_line_and_leaves_no_half_written_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cascade.store.os.fsync", full)
    assert cli.main(["run", "phenomenon", "--profile", "smoke", "-p", "seeds=1", "-p", "hot="]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar: a disk fills up during compute
    assert last.startswith("error: No space left on device") and "Traceback" not in err
    assert not list((tmp_path / "results").rglob("*.json")) and not list((tmp_path / "results").rglob("*.tmp"))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cascade-evil-ran",))


@pytest.mark.parametrize("how, fraction", [("truncated", 0.45), ("hostile", 0.5), ("not a checkpoint", 0.55)])
def test_a_broken_dependency_checkpoint_is_rebuilt_with_identical_numbers(smoke, how, fraction, capsys, tmp_path):
    """A new fraction needs the dense model's checkpoint, which is broken: it is rebuilt, no code in it runs."""
    store = Store("smoke")
    cfg = experiments.get("phenomenon").make_config("smoke", hot="")
    pre = next(r for r in experiments.get("phenomenon").all_runs(cfg) if r.kind == "pretrain")
    path = store.checkpoint_dir(pre) / "last.pt"
    if not path.exists():  # an earlier case rebuilt it under this name: any readable checkpoint will do
        R.ensure_all([R.FinetuneRun(pre, R.PruneConfig("gmp", 0.3, 0), pre.train)], store)
    good = path.read_bytes()
    (tmp_path / "good.pt").write_bytes(good)
    if how == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif how == "hostile":
        path.write_bytes(pickle.dumps(Evil()))
    else:
        path.write_text("hello")
    assert R.plan([R.FinetuneRun(pre, R.PruneConfig("gmp", fraction, 0), pre.train)], store)[0] == \
        (pre, R.CHECKPOINT_MISSING)
    assert cli.main(["run", "phenomenon", "--profile", "smoke", "-p", f"fractions={fraction}", "-p", "hot=",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["computed"] > 0
    assert not os.path.exists("/tmp/cascade-evil-ran")
    # rebuilt on the same CPU and threads: the same weights
    assert R.base.weight_digest(path) == R.base.weight_digest(tmp_path / "good.pt")


def test_a_run_stored_by_another_process_meanwhile_is_read_back_not_computed(smoke):
    store = Store("smoke")
    cfg = experiments.get("phenomenon").make_config("smoke", hot="")
    run = next(r for r in experiments.get("phenomenon").all_runs(cfg) if r.kind == "finetune")
    assert run.task(store) is False  # stored with its checkpoint: read back
    shutil.rmtree(store.checkpoint_dir(run))
    assert run.task(store) is True  # its checkpoint was missing: computed, the record kept as it was
    assert json.loads(store.path(run).read_text())["digest"] == store.get(run)["digest"]
