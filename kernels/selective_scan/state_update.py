"""One recurrent (decoding) step of the selective SSM: h <- exp(dt A) h + dt x B ;  y = <C, h> + D x.

Why a function of its own: decoding calls this once per layer per token, and written as PyTorch ops it is
~20 tiny kernels (mamba_ssm fuses it into one, ``selective_state_update``).  Three entry points:

* :func:`selective_state_update_reference` -- plain PyTorch, returns a *new* state (differentiable);
* :func:`selective_state_update_triton` -- one fused Triton kernel that updates ``state`` *in place*
  (a CUDA-graph stepper then need not copy the state back: harness/kinds/bench/static_step.py);
* :func:`selective_state_update` -- picks one by ``backend`` like ``kernels.selective_scan`` and *always*
  updates ``state`` in place and returns it (the PyTorch backends copy the new state into it).

Shapes: state (batch, dim, N) float32; x, delta (batch, dim), any float dtype; delta_bias, D (dim,) or None;
A (dim, N) float32; B, C each (batch, N) (shared by all channels: selective B/C) or (batch, dim, N)
(per channel: a non-selective B/C expanded over the batch).  dt = softplus(delta + delta_bias) (without
softplus: delta + delta_bias).  y comes back in x.dtype.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from kernels.selective_scan.validate import resolve_backend

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# A [BLOCK_D, BLOCK_N] tile of this many states per program (BLOCK_D 32 at N 16), 4 warps.  H200, 2026-12-02,
# dim 1536, N 16, bf16, graphed (do_bench_cudagraph): 1.67 / 1.87 / 4.58 us at batch 1 / 8 / 64, within 0.6 us of
# the best of 11 (BLOCK_D, warps) pairs at every batch (BLOCK_D 128: 2.04 / 2.26 / 4.06); the unfused PyTorch
# update (+ copy) took 34 / 37 / 73 us.
TILE_STATES = 512
NUM_WARPS = 4


def check_state_update_inputs(state, x, delta, delta_bias, A, B, C, D,
                              float64_ok: bool = False) -> Tuple[int, int, int]:
    """Validate shapes, dtypes and devices; return (batch, dim, N).  Every error is a ValueError naming the
    argument, what was expected and what came.  ``float64_ok``: the reference also takes a float64 state
    (its test-oracle mode)."""
    where = "selective_state_update"
    for name, t in (("state", state), ("x", x), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if state.dim() != 3:
        raise ValueError(f"{where}: state must be (batch, dim, N), got shape {tuple(state.shape)}")
    batch, dim, N = state.shape
    ok_state = (torch.float32, torch.float64) if float64_ok else (torch.float32,)
    if state.dtype not in ok_state:
        raise ValueError(f"{where}: state must be float32 (the recurrent state is kept in float32 whatever "
                         f"the model dtype), got {state.dtype}; make it with init_state or .float()")
    for name, t in (("x", x), ("delta", delta)):
        if t.shape != (batch, dim):
            raise ValueError(f"{where}: {name} must be (batch={batch}, dim={dim}) to match state "
                             f"{tuple(state.shape)}, got {tuple(t.shape)}")
    if A.is_complex() or A.dtype not in (torch.float32, torch.float64) or A.shape != (dim, N):
        raise ValueError(f"{where}: A must be a real float32 (dim={dim}, N={N}) tensor, got "
                         f"{A.dtype} {tuple(A.shape)}")
    for name, M in (("B", B), ("C", C)):
        if M.shape not in ((batch, N), (batch, dim, N)):
            raise ValueError(f"{where}: {name} must be (batch={batch}, N={N}) (shared by all channels) or "
                             f"(batch={batch}, dim={dim}, N={N}) (per channel), got {tuple(M.shape)}")
    for name, v in (("delta_bias", delta_bias), ("D", D)):
        if v is not None and (not isinstance(v, torch.Tensor) or v.shape != (dim,)):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{where}: {name} must be None or a (dim={dim},) tensor, got {shape}")
    for name, t in (("x", x), ("delta", delta), ("B", B), ("C", C), ("delta_bias", delta_bias), ("D", D)):
        if t is not None and t.dtype not in _FLOATS:
            raise ValueError(f"{where}: {name} must be a real float tensor (fp16/bf16/fp32/fp64), got {t.dtype}")
    for name, t in (("x", x), ("delta", delta), ("A", A), ("B", B), ("C", C), ("delta_bias", delta_bias), ("D", D)):
        if t is not None and t.device != state.device:
            raise ValueError(f"{where}: {name} is on {t.device} but state is on {state.device}; "
                             f"move it with .to(state.device)")
    return batch, dim, N


def selective_state_update_reference(state, x, delta, delta_bias, A, B, C, D=None, delta_softplus=True):
    """-> (y (batch, dim) in x.dtype, new_state).  Does not modify ``state``.

    Float32 math (float64 when ``state`` is float64: the test oracle).  The operations and their order are
    those S6.step used before the fused kernel existed, so CPU decoding gives the same numbers bit for bit.
    """
    check_state_update_inputs(state, x, delta, delta_bias, A, B, C, D, float64_ok=True)
    acc = state.dtype
    dt = delta.to(acc)
    if delta_bias is not None:
        dt = dt + delta_bias.to(acc)
    if delta_softplus:
        dt = F.softplus(dt)
    dt = dt.unsqueeze(-1)                                                      # (b, d, 1)
    Bx = B.to(acc) if B.dim() == 3 else B.to(acc).unsqueeze(1)                 # (b, d|1, N)
    Cx = C.to(acc) if C.dim() == 3 else C.to(acc).unsqueeze(1)
    xf = x.to(acc)
    new_state = torch.exp(dt * A.to(acc)) * state + dt * Bx * xf.unsqueeze(-1)
    y = (new_state * Cx).sum(-1)
    if D is not None:
        y = y + D.to(acc) * xf
    return y.to(x.dtype), new_state


def _bc_strides(M: torch.Tensor) -> Tuple[int, int, int]:
    """(batch, channel, state) strides; channel stride 0 for a (batch, N) B/C shared by all channels."""
    return (M.stride(0), 0, M.stride(1)) if M.dim() == 2 else M.stride()


def selective_state_update_triton(state, x, delta, delta_bias, A, B, C, D=None, delta_softplus=True,
                                  block_d: Optional[int] = None):
    """-> (y, state): one fused kernel; ``state`` is updated **in place** and returned (the same tensor).

    Any strides (nothing is copied to make it contiguous).  No autograd: refuses inputs that require grad
    while grad mode is on (use the reference there).  ``block_d``: channels per program (a power of two;
    default TILE_STATES / next_pow2(N)).  Runs on CUDA, or on the CPU when TRITON_INTERPRET=1 was set
    before triton was imported.
    """
    batch, dim, N = check_state_update_inputs(state, x, delta, delta_bias, A, B, C, D)
    if state.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ValueError(f"selective_state_update: backend='triton' needs CUDA tensors (state is on {state.device}); "
                         "use backend='reference' or 'auto' on the CPU, or set TRITON_INTERPRET=1 before "
                         "importing triton to run the kernel in the interpreter")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (state, x, delta, delta_bias, A, B, C, D)):
        raise ValueError("selective_state_update: the triton kernel has no backward, but an input requires grad; "
                         "run under torch.no_grad() / torch.inference_mode(), or use "
                         "selective_state_update_reference (differentiable)")
    if any(s == 0 and n > 1 for s, n in zip(state.stride(), state.shape)):
        raise ValueError("selective_state_update: state is a broadcast view (a stride of 0) but is written in "
                         "place; pass a real tensor (e.g. state.clone())")
    import triton

    from kernels.selective_scan.state_update_kernel import selective_state_update_kernel

    y = torch.empty((batch, dim), device=x.device, dtype=x.dtype)
    block_n = triton.next_power_of_2(N)
    bd = block_d or max(1, TILE_STATES // block_n)
    bd = min(triton.next_power_of_2(bd), triton.next_power_of_2(dim))
    if batch and dim:
        selective_state_update_kernel[(triton.cdiv(dim, bd), batch)](
            state, x, delta, delta_bias if delta_bias is not None else A, A, B, C, D if D is not None else A, y,
            dim, N,
            *state.stride(), *x.stride(), *delta.stride(),
            delta_bias.stride(0) if delta_bias is not None else 0, *A.stride(),
            *_bc_strides(B), *_bc_strides(C), D.stride(0) if D is not None else 0, *y.stride(),
            BLOCK_D=bd, BLOCK_N=block_n, HAS_BIAS=delta_bias is not None, HAS_D=D is not None,
            SOFTPLUS=bool(delta_softplus), num_warps=NUM_WARPS,
        )
    return y, state


def selective_state_update(state, x, delta, delta_bias, A, B, C, D=None, delta_softplus=True, backend="auto"):
    """-> (y, state).  Always updates ``state`` in place and returns it, whatever the backend.

    ``backend`` as in ``kernels.selective_scan``: "auto" is "triton" on CUDA and "chunked" elsewhere;
    "triton" runs the fused kernel, "reference" and "chunked" the PyTorch reference (then ``state.copy_``).
    """

    backend = resolve_backend(backend, state.device if isinstance(state, torch.Tensor) else "cpu")
    if backend == "triton":
        return selective_state_update_triton(state, x, delta, delta_bias, A, B, C, D, delta_softplus)
    y, new_state = selective_state_update_reference(state, x, delta, delta_bias, A, B, C, D, delta_softplus)
    state.copy_(new_state)
    return y, state
