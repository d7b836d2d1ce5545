"""The default executor: cells on this machine, one after another in this process, or ``--jobs N`` at once
in child processes (:mod:`harness.run.process_executor`), under CUDA MPS when asked (:mod:`harness.run.mps`)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from harness.cells import Cell, CellContext
from harness.run import mps
from harness.run.execute import execute_cell, failure_row
from harness.run.executors import Executor, Rows, check_jobs
from harness.run.process_executor import ProcessExecutor


class LocalExecutor(Executor):
    """Runs cells on this machine: one after another in this process (the default; what CI and a
    laptop use), or up to ``jobs`` at once in child processes (:mod:`harness.run.process_executor`).

    ``jobs`` is the ``--jobs`` flag; without it a suite's own ``jobs:`` key applies (:meth:`use_suite`).
    ``mps`` (``--mps`` / ``--no-mps``, else the suite's ``mps:`` key) runs cells that share a GPU under CUDA
    MPS (:mod:`harness.run.mps`), started around each :meth:`run` and stopped when it ends.
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
        pool = self._parallel()
        if pool is not None:
            with mps.mps_for_children(self.mps_requested) as status:
                self._mps_status = status
                pool.run(cells, make_context, on_done, skip_reason)
            return
        if self.mps_requested:
            self._mps_status = mps.not_started("jobs is 1: cells run one at a time, so there is nothing "
                                               "to overlap (give --jobs N or the suite key jobs)")
        for cell in cells:
            reason = skip_reason(cell)
            if reason is not None:
                on_done(cell, [failure_row("skipped", reason)])
                continue
            on_done(cell, execute_cell(cell, make_context(cell)))
