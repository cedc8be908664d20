import copy
import warnings

import pytest
import torch
from torch import nn

from cascade import models, pruning
from cascade.pruning import CRITERIA, Mask, gmp_threshold, prunable_names, prune, schedule, thin, zero_pruned_bn


class Net(nn.Module):
    """conv(3->4) BN conv(4->8) pool linear(8->5): 108 + 288 + 40 = 436 prunable weights."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, width, 3), nn.BatchNorm2d(width)
        self.conv2, self.fc = nn.Conv2d(width, 8, 3), nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.bn(self.conv1(x)))).mean((2, 3)))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def linears(*weights) -> nn.Sequential:
    """Bias-free linear layers with the given weights (rows = outputs)."""
    layers = [nn.Linear(len(w[0]), len(w), bias=False) for w in weights]
    with torch.no_grad():
        for layer, w in zip(layers, weights):
            layer.weight.copy_(torch.tensor(w))
    return nn.Sequential(*layers)


def pruned(mask: Mask) -> int:
    return mask.num_total() - mask.num_kept()


def subset(new: Mask, old: Mask) -> bool:
    return all(not (new[n] & ~old[n]).any() for n in old)


# ------------------------------------------------------------------------------------------------ Mask
def test_prunable_names_skip_bn_and_biases_and_first_last_optional():
    model = Net()
    assert prunable_names(model) == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert prunable_names(model, include_first=False) == ["conv2.weight", "fc.weight"]
    assert prunable_names(model, include_last=False) == ["conv1.weight", "conv2.weight"]
    assert Mask.dense(model, include_first=False, include_last=False).names == ["conv2.weight"]
    assert Mask.dense(model).num_total() == 436


@pytest.mark.parametrize("tensors, message", [
    ({"bn.weight": torch.ones(4, dtype=torch.bool)}, "'bn.weight' is not a prunable weight"),
    ({"fc.bias": torch.ones(5, dtype=torch.bool)}, "'fc.bias' is not a prunable weight"),
    ({"fc.weigth": torch.ones(5, 8, dtype=torch.bool)}, "'fc.weigth' is not a prunable weight"),
    ({"fc.weight": torch.ones(8, 5, dtype=torch.bool)}, r"shape \(8, 5\); the weight has shape \(5, 8\)"),
    ({"fc.weight": torch.ones(5, 8)}, "dtype torch.float32; allowed: torch.bool"),
    ({"fc.weight": [[True] * 8] * 5}, "dtype list; allowed: torch.bool"),
    ({}, "empty mask"),
])
def test_mask_validation(tensors, message):
    with pytest.raises(ValueError, match=message):
        Mask(Net(), tensors)


def test_mask_orders_names_by_module_and_reports_per_layer_and_global():
    model = Net()
    fc = torch.ones(5, 8, dtype=torch.bool)
    fc[:, :2] = False
    conv2 = torch.ones(8, 4, 3, 3, dtype=torch.bool)
    conv2[:4] = False
    mask = Mask(model, {"fc.weight": fc, "conv2.weight": conv2})
    assert mask.names == ["conv2.weight", "fc.weight"]
    report = mask.report()
    assert report.layer.tolist() == ["conv2.weight", "fc.weight", "global"]
    assert report.total.tolist() == [288, 40, 328]
    assert report.kept.tolist() == [144, 30, 174]
    assert report.sparsity.tolist() == pytest.approx([0.5, 0.25, 154 / 328])
    assert mask.sparsity() == pytest.approx(154 / 328)
    assert (mask.num_kept(), mask.num_total()) == (174, 328)


def test_state_dict_round_trip_with_weights_only(tmp_path):
    model = net()
    mask = prune(model, "random", 0.4, seed=3)
    torch.save({"mask": mask.state_dict()}, tmp_path / "ck.pt")
    loaded = Mask.from_state_dict(model, torch.load(tmp_path / "ck.pt", weights_only=True)["mask"])
    assert loaded == mask and loaded.names == mask.names
    assert loaded != prune(model, "random", 0.4, seed=4) and loaded != Mask.dense(model)


def test_training_hooks_keep_pruned_weights_and_momentum_at_zero():
    model = net()
    mask = prune(model, "gmp", 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x = torch.randn(4, 3, 8, 8)
    model(x).sum().backward()
    opt.step()  # an unmasked step: every weight moved and has momentum
    mask.apply(model)
    mask.zero_state(opt, model)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().sum().backward()
        mask.zero_grads(model)
        assert all((p.grad[~keep] == 0).all() for p, keep in mask.params(model))
        opt.step()
        mask.apply_(model)
    for p, keep in mask.params(model):
        assert keep.dtype == torch.bool and keep.device == p.device
        assert (p[~keep] == 0).all() and (p[keep] != 0).all()
        assert (opt.state[p]["momentum_buffer"][~keep] == 0).all()
    assert mask.params(model)[0][1] is mask.params(model)[0][1]  # cached


def test_copied_mask_masks_the_model_it_is_given():
    model = net()
    mask = prune(model, "gmp", 0.5)
    mask.apply_(model)  # caches model's weights
    with torch.no_grad():
        model.fc.weight.fill_(1.0)
    copy.deepcopy(mask).apply_(model)
    assert torch.equal(model.fc.weight, mask["fc.weight"].float())


def test_apply_checks_the_model():
    with pytest.raises(ValueError, match=r"'conv1.weight' has shape \(4, 3, 3, 3\); the weight has shape \(6, 3, 3"):
        Mask.dense(Net()).apply(Net(width=6))


# ------------------------------------------------------------------------------------------------ criteria
W0 = [[0.5, -0.1, 2.0, -3.0], [0.2, 0.05, -1.0, 4.0]]
W1 = [[0.3, -0.01], [6.0, -0.4]]


def test_gmp_keeps_exactly_the_largest_magnitudes_across_layers():
    model = linears(W0, W1)
    first = prune(model, "gmp", 0.5)  # removes 0.01, 0.05, 0.1, 0.2, 0.3, 0.4
    assert first["0.weight"].tolist() == [[True, False, True, True], [False, False, True, True]]
    assert first["1.weight"].tolist() == [[False, False], [True, False]]
    assert gmp_threshold(model, None, 0.5) == pytest.approx(0.4)
    second = prune(model, "gmp", 0.25, mask=first)  # then 0.5, 1, 2
    assert second["0.weight"].tolist() == [[False, False, False, True], [False, False, False, True]]
    assert second["1.weight"].tolist() == [[False, False], [True, False]]
    assert gmp_threshold(model, first, 0.25) == pytest.approx(2.0)
    assert gmp_threshold(model, first, 0.0) == 0.0


def test_gmp_breaks_ties_by_position():
    mask = prune(linears([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]), "gmp", 0.5)
    assert mask["0.weight"].tolist() == [[False, False, False], [True, True, True]]


def test_layerwise_prunes_each_layer_by_magnitude():
    mask = prune(linears(W0, W1), "layerwise", 0.5)
    assert mask["0.weight"].tolist() == [[False, False, True, True], [False, False, True, True]]
    assert mask["1.weight"].tolist() == [[False, False], [True, True]]


def test_gmp_threshold_separates_pruned_from_kept():
    model = net()
    threshold = gmp_threshold(model, None, 0.4)
    mask = prune(model, "gmp", 0.4)
    w = torch.cat([model.get_parameter(n).detach().abs().flatten() for n in mask])
    keep = torch.cat([mask[n].flatten() for n in mask])
    assert w[~keep].max().item() == threshold <= w[keep].min().item()


@pytest.mark.parametrize("criterion", ["gmp", "layerwise", "random", "random-layerwise"])
def test_unstructured_criteria_hit_the_request_and_only_shrink(criterion):
    model = net()
    dense = Mask.dense(model)
    first = prune(model, criterion, 0.3, mask=dense)
    second = prune(model, criterion, 0.25, mask=first)
    assert subset(first, dense) and subset(second, first)
    if criterion.endswith("layerwise"):
        for n in dense:
            size = dense[n].numel()
            assert (~first[n]).sum() == round(0.3 * size)
            assert (~second[n]).sum() == round(0.3 * size) + round(0.25 * size)
    else:
        assert pruned(first) == round(0.3 * 436) and pruned(second) == round(0.3 * 436) + round(0.25 * 436)
    assert abs(second.sparsity() - 0.55) <= len(dense) / 436


def test_criteria_do_not_change_model_or_mask():
    model = net()
    before = copy.deepcopy(model.state_dict())
    mask = prune(model, "random", 0.2)
    kept = {n: mask[n].clone() for n in mask}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nm skips conv1
        for criterion in ("gmp", "layerwise", "random", "random-layerwise", "nm"):
            prune(model, criterion, 0.3, mask=mask)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(kept[n], mask[n]) for n in mask)


def test_random_is_reproducible_per_seed_and_ignores_weights():
    a, b = prune(net(0), "random", 0.5, seed=1), prune(net(1), "random", 0.5, seed=1)
    c = prune(net(0), "random", 0.5, seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    d = prune(net(0), "random-layerwise", 0.5, seed=1)
    assert all(torch.equal(d[n], prune(net(1), "random-layerwise", 0.5, seed=1)[n]) for n in d)


def test_nm_keeps_the_n_largest_per_group():
    row = [1.0, -4.0, 3.0, 2.0, 0.1, 0.3, -0.2, 0.05]
    mask = prune(linears([row, [1.0] * 8]), "nm", 0.0, n=2, m=4)
    assert mask["0.weight"].tolist() == [[False, True, True, False, False, True, True, False],
                                         [True, True, False, False, True, True, False, False]]  # ties: first wins


def test_nm_leaves_n_per_group_skips_indivisible_layers_and_only_shrinks():
    model = net()
    with pytest.warns(UserWarning, match=r"skips layers whose input size is not a multiple of 4: conv1.weight$"):
        mask = prune(model, "nm", 0.0, n=1, m=4)
    assert mask["conv1.weight"].all()  # 3*3*3 = 27 inputs
    for n in ("conv2.weight", "fc.weight"):  # 36 and 8 inputs
        assert (mask[n].reshape(-1, 4).sum(1) == 1).all()
    first = prune(model, "gmp", 0.3)
    with pytest.warns(UserWarning):
        second = prune(model, "nm", 0.0, mask=first, n=2, m=4)
    assert subset(second, first)
    alive = first["conv2.weight"].reshape(-1, 4).sum(1)
    assert torch.equal(second["conv2.weight"].reshape(-1, 4).sum(1), alive.clamp(max=2))


def resnet(name: str = "resnet8", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = models.build(name)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # BN that is not the identity
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
        nn.init.uniform_(bn.running_mean, -0.2, 0.2)
        nn.init.uniform_(bn.running_var, 0.5, 2.0)
    return model


def test_l1_filter_removes_whole_filters_with_smallest_l1_norm():
    model = resnet()
    norms = torch.randperm(16).float() + 1
    with torch.no_grad():
        w = model.layer1[0].conv1.weight
        w.copy_(torch.randn_like(w).sign() * norms[:, None, None, None] / w[0].numel())
    mask = prune(model, "l1-filter", 0.25)
    keep = mask["layer1.0.conv1.weight"].flatten(1)
    assert (keep.all(1) | ~keep.any(1)).all()  # whole filters
    assert keep.all(1).tolist() == (norms > 4).tolist()
    assert (~mask["layer2.0.conv1.weight"].flatten(1).any(1)).sum() == 8
    assert (~mask["layer3.0.conv1.weight"].flatten(1).any(1)).sum() == 16
    assert all(mask[n].all() for n in mask if ".conv1." not in n or not n.startswith("layer"))


def test_l1_filter_stage_ratios_skip_and_rounds():
    model = resnet("resnet20")  # 9 blocks, 3 per stage
    mask = prune(model, "l1-filter", 0.0, stage_ratios=(0.5, 0.25, 0.0), skip=[1])
    dead = {n: int((~mask[n].flatten(1).any(1)).sum()) for n in mask if n.endswith("conv1.weight") and "layer" in n}
    assert list(dead.values()) == [8, 0, 8, 8, 8, 8, 0, 0, 0]
    assert pruned(mask) == 2 * 8 * 16 * 9 + 8 * 16 * 9 + 2 * 8 * 32 * 9  # dead filters x (in_channels * 3 * 3)
    again = prune(model, "l1-filter", 0.25, mask=mask)
    assert subset(again, mask)
    assert int((~again["layer1.1.conv1.weight"].flatten(1).any(1)).sum()) == 4
    gmp = prune(model, "gmp", 0.3)
    assert subset(prune(model, "l1-filter", 0.5, mask=gmp), gmp)


@pytest.mark.parametrize("name", ["resnet8", "preresnet20"])
def test_thin_network_computes_the_masked_function(name):
    model = resnet(name)
    mask = prune(model, "l1-filter", 0.0, stage_ratios=(0.5, 0.25, 0.25))
    masked = mask.apply(copy.deepcopy(model)).eval()
    small = thin(model, mask, name, copy_weights=True).eval()
    for ratio, wide, narrow in zip((0.5, 0.25, 0.25), (model.layer1, model.layer2, model.layer3),
                                   (small.layer1, small.layer2, small.layer3)):
        for a, b in zip(wide, narrow):
            assert b.conv1.out_channels == a.conv1.out_channels - round(ratio * a.conv1.out_channels)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (masked(x) - small(x)).abs().max() > 1e-3  # the pruned channels' BN constants still flow
        zero_pruned_bn(masked, mask)
        torch.testing.assert_close(masked(x), small(x), atol=1e-5, rtol=0)
    fresh = thin(model, mask, name)
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in small.parameters()]


def test_thin_rejects_other_build_options():
    model = resnet()
    with pytest.raises(ValueError, match="thin 'resnet8' differs from the model at 'conv1.weight'"):
        thin(model, prune(model, "l1-filter", 0.5), "resnet8", width=8)


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("args, opts, message", [
    (("magnitude", 0.5), {}, "unknown criterion 'magnitude'; allowed: gmp, layerwise, random, random-layerwise, l1-"),
    (("gmp", -0.1), {}, r"fraction -0.1 outside \[0, 1\)"),
    (("gmp", 1.0), {}, r"fraction 1.0 outside \[0, 1\)"),
    (("gmp", 0.3), {"n": 2}, "unknown option.s. n for criterion 'gmp'; allowed: none"),
    (("nm", 0.0), {"k": 2}, "unknown option.s. k for criterion 'nm'; allowed: n, m"),
    (("nm", 0.0), {"n": 5, "m": 4}, "N:M needs integers 1 <= n <= m; got n=5, m=4"),
    (("nm", 0.0), {"n": 0}, "N:M needs integers 1 <= n <= m; got n=0, m=4"),
    (("l1-filter", 0.1), {}, "filter pruning needs a ResNet"),
])
def test_prune_rejects_bad_arguments(args, opts, message):
    with pytest.raises(ValueError, match=message):
        prune(net(), *args, **opts)


def test_prune_rejects_fraction_above_density():
    model = net()
    mask = prune(model, "gmp", 0.8)
    with pytest.raises(ValueError, match="fraction 0.3 exceeds the density 0.199541 of the mask"):  # 87 / 436
        prune(model, "random", 0.3, mask=mask)
    with pytest.raises(ValueError, match="fraction 0.3 exceeds the density"):
        gmp_threshold(model, mask, 0.3)
    sparse_fc = Mask(model, {**Mask.dense(model), "fc.weight": torch.zeros(5, 8, dtype=torch.bool)})
    with pytest.raises(ValueError, match="fraction 0.1 exceeds the density 0 of layer 'fc.weight'"):
        prune(model, "layerwise", 0.1, mask=sparse_fc)


@pytest.mark.parametrize("fraction, opts, message", [
    (0.1, {"stage_ratios": (0.1, 0.1, 0.1)}, "l1-filter takes fraction or stage_ratios, not both; got fraction=0.1"),
    (0.0, {"stage_ratios": (0.1, 0.1)}, r"stage_ratios \(0.1, 0.1\) invalid; allowed: 3 shares in \[0, 1\)"),
    (0.0, {"stage_ratios": (0.1, 0.1, 1.0)}, r"stage_ratios \(0.1, 0.1, 1.0\) invalid"),
    (0.5, {"skip": [3]}, r"skip \[3\] invalid; allowed: block indices 0..2"),
])
def test_l1_filter_rejects_bad_options(fraction, opts, message):
    with pytest.raises(ValueError, match=message):
        prune(resnet(), "l1-filter", fraction, **opts)


def test_l1_filter_rejects_emptying_a_layer_and_missing_names():
    model = resnet()
    half = prune(model, "l1-filter", 0.5)
    with pytest.raises(ValueError, match="pruning 8 filters of 'layer1.0.conv1.weight' would leave none of its 8"):
        prune(model, "l1-filter", 0.5, mask=half)
    partial = Mask(model, {"conv1.weight": half["conv1.weight"]})
    with pytest.raises(ValueError, match="l1-filter prunes 'layer1.0.conv1.weight', which the mask leaves out"):
        prune(model, "l1-filter", 0.5, mask=partial)


def test_registry_lists_every_criterion():
    assert list(CRITERIA) == ["gmp", "layerwise", "random", "random-layerwise", "l1-filter", "nm"]


# ------------------------------------------------------------------------------------------------ schedules
def approx(events):
    return [(s, pytest.approx(f)) for s, f in events]


def test_one_shot_and_iterative_schedules():
    assert schedule("one-shot", 100, 0.9) == approx([(0, 0.9)])
    assert schedule("one-shot", 100, 0.9, initial=0.5) == approx([(0, 0.4)])
    assert schedule("iterative", 10, 0.6, rounds=3) == approx([(0, 0.2), (3, 0.2), (6, 0.2)])
    assert schedule("iterative", 10, 0.6, initial=0.6, rounds=3) == []


def test_gradual_schedule_follows_the_cubic():
    # s_t = 0.8 (1 - (1 - t/4)^3): 0, 0.4625, 0.7, 0.7875, 0.8 at t = 0..4
    assert schedule("gradual", 10, 0.8, t1=4, every=1) == approx([(1, 0.4625), (2, 0.2375), (3, 0.0875), (4, 0.0125)])
    assert schedule("gradual", 10, 0.8, t1=4, every=3) == approx([(3, 0.7875), (4, 0.0125)])
    # from 0.2 between t0=2 and t1=6: s_4 = 0.8 + (0.2 - 0.8) / 8 = 0.725
    assert schedule("gradual", 10, 0.8, initial=0.2, t0=2, t1=6, every=2) == approx([(4, 0.525), (6, 0.075)])


def test_schedule_applied_with_num_weights_ends_on_the_target_weight():
    model = net()
    mask = Mask.dense(model)
    events = schedule("gradual", 1000, 0.9, t1=900, every=7, num_weights=mask.num_total())
    assert all(round(f * 436) == pytest.approx(f * 436) for _, f in events)
    for _, fraction in events:
        mask = prune(model, "gmp", fraction, mask=mask)
    assert pruned(mask) == round(0.9 * 436)


@pytest.mark.parametrize("args, opts, message", [
    (("linear", 10, 0.5), {}, "unknown schedule 'linear'; allowed: one-shot, iterative, gradual"),
    (("one-shot", 10, 0.5), {"rounds": 2}, "unknown option.s. rounds for schedule 'one-shot'; allowed: none"),
    (("iterative", 10, 0.5), {}, "schedule 'iterative' needs option.s. rounds"),
    (("iterative", 10, 0.5), {"rounds": 0}, r"rounds 0 invalid; allowed: integers in \[1, total_steps=10\]"),
    (("iterative", 10, 0.5), {"rounds": 11}, "rounds 11 invalid"),
    (("gradual", 10, 0.5), {"t1": 4}, "schedule 'gradual' needs option.s. every"),
    (("gradual", 10, 0.5), {"t0": -1, "t1": 4, "every": 1}, "gradual needs integers 0 <= t0 < t1 < total_steps"),
    (("gradual", 10, 0.5), {"t0": 4, "t1": 4, "every": 1}, "got t0=4, t1=4"),
    (("gradual", 10, 0.5), {"t1": 10, "every": 1}, "got t0=0, t1=10, total_steps=10"),
    (("gradual", 10, 0.5), {"t1": 4, "every": 0}, "every=0"),
    (("one-shot", 0, 0.5), {}, "total_steps 0 invalid; allowed: integers >= 1"),
    (("one-shot", 10, 1.0), {}, "need 0 <= initial <= sparsity < 1; got initial=0.0, sparsity=1.0"),
    (("one-shot", 10, 0.3), {"initial": 0.5}, "got initial=0.5, sparsity=0.3"),
    (("one-shot", 10, 0.3), {"num_weights": 0}, "num_weights 0 invalid"),
])
def test_schedule_rejects_bad_arguments(args, opts, message):
    with pytest.raises(ValueError, match=message):
        schedule(*args, **opts)


def test_prune_schedule_callback_reaches_target_with_nested_masks():
    """Gradual pruning inside the loop ends on round(s1 * N) pruned weights and only ever removes weights."""
    from cascade import data, train

    tr, _ = data.load("synthetic", train_size=512)
    torch.manual_seed(0)
    net = models.build("resnet8", in_channels=1, num_classes=4, width=4)
    n = pruning.Mask.dense(net).num_total()
    steps = 2 * (512 // 64)
    events = pruning.schedule("gradual", steps, 0.5, t1=steps - 2, every=3, num_weights=n)
    seen = []

    class Watch(train.Callback):
        every_steps = 1

        def on_step(self, state):
            if state.mask is not None:
                seen.append({k: v.clone() for k, v in state.mask.items()})

    state = train.train(net, tr, train.TrainConfig(epochs=2, batch_size=64, precision="fp32"),
                        callbacks=[train.PruneSchedule("gmp", events), Watch()], quiet=True)
    assert round(state.mask.sparsity() * n) == round(0.5 * n)
    for before, after in zip(seen, seen[1:]):
        assert all(not (after[k] & ~before[k]).any() for k in before)
    weights = dict(net.named_parameters())
    assert all((weights[k][~m.to(weights[k].device)] == 0).all() for k, m in state.mask.items())


def test_smallest_selects_k_lowest_with_ties_to_the_earlier_index():
    score = torch.tensor([3.0, 1.0, 2.0, 1.0, 0.0])
    marks = lambda k: pruning.smallest(score, k).nonzero().flatten().tolist()  # noqa: E731
    assert [marks(k) for k in range(7)] == [[], [4], [1, 4], [1, 3, 4], [1, 2, 3, 4], [0, 1, 2, 3, 4],
                                            [0, 1, 2, 3, 4]]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):  # against a stable sort, on scores with many ties
        s = torch.randint(0, 4, (30,), generator=gen).float()
        k = int(torch.randint(0, 31, (), generator=gen))
        expected = torch.zeros(30, dtype=torch.bool)
        expected[torch.sort(s, stable=True).indices[:k]] = True
        assert torch.equal(pruning.smallest(s, k), expected)


def test_absorb_prunes_the_smallest_shed_survivors_up_to_the_limit():
    """tiny(): survivors below 0.01 are -0.004, 0.005, -0.003 (conv) and -0.0005 (linear). With a limit of 2 the two
    smallest go (-0.0005, then -0.003); pruned weights are never counted; a limit above 4 takes all four."""
    from test_shedding import tiny

    net, mask = tiny()
    shed = {n: w.detach().abs() < 0.01 for n, w in net.named_parameters() if n in mask}
    two = pruning.absorb(net, mask, shed, 2)
    assert mask.num_kept() - two.num_kept() == 2
    assert not two["4.weight"][0, 1] and not two["0.weight"].flatten()[5] and two["0.weight"].flatten()[1]
    assert mask.num_kept() - pruning.absorb(net, mask, shed, 10).num_kept() == 4
    assert pruning.absorb(net, mask, shed, 0) == mask
    with pytest.raises(ValueError, match=r"limit=-1 is invalid; allowed: an int >= 0"):
        pruning.absorb(net, mask, shed, -1)


def test_cascade_aware_schedule_turns_shed_weights_into_pruned_ones_and_never_grows_the_mask():
    """A quarter of the weights is zeroed before training at a negligible LR, so they stay "shed" (|w| < 1e-3,
    with the few init weights that small). The gradual schedule to 0.5 has its first event at a level below that
    share: the cascade-aware schedule turns all of them into pruned ones there and prunes nothing by the criterion until the cubic level passes
    0.25; it ends on exactly round(0.5 N) pruned weights, and its masks only shrink."""
    from cascade import data, train

    tr, _ = data.load("synthetic", train_size=512)
    torch.manual_seed(0)
    net = models.build("resnet8", in_channels=1, num_classes=4, width=4)
    dense = pruning.Mask.dense(net)
    n, zeroed = dense.num_total(), 0
    with torch.no_grad():
        for name in dense:
            w = net.get_parameter(name).view(-1)
            w[: w.numel() // 4] = 0.0
            zeroed += w.numel() // 4
    small = sum(int((net.get_parameter(k).abs() < 1e-3).sum()) for k in dense)  # the zeroed and a few of the init
    steps = 2 * (512 // 64)
    events = pruning.schedule("gradual", steps, 0.5, t1=steps - 2, every=2, num_weights=n)
    assert zeroed <= small < zeroed * 1.05 and events[0][1] < small / n < 0.5
    shed = lambda state: {k: state.model.get_parameter(k).detach().abs().cpu() < 1e-3 for k in dense}  # noqa: E731
    sched = train.PruneSchedule("gmp", events, shed=shed, final=0.5)
    state = train.train(net, tr, train.TrainConfig(epochs=2, batch_size=64, lr=1e-9, weight_decay=0.0),
                        callbacks=[sched], quiet=True)
    steps_, pruned, by_criterion, turned, macs = zip(*sched.path)
    assert turned[0] == small and by_criterion[0] == 0 and sum(turned) == small
    assert pruned[-1] == round(0.5 * n) == state.mask.num_total() - state.mask.num_kept()
    assert sum(by_criterion) == round(0.5 * n) - small and list(pruned) == sorted(pruned)
    assert list(macs) == sorted(macs, reverse=True) and macs[-1] < models.count(net)["macs"]
    with pytest.raises(ValueError, match=r"final=None is invalid with shed"):
        train.PruneSchedule("gmp", events, shed=shed)
