"""`python -m cascade doctor`: the machine facts that change results, and a numerics self-check.

Why: the CPU picks the oneDNN and ATen kernels that run (AVX2, AVX-512, AMX), and a kernel bug can crash the
process (oneDNN issue 6035, see `models`) or, worse, return wrong gradients without a word. The check trains
nothing worth keeping: for every model the book's chapters train (every registry model with `--all`) at several
small widths, one forward and backward pass in the
training format (`TrainConfig`'s default: channels_last, fp32) is compared with a float64 NCHW pass on the same
weights and batch; then a short training loop of resnet8 at width 4 (the configuration that corrupted the heap)
must finish.

Kinks. ReLU, ReLU6, hard-swish, hard-sigmoid and max-pool choose a branch by comparing a value with a kink (0, 6,
+-3) or with its neighbours. Where float32 and float64 land on opposite sides of a kink, the two passes take
different, equally valid sub-gradients: resnet8 at width 16 has one such ReLU among its 100,352 in layer3.0
(a pre-activation of 4e-6 in float64, -1e-6 in float32), and that single element moves the whole gradient's
relative error from 1e-6 to 1e-3, on every CPU, in NCHW or channels_last alike, depending only on rounding.
That is no kernel error, so the float64 pass replays every branch decision of the float32 pass (`Branches`) and
what is left to compare is the kernels' arithmetic.

The checks run in a child process, so a crash or a hang becomes a one-line reason and a non-zero exit.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import re
import selectors
import signal
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

WIDTHS = (1, 4, 8, 12, 16)
# Whole-gradient relative error allowed. float32 reaches about 1e-6 here (sums over at most a few thousand terms);
# 1e-4 leaves two orders of magnitude for longer reductions and still catches a wrong kernel (seen: 1e-3 and worse).
TOLERANCE = 1e-4
CRASH_STEPS = 50
HANG_S = 300  # seconds without a line from the child before it counts as hung
CHILD = "import sys; from cascade.doctor import _child; _child(sys.argv[1])"  # the code the child process runs


class DoctorError(RuntimeError):
    """One-line reason a check failed."""


# ----------------------------------------------------------------------------------------------- branch replay
def _record(func, args, kwargs):
    """(output, decision) of one kinked call in the recording pass."""
    x = args[0]
    if func is F.max_pool2d:
        kw = {**kwargs, "return_indices": True}
        out, idx = func(*args, **kw)
        return (out, idx) if kwargs.get("return_indices") else out, idx
    if func in (F.relu, torch.relu):
        decision = x > 0
    elif func is F.hardtanh:
        lo, hi = _hardtanh_bounds(args, kwargs)
        decision = (x <= lo, x >= hi)
    else:  # hardswish, hardsigmoid
        decision = (x <= -3, x >= 3)
    return func(*args, **kwargs), decision


def _hardtanh_bounds(args, kwargs) -> tuple[float, float]:
    lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    return lo, hi


def _replay(func, args, kwargs, decision):
    """The kinked call on the reference pass, with the recorded branch taken; never in place."""
    x = args[0]
    if func is F.max_pool2d:
        out = x.flatten(2).gather(2, decision.flatten(2)).view(decision.shape)
        return (out, decision) if kwargs.get("return_indices") else out
    if func in (F.relu, torch.relu):
        return x * decision
    lo_mask, hi_mask = decision
    if func is F.hardtanh:
        lo, hi = _hardtanh_bounds(args, kwargs)
        middle, low, high = x, x.new_tensor(lo), x.new_tensor(hi)
    elif func is F.hardswish:
        middle, low, high = x * (x + 3) / 6, x.new_zeros(()), x
    else:
        middle, low, high = x / 6 + 0.5, x.new_zeros(()), x.new_ones(())
    return torch.where(lo_mask, low, torch.where(hi_mask, high, middle))


class Branches(TorchFunctionMode):
    """Record the branch decisions of kinked functions (`Branches()`), or replay recorded ones
    (`Branches(recorded.log)`), call by call in the same order."""

    KINKED = (F.relu, torch.relu, F.hardtanh, F.hardswish, F.hardsigmoid, F.max_pool2d)

    def __init__(self, log: list | None = None):
        super().__init__()
        self.replaying = log is not None
        self.log = [] if log is None else log
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.KINKED:
            return func(*args, **kwargs)
        if not self.replaying:
            out, decision = _record(func, args, kwargs)
            self.log.append((func, decision))
            return out
        if self.calls >= len(self.log) or self.log[self.calls][0] is not func:
            raise DoctorError(f"reference pass diverged at kinked call {self.calls} ({func.__name__})")
        decision = self.log[self.calls][1]
        self.calls += 1
        return _replay(func, args, kwargs, decision)


# ------------------------------------------------------------------------------------------------------ checks
def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm().clamp_min(torch.finfo(torch.float64).tiny)).item()


def gradient_error(name: str, width: int | None, batch: int = 8, seed: int = 0) -> tuple[float, float]:
    """(loss, whole-gradient) relative errors of one training-format pass of `name` against float64 NCHW.

    BatchNorm stays in training mode (batch statistics, as in training); dropout is off, as its random mask
    is not what is checked.
    """
    from . import models
    from .train import TrainConfig, autocast

    cfg = TrainConfig()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    torch.manual_seed(seed)
    net = models.build(name, in_channels=1, num_classes=10, width=width).train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    ref = copy.deepcopy(net).double()
    net = net.to(memory_format=fmt)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.arange(batch) % 10
    with Branches() as rec, autocast(torch.device("cpu"), cfg.precision):
        loss = F.cross_entropy(net(x.contiguous(memory_format=fmt)).float(), y)
    loss.backward()
    with Branches(rec.log):
        ref_loss = F.cross_entropy(ref(x.double()), y)
    ref_loss.backward()
    grad = torch.cat([p.grad.flatten() for p in net.parameters()])
    ref_grad = torch.cat([p.grad.flatten() for p in ref.parameters()])
    return abs(loss.item() - ref_loss.item()) / abs(ref_loss.item()), _relative(grad, ref_grad)


def train_steps(steps: int = CRASH_STEPS, width: int = 4) -> float:
    """Loss after `steps` SGD steps of resnet8 at `width` in the training format: the heap-corruption repro."""
    from . import models

    torch.manual_seed(0)
    net = models.build("resnet8", in_channels=1, num_classes=10, width=width).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.arange(64) % 10
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return loss.item()


def book_models() -> set[str]:
    """The models some chapter of the book trains, under any profile."""
    from . import experiments

    return {r.model for name, exp in experiments.registry().items() for profile in experiments.PROFILES
            for r in exp.all_runs(exp.make_config(profile)) if r.kind == "pretrain"}


def plan(every: bool = False) -> list[tuple[str, int | None]]:
    """(model, width) pairs checked: the book's models (every registry model with `every`) at WIDTHS, or at its
    fixed width when it has one."""
    from . import models

    chosen = models.names() if every else [n for n in models.names() if n in book_models()]
    out = []
    for name in chosen:
        for width in WIDTHS:
            try:
                models.build(name, in_channels=1, num_classes=10, width=width)
            except ValueError:
                out.append((name, None))
                break
            out.append((name, width))
    return out


# ------------------------------------------------------------------------------------------------------- facts
def onednn_isa() -> str:
    """The ISA oneDNN dispatches to, from its verbose header (it prints it once per process)."""
    code = ("import torch\n"  # a batch of 2 and 3x3 on 8x8: small enough, and large enough that ATen picks oneDNN
            "cl = torch.channels_last\n"
            "x, w = torch.randn(2, 8, 8, 8).contiguous(memory_format=cl), torch.randn(8, 8, 3, 3)\n"
            "with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):\n"
            "    torch.nn.functional.conv2d(x, w.contiguous(memory_format=cl))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    return next((line.split("isa:", 1)[1] for line in out.splitlines() if ",isa:" in line), "unknown")


def facts() -> dict:
    """The machine facts that change results: CPU, kernels selected, caps in force, threads, build."""
    from . import provenance

    flags = provenance.cpu_flags()
    onednn = re.search(r"MKL-DNN v([\w.]+)", torch.__config__.show())
    return {
        "cpu": provenance.cpu_model(),
        "cpu_flags": " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags) or "none",
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa(),
        "caps": ", ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
                          if k in os.environ) or "none",
        "bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "threads": torch.get_num_threads(),
        "torch": f"{torch.__version__} (oneDNN {onednn.group(1) if onednn else 'unknown'})",
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------- child and parent
def _child(pairs_json: str) -> None:
    """Run the checks of the (model, width) pairs given, printing one JSON line as each starts and ends (the parent
    reads them)."""
    from ._cpu import guard_amx

    guard_amx()
    for name, width in json.loads(pairs_json):
        label = f"{name} width {width if width is not None else 'default'}"
        print(json.dumps({"start": label}), flush=True)
        loss_err, grad_err = gradient_error(name, width)
        print(json.dumps({"check": label, "loss_err": loss_err, "grad_err": grad_err}), flush=True)
    label = f"resnet8 width 4, {CRASH_STEPS} training steps"
    print(json.dumps({"start": label}), flush=True)
    print(json.dumps({"check": label, "loss": train_steps()}), flush=True)


def _signal_name(code: int) -> str:
    return signal.Signals(-code).name if code < 0 and -code in signal.Signals._value2member_map_ else f"exit {code}"


def run_checks(report=print, every: bool = False) -> int:
    """Run the checks of `plan(every)` in a child process, `report` one line per check; return how many ran.

    Raises DoctorError with one line on the first failed check, a crash or a hang.
    """
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(plan(every))], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    current, done = None, 0
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ)
    try:
        while True:
            if not sel.select(timeout=HANG_S):
                raise DoctorError(f"{current}: no result after {HANG_S} s (hung; a corrupted heap can do this)")
            line = child.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "start" in msg:
                current = msg["start"]
                continue
            done += 1
            if "grad_err" in msg:
                worst = max(msg["loss_err"], msg["grad_err"])
                report(f"  {'ok  ' if worst <= TOLERANCE else 'FAIL'} {msg['check']:28s} "
                       f"loss {msg['loss_err']:.1e}  gradient {msg['grad_err']:.1e}")
                if worst > TOLERANCE:
                    raise DoctorError(f"{msg['check']}: relative error {worst:.1e} against float64 exceeds "
                                      f"{TOLERANCE:.0e}")
            else:
                report(f"  ok   {msg['check']:28s} final loss {msg['loss']:.3f}")
            current = None
    finally:
        if child.poll() is None:
            child.kill()
        code = child.wait()
        err = child.stderr.read().strip().splitlines()
        child.stdout.close()
        child.stderr.close()
    if code != 0:
        last = err[-1] if err else "no message"
        raise DoctorError(f"{current or 'checks'}: the process died ({_signal_name(code)}): {last}")
    return done


def main(every: bool = False) -> int:
    """Print the facts, run the checks (of every registry model with `every`); 0 when all pass, else 1 with a
    one-line reason on stderr."""
    start = time.perf_counter()
    for key, value in facts().items():
        print(f"{key:16s} {value}")
    print(f"numerics (training format vs float64 NCHW, tolerance {TOLERANCE:.0e}; "
          f"{'every registry model' if every else 'the models the book trains'}):")
    try:
        n = run_checks(every=every)
    except DoctorError as e:
        print(f"doctor: FAILED: {e}", file=sys.stderr)
        return 1
    print(f"doctor: all {n} checks passed in {time.perf_counter() - start:.0f} s")
    return 0
