"""Timing on a shared machine: variants measured in turns, in one process, and compared repeat by repeat."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def interleave(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Work per second of each fn in each repeat. An fn does its work and returns how much (images, FLOPs).

    Every fn runs once untimed first (warm-up); then each repeat runs all of them, rotated by one place
    per repeat so no variant always follows the same neighbour.
    """
    for fn in fns.values():
        fn()
    names, rates = list(fns), {name: [] for name in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            work = fns[name]()
            rates[name].append(work / (time.perf_counter() - start))
    return rates


def paired(rates: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of rate a / rate b: each ratio compares two neighbours in time."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


def seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of fn() over `repeats` calls, after one untimed call unless `warmup` is False."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_thread(fn: Callable[[], float]) -> Callable[[], float]:
    """fn run with 1 intra-op thread: on a loaded machine a 2-thread OpenMP region waits for a descheduled thread."""
    def call():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return call
