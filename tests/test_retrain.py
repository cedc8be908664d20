"""The retrain and compare run kinds: where the survivors start, how long they train, what two networks share."""
import json
import math

import pytest
import torch

from cascade import models, pruning
from cascade import runs as R
from cascade.runs.base import REBUILT, weight_digest
from cascade.runs.compare import CompareRun, barrier, interpolate, linear_cka, signed_barrier
from cascade.runs.retrain import RetrainRun, budgeted
from cascade.store import Store, canonical, config_hash, from_canonical
from cascade.train import TrainConfig

DATA = R.DataConfig("fashion-mnist", 256, 128)
PRE = R.PretrainRun(DATA, "resnet8", 4, TrainConfig(epochs=1, batch_size=64, seed=3))
TRAIN = TrainConfig(epochs=1, batch_size=64, seed=3)
GMP = R.PruneConfig("gmp", 0.5, 3)
FILTERS = R.PruneConfig("l1-filter", 0.0, 3, stage_ratios=(0.5, 0.5, 0.25))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    return Store("smoke", root=root / "results", cache=root / "cache")


def _weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_rewinding_to_epoch_0_starts_from_the_dense_runs_own_init(store):
    run = RetrainRun(PRE, GMP, TrainConfig(epochs=0, batch_size=64, seed=3), init="rewind")
    R.ensure_all([run], store)
    init = R.initial(PRE)
    mask = GMP.apply(PRE.network(store))
    kept = mask["conv1.weight"]
    assert torch.equal(run.network(store).conv1.weight, init.conv1.weight * kept)
    assert not torch.equal(init.conv1.weight, PRE.network(store).conv1.weight)  # training moved it


def test_random_init_differs_from_the_ticket_and_is_set_by_init_seed(store):
    def start(seed):
        run = RetrainRun(PRE, GMP, TrainConfig(epochs=0, batch_size=64, seed=3), init="random", init_seed=seed)
        R.ensure_all([run], store)
        return run.network(store).conv1.weight

    ticket = RetrainRun(PRE, GMP, TrainConfig(epochs=0, batch_size=64, seed=3), init="rewind")
    R.ensure_all([ticket], store)
    assert torch.equal(start(11), start(11))
    assert not torch.equal(start(11), start(12))
    assert not torch.equal(start(11), ticket.network(store).conv1.weight)


def test_a_structured_target_is_trained_as_the_thin_network(store):
    run = RetrainRun(PRE, FILTERS, TRAIN, init="trained")
    rec = R.ensure_all([run], store)[0]["result"]
    # resnet8 w4 has one block per stage with 4, 8 and 16 filters in its conv1: 4 - 2, 8 - 4, 16 - 4
    assert rec["mid_channels"] == [2, 4, 12]
    net = run.network(store)
    assert [net.layer1[0].conv1.out_channels, net.layer3[0].conv1.out_channels] == [2, 12]
    assert rec["counts"]["macs"] == models.count(net)["macs"] < rec["macs_dense"]


def test_scratch_b_scales_epochs_by_the_mac_ratio_up_to_the_cap():
    run = RetrainRun(PRE, GMP, TrainConfig(epochs=10), init="random", init_seed=9, budget="flops", budget_cap=2.0)
    assert budgeted(run, 1000, 800).epochs == 12  # 10 x 1.25
    assert budgeted(run, 1000, 100).epochs == 20  # 10 x min(2, 10)
    assert budgeted(RetrainRun(PRE, GMP, TrainConfig(epochs=10)), 1000, 100).epochs == 10


def test_iterative_rounds_remove_the_same_share_of_survivors(store):
    run = RetrainRun(PRE, R.PruneConfig("gmp", 0.75, 3), TRAIN, init="rewind", rounds=2)
    rounds = R.ensure_all([run], store)[0]["result"]["rounds"]
    # 1 - (1 - 0.75)^(1/2) = 0.5 after round 1, 0.75 after round 2, each within a weight
    n = pruning.Mask.dense(PRE.network(store)).num_total()
    assert [r["round"] for r in rounds] == [1, 2]
    assert abs(rounds[0]["sparsity"] - 0.5) <= 1 / n and abs(rounds[1]["sparsity"] - 0.75) <= 1 / n


@pytest.mark.parametrize("kw, bad", [
    (dict(init="reset"), "init='reset'"),
    (dict(init="random", init_seed=3), "init_seed=3"),
    (dict(init="rewind", rewind_epoch=2), "rewind_epoch=2"),  # PRE keeps epochs (1,) only
    (dict(budget="time"), "budget='time'"),
    (dict(rounds=0), "rounds=0"),
])
def test_bad_retrain_settings_name_the_value_and_the_allowed_ones(kw, bad):
    with pytest.raises(ValueError, match=rf"{bad}.*allowed"):
        RetrainRun(PRE, GMP, TRAIN, **kw)


def test_structured_rounds_and_stage_ratios_with_a_fraction_are_refused():
    with pytest.raises(ValueError, match="rounds=2.*structured"):
        RetrainRun(PRE, FILTERS, TRAIN, rounds=2)
    with pytest.raises(ValueError, match="fraction=0.5 is invalid with stage_ratios"):
        R.PruneConfig("l1-filter", 0.5, stage_ratios=(0.1, 0.1, 0.1))


def test_new_fields_keep_the_keys_of_existing_kinds():
    plain = R.FinetuneRun(PRE, R.PruneConfig("gmp", 0.1), TRAIN)
    assert "keep_epochs" not in canonical(PRE) and "stage_ratios" not in canonical(plain)["prune"]
    assert "kind" not in canonical(plain)["pretrain"]  # a field of its own class needs no tag


def test_a_compare_run_round_trips_the_kinds_of_its_two_runs():
    run = CompareRun(RetrainRun(PRE, GMP, TRAIN, init="rewind"), PRE, points=3)
    form = canonical(run)
    assert (form["a"]["kind"], form["b"]["kind"]) == ("retrain", "pretrain")
    back = from_canonical(CompareRun, form)
    assert back == run and config_hash(back, 1) == config_hash(run, 1)


def test_linear_cka_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ rot + 5) == pytest.approx(1.0)
    # y depends on the first column only: centred x = x; X'Y = (2, -1)', X'X = [[2, 1], [1, 2]], Y'Y = 2
    y = x[:, :1]
    assert linear_cka(x, y) == pytest.approx(5 / (math.sqrt(10) * 2))


def test_barrier_by_hand():
    assert barrier([0, 0.5, 1], [0.1, 0.5, 0.3]) == pytest.approx(0.3)  # 0.5 above the line's 0.2
    assert barrier([0, 0.5, 1], [0.1, 0.1, 0.3]) == 0.0


def test_signed_barrier_by_hand():
    """Zhou et al.'s form: the ends' mean minus the interior value farthest from it. Ends 0.1 and 0.3 (mean 0.2):
    a rise to 0.5 is -0.3; a dip to 0.15 beside 0.22 is +0.05 (0.15 is farther); a straight path is 0."""
    assert signed_barrier([0.1, 0.5, 0.3]) == pytest.approx(-0.3)
    assert signed_barrier([0.1, 0.15, 0.22, 0.3]) == pytest.approx(0.05)
    assert signed_barrier([0.1, 0.2, 0.3]) == 0.0 and signed_barrier([0.1, 0.3]) == 0.0


def test_images_are_checked_before_compute():
    for bad in (1, 257, 2.5, True):
        with pytest.raises(ValueError, match=rf"images={bad!r} is invalid; allowed: None \(every training "
                                             r"image\) or an int in \[2, 256\]"):
            CompareRun(PRE, PRE, images=bad)


def test_interpolation_mixes_floats_and_keeps_integer_buffers():
    a, b = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        a.weight.fill_(1.0), b.weight.fill_(3.0)
    b.num_batches_tracked += 7
    mixed = interpolate(a, b, 0.25, torch.nn.BatchNorm1d(2))
    assert torch.equal(mixed.weight, torch.full((2,), 1.5)) and int(mixed.num_batches_tracked) == 0


def test_a_network_compared_with_itself_has_no_barrier_and_full_similarity(store):
    result = R.ensure_all([CompareRun(PRE, PRE, points=3, images=64)], store)[0]["result"]
    assert result["barrier_train_err"] == 0.0 and result["agreement"] == 1.0
    assert abs(result["barrier_signed_train_err"]) < 1e-9
    assert result["cka"] == pytest.approx(1.0)
    assert len(result["train_err"]) == 3 and max(result["test_err"]) - min(result["test_err"]) < 1e-9
    assert all((e * 64) == pytest.approx(round(e * 64)) for e in result["train_err"])  # 64 images, not 256


def test_a_fresh_cache_rebuilds_a_stored_dependency_once_and_keeps_its_record(store, tmp_path):
    """The records are there, the checkpoints are not (a fresh clone): the pre-trained checkpoint is one task,
    computed before its two dependants, its record stays, and the dependants' records name what they started from."""
    R.ensure_all([PRE], store)
    fresh = Store("smoke", root=tmp_path / "results", cache=tmp_path / "cache")
    fresh.put(PRE, store.get(PRE)["result"], store.get(PRE)["meta"])
    kept = fresh.get(PRE)
    with pytest.raises(R.CheckpointMissing, match=f"pretrain/{PRE.key}"):
        PRE.network(fresh)  # no longer recomputed on the quiet
    a = R.FinetuneRun(PRE, R.PruneConfig("gmp", 0.1), TrainConfig(epochs=0, batch_size=64, seed=3))
    b = R.FinetuneRun(PRE, R.PruneConfig("random", 0.1), TrainConfig(epochs=0, batch_size=64, seed=3))
    with pytest.raises(R.CheckpointMissing, match=f"needs the checkpoint of pretrain/{PRE.key}"):
        a.ensure(fresh)
    assert R.plan([a, b], fresh) == [(PRE, R.CHECKPOINT_MISSING), (a, R.RECORD_MISSING), (b, R.RECORD_MISSING)]
    assert R.plan([PRE], fresh) == []  # nothing reads the checkpoint: the record alone will do
    records = R.ensure_all([a, b], fresh)
    assert fresh.get(PRE) == kept and PRE.has_checkpoint(fresh)
    rebuilt = json.loads((fresh.checkpoint_dir(PRE) / REBUILT).read_text())
    assert rebuilt["record_created"] == kept["meta"]["created"] is not None
    digests = {name: weight_digest(fresh.checkpoint_dir(PRE) / name) for name in ("last.pt", "epoch_1.pt")}
    assert rebuilt["weights"] == digests  # the kept epoch too (every pretrain keeps epoch 1)
    for rec in records:
        assert rec["meta"]["started_from"] == {f"pretrain/{PRE.key}": {**digests, "rebuilt": True}}
    assert R.plan([a, b], fresh) == []


def test_a_record_names_the_digest_of_the_checkpoint_it_started_from(store):
    run = R.FinetuneRun(PRE, R.PruneConfig("gmp", 0.2), TrainConfig(epochs=0, batch_size=64, seed=3))
    rec = R.ensure_all([run], store)[0]
    assert rec["meta"]["started_from"] == {f"pretrain/{PRE.key}": {
        **{n: weight_digest(store.checkpoint_dir(PRE) / n) for n in ("last.pt", "epoch_1.pt")}, "rebuilt": False}}
    assert "started_from" not in store.get(PRE)["meta"]  # a run with no dependencies started from nothing
    assert len(weight_digest(store.checkpoint_dir(run) / "last.pt")) == 16


def test_gradual_and_cascade_finetune_runs_follow_the_cubic_and_only_shrink_the_mask(store):
    """4 epochs of 4 steps (256 images, batch 64), pruning to 0.5 until prune_end 0.5 of the 16 steps (t1 = 8), an
    event every 2 steps. Cubic levels 0.5 (1 - (1 - t/8)^3) at t = 2, 4, 6, 8: 0.2891, 0.4375 (the midpoint),
    0.4922, 0.5 (the end); none at t = 0, where the level is 0. The cascade-aware run ends on the same target, its
    mask never growing."""
    from cascade.shedding import TrackerConfig

    ft = TrainConfig(epochs=4, batch_size=64, lr=0.3, weight_decay=5e-3, seed=3)
    tracker = TrackerConfig(effective="rms:0.05", per_layer=False)
    gradual = R.FinetuneRun(PRE, GMP, ft, tracker, schedule="gradual", prune_every=2)
    cascade = R.FinetuneRun(PRE, GMP, ft, tracker, schedule="cascade", prune_every=2)
    rec, rec_c = R.ensure_all([gradual, cascade], store)
    n = pruning.Mask.dense(PRE.network(store)).num_total()
    path = rec["result"]["prune_path"]
    assert [p[0] for p in path] == [2, 4, 6, 8]
    assert [p[1] for p in path] == [round(n * 0.5 * (1 - (1 - t / 8) ** 3)) for t in (2, 4, 6, 8)]
    assert path[1][1] == round(n * 0.4375) and path[-1][1] == round(n * 0.5) and not any(p[3] for p in path)
    assert rec["result"]["sparsity"] == pytest.approx(round(n * 0.5) / n)
    pc = rec_c["result"]["prune_path"]
    assert [p[1] for p in pc] == sorted(p[1] for p in pc) and pc[-1][1] == round(n * 0.5)
    # a trained dense model has survivors below 5% of their layer's RMS from the start: the first event turns them
    # into pruned weights, so GMP prunes fewer there than in the gradual run, to the same level
    assert pc[0][3] > 0 and pc[0][1] == path[0][1] and pc[0][2] == path[0][1] - pc[0][3] < path[0][2]
    with pytest.raises(ValueError, match=r"schedule='linear' is invalid; allowed: one-shot, gradual, cascade"):
        R.FinetuneRun(PRE, GMP, ft, tracker, schedule="linear")
    with pytest.raises(ValueError, match=r"effective='tau0' would prune by magnitude"):
        R.FinetuneRun(PRE, GMP, ft, TrackerConfig(), schedule="cascade")
    with pytest.raises(ValueError, match=r"needs a pruning criterion"):
        R.FinetuneRun(PRE, R.PruneConfig("none", 0.5, 3), ft, tracker, schedule="gradual")
