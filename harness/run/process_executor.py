"""Run several cells at once on this machine, each in a fresh process: ``ssmbench run --jobs N``.

Why: a small training cell (the quick synthetic suites: 2 layers, d_model 64) keeps a modern GPU
mostly idle -- its step time is Python and kernel-launch overhead -- so N such cells side by side
take about the wall time of one (``--mps`` makes their kernels overlap too: :mod:`harness.run.mps`).
Ray does the same across machines (``--executor ray``); this executor needs nothing beyond the
standard library, which is what a bare GPU box has.

Rules (shared with the Ray executor, see :mod:`harness.run.executors`):

* the driver stays the only writer: a child process runs :func:`harness.run.execute.execute_cell`
  (which never raises) and sends the cell's rows back through a pipe;
* cells of kinds that time or measure memory (:data:`EXCLUSIVE_GPU_KINDS`) on a GPU run alone --
  nothing else starts while one runs -- so their numbers are not perturbed;
* cells chained by :func:`harness.run.executors.chain_key` (OOM at a smaller L -> skip the larger) run
  one after another, so the skip decision sees the cells it depends on;
* each child gets ``cpus // jobs`` intra-op threads, and on a machine with several GPUs a GPU of
  its own where possible (``CUDA_VISIBLE_DEVICES``, least-loaded first); rows say ``gpu_index``;
* a child that dies (segfault, SIGKILL, host OOM) becomes an ``error`` row naming its exit code; a
  child still running a minute past its cell's deadline is killed and becomes a ``timeout`` row;
* Ctrl-C kills the children; rows already reported stay written.

Children are started with ``spawn`` (a forked CUDA context is unusable), so each pays the
``import torch`` once (a few seconds): worth it for cells of a minute, not for cells of a second.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Deque, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence

from harness.cells import Cell, CellContext
from harness.run.executors import (EXCLUSIVE_GPU_KINDS, Executor, Rows, chain_key, check_jobs,
                               context_from_payload, context_payload)

#: How long past its cell's deadline a child may run before it is killed (the cell's own
#: cooperative deadline check normally ends it first).
KILL_GRACE_S = 60.0


def visible_gpus() -> List[str]:
    """The GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else 0..count-1
    (counted through NVML, so the driver process never creates a CUDA context)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML (no NVIDIA driver): no GPUs to hand out
        return []


def _child_main(conn: Connection, cell: Cell, spec: Any, payload: Mapping[str, Any],
                device: Optional[str]) -> None:
    """Body of a child process: run one cell, send its rows, exit.  (torch, if the cell imports it,
    takes its thread count from OMP_NUM_THREADS, set for this process by the driver.)"""
    from harness.run.execute import execute_cell
    from harness.kinds import KINDS

    if cell.kind not in KINDS:  # a kind registered in the driver at run time (a plug-in, a test)
        KINDS.add(cell.kind, spec)
    rows = execute_cell(cell, context_from_payload(payload, device))
    conn.send(rows)
    conn.close()


@dataclass
class _Child:
    cell: Cell
    chain: Hashable
    process: Any
    conn: Connection
    gpu: Optional[str]
    exclusive: bool
    kill_at: Optional[float]
    rows: Optional[Rows] = None


@contextmanager
def environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (around ``Process.start()``: a spawned child copies
    os.environ), then put them back exactly as they were (unset ones unset)."""
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def describe_exit(code: Optional[int]) -> str:
    """``exit code 3`` / ``killed by SIGKILL (the host's out-of-memory killer, or kill -9)``."""
    if code is None:
        return "still running"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = " (the host's out-of-memory killer, or kill -9)" if name == "SIGKILL" else ""
    return f"killed by {name}{hint}"


class ProcessExecutor(Executor):
    """Up to ``jobs`` cells at once, one fresh process each; see the module docstring."""

    name = "processes"

    def __init__(self, jobs: int, cpus: Optional[int] = None, poll_s: float = 0.5,
                 gpus: Optional[Sequence[str]] = None):
        self.jobs = check_jobs(jobs)
        self.threads = max(1, (cpus or os.cpu_count() or 1) // jobs)
        self.poll_s = poll_s
        self._gpus = list(gpus) if gpus is not None else None
        self._mp = mp.get_context("spawn")

    @property
    def gpus(self) -> List[str]:
        if self._gpus is None:
            self._gpus = visible_gpus()
        return self._gpus

    def cluster_summary(self) -> Dict[str, Any]:
        """What the cells ran on, for meta.json."""
        return {"jobs": self.jobs, "threads_per_cell": self.threads, "gpus": len(self.gpus)}

    # -- the run -------------------------------------------------------------------------------

    def run(self, cells: Sequence[Cell], make_context: Callable[[Cell], CellContext],
            on_done: Callable[[Cell, Rows], None],
            skip_reason: Callable[[Cell], Optional[str]]) -> None:
        from harness.run.execute import failure_row

        chains: "OrderedDict[Hashable, Deque[Cell]]" = OrderedDict()
        for index, cell in enumerate(cells):
            chains.setdefault(chain_key(cell, index), deque()).append(cell)
        running: List[_Child] = []

        def start_ready() -> None:
            for chain in list(chains):
                if len(running) >= self.jobs or any(c.exclusive for c in running):
                    return
                if any(c.chain == chain for c in running):
                    continue
                queue = chains[chain]
                while queue:
                    cell = queue[0]
                    ctx = make_context(cell)
                    exclusive = cell.kind in EXCLUSIVE_GPU_KINDS and str(ctx.device).startswith("cuda")
                    if exclusive and running:
                        return  # wait until the GPU is ours alone; keep suite order behind it
                    queue.popleft()
                    reason = skip_reason(cell)  # asked only when the cell would start now
                    if reason is not None:
                        on_done(cell, [failure_row("skipped", reason)])
                        continue
                    running.append(self._start(cell, chain, ctx, exclusive, running))
                    break
                if not queue:
                    del chains[chain]

        try:
            start_ready()
            while running:
                self._wait(running)
                for child in [c for c in running if not c.process.is_alive() or self._overdue(c)]:
                    running.remove(child)
                    on_done(child.cell, self._finish(child))
                start_ready()
        except BaseException:
            for child in running:
                self._kill(child)
            raise

    # -- children ------------------------------------------------------------------------------

    def _start(self, cell: Cell, chain: Hashable, ctx: CellContext, exclusive: bool,
               running: Sequence[_Child]) -> _Child:
        from harness.kinds import KINDS

        gpu, device = None, None
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if str(ctx.device).startswith("cuda") and self.gpus:
            load = {g: 0 for g in self.gpus}
            for other in running:
                if other.gpu in load:
                    load[other.gpu] += 1
            gpu = min(self.gpus, key=lambda g: load[g])  # least loaded, first on ties
            env["CUDA_VISIBLE_DEVICES"] = gpu
            device = "cuda"
        parent_conn, child_conn = self._mp.Pipe(duplex=False)
        process = self._mp.Process(
            target=_child_main, name=f"ssmbench-cell-{cell.cell_id}", daemon=True,
            args=(child_conn, cell, KINDS.get(cell.kind), context_payload(ctx), device))
        with environment(env):
            process.start()
        child_conn.close()  # the child holds its end; EOF here once it exits
        kill_at = None if ctx.deadline is None else time.monotonic() + max(0.0, ctx.seconds_left()) + KILL_GRACE_S
        return _Child(cell, chain, process, parent_conn, gpu, exclusive, kill_at)

    def _wait(self, running: Sequence[_Child]) -> None:
        """Block until a child sends rows or exits (or poll_s passes); read the rows that came, so a
        child never blocks on a full pipe."""
        ready = wait([c.conn for c in running if c.rows is None and not c.conn.closed]
                     + [c.process.sentinel for c in running],
                     timeout=self.poll_s)
        for child in running:
            if child.rows is None and not child.conn.closed and child.conn in ready:
                try:
                    child.rows = child.conn.recv()
                except (EOFError, OSError):
                    child.rows = None
                    child.conn.close()

    def _overdue(self, child: _Child) -> bool:
        return child.kill_at is not None and time.monotonic() > child.kill_at and child.rows is None

    def _finish(self, child: _Child) -> Rows:
        from harness.run.execute import failure_row

        if child.process.is_alive():
            if child.rows is None:  # overdue
                self._kill(child)
                rows = [failure_row("timeout", f"the cell ran over its deadline by {KILL_GRACE_S:.0f} s "
                                               f"and its process was killed")]
                return self._tag(rows, child)
        child.process.join()
        if child.rows is None and not child.conn.closed:
            try:  # rows sent just before exit
                if child.conn.poll():
                    child.rows = child.conn.recv()
            except (EOFError, OSError):
                pass
        child.conn.close()
        rows = child.rows
        if not rows:
            rows = [failure_row("error", f"the cell's process died without results "
                                         f"({describe_exit(child.process.exitcode)})")]
        return self._tag(rows, child)

    @staticmethod
    def _tag(rows: Rows, child: _Child) -> Rows:
        return [{**row, "gpu_index": child.gpu} for row in rows] if child.gpu is not None else rows

    @staticmethod
    def _kill(child: _Child) -> None:
        if child.process.is_alive():
            child.process.kill()
        child.process.join(5.0)
        child.conn.close()
