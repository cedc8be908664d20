"""The shedding tracker: what happens to the weights that survived pruning.

Azarian & Porikli give no definitions, so every one is a parameter and several are recorded side
by side (see the book's methods chapter):

- ``shed_tau0``: survivors with |w| below tau0, the magnitude threshold in force at pruning time
  (for random pruning, the GMP threshold at the same fraction);
- ``shed_abs@t``: survivors with |w| < t, for absolute thresholds t;
- ``shed_rms@f``: survivors with |w| < f * RMS(layer's survivors): blind to a global shrinkage of
  scale, which absolute thresholds mistake for shedding;
- ``dead_bn``: BatchNorm channels with |gamma| below a threshold; ``dead_filters``: output filters
  whose (masked) norm is below a threshold;
- ``norm``: each layer's weight norm;
- ``jaccard@s`` / ``retained@s``: overlap between the set GMP would keep at sparsity s now and the
  set it kept (or would have kept) at pruning time;
- ``effective_sparsity``: pruned plus shed (under ``TrackerConfig.effective``), and at the end
  ``removal_acc``: test accuracy after actually zeroing the shed weights, with no further training.

Rows are tidy: (epoch, step, layer, metric, value), layer "global" for network-wide figures.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .pruning import smallest
from .train import Callback, State, evaluate

COLUMNS = ("epoch", "step", "layer", "metric", "value")


@dataclass(frozen=True)
class TrackerConfig:
    abs_thresholds: tuple[float, ...] = (1e-3, 1e-2)
    rms_fractions: tuple[float, ...] = (0.05, 0.2)
    gamma_threshold: float = 1e-2
    filter_threshold: float = 1e-2
    overlap_sparsities: tuple[float, ...] = (0.5, 0.8)
    effective: str = "tau0"
    per_layer: bool = True
    every_steps: int = 0

    def __post_init__(self):
        kind, _, value = self.effective.partition(":")
        if not (self.effective == "tau0" or (kind in ("abs", "rms") and _is_float(value))):
            raise ValueError(f"effective={self.effective!r} is invalid; allowed: tau0, abs:<threshold>, rms:<fraction>")
        if not all(0 < s < 1 for s in self.overlap_sparsities):
            raise ValueError(f"overlap_sparsities={self.overlap_sparsities!r} is invalid; allowed: values in (0, 1)")


def _is_float(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def gmp_keep(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """The set global magnitude pruning would keep at `sparsity` (ties pruned at the earlier position, as `gmp`)."""
    flat = torch.cat([w.abs().flatten().float() for w in weights.values()])
    chosen = ~smallest(flat, round(sparsity * flat.numel()))
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = chosen[start:start + w.numel()].view_as(w)
        start += w.numel()
    return out


class Tracker(Callback):
    """Records shedding measures at the start (epoch 0), every epoch end and every `every_steps` steps.

    `mask0` is the mask right after pruning (its names say which weights are tracked); the live
    mask of the run is used when it exists. `reference` are the weights at pruning time *before*
    pruning, for the GMP-overlap measure (defaults to the weights at the start).
    """

    def __init__(self, cfg: TrackerConfig, mask0, tau0: float, test_set=None, reference=None):
        self.cfg, self.mask0, self.tau0, self.test_set = cfg, mask0, float(tau0), test_set
        self.every_steps = cfg.every_steps
        self.reference = reference
        self.keep0: dict[float, dict[str, torch.Tensor]] = {}
        self.rows: list[list] = []

    def _weights(self, state: State) -> dict[str, torch.Tensor]:
        params = dict(state.model.named_parameters())
        return {name: params[name].detach().float().cpu() for name in self.mask0}

    def _mask(self, state: State):
        return state.mask if state.mask is not None else self.mask0

    def on_start(self, state: State) -> None:
        ref = self.reference if self.reference is not None else self._weights(state)
        self.keep0 = {s: gmp_keep(ref, s) for s in self.cfg.overlap_sparsities}
        self._record(state)

    def on_step(self, state: State) -> None:
        self._record(state)

    def on_epoch_end(self, state: State) -> None:
        self._record(state, final=state.epoch == state.cfg.epochs)

    def shed_masks(self, state: State) -> dict[str, torch.Tensor]:
        """Survivors counted as shed under the configured `effective` definition."""
        weights, mask = self._weights(state), self._mask(state)
        kind, _, value = self.cfg.effective.partition(":")
        out = {}
        for name, w in weights.items():
            alive = mask[name].cpu()
            if kind == "tau0":
                t = self.tau0
            elif kind == "abs":
                t = float(value)
            else:
                t = float(value) * _rms(w, alive)
            out[name] = alive & (w.abs() < t)
        return out

    def _record(self, state: State, final: bool = False) -> None:
        cfg, weights, mask = self.cfg, self._weights(state), self._mask(state)
        rows, tot = [], {}

        def add(layer: str, metric: str, value: float) -> None:
            rows.append([state.epoch, state.step, layer, metric, value])

        def count(metric: str, num: float, den: float, layer: str) -> None:
            n, d = tot.get(metric, (0.0, 0.0))
            tot[metric] = (n + num, d + den)
            if cfg.per_layer:
                add(layer, metric, num / den if den else 0.0)

        for name, w in weights.items():
            alive = mask[name].cpu()
            a = w.abs()
            n_alive = float(alive.sum())
            count("shed_tau0", float((alive & (a < self.tau0)).sum()), n_alive, name)
            for t in cfg.abs_thresholds:
                count(f"shed_abs@{t:g}", float((alive & (a < t)).sum()), n_alive, name)
            rms = _rms(w, alive)
            for f in cfg.rms_fractions:
                count(f"shed_rms@{f:g}", float((alive & (a < f * rms)).sum()), n_alive, name)
            if w.ndim == 4:
                norms = (w * alive).flatten(1).norm(dim=1)
                count("dead_filters", float((norms < cfg.filter_threshold).sum()), float(len(norms)), name)
            count("pruned", float((~alive).sum()), float(w.numel()), name)
            if cfg.per_layer:
                add(name, "norm", float((w * alive).norm()))
        for name, module in state.model.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                g = module.weight.detach().abs()
                count("dead_bn", float((g < cfg.gamma_threshold).sum()), float(g.numel()), name)
        for metric, (num, den) in tot.items():
            add("global", metric, num / den if den else 0.0)
        shed = self.shed_masks(state)
        total = sum(w.numel() for w in weights.values())
        add("global", "effective_sparsity",
            (sum(float((~mask[n].cpu()).sum()) for n in weights) + sum(float(s.sum()) for s in shed.values())) / total)
        for s, keep0 in self.keep0.items():
            now = gmp_keep({n: w * mask[n].cpu() for n, w in weights.items()}, s)
            inter = sum(float((now[n] & keep0[n]).sum()) for n in weights)
            union = sum(float((now[n] | keep0[n]).sum()) for n in weights)
            kept0 = sum(float(keep0[n].sum()) for n in weights)
            add("global", f"jaccard@{s:g}", inter / union if union else 1.0)
            add("global", f"retained@{s:g}", inter / kept0 if kept0 else 1.0)
        if final and self.test_set is not None:
            add("global", "removal_acc", self.removal_accuracy(state, shed))
        self.rows.extend(rows)

    def removal_accuracy(self, state: State, shed: dict[str, torch.Tensor]) -> float:
        """Test accuracy with the shed weights set to 0, no further training; weights are restored after."""
        params = dict(state.model.named_parameters())
        saved = {n: params[n].detach().clone() for n in shed}
        with torch.no_grad():
            for n, s in shed.items():
                params[n].masked_fill_(s.to(params[n].device), 0.0)
        acc = evaluate(state.model, self.test_set, state.stats, state.device, state.cfg.precision)[1]
        with torch.no_grad():
            for n, w in saved.items():
                params[n].copy_(w)
        return acc

    def state_dict(self) -> dict:
        return {"rows": self.rows, "keep0": {str(s): k for s, k in self.keep0.items()}}

    def load_state_dict(self, d: dict) -> None:
        self.rows = d["rows"]
        # A checkpoint restored with map_location=cuda brings these back on the GPU; they are compared on the CPU.
        self.keep0 = {float(s): {n: t.cpu() for n, t in k.items()} for s, k in d["keep0"].items()}


def _rms(w: torch.Tensor, alive: torch.Tensor) -> float:
    n = alive.sum()
    return float((w[alive].pow(2).sum() / n).sqrt()) if n else 0.0


def to_frame(records) -> pd.DataFrame:
    """Tidy DataFrame (epoch, step, layer, metric, value) from tracker rows (lists or dicts)."""
    records = list(records)
    if records and isinstance(records[0], dict):
        return pd.DataFrame.from_records(records, columns=list(COLUMNS))
    return pd.DataFrame(records, columns=list(COLUMNS))
