"""Chapter 06 (C6, C7): weight rewinding in the finetune kind, and the chapter's statistics on hand-made numbers."""
import math

import pandas as pd
import pytest
import torch

from cascade import runs as R
from cascade.chapters import rewinding
from cascade.experiments import REGISTRY
from cascade.store import Store
from cascade.train import TrainConfig, read_checkpoint

DATA = R.DataConfig("fashion-mnist", 256, 128)
PRE = R.PretrainRun(DATA, "resnet8", 4, TrainConfig(epochs=2, batch_size=64, seed=3))  # keeps epoch 1 by default
GMP = R.PruneConfig("gmp", 0.5, 3)
NOTHING = TrainConfig(epochs=0, batch_size=64, seed=3)  # the start, stored: what the survivors restart from


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewinding")
    return Store("smoke", root=root / "results", cache=root / "cache")


def test_weight_rewinding_restarts_the_survivors_of_the_trained_mask_from_the_kept_epoch(store):
    wr = R.FinetuneRun(PRE, GMP, NOTHING, rewind_epoch=1)
    control = R.FinetuneRun(PRE, R.PruneConfig("none", 0.5, 3), NOTHING, rewind_epoch=1)
    R.ensure_all([wr, control], store)
    epoch1 = read_checkpoint(store.checkpoint_dir(PRE) / "epoch_1.pt")["model"]["conv1.weight"]
    trained = PRE.network(store)
    kept = GMP.apply(trained)["conv1.weight"]  # chosen on the trained weights, not on the rewound ones
    assert not torch.equal(epoch1, trained.conv1.weight)
    assert torch.equal(wr.network(store).conv1.weight, epoch1 * kept)
    assert torch.equal(control.network(store).conv1.weight, epoch1)
    assert wr.labels()["init"] == "epoch 1" and R.FinetuneRun(PRE, GMP, NOTHING).labels()["init"] == "trained"
    first = [r for r in store.get(wr)["result"]["tracker"] if r[2] == "global" and r[3] == "pruned"][0]
    assert first[4] == pytest.approx(0.5, abs=0.01)


def test_rewind_epoch_is_checked_before_compute():
    with pytest.raises(ValueError, match=r"rewind_epoch=2 is invalid with schedule='one-shot'; allowed: None, or "
                                         r"with schedule 'one-shot' an epoch in pretrain.keep_epochs=\(1,\)"):
        R.FinetuneRun(PRE, GMP, NOTHING, rewind_epoch=2)
    with pytest.raises(ValueError, match=r"rewind_epoch=1 is invalid with schedule='gradual'"):
        R.FinetuneRun(PRE, GMP, NOTHING, rewind_epoch=1, schedule="gradual")


def test_the_chapters_arms_and_shared_cold_arms():
    cfg = REGISTRY["rewinding"].make_config("paper")
    runs = [r for r in REGISTRY["rewinding"].all_runs(cfg) if r.kind == "finetune"]
    # per seed: 3 methods x (control + 2 fractions), then the shed point's control and GMP, and 2:4 at two points
    assert len(runs) == len(set(runs)) == 3 * (3 * 3 + 2 + 2)
    pre = [r for r in REGISTRY["rewinding"].all_runs(cfg) if r.kind == "pretrain"]
    assert [p.key for p in pre] == [REGISTRY["conditions"].make_config("paper").pretrain(s).key for s in range(3)]
    lrr = [r for r in runs if r.finetune.seed == 0 and r.finetune.lr == 0.1 and r.finetune.weight_decay == 5e-4
           and r.rewind_epoch is None]
    assert sorted((r.prune.criterion, r.prune.fraction) for r in lrr) == [
        ("gmp", 0.5), ("gmp", 0.8), ("nm", 0.5), ("none", 0.5)]  # LRR's GMP 50% and control are C7's cold arms
    assert {r.finetune.epochs for r in runs} == {4} and all(r.recompute_bn for r in runs)
    assert cfg.tracker().nm_groups == ("2:4",) and cfg.tracker().overlap_sparsities == (0.8,)


@pytest.mark.parametrize("params, message", [
    (dict(fractions=(0.6, 0.8)), r"fractions\[0\]=0.6 is invalid with nm='2:4'; allowed: 0.5"),
    (dict(overlap=0.5), r"overlap=0.5 is invalid; allowed: in \(0.5, 1\)"),
    (dict(rewind_epoch=20), r"rewind_epoch=20 is invalid; allowed: an int in \[1, pretrain_epochs=20\)"),
    (dict(shed_point="0.1/0.0005/cosine"), r"shed_point='0.1/0.0005/cosine' is invalid"),
    (dict(nm="4:2"), r"nm_groups entry '4:2' is invalid"),
    (dict(effective="rms"), r"shedding definition 'rms' is invalid"),
    (dict(delta_slope=0), r"delta_slope=0.0 is invalid; allowed: a number > 0"),
])
def test_rewinding_config_rejects_bad_values(params, message):
    with pytest.raises(ValueError, match=message):
        REGISTRY["rewinding"].make_config("paper", **params)


def test_a_rewind_epoch_other_than_the_default_gets_a_dense_run_of_its_own():
    cfg = REGISTRY["rewinding"].make_config("paper", rewind_epoch=2)
    assert cfg.dense(0).keep_epochs == (1, 2) and cfg.dense(0).key != cfg.pretrain(0).key


def cells(advantages, excesses):
    """C6 cells: per seed, LRR and WR at 0.5 and 0.8, in that order."""
    return pd.DataFrame([dict(method=m, fraction=f, seed=s, advantage=a, excess=x)
                         for s, (adv, exc) in enumerate(zip(advantages, excesses))
                         for (m, f), a, x in zip([("LRR", 0.5), ("LRR", 0.8), ("WR", 0.5), ("WR", 0.8)], adv, exc)])


def test_c6_slope_premise_and_verdict_by_hand():
    """Seed 0: advantage = 0.5 x excess exactly (slope 0.5); seed 1: 0.55 x; seed 2: 0.6 x. WR at 0.8 has the
    largest advantage (0.2, 0.22, 0.24: CI far above 0.01), so the premise holds, and the slopes' CI
    (0.55 +- t(2) 0.05 / sqrt 3 = 0.55 +- 0.124) lies above 0.1: C6 reproduces. With slopes 0.2, 0.3, 0.4 the CI
    (0.3 +- 0.248) straddles 0.1: inconclusive. With no advantage it is not testable."""
    cfg = REGISTRY["rewinding"].make_config("paper")
    excess = [0.1, 0.2, 0.3, 0.4]
    c = cells([[k * x for x in excess] for k in (0.5, 0.55, 0.6)], [excess] * 3)
    slope = rewinding.slopes(c)
    assert slope.tolist() == pytest.approx([0.5, 0.55, 0.6])
    v = rewinding.c6_verdict(cfg, c, slope)
    assert v.premise.present and "(WR, f = 0.8)" in v.premise.statistic
    assert v.word == "reproduces" and v.ci95[0] == pytest.approx(0.55 - 4.3027 * 0.05 / math.sqrt(3), abs=1e-3)
    c = cells([[k * x for x in excess] for k in (0.2, 0.3, 0.4)], [excess] * 3)
    assert rewinding.c6_verdict(cfg, c, rewinding.slopes(c)).word == "inconclusive"
    flat = cells([[0.0, 0.001, -0.001, 0.0]] * 3, [excess] * 3)
    assert rewinding.c6_verdict(cfg, flat, rewinding.slopes(flat)).word == "not testable"
    same = cells([[0.02, 0.03, 0.04, 0.05]] * 3, [[0.1] * 4] * 3)  # no variation in the excess: no slope
    assert rewinding.slopes(same).isna().all()


def c7(shed_minus_cold, drift, cost):
    return pd.DataFrame({"seed": range(3), "shed_minus_cold": shed_minus_cold, "drift_excess_shed": drift,
                         "cost_difference": cost})


@pytest.mark.parametrize("drift, cost, word", [
    ((0.05, 0.06, 0.07), (0.03, 0.04, 0.05), "reproduces"),  # both CIs above their deltas (0.02, 0.01)
    ((0.05, 0.06, 0.07), (-0.01, -0.005, 0.0), "does not reproduce"),  # N:M's cost no larger where it sheds
    ((0.0, 0.001, -0.001), (0.03, 0.04, 0.05), "does not reproduce"),  # the kept set does not move beyond control
    ((0.0, 0.03, 0.06), (0.03, 0.04, 0.05), "inconclusive"),  # the drift's CI straddles 0.02
])
def test_c7_combines_its_two_parts_by_hand(drift, cost, word):
    cfg = REGISTRY["rewinding"].make_config("paper")
    alive = pd.Series({"shed": True, "cold": True})
    v = rewinding.c7_verdict(cfg, c7((0.05, 0.06, 0.07), drift, cost), alive)
    assert v.word == word and v.values == pytest.approx(drift) and v.premise.present
    assert v.summary.startswith(f"C7 {rewinding.stats.SPOKEN[word]}")


def test_c7_is_not_testable_without_shedding_or_where_accuracy_is_lost():
    cfg = REGISTRY["rewinding"].make_config("paper")
    frame = c7((0.0, 0.01, 0.005), (0.05, 0.06, 0.07), (0.03, 0.04, 0.05))
    assert rewinding.c7_verdict(cfg, frame, pd.Series({"shed": True})).word == "not testable"
    frame = frame.assign(shed_minus_cold=(0.05, 0.06, 0.07))
    v = rewinding.c7_verdict(cfg, frame, pd.Series({"shed": False}))
    assert v.word == "not testable" and "does not survive" in v.premise.statistic


def test_a_cache_missing_a_kept_epoch_is_rebuilt_from_scratch(tmp_path):
    """A cache made before pretrains kept epoch 1 has last.pt only: resuming from it would train nothing and never
    write epoch_1.pt. The rebuild starts over, so the kept epoch comes back with the weights it had."""
    st = Store("smoke", root=tmp_path / "results", cache=tmp_path / "cache")
    R.ensure_all([PRE], st)
    folder = st.checkpoint_dir(PRE)
    first = read_checkpoint(folder / "epoch_1.pt")["model"]
    (folder / "epoch_1.pt").unlink()
    assert not PRE.has_checkpoint(st)
    R.ensure_all([R.FinetuneRun(PRE, GMP, NOTHING, rewind_epoch=1)], st)
    again = read_checkpoint(folder / "epoch_1.pt")["model"]
    assert all(torch.equal(first[k], again[k]) for k in first)
