"""One decoding step of the selective SSM as a single Triton kernel (launched by ``state_update.py``).

Why: unfused, one S6 step is ~20 tiny elementwise kernels (softplus, casts, exp(dt*A), the state update,
(state*C).sum, the D skip, ...); at decode sizes each is a few microseconds of launch and latency, so a
graphed Mamba step was mostly those.  Here the whole update is one kernel that reads the state once and
writes it back in place.

Grid (cdiv(dim, BLOCK_D), batch): a program owns BLOCK_D channels of one batch row and all N states of
them as a [BLOCK_D, BLOCK_N] tile (BLOCK_N = next power of two >= N; padded states are masked), so there
is no loop.  Math in float32 whatever the input dtypes; exp(dt*A) as exp2(dt * A*log2(e)).  B and C are
addressed through a channel stride that is 0 when they are shared by all channels (the selective case),
so one kernel serves both layouts.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

from kernels.selective_scan.triton_kernels import LOG2E, _softplus

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    from kernels.selective_scan.interpreter_compat import install as _install_interpreter_compat

    _install_interpreter_compat()


@triton.jit
def selective_state_update_kernel(
    state_ptr, x_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr,
    dim, N,
    s_hb, s_hd, s_hn, s_xb, s_xd, s_db, s_dd, s_bias, s_Ad, s_An,
    s_Bb, s_Bd, s_Bn, s_Cb, s_Cd, s_Cn, s_D, s_yb, s_yd,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask = mask_d[:, None] & (offs_n < N)[None, :]

    x = tl.load(x_ptr + pid_b * s_xb + offs_d * s_xd, mask=mask_d, other=0.0).to(tl.float32)      # [BD]
    dt = tl.load(delta_ptr + pid_b * s_db + offs_d * s_dd, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d * s_bias, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)

    A = tl.load(A_ptr + offs_d[:, None] * s_Ad + offs_n[None, :] * s_An, mask=mask, other=0.0).to(tl.float32)
    Bt = tl.load(B_ptr + pid_b * s_Bb + offs_d[:, None] * s_Bd + offs_n[None, :] * s_Bn,
                 mask=mask, other=0.0).to(tl.float32)                                              # [BD, BN]
    Ct = tl.load(C_ptr + pid_b * s_Cb + offs_d[:, None] * s_Cd + offs_n[None, :] * s_Cn,
                 mask=mask, other=0.0).to(tl.float32)
    h_ptrs = state_ptr + pid_b * s_hb + offs_d[:, None] * s_hd + offs_n[None, :] * s_hn
    h = tl.load(h_ptrs, mask=mask, other=0.0)

    h = tl.exp2(dt[:, None] * (A * LOG2E)) * h + (dt * x)[:, None] * Bt
    tl.store(h_ptrs, h, mask=mask)

    y = tl.sum(h * Ct, axis=1)                                                                    # [BD]
    if HAS_D:
        y += tl.load(D_ptr + offs_d * s_D, mask=mask_d, other=0.0).to(tl.float32) * x
    tl.store(y_ptr + pid_b * s_yb + offs_d * s_yd, y.to(y_ptr.dtype.element_ty), mask=mask_d)
