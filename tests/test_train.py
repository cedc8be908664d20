import pytest
import torch
from torch import nn

from cascade import data, pruning
from cascade.shedding import Tracker, TrackerConfig
from cascade.train import Callback, Checkpoint, Evaluate, TrainConfig, load_weights, lr_at, train


def net(seed: int = 0) -> nn.Sequential:
    """conv(1->4, 3x3) BN ReLU linear(576->4): trains in well under a second per epoch on 12x12 synthetic data."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 144, 4))


def splits(train_size: int = 256, test_size: int = 128):
    return data.load("synthetic", train_size=train_size, test_size=test_size)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "lr": 0.05, "precision": "fp32", "augment": False, **kw})


def fit(model, train_set, config, device="cpu", **kw):
    return train(model, train_set, config, device=device, quiet=True, **kw)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------- LR schedules
@pytest.mark.parametrize("kw, spe, expected", [
    (dict(epochs=10, lr_schedule="constant"), 5, {0: 0.1, 25: 0.1, 49: 0.1}),
    # 100 steps, milestones at steps 50 and 75
    (dict(epochs=10, lr_schedule="step", milestones=(0.5, 0.75), gamma=0.1), 10,
     {0: 0.1, 49: 0.1, 50: 0.01, 74: 0.01, 75: 0.001, 99: 0.001}),
    # 40 steps: 0.05 * (1 + cos(pi * step / 40)); cos(pi/4) = .7071068
    (dict(epochs=4, lr_schedule="cosine"), 10, {0: 0.1, 10: 0.0853553, 20: 0.05, 30: 0.0146447}),
    # warm-up over the 10 steps of epoch 1: 0.1 * (step + 1) / 10; then cosine over the 30 steps left
    (dict(epochs=4, lr_schedule="cosine", warmup_epochs=1), 10, {0: 0.01, 4: 0.05, 9: 0.1, 10: 0.1, 25: 0.05}),
    # one-cycle over 100 steps: 0.1 * (.04 + .96 * t / .3) up to t = .3, then 0.05 * (1 + cos(pi * (t - .3) / .7))
    (dict(epochs=10, lr_schedule="onecycle"), 10, {0: 0.004, 15: 0.052, 29: 0.0968, 30: 0.1, 65: 0.05, 100: 0.0}),
])
def test_lr_at_by_hand(kw, spe, expected):
    c = TrainConfig(lr=0.1, **kw)
    assert {s: round(lr_at(c, s, spe), 7) for s in expected} == pytest.approx(expected, abs=1e-7)


class LRLog(Callback):
    every_steps = 1

    def __init__(self):
        self.lrs = {}

    def on_step(self, state):
        self.lrs[state.step - 1] = state.optimizer.param_groups[0]["lr"]


def test_start_epoch_replays_the_tail_of_the_schedule():
    train_set, _ = splits(train_size=128)  # 2 steps per epoch
    log = LRLog()
    c = cfg(epochs=4, start_epoch=2, lr=0.1, lr_schedule="cosine")
    state = fit(net(), train_set, c, callbacks=[log])
    assert [h["epoch"] for h in state.history] == [2, 3, 4] and state.step == 8
    assert log.lrs == {s: lr_at(c, s, 2) for s in range(4, 8)}
    # The first rewound step is half-way through the cosine: 0.05 * (1 + cos(pi / 2)) = 0.05.
    assert log.lrs[4] == pytest.approx(0.05)
    assert state.history[-1]["lr"] == lr_at(c, 7, 2)


# --------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_smoke_learns_well_above_chance(precision):
    train_set, test = splits(train_size=512)
    state = fit(net(), train_set, cfg(epochs=3, precision=precision), callbacks=[Evaluate(test)])
    h = state.history
    assert [r["epoch"] for r in h] == [0, 1, 2, 3]
    assert set(h[-1]) == {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"}
    assert h[0]["test_acc"] < 0.4 < 0.6 < h[-1]["test_acc"]  # 4 classes: chance is 0.25
    assert h[-1]["train_loss"] < h[1]["train_loss"]


def test_evaluate_every_k_epochs_and_at_the_last_leaves_training_and_the_final_accuracy_as_they_are():
    train_set, test = splits()
    every = fit(net(), train_set, cfg(epochs=5), callbacks=[Evaluate(test, every=2)]).history
    always = fit(net(), train_set, cfg(epochs=5), callbacks=[Evaluate(test)]).history
    assert [r["epoch"] for r in every if "test_acc" in r] == [0, 2, 4, 5]
    assert [r["train_loss"] for r in every[1:]] == [r["train_loss"] for r in always[1:]]  # evaluating is not training
    assert every[-1]["test_acc"] == always[-1]["test_acc"] and every[2]["test_acc"] == always[2]["test_acc"]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"eval_every={bad!r} is invalid; allowed: an int >= 1"):
            Evaluate(test, every=bad)


def test_evaluate_with_bn_from_recomputes_the_statistics_on_a_copy():
    from cascade.data import Loader
    from cascade.train import evaluate, reset_bn

    train_set, test = splits(train_size=512)
    model = fit(net(), train_set, cfg(epochs=3)).model
    stats = train_set.stats()
    good = evaluate(model, test, stats, torch.device("cpu"))[1]
    with torch.no_grad():  # stale statistics: the running mean far from the activations
        model[1].running_mean.fill_(100.0)
    stale = evaluate(model, test, stats, torch.device("cpu"))[1]
    fresh = evaluate(model, test, stats, torch.device("cpu"), bn_from=train_set)[1]
    assert stale < 0.4 < 0.6 < fresh  # 4 classes: chance is 0.25
    assert torch.all(model[1].running_mean == 100.0)  # the model evaluated is a copy: training is untouched
    exact = net()
    exact.load_state_dict(model.state_dict())
    reset_bn(exact, Loader(train_set, 1000, train=False, stats=stats, device=torch.device("cpu")))
    assert evaluate(exact, test, stats, torch.device("cpu"))[1] == fresh
    assert abs(fresh - good) < 0.1  # the momentum average was close to the exact one after training


def test_masked_weights_stay_exactly_zero_under_momentum_and_decay():
    train_set, _ = splits()
    model = net()
    mask = pruning.prune(model, "random", 0.5, seed=1)  # random: the pruned weights are not small

    class PruneMore(Callback):  # a second pruning event mid-run, through State.set_mask
        def on_epoch_end(self, state):
            if state.epoch == 1:
                state.set_mask(pruning.prune(state.model, "gmp", 0.2, mask=state.mask))

    state = fit(model, train_set, cfg(epochs=2, momentum=0.9, weight_decay=5e-4, augment=True),
                mask=mask, callbacks=[PruneMore()])
    final = state.mask
    assert final.sparsity() == pytest.approx(0.7, abs=1e-3)
    for name in final:
        p = model.get_parameter(name)
        buf = state.optimizer.state[p]["momentum_buffer"]
        assert torch.all(p[~final[name]] == 0) and torch.all(buf[~final[name]] == 0), name
        assert torch.all(p[final[name]] != 0) and buf[final[name]].abs().sum() > 0, name


def run(directory=None, seed_model: int = 0, kill=None, seed: int = 0, device="cpu"):
    """4 epochs of fine-tuning a 50%-GMP-pruned net with evaluation, tracker and (optionally) checkpoints."""
    train_set, test = splits()
    pruned_from = net(0)
    mask = pruning.prune(pruned_from, "gmp", 0.5)
    tracker = Tracker(TrackerConfig(every_steps=3), mask, pruning.gmp_threshold(pruned_from, None, 0.5), test)
    callbacks = [Evaluate(test), tracker] + ([kill] if kill else []) + (
        [Checkpoint(directory, keep=(1,))] if directory else [])
    state = fit(net(seed_model), train_set, cfg(epochs=4, augment=True, seed=seed), device, mask=mask,
                callbacks=callbacks)
    return state, tracker


class Killed(Exception):
    pass


class Kill(Callback):
    """Dies at the end of epoch `epoch` (before that epoch's checkpoint) or right after global step `step`."""

    def __init__(self, epoch=None, step=None):
        self.epoch, self.step, self.armed = epoch, step, True
        self.every_steps = 1 if step else 0

    def on_step(self, state):
        if self.armed and state.step == self.step:
            raise Killed

    def on_epoch_end(self, state):
        if self.armed and state.epoch == self.epoch:
            raise Killed


def test_same_seed_gives_bit_identical_runs():
    a, ta = run()
    b, tb = run()
    assert a.history == b.history and ta.rows == tb.rows and same_weights(a.model, b.model)
    c, _ = run(seed=1)
    assert c.history != a.history


@pytest.mark.parametrize("where", [dict(epoch=2), dict(step=6)])  # 4 steps per epoch: step 6 is mid epoch 2
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, where):
    ref, ref_tracker = run()
    kill = Kill(**where)
    with pytest.raises(Killed):
        run(tmp_path, kill=kill)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] == 4 and [h["epoch"] for h in ck["history"]] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pt", "last.pt"]  # no temp files left
    kill.armed = False
    # A fresh, differently initialised model: everything must come from the checkpoint.
    state, tracker = run(tmp_path, seed_model=1, kill=kill)
    assert state.history == ref.history and [h["epoch"] for h in state.history] == [0, 1, 2, 3, 4]
    assert tracker.rows == ref_tracker.rows
    assert same_weights(state.model, ref.model)
    assert state.mask == ref.mask and state.step == 16
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_gpu(tmp_path):
    # map_location=cuda brings every tensor of the checkpoint (the tracker's keep0 too) back on the GPU.
    kill = Kill(epoch=2)
    with pytest.raises(Killed):
        run(tmp_path, kill=kill, device="cuda")
    kill.armed = False
    state, tracker = run(tmp_path, seed_model=1, kill=kill, device="cuda")
    assert [h["epoch"] for h in state.history] == [0, 1, 2, 3, 4] and state.step == 16
    assert {r[3] for r in tracker.rows if r[0] == 4} >= {"jaccard@0.5", "removal_acc"}


def test_load_weights_with_a_mask_rewinds_survivors_only(tmp_path):
    train_set, _ = splits()
    model = net()
    fit(model, train_set, cfg(epochs=2), callbacks=[Checkpoint(tmp_path, keep=(1,))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pt", "last.pt"]
    at1 = torch.load(tmp_path / "epoch_1.pt", weights_only=True)["model"]
    assert not torch.equal(at1["0.weight"], model[0].weight.detach())  # epoch 2 moved the weights
    mask = pruning.prune(model, "gmp", 0.6)
    load_weights(tmp_path / "epoch_1.pt", model, mask)
    for name, value in model.state_dict().items():
        expected = at1[name] * mask[name] if name in mask else at1[name]
        assert torch.equal(value, expected), name
    assert all(int((~mask[n]).sum()) > 0 and torch.all(model.get_parameter(n)[~mask[n]] == 0) for n in mask)


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kw, shown", [
    (dict(lr_schedule="linear"), "lr_schedule='linear' is invalid; allowed: constant, step, cosine, onecycle"),
    (dict(precision="fp16"), "precision='fp16' is invalid; allowed: fp32, bf16"),
    (dict(epochs=-1), "epochs=-1 is invalid; allowed: an int >= 0"),
    (dict(epochs=2.5), "epochs=2.5 is invalid"),
    (dict(epochs="10"), "epochs='10' is invalid"),
    (dict(batch_size=0), "batch_size=0 is invalid; allowed: an int >= 1"),
    (dict(lr=-0.1), "lr=-0.1 is invalid; allowed: a finite float >= 0"),
    (dict(lr="0.1"), "lr='0.1' is invalid"),
    (dict(momentum=1.0), "momentum=1.0 is invalid; allowed: a float in [0, 1)"),
    (dict(nesterov=True, momentum=0.0), "nesterov=True is invalid; allowed: False when momentum is 0"),
    (dict(weight_decay=-1e-4), "weight_decay=-0.0001 is invalid"),
    (dict(epochs=10, warmup_epochs=11), "warmup_epochs=11 is invalid; allowed: an int in [0, epochs=10]"),
    (dict(start_epoch=-1), "start_epoch=-1 is invalid"),
    (dict(epochs=3, start_epoch=4), "start_epoch=4 is invalid; allowed: an int in [0, epochs=3]"),
    (dict(milestones=(0.5, 1.0)), "milestones=(0.5, 1.0) is invalid; allowed: fractions of the run in (0, 1)"),
])
def test_bad_config_raises_one_line_value_error(kw, shown):
    with pytest.raises(ValueError) as err:
        TrainConfig(**kw)
    assert shown in str(err.value) and "\n" not in str(err.value)


def test_batch_larger_than_training_set_is_rejected():
    train_set, _ = splits(train_size=32)
    with pytest.raises(ValueError, match="batch_size=64 exceeds the training set \\(32\\)"):
        fit(net(), train_set, cfg())
