"""The correctness gate: before a speed cell is timed, its target must agree with a reference.

fla's rule, made a default: a speed is never reported for a kernel whose output is wrong.  The target runs
on a reduced problem of the cell's shape family (L at most :data:`GATE_SEQ_LEN`, batch at most
:data:`GATE_BATCH`, every other size, the dtype and the pass as the cell), and the target's reference runs
on float64 copies of the same (already rounded) inputs; for ``fwd+bwd`` the gradients of every input that
takes one are compared too, under the same output gradient.  The error of each tensor is its normalised
max error, max|x - ref| / max|ref|, recorded as a ``gate_max_rel_err`` row (column ``tensor``: ``y``,
``du``, ...); past the dtype's tolerance (:data:`TOLERANCE`) the cell ends ``error`` with "failed the
correctness gate: ..." and is not timed.  ``gate: false`` (a cell key, e.g. ``--set gate=false``) skips the
gate for pure timing sweeps.

A target declares its gate by returning a :class:`GateCase` from ``Impl.gate(cfg, device)``; targets
without one (``layer``, ``model``: there is no second implementation of a whole model to compare to) are
not gated and give no gate rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch

from harness.cells import CellFailure, make_row

#: normalised max error allowed per input dtype (fp32: mamba_ssm's own fp32 test tolerance, roughly; bf16:
#: its bf16 rtol of 3e-2 plus room for gradients summed over L)
TOLERANCE = {"fp32": 2e-3, "fp16": 1e-2, "bf16": 5e-2}
GATE_SEQ_LEN = 256
GATE_METRICS = ("gate_max_rel_err", "gate_passed")
GATE_BATCH = 2


class GateFailed(CellFailure):
    """The target's output or a gradient is off the reference by more than the tolerance: status ``error``."""

    status = "error"


@dataclass
class GateCase:
    """A target and its reference on one set of inputs (a dict of tensors in the cell's dtypes; the leaves
    that take a gradient have ``requires_grad``).  ``reference`` is called on float64 copies."""

    target: Callable[[Dict[str, Any]], torch.Tensor]
    reference: Callable[[Dict[str, Any]], torch.Tensor]
    inputs: Dict[str, Any]


def reduced_config(cfg: Any) -> Any:
    """The cell's config on the gate's problem: same family, L and batch capped."""
    return cfg.model_copy(update={"seq_len": min(cfg.seq_len, GATE_SEQ_LEN), "batch": min(cfg.batch, GATE_BATCH)})


def max_rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max|x - ref| / max|ref| (the absolute error where ref is all zero); inf if x is not finite."""
    x, ref = x.detach().double(), ref.detach().double()
    if x.shape != ref.shape:
        raise GateFailed(f"failed the correctness gate: output shape {tuple(x.shape)}, reference {tuple(ref.shape)}")
    if not torch.isfinite(x).all():
        return float("inf")
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return float((x - ref).abs().max().item() / (scale if scale > 0 else 1.0)) if ref.numel() else 0.0


def _float64(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.is_floating_point():
        return v.detach().double().requires_grad_(v.requires_grad)
    if isinstance(v, torch.Tensor):
        return v.clone()
    return v


def check(case: GateCase, backward: bool, seed: int = 0) -> List[Tuple[str, float]]:
    """(tensor name, normalised max error) for the output and, with ``backward``, every gradient."""
    ref_inputs = {k: _float64(v) for k, v in case.inputs.items()}
    # in-place targets (a decoding step) must not see what the reference did, nor the reverse
    inputs = {k: (v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
              for k, v in case.inputs.items()}
    names = [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad] if backward else []
    with torch.set_grad_enabled(backward):
        y = case.target(inputs)
        y_ref = case.reference(ref_inputs)
    errs = [("y", max_rel_err(y, y_ref))]
    if names:
        g = torch.Generator(device=y.device).manual_seed(seed + 1)
        dy = torch.randn(y.shape, generator=g, device=y.device, dtype=torch.float32).to(y.dtype)
        grads = torch.autograd.grad(y, [inputs[k] for k in names], dy, allow_unused=True)
        grads_ref = torch.autograd.grad(y_ref, [ref_inputs[k] for k in names], dy.double(), allow_unused=True)
        for k, a, r in zip(names, grads, grads_ref):
            if a is None and r is None:
                continue
            if a is None or r is None:
                errs.append(("d" + k, float("inf")))
                continue
            errs.append(("d" + k, max_rel_err(a, r)))
    return errs


def gate_rows(impl: Any, cfg: Any, device: str) -> Iterator[Dict[str, Any]]:
    """Run ``impl``'s gate for the cell: one ``gate_max_rel_err`` row per tensor, then ``gate_passed`` (1);
    raises :class:`GateFailed` (after the rows) when a tensor is over the tolerance."""
    small = reduced_config(cfg)
    tol = TOLERANCE[cfg.dtype]
    case = impl.gate(small, device)
    errs = check(case, backward=cfg.pass_ != "fwd", seed=cfg.seed)
    where = dict(gate_seq_len=small.seq_len, gate_batch=small.batch)
    for name, err in errs:
        yield make_row("gate_max_rel_err", err, "", tensor=name, tolerance=tol, **where)
    bad = [(n, e) for n, e in errs if not e <= tol]
    yield make_row("gate_passed", int(not bad), "", **where)
    if bad:
        worst = ", ".join(f"{n} {e:.3g}" for n, e in bad)
        raise GateFailed(f"failed the correctness gate against {impl.reference_name} (L={small.seq_len}, "
                         f"batch={small.batch}, {cfg.dtype}, pass {cfg.pass_}): max rel err {worst} > {tol:g}; "
                         f"its timings are not reported")
