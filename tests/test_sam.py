"""SAM as an optimizer option of the training loop: its step on a quadratic, by hand, and its BatchNorm handling."""
import copy
import math

import pytest
import torch

from cascade import data, models
from cascade.store import config_hash
from cascade.train import SAM, TrainConfig, train


def test_a_sam_step_on_a_quadratic_by_hand():
    """L(w) = w'Aw / 2 with A = diag(2, 1), w = (1, 2): g = Aw = (2, 2), |g| = 2 sqrt 2, so with rho 0.5 the
    perturbation is e = rho g / |g| = (0.35355, 0.35355); the gradient at w + e is A(w + e) = (2.70711, 2.35355),
    and SGD (lr 0.1, no momentum) steps from w: (1 - 0.270711, 2 - 0.235355) = (0.729289, 1.764645)."""
    a = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = SAM([w], rho=0.5, lr=0.1, momentum=0.0, weight_decay=0.0)

    def loss():
        return 0.5 * w @ a @ w

    loss().backward()
    opt.perturb()
    e = 0.5 / math.sqrt(2)
    assert w.tolist() == pytest.approx([1 + e, 2 + e], abs=1e-12)  # perturbed
    opt.zero_grad()
    loss().backward()
    assert w.grad.tolist() == pytest.approx([2 * (1 + e), 2 + e], abs=1e-12)
    opt.restore()
    assert w.tolist() == pytest.approx([1.0, 2.0], abs=1e-15)  # back at w before the step
    opt.step()
    assert w.tolist() == pytest.approx([0.729289, 1.764645], abs=1e-6)


def _one_step(cfg: TrainConfig):
    train_set, _ = data.load("synthetic", 64, 16, seed=0)
    torch.manual_seed(0)
    net = models.build("resnet8", in_channels=train_set.in_channels, num_classes=train_set.num_classes, width=4)
    start = copy.deepcopy(net.state_dict())
    train(net, train_set, cfg, quiet=True, device="cpu")
    return start, net.state_dict()


def test_sam_in_the_loop_moves_batchnorm_statistics_once_per_step():
    """One step of SGD and one of SAM from the same weights on the same batch: the running statistics come from
    the unperturbed pass only, so they are the same; the weights are not (SAM took another gradient)."""
    base = dict(epochs=1, batch_size=64, lr=0.1, lr_schedule="constant", augment=False, seed=3)
    _, sgd = _one_step(TrainConfig(**base))
    _, sam = _one_step(TrainConfig(**base, optimizer="sam", sam_rho=0.5))
    stats = [k for k in sgd if "running_" in k or "num_batches_tracked" in k]
    assert stats and all(torch.equal(sgd[k], sam[k]) for k in stats)
    weights = [k for k in sgd if k.endswith("conv1.weight")]
    assert weights and not all(torch.equal(sgd[k], sam[k]) for k in weights)


def test_sam_is_in_the_key_only_when_chosen_and_its_radius_is_checked():
    sgd = TrainConfig()
    assert config_hash(sgd, 1) == config_hash(TrainConfig(optimizer="sgd", sam_rho=0.05), 1)
    assert config_hash(TrainConfig(optimizer="sam"), 1) != config_hash(sgd, 1)
    with pytest.raises(ValueError, match=r"sam_rho=0 is invalid; allowed: a finite float > 0"):
        TrainConfig(optimizer="sam", sam_rho=0)
    with pytest.raises(ValueError, match=r"optimizer='adam' is invalid; allowed: sgd, sam"):
        TrainConfig(optimizer="adam")
