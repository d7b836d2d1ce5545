"""Skipping cells that would fail like a smaller one did.

Once a target runs out of memory (or time) at some size, every cell of the same target that is at
least as large on every size axis (same other parameters) would fail too: the sweep records it as
``skipped`` with the reason instead of spending minutes rediscovering the failure.

Out-of-memory itself needs nothing here: a cell's generator lets ``torch.cuda.OutOfMemoryError``
propagate, its frame and tensors die with it, and ``harness.run.execute.execute_cell`` records ``oom``
and empties the allocator's cache.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from harness.cells import Cell

#: axes along which cost only grows; a failure at a point dominates every point above it
SIZE_AXES = ("seq_len", "batch", "prompt_len", "gen_len")
SKIP_AFTER = ("oom", "timeout")


def _sizes(params: Dict[str, Any]) -> Dict[str, Any]:
    return {k: params[k] for k in SIZE_AXES if k in params}


def _rest(params: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in params.items() if k not in SIZE_AXES}


def skip_reason(cell: Cell, finished: List[Tuple[Cell, str]]) -> Optional[str]:
    """"OOM at a smaller seq_len (L=...)" when a finished cell that differs only by being no larger
    on every size axis ended ``oom``/``timeout``; ``None`` otherwise."""
    sizes, rest = _sizes(cell.params), _rest(cell.params)
    for done, status in finished:
        if status not in SKIP_AFTER or done.kind != cell.kind or _rest(done.params) != rest:
            continue
        smaller = _sizes(done.params)
        if smaller.keys() != sizes.keys() or smaller == sizes:
            continue
        if all(_le(smaller[k], sizes[k]) for k in sizes):
            what = "OOM" if status == "oom" else "timeout"
            diff = [k for k in sizes if smaller[k] != sizes[k]]
            axis = diff[0] if len(diff) == 1 else "size"
            at = ", ".join(f"{'L' if k == 'seq_len' else k}={smaller[k]}" for k in diff)
            return f"{what} at a smaller {axis} ({at}) of the same {cell.params.get('impl', 'target')}"
    return None


def _le(a: Any, b: Any) -> bool:
    try:
        return a <= b
    except TypeError:
        return a == b
