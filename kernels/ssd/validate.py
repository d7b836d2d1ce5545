"""Argument checks and the dt processing shared by every SSD backend.

Why one module: a bad call must fail the same way whatever the backend (a shape mismatch deep inside an
einsum or a kernel launch is unreadable), and every backend must turn the raw dt into the same step sizes.
Every error is a ``ValueError`` that names the argument, the shape it should have (with the sizes taken
from x) and the shape it has.  The tests check the dt processing against their own float64 copy, never
against :func:`process_dt`, so a mistake here cannot hide behind a shared oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from kernels.selective_scan.validate import check_backend as check_scan_backend

BACKENDS = ("reference", "chunked", "triton")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WHERE = "ssd"


@dataclass(frozen=True)
class SSDShape:
    """The sizes every backend needs."""

    batch: int
    L: int
    heads: int
    headdim: int
    groups: int
    N: int


def check_backend(backend: str) -> str:
    return check_scan_backend(backend, _WHERE, BACKENDS)


def _shape(t) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _need(name: str, t, expected: Tuple[int, ...], what: str) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(expected):
        raise ValueError(f"{_WHERE}: {name} must be {what} = {tuple(expected)}, got {_shape(t)}")


def _need_float(name: str, t: torch.Tensor) -> None:
    if t.is_complex() or t.dtype not in _FLOATS:
        raise ValueError(f"{_WHERE}: {name} must be a real float tensor (fp16/bf16/fp32/fp64), got dtype "
                         f"{t.dtype}; cast it, e.g. {name}.float()")


def check_inputs(x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None,
                 dt_limit=(0.0, math.inf), initial_states=None) -> SSDShape:
    """Validate shapes, dtypes and devices against the DESIGN.md SSD contract; return the sizes."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{_WHERE}: x must be a (batch, L, heads, headdim) tensor, got {_shape(x)}")
    batch, L, heads, headdim = x.shape
    _need_float("x", x)
    _need("dt", dt, (batch, L, heads), "(batch, L, heads)")
    _need("A", A, (heads,), "(heads,)")
    if not isinstance(B, torch.Tensor) or B.dim() != 4 or B.shape[:2] != (batch, L):
        raise ValueError(f"{_WHERE}: B must be (batch, L, groups, N) = ({batch}, {L}, groups, N), got {_shape(B)}")
    groups, N = B.shape[2], B.shape[3]
    _need("C", C, (batch, L, groups, N), "(batch, L, groups, N) like B")
    if groups < 1 or heads % groups:
        raise ValueError(f"{_WHERE}: B and C have groups={groups}, which does not divide heads={heads}; "
                         f"use a group count that divides {heads}")
    if D is not None and not (isinstance(D, torch.Tensor) and tuple(D.shape) in ((heads,), (heads, headdim))):
        raise ValueError(f"{_WHERE}: D must be None, (heads,) = ({heads},) or (heads, headdim) = "
                         f"({heads}, {headdim}), got {_shape(D)}")
    if z is not None:
        _need("z", z, tuple(x.shape), "(batch, L, heads, headdim) like x")
    if dt_bias is not None:
        _need("dt_bias", dt_bias, (heads,), "(heads,)")
    if initial_states is not None:
        _need("initial_states", initial_states, (batch, heads, headdim, N), "(batch, heads, headdim, N)")
    for name, t in (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("dt_bias", dt_bias),
                    ("initial_states", initial_states)):
        if t is None:
            continue
        _need_float(name, t)
        if t.device != x.device:
            raise ValueError(f"{_WHERE}: {name} is on {t.device} but x is on {x.device}; move it with .to(x.device)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{_WHERE}: chunk_size must be a positive int, got {chunk_size!r}")
    try:
        lo, hi = (float(v) for v in dt_limit)
    except (TypeError, ValueError):
        raise ValueError(f"{_WHERE}: dt_limit must be a pair (min, max) of numbers, got {dt_limit!r}") from None
    if not lo <= hi:
        raise ValueError(f"{_WHERE}: dt_limit must have min <= max, got {dt_limit!r}")
    return SSDShape(batch, L, heads, headdim, groups, N)


def process_dt(dt: torch.Tensor, dt_bias: Optional[torch.Tensor], dt_softplus: bool,
               dt_limit=(0.0, math.inf), acc: torch.dtype = torch.float32) -> torch.Tensor:
    """The step sizes the recurrence uses, in ``acc`` (float32, or float64 for an all-float64 call).

    In the official order: dt + dt_bias; softplus where that is <= 20 (identity above, where softplus(v)
    equals v to float32 precision); clamp to dt_limit.  ``torch.clamp``'s gradient is zero where the clamp
    bites (strictly outside the limits) and passes at the limits, as the official backward does.  The
    clamp is always applied: with the default (0, inf) a negative dt becomes 0 (no decay, no input).
    """
    dt = dt.to(acc)
    if dt_bias is not None:
        dt = dt + dt_bias.to(acc)
    if dt_softplus:
        dt = F.softplus(dt, beta=1.0, threshold=20.0)      # identity where dt > 20, softplus elsewhere
    lo, hi = (float(v) for v in dt_limit)
    return dt.clamp(min=lo, max=hi if math.isfinite(hi) else None)


def accumulation_dtype(*tensors) -> torch.dtype:
    """float64 when any of the given inputs is float64 (the float64 mode, as the selective-scan reference),
    float32 otherwise: state and accumulation never run in half precision."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
