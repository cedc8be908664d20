"""Run kind `compare`: two trained networks of one architecture, side by side.

Linear mode connectivity (Frankle et al. 2020; Zhou et al. 2023's landscape regimes): the networks
(1 - alpha) a + alpha b at `points` evenly spaced alphas, with BatchNorm statistics recomputed on the training
images at each point (interpolated running statistics describe neither network), evaluated on those training
images and on the test set. The barrier is the largest rise of the training error (and loss) above the straight line between
the two ends; `barrier_signed_train_err` is Zhou et al.'s form, (e0 + e1) / 2 - e(t*) at the t* farthest from the
ends' mean (negative: a barrier). Output similarity: the share of test images both classify alike, and the linear
CKA (Kornblith et al. 2019) of their softmax outputs on the same training images, in float64 (Zhou et al.'s
measure; the biased estimator's O(1/n) upward bias asks for n in the thousands). The training images are the first
`images` (default: all) of the unaugmented training split: eleven BatchNorm passes and evaluations over all of it
cost more than the two trainings being compared.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..data import Loader
from ..store import Store
from ..train import default_device, evaluate, reset_bn
from .base import Run, register, splits

BATCH = 250  # forward passes only: twice as fast per image as 1,000 on the book's CPUs (measured on a Zen 3)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (examples x features) matrices: 1 for the same representation up to rotation,
    isotropic scale and shift; near 0 for unrelated ones."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(0), y - y.mean(0)
    return float((y.T @ x).square().sum() / ((x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()))


def barrier(alphas: list[float], values: list[float]) -> float:
    """The largest rise of `values` above the straight line between its two ends (0 when it never rises)."""
    a0, a1 = values[0], values[-1]
    return max(0.0, *(v - ((1 - a) * a0 + a * a1) for a, v in zip(alphas, values)))


def signed_barrier(values: list[float]) -> float:
    """Zhou et al.'s barrier: the ends' mean minus the value at the point farthest from it (interior points only;
    0 with none). Negative when the path rises: a loss barrier."""
    mid = (values[0] + values[-1]) / 2
    inner = values[1:-1]
    return mid - max(inner, key=lambda v: abs(mid - v)) if inner else 0.0


@torch.no_grad()
def interpolate(a: torch.nn.Module, b: torch.nn.Module, alpha: float, into: torch.nn.Module) -> torch.nn.Module:
    """`into` holding (1 - alpha) a + alpha b in every floating tensor (integer buffers are a's)."""
    sa, sb = a.state_dict(), b.state_dict()
    into.load_state_dict({k: torch.lerp(v, sb[k], alpha) if v.is_floating_point() else v for k, v in sa.items()})
    return into


@register
@dataclass(frozen=True)
class CompareRun(Run):
    """Linear mode connectivity and output similarity of the trained networks of runs `a` and `b`."""

    kind: ClassVar[str] = "compare"
    version: ClassVar[int] = 2  # 2: CKA on training softmax outputs (1: test logits); no version-1 record was kept
    a: Run
    b: Run
    points: int = 11
    images: int | None = None  # the training images used: None, every one
    schema: ClassVar[dict[str, type]] = {"alphas": list, "train_err": list, "barrier_train_err": float,
                                         "barrier_train_loss": float, "barrier_test_err": float,
                                         "barrier_signed_train_err": float, "agreement": float,
                                         "cka": float}

    def __post_init__(self):
        if not isinstance(self.points, int) or self.points < 2:
            raise ValueError(f"points={self.points!r} is invalid; allowed: an int >= 2")
        size = self.a.data.train_size
        n = self.images
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= (size or n)):
            raise ValueError(f"images={n!r} is invalid; allowed: None (every training image) or an int in "
                             f"[2, {size or 'the training set size'}]")
        if self.a.data != self.b.data:
            raise ValueError(f"runs a and b are trained on different data ({self.a.data} and {self.b.data}); "
                             "allowed: two runs on the same data")

    @property
    def data(self):
        return self.a.data

    def deps(self) -> tuple[Run, ...]:
        return (self.a, self.b)

    def labels(self) -> dict:
        return {**{f"a_{k}": v for k, v in self.a.labels().items()}, **{f"b_{k}": v for k, v in self.b.labels().items()}}

    def cost(self) -> float:
        """Images passed forward (BN reset and evaluation at every point, both ends' outputs), as training images at
        a third of the cost each."""
        train_set, test_set = self.splits()
        return (self.points * (2 * len(train_set) + len(test_set)) + 2 * len(train_set) + 2 * len(test_set)) / 3

    def splits(self):
        """The training images used (the first `images`) and the test set."""
        train_set, test_set = splits(self.data)
        return (train_set if self.images is None else train_set.subset(torch.arange(self.images))), test_set

    def compute(self, store: Store, quiet: bool = True) -> dict:
        a, b = self.a.network(store), self.b.network(store)
        shapes = {k: v.shape for k, v in a.state_dict().items()}
        if shapes != {k: v.shape for k, v in b.state_dict().items()}:
            raise ValueError(f"runs {self.a.kind} and {self.b.kind} have different architectures; "
                             "allowed: two networks of one architecture")
        train_set, test_set = self.splits()
        stats, device = splits(self.data)[0].stats(), default_device()
        loader = Loader(train_set, BATCH, train=False, stats=stats, device=device)
        alphas = [i / (self.points - 1) for i in range(self.points)]
        mixed = copy.deepcopy(a).to(device)
        a, b = a.to(device), b.to(device)
        curves = {"train_loss": [], "train_err": [], "test_loss": [], "test_err": []}
        for alpha in alphas:
            interpolate(a, b, alpha, mixed)
            reset_bn(mixed, loader)
            for name, split in (("train", train_set), ("test", test_set)):
                loss, acc = evaluate(mixed, split, stats, device, batch_size=BATCH)
                curves[f"{name}_loss"].append(loss)
                curves[f"{name}_err"].append(1 - acc)
        with torch.no_grad():
            a.eval(), b.eval()
            logits = [torch.cat([net(x) for x, _ in Loader(test_set, BATCH, train=False, stats=stats,
                                                           device=device).epoch()]) for net in (a, b)]
            probs = [torch.cat([net(x) for x, _ in loader.epoch()]).double().softmax(1) for net in (a, b)]
        return {"alphas": alphas, **curves,
                "barrier_train_err": barrier(alphas, curves["train_err"]),
                "barrier_train_loss": barrier(alphas, curves["train_loss"]),
                "barrier_test_err": barrier(alphas, curves["test_err"]),
                "barrier_signed_train_err": signed_barrier(curves["train_err"]),
                "agreement": float((logits[0].argmax(1) == logits[1].argmax(1)).float().mean()),
                "cka": linear_cka(probs[0], probs[1])}
