import dataclasses
import json
import os
from pathlib import Path

import pytest

from cascade import store
from cascade.store import Store, canonical, config_hash

CONFIG = {"model": "resnet8", "lr": 0.1, "sizes": (256, 128), "nested": {"b": None, "a": True}}


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    sizes: tuple[int, ...] = (256, 128)
    root: Path = Path("/data")


@pytest.fixture
def st(tmp_path) -> Store:
    return Store("smoke", root=tmp_path / "results", cache=tmp_path / "cache")


def test_known_hash_is_stable():
    # Pasted from one run of config_hash. Records on disk are found by this hash, so any change to
    # canonical()/config_hash() silently orphans every stored result: this test makes such a change loud.
    assert config_hash(CONFIG, 1) == "533ddf700924"


def test_hash_ignores_key_order_and_tuple_vs_list():
    shuffled = {"nested": {"a": True, "b": None}, "sizes": [256, 128], "lr": 0.1, "model": "resnet8"}
    assert list(canonical(shuffled)) == ["lr", "model", "nested", "sizes"]
    assert canonical(shuffled) == canonical(CONFIG)
    assert config_hash(shuffled, 1) == config_hash(CONFIG, 1)
    h = config_hash(CONFIG, 1)
    assert len(h) == 12 and int(h, 16) >= 0


@pytest.mark.parametrize("change", [{"lr": 0.01}, {"model": "resnet20"}, {"sizes": (256, 127)},
                                    {"nested": {"b": None, "a": 1}}, {"extra": 0}])
def test_hash_changes_with_any_value(change):
    # True and 1 differ too: a bool flag must never collide with a count.
    assert config_hash({**CONFIG, **change}, 1) != config_hash(CONFIG, 1)


def test_canonical_of_dataclass_and_path():
    cfg = Cfg(lr=0.2, sizes=(1, 2), root=Path("/elsewhere"))
    assert canonical(cfg) == {"lr": 0.2, "root": "/elsewhere", "sizes": [1, 2]}
    assert config_hash(cfg, "v1") == config_hash({"sizes": [1, 2], "root": "/elsewhere", "lr": 0.2}, "v1")
    with pytest.raises(TypeError, match="set"):
        canonical({"a": {1, 2}})


def test_round_trip(st):
    result = {"acc": 0.1 + 0.2, "curve": [1.5, float(2)], "n": 3}
    record = st.put("exp", Cfg(), 2, result, meta={"wall_s": 1.25})
    got = st.get("exp", Cfg(), 2)
    assert got == record
    assert got["result"] == result and got["result"]["acc"] == 0.30000000000000004
    assert got["meta"] == {"wall_s": 1.25} and got["key"] == config_hash(Cfg(), 2)
    assert st.path("exp", got["key"]) == st.root / "smoke" / "exp" / f"{got['key']}.json"
    assert st.checkpoint_dir("exp", got["key"]) == st.cache / "ckpt" / "exp" / got["key"]


def test_changed_config_or_version_misses(st):
    st.put("exp", Cfg(), 1, {"acc": 0.5})
    assert st.get("exp", Cfg(lr=0.2), 1) is None
    assert config_hash(Cfg(lr=0.2), 1) != config_hash(Cfg(), 1)
    assert st.get("exp", Cfg(), 2) is None
    assert config_hash(Cfg(), 2) != config_hash(Cfg(), 1)
    assert st.get("other", Cfg(), 1) is None
    assert Store("paper", root=st.root).get("exp", Cfg(), 1) is None
    assert st.get("exp", Cfg(), 1)["result"] == {"acc": 0.5}


@pytest.mark.parametrize("field, value", [("config", {"lr": 0.2, "root": "/data", "sizes": [256, 128]}),
                                          ("version", 7)])
def test_get_rejects_record_whose_config_differs(st, field, value):
    st.put("exp", Cfg(), 1, {"acc": 0.5})
    path = st.path("exp", config_hash(Cfg(), 1))
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    assert st.get("exp", Cfg(), 1) is None


@pytest.mark.parametrize("fails", ["replace", "fsync"])
def test_atomic_write_survives_a_crash(st, monkeypatch, fails):
    old = st.put("exp", Cfg(), 1, {"acc": 0.5})
    folder = st.root / "smoke" / "exp"

    def boom(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, fails, boom)
    with pytest.raises(OSError, match="simulated crash"):
        st.put("exp", Cfg(), 1, {"acc": 0.9})  # overwrite an existing record
    with pytest.raises(OSError, match="simulated crash"):
        st.put("exp", Cfg(lr=0.3), 1, {"acc": 0.9})  # write a new one
    monkeypatch.undo()
    assert st.get("exp", Cfg(), 1) == old
    assert st.get("exp", Cfg(lr=0.3), 1) is None
    assert sorted(p.name for p in folder.iterdir()) == [f"{config_hash(Cfg(), 1)}.json"]


def test_status_done_missing_stale(st):
    c1, c2, c3, c4 = Cfg(lr=0.1), Cfg(lr=0.2), Cfg(lr=0.3), Cfg(lr=0.4)
    k = {c: config_hash(c, 1) for c in (c1, c2, c3, c4)}
    for c in (c1, c2, c4):
        st.put("exp", c, 1, {"acc": 0.5})
    old = st.put("exp", c1, 0, {"acc": 0.4})["key"]  # same config, older version: stale
    assert st.status("exp", [c1, c2, c3], 1) == {"done": [k[c1], k[c2]], "missing": [k[c3]],
                                                 "stale": sorted([k[c4], old])}
    # A record whose stored config was tampered with is not done.
    path = st.path("exp", k[c2])
    path.write_text(path.read_text().replace('"lr": 0.2', '"lr": 0.25'))
    assert st.status("exp", [c1, c2, c3], 1)["missing"] == [k[c2], k[c3]]
    assert st.status("nothing-yet", [c1], 1) == {"done": [], "missing": [k[c1]], "stale": []}


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "r"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "c"))
    s = Store("paper")
    assert (s.root, s.cache) == (tmp_path / "r", tmp_path / "c")
    monkeypatch.delenv("CASCADE_RESULTS")
    assert store.default_root() == store.REPO / "results"


def test_records_are_readable_by_others(st):
    st.put("exp", Cfg(), 1, {"acc": 0.5})
    assert st.path("exp", config_hash(Cfg(), 1)).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


# ------------------------------------------------------------------------------ keys that survive new fields
def test_canonical_leaves_out_defaults_but_keeps_type_differences():
    assert canonical(Cfg()) == {}
    assert canonical(Cfg(lr=0.2)) == {"lr": 0.2}

    @dataclasses.dataclass(frozen=True)
    class Flag:
        on: int = 1

    assert canonical(Flag(on=True)) == {"on": True}  # True is not the default 1: kept, as the hash tells them apart


def test_a_new_field_with_a_no_op_default_keeps_every_key():
    from cascade.train import TrainConfig

    @dataclasses.dataclass(frozen=True)
    class Grown(TrainConfig):
        compile: bool = False

    assert config_hash(Grown(lr=0.05, epochs=3), 1) == config_hash(TrainConfig(lr=0.05, epochs=3), 1)
    assert config_hash(Grown(lr=0.05, epochs=3, compile=True), 1) != config_hash(TrainConfig(lr=0.05, epochs=3), 1)


PINNED_PRETRAIN = "5ae462233193"


def test_known_run_keys_are_pinned():
    # The paper profile's first pre-training run of 01, as committed in results/paper: a change to the canonical form or to a default that re-keys them fails here.
    from cascade import experiments

    exp = experiments.get("phenomenon")
    runs = exp.all_runs(exp.make_config("paper"))
    assert store.config_hash(runs[0], runs[0].version) == PINNED_PRETRAIN
    assert (Path(__file__).parents[1] / "results" / "paper" / "pretrain" / f"{PINNED_PRETRAIN}.json").exists()


def test_from_canonical_rebuilds_nested_runs_and_refuses_unknown_fields():
    from cascade.experiments import runs as R

    run = R.FinetuneRun(R.PretrainRun(R.DataConfig(train_size=None), "resnet8", 4, R.TrainConfig(milestones=(0.3,))),
                        R.PruneConfig("gmp", 0.1), R.TrainConfig(lr=0.01))
    assert store.from_canonical(R.FinetuneRun, canonical(run)) == run
    assert store.from_canonical(R.FinetuneRun, json.loads(json.dumps(canonical(run)))) == run
    with pytest.raises(ValueError, match="field.s. speed unknown to PruneConfig; allowed: criterion, fraction, seed"):
        store.from_canonical(R.PruneConfig, {"criterion": "gmp", "fraction": 0.1, "speed": 2})


def test_migrate_moves_old_full_form_records_to_current_keys(st):
    from cascade.experiments import runs as R

    run = R.PretrainRun(R.DataConfig(), "resnet8", 4, R.TrainConfig(epochs=2))
    old = {"data": dataclasses.asdict(run.data), "model": "resnet8", "width": 4, "train": dataclasses.asdict(run.train)}
    old["train"]["milestones"] = list(old["train"]["milestones"])
    folder = st.root / "smoke" / "pretrain"
    folder.mkdir(parents=True)
    record = {"key": "0123456789ab", "experiment": "pretrain", "version": 1, "profile": "smoke", "config": old,
              "meta": {"wall_time_s": 1.0}, "result": {"final": {"test_acc": 0.5}}}
    (folder / "0123456789ab.json").write_text(json.dumps(record))
    stale = dict(record, version=0, key="ffffffffffff")
    (folder / "ffffffffffff.json").write_text(json.dumps(stale))
    assert st.get("pretrain", run, 1) is None
    moved = store.migrate(st.root, "smoke", {"pretrain": R.PretrainRun})
    key = config_hash(run, 1)
    assert moved == {"0123456789ab": key}
    got = st.get("pretrain", run, 1)
    assert got["result"] == record["result"] and got["meta"] == record["meta"] and got["key"] == key
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted([key, "ffffffffffff"])
    assert store.migrate(st.root, "smoke", {"pretrain": R.PretrainRun}) == {}
