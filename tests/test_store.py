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
    assert canonical(Cfg()) == {"lr": 0.1, "root": "/data", "sizes": [256, 128]}
    assert config_hash(Cfg(), "v1") == config_hash({"sizes": [256, 128], "root": "/data", "lr": 0.1}, "v1")
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
