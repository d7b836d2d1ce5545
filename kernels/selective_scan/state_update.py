"""One recurrent (decoding) step of the selective SSM, S6 or Mamba-2 (SSD), with mamba_ssm's signature:

    selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False) -> y

    dt <- softplus(dt + dt_bias) (without dt_softplus: dt + dt_bias);  state <- exp(dt A) state + dt x B^T
    y = <C, state> + D x;  y *= silu(z)                  (state updated in place; y in x.dtype)

Why the official signature: the official step (and the official Mamba-2 decode, which calls it with the
multi-head state) can then stand in cell by cell, and one function serves S6 and SSD.  Two layouts, told
apart by ``state.dim()``:

* S6: state (batch, dim, N); x, dt, z (batch, dim); A (dim, N); B, C (batch, N) (shared by all channels) or
  (batch, groups, N), groups dividing dim (channel d reads group d // (dim / groups); groups = dim is a
  per-channel B/C, S6's non-selective case); D, dt_bias (dim,).
* multi-head (Mamba-2): state (batch, heads, headdim, N); x, dt, z (batch, heads, headdim); A (heads,
  headdim, N); B, C (batch, groups, N) or (batch, N), groups dividing heads (head h reads group
  h // (heads / groups)); D, dt_bias (heads, headdim).  Mamba-2 passes A, dt, dt_bias and D expanded over
  headdim (and A over N) with stride 0: accepted as they are, never copied.

The state may be any float dtype (float32 in ssmbench's models); the math is float32 whatever the dtypes
(float64 in the reference when the state is float64: the test oracle's mode).  Entry points:

* :func:`selective_state_update_reference` -- plain PyTorch, returns (y, new_state) and leaves ``state``
  alone (differentiable: S6.step uses it while autograd records);
* :func:`selective_state_update_triton` -- one fused Triton kernel that updates ``state`` in place (a
  CUDA-graph stepper then need not copy the state back: harness/kinds/bench/static_step.py);
* :func:`selective_state_update` -- the official contract: picks one by ``backend`` like
  ``kernels.selective_scan`` (fused on CUDA, the reference elsewhere), updates ``state`` in place, returns y.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from kernels.selective_scan.validate import resolve_backend

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WHERE = "selective_state_update"
# A [BLOCK_D, BLOCK_N] tile of this many states per program (BLOCK_D 32 at N 16), 4 warps.  H200, 2026-12-02,
# dim 1536, N 16, bf16, graphed (do_bench_cudagraph): 1.67 / 1.87 / 4.58 us at batch 1 / 8 / 64, within 0.6 us of
# the best of 11 (BLOCK_D, warps) pairs at every batch (BLOCK_D 128: 2.04 / 2.26 / 4.06); the unfused PyTorch
# update (+ copy) took 34 / 37 / 73 us.  (The official kernel's tiles are the same size: 4 x 128 at N 128.)
TILE_STATES = 512
NUM_WARPS = 4


@dataclass(frozen=True)
class StepShape:
    """Sizes of one step.  S6 is the multi-head layout with heads = 1, headdim = dim (``has_heads`` False).
    ``groups``: the larger of B's and C's group counts (they may differ: S6 with a selective B and a
    per-channel C)."""

    batch: int
    heads: int
    headdim: int
    groups: int
    N: int
    has_heads: bool


def _shape(t) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_state_update_inputs(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                              float64_ok: bool = False) -> StepShape:
    """Validate shapes, dtypes and devices for either layout; return the sizes.  Every error is a ValueError
    naming the argument, the shape it should have and the shape it has.  ``float64_ok``: the reference also
    takes a float64 state (its test-oracle mode); the kernel does not."""
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{_WHERE}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if state.dim() == 3:
        batch, dim, N = state.shape
        heads, headdim, chan, chans = 1, dim, (batch, dim), "(batch, dim)"
        A_shape, A_what, par, par_what, unit = (dim, N), "(dim, N)", (dim,), "(dim,)", ("dim", dim)
    elif state.dim() == 4:
        batch, heads, headdim, N = state.shape
        chan, chans = (batch, heads, headdim), "(batch, heads, headdim)"
        A_shape, A_what = (heads, headdim, N), "(heads, headdim, N)"
        par, par_what, unit = (heads, headdim), "(heads, headdim)", ("heads", heads)
    else:
        raise ValueError(f"{_WHERE}: state must be (batch, dim, N) (S6) or (batch, heads, headdim, N) "
                         f"(multi-head), got {_shape(state)}")
    ok_state, ok_names = (_FLOATS, "fp16/bf16/fp32/fp64") if float64_ok else (_FLOATS[:3], "fp16/bf16/fp32")
    if state.dtype not in ok_state:
        raise ValueError(f"{_WHERE}: state must be a real float tensor ({ok_names}), got {state.dtype}")
    for name, t in (("x", x), ("dt", dt), ("z", z)):
        if t is not None and _shape(t) != chan:
            raise ValueError(f"{_WHERE}: {name} must be {chans} = {chan} to match state {tuple(state.shape)}, "
                             f"got {_shape(t)}")
    if A.is_complex() or A.dtype not in _FLOATS or tuple(A.shape) != A_shape:
        raise ValueError(f"{_WHERE}: A must be a real float {A_what} = {A_shape} tensor, got {A.dtype} "
                         f"{tuple(A.shape)}")
    groups = None
    for name, M in (("B", B), ("C", C)):
        g = 1 if M.dim() == 2 else (M.shape[1] if M.dim() == 3 else 0)
        if not (M.dim() in (2, 3) and M.shape[0] == batch and M.shape[-1] == N and g >= 1):
            raise ValueError(f"{_WHERE}: {name} must be (batch, N) = ({batch}, {N}) or (batch, groups, N) = "
                             f"({batch}, groups, {N}), got {tuple(M.shape)}")
        if unit[1] % g:
            raise ValueError(f"{_WHERE}: {name} has groups={g}, which does not divide {unit[0]}={unit[1]}; "
                             f"use a group count that divides {unit[1]}")
        groups = g if groups is None else max(groups, g)
    for name, v in (("dt_bias", dt_bias), ("D", D)):
        if v is not None and _shape(v) != par:
            raise ValueError(f"{_WHERE}: {name} must be None or {par_what} = {par}, got {_shape(v)}")
    for name, t in (("x", x), ("dt", dt), ("B", B), ("C", C), ("z", z), ("dt_bias", dt_bias), ("D", D)):
        if t is not None and (t.is_complex() or t.dtype not in _FLOATS):
            raise ValueError(f"{_WHERE}: {name} must be a real float tensor (fp16/bf16/fp32/fp64), got {t.dtype}")
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("z", z), ("dt_bias", dt_bias), ("D", D)):
        if t is not None and t.device != state.device:
            raise ValueError(f"{_WHERE}: {name} is on {t.device} but state is on {state.device}; "
                             f"move it with .to(state.device)")
    return StepShape(batch, heads, headdim, groups, N, state.dim() == 4)


def _per_channel(M: torch.Tensor, shape: StepShape, acc: torch.dtype) -> torch.Tensor:
    """B or C, (batch, N) or (batch, groups, N), as a tensor that broadcasts against the state: S6
    (batch, 1 | dim, N), multi-head (batch, 1 | heads, 1, N)."""
    M = M.to(acc)
    if M.dim() == 2:
        M = M.unsqueeze(1)
    rep = (shape.heads if shape.has_heads else shape.headdim) // M.shape[1]
    if M.shape[1] > 1 and rep > 1:
        M = M.repeat_interleave(rep, dim=1)
    return M.unsqueeze(2) if shape.has_heads else M


def selective_state_update_reference(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """-> (y in x.dtype, new_state in the accumulation dtype).  Does not modify ``state``; differentiable.

    Float32 math (float64 when ``state`` is float64: the test oracle).  The operations and their order are
    those S6.step used before the fused kernel existed, so S6's CPU decoding gives the same numbers bit for
    bit; they are also the official reference's (dt * B first, then * x; D x added before the silu(z) gate).
    """
    shape = check_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias, float64_ok=True)
    acc = torch.float64 if state.dtype == torch.float64 else torch.float32
    dt = dt.to(acc)
    if dt_bias is not None:
        dt = dt + dt_bias.to(acc)
    if dt_softplus:
        dt = F.softplus(dt)                        # identity above 20 (its threshold), as the official kernel
    dt = dt.unsqueeze(-1)                                                   # (..., 1)
    Bx, Cx = _per_channel(B, shape, acc), _per_channel(C, shape, acc)
    xf = x.to(acc)
    new_state = torch.exp(dt * A.to(acc)) * state.to(acc) + dt * Bx * xf.unsqueeze(-1)
    y = (new_state * Cx).sum(-1)
    if D is not None:
        y = y + D.to(acc) * xf
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(x.dtype), new_state


def _strides(t: Optional[torch.Tensor], n: int):
    return tuple(t.stride()) if t is not None else (0,) * n


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                                  block_d: Optional[int] = None):
    """-> y; one fused kernel; ``state`` is updated **in place**.

    Any strides (nothing is copied to make it contiguous; stride-0 expansions are read as such).  No
    autograd: refuses inputs that require grad while grad mode is on (use the reference there).
    ``block_d``: channels (headdim rows) per program, a power of two; default TILE_STATES / next_pow2(N).
    Runs on CUDA, or on the CPU when TRITON_INTERPRET=1 was set before triton was imported.
    """
    shape = check_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias)
    if state.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ValueError(f"{_WHERE}: backend='triton' needs CUDA tensors (state is on {state.device}); "
                         "use backend='reference' or 'auto' on the CPU, or set TRITON_INTERPRET=1 before "
                         "importing triton to run the kernel in the interpreter")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (state, x, dt, A, B, C, D, z, dt_bias)):
        raise ValueError(f"{_WHERE}: the triton kernel has no backward, but an input requires grad; "
                         "run under torch.no_grad() / torch.inference_mode(), or use "
                         "selective_state_update_reference (differentiable)")
    if any(s == 0 and n > 1 for s, n in zip(state.stride(), state.shape)):
        raise ValueError(f"{_WHERE}: state is a broadcast view (a stride of 0) but is written in "
                         "place; pass a real tensor (e.g. state.clone())")
    import triton

    from kernels.selective_scan.state_update_kernel import selective_state_update_kernel

    # one layout for the kernel: S6 is multi-head with heads = 1, headdim = dim (views, no copies)
    if not shape.has_heads:
        state, x, dt, A = state.unsqueeze(1), x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0)
        z = z.unsqueeze(1) if z is not None else None
        D = D.unsqueeze(0) if D is not None else None
        dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None else None
    B = B.unsqueeze(1) if B.dim() == 2 else B
    C = C.unsqueeze(1) if C.dim() == 2 else C
    batch, heads, headdim, N = state.shape
    y = torch.empty((batch, heads, headdim), device=x.device, dtype=x.dtype)
    # dt and A the same for every channel of a head (Mamba-2's stride-0 expansions): one exp per head
    tie = (A.stride(1) == 0 and A.stride(2) == 0 and dt.stride(2) == 0
           and (dt_bias is None or dt_bias.stride(1) == 0))
    block_n = triton.next_power_of_2(N)
    bd = block_d or max(1, TILE_STATES // block_n)
    bd = min(triton.next_power_of_2(bd), triton.next_power_of_2(headdim))
    if batch and heads and headdim:
        selective_state_update_kernel[(triton.cdiv(headdim, bd), batch, heads)](
            state, x, dt, dt_bias if dt_bias is not None else A, A, B, C, D if D is not None else A,
            z if z is not None else x, y,
            headdim, N, heads * headdim // B.shape[1], heads * headdim // C.shape[1],
            *state.stride(), *x.stride(), *dt.stride(), *_strides(dt_bias, 2), *A.stride(),
            *B.stride(), *C.stride(), *_strides(D, 2), *_strides(z, 3), *y.stride(),
            BLOCK_D=bd, BLOCK_N=block_n, HAS_BIAS=dt_bias is not None, HAS_D=D is not None, HAS_Z=z is not None,
            SOFTPLUS=bool(dt_softplus), TIE_HDIM=tie, num_warps=NUM_WARPS,
        )
    return y if shape.has_heads else y.squeeze(1)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           backend="auto"):
    """-> y.  Updates ``state`` in place, whatever the backend (the official contract).

    ``backend`` as in ``kernels.selective_scan``: "auto" is "triton" on CUDA and the reference elsewhere;
    "triton" runs the fused kernel, "reference" and "chunked" the PyTorch reference (then ``state.copy_``).
    """

    backend = resolve_backend(backend, state.device if isinstance(state, torch.Tensor) else "cpu")
    if backend == "triton":
        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    y, new_state = selective_state_update_reference(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    state.copy_(new_state)
    return y
