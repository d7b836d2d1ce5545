"""Fused Triton kernels for the Mamba-2 SSD (chunked state-space duality) scan: forward and backward.

Notation (one batch row b, one head h of group g = h // (heads / groups), chunk c of Q = chunk_size steps,
t and s positions inside the chunk, P = headdim, N = d_state):
  dt'_t  = clamp(softplus(dt_t + dt_bias), dt_limit)            (fp32; softplus only where the value <= 20)
  cs_t   = sum_{u <= t in the chunk} dt'_u A                    (the chunk-local cumulative decay, <= 0)
  hs_c   = state entering chunk c, (P, N) fp32                  (hs_0 = initial state or 0)
  S_c    = sum_s exp(cs_last - cs_s) dt'_s x_s B_s^T           (chunk c's own end state from zero)
  hs_c+1 = exp(cs_last) hs_c + S_c
  y_t    = exp(cs_t) hs_c C_t + sum_{s <= t} exp(cs_t - cs_s) (C_t . B_s) dt'_s x_s + D x_t
  out_t  = y_t * silu(z_t)                                      (when z is given)

Forward, four launches (``triton_backend._forward``):
  1. ``ssd_cumsum_fwd``      grid (chunks, batch*heads): dt' and cs, (batch, heads, L) fp32.
  2. ``ssd_chunk_state_fwd`` grid (chunks, batch*heads): S_c = (x * w)^T @ B, one tl.dot per block of
                             BLOCK_M steps; written to the chunk-state buffer (batch, chunks, heads, P, N) fp32.
  3. ``ssd_state_pass_fwd``  grid (P*N / BLOCK_E, batch*heads): a sequential loop over chunks that replaces
                             S_c by hs_c in place and writes the final state.
  4. ``ssd_chunk_scan_fwd``  grid (Q / BLOCK_M, chunks, batch*heads): rows t of one chunk; the state term
                             (C_t @ hs^T), then for each block of source steps s <= t the masked, decayed
                             C B^T block times dt' x; D x; the gate.  C B^T is formed in the kernel
                             (per head, not shared across a group's heads).  The pre-gate y is stored only
                             when z is given and a backward will follow.

Backward (``triton_backend._backward``), recomputing everything per timestep from dt', cs and hs_c (only the
chunk states are stored), with g_t = dL/dy_t (pre-gate):
  0. ``ssd_gate_bwd``        (only with z) g = dout * silu(z), dz = dout * y * silu'(z)
  1. ``ssd_dstate_local_bwd`` grid (chunks, batch*heads): sum_t exp(cs_t) g_t^T C_t, the output's
                             gradient with respect to hs_c.
  2. ``ssd_state_pass_bwd``  grid (P*N / BLOCK_E, batch*heads): the reverse state passing.  Its carry is
                             G_c = dL/dhs_c; it writes dS_c = G_{c+1} (the gradient of S_c) in place of the
                             local term, the gradient of the chunk decay exp(cs_last) (partials per E-block),
                             and G_0, the gradient of the initial state.
  3. ``ssd_dx_bwd``          grid (Q / BLOCK_M, chunks, batch*heads), source rows s: dx, the dt' gradient
                             (direct terms), dB (float32 atomics into a (batch, L, groups, N) buffer; the
                             heads of a group add into the same rows), the cs gradient of the source side,
                             the chunk-state's gradient for cs_last, and partial sums of dD.
  4. ``ssd_dC_bwd``          grid (Q / BLOCK_M, chunks, batch*heads), output rows t: dC (float32 atomics)
                             and the cs gradient of the output side (C_t . dC_t per head).
  5. ``ssd_dt_bwd``          grid (chunks, batch*heads): folds the cs gradients through the chunk cumsum
                             (a reverse cumsum, an exclusive cumsum for the cs_last terms), adds A times it
                             to the dt' gradient, then the clamp and softplus; partial sums of dA, ddt_bias.

Every exponential of a difference is masked before exp (masked entries give 0, never inf * 0).
DOT_PREC is tl.dot's input_precision: "ieee" for fp32 inputs (tf32 would cost ~1e-3), "tf32" otherwise; LOWP
(SSDConfig.lowp_dots, 16-bit inputs only) rounds every dot's operands to the input dtype instead.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    """log(1 + exp(x)), accurate for large negative x too."""
    w = tl.exp(-tl.abs(x))
    s = 1.0 + w
    log1p_w = tl.where(s == 1.0, w, tl.log(s) * (w / (s - 1.0)))
    return tl.maximum(x, 0.0) + log1p_w


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _mm(a, b, ref_ptr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr):
    """a @ b with fp32 accumulation; LOWP (1, or 2 in the interpreter): operands rounded to ref_ptr's 16-bit
    element type first, as the official kernels do (twice tf32's tensor-core rate, for the rounding)."""
    if LOWP == 2:   # under TRITON_INTERPRET: its tl.dot multiplies 16-bit floats as raw integers; round only
        a16 = a.to(ref_ptr.dtype.element_ty).to(tl.float32)
        b16 = b.to(ref_ptr.dtype.element_ty).to(tl.float32)
        return tl.dot(a16, b16, input_precision="ieee")
    elif LOWP == 1:
        return tl.dot(a.to(ref_ptr.dtype.element_ty), b.to(ref_ptr.dtype.element_ty))
    else:
        return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def _chunk_len(c, L, Q):
    return tl.minimum(Q, L - c * Q)


# ---------------------------------------------------------------------------------------------- forward
@triton.jit
def ssd_cumsum_fwd(dt_ptr, A_ptr, bias_ptr, dtp_ptr, cs_ptr,
                   L, H, Q, dt_min, dt_max,
                   s_dt_b, s_dt_l, s_dt_h,
                   HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_Q: tl.constexpr):
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    t = tl.arange(0, BLOCK_Q)
    m = t < _chunk_len(c, L, Q)
    pos = c * Q + t
    v = tl.load(dt_ptr + b * s_dt_b + pos * s_dt_l + h * s_dt_h, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        v = tl.where(v <= 20.0, _softplus(v), v)
    v = tl.minimum(tl.maximum(v, dt_min), dt_max)
    v = tl.where(m, v, 0.0)
    A = tl.load(A_ptr + h).to(tl.float32)
    cs = tl.cumsum(v * A, axis=0)
    out = bh * L + pos
    tl.store(dtp_ptr + out, v, mask=m)
    tl.store(cs_ptr + out, cs, mask=m)


@triton.jit
def ssd_chunk_state_fwd(x_ptr, B_ptr, dtp_ptr, cs_ptr, st_ptr,
                        L, H, Q, P, N, heads_per_group, n_chunks,
                        s_x_b, s_x_l, s_x_h, s_x_p,
                        s_B_b, s_B_l, s_B_g, s_B_n,
                        BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                        DOT_PREC: tl.constexpr, LOWP: tl.constexpr):
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    g = h // heads_per_group
    clen = _chunk_len(c, L, Q)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    cs_last = tl.load(cs_ptr + bh * L + c * Q + clen - 1)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, Q, BLOCK_M):
        s = k0 + tl.arange(0, BLOCK_M)
        ms = s < clen
        pos = c * Q + s
        x = tl.load(x_ptr + b * s_x_b + pos[:, None] * s_x_l + h * s_x_h + p[None, :] * s_x_p,
                    mask=ms[:, None] & (p[None, :] < P), other=0.0).to(tl.float32)
        Bs = tl.load(B_ptr + b * s_B_b + pos[:, None] * s_B_l + g * s_B_g + n[None, :] * s_B_n,
                     mask=ms[:, None] & (n[None, :] < N), other=0.0).to(tl.float32)
        dtp = tl.load(dtp_ptr + bh * L + pos, mask=ms, other=0.0)
        cs = tl.load(cs_ptr + bh * L + pos, mask=ms, other=0.0)
        w = tl.where(ms, tl.exp(tl.where(ms, cs_last - cs, 0.0)) * dtp, 0.0)
        acc += _mm(tl.trans(x * w[:, None]), Bs, x_ptr, DOT_PREC, LOWP)
    off = ((b * n_chunks + c) * H + h) * P * N
    tl.store(st_ptr + off + p[:, None] * N + n[None, :], acc, mask=(p[:, None] < P) & (n[None, :] < N))


@triton.jit
def ssd_state_pass_fwd(st_ptr, cs_ptr, init_ptr, final_ptr,
                       L, H, Q, PN, n_chunks,
                       HAS_INIT: tl.constexpr, WRITE_FINAL: tl.constexpr, BLOCK_E: tl.constexpr):
    pe = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    e = pe * BLOCK_E + tl.arange(0, BLOCK_E)
    me = e < PN
    if HAS_INIT:
        carry = tl.load(init_ptr + bh * PN + e, mask=me, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for c in range(0, n_chunks):
        off = ((b * n_chunks + c) * H + h) * PN + e
        s = tl.load(st_ptr + off, mask=me, other=0.0)
        tl.store(st_ptr + off, carry, mask=me)
        clen = _chunk_len(c, L, Q)
        decay = tl.exp(tl.load(cs_ptr + bh * L + c * Q + clen - 1))
        carry = decay * carry + s
    if WRITE_FINAL:
        tl.store(final_ptr + bh * PN + e, carry, mask=me)


@triton.jit
def ssd_chunk_scan_fwd(x_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dtp_ptr, cs_ptr, st_ptr, out_ptr, ypre_ptr,
                       L, H, Q, P, N, heads_per_group, n_chunks,
                       s_x_b, s_x_l, s_x_h, s_x_p,
                       s_B_b, s_B_l, s_B_g, s_B_n,
                       s_C_b, s_C_l, s_C_g, s_C_n,
                       s_z_b, s_z_l, s_z_h, s_z_p,
                       s_D_h, s_D_p,
                       HAS_D: tl.constexpr, HAS_Z: tl.constexpr, STORE_YPRE: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                       DOT_PREC: tl.constexpr, LOWP: tl.constexpr):
    tb = tl.program_id(0)
    c = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    g = h // heads_per_group
    clen = _chunk_len(c, L, Q)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    mp = p < P
    mn = n < N
    t = tb * BLOCK_M + tl.arange(0, BLOCK_M)
    mt = t < clen
    pos_t = c * Q + t
    Ct = tl.load(C_ptr + b * s_C_b + pos_t[:, None] * s_C_l + g * s_C_g + n[None, :] * s_C_n,
                 mask=mt[:, None] & mn[None, :], other=0.0).to(tl.float32)
    cs_t = tl.load(cs_ptr + bh * L + pos_t, mask=mt, other=0.0)
    st_off = ((b * n_chunks + c) * H + h) * P * N
    hs = tl.load(st_ptr + st_off + p[:, None] * N + n[None, :], mask=mp[:, None] & mn[None, :], other=0.0)
    # state term: exp(cs_t) * C_t hs^T
    acc = _mm(Ct, tl.trans(hs), x_ptr, DOT_PREC, LOWP) * tl.exp(cs_t)[:, None]
    for sb in range(0, tb + 1):
        s = sb * BLOCK_M + tl.arange(0, BLOCK_M)
        ms = s < clen
        pos_s = c * Q + s
        Bs = tl.load(B_ptr + b * s_B_b + pos_s[:, None] * s_B_l + g * s_B_g + n[None, :] * s_B_n,
                     mask=ms[:, None] & mn[None, :], other=0.0).to(tl.float32)
        xs = tl.load(x_ptr + b * s_x_b + pos_s[:, None] * s_x_l + h * s_x_h + p[None, :] * s_x_p,
                     mask=ms[:, None] & mp[None, :], other=0.0).to(tl.float32)
        cs_s = tl.load(cs_ptr + bh * L + pos_s, mask=ms, other=0.0)
        dt_s = tl.load(dtp_ptr + bh * L + pos_s, mask=ms, other=0.0)
        cb = _mm(Ct, tl.trans(Bs), x_ptr, DOT_PREC, LOWP)                     # [t, s]
        keep = (s[None, :] <= t[:, None]) & ms[None, :] & mt[:, None]
        decay = tl.where(keep, tl.exp(tl.where(keep, cs_t[:, None] - cs_s[None, :], 0.0)), 0.0)
        acc += _mm(cb * decay * dt_s[None, :], xs, x_ptr, DOT_PREC, LOWP)
    m2 = mt[:, None] & mp[None, :]
    if HAS_D:
        xt = tl.load(x_ptr + b * s_x_b + pos_t[:, None] * s_x_l + h * s_x_h + p[None, :] * s_x_p,
                     mask=m2, other=0.0).to(tl.float32)
        Dp = tl.load(D_ptr + h * s_D_h + p * s_D_p, mask=mp, other=0.0).to(tl.float32)
        acc += xt * Dp[None, :]
    # outputs are contiguous (batch, L, heads, headdim)
    o_off = ((b * L + pos_t[:, None]) * H + h) * P + p[None, :]
    if HAS_Z:
        if STORE_YPRE:
            tl.store(ypre_ptr + o_off, acc.to(ypre_ptr.dtype.element_ty), mask=m2)
        zt = tl.load(z_ptr + b * s_z_b + pos_t[:, None] * s_z_l + h * s_z_h + p[None, :] * s_z_p,
                     mask=m2, other=0.0).to(tl.float32)
        acc = acc * zt * _sigmoid(zt)
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=m2)


# --------------------------------------------------------------------------------------------- backward
@triton.jit
def ssd_gate_bwd(dout_ptr, z_ptr, ypre_ptr, g_ptr, dz_ptr, numel, BLOCK: tl.constexpr):
    """Flat over contiguous (batch, L, heads, headdim): g = dout * silu(z), dz = dout * y * silu'(z)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < numel
    do = tl.load(dout_ptr + i, mask=m, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + i, mask=m, other=0.0).to(tl.float32)
    y = tl.load(ypre_ptr + i, mask=m, other=0.0).to(tl.float32)
    sg = _sigmoid(z)
    tl.store(g_ptr + i, do * z * sg, mask=m)
    tl.store(dz_ptr + i, (do * y * sg * (1.0 + z * (1.0 - sg))).to(dz_ptr.dtype.element_ty), mask=m)


@triton.jit
def ssd_dstate_local_bwd(g_ptr, C_ptr, cs_ptr, dst_ptr,
                         L, H, Q, P, N, heads_per_group, n_chunks,
                         s_C_b, s_C_l, s_C_g, s_C_n,
                         BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                         DOT_PREC: tl.constexpr, LOWP: tl.constexpr):
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    g = h // heads_per_group
    clen = _chunk_len(c, L, Q)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, Q, BLOCK_M):
        t = k0 + tl.arange(0, BLOCK_M)
        mt = t < clen
        pos = c * Q + t
        gt = tl.load(g_ptr + ((b * L + pos[:, None]) * H + h) * P + p[None, :],
                     mask=mt[:, None] & (p[None, :] < P), other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * s_C_b + pos[:, None] * s_C_l + g * s_C_g + n[None, :] * s_C_n,
                     mask=mt[:, None] & (n[None, :] < N), other=0.0).to(tl.float32)
        cs = tl.load(cs_ptr + bh * L + pos, mask=mt, other=0.0)
        w = tl.where(mt, tl.exp(cs), 0.0)
        acc += _mm(tl.trans(gt * w[:, None]), Ct, C_ptr, DOT_PREC, LOWP)
    off = ((b * n_chunks + c) * H + h) * P * N
    tl.store(dst_ptr + off + p[:, None] * N + n[None, :], acc, mask=(p[:, None] < P) & (n[None, :] < N))


@triton.jit
def ssd_state_pass_bwd(dst_ptr, st_ptr, cs_ptr, dfinal_ptr, dinit_ptr, ddecay_ptr,
                       L, H, Q, PN, n_chunks, n_eblocks,
                       HAS_DFINAL: tl.constexpr, WRITE_DINIT: tl.constexpr, BLOCK_E: tl.constexpr):
    pe = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    e = pe * BLOCK_E + tl.arange(0, BLOCK_E)
    me = e < PN
    if HAS_DFINAL:
        carry = tl.load(dfinal_ptr + bh * PN + e, mask=me, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        off = ((b * n_chunks + c) * H + h) * PN + e
        loc = tl.load(dst_ptr + off, mask=me, other=0.0)
        hs = tl.load(st_ptr + off, mask=me, other=0.0)
        clen = _chunk_len(c, L, Q)
        decay = tl.exp(tl.load(cs_ptr + bh * L + c * Q + clen - 1))
        # d(cs_last): hs_{c+1} = exp(cs_last) hs_c + S_c
        tl.store(ddecay_ptr + (bh * n_chunks + c) * n_eblocks + pe, tl.sum(carry * hs, axis=0) * decay)
        tl.store(dst_ptr + off, carry, mask=me)   # dS_c = G_{c+1}
        carry = loc + decay * carry
    if WRITE_DINIT:
        tl.store(dinit_ptr + bh * PN + e, carry, mask=me)


@triton.jit
def ssd_dx_bwd(x_ptr, B_ptr, C_ptr, D_ptr, g_ptr, dtp_ptr, cs_ptr, dst_ptr,
               dx_ptr, dB_ptr, ddt_ptr, dcs_ptr, F_ptr, dD_ptr,
               L, H, Q, P, N, G, heads_per_group, n_chunks, n_qblocks, slice_stride,
               s_x_b, s_x_l, s_x_h, s_x_p,
               s_B_b, s_B_l, s_B_g, s_B_n,
               s_C_b, s_C_l, s_C_g, s_C_n,
               s_D_h, s_D_p,
               HAS_D: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr):
    sb = tl.program_id(0)
    c = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    g = h // heads_per_group
    clen = _chunk_len(c, L, Q)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    mp = p < P
    mn = n < N
    s = sb * BLOCK_M + tl.arange(0, BLOCK_M)
    ms = s < clen
    pos_s = c * Q + s
    m_sp = ms[:, None] & mp[None, :]
    m_sn = ms[:, None] & mn[None, :]
    xs = tl.load(x_ptr + b * s_x_b + pos_s[:, None] * s_x_l + h * s_x_h + p[None, :] * s_x_p,
                 mask=m_sp, other=0.0).to(tl.float32)
    Bs = tl.load(B_ptr + b * s_B_b + pos_s[:, None] * s_B_l + g * s_B_g + n[None, :] * s_B_n,
                 mask=m_sn, other=0.0).to(tl.float32)
    cs_s = tl.load(cs_ptr + bh * L + pos_s, mask=ms, other=0.0)
    dt_s = tl.load(dtp_ptr + bh * L + pos_s, mask=ms, other=0.0)
    cs_last = tl.load(cs_ptr + bh * L + c * Q + clen - 1)
    # chunk-state term, dS = gradient of this chunk's own end state
    st_off = ((b * n_chunks + c) * H + h) * P * N
    dS = tl.load(dst_ptr + st_off + p[:, None] * N + n[None, :], mask=mp[:, None] & mn[None, :], other=0.0)
    w = tl.where(ms, tl.exp(tl.where(ms, cs_last - cs_s, 0.0)), 0.0)
    sb_ = _mm(Bs, tl.trans(dS), x_ptr, DOT_PREC, LOWP)                         # [s, p]
    ddt_state = w * tl.sum(xs * sb_, axis=1)
    dx = sb_ * (w * dt_s)[:, None]
    dB = _mm(xs, dS, x_ptr, DOT_PREC, LOWP) * (w * dt_s)[:, None]               # [s, n]
    # intra-chunk term: rows t >= s
    ddt_intra = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for tb in range(sb, n_qblocks):
        t = tb * BLOCK_M + tl.arange(0, BLOCK_M)
        mt = t < clen
        pos_t = c * Q + t
        Ct = tl.load(C_ptr + b * s_C_b + pos_t[:, None] * s_C_l + g * s_C_g + n[None, :] * s_C_n,
                     mask=mt[:, None] & mn[None, :], other=0.0).to(tl.float32)
        gt = tl.load(g_ptr + ((b * L + pos_t[:, None]) * H + h) * P + p[None, :],
                     mask=mt[:, None] & mp[None, :], other=0.0).to(tl.float32)
        cs_t = tl.load(cs_ptr + bh * L + pos_t, mask=mt, other=0.0)
        keep = (t[None, :] >= s[:, None]) & mt[None, :] & ms[:, None]
        decay = tl.where(keep, tl.exp(tl.where(keep, cs_t[None, :] - cs_s[:, None], 0.0)), 0.0)   # [s, t]
        kd = _mm(Bs, tl.trans(Ct), x_ptr, DOT_PREC, LOWP) * decay                 # [s, t]
        gx = _mm(xs, tl.trans(gt), x_ptr, DOT_PREC, LOWP)                         # [s, t]
        dx += _mm(kd, gt, x_ptr, DOT_PREC, LOWP) * dt_s[:, None]
        ddt_intra += tl.sum(kd * gx, axis=1)
        dB += _mm(decay * gx, Ct, x_ptr, DOT_PREC, LOWP) * dt_s[:, None]
    if HAS_D:
        gs = tl.load(g_ptr + ((b * L + pos_s[:, None]) * H + h) * P + p[None, :],
                     mask=m_sp, other=0.0).to(tl.float32)
        Dp = tl.load(D_ptr + h * s_D_h + p * s_D_p, mask=mp, other=0.0).to(tl.float32)
        dx += gs * Dp[None, :]
        tl.store(dD_ptr + ((bh * n_chunks + c) * n_qblocks + sb) * P + p, tl.sum(gs * xs, axis=0), mask=mp)
    tl.store(dx_ptr + ((b * L + pos_s[:, None]) * H + h) * P + p[None, :],
             dx.to(dx_ptr.dtype.element_ty), mask=m_sp)
    dB_ptr += (h % heads_per_group) * slice_stride   # 0 unless deterministic (one slice per head of a group)
    tl.atomic_add(dB_ptr + ((b * L + pos_s[:, None]) * G + g) * N + n[None, :], dB, mask=m_sn, sem="relaxed")
    tl.store(ddt_ptr + bh * L + pos_s, ddt_intra + ddt_state, mask=ms)
    tl.store(dcs_ptr + bh * L + pos_s, -dt_s * ddt_intra, mask=ms)
    tl.store(F_ptr + bh * L + pos_s, dt_s * ddt_state, mask=ms)


@triton.jit
def ssd_dC_bwd(x_ptr, B_ptr, C_ptr, g_ptr, dtp_ptr, cs_ptr, st_ptr, dC_ptr, dcs_ptr,
               L, H, Q, P, N, G, heads_per_group, n_chunks, slice_stride,
               s_x_b, s_x_l, s_x_h, s_x_p,
               s_B_b, s_B_l, s_B_g, s_B_n,
               s_C_b, s_C_l, s_C_g, s_C_n,
               BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr):
    tb = tl.program_id(0)
    c = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    g = h // heads_per_group
    clen = _chunk_len(c, L, Q)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    mp = p < P
    mn = n < N
    t = tb * BLOCK_M + tl.arange(0, BLOCK_M)
    mt = t < clen
    pos_t = c * Q + t
    m_tn = mt[:, None] & mn[None, :]
    Ct = tl.load(C_ptr + b * s_C_b + pos_t[:, None] * s_C_l + g * s_C_g + n[None, :] * s_C_n,
                 mask=m_tn, other=0.0).to(tl.float32)
    gt = tl.load(g_ptr + ((b * L + pos_t[:, None]) * H + h) * P + p[None, :],
                 mask=mt[:, None] & mp[None, :], other=0.0).to(tl.float32)
    cs_t = tl.load(cs_ptr + bh * L + pos_t, mask=mt, other=0.0)
    st_off = ((b * n_chunks + c) * H + h) * P * N
    hs = tl.load(st_ptr + st_off + p[:, None] * N + n[None, :], mask=mp[:, None] & mn[None, :], other=0.0)
    dC = _mm(gt, hs, x_ptr, DOT_PREC, LOWP) * tl.where(mt, tl.exp(cs_t), 0.0)[:, None]
    for sb in range(0, tb + 1):
        s = sb * BLOCK_M + tl.arange(0, BLOCK_M)
        ms = s < clen
        pos_s = c * Q + s
        xs = tl.load(x_ptr + b * s_x_b + pos_s[:, None] * s_x_l + h * s_x_h + p[None, :] * s_x_p,
                     mask=ms[:, None] & mp[None, :], other=0.0).to(tl.float32)
        Bs = tl.load(B_ptr + b * s_B_b + pos_s[:, None] * s_B_l + g * s_B_g + n[None, :] * s_B_n,
                     mask=ms[:, None] & mn[None, :], other=0.0).to(tl.float32)
        cs_s = tl.load(cs_ptr + bh * L + pos_s, mask=ms, other=0.0)
        dt_s = tl.load(dtp_ptr + bh * L + pos_s, mask=ms, other=0.0)
        keep = (s[None, :] <= t[:, None]) & ms[None, :] & mt[:, None]
        decay = tl.where(keep, tl.exp(tl.where(keep, cs_t[:, None] - cs_s[None, :], 0.0)), 0.0)   # [t, s]
        gx = _mm(gt, tl.trans(xs), x_ptr, DOT_PREC, LOWP)                        # [t, s]
        dC += _mm(gx * decay * dt_s[None, :], Bs, x_ptr, DOT_PREC, LOWP)
    tl.store(dcs_ptr + bh * L + pos_t, tl.sum(Ct * dC, axis=1), mask=mt)
    dC_ptr += (h % heads_per_group) * slice_stride
    tl.atomic_add(dC_ptr + ((b * L + pos_t[:, None]) * G + g) * N + n[None, :], dC, mask=m_tn, sem="relaxed")


@triton.jit
def ssd_dt_bwd(dt_ptr, A_ptr, bias_ptr, dtp_ptr, ddt_dir_ptr, dcs_s_ptr, dcs_t_ptr, F_ptr, ddecay_ptr,
               ddt_ptr, dA_ptr, dbias_ptr,
               L, H, Q, n_chunks, n_eblocks, dt_min, dt_max,
               s_dt_b, s_dt_l, s_dt_h, s_ddt_b, s_ddt_l, s_ddt_h,
               HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               BLOCK_Q: tl.constexpr, BLOCK_EB: tl.constexpr):
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)   # int64 offsets: batch strides can pass 2^31 elements in all
    h = bh % H
    u = tl.arange(0, BLOCK_Q)
    m = u < _chunk_len(c, L, Q)
    pos = c * Q + u
    o = bh * L + pos
    dcs = tl.load(dcs_s_ptr + o, mask=m, other=0.0) + tl.load(dcs_t_ptr + o, mask=m, other=0.0)
    F = tl.load(F_ptr + o, mask=m, other=0.0)
    eb = tl.arange(0, BLOCK_EB)
    ddecay = tl.sum(tl.load(ddecay_ptr + (bh * n_chunks + c) * n_eblocks + eb, mask=eb < n_eblocks, other=0.0),
                    axis=0)
    # d(dt'_u A) = sum_{t >= u} dcs_t + sum_{s < u} F_s + d(cs_last)
    rev = tl.sum(dcs, axis=0) - tl.cumsum(dcs, axis=0) + dcs
    excl = tl.cumsum(F, axis=0) - F
    dda = tl.where(m, rev + excl + ddecay, 0.0)
    A = tl.load(A_ptr + h).to(tl.float32)
    dtp = tl.load(dtp_ptr + o, mask=m, other=0.0)
    ddtp = tl.load(ddt_dir_ptr + o, mask=m, other=0.0) + A * dda
    tl.store(dA_ptr + bh * n_chunks + c, tl.sum(dtp * dda, axis=0))
    # back through clamp and softplus (recomputed from the raw dt)
    v = tl.load(dt_ptr + b * s_dt_b + pos * s_dt_l + h * s_dt_h, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        sp = tl.where(v <= 20.0, _softplus(v), v)
        ddtp = tl.where(v <= 20.0, ddtp * _sigmoid(v), ddtp)
    else:
        sp = v
    ddtp = tl.where((sp >= dt_min) & (sp <= dt_max) & m, ddtp, 0.0)
    tl.store(ddt_ptr + b * s_ddt_b + pos * s_ddt_l + h * s_ddt_h, ddtp.to(ddt_ptr.dtype.element_ty), mask=m)
    if HAS_BIAS:
        tl.store(dbias_ptr + bh * n_chunks + c, tl.sum(ddtp, axis=0))
