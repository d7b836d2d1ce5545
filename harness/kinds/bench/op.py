"""Operator targets from three functions: the inputs, the call under test, and its reference.

One description gives both halves of a speed cell: the timed :class:`Workload` (inputs built once, one pass
per call) and the :class:`~harness.kinds.bench.gate.GateCase` the correctness gate runs first (the same
call and the reference on the same inputs of a reduced problem).  The built-in operators (ops.py) and the
peers from installed packages (peers/) are all written this way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from harness.kinds.bench.gate import GateCase
from harness.kinds.bench.workload import Impl, Workload, forward_or_backward

Inputs = Dict[str, Any]


@dataclass(frozen=True)
class Op:
    """``inputs(cfg, device, requires_grad) -> dict``: seeded inputs in the cell's dtype (leaves that take a
    gradient when ``requires_grad``); ``target() -> call``: the call under test, ``call(inputs) -> tensor``,
    resolved once per cell (a peer imports its package there, not inside the timed call);
    ``reference(inputs) -> tensor``: the same computation by a plain reference, called on float64 copies;
    ``costs(cfg) -> dict`` of the Workload's cost fields (bytes, flops, exps); ``tokens(cfg)``: tokens per
    call (default batch * seq_len)."""

    inputs: Callable[[Any, str, bool], Inputs]
    target: Callable[[], Callable[[Inputs], torch.Tensor]]
    reference: Callable[[Inputs], torch.Tensor]
    costs: Optional[Callable[[Any], Dict[str, float]]] = None
    tokens: Optional[Callable[[Any], int]] = None


def op_impl(name: str, op: Op, reference_name: str, **impl_fields: Any) -> Impl:
    """The registered target for ``op`` (``impl_fields``: Impl's needs_cuda, passes, requires, ...)."""

    def build(cfg: Any, device: str) -> Workload:
        call = op.target()
        ins = op.inputs(cfg, device, cfg.pass_ != "fwd")
        leaves = [v for v in ins.values() if isinstance(v, torch.Tensor) and v.requires_grad]
        fn = forward_or_backward(lambda: call(ins), leaves, cfg.pass_)
        tokens = op.tokens(cfg) if op.tokens else cfg.batch * cfg.seq_len
        return Workload(fn, tokens=tokens, **(op.costs(cfg) if op.costs else {}))

    def gate(cfg: Any, device: str) -> GateCase:
        return GateCase(op.target(), op.reference, op.inputs(cfg, device, cfg.pass_ != "fwd"))

    return Impl(name, build, gate=gate, reference_name=reference_name, **impl_fields)
