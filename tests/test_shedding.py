import dataclasses
import math

import pytest
import torch
from torch import nn

from cascade import data, pruning, shedding
from cascade.shedding import COLUMNS, Tracker, TrackerConfig, gmp_keep, to_frame
from cascade.train import State, TrainConfig, evaluate, train

CFG = TrackerConfig(abs_thresholds=(1e-3, 1e-2), rms_fractions=(0.05, 0.2), gamma_threshold=1e-2,
                    filter_threshold=1e-2, overlap_sparsities=(0.5,), effective="tau0")
TAU0 = 0.01


def tiny() -> tuple[nn.Sequential, pruning.Mask]:
    """conv (2 filters of 2x2, 8 weights) -> BN(2) -> pool -> linear (3x2, 6 weights); 4 of 14 weights pruned."""
    net = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([0.5, -0.004, 0.02, 0.3, 0.005, -0.003, 0.0, 0.0]).view(2, 1, 2, 2))
        net[1].weight.copy_(torch.tensor([1.0, 0.005]))
        net[4].weight.copy_(torch.tensor([[0.8, -0.0005], [0.0, 0.1], [-0.05, 0.0]]))
    mask = pruning.Mask(net, {"0.weight": torch.tensor([1, 1, 1, 1, 1, 1, 0, 0], dtype=torch.bool).view(2, 1, 2, 2),
                              "4.weight": torch.tensor([[1, 1], [0, 1], [1, 0]], dtype=torch.bool)})
    return net, mask


def state_for(net: nn.Module, mask, epoch: int = 0, epochs: int = 1, test=None) -> State:
    split = test if test is not None else data.load("synthetic", train_size=8, test_size=4)[0]
    return State(net, torch.optim.SGD(net.parameters(), lr=0.1), TrainConfig(epochs=epochs, precision="fp32"),
                 split.stats(), torch.device("cpu"), mask=mask, epoch=epoch)


def values(tracker: Tracker, epoch: int) -> dict[tuple[str, str], float]:
    frame = to_frame(tracker.rows)
    frame = frame[frame.epoch == epoch]
    return {(r.layer, r.metric): r.value for r in frame.itertuples()}


def test_hand_computed_measures():
    net, mask = tiny()
    tracker = Tracker(CFG, mask, TAU0)
    tracker.on_start(state_for(net, mask))
    v = values(tracker, 0)
    expected = {
        # conv survivors |w|: .5 .004 .02 .3 .005 .003 (6 of 8; 2 pruned)
        ("0.weight", "shed_tau0"): 3 / 6,  # .004 .005 .003 < .01
        ("0.weight", "shed_abs@0.001"): 0 / 6,
        ("0.weight", "shed_abs@0.01"): 3 / 6,
        # RMS = sqrt((.25 + .000016 + .0004 + .09 + .000025 + .000009) / 6) = sqrt(.34045 / 6) = .238205
        ("0.weight", "shed_rms@0.05"): 3 / 6,  # < .011910: .004 .005 .003
        ("0.weight", "shed_rms@0.2"): 4 / 6,  # < .047641: also .02
        # filter norms: sqrt(.25 + .000016 + .0004 + .09) = .5835; sqrt(.000025 + .000009) = .00583 < .01
        ("0.weight", "dead_filters"): 1 / 2,
        ("0.weight", "pruned"): 2 / 8,
        ("0.weight", "norm"): math.sqrt(0.34045),
        # linear survivors |w|: .8 .0005 .1 .05 (4 of 6)
        ("4.weight", "shed_tau0"): 1 / 4,  # .0005
        ("4.weight", "shed_abs@0.001"): 1 / 4,
        ("4.weight", "shed_abs@0.01"): 1 / 4,
        # RMS = sqrt((.64 + .00000025 + .01 + .0025) / 4) = .403887
        ("4.weight", "shed_rms@0.05"): 1 / 4,  # < .020194: .0005
        ("4.weight", "shed_rms@0.2"): 2 / 4,  # < .080777: .0005 .05
        ("4.weight", "pruned"): 2 / 6,
        ("4.weight", "norm"): math.sqrt(0.65250025),
        ("1", "dead_bn"): 1 / 2,  # gammas 1 and .005
        # global = pooled counts, not a mean of layer shares
        ("global", "shed_tau0"): (3 + 1) / (6 + 4),
        ("global", "shed_abs@0.001"): (0 + 1) / 10,
        ("global", "shed_abs@0.01"): (3 + 1) / 10,
        ("global", "shed_rms@0.05"): (3 + 1) / 10,
        ("global", "shed_rms@0.2"): (4 + 2) / 10,
        ("global", "dead_filters"): 1 / 2,
        ("global", "pruned"): (2 + 2) / 14,
        ("global", "dead_bn"): 1 / 2,
        ("global", "effective_sparsity"): (4 + 4) / 14,  # pruned + shed under tau0
        ("global", "jaccard@0.5"): 1.0,  # the reference is the start itself
        ("global", "retained@0.5"): 1.0,
        **{(layer, f"{m}@0.5"): 1.0 for layer in ("0.weight", "4.weight") for m in ("jaccard", "retained")},
    }
    assert set(v) == set(expected)
    for key, value in expected.items():
        assert v[key] == pytest.approx(value, rel=1e-6), key


def test_overlap_after_weights_move():
    net, mask = tiny()
    tracker = Tracker(CFG, mask, TAU0)
    tracker.on_start(state_for(net, mask))
    # "Training": conv .02 shrinks to .001 and .005 grows to .006.
    with torch.no_grad():
        net[0].weight.view(-1)[2] = 0.001
        net[0].weight.view(-1)[4] = 0.006
    tracker.on_epoch_end(state_for(net, mask, epoch=1, epochs=2))
    v = values(tracker, 1)
    # Flat order: conv 0..7 then linear 8..13. Keep at 50% = the 7 largest of 14.
    # At start: zeros 6 7 10 13, then .0005 (9), .003 (5), .004 (1) go -> keep0 = {0 2 3 4 8 11 12}.
    # Now:      zeros 6 7 10 13, then .0005 (9), .001 (2), .003 (5) go -> keep  = {0 1 3 4 8 11 12}.
    # Intersection {0 3 4 8 11 12} = 6, union 8.
    assert v[("global", "jaccard@0.5")] == pytest.approx(6 / 8)
    assert v[("global", "retained@0.5")] == pytest.approx(6 / 7)
    # The conv alone: {0 2 3 4} then {0 1 3 4}: intersection 3, union 5, of the 4 kept at the start 3 remain.
    assert (v[("0.weight", "jaccard@0.5")], v[("0.weight", "retained@0.5")]) == pytest.approx((3 / 5, 3 / 4))
    assert v[("0.weight", "shed_tau0")] == pytest.approx(4 / 6)  # .004 .001 .006 .003
    assert v[("global", "effective_sparsity")] == pytest.approx((4 + 5) / 14)
    assert ("global", "removal_acc") not in v  # not the final epoch (1 of 2), and no test set


@pytest.mark.parametrize("effective, shed_conv, shed_linear", [
    ("tau0", [0, 1, 0, 0, 1, 1, 0, 0], [[0, 1], [0, 0], [0, 0]]),
    ("abs:0.0045", [0, 1, 0, 0, 0, 1, 0, 0], [[0, 1], [0, 0], [0, 0]]),
    ("rms:0.2", [0, 1, 1, 0, 1, 1, 0, 0], [[0, 1], [0, 0], [1, 0]]),  # per-layer RMS, see above
])
def test_shed_masks_follow_the_effective_definition(effective, shed_conv, shed_linear):
    net, mask = tiny()
    cfg = TrackerConfig(**{**CFG.__dict__, "effective": effective})
    shed = Tracker(cfg, mask, TAU0).shed_masks(state_for(net, mask))
    assert shed["0.weight"].flatten().tolist() == [bool(s) for s in shed_conv]
    assert shed["4.weight"].tolist() == [[bool(s) for s in row] for row in shed_linear]


def test_gmp_keep_matches_gmp_pruning_and_breaks_ties_early():
    keep = gmp_keep({"a": torch.tensor([0.1, -0.1, 0.2]), "b": torch.tensor([[0.1, 0.3]])}, 0.4)
    # round(.4 * 5) = 2 go: of the three .1s the two earliest.
    assert keep["a"].tolist() == [False, False, True] and keep["b"].tolist() == [[True, True]]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 100, 3))
    weights = {n: net.get_parameter(n).detach() for n in pruning.prunable_names(net)}
    assert pruning.prune(net, "gmp", 0.6) == gmp_keep(weights, 0.6)


def test_removal_accuracy_zeroes_shed_weights_then_restores():
    train_set, test = data.load("synthetic", train_size=256, test_size=128)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 144, 4))
    net.eval()
    mask = pruning.Mask.dense(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = state_for(net, mask, test=train_set)
    acc = evaluate(net, test, state.stats, state.device, "fp32")[1]
    # tau0 = inf sheds every weight: the net outputs its biases alone, one class for every image, and the
    # balanced test set (32 per class) gives exactly 1/4.
    assert Tracker(CFG, mask, math.inf, test).removal_accuracy(state, {n: mask[n] for n in mask}) == 0.25
    # Nothing shed: the accuracy of the net as it is.
    nothing = {n: torch.zeros_like(mask[n]) for n in mask}
    assert Tracker(CFG, mask, 0.0, test).removal_accuracy(state, nothing) == acc != 0.25
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_tracker_in_training_records_tidy_rows():
    train_set, test = data.load("synthetic", train_size=256, test_size=128)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 144, 4))
    mask = pruning.prune(net, "gmp", 0.5)
    tau0 = pruning.gmp_threshold(net, None, 0.5)
    tracker = Tracker(TrackerConfig(every_steps=3), mask, tau0, test)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, precision="fp32", augment=False)
    state = train(net, train_set, cfg, mask=mask, callbacks=[tracker], device="cpu", quiet=True)
    frame = to_frame(tracker.rows)
    assert list(frame.columns) == list(COLUMNS)
    g = frame[(frame.layer == "global")]
    # 4 steps per epoch: rows at the start (step 0), steps 3 and 6, and both epoch ends (4, 8).
    assert sorted(set(g.step)) == [0, 3, 4, 6, 8]
    assert g[g.metric == "removal_acc"].step.tolist() == [8]
    start = g[(g.step == 0)].set_index("metric").value
    # Right after GMP with its own threshold no survivor is below tau0, and exactly half is pruned.
    assert start["shed_tau0"] == 0 and start["pruned"] == pytest.approx(0.5, abs=1 / 2000)
    assert state.history[-1]["epoch"] == 2
    assert to_frame([dict(zip(COLUMNS, r)) for r in tracker.rows]).equals(frame)


@pytest.mark.parametrize("effective", ["tau1", "abs", "abs:", "abs:x", "rms:-0.1", "abs:nan", "l2:0.1", ""])
def test_tracker_config_rejects_bad_effective(effective):
    with pytest.raises(ValueError) as err:
        TrackerConfig(effective=effective)
    assert str(err.value) == (f"shedding definition {effective!r} is invalid; allowed: tau0, abs:<float >= 0>, "
                              "rms:<float >= 0>, gmp:<float >= 0>")


def test_tracker_config_rejects_bad_sparsities_and_accepts_good_strings():
    for bad in [(0.0,), (0.5, 1.0)]:
        with pytest.raises(ValueError, match="overlap_sparsities="):
            TrackerConfig(overlap_sparsities=bad)
    assert TrackerConfig(effective="abs:1e-3").effective == "abs:1e-3"
    assert TrackerConfig(effective="rms:0.2").effective == "rms:0.2"


def test_kept_shed_and_gmp_definition_by_hand():
    """Reference |w| (14 weights): .5 .004 .02 .3 .005 .003 0 0 | .8 .0005 0 .1 .05 0. GMP at 3/14 removes three
    of the four zeros; at 5/14, the four zeros and .0005, so its threshold is .0005."""
    net, _ = tiny()
    dense = pruning.Mask.dense(net)
    cfg = TrackerConfig(definitions=("gmp:0.357",), kept_fractions=(0.357,), overlap_sparsities=())
    tracker = Tracker(cfg, dense, TAU0)
    state = state_for(net, None)
    tracker.on_start(state)
    assert tracker.gmp_tau(0.357) == pytest.approx(0.0005)  # round(.357 * 14) = 5 removed
    v = values(tracker, 0)
    assert v[("global", "kept_shed@0.357")] == 0  # the 9 kept are all >= .0005
    assert v[("global", "shed_gmp@0.357")] == 4 / 14  # the zeros lie below; .0005 does not
    with torch.no_grad():  # .004 -> .0001 and .02 -> -.0004 drop below .0005; a zero rises to .7
        net[0].weight.view(-1)[[1, 2, 6]] = torch.tensor([0.0001, -0.0004, 0.7])
    state.epoch = 1
    tracker.on_epoch_end(state)
    v = values(tracker, 1)
    assert v[("global", "kept_shed@0.357")] == 2 / 9
    assert v[("0.weight", "kept_shed@0.357")] == 2 / 6  # conv keeps .5 .004 .02 .3 .005 .003
    assert v[("global", "shed_gmp@0.357")] == 5 / 14  # 3 zeros, .0001, .0004


def test_kept_random_tracks_the_random_runs_survivors_in_the_control_and_in_the_run():
    """The set random pruning at 5/14 keeps (seed 3) is what the tracker follows: in the unpruned control, its
    share below GMP's threshold at 5/14 (.0005, so only zeros count at the start) is counted by hand; in the
    random-pruned run itself, the set is its survivors, so the measure equals the survivors' shed share."""
    net, _ = tiny()
    dense = pruning.Mask.dense(net)
    cfg = TrackerConfig(definitions=("gmp:0.357",), kept_random=(0.357,), overlap_sparsities=())
    keep = pruning.prune(net, "random", 0.357, seed=3)
    weights = {n: p.detach().clone() for n, p in net.named_parameters() if n in dense}
    kept = sum(int(keep[n].sum()) for n in weights)
    below = sum(int((keep[n] & (weights[n].abs() < 0.0005)).sum()) for n in weights)
    assert kept == 9 and below == sum(int((keep[n] & (weights[n] == 0)).sum()) for n in weights)
    control = Tracker(cfg, dense, TAU0, seed=3)
    control.on_start(state_for(net, None))
    assert values(control, 0)[("global", "kept_shed_random@0.357")] == below / kept
    other = Tracker(cfg, dense, TAU0, seed=4)
    other.on_start(state_for(net, None))
    assert any(not torch.equal(other.kept["kept_shed_random@0.357"][1][n], keep[n]) for n in weights)
    pruned_net, _ = tiny()
    keep.apply(pruned_net)
    run = Tracker(cfg, keep, TAU0, reference=weights, seed=3)
    state = state_for(pruned_net, keep)
    run.on_start(state)
    with torch.no_grad():  # a survivor drops below .0005
        w = pruned_net[0].weight.view(-1)
        w[int(keep["0.weight"].view(-1).nonzero()[0])] = 0.0001
    state.epoch = 1
    run.on_epoch_end(state)
    for epoch in (0, 1):
        v = values(run, epoch)
        assert v[("global", "kept_shed_random@0.357")] == v[("global", "shed_gmp@0.357")]
    assert values(run, 1)[("global", "kept_shed_random@0.357")] == values(run, 0)[("global", "shed_gmp@0.357")] + 1 / 9
    restored = Tracker(cfg, keep, TAU0, reference=weights, seed=3)
    restored.load_state_dict(run.state_dict())
    assert list(restored.kept) == ["kept_shed_random@0.357"]


def test_histograms_back_fill_thresholds_at_their_edges():
    w = torch.tensor([0.0, 1e-4, 2e-3, 0.05, 0.5, 20.0])
    counts = shedding.histogram(w, "abs")
    assert sum(counts) == 6 and counts[0] == 1 and counts[-1] == 1  # the zero underflows, 20 overflows
    assert shedding.share_below(counts, "abs", 1e-3) == 2 / 6  # an edge: exact
    assert shedding.share_below(counts, "abs", 1e-1) == 4 / 6
    # 2e-3 sits in [10^-2.75, 10^-2.625); a threshold half way in log gets half of that bin
    mid = 10 ** -2.6875
    assert shedding.share_below(counts, "abs", mid) == pytest.approx((2 + 0.5) / 6)
    with pytest.raises(ValueError, match=r"threshold=1e-09 cannot be back-filled from abs histograms; allowed: "):
        shedding.share_below(counts, "abs", 1e-9)


def test_a_registered_definition_is_recorded_and_drives_effective(monkeypatch):
    monkeypatch.setitem(shedding.DEFINITIONS, "half_max", lambda w, alive, p, tracker: p * float(w.abs().max()))
    net, mask = tiny()
    tracker = Tracker(TrackerConfig(definitions=("half_max:0.5",), effective="half_max:0.5"), mask, TAU0)
    tracker.on_start(state_for(net, mask))
    v = values(tracker, 0)
    assert v[("0.weight", "shed_half_max@0.5")] == 4 / 6  # below .25: .004 .02 .005 .003
    assert v[("global", "effective_sparsity")] == (4 + 4 + 3) / 14  # pruned 4, conv 4, linear .0005 .1 .05


def test_gmp_jaccard_compares_the_weights_in_use_with_gmps_choice_by_hand():
    """Layer a: 1.0, 0.9, 0.05, 0.04; layer b: 0.02, 0.019, 0.001, 0.0009 (the pruning-time weights, all kept).
    Shedding under a per-layer threshold takes 0.05 and 0.04 from a, 0.001 and 0.0009 from b: in use {1.0, 0.9,
    0.02, 0.019}. GMP's 4 largest are {1.0, 0.9, 0.05, 0.04}: 2 shared of 6 in the union, J = 1/3. Nothing shed:
    J = 1. A layer-uniform mask that keeps the same 4 with nothing shed: J = 1/3 too, against the dense weights."""
    w = {"a": torch.tensor([1.0, 0.9, 0.05, 0.04]), "b": torch.tensor([0.02, 0.019, 0.001, 0.0009])}
    mask = {n: torch.ones(4, dtype=torch.bool) for n in w}
    shed = {"a": torch.tensor([False, False, True, True]), "b": torch.tensor([False, False, True, True])}
    assert shedding.gmp_jaccard(w, mask, shed) == pytest.approx(1 / 3)
    assert shedding.gmp_jaccard(w, mask, {n: torch.zeros(4, dtype=torch.bool) for n in w}) == 1.0
    pruned = {"a": torch.tensor([True, True, False, False]), "b": torch.tensor([True, True, False, False])}
    none = {n: torch.zeros(4, dtype=torch.bool) for n in w}
    assert shedding.gmp_jaccard(w, pruned, none) == pytest.approx(1 / 3)
    net, mask = tiny()  # in the tracker: tiny()'s survivors in use under tau0 are GMP's 6 largest, J = 1
    tracker = Tracker(TrackerConfig(gmp_jaccard=True), mask, TAU0)
    tracker.on_start(state_for(net, mask))
    assert values(tracker, 0)[("global", "gmp_jaccard")] == 1.0
    plain = Tracker(CFG, mask, TAU0)
    plain.on_start(state_for(net, mask))
    assert ("global", "gmp_jaccard") not in values(plain, 0)


def test_kept_layerwise_and_gmp_jaccard_follow_the_layer_uniform_set_by_hand():
    """Conv |w| 1.0 .9 .8 .7 .6 .5 .4 .3, linear .06 .05 .04 .03 .02 .01. Layer-uniform magnitude at 1/2 keeps
    1.0-.7 of the conv and .06-.04 of the linear; GMP at 1/2 keeps the conv's 7 largest, so its threshold is .3 and
    the layerwise set has 3 of 7 below it. In a layerwise-pruned run nothing sheds under tau0 = .001: in use are those
    7, against GMP's 7 (the conv's), 4 shared of 10 in the union, J = 2/5."""
    net, _ = tiny()
    with torch.no_grad():
        net[0].weight.copy_(torch.linspace(1.0, 0.3, 8).view(2, 1, 2, 2))
        net[4].weight.copy_(torch.tensor([0.06, 0.05, 0.04, 0.03, 0.02, 0.01]).view(3, 2))
    dense = pruning.Mask.dense(net)
    weights = {n: p.detach().clone() for n, p in net.named_parameters() if n in dense}
    cfg = TrackerConfig(kept_layerwise=(0.5,), gmp_jaccard=True, overlap_sparsities=())
    control = Tracker(cfg, dense, 0.001)
    control.on_start(state_for(net, None))
    assert values(control, 0)[("global", "kept_shed_layerwise@0.5")] == pytest.approx(3 / 7)
    keep = pruning.prune(net, "layerwise", 0.5)
    assert sum(int(k.sum()) for k in keep.values()) == 7
    keep.apply(net)
    run = Tracker(cfg, keep, 0.001, reference=weights)
    run.on_start(state_for(net, keep))
    v = values(run, 0)
    assert v[("global", "kept_shed_layerwise@0.5")] == pytest.approx(3 / 7)
    assert v[("global", "gmp_jaccard")] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match=r"kept_layerwise=\(1\.5,\) is invalid"):
        TrackerConfig(kept_layerwise=(1.5,))


def test_nm_groups_count_the_groups_that_shedding_leaves_under_or_over_n_by_hand():
    """2:4 groups run along the input (as the nm criterion's): the conv (1 input channel, 2x2) has one group per
    filter, the linear layer (2 inputs) none. Filter 1: .5 .004 .02 .3, all kept, .004 shed under tau0 = .01: 3 in
    use, over 2. Filter 2: .005 .003 kept, 0 0 pruned, both shed: 0 in use, under 2."""
    net, mask = tiny()
    tracker = Tracker(dataclasses.replace(CFG, nm_groups=("2:4",)), mask, TAU0)
    tracker.on_start(state_for(net, mask))
    v = values(tracker, 0)
    for layer in ("0.weight", "global"):
        assert (v[(layer, "nm_under@2:4")], v[(layer, "nm_over@2:4")]) == (1 / 2, 1 / 2)
    assert ("4.weight", "nm_under@2:4") not in v  # not groupable: 2 inputs
    assert not pruning.nm_groupable(net[4].weight, 4) and pruning.nm_groupable(net[0].weight, 4)
    with pytest.raises(ValueError, match=r"nm_groups entry '4:2' is invalid; allowed: 'n:m'"):
        TrackerConfig(nm_groups=("4:2",))
