import dataclasses
import json
import os
from pathlib import Path
from typing import ClassVar

import pytest

from cascade import store
from cascade.store import Store, canonical, config_hash

CONFIG = {"model": "resnet8", "lr": 0.1, "sizes": (256, 128), "nested": {"b": None, "a": True}}


@dataclasses.dataclass(frozen=True)
class Cfg:
    """A toy run: the store files a record by the run's kind, version and config."""
    kind: ClassVar[str] = "exp"
    version: ClassVar[int] = 1
    lr: float = 0.1
    sizes: tuple[int, ...] = (256, 128)
    root: Path = Path("/data")


class CfgV0(Cfg):  # the same configs under an older version of the kind
    version = 0


class CfgV2(Cfg):
    version = 2


class OtherKind(Cfg):
    kind = "other"


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
    record = st.put(CfgV2(), result, meta={"wall_s": 1.25})
    got = st.get(CfgV2())
    assert got == record
    assert got["result"] == result and got["result"]["acc"] == 0.30000000000000004
    assert got["meta"] == {"wall_s": 1.25} and got["key"] == config_hash(Cfg(), 2) == store.key(CfgV2())
    assert got["experiment"] == "exp" and got["version"] == 2 and got["profile"] == "smoke"
    assert st.folder("exp") == st.root / "smoke" / "exp"
    assert st.path(CfgV2()) == st.root / "smoke" / "exp" / f"{got['key']}.json"
    assert st.checkpoint_dir(CfgV2()) == st.cache / "ckpt" / "exp" / got["key"]


def test_changed_config_or_version_misses(st):
    st.put(Cfg(), {"acc": 0.5})
    assert st.get(Cfg(lr=0.2)) is None
    assert config_hash(Cfg(lr=0.2), 1) != config_hash(Cfg(), 1)
    assert st.get(CfgV2()) is None
    assert config_hash(Cfg(), 2) != config_hash(Cfg(), 1)
    assert st.get(OtherKind()) is None
    assert Store("paper", root=st.root).get(Cfg()) is None
    assert st.get(Cfg())["result"] == {"acc": 0.5}


@pytest.mark.parametrize("field, value", [("config", {"lr": 0.2, "root": "/data", "sizes": [256, 128]}),
                                          ("version", 7)])
def test_get_rejects_record_whose_config_differs(st, field, value):
    st.put(Cfg(), {"acc": 0.5})
    path = st.path(Cfg())
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    with pytest.raises(store.CorruptRecord, match="does not match its digest"):
        st.get(Cfg())  # edited by hand: named, never used
    record["digest"] = store.digest(record)
    path.write_text(json.dumps(record))
    assert st.get(Cfg()) is None  # a sound record of another config or version is not this run's


@pytest.mark.parametrize("fails", ["replace", "fsync"])
def test_atomic_write_survives_a_crash(st, monkeypatch, fails):
    old = st.put(Cfg(), {"acc": 0.5})
    folder = st.root / "smoke" / "exp"

    def boom(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, fails, boom)
    with pytest.raises(OSError, match="simulated crash"):
        st.put(Cfg(), {"acc": 0.9})  # overwrite an existing record
    with pytest.raises(OSError, match="simulated crash"):
        st.put(Cfg(lr=0.3), {"acc": 0.9})  # write a new one
    monkeypatch.undo()
    assert st.get(Cfg()) == old
    assert st.get(Cfg(lr=0.3)) is None
    assert sorted(p.name for p in folder.iterdir()) == [f"{config_hash(Cfg(), 1)}.json"]


def test_keys_lists_every_stored_record_and_get_only_current_ones(st):
    c1, c2, c3, c4 = Cfg(lr=0.1), Cfg(lr=0.2), Cfg(lr=0.3), Cfg(lr=0.4)
    k = {c: store.key(c) for c in (c1, c2, c3, c4)}
    assert k[c1] == config_hash(c1, 1)
    for c in (c1, c2, c4):
        st.put(c, {"acc": 0.5})
    old = st.put(CfgV0(lr=0.1), {"acc": 0.4})["key"]  # same config, older version: another key
    assert old != k[c1] and st.keys("exp") == {k[c1], k[c2], k[c4], old}  # current or not
    assert [c for c in (c1, c2, c3) if st.get(c) is None] == [c3]
    # A record re-signed with another config is not returned, though its file is still listed.
    path = st.path(c2)
    record = json.loads(path.read_text().replace('"lr": 0.2', '"lr": 0.25'))
    record["digest"] = store.digest(record)
    path.write_text(json.dumps(record))
    assert [c for c in (c1, c2, c3) if st.get(c) is None] == [c2, c3] and k[c2] in st.keys("exp")
    assert st.keys("nothing-yet") == set()


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "r"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "c"))
    s = Store("paper")
    assert (s.root, s.cache) == (tmp_path / "r", tmp_path / "c")
    monkeypatch.delenv("CASCADE_RESULTS")
    assert store.default_root() == store.REPO / "results"


def test_records_are_readable_by_others(st):
    st.put(Cfg(), {"acc": 0.5})
    assert st.path(Cfg()).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


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
    assert store.config_hash(runs[0], runs[0].version) == PINNED_PRETRAIN == runs[0].key == store.key(runs[0])
    assert (Path(__file__).parents[1] / "results" / "paper" / "pretrain" / f"{PINNED_PRETRAIN}.json").exists()


def test_from_canonical_rebuilds_nested_runs_and_refuses_unknown_fields():
    from cascade import runs as R
    from cascade.train import TrainConfig

    run = R.FinetuneRun(R.PretrainRun(R.DataConfig(train_size=None), "resnet8", 4, TrainConfig(milestones=(0.3,))),
                        R.PruneConfig("gmp", 0.1), TrainConfig(lr=0.01))
    assert store.from_canonical(R.FinetuneRun, canonical(run)) == run
    assert store.from_canonical(R.FinetuneRun, json.loads(json.dumps(canonical(run)))) == run
    with pytest.raises(ValueError, match="field.s. speed unknown to PruneConfig; allowed: criterion, fraction, include_first, include_last, seed, skip, stage_ratios$"):
        store.from_canonical(R.PruneConfig, {"criterion": "gmp", "fraction": 0.1, "speed": 2})


def test_migrate_moves_old_full_form_records_to_current_keys(st):
    from cascade import runs as R
    from cascade.train import TrainConfig

    run = R.PretrainRun(R.DataConfig(), "resnet8", 4, TrainConfig(epochs=2))
    old = {"data": dataclasses.asdict(run.data), "model": "resnet8", "width": 4, "train": dataclasses.asdict(run.train)}
    old["train"]["milestones"] = list(old["train"]["milestones"])
    folder = st.root / "smoke" / "pretrain"
    folder.mkdir(parents=True)
    record = {"key": "0123456789ab", "experiment": "pretrain", "version": 1, "profile": "smoke", "config": old,
              "meta": {"wall_time_s": 1.0},
              "result": {"epochs": 2, "history": [], "final": {"test_acc": 0.5}, "counts": {}}}  # unsigned
    (folder / "0123456789ab.json").write_text(json.dumps(record))
    stale = dict(record, version=0, key="ffffffffffff")
    (folder / "ffffffffffff.json").write_text(json.dumps(stale))
    assert st.get(run) is None and not st.path(run).exists()  # not at its current key yet
    moved = store.migrate(st.root, "smoke", {"pretrain": R.PretrainRun})
    key = config_hash(run, 1)
    assert moved == {"0123456789ab": key}
    got = st.get(run)  # moved and signed: its digest checks
    assert got["result"] == record["result"] and got["meta"] == record["meta"] and got["key"] == key
    assert got["digest"] == store.digest(got)
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted([key, "ffffffffffff"])
    assert store.migrate(st.root, "smoke", {"pretrain": R.PretrainRun}) == {}
