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
  set it kept (or would have kept) at pruning time, per layer too (with ``per_layer``);
- ``gmp_jaccard`` (with ``TrackerConfig.gmp_jaccard``): Jaccard index between the weights still in use (kept and
  not shed) and the set GMP keeps of the pruning-time weights at the same density: how far a criterion's kept
  set, thinned by shedding, has moved toward the set GMP would have chosen;
- ``nm_under@n:m`` / ``nm_over@n:m`` (with ``TrackerConfig.nm_groups``): the share of groups of m consecutive input
  weights (as the ``nm`` criterion groups them) holding fewer / more than n weights still in use (kept and not
  shed), over the layers whose input size is a multiple of m (the one-channel stem conv is not);
- ``effective_sparsity``: pruned plus shed (under ``TrackerConfig.effective``), and at the end
  ``removal_acc``: test accuracy after actually zeroing the shed weights, with no further training.

Rows are tidy: (epoch, step, layer, metric, value), layer "global" for network-wide figures.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import pandas as pd
import torch

from . import pruning
from .pruning import smallest
from .train import Callback, State, evaluate

COLUMNS = ("epoch", "step", "layer", "metric", "value")

# ------------------------------------------------------------------------------------------- the registries
# A shedding definition maps (layer's weights, its survivor mask, parameter, tracker) to the threshold below
# which a survivor counts as shed. It is named in a spec, "name" or "name:parameter" (see `TrackerConfig`).
DEFINITIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, float | None, "Tracker"], float]] = {}
# A dead-channel criterion yields (layer, dead, total) counts from the live model and the tracked weights.
CHANNELS: dict[str, Callable[["Tracker", State, dict, dict], Iterable[tuple[str, float, float]]]] = {}


def definition(name: str):
    """Register a shedding definition; it can then be recorded (`TrackerConfig.definitions`) or drive
    `effective`. Adding one is this decorator on one function."""
    def add(fn):
        DEFINITIONS[name] = fn
        return fn
    return add


def channel(name: str):
    """Register a dead-channel criterion, recorded under its name in every run."""
    def add(fn):
        CHANNELS[name] = fn
        return fn
    return add


@definition("tau0")
def _below_tau0(w, alive, param, tracker) -> float:
    """GMP's threshold at pruning time (for other criteria: GMP's at the same fraction)."""
    return tracker.tau0


@definition("abs")
def _below_abs(w, alive, param, tracker) -> float:
    return param


@definition("rms")
def _below_rms(w, alive, param, tracker) -> float:
    """A fraction of the layer's survivor RMS: blind to a global shrinkage of scale."""
    return param * _rms(w, alive)


@definition("gmp")
def _below_gmp(w, alive, param, tracker) -> float:
    """GMP's threshold at fraction `param` of the pruning-time weights: tau0 of a run pruned at `param`."""
    return tracker.gmp_tau(param)


@channel("dead_filters")
def _dead_filters(tracker, state, weights, mask):
    for name, w in weights.items():
        if w.ndim == 4:
            norms = (w * mask[name].cpu()).flatten(1).norm(dim=1)
            yield name, float((norms < tracker.cfg.filter_threshold).sum()), float(len(norms))


@channel("dead_bn")
def _dead_bn(tracker, state, weights, mask):
    for name, module in state.model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            g = module.weight.detach().abs()
            yield name, float((g < tracker.cfg.gamma_threshold).sum()), float(g.numel())


def parse(spec: str) -> tuple[str, float | None]:
    """("rms", 0.05) from "rms:0.05"; "tau0" takes no parameter, every other definition one float >= 0."""
    name, sep, value = spec.partition(":")
    if name not in DEFINITIONS or (name == "tau0") == bool(sep) or (name != "tau0" and not _is_float(value)):
        allowed = ", ".join(n if n == "tau0" else f"{n}:<float >= 0>" for n in DEFINITIONS)
        raise ValueError(f"shedding definition {spec!r} is invalid; allowed: {allowed}")
    return name, None if name == "tau0" else float(value)


def metric_name(spec: str) -> str:
    """The tracker metric of a definition: shed_tau0, shed_abs@0.001, shed_rms@0.05, shed_gmp@0.1."""
    name, param = parse(spec)
    return f"shed_{name}" if param is None else f"shed_{name}@{param:g}"


# Fixed bin edges (log10 |w| and log10 |w|/RMS, 8 bins a decade) of the per-layer histograms that
# `TrackerConfig.summaries` keeps: any threshold inside them can be back-filled from stored records.
SUMMARY_EDGES = {"abs": [e / 8 for e in range(-48, 9)], "rms": [e / 8 for e in range(-32, 9)]}


@dataclass(frozen=True)
class TrackerConfig:
    """What the tracker records. `definitions` adds shedding definitions (specs, see `parse`) to the ones
    always recorded (tau0, and abs/rms at the listed values); `kept_fractions` records, for each f, the share
    of the weights GMP would keep at f (at pruning time) that are now below GMP's threshold at f: for a
    GMP-pruned run that is its survivors' shed share, for the unpruned control it is the same set's drift
    across the threshold with no pruning. `kept_random` records the same for the set that global random pruning at
    f keeps (drawn with the run's pruning seed), against the same threshold: the survivors of a random-pruned run,
    and the same set in its control; `kept_layerwise` likewise for the set that layer-uniform magnitude pruning
    at f keeps of the pruning-time weights. `summaries` keeps per-layer histograms of the survivors' |w| and
    |w|/RMS (`SUMMARY_EDGES`) at every record, for back-filling new thresholds."""

    abs_thresholds: tuple[float, ...] = (1e-3, 1e-2)
    rms_fractions: tuple[float, ...] = (0.05, 0.2)
    gamma_threshold: float = 1e-2
    filter_threshold: float = 1e-2
    overlap_sparsities: tuple[float, ...] = (0.5, 0.8)
    effective: str = "tau0"
    per_layer: bool = True
    every_steps: int = 0
    definitions: tuple[str, ...] = ()
    kept_fractions: tuple[float, ...] = ()
    kept_random: tuple[float, ...] = ()
    kept_layerwise: tuple[float, ...] = ()
    gmp_jaccard: bool = False
    nm_groups: tuple[str, ...] = ()
    summaries: bool = False

    def __post_init__(self):
        for spec in (self.effective, *self.definitions):
            parse(spec)
        for spec in self.nm_groups:
            nm_spec(spec)
        for name, values in (("overlap_sparsities", self.overlap_sparsities), ("kept_fractions", self.kept_fractions),
                             ("kept_random", self.kept_random), ("kept_layerwise", self.kept_layerwise)):
            if not all(0 < s < 1 for s in values):
                raise ValueError(f"{name}={values!r} is invalid; allowed: values in (0, 1)")

    def specs(self) -> list[str]:
        """Every shedding definition recorded, in order, without repeats."""
        return list(dict.fromkeys(["tau0", *(f"abs:{t:g}" for t in self.abs_thresholds),
                                   *(f"rms:{f:g}" for f in self.rms_fractions), *self.definitions]))


def _is_float(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def nm_spec(spec: str) -> tuple[int, int]:
    """(n, m) from "n:m", e.g. "2:4" (integers 1 <= n <= m)."""
    try:
        n, m = map(int, spec.split(":"))
        if not 1 <= n <= m:
            raise ValueError
    except ValueError:
        raise ValueError(f"nm_groups entry {spec!r} is invalid; allowed: 'n:m' with integers 1 <= n <= m, "
                         "e.g. '2:4'") from None
    return n, m


def gmp_keep(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """The set global magnitude pruning would keep at `sparsity` (ties pruned at the earlier position, as `gmp`)."""
    flat = torch.cat([w.abs().flatten().float() for w in weights.values()])
    chosen = ~smallest(flat, round(sparsity * flat.numel()))
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = chosen[start:start + w.numel()].view_as(w)
        start += w.numel()
    return out


def gmp_jaccard(reference: dict[str, torch.Tensor], mask, shed: dict[str, torch.Tensor]) -> float:
    """Jaccard index between the weights in use (kept by `mask`, not in `shed`) and the same number of weights
    with the largest |w| in `reference`, the pruning-time weights (GMP's choice at that density, ties as
    `gmp_keep`). Pruned weights are 0 now, so GMP's choice among the current weights would be the kept set itself."""
    use = {n: mask[n].cpu() & ~shed[n] for n in reference}
    total = sum(w.numel() for w in reference.values())
    used = sum(int(u.sum()) for u in use.values())
    if not used:
        return 1.0
    top = gmp_keep(reference, (total - used) / total)
    inter = sum(int((use[n] & top[n]).sum()) for n in reference)
    return inter / (2 * used - inter)


def histogram(values: torch.Tensor, kind: str) -> list[int]:
    """Counts of log10(values) in the bins of `SUMMARY_EDGES[kind]`, with an underflow (zeros too) and an
    overflow bin at the ends."""
    edges = torch.tensor(SUMMARY_EDGES[kind], dtype=torch.float64)
    idx = torch.bucketize(values.double().log10(), edges, right=True)
    return torch.bincount(idx, minlength=len(edges) + 1).tolist()


def share_below(counts, kind: str, threshold: float) -> float:
    """Back-filled share of a histogram below `threshold` (|w| for "abs", |w|/RMS for "rms"): exact at the bin
    edges, interpolated linearly in log10 |w| inside a bin. A threshold outside the edges cannot be back-filled."""
    edges, total = SUMMARY_EDGES[kind], sum(counts)
    x = math.log10(threshold) if threshold > 0 else -math.inf
    if not edges[0] <= x <= edges[-1]:
        raise ValueError(f"threshold={threshold!r} cannot be back-filled from {kind} histograms; allowed: "
                         f"{10 ** edges[0]:g} to {10 ** edges[-1]:g}")
    if not total:
        return 0.0
    i = min(bisect.bisect_right(edges, x), len(edges) - 1)  # x lies in bin i = [edges[i-1], edges[i])
    return (sum(counts[:i]) + counts[i] * (x - edges[i - 1]) / (edges[i] - edges[i - 1])) / total


class Tracker(Callback):
    """Records shedding measures at the start (epoch 0), every epoch end and every `every_steps` steps.

    `mask0` is the mask right after pruning (its names say which weights are tracked); the live
    mask of the run is used when it exists. `reference` are the weights at pruning time *before*
    pruning, for the GMP-overlap measure (defaults to the weights at the start). `seed` is the run's pruning
    seed, which draws the random kept sets (`TrackerConfig.kept_random`) as the random criterion draws its mask.
    `bn_from` recomputes the BatchNorm statistics on that split before the removal accuracy (`train.evaluate`).
    """

    phase = "tracker"

    def __init__(self, cfg: TrackerConfig, mask0, tau0: float, test_set=None, reference=None, seed: int = 0,
                 bn_from=None):
        self.cfg, self.mask0, self.tau0, self.test_set, self.bn_from = cfg, mask0, float(tau0), test_set, bn_from
        self.every_steps = cfg.every_steps
        self.reference, self.seed = reference, seed
        self.keep0: dict[float, dict[str, torch.Tensor]] = {}
        self.kept: dict[str, tuple[float, dict[str, torch.Tensor]]] = {}  # metric -> (f, the kept set)
        self.taus: dict[float, float] = {}
        self.rows: list[list] = []
        self.summaries: list[list] = []

    def _weights(self, state: State) -> dict[str, torch.Tensor]:
        params = dict(state.model.named_parameters())
        return {name: params[name].detach().float().cpu() for name in self.mask0}

    def _mask(self, state: State):
        return state.mask if state.mask is not None else self.mask0

    def on_start(self, state: State) -> None:
        if self.reference is None:
            self.reference = self._weights(state)
        self.keep0 = {s: gmp_keep(self.reference, s) for s in self.cfg.overlap_sparsities}
        self.kept = {f"kept_shed@{f:g}": (f, gmp_keep(self.reference, f)) for f in self.cfg.kept_fractions}
        for f in self.cfg.kept_random:  # random's draw does not depend on the weights, only on the shapes and seed
            keep = pruning.prune(state.model, "random", f, seed=self.seed)
            self.kept[f"kept_shed_random@{f:g}"] = (f, {n: keep[n].cpu() for n in self.mask0})
        for f in self.cfg.kept_layerwise:  # per layer, as `pruning`'s layerwise criterion chooses
            self.kept[f"kept_shed_layerwise@{f:g}"] = (f, {n: gmp_keep({n: w}, f)[n]
                                                           for n, w in self.reference.items()})
        self.record(state)

    def on_step(self, state: State) -> None:
        self.record(state)

    def on_epoch_end(self, state: State) -> None:
        self.record(state, final=state.epoch == state.cfg.epochs)

    def gmp_tau(self, fraction: float) -> float:
        """GMP's threshold at `fraction` of the pruning-time weights: the largest magnitude it removes."""
        if fraction not in self.taus:
            keep = gmp_keep(self.reference, fraction)
            self.taus[fraction] = max((float(w.abs()[~keep[n]].max()) for n, w in self.reference.items()
                                       if (~keep[n]).any()), default=0.0)
        return self.taus[fraction]

    def shed_masks(self, state: State, spec: str | None = None) -> dict[str, torch.Tensor]:
        """Survivors counted as shed under `spec` (the configured `effective` definition by default)."""
        name, param = parse(spec or self.cfg.effective)
        threshold = DEFINITIONS[name]
        out = {}
        for n, w in self._weights(state).items():
            alive = self._mask(state)[n].cpu()
            out[n] = alive & (w.abs() < threshold(w, alive, param, self))
        return out

    def record(self, state: State, final: bool = False) -> None:
        """Append one row per (layer, metric) for the current weights (and summaries when configured)."""
        cfg, weights, mask = self.cfg, self._weights(state), self._mask(state)
        rows, tot = [], {}

        def add(layer: str, metric: str, value: float) -> None:
            rows.append([state.epoch, state.step, layer, metric, value])

        def count(metric: str, num: float, den: float, layer: str) -> None:
            n, d = tot.get(metric, (0.0, 0.0))
            tot[metric] = (n + num, d + den)
            if cfg.per_layer:
                add(layer, metric, num / den if den else 0.0)

        specs = [(metric_name(spec), *parse(spec)) for spec in cfg.specs()]
        for name, w in weights.items():
            alive = mask[name].cpu()
            a, n_alive = w.abs(), float(alive.sum())
            for metric, definition_name, param in specs:
                t = DEFINITIONS[definition_name](w, alive, param, self)
                count(metric, float((alive & (a < t)).sum()), n_alive, name)
            for metric, (f, kept) in self.kept.items():
                keep = kept[name]
                count(metric, float((keep & ~(alive & (a >= self.gmp_tau(f)))).sum()), float(keep.sum()), name)
            count("pruned", float((~alive).sum()), float(w.numel()), name)
            if cfg.per_layer:
                add(name, "norm", float((w * alive).norm()))
            if cfg.summaries:
                rms = _rms(w, alive)
                self.summaries.append([state.epoch, state.step, name, "abs", histogram(a[alive], "abs")])
                self.summaries.append([state.epoch, state.step, name, "rms",
                                       histogram(a[alive] / rms if rms else a[alive], "rms")])
        for criterion, measure in CHANNELS.items():
            for layer, dead, total in measure(self, state, weights, mask):
                count(criterion, dead, total, layer)
        for metric, (num, den) in tot.items():
            add("global", metric, num / den if den else 0.0)
        shed = self.shed_masks(state)
        total = sum(w.numel() for w in weights.values())
        add("global", "effective_sparsity",
            (sum(float((~mask[n].cpu()).sum()) for n in weights) + sum(float(s.sum()) for s in shed.values())) / total)
        def share(metric: str, parts: dict[str, tuple[float, float]], empty: float) -> None:
            """Per layer (with `per_layer`) and over the network: numerator over denominator (`empty` if it is 0)."""
            total = (sum(num for num, _ in parts.values()), sum(den for _, den in parts.values()))
            for layer, (num, den) in [*(parts.items() if cfg.per_layer else ()), ("global", total)]:
                add(layer, metric, num / den if den else empty)

        if cfg.gmp_jaccard:
            add("global", "gmp_jaccard", gmp_jaccard(self.reference, mask, shed))
        for s in cfg.overlap_sparsities:
            keep0 = self.keep0[s]
            now = gmp_keep({n: w * mask[n].cpu() for n, w in weights.items()}, s)
            inter = {n: float((now[n] & keep0[n]).sum()) for n in weights}
            share(f"jaccard@{s:g}", {n: (inter[n], float((now[n] | keep0[n]).sum())) for n in weights}, 1.0)
            share(f"retained@{s:g}", {n: (inter[n], float(keep0[n].sum())) for n in weights}, 1.0)
        use = {n: mask[n].cpu() & ~shed[n] for n in weights}
        for spec in cfg.nm_groups:
            n_, m_ = nm_spec(spec)
            live = {n: u.reshape(-1, m_).sum(1) for n, u in use.items() if pruning.nm_groupable(u, m_)}
            share(f"nm_under@{spec}", {n: (float((g < n_).sum()), float(g.numel())) for n, g in live.items()}, 0.0)
            share(f"nm_over@{spec}", {n: (float((g > n_).sum()), float(g.numel())) for n, g in live.items()}, 0.0)
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
        acc = evaluate(state.model, self.test_set, state.stats, state.device, state.cfg.precision,
                       bn_from=self.bn_from)[1]
        with torch.no_grad():
            for n, w in saved.items():
                params[n].copy_(w)
        return acc

    def state_dict(self) -> dict:
        return {"rows": self.rows, "summaries": self.summaries, "keep0": {str(s): k for s, k in self.keep0.items()},
                "kept": {m: [f, k] for m, (f, k) in self.kept.items()}}

    def load_state_dict(self, d: dict) -> None:
        self.rows, self.summaries = d["rows"], d.get("summaries", [])
        # A checkpoint restored with map_location=cuda brings these back on the GPU; they are compared on the CPU.
        self.keep0 = {float(s): {n: t.cpu() for n, t in k.items()} for s, k in d["keep0"].items()}
        kept = {m: v if isinstance(v, (list, tuple)) else (float(m), v)  # before kept_random: {str(f): set}
                for m, v in d.get("kept", {}).items()}
        self.kept = {m if m.startswith("kept_") else f"kept_shed@{f:g}": (f, {n: t.cpu() for n, t in k.items()})
                     for m, (f, k) in kept.items()}


def _rms(w: torch.Tensor, alive: torch.Tensor) -> float:
    n = alive.sum()
    return float((w[alive].pow(2).sum() / n).sqrt()) if n else 0.0


def to_frame(records) -> pd.DataFrame:
    """Tidy DataFrame (epoch, step, layer, metric, value) from tracker rows (lists or dicts)."""
    records = list(records)
    if records and isinstance(records[0], dict):
        return pd.DataFrame.from_records(records, columns=list(COLUMNS))
    return pd.DataFrame(records, columns=list(COLUMNS))
