"""One decoding step of the selective SSM (S6 or multi-head Mamba-2) as a single Triton kernel (launched by
``state_update.py``).

Why: unfused, one step is ~20 tiny elementwise kernels (softplus, casts, exp(dt*A), the state update,
(state*C).sum, the D skip, the gate, ...); at decode sizes each is a few microseconds of launch and latency, so
a graphed Mamba step was mostly those.  Here the whole update is one kernel that reads the state once and
writes it back in place.

One layout: state (batch, heads, headdim, N) (the launcher views S6's (batch, dim, N) as heads = 1).  Grid
(cdiv(headdim, BLOCK_D), batch, heads): a program owns BLOCK_D rows (channels) of one head of one batch row
and all N states of them as a [BLOCK_D, BLOCK_N] tile (BLOCK_N = next power of two >= N; padded states are
masked), so there is no loop.  B and C rows are addressed per channel: channel c = head * headdim + row reads
group c // chans_per_group (B and C each their own), which is head // (heads / groups) for Mamba-2 (one row for the whole tile,
served from cache) and, for S6 with groups of channels, the channel's own group (groups = dim: a per-channel
B/C).  Math in float32 whatever the input dtypes; exp(dt*A) as exp2(dt * A*log2(e)).  TIE_HDIM (dt, dt_bias
and A the same for every channel of the head: Mamba-2's stride-0 expansions): one softplus and one exp per
program instead of one per state.
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
    state_ptr, x_ptr, dt_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr,
    headdim, N, chans_per_group_B, chans_per_group_C,
    s_sb, s_sh, s_sp, s_sn, s_xb, s_xh, s_xp, s_tb, s_th, s_tp, s_bias_h, s_bias_p, s_Ah, s_Ap, s_An,
    s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn, s_Dh, s_Dp, s_zb, s_zh, s_zp, s_yb, s_yh, s_yp,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    TIE_HDIM: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_h = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < headdim
    mask = mask_p[:, None] & (offs_n < N)[None, :]
    chan = pid_h * headdim + offs_p                                                               # [BD]

    x = tl.load(x_ptr + pid_b * s_xb + pid_h * s_xh + offs_p * s_xp, mask=mask_p, other=0.0).to(tl.float32)
    if TIE_HDIM:
        dt = tl.load(dt_ptr + pid_b * s_tb + pid_h * s_th).to(tl.float32)                          # scalar
        if HAS_BIAS:
            dt += tl.load(bias_ptr + pid_h * s_bias_h).to(tl.float32)
        if SOFTPLUS:
            dt = _softplus(dt)
        dA = tl.exp2(dt * (tl.load(A_ptr + pid_h * s_Ah).to(tl.float32) * LOG2E))
        dtx = dt * x                                                                              # [BD]
    else:
        dt = tl.load(dt_ptr + pid_b * s_tb + pid_h * s_th + offs_p * s_tp, mask=mask_p, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += tl.load(bias_ptr + pid_h * s_bias_h + offs_p * s_bias_p, mask=mask_p, other=0.0).to(tl.float32)
        if SOFTPLUS:
            dt = _softplus(dt)
        A = tl.load(A_ptr + pid_h * s_Ah + offs_p[:, None] * s_Ap + offs_n[None, :] * s_An,
                    mask=mask, other=0.0).to(tl.float32)
        dA = tl.exp2(dt[:, None] * (A * LOG2E))                                                   # [BD, BN]
        dtx = dt * x

    Bt = tl.load(B_ptr + pid_b * s_Bb + (chan // chans_per_group_B)[:, None] * s_Bg + offs_n[None, :] * s_Bn,
                 mask=mask, other=0.0).to(tl.float32)                                             # [BD, BN]
    Ct = tl.load(C_ptr + pid_b * s_Cb + (chan // chans_per_group_C)[:, None] * s_Cg + offs_n[None, :] * s_Cn,
                 mask=mask, other=0.0).to(tl.float32)
    h_ptrs = state_ptr + pid_b * s_sb + pid_h * s_sh + offs_p[:, None] * s_sp + offs_n[None, :] * s_sn
    h = tl.load(h_ptrs, mask=mask, other=0.0).to(tl.float32)

    h = dA * h + dtx[:, None] * Bt
    tl.store(h_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask)

    y = tl.sum(h * Ct, axis=1)                                                                    # [BD]
    if HAS_D:
        y += tl.load(D_ptr + pid_h * s_Dh + offs_p * s_Dp, mask=mask_p, other=0.0).to(tl.float32) * x
    if HAS_Z:
        zv = tl.load(z_ptr + pid_b * s_zb + pid_h * s_zh + offs_p * s_zp, mask=mask_p, other=0.0).to(tl.float32)
        y *= zv * tl.sigmoid(zv)
    tl.store(y_ptr + pid_b * s_yb + pid_h * s_yh + offs_p * s_yp, y.to(y_ptr.dtype.element_ty), mask=mask_p)
