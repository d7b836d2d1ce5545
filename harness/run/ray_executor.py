"""Run a suite's cells as Ray tasks, across the GPUs (or CPUs) of one machine or a cluster.

Why Ray: users already have Ray clusters (Zoology's sweeps run on one), Ray does resource-aware
placement (``num_gpus`` / ``num_cpus`` per task) and reports dead workers as exceptions, so this
module only decides *what* each cell asks for and *when* it may start; Ray decides *where*.

The contract is the one of :mod:`harness.run.executors`: the driver stays the only writer of
``rows.jsonl``.  Each Ray task runs :func:`harness.run.execute.execute_cell` (which never raises) and
returns the cell's rows; the driver hands them to ``on_done`` as tasks complete (``ray.wait``).
What the local executor does not have to handle is handled here:

* **where a cell ran** -- every row gets ``ray_node`` (node IP), ``gpu_index`` (``ray.get_gpu_ids()``,
  comma-joined, ``None`` on CPU) and ``ray_attempt`` (1 = first try), besides the ``host`` and
  ``device_name`` (GPU name, else CPU model) that execute_cell records in the worker, so results
  from mixed hardware stay apart in reports and diffs;
* **one timing cell per GPU** -- kinds that time or measure memory (:data:`EXCLUSIVE_GPU_KINDS`)
  always ask for a whole GPU; other cells ask for ``gpus_per_cell`` (may be fractional, so small
  training cells can share a GPU); CPU cells ask for ``cpus_per_cell`` CPUs and no GPU;
* **skip ordering** -- a kind with a ``skip_reason`` (OOM at a smaller L -> skip the larger ones)
  has its cells run one after another per *impl line* (same kind and ``impl``), so the skip
  decision for a cell is taken after the cells it depends on have reported; other cells run in
  parallel;
* **dead workers** -- a worker killed mid-cell (SIGKILL, node lost, host OOM) turns its cell into an
  ``error`` row (``oom`` for Ray's out-of-memory kill) with the reason, or is resubmitted up to
  ``retries`` times first; the other cells go on;
* **deadlines** -- ``CellContext.deadline`` is a ``time.monotonic()`` value of the driver, which
  means nothing on another machine (and would start ticking while the task waits in Ray's queue):
  it travels as a budget in seconds and is re-anchored when the worker starts the cell;
* **Ctrl-C** -- outstanding tasks are cancelled (their workers killed), rows already reported stay
  written, and the ``KeyboardInterrupt`` goes on up to the runner.

Ray is an optional extra: importing this module without it raises ``ModuleNotFoundError`` whose
message says how to install it.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

INSTALL_HINT = ("the Ray executor needs Ray, an optional extra: pip install -e '.[ray]' "
                "(or pip install 'ray[default]')")

try:
    import ray
    import ray.exceptions as ray_errors
except ImportError as exc:  # pragma: no cover - exercised only where ray is absent
    raise ModuleNotFoundError(INSTALL_HINT, name="ray") from exc

from harness.cells import Cell, CellContext
from harness.errors import Issue, SuiteError
from harness.run.execute import execute_cell, failure_row
from harness.run.executors import (EXCLUSIVE_GPU_KINDS, Executor, Rows, chain_key, context_from_payload,
                               context_payload)
from harness.kinds import KINDS, KindSpec

log = logging.getLogger(__name__)

#: Columns this executor adds to every row of a cell (execute_cell adds ``host``, ``device_name``).
PLACEMENT_COLUMNS = ("ray_node", "gpu_index", "ray_attempt")

#: Paths never shipped to a remote cluster with the code (``working_dir``): run outputs and caches.
SHIP_EXCLUDES = [".git/", "results/", "reports/", "**/__pycache__/", "*.pyc", ".pytest_cache/",
                 "*.parquet", "*.jsonl", ".venv/", "venv/", "*.egg-info/", "build/", "dist/"]

#: Ray failures that say nothing about the cell itself (a worker or node died, an object was lost):
#: worth a retry.  Failures not listed (RayTaskError: our own code raised in the worker;
#: TaskCancelledError; RuntimeEnvSetupError; TaskUnschedulableError) would fail the same way again.
RETRYABLE_ERRORS: Tuple[type, ...] = tuple(
    getattr(ray_errors, name) for name in (
        "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError",
        "OwnerDiedError", "RaySystemError", "OutOfMemoryError", "ActorDiedError",
    ) if hasattr(ray_errors, name))

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

def _context_payload(ctx: CellContext) -> Dict[str, Any]:
    return context_payload(ctx)


def _context_on_worker(payload: Mapping[str, Any], gpu_ids: Sequence[Any]) -> CellContext:
    device = str(payload.get("device", "cpu"))
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned: they are cuda:0.. in this process.
    return context_from_payload(payload, "cuda" if device.startswith("cuda") and gpu_ids else None)


def _limit_threads(num_cpus: float) -> None:
    """Use as many intra-op threads as CPUs the cell asked for: concurrent cells on one node would
    otherwise each spawn one thread per core and slow each other down.  torch is not imported for
    this (it costs seconds per fresh worker): if the cell imports it later, it reads the env vars."""
    threads = str(max(1, int(num_cpus)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(threads))


def run_cell_on_worker(cell: Cell, spec: KindSpec, ctx_payload: Mapping[str, Any], num_cpus: float,
                       attempt: int) -> Rows:
    """The body of one Ray task: run ``cell`` with :func:`harness.run.execute.execute_cell`, tag its rows
    with where it ran.

    ``spec`` is the driver's :class:`KindSpec` for the cell's kind: registering it here makes kinds
    that the driver registered at run time (plug-ins, tests) known in the worker too.
    """
    if cell.kind not in KINDS:
        KINDS.add(cell.kind, spec)
    gpu_ids = list(ray.get_gpu_ids())
    _limit_threads(num_cpus)
    ctx = _context_on_worker(ctx_payload, gpu_ids)
    rows = list(execute_cell(cell, ctx))
    placement = {
        "ray_node": ray.util.get_node_ip_address(),
        "gpu_index": ",".join(str(g) for g in gpu_ids) or None,
        "ray_attempt": attempt,
    }
    # execute_cell already adds host and device_name (GPU name, else CPU model) as seen here.
    return [{**row, **placement} for row in rows]


_remote_run_cell = ray.remote(max_retries=0, retry_exceptions=False)(run_cell_on_worker)


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------

def checkout_pythonpath() -> str:
    """PYTHONPATH with this checkout first, so local workers import the driver's code (and modules
    such as ``tests.*`` that are not installed)."""
    parts = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))


def shipped_code_env() -> Dict[str, Any]:
    """runtime_env for a remote cluster: ship this checkout (less run outputs) as the workers'
    ``working_dir``, so they run exactly the code whose commit the rows record."""
    return {"working_dir": str(REPO_ROOT), "excludes": list(SHIP_EXCLUDES)}


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` nobody listens on: ``ray.init`` would
    otherwise retry for minutes.  ``auto`` is left to Ray (it fails at once without a cluster)."""
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        if address == "auto":
            return
        raise _bad_setting(f"--address {address!r}: give auto, HOST:PORT (the head's GCS port, 6379 "
                           f"by default) or ray://HOST:PORT (Ray Client, 10001 by default)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise _bad_setting(f"could not reach a Ray cluster at --address {address} ({exc}); start one "
                           f"with `ray start --head`, or leave --address out to start a local one") from None


def start_local_ray(num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
                    runtime_env: Optional[Dict[str, Any]] = None, log_to_driver: bool = False,
                    **init_kwargs: Any) -> None:
    """``ray.init`` a single-machine cluster whose workers import this checkout.

    PYTHONPATH is set in the environment the raylet inherits rather than through a runtime_env:
    a runtime_env makes every fresh worker (one per crash, too) wait seconds for Ray's runtime-env
    agent.
    """
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = checkout_pythonpath()
    try:
        ray.init(address="local",  # a new cluster, even if `ray start` left one (or its file) here
                 num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=runtime_env or None,
                 include_dashboard=False, log_to_driver=log_to_driver,
                 logging_level=logging.WARNING, **init_kwargs)
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous

@dataclass
class _Job:
    """A cell submitted to Ray (one attempt)."""

    cell: Cell
    line: Hashable
    attempt: int


class CellUnschedulable(Exception):
    """The cell asks for more than any node of the cluster has (it would wait in Ray forever)."""


def _bad_setting(message: str) -> SuiteError:
    """A bad executor setting: a SuiteError (a ValueError) so the CLI prints it and exits 2."""
    return SuiteError([Issue("command line", 0, message)])


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad_setting(f"{name} must be a number (got {value!r})") from None
    if not number > 0:
        raise _bad_setting(f"{name} must be > 0 (got {value!r}); e.g. 1")
    return number


def check_gpus_per_cell(value: Any, name: str = "gpus_per_cell") -> float:
    """A fraction in (0, 1) (cells share a GPU) or a whole number of GPUs, as Ray accepts."""
    number = _positive(name, value)
    if number > 1 and not number.is_integer():
        raise _bad_setting(f"{name}={value!r}: Ray takes a fraction below 1 (cells share a GPU) or a "
                         f"whole number of GPUs; use e.g. 0.25, 0.5, 1 or 2")
    return number


class RayExecutor(Executor):
    """Runs cells as Ray tasks; see the module docstring for the rules.

    address:       None -> start a local Ray on this machine (all its GPUs, or its CPUs);
                   "auto" -> the cluster started on this machine with ``ray start --head``;
                   "ray://host:10001" -> a remote cluster through Ray Client.  If Ray is already
                   initialised in this process (a notebook, a test), that connection is used as is.
    gpus_per_cell: GPUs a non-timing GPU cell asks for (fractions < 1 share a GPU).
    cpus_per_cell: CPUs every cell asks for (and the torch threads it uses).
    retries:       how many times a cell whose worker died is resubmitted before it becomes ``error``.
    runtime_env:   Ray runtime_env for the job.  Default: a local cluster's workers get this checkout
                   on ``PYTHONPATH``; a remote cluster gets this checkout shipped as ``working_dir``
                   (so workers run exactly the code whose commit the rows record); pass ``{}`` when
                   every node has the same checkout installed already.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, gpus_per_cell: Optional[float] = None,
                 cpus_per_cell: Optional[float] = None, retries: int = 0,
                 runtime_env: Optional[Dict[str, Any]] = None, num_cpus: Optional[int] = None,
                 num_gpus: Optional[int] = None, log_to_driver: bool = False, poll_s: float = 0.5):
        self.address = address
        self._gpus_flag = None if gpus_per_cell is None else check_gpus_per_cell(gpus_per_cell, "--gpus-per-cell")
        self._gpus_suite: Optional[float] = None
        self._mps_suite = False
        self.cpus_per_cell = 1.0 if cpus_per_cell is None else _positive("--cpus-per-cell", cpus_per_cell)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise _bad_setting(f"--retries must be a whole number >= 0 (got {retries!r})")
        self.retries = retries
        self.runtime_env = runtime_env
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.log_to_driver = log_to_driver
        self.poll_s = poll_s
        self._owns_ray = False
        self._connected = False
        self._max_node: Dict[str, float] = {}

    @property
    def gpus_per_cell(self) -> float:
        """GPUs a non-timing GPU cell asks for: the command-line flag, else the suite's
        ``gpus_per_cell``, else 1."""
        if self._gpus_flag is not None:
            return self._gpus_flag
        return 1.0 if self._gpus_suite is None else self._gpus_suite

    def use_suite(self, suite_data: Mapping[str, Any]) -> None:
        """Take the suite's top-level ``gpus_per_cell`` (if any) for the next :meth:`run`; the
        runner calls this before each suite, since one executor serves several suites."""
        value = suite_data.get("gpus_per_cell")
        self._gpus_suite = None if value is None else check_gpus_per_cell(value, "suite key gpus_per_cell")
        self._mps_suite = bool(suite_data.get("mps"))

    # -- cluster -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Start or join the Ray cluster (once) and note the largest node, to spot cells no node fits."""
        if self._connected:
            return
        if not ray.is_initialized():
            if self.address is None:
                start_local_ray(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                runtime_env=self.runtime_env, log_to_driver=self.log_to_driver)
            else:
                check_reachable(self.address)
                env = shipped_code_env() if self.runtime_env is None else self.runtime_env
                try:
                    ray.init(address=self.address, runtime_env=env or None,
                             log_to_driver=self.log_to_driver, logging_level=logging.WARNING)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    raise _bad_setting(
                        f"could not join the Ray cluster at --address {self.address} ({exc}). If the "
                        f"head is up, it may require token auth (Ray >= 2.59 turns it on when "
                        f"~/.ray/auth_token exists): export RAY_AUTH_MODE=token here, with the head's "
                        f"token in ~/.ray/auth_token or RAY_AUTH_TOKEN; on the head itself --address "
                        f"auto works. No cluster yet: `ray start --head`, or leave --address out to "
                        f"start a local one") from None
            self._owns_ray = True
        self._connected = True
        alive = [n for n in ray.nodes() if n.get("Alive")]
        for key in ("CPU", "GPU"):
            self._max_node[key] = max((float(n.get("Resources", {}).get(key, 0)) for n in alive), default=0.0)
        log.info("Ray cluster: %s", self.cluster_summary())

    def cluster_summary(self) -> Dict[str, Any]:
        """What the cells ran on, for meta.json / the console (connects if needed)."""
        self.connect()
        alive = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        return {
            "executor": self.name, "ray_version": ray.__version__,
            "address": self.address or "local", "nodes": len(alive),
            "cpus": total.get("CPU", 0), "gpus": total.get("GPU", 0),
            "gpus_per_cell": self.gpus_per_cell, "cpus_per_cell": self.cpus_per_cell,
            "retries": self.retries,
            **self._mps_summary(),
        }

    def _mps_summary(self) -> Dict[str, Any]:
        """A suite's ``mps: true`` is for the local executor's processes; here it is only noted."""
        if not self._mps_suite:
            return {}
        from harness.run.mps import not_started

        return {"mps": not_started("mps is for the local executor (--jobs N); the Ray executor does not "
                                   "start it, so start MPS on the nodes yourself")}

    def cluster_has_gpus(self) -> bool:
        """Whether any node has a GPU: what ``device: auto`` should mean for this run (the
        driver's own CUDA says nothing about the cluster's)."""
        self.connect()
        return self._max_node.get("GPU", 0) > 0

    def call_on_worker(self, fn: Callable[..., Any], *args: Any, device: str = "cpu") -> Any:
        """``fn(*args)`` run in a worker (holding one GPU when ``device`` is cuda) and its result,
        e.g. a kind's ``run_meta(device)`` measured on the cluster's GPUs instead of the driver's."""
        self.connect()
        gpus = 1 if str(device).startswith("cuda") else 0
        return ray.get(ray.remote(max_retries=0)(fn).options(num_gpus=gpus, num_cpus=1).remote(*args))

    def close(self) -> None:
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = self._connected = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- policy --------------------------------------------------------------------------------

    def resources_for(self, cell: Cell, device: str) -> Dict[str, float]:
        """What one cell asks Ray for; raises :class:`CellUnschedulable` if no node could give it."""
        request = {"num_cpus": self.cpus_per_cell, "num_gpus": 0.0}
        if str(device).startswith("cuda"):
            request["num_gpus"] = 1.0 if cell.kind in EXCLUSIVE_GPU_KINDS else self.gpus_per_cell
            if self._max_node.get("GPU", 0) <= 0:
                raise CellUnschedulable(
                    f"the cell runs on device {device!r} but the Ray cluster has no GPUs "
                    f"(`ray status` lists its resources); set device: cpu, or join GPU nodes")
            if request["num_gpus"] > self._max_node["GPU"]:
                raise CellUnschedulable(
                    f"the cell asks for {request['num_gpus']:g} GPUs but the largest node has "
                    f"{self._max_node['GPU']:g}; lower --gpus-per-cell")
        if request["num_cpus"] > self._max_node.get("CPU", 0):
            raise CellUnschedulable(
                f"the cell asks for {request['num_cpus']:g} CPUs but the largest node has "
                f"{self._max_node.get('CPU', 0):g}; lower --cpus-per-cell")
        return request

    @staticmethod
    def line_of(cell: Cell, index: int) -> Hashable:
        """Cells with the same line run one after another (:func:`harness.run.executors.chain_key`)."""
        return chain_key(cell, index)

    # -- the run -------------------------------------------------------------------------------

    def run(self, cells: Sequence[Cell], make_context: Callable[[Cell], CellContext],
            on_done: Callable[[Cell, Rows], None],
            skip_reason: Callable[[Cell], Optional[str]]) -> None:
        self.connect()
        lines: "OrderedDict[Hashable, Deque[Cell]]" = OrderedDict()
        for index, cell in enumerate(cells):
            lines.setdefault(self.line_of(cell, index), deque()).append(cell)
        busy: set = set()
        in_flight: Dict[Any, _Job] = {}
        spec_refs: Dict[str, Any] = {}  # each kind's spec goes to the object store once

        def start(cell: Cell, line: Hashable, attempt: int) -> Optional[Rows]:
            """Submit ``cell``; returns rows instead if it cannot be submitted."""
            ctx = make_context(cell)
            try:
                resources = self.resources_for(cell, ctx.device)
            except CellUnschedulable as exc:
                return [self._failure_row("error", str(exc), attempt - 1)]
            if cell.kind not in spec_refs:
                spec_refs[cell.kind] = ray.put(KINDS.get(cell.kind))
            ref = _remote_run_cell.options(**resources).remote(
                cell, spec_refs[cell.kind], _context_payload(ctx), resources["num_cpus"], attempt)
            in_flight[ref] = _Job(cell, line, attempt)
            busy.add(line)
            return None

        def submit_ready() -> None:
            for line in list(lines):
                queue = lines[line]
                while queue and line not in busy:
                    cell = queue.popleft()
                    reason = skip_reason(cell)
                    rows = ([self._failure_row("skipped", reason, 0)] if reason is not None
                            else start(cell, line, attempt=1))
                    if rows is not None:
                        on_done(cell, rows)
                if not queue:
                    del lines[line]

        try:
            submit_ready()
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    job = in_flight.pop(ref)
                    rows = self._collect(ref, job)
                    if rows is None:  # the worker died: try again
                        retry_rows = start(job.cell, job.line, job.attempt + 1)
                        if retry_rows is None:
                            continue
                        rows = retry_rows
                    busy.discard(job.line)
                    on_done(job.cell, rows)
                if ready:
                    submit_ready()
        except BaseException:
            self._cancel(list(in_flight))
            raise

    def _collect(self, ref: Any, job: _Job) -> Optional[Rows]:
        """The cell's rows, a failure row, or None when the cell should be resubmitted."""
        try:
            return ray.get(ref)
        except RETRYABLE_ERRORS as exc:
            if job.attempt <= self.retries:
                log.warning("cell %s: worker died (%s); retrying (attempt %d of %d)", job.cell.cell_id,
                            type(exc).__name__, job.attempt + 1, self.retries + 1)
                return None
            status = "oom" if isinstance(exc, getattr(ray_errors, "OutOfMemoryError", ())) else "error"
            what = "host memory ran out (Ray's memory monitor killed the worker)" if status == "oom" \
                else "the Ray worker died while running the cell"
            tries = f" after {job.attempt} attempts" if job.attempt > 1 else ""
            return [self._failure_row(status, f"{what}{tries}: {self._describe(exc)}", job.attempt)]
        except ray_errors.RayError as exc:
            return [self._failure_row("error", f"Ray could not run the cell: {self._describe(exc)}",
                                      job.attempt)]

    @staticmethod
    def _describe(exc: BaseException) -> str:
        """One readable line for a Ray exception (RayTaskError carries the worker's exception)."""
        cause = getattr(exc, "cause", None)
        if isinstance(exc, ray_errors.RayTaskError) and cause is not None:
            text = f"{type(cause).__name__}: {cause}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        text = " ".join(text.split())
        return text if len(text) <= 400 else text[:397] + "..."

    @staticmethod
    def _failure_row(status: str, message: str, attempt: int) -> Dict[str, Any]:
        row = failure_row(status, message)
        row.update(ray_node=None, gpu_index=None, ray_attempt=attempt)
        return row

    def _cancel(self, refs: List[Any]) -> None:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker is gone: nothing left to stop
                pass
