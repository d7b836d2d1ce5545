"""Suite kinds (task | speed | memory | decode): each is a :class:`KindSpec`.

The runner looks a cell's kind up here and calls ``spec.run_cell(cell, ctx)``, which yields rows
(see :mod:`harness.cells`).  Entries are lazy so that importing the harness does not import every
kind's dependencies.

This package owns what a cell of each kind does, with its helpers: ``bench/`` (timing, memory, roofline
costs, the registered benchmark targets), ``tasks/`` (synthetic tasks) and ``training/`` (the training loop).
May import: the contracts, ``models`` and ``kernels``.  Never suite, store, run or analysis.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Type

from harness.cells import Cell, CellContext
from harness.registry import Registry


@dataclass(frozen=True)
class KindSpec:
    """How one suite kind validates and runs its cells.

    config_model: pydantic model that validates one resolved cell's ``params`` (extra keys forbidden).
    run_cell:     (cell, ctx) -> iterable of rows (dicts from ``make_row``).
    skip_reason:  optional (cell, finished) -> str | None, where ``finished`` is a list of
                  (Cell, status) already done in this run, in order; a string skips the cell with that
                  reason (e.g. "OOM at a smaller seq_len for s6.chunked").
    run_meta:     optional (device) -> dict merged into meta.json once per run (e.g. measured ceilings).
    metrics:      the metric names the kind's rows may carry (an ``expect`` entry naming another is a
                  validation error); None: not declared, not checked.
    row_columns:  columns its rows add besides the cell's params (``eval_seq_len``), which an
                  ``expect.where`` may name.
    estimate_bytes: optional (cell) -> bytes the cell must hold at least (inputs and activations, a
                  lower bound); a cell whose estimate exceeds the device's free memory is skipped with
                  the estimate before it allocates (:mod:`harness.kinds.footprint`).
    """

    name: str
    config_model: Type[Any]
    run_cell: Callable[[Cell, CellContext], Iterable[Dict[str, Any]]]
    skip_reason: Optional[Callable[[Cell, List[Tuple[Cell, str]]], Optional[str]]] = None
    run_meta: Optional[Callable[[str], Dict[str, Any]]] = None
    metrics: Optional[Tuple[str, ...]] = None
    row_columns: Tuple[str, ...] = ("repeat",)
    estimate_bytes: Optional[Callable[[Cell], Optional[int]]] = None


KINDS: Registry[KindSpec] = Registry("suite kind")
KINDS.add("task", "harness.kinds.task:SPEC", help="train a model on a synthetic task, evaluate accuracy")
KINDS.add("speed", "harness.kinds.speed:SPEC", help="time fwd / fwd+bwd over a sweep (e.g. seq_len)")
KINDS.add("memory", "harness.kinds.memory:SPEC", help="peak memory of fwd / fwd+bwd / a training step")
KINDS.add("decode", "harness.kinds.decode:SPEC", help="per-token latency of recurrent step decoding")
