"""The contract between the runner and the code that runs one cell.

A *cell* is one fully resolved configuration of a suite (defaults merged with one point of the
sweep).  A *cell runner* (see :mod:`harness.kinds`) turns a cell into *rows*: one observation each,
built with :func:`make_row`.  The runner adds the run-level columns (run_id, suite, cell_id, commit,
dirty, kind) and the cell's parameters, and writes the rows when the cell ends.

Failures are signalled by exceptions, so a cell runner never has to build failure rows itself:
``CellDiverged`` -> status ``diverged``, ``CellSkipped`` -> ``skipped``, ``CellTimeout`` ->
``timeout``, running out of memory on any device (:func:`is_oom`) -> ``oom``, anything else ->
``error``.  Rows yielded before the exception are kept.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

STATUSES = ("ok", "oom", "error", "diverged", "skipped", "timeout")


class CellFailure(Exception):
    """Base of the exceptions a cell runner raises to end a cell with a non-ok status."""

    status = "error"


class CellOOM(CellFailure):
    status = "oom"


#: What allocators say when they cannot allocate, lower-cased: CUDA ("CUDA out of memory", cuBLAS's
#: "CUDA error: out of memory"), PyTorch's CPU allocator ("DefaultCPUAllocator: can't allocate memory:
#: you tried to allocate ... bytes") and the OS (errno 12, "Cannot allocate memory").
OOM_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means the device ran out of memory, on any device: :class:`CellOOM`, torch's
    ``OutOfMemoryError``, Python's ``MemoryError``, or a RuntimeError/OSError whose text an allocator
    wrote (:data:`OOM_PHRASES`).  One answer for every kind, so a CPU allocation failure is ``oom``
    as a CUDA one is, never ``error``."""
    if isinstance(exc, (CellOOM, MemoryError)):
        return True
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # noqa: BLE001 - no torch: the text still tells
        pass
    return isinstance(exc, (RuntimeError, OSError)) and any(p in str(exc).lower() for p in OOM_PHRASES)


class CellDiverged(CellFailure):
    status = "diverged"


class CellSkipped(CellFailure):
    status = "skipped"


class CellTimeout(CellFailure):
    status = "timeout"


@dataclass(frozen=True)
class Cell:
    """One resolved configuration of a suite.

    ``params`` is the nested config (defaults merged with this cell's sweep values, ``--set``
    overrides applied, ``device`` resolved); ``varying`` holds the dotted keys that differ between
    the suite's cells, for display; ``cell_id`` is a stable hash of ``params`` (independent of key
    order and of the suite's name).
    """

    suite: str
    kind: str
    cell_id: str
    params: Dict[str, Any]
    varying: Dict[str, Any] = field(default_factory=dict)

    def get(self, dotted: str, default: Any = None) -> Any:
        """``cell.get("model.d_state")`` -> value at that dotted path, or ``default``."""
        node: Any = self.params
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


@dataclass
class CellContext:
    """What the runner hands a cell runner besides the cell.

    ``device`` is a torch device string ("cpu" or "cuda[:i]"); ``deadline`` is a
    ``time.monotonic()`` value after which the cell should stop (``None`` for no limit): long loops
    call :meth:`check_deadline` so runaway cells end as ``timeout`` instead of hanging the sweep.
    ``run_dir`` is where the run writes (a cell may put artefacts under ``run_dir/cells/<id>``).
    """

    device: str = "cpu"
    deadline: Optional[float] = None
    run_dir: Optional[str] = None

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CellTimeout("cell exceeded its time limit (timeout_s)")

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


def make_row(metric: str, value: Any, unit: str = "", *, repeat: int = 0, status: str = "ok",
             message: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """One observation.  ``extra`` adds columns of the row's own (``step``, ``eval_seq_len``, ``pass``)."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    if value is not None and not isinstance(value, (int, float, str, bool)):
        value = float(value)  # numpy / 0-d tensor scalars
    row = {"metric": metric, "value": value, "unit": unit, "repeat": int(repeat), "status": status}
    if message is not None:
        row["message"] = message
    row.update(extra)
    return row
