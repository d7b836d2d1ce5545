"""Timing one callable: warm-up, per-repeat times, deadline checks, and the summary statistics.

On CUDA a repeat is timed with CUDA events on the current stream, after writing a 256 MB buffer
so the inputs are not served from L2 (the H100's L2 is 50 MB); on the CPU with
``time.perf_counter``.  Both timers have the same interface (``timer(fn) -> ms``), so the kinds
and the tests (which pass a fake timer) share one code path.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from harness.cells import CellContext, CellTimeout

Timer = Callable[[Callable[[], object]], float]

L2_FLUSH_BYTES = 256 * 1024 * 1024


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


class CpuTimer:
    """Wall-clock milliseconds of one call (the CPU runs torch ops synchronously)."""

    def __call__(self, fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


class CudaEventTimer:
    """Milliseconds between two CUDA events around one call, optionally after flushing L2."""

    def __init__(self, device: str, flush_l2: bool = True):
        self.device = torch.device(device)
        self.flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=self.device) if flush_l2 else None
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.flush is not None:
            self.flush.zero_()
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


def make_timer(device: str, flush_l2: bool = True) -> Timer:
    if str(device).startswith("cuda"):
        return CudaEventTimer(device, flush_l2)
    return CpuTimer()


def measure(fn: Callable[[], object], timer: Timer, *, warmup: int, repeats: int,
            ctx: Optional[CellContext] = None, device: str = "cpu") -> Iterator[float]:
    """Yield ``repeats`` per-call times (ms) after ``warmup`` untimed calls.

    Before every call the shortest call seen so far is compared with the time left to the cell
    (``ctx.deadline``): if even that would not fit, :class:`CellTimeout` is raised instead of
    starting a call that cannot finish (the sequential scan at long L is the usual runaway).  The
    first call's time includes compilation/autotuning, so it only stops a cell that is over time
    already.  Times yielded before a timeout are kept by the caller.
    """
    shortest_s: Optional[float] = None

    def check() -> None:
        if ctx is None:
            return
        ctx.check_deadline()
        left = ctx.seconds_left()
        if shortest_s is not None and shortest_s > left:
            raise CellTimeout(f"one call takes {shortest_s:.3g} s but only {max(left, 0):.3g} s of "
                              f"timeout_s are left")

    for _ in range(warmup):
        check()
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        took = time.perf_counter() - t0
        shortest_s = took if shortest_s is None else min(shortest_s, took)
    for _ in range(repeats):
        check()
        ms = timer(fn)
        shortest_s = ms / 1e3 if shortest_s is None else min(shortest_s, ms / 1e3)
        yield ms


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def iqr(xs: Sequence[float]) -> float:
    """Interquartile range, linear interpolation between order statistics (numpy's default)."""
    q75, q25 = np.percentile(np.asarray(xs, dtype=float), [75, 25])
    return float(q75 - q25)
