"""What `cascade bench` measures (the full plan, or --quick), its goals, and the settings every measurement shares."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

from ..store import REPO
from ..train import TrainConfig

# MobileNetV2 (CIFAR variant) at width 8 (width_mult 0.25), the width the architectures experiment trains on CPU;
# at the default 32 a step is several times slower.
MODELS = {"resnet8": 16, "resnet20": 16, "mobilenetv2": 8}
FRACTION = 0.1
OUT_DIR = REPO / "results" / "bench"
COMPILE_LIMIT_S = 120
# sweep_over_step: a sweep's efficiency over its train step's roofline fraction (overheads <= 25%);
# peak_rss_mb: of every sweep worker, so that many fit on a bigger machine.
GOALS = {"mask_overhead": "<= 0.03", "tracker_overhead": "<= 0.01", "sweep_over_step": ">= 0.75",
         "peak_rss_mb": "<= 2048"}
SWEEP_WORKERS = 2  # what `make book` runs with on this project's 2-core machines
DASK_CHAPTER, DASK_WORKERS = "architectures", (1, 2)  # the shortest chapter slice



@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run (written to results/bench) or --quick (a smoke test, < 60 s)."""

    batch_size: int
    steps: int  # optimizer steps per timed repeat
    repeats: int
    gemm: int  # side of the square GEMM for the peak
    levers: bool  # also measure what each lever gives, on the paper model (worker counts, memory format, threads)
    compile: bool
    procs_s: float  # measuring window of the processes-vs-threads test; 0 skips it
    sweeps: tuple[str, ...] = ()  # chapters whose sweep slice is computed and timed
    sweep_profile: str = "paper"
    sweep_seeds: tuple[int, ...] = (0,)
    dask: bool = False  # also time DASK_CHAPTER's slice on local Dask clusters of DASK_WORKERS workers


def plan(quick: bool = False, sweeps: str | None = None) -> Plan:
    """The full plan (every chapter's paper slice) or --quick (one smoke slice); `sweeps` ("a,b" or "none")
    names the chapters instead. Checked before anything is measured."""
    from ..experiments import registry

    REGISTRY = registry()

    # The full plan slices a seed per worker: a chapter's runs of one seed hang off one pretrain, so with fewer
    # seeds than workers the others would idle until it ends, which no full sweep (3+ seeds) does.
    base = (Plan(batch_size=16, steps=1, repeats=1, gemm=512, levers=False, compile=False, procs_s=0.0,
                 sweeps=(DASK_CHAPTER,), sweep_profile="smoke") if quick else
            Plan(batch_size=128, steps=1, repeats=5, gemm=2048, levers=True, compile=True, procs_s=15.0,
                 sweeps=tuple(REGISTRY), sweep_seeds=tuple(range(SWEEP_WORKERS)), dask=True))
    if sweeps is None:
        return base
    names = () if sweeps == "none" else tuple(n.strip() for n in sweeps.split(","))
    bad = [n for n in names if n not in REGISTRY]
    if bad or not (names or sweeps == "none"):
        raise ValueError(f"--sweeps {sweeps!r} is invalid; allowed: 'none' or comma-separated chapters from "
                         f"{', '.join(REGISTRY)}")
    return replace(base, sweeps=names, dask=base.dask and DASK_CHAPTER in names)


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:5.0f} s] {msg}", file=sys.stderr, flush=True)


def paper_config():
    """The phenomenon chapter's paper config: the model and fine-tuning settings the step is timed with."""
    from ..experiments import get

    return get("phenomenon").make_config("paper")


def train_config(paper, batch_size: int, precision: str, channels_last: bool = True) -> TrainConfig:
    """cascade's defaults with the paper profile's fine-tuning settings (one epoch: calls are timed singly)."""
    return TrainConfig(epochs=1, batch_size=batch_size, lr=paper.finetune_lr, weight_decay=paper.weight_decay,
                       lr_schedule="constant", precision=precision, channels_last=channels_last)
