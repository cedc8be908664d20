"""Where a run's time goes: seconds per phase, and the model FLOPs it trained and evaluated, counted per process.

A record's `meta` carries both (`phases_s`, `model_flops`), so `cascade bench` can split a sweep's wall time into
the train step and its overheads, and set the FLOPs it did against the machine's peak.
Phases are exclusive: time inside a nested phase (the tracker's evaluation) counts for the innermost one only.
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

SECONDS: Counter = Counter()  # phase -> seconds, in this process
# "train", "eval" (fp32) and "train_bf16", ... -> model FLOPs (6 x MACs per trained image, 2 x MACs per evaluated
# one), in this process
FLOPS: Counter = Counter()
_stack: list[list] = []  # [phase, start of its current slice]

T = TypeVar("T")


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time spent inside (less any nested phase) as `name`."""
    now = time.perf_counter()
    if _stack:
        SECONDS[_stack[-1][0]] += now - _stack[-1][1]
    _stack.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        SECONDS[name] += now - _stack.pop()[1]
        if _stack:
            _stack[-1][1] = now


def timed(items: Iterable[T], name: str) -> Iterator[T]:
    """`items`, with the time spent producing each counted as `name` (a data loader's batches)."""
    it = iter(items)
    while True:
        with phase(name):
            item = next(it, _END)
        if item is _END:
            return
        yield item


_END = object()


class Stopwatch:
    """A run's wall time, and the phase seconds and model FLOPs counted since it started."""

    def __init__(self):
        self.start, self.seconds, self.flops = time.perf_counter(), Counter(SECONDS), Counter(FLOPS)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def phases(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted((SECONDS - self.seconds).items())}

    def model_flops(self) -> dict[str, int]:
        return dict(sorted((FLOPS - self.flops).items()))
