"""Run one cell and return its rows; never raises, so one bad cell cannot end a sweep.

This is the unit of work every executor ships (in-process, or to a Ray worker): it imports
nothing at module level beyond the harness contracts, and it needs no driver state.
"""
from __future__ import annotations

import gc
import os
import socket
import time
import traceback
from typing import Any, Dict, List

from harness.cells import Cell, CellContext, CellFailure, CellSkipped, is_oom, make_row
from harness.store.meta import device_name

Rows = List[Dict[str, Any]]


def free_memory() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 500:
        text = text[:497] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_row(status: str, message: str) -> Dict[str, Any]:
    """The row that records how a cell ended when it did not end ok."""
    return make_row("cell", None, "", status=status, message=message)


def _save_traceback(ctx: CellContext, cell: Cell, exc: BaseException) -> str:
    if not ctx.run_dir:
        return ""
    try:
        log_dir = os.path.join(ctx.run_dir, "cells")
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, f"{cell.cell_id}.log")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return f" (traceback: {os.path.relpath(path, ctx.run_dir)})"
    except OSError:
        return ""


def execute_cell(cell: Cell, ctx: CellContext) -> Rows:
    """Run ``cell`` through its kind's ``run_cell``; rows yielded before a failure are kept.

    A cell whose kind estimates it needs more memory than its device has free is ``skipped`` before it
    starts (:mod:`harness.kinds.footprint`).  CellFailure -> its status; OOM on any device -> ``oom``
    (memory freed); anything else -> ``error`` with a
    one-line message (the traceback goes to ``run_dir/cells/<cell_id>.log``).  Adds ``host``,
    ``device_name`` and ``wall_s`` to every row.
    """
    rows: Rows = []
    start = time.perf_counter()
    oom = False
    try:
        from harness.kinds import KINDS

        spec = KINDS.get(cell.kind)
        if spec.estimate_bytes is not None:
            from harness.kinds.footprint import too_large
            reason = too_large(spec.estimate_bytes, cell, ctx.device)
            if reason is not None:
                raise CellSkipped(reason)
        for row in spec.run_cell(cell, ctx):
            rows.append(dict(row))
    except CellFailure as exc:
        rows.append(failure_row(exc.status, " ".join(str(exc).split()) or exc.status))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the point of this function
        if is_oom(exc):
            oom = True
            rows.append(failure_row("oom", one_line(exc)))
        elif isinstance(exc, SystemExit):
            rows.append(failure_row("error", f"the cell called exit({exc.code})"))
        else:
            rows.append(failure_row("error", one_line(exc) + _save_traceback(ctx, cell, exc)))
    if oom:  # after the except block, so the traceback's tensors are already released
        free_memory()
    if not rows:
        rows.append(failure_row("error", "the cell produced no rows"))
    wall = time.perf_counter() - start
    host, name = socket.gethostname(), device_name(ctx.device)
    for row in rows:
        row.setdefault("host", host)
        row.setdefault("device_name", name)
        row["wall_s"] = round(wall, 4)
    return rows
