"""Pruning masks, criteria and schedules.

A `Mask` maps parameter names to bool tensors, True where the weight is kept (the convention of OpenLTH and
torch.nn.utils.prune). Only conv and linear weights are prunable: BN parameters and biases are few and cost no
multiply-accumulates, so pruning them would save nothing.

`prune(model, criterion, fraction, ...)` is the one entry point: it validates its arguments, then calls a criterion
from `CRITERIA`, a pure function `(model, mask, fraction, rng, **opts) -> Mask` that only reads the model.
`fraction` is the share of ALL weights of the mask that one call removes, chosen among the mask's survivors, so
sparsity goes from s to s + fraction (to one weight, by rounding; to one weight per layer for the layerwise
criteria). Two criteria read it differently, see their docstrings: `l1-filter` (share of filters) and `nm`
(ignored; the pattern decides).

Scores are computed on CPU and ties always go to the earlier weight (module order, then index), so the same weights
give the same mask on every device. `schedule(...)` turns a pruning schedule into data, (step, fraction) events that
the training loop applies with `prune`.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping

import pandas as pd
import torch
from torch import nn

from . import models

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_names(model: nn.Module, include_first: bool = True, include_last: bool = True) -> list[str]:
    """Names (as in model.named_parameters()) of conv and linear weights, in module order.

    First and last are the first and last such layer in registration order: the stem conv and the classifier for
    every model in `cascade.models`. Both are prunable by default, as in GMP and OpenLTH; pass False to keep them
    dense, as many structured-pruning papers do.
    """
    names = [f"{p}.weight" if p else "weight" for p, m in model.named_modules() if isinstance(m, PRUNABLE)]
    return names[(0 if include_first else 1):(len(names) if include_last else max(len(names) - 1, 0))]


class Mask(Mapping[str, torch.Tensor]):
    """Parameter name -> bool tensor (True = kept), on CPU, validated against `model` on construction.

    A mask is a value: criteria return new masks. The training-loop methods (`params`, `apply_`, `zero_grads`,
    `zero_state`) cache the model's weights and device copies of the masks, so re-masking after every optimizer step
    is one fused multiply.
    """

    def __init__(self, model: nn.Module, tensors: Mapping[str, torch.Tensor]):
        allowed = prunable_names(model)
        if not tensors:
            raise ValueError(f"empty mask; allowed names: {', '.join(allowed)}")
        for name, t in tensors.items():
            if name not in allowed:
                raise ValueError(f"mask name {name!r} is not a prunable weight of the model; "
                                 f"allowed: {', '.join(allowed)}")
            if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
                dtype = getattr(t, "dtype", type(t).__name__)
                raise ValueError(f"mask {name!r} has dtype {dtype}; allowed: torch.bool")
            shape = model.get_parameter(name).shape
            if t.shape != shape:
                raise ValueError(f"mask {name!r} has shape {tuple(t.shape)}; the weight has shape {tuple(shape)}")
        self.__setstate__({n: tensors[n].detach().to("cpu", copy=True) for n in allowed if n in tensors})

    def __getstate__(self) -> dict[str, torch.Tensor]:
        """Copies and pickles carry the tensors only: a deep-copied weight cache would mask the copied weights."""
        return self._t

    def __setstate__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._t = tensors
        self._params: weakref.WeakKeyDictionary[nn.Module, list[nn.Parameter]] = weakref.WeakKeyDictionary()
        self._copies: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    @classmethod
    def dense(cls, model: nn.Module, include_first: bool = True, include_last: bool = True) -> Mask:
        """All-True mask over `prunable_names(model, include_first, include_last)` (first/last prunable by default)."""
        names = prunable_names(model, include_first, include_last)
        return cls(model, {n: torch.ones(model.get_parameter(n).shape, dtype=torch.bool) for n in names})

    @classmethod
    def from_state_dict(cls, model: nn.Module, state: Mapping[str, torch.Tensor]) -> Mask:
        return cls(model, state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain bool CPU tensors, so a checkpoint holding them loads with torch.load(weights_only=True)."""
        return {n: t.clone() for n, t in self._t.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self):
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and list(self) == list(other) and all(
            torch.equal(t, other[n]) for n, t in self._t.items())

    __hash__ = None

    def __repr__(self) -> str:
        return f"Mask({len(self)} layers, sparsity {self.sparsity():.4f})"

    @property
    def names(self) -> list[str]:
        return list(self._t)

    def num_total(self) -> int:
        return sum(t.numel() for t in self._t.values())

    def num_kept(self) -> int:
        return sum(int(t.sum()) for t in self._t.values())

    def sparsity(self) -> float:
        """Pruned share of the mask's weights."""
        return (self.num_total() - self.num_kept()) / self.num_total()

    def report(self) -> pd.DataFrame:
        """One row per layer and a final "global" row: layer, total, kept, sparsity."""
        rows = [(n, t.numel(), int(t.sum())) for n, t in self._t.items()]
        df = pd.DataFrame(rows + [("global", self.num_total(), self.num_kept())], columns=["layer", "total", "kept"])
        df["sparsity"] = (df.total - df.kept) / df.total
        return df

    def _on(self, model: nn.Module) -> tuple[list[nn.Parameter], list[torch.Tensor], list[torch.Tensor]]:
        """The model's masked weights, their bool masks and masks in their dtype, on their devices.

        The weights are looked up once per model (the Parameter objects survive .to(), load_state_dict and training;
        a Parameter replaced by a new one is only seen after `apply`); the masks once per (device, dtype) layout.
        """
        if model not in self._params:
            self._params[model] = [model.get_parameter(n) for n in self._t]
        params = self._params[model]
        layout = tuple((p.device, p.dtype) for p in params)
        if layout not in self._copies:
            keeps = [t.to(dev) for t, (dev, _) in zip(self._t.values(), layout)]
            self._copies[layout] = keeps, [k.to(dtype) for k, (_, dtype) in zip(keeps, layout)]
        return params, *self._copies[layout]

    def params(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(weight, bool mask on the weight's device) pairs for the training loop."""
        params, keeps, _ = self._on(model)
        return list(zip(params, keeps))

    def apply(self, model: nn.Module) -> nn.Module:
        """Check that the mask fits `model`, look its weights up afresh, then zero its pruned weights in place."""
        Mask(model, self._t)
        self._params.pop(model, None)
        return self.apply_(model)

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero pruned weights with one fused multiply: the unchecked fast path for every optimizer step."""
        params, _, floats = self._on(model)
        torch._foreach_mul_(params, floats)
        return model

    @torch.no_grad()
    def zero_grads(self, model: nn.Module) -> None:
        """Zero the gradients of pruned weights, so no optimizer statistic ever sees them."""
        params, _, floats = self._on(model)
        _mul([(p.grad, f) for p, f in zip(params, floats) if p.grad is not None])

    @torch.no_grad()
    def zero_state(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Zero the optimizer buffers of pruned weights (momentum, Adam moments), so they cannot regrow them."""
        params, _, floats = self._on(model)
        _mul([(v, f) for p, f in zip(params, floats) for v in optimizer.state.get(p, {}).values()
              if isinstance(v, torch.Tensor) and v.shape == p.shape])


def _mul(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    if pairs:
        torch._foreach_mul_([a for a, _ in pairs], [b for _, b in pairs])


# ------------------------------------------------------------------------------------------------ validation
def check_criterion(criterion: str, opts: Mapping) -> None:
    """Raise ValueError (one line) unless `criterion` is known and `opts` fit it; before any training."""
    _resolve(CRITERIA, "criterion", criterion, opts)


def _resolve(registry: Mapping[str, Callable], what: str, key: str, opts: Mapping) -> Callable:
    """registry[key], after checking `opts` against its keyword-only parameters."""
    if key not in registry:
        raise ValueError(f"unknown {what} {key!r}; allowed: {', '.join(registry)}")
    params = [p for p in inspect.signature(registry[key]).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(opts) - {p.name for p in params})
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {what} {key!r}; "
                         f"allowed: {', '.join(p.name for p in params) or 'none'}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in opts]
    if missing:
        raise ValueError(f"{what} {key!r} needs option(s) {', '.join(missing)}")
    return registry[key]


def _int_at_least(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction {fraction} outside [0, 1)")


def _as_mask(model: nn.Module, mask: Mapping[str, torch.Tensor] | None) -> Mask:
    return Mask.dense(model) if mask is None else Mask(model, mask)


def _count(keep: torch.Tensor, fraction: float, where: str) -> int:
    """round(fraction * keep.numel()), the number of weights to remove; it must not exceed the survivors."""
    k, kept = round(fraction * keep.numel()), int(keep.sum())
    if k > kept:
        raise ValueError(f"fraction {fraction} exceeds the density {kept / keep.numel():.6g} of {where}")
    return k


# ------------------------------------------------------------------------------------------------ scoring
def _flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def smallest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean marks of the k lowest entries of a 1-d `score`, ties going to the earlier index (as a stable sort).

    A selection (kthvalue) instead of a sort: O(n), which keeps the tracker's per-epoch GMP-overlap cheap.
    """
    n = score.numel()
    if k <= 0 or k >= n:
        return torch.full((n,), k > 0, dtype=torch.bool, device=score.device)
    v = score.kthvalue(k).values
    out = score < v
    ties = (score == v).nonzero().squeeze(1)[:k - int(out.sum())]
    out[ties] = True
    return out


def _lowest(keep: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """`keep` (1-d) without its k lowest-scoring survivors (ties: the earlier index goes)."""
    alive = keep.nonzero().squeeze(1)
    out = keep.clone()
    out[alive[smallest(score[alive], k)]] = False
    return out


def _magnitudes(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    return {n: model.get_parameter(n).detach().abs().cpu() for n in mask}


def _uniform(mask: Mask, rng: torch.Generator) -> dict[str, torch.Tensor]:
    """One uniform score per weight, pruned ones included, so a seed draws the same scores whatever the mask."""
    return {n: torch.rand(t.shape, generator=rng) for n, t in mask.items()}


def _by_score(model: nn.Module, mask: Mask, fraction: float, layerwise: bool,
              score: Callable[[], dict[str, torch.Tensor]]) -> Mask:
    """Remove the round(fraction * size) lowest-scoring survivors of the whole mask, or of every layer."""
    groups = [[n] for n in mask] if layerwise else [list(mask)]
    ks = [_count(_flat(mask[n] for n in g), fraction, f"layer {g[0]!r}" if layerwise else "the mask") for g in groups]
    scores, out = score(), {}
    for g, k in zip(groups, ks):
        new = _lowest(_flat(mask[n] for n in g), _flat(scores[n] for n in g), k)
        out.update((n, t.view_as(mask[n])) for n, t in zip(g, new.split([mask[n].numel() for n in g])))
    return Mask(model, out)


# ------------------------------------------------------------------------------------------------ criteria
def _gmp(model: nn.Module, mask: Mask, fraction: float, rng: torch.Generator) -> Mask:
    """Global magnitude: the round(fraction * total) smallest |w| among survivors, across all layers."""
    return _by_score(model, mask, fraction, False, lambda: _magnitudes(model, mask))


def _layerwise(model: nn.Module, mask: Mask, fraction: float, rng: torch.Generator) -> Mask:
    """Magnitude per layer: every layer loses round(fraction * its size) of its survivors, its smallest |w|."""
    return _by_score(model, mask, fraction, True, lambda: _magnitudes(model, mask))


def _random(model: nn.Module, mask: Mask, fraction: float, rng: torch.Generator) -> Mask:
    """Global random: round(fraction * total) survivors drawn uniformly across all layers."""
    return _by_score(model, mask, fraction, False, lambda: _uniform(mask, rng))


def _random_layerwise(model: nn.Module, mask: Mask, fraction: float, rng: torch.Generator) -> Mask:
    """Random per layer: every layer loses round(fraction * its size) survivors drawn uniformly."""
    return _by_score(model, mask, fraction, True, lambda: _uniform(mask, rng))


def _blocks(model: nn.Module) -> list[tuple[int, str, nn.Module]]:
    """(stage index, name, block) of every residual block in model.layer1, model.layer2, ..., in order."""
    out, i = [], 1
    while isinstance(stage := getattr(model, f"layer{i}", None), nn.Sequential):
        out += [(i - 1, f"layer{i}.{j}", block) for j, block in enumerate(stage)]
        i += 1
    if not out or not all(hasattr(b, "conv1") and hasattr(b, "conv2") for *_, b in out):
        raise ValueError(f"filter pruning needs a ResNet with blocks (conv1, conv2) in layer1, layer2, ...; "
                         f"got {type(model).__name__}")
    return out


def _inner_bn(block: nn.Module) -> str:
    """The BN that normalises conv1's output: bn2 in a pre-activation block, bn1 otherwise."""
    return "bn2" if isinstance(block, models.PreActBlock) else "bn1"


def _filters(keep: torch.Tensor) -> torch.Tensor:
    """Output filters with at least one kept weight."""
    return keep.flatten(1).any(1)


def _l1_filter(model: nn.Module, mask: Mask, fraction: float, rng: torch.Generator, *,
               stage_ratios: tuple[float, ...] | None = None, skip: Iterable[int] = ()) -> Mask:
    """Structured pruning (Li et al. 2017): whole output filters of every block's conv1, smallest L1 norm first.

    Here `fraction` is the share of filters each conv1 loses (round(fraction * filters)), not a share of all
    weights. Or pass fraction=0 and `stage_ratios`, one share per stage (Liu et al. 2019, "Rethinking the Value of
    Network Pruning": ResNet-56-A (0.1, 0.1, 0.1), ResNet-56-B (0.6, 0.3, 0.1)); the structure then sets the
    sparsity. `skip` lists block indices (0-based across stages) left dense; counting the stem conv as layer 1,
    Li et al.'s layer L is conv1 of block (L - 2) // 2. Norms are taken over surviving weights.

    Zeroing a filter leaves its BN emitting a constant; `zero_pruned_bn` removes it, and `thin` builds the network
    without those channels.
    """
    blocks = _blocks(model)
    n_stages = blocks[-1][0] + 1
    if stage_ratios is None:
        stage_ratios = (fraction,) * n_stages
    elif fraction:
        raise ValueError(f"l1-filter takes fraction or stage_ratios, not both; got fraction={fraction}")
    if len(stage_ratios) != n_stages or not all(0 <= r < 1 for r in stage_ratios):
        raise ValueError(f"stage_ratios {tuple(stage_ratios)} invalid; allowed: {n_stages} shares in [0, 1)")
    skip, indices = set(skip), set(range(len(blocks)))
    if not skip <= indices:
        raise ValueError(f"skip {sorted(skip - indices)} invalid; allowed: block indices 0..{len(blocks) - 1}")
    plan = {}
    for i, (stage, prefix, _) in enumerate(blocks):
        name = f"{prefix}.conv1.weight"
        if i in skip:
            continue
        if name not in mask:
            raise ValueError(f"l1-filter prunes {name!r}, which the mask leaves out; allowed: masks that include it")
        alive = _filters(mask[name])
        r = round(stage_ratios[stage] * alive.numel())
        if r and r >= int(alive.sum()):
            raise ValueError(f"pruning {r} filters of {name!r} would leave none of its {int(alive.sum())} survivors")
        plan[name] = alive, r
    out = dict(mask)
    for name, (alive, r) in plan.items():
        keep = mask[name]
        norms = (model.get_parameter(name).detach().cpu() * keep).abs().flatten(1).sum(1)
        out[name] = keep & _lowest(alive, norms, r).view(-1, *[1] * (keep.dim() - 1))
    return Mask(model, out)


def nm_groupable(weight: torch.Tensor, m: int) -> bool:
    """Whether a weight's flattened input dimension splits into groups of m (a one-channel 3x3 stem's 9 does not)."""
    return weight[0].numel() % m == 0


def _nm(model: nn.Module, mask: Mask, fraction: float, rng: torch.Generator, *, n: int = 2, m: int = 4) -> Mask:
    """Semi-structured N:M: keep the n largest |w| survivors in every group of m consecutive input weights.

    Groups run along a weight's flattened input dimension (in_channels/groups * kh * kw for a conv, in_features for
    a linear layer). Layers whose input size is not a multiple of m are left unchanged, with a warning naming them.
    `fraction` is ignored: a dense eligible layer ends at sparsity exactly 1 - n/m.
    """
    if not (_int_at_least(n, 1) and _int_at_least(m, n)):
        raise ValueError(f"N:M needs integers 1 <= n <= m; got n={n}, m={m}")
    eligible = [k for k, t in mask.items() if nm_groupable(t, m)]
    skipped = [k for k in mask if k not in eligible]
    if skipped:
        warnings.warn(f"{n}:{m} pruning skips layers whose input size is not a multiple of {m}: {', '.join(skipped)}",
                      stacklevel=3)
    out = dict(mask)
    for k in eligible:
        keep = mask[k].reshape(-1, m)
        score = torch.where(keep, model.get_parameter(k).detach().abs().cpu().reshape(-1, m), -1.0)
        top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :n]
        out[k] = (keep & torch.zeros_like(keep).scatter_(1, top, True)).view_as(mask[k])
    return Mask(model, out)


CRITERIA: dict[str, Callable[..., Mask]] = {
    "gmp": _gmp,
    "layerwise": _layerwise,
    "random": _random,
    "random-layerwise": _random_layerwise,
    "l1-filter": _l1_filter,
    "nm": _nm,
}


def prune(model: nn.Module, criterion: str, fraction: float, seed: int = 0,
          mask: Mapping[str, torch.Tensor] | None = None, **opts) -> Mask:
    """A new mask with `fraction` of all the mask's weights removed from its survivors by `criterion`.

    mask: the current mask (default: dense, first and last layer included; pass Mask.dense(model, ...) to exclude
    them). seed: seeds the torch.Generator handed to the criterion (random criteria). opts: the criterion's options
    (l1-filter: stage_ratios, skip; nm: n, m). Raises ValueError, before any compute, for an unknown criterion or
    option, fraction outside [0, 1), or fraction above the current density. Neither model nor mask is changed.
    """
    criterion_fn = _resolve(CRITERIA, "criterion", criterion, opts)
    _check_fraction(fraction)
    return criterion_fn(model, _as_mask(model, mask), fraction, torch.Generator().manual_seed(seed), **opts)


def gmp_threshold(model: nn.Module, mask: Mapping[str, torch.Tensor] | None, fraction: float) -> float:
    """The |w| threshold GMP would use to prune `fraction` now: the largest magnitude it removes (0.0 if none).

    Every weight GMP removes has |w| <= threshold <= |w| of every weight it keeps.
    """
    _check_fraction(fraction)
    mask = _as_mask(model, mask)
    keep = _flat(mask.values())
    k = _count(keep, fraction, "the mask")
    return _flat(_magnitudes(model, mask).values())[keep].kthvalue(k).values.item() if k else 0.0


def absorb(model: nn.Module, mask: Mapping[str, torch.Tensor] | None, shed: Mapping[str, torch.Tensor],
           limit: int) -> Mask:
    """A new mask with the survivors marked in `shed` pruned too, at most `limit` of them, the smallest |w| first
    (ties to the earlier position): the cascade-aware schedule turns weights that shed into pruned ones, never
    beyond its target."""
    mask = _as_mask(model, mask)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit={limit!r} is invalid; allowed: an int >= 0")
    names = list(mask)
    candidates = _flat([mask[n] & shed[n].cpu() for n in names])
    score = torch.where(candidates, _flat(_magnitudes(model, mask).values()), torch.inf)
    take = smallest(score, min(limit, int(candidates.sum())))
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = mask[n] & ~take[start:start + size].view_as(mask[n])
        start += size
    return Mask(model, out)


# ------------------------------------------------------------------------------------------------ filter surgery
@torch.no_grad()
def zero_pruned_bn(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero gamma and beta of the BN after every pruned conv1 filter, in place.

    A zeroed filter still leaves its BN emitting the constant beta - gamma * mean / std, which the next conv turns
    into a bias; with gamma = beta = 0 the channel is exactly 0 in train and eval mode, so the masked network
    computes what `thin` builds. With ReLU after the BN these entries get zero gradient and stay 0 in training.
    """
    for _, prefix, block in _blocks(model):
        name = f"{prefix}.conv1.weight"
        if name in mask:
            bn = getattr(block, _inner_bn(block))
            dead = ~_filters(mask[name]).to(bn.weight.device)
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    return model


def thin(model: nn.Module, mask: Mapping[str, torch.Tensor], name: str, *, copy_weights: bool = False,
         **build_kw) -> nn.Module:
    """The filter-pruned network built without its pruned conv1 filters: models.build(name, mid_channels=...).

    Each block keeps as many inner channels as its conv1 has filters with a kept weight. build_kw must repeat the
    model's build options (in_channels, num_classes, width); every other tensor must match the model's, else
    ValueError. copy_weights=True copies the masked weights and BN statistics of the surviving channels, so the thin
    network computes the same function as the masked one after `zero_pruned_bn`; otherwise it is freshly
    initialised (training from scratch).
    """
    mask = Mask(model, mask)
    blocks = _blocks(model)
    keeps = [_filters(mask[f"{p}.conv1.weight"]) if f"{p}.conv1.weight" in mask
             else torch.ones(b.conv1.out_channels, dtype=torch.bool) for _, p, b in blocks]
    net = models.build(name, mid_channels=[int(k.sum()) for k in keeps], **build_kw)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    for k, keep in mask.items():
        state[k] = state[k] * keep.to(state[k].device)
    for (_, p, block), keep in zip(blocks, keeps):
        bn = _inner_bn(block)
        for k in ["conv1.weight", *(f"{bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var"))]:
            state[f"{p}.{k}"] = state[f"{p}.{k}"][keep.to(state[f"{p}.{k}"].device)]
        state[f"{p}.conv2.weight"] = state[f"{p}.conv2.weight"][:, keep.to(state[f"{p}.conv2.weight"].device)]
    target = net.state_dict()
    differ = sorted(set(state) ^ set(target)) + [k for k in target if k in state and state[k].shape != target[k].shape]
    if differ:
        raise ValueError(f"thin {name!r} differs from the model at {differ[0]!r}; "
                         f"allowed: the model's own build options (in_channels, num_classes, width)")
    if copy_weights:
        net.load_state_dict(state)
    return net


# ------------------------------------------------------------------------------------------------ schedules
def _one_shot(total_steps: int, s0: float, s1: float) -> list[tuple[int, float]]:
    """Everything at step 0."""
    return [(0, s1)]


def _iterative(total_steps: int, s0: float, s1: float, *, rounds: int) -> list[tuple[int, float]]:
    """`rounds` equal prunes of (s1 - s0) / rounds at steps floor(i * total_steps / rounds), training in between."""
    if not _int_at_least(rounds, 1) or rounds > total_steps:
        raise ValueError(f"rounds {rounds!r} invalid; allowed: integers in [1, total_steps={total_steps}]")
    return [(i * total_steps // rounds, s0 + (s1 - s0) * (i + 1) / rounds) for i in range(rounds)]


def _gradual(total_steps: int, s0: float, s1: float, *, t1: int, every: int, t0: int = 0) -> list[tuple[int, float]]:
    """Zhu & Gupta (2017): sparsity s1 + (s0 - s1)(1 - (t - t0)/(t1 - t0))^3 at t = t0, t0 + every, ... and t1."""
    if not (_int_at_least(t0, 0) and _int_at_least(t1, t0 + 1) and _int_at_least(every, 1)) or t1 >= total_steps:
        raise ValueError(f"gradual needs integers 0 <= t0 < t1 < total_steps and every >= 1; "
                         f"got t0={t0!r}, t1={t1!r}, total_steps={total_steps}, every={every!r}")
    return [(t, s1 + (s0 - s1) * (1 - (t - t0) / (t1 - t0)) ** 3) for t in [*range(t0, t1, every), t1]]


SCHEDULES: dict[str, Callable[..., list[tuple[int, float]]]] = {
    "one-shot": _one_shot,
    "iterative": _iterative,
    "gradual": _gradual,
}


def schedule(kind: str, total_steps: int, sparsity: float, *, initial: float = 0.0, num_weights: int | None = None,
             **opts) -> list[tuple[int, float]]:
    """Prune events (step, fraction) taking a run of `total_steps` optimizer steps from `initial` to `sparsity`.

    Before optimizer step `step` (0-based) the loop calls prune(..., fraction, mask=current). Fractions are
    increments of the cumulative target, so they sum to sparsity - initial; steps with no increment are dropped.
    Kinds and their opts: "one-shot" (all at step 0), "iterative" (rounds), "gradual" (t1, every, t0=0).
    prune rounds each event to whole weights; pass num_weights=mask.num_total() to round the cumulative targets
    instead, so rounding never accumulates and the run ends within one weight of `sparsity`.
    """
    kind_fn = _resolve(SCHEDULES, "schedule", kind, opts)
    if not _int_at_least(total_steps, 1):
        raise ValueError(f"total_steps {total_steps!r} invalid; allowed: integers >= 1")
    if not 0 <= initial <= sparsity < 1:
        raise ValueError(f"need 0 <= initial <= sparsity < 1; got initial={initial}, sparsity={sparsity}")
    if num_weights is not None and not _int_at_least(num_weights, 1):
        raise ValueError(f"num_weights {num_weights!r} invalid; allowed: None or integers >= 1")
    scale = num_weights or 1
    level = (lambda s: round(s * num_weights)) if num_weights else (lambda s: s)
    events, done = [], level(initial)
    for step, target in kind_fn(total_steps, initial, sparsity, **opts):
        if level(target) > done:
            events.append((step, (level(target) - done) / scale))
            done = level(target)
    return events
