"""Model registry, shapes, hand-computed parameter/MAC counts, thin (filter-pruned) ResNets and input validation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cascade import models

ROOT = Path(__file__).resolve().parents[1]

# Small widths keep the whole file fast; torchvision's ResNets only allow their fixed width 64.
SMALL = {"vgg11": 8, "vgg16": 8, "mobilenetv2": 8, "mobilenet_v3_small": 8, "mobilenet_v3_large": 8,
         "resnet18": 64, "resnet50": 64}


def small(name, in_channels=3, **kw):
    torch.manual_seed(0)
    return models.build(name, in_channels, 10, width=SMALL.get(name, 4), **kw).eval()


def test_registry_names():
    assert models.names() == ["resnet8", "resnet20", "resnet32", "resnet56", "preresnet20", "vgg11", "vgg16",
                              "mobilenetv2", "resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large"]


@pytest.mark.parametrize("name", models.names())
def test_logits_shape_for_mnist_and_cifar_inputs_and_channels_last(name):
    with torch.no_grad():
        out = small(name, 1)(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        net, x = small(name, 3), torch.randn(2, 3, 32, 32)
        out = net(x)
        last = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(last, out, rtol=1e-4, atol=1e-4)


# Some VMs' CPUs advertise AMX, yet oneDNN's AMX bf16 matmul dies there with SIGILL (seen on the dev VM:
# nn.Linear(512, 10) under CPU autocast), which would kill the whole pytest process. So the bf16 check runs in a
# child process with oneDNN capped at AVX512-BF16 unless the caller already chose an ISA.
AUTOCAST_CHECK = """
import sys, torch
from tests.test_models import small
for name in sys.argv[1:]:
    net, x = small(name).to(memory_format=torch.channels_last), torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 10) and out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all(), name
    print(name)
"""


def test_bf16_autocast_channels_last_every_model():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    run = subprocess.run([sys.executable, "-c", AUTOCAST_CHECK, *models.names()], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == models.names()


def test_resnet8_param_count_by_hand():
    # width 16, 1 input channel, 10 classes, one BasicBlock per stage; convs have no bias, BN has 2 params/channel.
    stem = 1 * 16 * 9 + 2 * 16                                                 # 144 + 32          = 176
    block1 = 16 * 16 * 9 + 2 * 16 + 16 * 16 * 9 + 2 * 16                       # identity shortcut = 4672
    block2 = 16 * 32 * 9 + 2 * 32 + 32 * 32 * 9 + 2 * 32 + 16 * 32 + 2 * 32    # + 1x1 projection  = 14528
    block3 = 32 * 64 * 9 + 2 * 64 + 64 * 64 * 9 + 2 * 64 + 32 * 64 + 2 * 64    # + 1x1 projection  = 57728
    head = 64 * 10 + 10                                                        #                   = 650
    assert stem + block1 + block2 + block3 + head == 77754
    assert models.count(models.build("resnet8", 1, 10))["params"] == 77754


def test_resnet20_and_56_param_counts_match_paper_plus_projections():
    # He et al. report 0.27M / 0.85M params for option A (parameter-free shortcuts): 269,722 and 853,018 at 3 input
    # channels. Option B adds two 1x1 conv + BN projections: 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
    projections = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert models.count(models.build("resnet20", 3, 10, width=16))["params"] == 269_722 + projections
    assert models.count(models.build("resnet56", 3, 10, width=16))["params"] == 853_018 + projections


def test_macs_of_tiny_nets_by_hand():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3))                     # 28x28 -> 26x26 (no padding)
    assert models.count(conv) == dict(params=4 * 9 + 4, params_kept=40, macs=36 * 26 * 26, macs_kept=24336)
    strided = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1))  # 32x32 -> 16x16
    assert models.count(strided)["macs"] == 3 * 8 * 9 * 16 * 16 == 55296
    head = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5))
    assert models.count(head, input_size=10) == dict(params=18 + 2 + 10 + 5, params_kept=35,
                                                     macs=18 * 100 + 10, macs_kept=1810)


def test_mask_halving_one_layer_halves_its_macs():
    net = small("resnet8", in_channels=1)
    dense = models.count(net)
    keep = torch.ones(8, 4, 3, 3, dtype=torch.bool)  # layer2.0.conv1: 4 -> 8 channels, stride 2: 28x28 -> 14x14
    keep[:4] = False
    counted = models.count(net, {"layer2.0.conv1.weight": keep, "fc.weight": torch.ones(10, 16, dtype=torch.bool)})
    layer_macs = 8 * 4 * 9 * 14 * 14
    assert counted["macs"] == dense["macs"] and counted["params"] == dense["params"]
    assert counted["macs_kept"] == dense["macs"] - layer_macs // 2 == dense["macs"] - 28224
    assert counted["params_kept"] == dense["params"] - 144
    assert net.training is False  # count restores the mode it found


def test_mid_channels_builds_thin_resnet():
    # Halving each block's inner width of resnet8 (16, 32, 64 -> 8, 16, 32) removes, per block,
    # conv1 cin*(c - m)*9 + bn1 2*(c - m) + conv2 (c - m)*c*9.
    removed = (16 * 8 * 9 + 2 * 8 + 8 * 16 * 9) + (16 * 16 * 9 + 2 * 16 + 16 * 32 * 9) + \
              (32 * 32 * 9 + 2 * 32 + 32 * 64 * 9)
    assert removed == 2320 + 6944 + 27712
    thin = models.build("resnet8", 1, 10, mid_channels=[8, 16, 32])
    assert models.count(thin)["params"] == 77754 - removed == 40778
    assert [b.conv1.out_channels for b in (thin.layer1[0], thin.layer2[0], thin.layer3[0])] == [8, 16, 32]
    assert thin(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    pre = models.build("preresnet20", 3, 10, width=4, mid_channels=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert [b.conv2.in_channels for s in (pre.layer1, pre.layer2, pre.layer3) for b in s] == list(range(1, 10))
    assert pre(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_init_is_kaiming_fan_out_and_deterministic():
    a, b = small("resnet20"), small("resnet20")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    w = models.build("resnet20", width=16).layer3[0].conv1.weight  # 32 -> 64: fan_out 64*3*3, fan_in 32*3*3
    assert abs(w.std().item() / (2 / 576) ** 0.5 - 1) < 0.03 and abs(w.mean().item()) < 2e-3
    assert (a.bn1.weight == 1).all() and (a.bn1.bias == 0).all()


@pytest.mark.parametrize("call, bad", [
    (lambda: models.build("resnet21"), "'resnet21'"),
    (lambda: models.build("resnet20", width=0), "width 0"),
    (lambda: models.build("vgg11", in_channels=0), "in_channels 0"),
    (lambda: models.build("mobilenetv2", num_classes=1), "num_classes 1"),
    (lambda: models.build("resnet18", width=16), "width 16"),
    (lambda: models.build("vgg11", mid_channels=[8]), "mid_channels"),
    (lambda: models.build("resnet8", mid_channels=[8, 16]), "[8, 16]"),
    (lambda: models.count(nn.Conv2d(1, 2, 3), {"conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool)}),
     "'conv.weight'"),
])
def test_bad_input_raises_value_error_naming_it(call, bad):
    with pytest.raises(ValueError, match="allowed") as err:
        call()
    assert bad in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_name_lists_allowed_names():
    with pytest.raises(ValueError, match="resnet21.*allowed: resnet8, resnet20, resnet32, resnet56, preresnet20"):
        models.build("resnet21")
