"""The driver: plan a run directory, run the cells through an executor, write rows as cells end.

The driver is the only writer of a run directory.  Each cell's rows are appended to
``rows.jsonl`` (fsync'ed) the moment the cell ends, so a killed run loses at most the cell in
flight; ``resume`` re-plans the same cells and runs only those without rows.  At the end, and on
Ctrl-C, the tables (``results.parquet``, ``results.csv``) are rebuilt from the JSONL.

Layout: ``<out>/<suite>/<UTC timestamp>-<short commit>[-dirty]/`` with ``rows.jsonl``,
``results.parquet``, ``results.csv``, ``meta.json``, ``suite.yaml`` and ``cells/<id>.log``
tracebacks of errored cells.

An executor may also offer (the Ray one does; each is used only where present): ``use_suite(data)``
(the suite's own settings, e.g. ``gpus_per_cell``), ``cluster_summary()`` (what the cells run on, for
``meta.json["executor"]``), ``cluster_has_gpus()`` (whether the machines that run the cells have
CUDA, which this process's torch cannot tell), ``call_on_worker(fn, *args, device=)`` (a kind's
``run_meta`` measured where the cells run) and ``run_summary()`` (what the executor set up around the
cells, e.g. CUDA MPS; merged into ``meta.json["executor"]`` when the run ends, Ctrl-C included).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from harness.cells import Cell, CellContext
from harness.errors import Issue, SuiteError
from harness.run.executors import Executor, Rows
from harness.run.local import LocalExecutor
from harness.dotted import merge
from harness.suite.expand import with_varying
from harness.kinds import KINDS
from harness.store import meta as run_meta
from harness.run.progress import Progress
from harness.store.results import (META_FILE, SUITE_FILE, RowStore, cell_status, param_columns, tidy_row,
                             write_tables)

CUDA_MISSING = "CUDA not available"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the tables were written and ``run_dir`` can be resumed."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    total: int
    counts: Dict[str, int] = field(default_factory=dict)

    @property
    def any_error(self) -> bool:
        return self.counts.get("error", 0) > 0


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_dir(out_root: Path, suite: str) -> Path:
    """``<out>/<suite>/<UTC timestamp>-<short commit>[-dirty]``; a numeric suffix avoids collisions."""
    git = run_meta.git_state()
    base = f"{_utc_stamp()}-{git['short']}{'-dirty' if git['dirty'] else ''}"
    parent = Path(out_root) / suite
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = parent / (base if n == 0 else f"{base}.{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory under {parent}")


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def cell_time_limit(params: Dict[str, Any]) -> Optional[float]:
    """Seconds a cell may run: ``timeout_s`` (bench cells), else a task cell's ``train.timeout_s``
    plus a grace (half of it, at least 60 s), because the training loop treats ``train.timeout_s``
    as a budget after which it stops training and still runs the final evaluation; the hard
    deadline only catches a cell that hangs past that.  None: no limit."""
    limit = params.get("timeout_s")
    if limit is not None:
        return float(limit)
    train = params.get("train")
    budget = train.get("timeout_s") if isinstance(train, dict) else None
    if budget is not None:
        return float(budget) + max(60.0, 0.5 * float(budget))
    return None


def cell_deadline(params: Union[Cell, Dict[str, Any]]) -> Optional[float]:
    """``time.monotonic()`` deadline for :class:`CellContext` (see :func:`cell_time_limit`);
    takes a cell (its params as written) or resolved params (the kind's defaults filled in)."""
    limit = cell_time_limit(params.params if isinstance(params, Cell) else params)
    return time.monotonic() + limit if limit else None


def resolved_params(spec: Any, cell: Cell) -> Dict[str, Any]:
    """The cell's params with the kind's defaults filled in (``timeout_s: 120`` the suite left out)."""
    try:
        dumped = spec.config_model.model_validate(cell.params).model_dump(mode="json", by_alias=True)
    except Exception:  # noqa: BLE001 - validated at expansion; fall back to the params as written
        return cell.params
    return merge(dumped, cell.params)


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def cells_have_cuda(executor: Executor) -> bool:
    """Whether the machines that run the cells have CUDA: the cluster's word for an executor that
    runs cells elsewhere (Ray), else this process's torch."""
    has_gpus = getattr(executor, "cluster_has_gpus", None)
    return bool(has_gpus()) if callable(has_gpus) else cuda_available()


def checks_cuda_here(executor: Executor) -> bool:
    """Whether a ``cuda`` cell is skipped when *this* machine has no CUDA.  Not for Ray: a laptop may
    drive a GPU cluster, and the Ray executor writes its own error row when no node has a GPU."""
    return executor.name != "ray"


def executor_meta(executor: Executor) -> Dict[str, Any]:
    """``meta.json["executor"]``: the executor's name and, where it has one, its cluster summary
    (nodes, CPUs, GPUs, per-cell resources), so a run says what it ran on."""
    info: Dict[str, Any] = {"name": executor.name}
    summary = getattr(executor, "cluster_summary", None)
    if callable(summary):
        info.update(summary())
    return info


def kind_run_meta(spec: Any, device: str, executor: Executor) -> Dict[str, Any]:
    """The kind's ``run_meta(device)``, measured where the cells run: in a worker for an executor
    with ``call_on_worker`` (the cluster's GPU, not the driver's), else in this process."""
    call_on_worker = getattr(executor, "call_on_worker", None)
    if not callable(call_on_worker):
        return spec.run_meta(device) or {}
    # The worker sees only the GPU it was given (Ray sets CUDA_VISIBLE_DEVICES): it is "cuda" there,
    # as it is for the cells themselves; "cuda:3" would name a device the worker does not have.
    on_worker = "cuda" if device.startswith("cuda") else device
    return call_on_worker(spec.run_meta, on_worker, device=device) or {}


def write_plan(run_dir: Path, suite_data: Dict[str, Any], source: str, cells: Sequence[Cell],
               overrides: Sequence[Tuple[str, Any]] = (), filters: Sequence[Tuple[str, Any]] = ()) -> None:
    """``suite.yaml``: the suite as written, how it was resolved, and every expanded cell with its id."""
    plan = {
        "suite": suite_data,
        "source": source,
        "overrides": {k: v for k, v in overrides},
        "filters": {k: v for k, v in filters},
        "cells": [{"cell_id": c.cell_id, "kind": c.kind, "params": c.params} for c in cells],
    }
    (run_dir / SUITE_FILE).write_text(yaml.safe_dump(plan, sort_keys=False, default_flow_style=None),
                                      encoding="utf-8")


def extend_plan(run_dir: Path, cells: Sequence[Cell]) -> None:
    """Add cells that ``suite.yaml`` does not list yet (a resumed run asked for more cells)."""
    path = Path(run_dir) / SUITE_FILE
    plan = yaml.safe_load(path.read_text(encoding="utf-8"))
    known = {c["cell_id"] for c in plan["cells"]}
    new = [{"cell_id": c.cell_id, "kind": c.kind, "params": c.params} for c in cells if c.cell_id not in known]
    if new:
        plan["cells"].extend(new)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(plan, sort_keys=False, default_flow_style=None), encoding="utf-8")
        os.replace(tmp, path)


def read_plan(run_dir: Path) -> Tuple[Dict[str, Any], List[Cell]]:
    """The suite data and the cells a run directory was planned with (for ``--resume``)."""
    path = Path(run_dir) / SUITE_FILE
    plan = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if not (isinstance(plan, dict) and {"suite", "cells"} <= set(plan) and (Path(run_dir) / META_FILE).exists()):
        raise SuiteError([Issue(str(run_dir), 0, f"not a run directory (no {SUITE_FILE} with the planned "
                                f"cells, or no {META_FILE}); give a directory written by `ssmbench run`")])
    suite = plan["suite"]
    cells = [Cell(suite["name"], c["kind"], c["cell_id"], c["params"]) for c in plan["cells"]]
    return plan, with_varying(cells)


def _commits_of(meta: Dict[str, Any]) -> List[str]:
    """The code versions whose rows a run holds, as labels (``3aa1a21``, ``7dda300-dirty:ab12cd``)."""
    if meta.get("commits"):
        return [c.strip() for c in str(meta["commits"]).split(",")]
    if not meta.get("commit"):
        return []
    return [run_meta.commit_label(str(meta["commit"]), bool(meta.get("dirty")), meta.get("changes"))]


def resume_mismatch(run_dir: Path) -> Optional[str]:
    """Why finishing ``run_dir`` with this checkout would mix two versions of the code (another
    commit, a dirty tree where the run's was clean or the reverse, other uncommitted changes), else None."""
    meta = json.loads((Path(run_dir) / META_FILE).read_text(encoding="utf-8"))
    run_meta.exclude_output_dir(Path(run_dir).resolve().parents[1])   # <out>/<suite>/<run>: its output is not code
    git = run_meta.git_state()
    then = run_meta.commit_label(str(meta.get("commit", "unknown")), bool(meta.get("dirty")), meta.get("changes"))
    now = run_meta.commit_label(git["commit"], git["dirty"], git.get("changes"))
    if then == now:
        return None
    if meta.get("commit") != git["commit"]:
        what = f"the run was made at commit {then} and this checkout is at {now}"
    elif bool(meta.get("dirty")) != git["dirty"]:
        what = (f"the run was made with {'uncommitted changes' if meta.get('dirty') else 'a clean tree'} "
                f"({then}) and this checkout {'has uncommitted changes' if git['dirty'] else 'is clean'} ({now})")
    else:
        what = f"the run was made with other uncommitted changes ({then}) than this checkout's ({now})"
    return f"{what}: its rows would come from two versions of the code"


def run_suite(suite_data: Dict[str, Any], cells: Sequence[Cell], *, out_root: Path = Path("results"),
              resume_dir: Optional[Path] = None, executor: Optional[Executor] = None,
              progress: Optional[Progress] = None, source: str = "",
              overrides: Sequence[Tuple[str, Any]] = (), filters: Sequence[Tuple[str, Any]] = (),
              argv: Optional[List[str]] = None) -> RunResult:
    """Run ``cells`` (one suite) into a new run directory, or into ``resume_dir`` skipping its done cells."""
    executor = executor or LocalExecutor()
    progress = progress or Progress()
    name = suite_data["name"]
    kind = suite_data["kind"]
    spec = KINDS.get(kind)
    use_suite = getattr(executor, "use_suite", None)
    if callable(use_suite):  # first: one executor serves several suites, each with its own settings
        use_suite(suite_data)
    executor_info = executor_meta(executor)  # joins a cluster: fails before a run directory exists

    run_meta.exclude_output_dir(out_root if resume_dir is None else Path(resume_dir).resolve().parents[1])
    if resume_dir is None:
        run_dir = new_run_dir(out_root, name)
        write_plan(run_dir, suite_data, source, cells, overrides, filters)
    else:
        run_dir = Path(resume_dir)
        extend_plan(run_dir, cells)
    run_id = f"{name}/{run_dir.name}"
    store = RowStore(run_dir)
    torn = store.repair()
    if torn:
        progress.message(f"dropped the torn rows of cell {torn} (killed mid-write); it runs again")
    done_status = store.finished()

    by_id = {c.cell_id: c for c in cells}
    finished: List[Tuple[Cell, str]] = [(by_id[cid], st) for cid, st in done_status.items() if cid in by_id]
    todo = [c for c in cells if c.cell_id not in done_status]
    counts: Dict[str, int] = {}
    for _, st in finished:
        counts[st] = counts.get(st, 0) + 1

    git = run_meta.git_state()
    devices = sorted({str(c.params.get("device", "cpu")) for c in cells})
    meta_path = run_dir / META_FILE
    meta: Dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    earlier = _commits_of(meta)
    meta.update(run_meta.collect(",".join(devices), argv))
    if not meta.get("dirty"):
        meta.pop("changes", None)  # left by an earlier, dirty part of the run
    commits = list(dict.fromkeys(earlier + _commits_of(meta)))
    if len(commits) > 1:  # resumed at another commit (--allow-other-commit): each row has its own
        meta["commits"] = ", ".join(commits)
    meta.update({"run_id": run_id, "suite": name, "kind": kind, "source": source, "n_cells": len(cells)})
    meta.setdefault("start_time", _now_iso())
    if resume_dir is not None:
        meta.setdefault("resumed_at", []).append(_now_iso())
    meta["executor"] = executor_info  # a resumed run records the executor that finished it
    if spec.run_meta is not None and todo:
        for device in devices:
            if device.startswith("cuda") and not cells_have_cuda(executor):
                continue
            try:
                meta.update(kind_run_meta(spec, device, executor))
            except Exception as exc:  # noqa: BLE001 - metadata must not stop a run
                meta["run_meta_error"] = f"{type(exc).__name__}: {exc}"
    _write_json(meta_path, meta)

    resolved_cache: Dict[str, Dict[str, Any]] = {}

    def resolved(cell: Cell) -> Dict[str, Any]:
        if cell.cell_id not in resolved_cache:
            resolved_cache[cell.cell_id] = resolved_params(spec, cell)
        return resolved_cache[cell.cell_id]

    def make_context(cell: Cell) -> CellContext:
        return CellContext(device=str(cell.params.get("device", "cpu")), deadline=cell_deadline(resolved(cell)),
                           run_dir=str(run_dir))

    check_cuda = checks_cuda_here(executor)

    def skip_reason(cell: Cell) -> Optional[str]:
        progress.cell_started(cell)
        if check_cuda and str(cell.params.get("device", "cpu")).startswith("cuda") and not cuda_available():
            return CUDA_MISSING
        if spec.skip_reason is not None:
            return spec.skip_reason(cell, list(finished))
        return None

    def on_done(cell: Cell, rows: Rows) -> None:
        run = {"run_id": run_id, "suite": name, "cell_id": cell.cell_id, "commit": git["commit"],
               "dirty": git["dirty"], "kind": kind}
        cols = param_columns(cell.params, resolved(cell))
        store.append([tidy_row(r, run, cols) for r in rows])
        status = cell_status(rows)
        finished.append((cell, status))
        counts[status] = counts.get(status, 0) + 1
        progress.cell_done(cell, status, rows[0].get("wall_s") if rows else None)

    progress.start(f"{name} -> {run_dir}", len(cells), len(cells) - len(todo))
    try:
        if todo:
            executor.run(todo, make_context, on_done, skip_reason)
    except KeyboardInterrupt:
        progress.close()
        _finish(run_dir, meta, counts, executor, interrupted=True)
        raise RunInterrupted(run_dir) from None
    except BaseException:
        progress.close()
        _finish(run_dir, meta, counts, executor, interrupted=True)
        raise
    progress.close()
    _finish(run_dir, meta, counts, executor, interrupted=False)
    return RunResult(run_dir, run_id, len(cells), counts)


def _finish(run_dir: Path, meta: Dict[str, Any], counts: Dict[str, int], executor: Executor,
            interrupted: bool) -> None:
    run_summary = getattr(executor, "run_summary", None)
    if callable(run_summary):
        meta["executor"].update(run_summary())
    write_tables(run_dir)
    meta["end_time"] = _now_iso()
    meta["interrupted"] = interrupted
    meta["status_counts"] = dict(sorted(counts.items()))
    _write_json(run_dir / META_FILE, meta)
