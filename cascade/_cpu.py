"""Process set-up for training on the CPU: the AMX guard, and glibc's allocator kept from unmapping activations.

Guard against CPUs that advertise AMX but on which oneDNN's AMX kernels fault.

oneDNN uses AMX for bf16 matmuls and convolutions when the CPU reports it. On the Firecracker guest this
project was developed on, that kills the process with SIGILL at the first `tilezero`: the guest reports
AMX in CPUID leaf 7, but its highest CPUID leaf is 0x1C, so leaf 0x1D (the tile palette) reads as zeros,
oneDNN targets palette min(1, that EAX) = 0 (tiles off) and the next tile instruction faults. The hardware itself works
(a hand-written `ldtilecfg` with palette 1 runs there), so this is the guest's CPUID, not the CPU.
We probe once per machine in a subprocess and, if it faults, cap oneDNN at AVX512-BF16 (no AMX: there bf16
is slower than fp32). oneDNN reads the cap when it creates its first primitive, so `guard_amx()` is called at the
entry points that come before any convolution: the CLI, `train()`, each sweep worker and the doctor's child.
Code that runs a model itself before calling any of them should call `guard_amx()` first. Importing cascade
probes nothing and writes nothing.

The allocator (`keep_allocations`, called by `train()`): glibc serves a block above its mmap threshold with a
fresh mapping and unmaps it on free, so each train step would fault in its activations page by page. glibc
raises that threshold as large blocks are freed, but only while no MALLOC_* variable fixes it, and Dask's
nanny sets MALLOC_TRIM_THRESHOLD_ for every worker it starts: there a train step took about twice as long.
`cascade bench` measures this (`allocator`). Set CASCADE_MALLOC=glibc to leave glibc as configured.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from .store import default_cache

PROBE = ("import torch\n"
         "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
         "    torch.nn.Linear(64, 64)(torch.randn(128, 64)).float().sum()\n")
SAFE_ISA = "AVX512_CORE_BF16"


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.cache
def guard_amx() -> None:
    """Cap oneDNN below AMX on a machine where its AMX kernels fault; once per process, probing once per machine."""
    info = _cpu_flags()
    if "ONEDNN_MAX_CPU_ISA" in os.environ or platform.machine() != "x86_64" or "amx_tile" not in info:
        return
    model = next((line for line in info.splitlines() if line.startswith("model name")), "")
    key = hashlib.sha256(f"{model}|{platform.release()}|{platform.node()}".encode()).hexdigest()[:16]
    marker = default_cache() / f"amx-{key}"
    if not marker.exists():
        ok = subprocess.run([sys.executable, "-c", PROBE], capture_output=True).returncode == 0
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("ok" if ok else "fault")
    if marker.read_text() == "fault":
        os.environ["ONEDNN_MAX_CPU_ISA"] = SAFE_ISA


MALLOC_ENV = "CASCADE_MALLOC"
MALLOC_CHOICES = ("large", "glibc")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
LARGE_MMAP_THRESHOLD = 32 << 20  # the most glibc's dynamic threshold reaches on 64-bit
LARGE_TRIM_THRESHOLD = 64 << 20  # twice that, as glibc's dynamic rule sets it


def malloc_choice() -> str:
    """$CASCADE_MALLOC: "large" (default) keeps blocks up to 32 MiB in the heap; "glibc" leaves glibc alone."""
    choice = os.environ.get(MALLOC_ENV, "large")
    if choice not in MALLOC_CHOICES:
        raise ValueError(f"{MALLOC_ENV}={choice!r} is invalid; allowed: {', '.join(MALLOC_CHOICES)}")
    return choice


@functools.cache
def keep_allocations() -> bool:
    """Raise glibc's mmap and trim thresholds once per process, unless $CASCADE_MALLOC=glibc; True if done.
    Where the C library is not glibc, nothing is done. Allocation does not change any number trained."""
    if malloc_choice() == "glibc" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_MMAP_THRESHOLD) and
                libc.mallopt(M_TRIM_THRESHOLD, LARGE_TRIM_THRESHOLD))
