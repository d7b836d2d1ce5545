"""Executors run cells and hand each cell's rows back to the driver.

The driver (:mod:`harness.runner`) is the only writer of ``rows.jsonl``: an executor never writes
results itself, it calls ``on_done(cell, rows)`` in the driver's process as each cell ends.  The
work done for one cell is :func:`harness.execute.execute_cell`, a pure function (cell, ctx) -> rows
that never raises (failures become rows), so the same function runs in-process (LocalExecutor) or
in a remote worker (harness.ray_executor.RayExecutor).
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


class LocalExecutor(Executor):
    """Runs cells on this machine: one after another in this process (the default; what CI and a
    laptop use), or up to ``jobs`` at once in child processes (:mod:`harness.process_executor`).

    ``jobs`` is the ``--jobs`` flag; without it a suite's own ``jobs:`` key applies (:meth:`use_suite`).
    ``mps`` (``--mps`` / ``--no-mps``, else the suite's ``mps:`` key) runs cells that share a GPU under CUDA
    MPS (:mod:`harness.mps`), started around each :meth:`run` and stopped when it ends.
    """

    name = "local"
    _jobs_flag: Optional[int] = None
    _jobs_suite: Optional[int] = None
    _mps_flag: Optional[bool] = None
    _mps_suite: bool = False
    _mps_status: Optional[Dict[str, Any]] = None  # what the last run() did about MPS, for meta.json
    _pool: Optional[Executor] = None  # the ProcessExecutor of _parallel()

    def __init__(self, jobs: Optional[int] = None, mps: Optional[bool] = None):
        self._jobs_flag = None if jobs is None else check_jobs(jobs)
        self._mps_flag = None if mps is None else bool(mps)

    @property
    def jobs(self) -> int:
        return self._jobs_flag or self._jobs_suite or 1

    @property
    def mps_requested(self) -> bool:
        return self._mps_suite if self._mps_flag is None else self._mps_flag

    def use_suite(self, suite_data: Mapping[str, Any]) -> None:
        self._jobs_suite = suite_data.get("jobs")
        self._mps_suite = bool(suite_data.get("mps"))
        self._mps_status = None  # one executor serves several suites: no status left from the last

    def _parallel(self):
        """The process executor for ``jobs`` > 1 (None for one cell at a time), made once per size."""
        if self.jobs == 1:
            return None
        if self._pool is None or self._pool.jobs != self.jobs:
            from harness.process_executor import ProcessExecutor

            self._pool = ProcessExecutor(self.jobs)
        return self._pool

    def cluster_summary(self) -> Dict[str, Any]:
        """For meta.json, before the run: how many cells run at once, and whether CUDA MPS was asked
        for (nothing to add for one at a time without MPS); :meth:`run_summary` tells what it became."""
        pool = self._parallel()
        summary = {} if pool is None else pool.cluster_summary()
        if pool is not None or self.mps_requested:
            summary["mps"] = {"requested": self.mps_requested}
        return summary

    def run_summary(self) -> Dict[str, Any]:
        """For meta.json, after the run: what the run did about CUDA MPS (started, found, or why not)."""
        return {} if self._mps_status is None else {"mps": self._mps_status}

    def run(self, cells: Sequence[Cell], make_context: Callable[[Cell], CellContext],
            on_done: Callable[[Cell, Rows], None],
            skip_reason: Callable[[Cell], Optional[str]]) -> None:
        from harness import mps

        pool = self._parallel()
        if pool is not None:
            with mps.mps_for_children(self.mps_requested) as status:
                self._mps_status = status
                pool.run(cells, make_context, on_done, skip_reason)
            return
        if self.mps_requested:
            self._mps_status = mps.not_started("jobs is 1: cells run one at a time, so there is nothing "
                                               "to overlap (give --jobs N or the suite key jobs)")
        from harness.execute import execute_cell, failure_row

        for cell in cells:
            reason = skip_reason(cell)
            if reason is not None:
                on_done(cell, [failure_row("skipped", reason)])
                continue
            on_done(cell, execute_cell(cell, make_context(cell)))
