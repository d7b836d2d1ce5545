"""The chunked SSD algorithm (Dao & Gu 2024, section 6) in plain PyTorch: the "without fused kernel" path.

Why this form: it is the algorithm the fused kernels implement, written as batched matmuls, so it is both
a fast-enough CPU backend and a readable statement of what the Triton kernels compute.  With L split into
chunks of Q steps, per head:

1. **within each chunk** (the dual, attention-like form): Y_diag = (Lmask o C B^T) (dt x), where
   Lmask[l, s] = exp(sum_{k=s+1..l} dt_k A) for s <= l, else 0 (C B^T is formed once per *group*);
2. **chunk states** from a zero start: S_c = sum_s exp(sum_{k>s in chunk} dt_k A) dt_s x_s B_s^T;
3. **state passing** across chunks (a short sequential loop over L/Q chunk boundaries, from
   initial_states): H_c = exp(sum_chunk dt A) H_{c-1} + S_c;
4. **state to output**: Y_off[l] = exp(sum_{k<=l in chunk} dt_k A) C_l H_{c-1}.

Memory beyond the (float32 copies of the) inputs: the chunk states, (batch, L/Q, heads, headdim, N), and the
Q x Q blocks, (batch, heads, L/Q, Q, Q); never the per-step states (batch, L, heads, headdim, N) that the
recurrence would have.  The within-chunk segment sums are formed exactly (a masked cumulative sum of the
dt A terms of each segment, not a difference of two long cumulative sums, which loses float32 precision as
the sums grow) and every exponential is guarded as exp(min(., 0)), so nothing can overflow and no mask
needs -inf (no NaN gradients).  L need not be a multiple of Q: dt is padded with zeros (decay 1, no input)
and the output cut.  Accumulation in float32 (float64 for float64 inputs); autograd backward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.ssd.validate import accumulation_dtype, process_dt


def _pad_time(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) at the end by ``pad`` steps."""
    if not pad:
        return t
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def ssd_chunked(x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
                dt_limit=(0.0, math.inf), initial_states=None, return_final_states=False):
    """Same contract as ``kernels.ssd`` (inputs already validated).  A chunk longer than L is cut to L."""
    acc = accumulation_dtype(x, dt, A, B, C)
    batch, L, heads, headdim = x.shape
    groups, N = B.shape[2], B.shape[3]
    rep = heads // groups
    Q = max(1, min(int(chunk_size), L))
    nc = -(-L // Q)
    pad = nc * Q - L

    dtf = _pad_time(process_dt(dt, dt_bias, dt_softplus, dt_limit, acc), pad)        # (b, T, h)
    xa = x.to(acc)              # cast once: two casts would round (and sum) x's gradient twice in bf16
    xdt = _pad_time(xa, pad) * dtf.unsqueeze(-1)                             # (b, T, h, p)
    xdt = xdt.reshape(batch, nc, Q, groups, rep, headdim)
    Bc = _pad_time(B.to(acc), pad).reshape(batch, nc, Q, groups, N)
    Cc = _pad_time(C.to(acc), pad).reshape(batch, nc, Q, groups, N)
    dA = (dtf.reshape(batch, nc, Q, groups, rep) * A.to(acc).reshape(groups, rep))   # (b, c, Q, g, r)
    dA = dA.permute(0, 1, 3, 4, 2)                                                     # (b, c, g, r, Q)

    # exact segment sums seg[l, s] = sum_{s < k <= l} dA_k (0 where s >= l): cumulate dA_k over k only
    # for the columns s < k
    idx = torch.arange(Q, device=x.device)
    strict = idx[:, None] > idx[None, :]                                              # [k, s]: k > s
    seg = torch.where(strict, dA.unsqueeze(-1), dA.new_zeros(())).cumsum(-2)         # (b, c, g, r, Q, Q)
    lower = idx[:, None] >= idx[None, :]
    decay = torch.where(lower, torch.exp(seg.clamp(max=0.0)), seg.new_zeros(()))     # Lmask [l, s]

    # 1. within chunks: (Lmask o C B^T) (dt x); C B^T once per group
    CB = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)                                    # (b, c, g, Q, Q)
    y = torch.einsum("bcgrls,bcsgrp->bclgrp", decay * CB.unsqueeze(3), xdt)

    # 2. chunk states from a zero start; the decay from step s to the chunk's end is Lmask's last row
    to_end = decay[..., -1, :].permute(0, 1, 4, 2, 3).unsqueeze(-1)                   # (b, c, Q, g, r, 1)
    states = torch.einsum("bcsgn,bcsgrp->bcgrpn", Bc, xdt * to_end)                   # (b, c, g, r, p, N)

    # 3. state passing: a scalar decay per head and chunk (exact: the chunk's own sum of dA)
    cs = dA.cumsum(-1)                                                                 # (b, c, g, r, Q)
    chunk_decay = torch.exp(cs[..., -1].clamp(max=0.0))[..., None, None]              # (b, c, g, r, 1, 1)
    if initial_states is not None:
        h = initial_states.to(acc).reshape(batch, groups, rep, headdim, N)
    else:
        h = states.new_zeros(batch, groups, rep, headdim, N)
    carried = []
    for c in range(nc):
        carried.append(h)
        h = chunk_decay[:, c] * h + states[:, c]
    carried = torch.stack(carried, 1) if nc else states                               # (b, c, g, r, p, N)

    # 4. carried-in state to output through C, decayed from the chunk start to step l
    from_start = torch.exp(cs.clamp(max=0.0)).permute(0, 1, 4, 2, 3).unsqueeze(-1)   # (b, c, Q, g, r, 1)
    y = y + torch.einsum("bclgn,bcgrpn->bclgrp", Cc, carried) * from_start

    y = y.reshape(batch, nc * Q, heads, headdim)[:, :L]
    if D is not None:
        Dm = D.to(acc)
        y = y + xa * (Dm[:, None] if Dm.dim() == 1 else Dm)
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(x.dtype)
    return (y, h.reshape(batch, heads, headdim, N)) if return_final_states else y
