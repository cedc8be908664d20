"""Where and with what a result was made: the one place that reads the machine and the code version.

Records (`meta`), the book's appendix, the benchmark and `cascade doctor` all take their facts from here, so they
describe a machine the same way.
"""
from __future__ import annotations

import functools
import os
import platform
import re
import resource
import subprocess
import time
from pathlib import Path

import torch


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_model() -> str:
    found = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    found = re.search(r"^flags\s*:\s*(.+)$", _cpuinfo(), re.M)
    return set(found.group(1).split()) if found else set()


@functools.lru_cache(maxsize=1)
def hardware() -> str:
    """The device a run computes on, in a record's words: the GPU's name, or 'CPU model (N cores)'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def machine() -> list[tuple[str, str]]:
    """CPU model, cores, RAM, GPU, torch build and OS of this machine, for tables."""
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M) \
        if Path("/proc/meminfo").exists() else None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [("CPU", cpu_model()),
            ("cores", str(os.cpu_count())),
            ("RAM", f"{int(mem.group(1)) / 2**20:.1f} GiB" if mem else "unknown"),
            ("GPU", ", ".join(gpus) or "none"),
            ("torch build", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"),
            ("OS", platform.platform())]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(__file__), timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB: VmHWM where Linux has it, since getrusage's ru_maxrss
    survives exec and so, in a spawned worker, starts at the size of the process that spawned it."""
    status = Path("/proc/self/status")
    found = re.search(r"^VmHWM:\s*(\d+) kB", status.read_text(), re.M) if status.exists() else None
    return round(int(found.group(1)) / 1024 if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def meta(seconds: float, device: str) -> dict:
    """The `meta` of a record: wall time, hardware, device, torch, commit, creation time (UTC), and the peak
    resident memory of the process so far (of the worker, in a sweep: what bounds how many fit on a machine)."""
    return {"wall_time_s": round(seconds, 2), "hardware": hardware(), "device": device, "torch": torch.__version__,
            "commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "peak_rss_mb": peak_rss_mb()}
