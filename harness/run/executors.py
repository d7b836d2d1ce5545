"""Executors run cells and hand each cell's rows back to the driver.

The driver (:mod:`harness.run.runner`) is the only writer of ``rows.jsonl``: an executor never writes
results itself, it calls ``on_done(cell, rows)`` in the driver's process as each cell ends.  The
work done for one cell is :func:`harness.run.execute.execute_cell`, a pure function (cell, ctx) -> rows
that never raises (failures become rows), so the same function runs in-process (LocalExecutor) or
in a remote worker (harness.run.ray_executor.RayExecutor).

This module holds what every executor shares (the :class:`Executor` interface, cell chaining, the
context sent to a worker); the executors themselves are :mod:`harness.run.local`,
:mod:`harness.run.process_executor` and :mod:`harness.run.ray_executor`.
"""
from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence

from harness.cells import Cell, CellContext

Rows = List[Dict[str, Any]]

#: Kinds whose numbers are wall-clock times or peak memory: a second cell on the same GPU would
#: perturb them, so an executor that runs cells side by side runs these alone on their GPU.
EXCLUSIVE_GPU_KINDS = frozenset({"speed", "memory", "decode"})


def check_jobs(jobs: Any) -> int:
    """``jobs`` (cells at once) as given, if it is a whole number >= 1; else ValueError."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1 (got {jobs!r})")
    return jobs


def chain_key(cell: Cell, index: int) -> Hashable:
    """Cells with the same key run one after another, in suite order, under a parallel executor.

    A kind with a ``skip_reason`` decides from cells already done (OOM at a smaller L of the same
    impl -> skip), so its cells are chained per impl (per kind if cells have no ``impl``); any
    other cell is a chain of its own and may run in parallel with everything.
    """
    from harness.kinds import KINDS

    if KINDS.get(cell.kind).skip_reason is None:
        return ("independent", index)
    return ("chained", cell.kind, repr(cell.get("impl")))


def context_payload(ctx: CellContext) -> Dict[str, Any]:
    """``ctx`` as plain fields for another process, with the driver-clock ``deadline`` turned into a
    budget in seconds (a monotonic value means nothing on another machine, and the cell's clock
    should start when the cell starts, not when it was queued)."""
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
    deadline = fields.pop("deadline", None)
    fields["deadline_budget_s"] = None if deadline is None else max(0.0, deadline - time.monotonic())
    return fields


def context_from_payload(payload: Mapping[str, Any], device: Optional[str] = None) -> CellContext:
    """The :class:`CellContext` of :func:`context_payload`, its deadline re-anchored now;
    ``device`` replaces the driver's device string (a worker that sees only its GPU as cuda:0)."""
    fields = dict(payload)
    budget = fields.pop("deadline_budget_s", None)
    fields["deadline"] = None if budget is None else time.monotonic() + budget
    if device is not None:
        fields["device"] = device
    return CellContext(**fields)


class Executor(ABC):
    """Runs ``cells`` in order of submission (resources permitting) and reports each one once.

    make_context(cell) -> CellContext   built in the driver (device, deadline, run_dir)
    skip_reason(cell) -> str | None     asked in the driver just before a cell is started; a string
                                        means: do not run it, report a ``skipped`` row with that reason
                                        (so it must be asked after the cells it depends on are done)
    on_done(cell, rows)                 called in the driver exactly once per cell, rows non-empty
    """

    name = "base"

    @abstractmethod
    def run(self, cells: Sequence[Cell], make_context: Callable[[Cell], CellContext],
            on_done: Callable[[Cell, Rows], None],
            skip_reason: Callable[[Cell], Optional[str]]) -> None:
        ...

    def close(self) -> None:
        """Release resources (a Ray cluster started by the executor, say)."""
