"""Model zoo for the pruning experiments: a name registry, small-input adaptations, and a cost counter.

`build(name, in_channels, num_classes, width=None, **kw)` returns a freshly initialised network; `names()` lists
the registered names; `count(net, mask)` reports parameters and multiply-accumulates (MACs), dense and after
pruning.

Every network takes `in_channels`-channel images of 28x28 (MNIST-like) or 32x32 (CIFAR-like) pixels and ends in a
global average pool and one linear head, so it works for both sizes. `width` is the channel count of the first stage;
`None` picks the model's own default:

=================================  =============  =============================================================
names                              default width  what `width` scales
=================================  =============  =============================================================
resnet8/20/32/56, preresnet20      16             stages width, 2*width, 4*width (He et al. 2016)
vgg11, vgg16                       64             stages 1, 2, 4, 8, 8 x width (VGG 64-128-256-512-512)
mobilenetv2                        32             torchvision width_mult = width / 32 (stem has 32 channels)
mobilenet_v3_small/large           16             torchvision width_mult = width / 16 (stem has 16 channels)
resnet18, resnet50 (torchvision)   64             fixed: torchvision's ResNet hard-codes 64, so only 64 is allowed
=================================  =============  =============================================================

MobileNets round every layer width to a multiple of 8, as torchvision does.

Strided 1x1 convolutions (the option-B shortcuts of the CIFAR ResNets and PreResNet, torchvision's ResNet downsample
layers) are built as `StridedPointwise`: the input is subsampled first and a stride-1 1x1 conv follows. That is the
same function, bit for bit, with the same parameters and state-dict keys, but oneDNN never receives a strided 1x1
convolution. Its backward pass for such a conv in channels_last writes past its "reduce to unit stride" workspace when
the input has fewer channels than the kernel's block (8 with AVX2, 16 with AVX-512): heap corruption, crashes, or
silently wrong weight gradients (uxlfoundation/oneDNN issue 6035). `python -m cascade doctor` checks every model's
gradients against a float64 reference.

Initialisation (same for every model, deterministic under `torch.manual_seed`): convolutions Kaiming-normal with
fan_out and ReLU gain, conv biases 0; BatchNorm weight 1, bias 0. Linear layers keep the initialisation of their
constructor (PyTorch's default; torchvision's N(0, 0.01) for MobileNets). No pretrained weights are used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

__all__ = ["build", "names", "count", "BasicBlock", "PreActBlock", "CifarResNet", "VGG", "StridedPointwise"]


class StridedPointwise(nn.Conv2d):
    """A 1x1 convolution with stride s > 1 computed as a stride-1 1x1 conv of x[:, :, ::s, ::s].

    Identical output and gradients; it keeps oneDNN's faulty strided-1x1 backward out of reach (module docstring).
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], weight, bias, groups=self.groups)


def _is_strided_pointwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.padding == (0, 0)
            and m.padding_mode == "zeros")


def _replace_strided_pointwise(net: nn.Module) -> None:
    """Swap every strided 1x1 nn.Conv2d of `net` for a StridedPointwise holding the same parameters (no RNG use)."""
    for parent in list(net.modules()):
        for name, m in parent.named_children():
            if _is_strided_pointwise(m):
                new = torch.nn.utils.skip_init(StridedPointwise, m.in_channels, m.out_channels, 1, m.stride,
                                               groups=m.groups, bias=m.bias is not None, device=m.weight.device,
                                               dtype=m.weight.dtype)
                new.weight = m.weight
                if m.bias is not None:
                    new.bias = m.bias
                setattr(parent, name, new)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


# --------------------------------------------------------------------------------------------------- CIFAR ResNets
class BasicBlock(nn.Module):
    """Post-activation block (He et al. 2016a): conv-BN-ReLU-conv-BN + shortcut, then ReLU.

    `mid` is the inner width (conv1/bn1 out, conv2 in), default `cout`; a filter-pruned block is built thin with it.
    The shortcut is option B: a 1x1 conv + BN projection when the shape changes, else the identity.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.conv1, self.bn1 = _conv3x3(cin, mid, stride), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = _conv3x3(mid, cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): BN-ReLU-conv-BN-ReLU-conv + shortcut, no activation after the sum.

    bn1 normalises the block input (cin channels); `mid` sets conv1 out / bn2 / conv2 in. The projection shortcut
    is a bare 1x1 conv on the pre-activated input, as in the paper (the next block's BN follows it).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, mid, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), _conv3x3(mid, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if len(self.shortcut) else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + skip


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2: a 3x3 stem, three stages of n blocks (width, 2w, 4w; stride 2 entering stages
    2 and 3), global average pool, linear head. Attributes: conv1, bn1 (post-activation only), layer1-3, fc;
    the pre-activation variant ends its trunk with bn_out + ReLU instead of a stem BN.

    `mid_channels` (one int per block, in order layer1..layer3) sets every block's inner width.
    """

    def __init__(self, block: type[nn.Module], depth: int, in_channels: int, num_classes: int, width: int = 16,
                 mid_channels: Sequence[int] | None = None):
        super().__init__()
        n = (depth - 2) // 6
        if mid_channels is None:
            mid_channels = [None] * (3 * n)
        elif len(mid_channels) != 3 * n or not all(isinstance(c, int) and c >= 1 for c in mid_channels):
            raise ValueError(f"mid_channels {list(mid_channels)!r} invalid for depth {depth}; "
                             f"allowed: {3 * n} positive ints, one per block")
        self.preact = block is PreActBlock
        self.conv1 = _conv3x3(in_channels, width)
        if not self.preact:
            self.bn1 = nn.BatchNorm2d(width)
        mids, cin, stages = iter(mid_channels), width, []
        for i in range(3):
            cout = width * 2 ** i
            stages.append(nn.Sequential(*[block(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1, next(mids))
                                          for j in range(n)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        if self.preact:
            self.bn_out = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = F.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.preact:
            x = F.relu(self.bn_out(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ------------------------------------------------------------------------------------------------------ CIFAR VGG
_VGG_CFG = {  # multiples of `width`; "M" = 2x2 max pool
    11: [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    16: [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm: conv3x3-BN-ReLU stacks, five 2x2 max pools, global average pool, one linear layer.

    The pools use ceil_mode so five halvings keep a 1x1 map for 28x28 inputs too (28-14-7-4-2-1).
    """

    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        layers, cin = [], in_channels
        for v in _VGG_CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [_conv3x3(cin, v * width), nn.BatchNorm2d(v * width), nn.ReLU(inplace=True)]
                cin = v * width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ------------------------------------------------------------------------------------------ torchvision adaptations
# torchvision's MobileNetV2 table [t, c, n, s] with the second stage's stride 2 -> 1: together with a stride-1 stem
# the net downsamples 8x instead of 32x, the usual CIFAR variant.
_MOBILENETV2_CIFAR = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                      [6, 320, 1, 1]]


def _tv_resnet(factory, in_channels: int, num_classes: int, width: int) -> nn.Module:
    """torchvision ResNet with a 3x3 stride-1 stem and no max pool, so 28/32-pixel inputs are not shrunk 4x at once."""
    if width != 64:
        raise ValueError(f"width {width} not supported by torchvision's ResNet (fixed first-stage width); allowed: 64")
    net = factory(weights=None, num_classes=num_classes)
    net.conv1 = _conv3x3(in_channels, 64)
    net.maxpool = nn.Identity()
    return net


def _tv_mobilenet(factory, stem_width: int, in_channels: int, num_classes: int, width: int, **kw) -> nn.Module:
    """torchvision MobileNet with width_mult = width / stem_width and its stem conv replaced by a stride-1 conv."""
    net = factory(weights=None, num_classes=num_classes, width_mult=width / stem_width, **kw)
    stem = net.features[0][0]
    net.features[0][0] = _conv3x3(in_channels, stem.out_channels)
    return net


# ------------------------------------------------------------------------------------------------------ registry
_RESNET_OPTS = ("mid_channels",)
_REGISTRY = {  # name -> (builder(in_channels, num_classes, width, **options), default width, options)
    **{f"resnet{d}": (partial(CifarResNet, BasicBlock, d), 16, _RESNET_OPTS) for d in (8, 20, 32, 56)},
    "preresnet20": (partial(CifarResNet, PreActBlock, 20), 16, _RESNET_OPTS),
    "vgg11": (partial(VGG, 11), 64, ()),
    "vgg16": (partial(VGG, 16), 64, ()),
    "mobilenetv2": (partial(_tv_mobilenet, torchvision.models.mobilenet_v2, 32,
                            inverted_residual_setting=_MOBILENETV2_CIFAR), 32, ()),
    "resnet18": (partial(_tv_resnet, torchvision.models.resnet18), 64, ()),
    "resnet50": (partial(_tv_resnet, torchvision.models.resnet50), 64, ()),
    "mobilenet_v3_small": (partial(_tv_mobilenet, torchvision.models.mobilenet_v3_small, 16), 16, ()),
    "mobilenet_v3_large": (partial(_tv_mobilenet, torchvision.models.mobilenet_v3_large, 16), 16, ()),
}


def names() -> list[str]:
    """Registered model names, in registry order."""
    return list(_REGISTRY)


def _init(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build(name: str, in_channels: int = 3, num_classes: int = 10, width: int | None = None, **kw) -> nn.Module:
    """A freshly initialised network `name` for `in_channels`-channel images and `num_classes` classes.

    `width` is the first-stage channel count (None: the model's default, see the module docstring). Extra keyword
    options: `mid_channels` for resnet*/preresnet20 (inner width of each block, in order).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(_REGISTRY)}")
    builder, default_width, options = _REGISTRY[name]
    width = default_width if width is None else width
    for arg, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2), ("width", width, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} {value!r} invalid; allowed: integers >= {low}")
    unknown = sorted(set(kw) - set(options))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} not accepted by {name}; "
                         f"allowed: {', '.join(options) or 'none'}")
    net = builder(in_channels=in_channels, num_classes=num_classes, width=width, **kw)
    _init(net)
    _replace_strided_pointwise(net)
    return net


# ---------------------------------------------------------------------------------------------------------- cost
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count(net: nn.Module, mask: Mapping[str, torch.Tensor] | None = None, input_size: int | None = None) -> dict:
    """Parameters and MACs of one forward pass of one image, dense and counting only the weights `mask` keeps.

    Returns dict(params, params_kept, macs, macs_kept). `params` counts every parameter (BN affine and biases
    included); BN parameters and biases are never prunable, so `params_kept` only drops the mask's pruned weights.
    MACs come from conv and linear weights only (BN, biases, activations, pools and additions are not counted):
    a weight contributes once per output position, i.e. H_out*W_out times for a 2-d conv and once for a linear
    layer on a flat vector. Grouped/depthwise convs are counted correctly since their weight tensors are smaller.

    mask: parameter name -> bool tensor (True = kept) for conv/linear weights; missing names count as dense.
    input_size: side of the dummy square input; default 28 for 1-channel nets, 32 otherwise. The output sizes are
    measured with forward hooks on a zero input in eval mode without gradients; the training mode is restored.
    """
    modules = {f"{n}.weight" if n else "weight": m for n, m in net.named_modules() if isinstance(m, _WEIGHTED)}
    if not modules:
        raise ValueError("net has no conv or linear layer to count; allowed: nets with nn.Conv*/nn.Linear layers")
    mask = dict(mask or {})
    for pname, keep in mask.items():
        if pname not in modules or tuple(keep.shape) != tuple(modules[pname].weight.shape):
            raise ValueError(f"mask entry {pname!r} is not a conv/linear weight of net with matching shape; "
                             f"allowed: {', '.join(modules)}")
    first = next(iter(modules.values()))
    cin = first.in_channels if isinstance(first, nn.modules.conv._ConvNd) else first.in_features
    size = input_size or (28 if cin == 1 else 32)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"input_size {input_size!r} invalid; allowed: integers >= 1")

    positions = dict.fromkeys(modules, 0)

    def hook(pname, module, inputs, output):
        channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        positions[pname] += output[0].numel() // channels

    handles = [m.register_forward_hook(partial(hook, p)) for p, m in modules.items()]
    was_training = net.training
    p0 = next(net.parameters())
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, cin, *([size] * (first.weight.dim() - 2)), device=p0.device, dtype=p0.dtype))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)

    params = sum(p.numel() for p in net.parameters())
    kept = {p: int(mask[p].sum()) if p in mask else modules[p].weight.numel() for p in modules}
    pruned = sum(modules[p].weight.numel() - kept[p] for p in modules)
    return dict(params=params, params_kept=params - pruned,
                macs=sum(modules[p].weight.numel() * positions[p] for p in modules),
                macs_kept=sum(kept[p] * positions[p] for p in modules))
