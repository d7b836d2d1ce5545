"""Test support for the bench kinds: tiny CPU cells, a context with a deadline, a fake timer.

Used by tests/test_bench_*.py and tests/test_{speed,memory,decode}_kind.py; kept in the package so
that tests of other parts (reports, diffs) can build bench cells the same way.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

from harness.cells import Cell, CellContext

TINY_OP = dict(seq_len=16, batch=2, d_model=8, expand=2, d_state=4, heads=2, dtype="fp32",
               warmup=1, repeats=3, device="cpu")
TINY_MODEL = dict(arch="mamba", mixer="s6", n_layers=1, d_model=16)


def cell(kind: str, **params: Any) -> Cell:
    return Cell(suite="test", kind=kind, cell_id="c" + str(abs(hash(repr(sorted(params.items()))))), params=params)


def ctx(seconds: Optional[float] = 60.0) -> CellContext:
    return CellContext(device="cpu", deadline=None if seconds is None else time.monotonic() + seconds)


def by_metric(rows: Sequence[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    out: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["metric"], []).append(r)
    return out


class FakeTimer:
    """Returns preset times (ms) in order and counts the calls it timed (running each one)."""

    def __init__(self, times_ms: Sequence[float]):
        self.times, self.calls = list(times_ms), 0

    def __call__(self, fn) -> float:
        fn()
        self.calls += 1
        return self.times[self.calls - 1]


def stepper_logits(stepper: Any, prompt: Any, gen_len: int) -> List[Any]:
    """Reset a StaticStepper, feed ``prompt`` (batch, T) through it, then ``gen_len`` greedy steps: the logits of
    every step, cloned (the stepper's logits buffer is reused)."""
    stepper.reset()
    out = []
    for t in range(prompt.shape[1]):
        stepper.step(prompt[:, t])
        out.append(stepper.logits.clone())
    for _ in range(gen_len):
        stepper.step()
        out.append(stepper.logits.clone())
    return out


def greedy_logits(lm: Any, state: Any, prompt: Any, gen_len: int) -> List[Any]:
    """:func:`stepper_logits` without a stepper: ``prompt`` then ``gen_len`` greedy tokens through ``lm.step``
    from ``state``; the logits of every step."""
    out = []
    for t in range(prompt.shape[1]):
        logits, state = lm.step(prompt[:, t], state)
        out.append(logits)
    for _ in range(gen_len):
        logits, state = lm.step(logits.argmax(-1), state)
        out.append(logits)
    return out
