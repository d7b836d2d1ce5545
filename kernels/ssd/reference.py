"""The sequential SSD recurrence: one PyTorch step per time step, in float32.  The oracle of the other
backends (with float64 inputs it runs in float64) and the launch-bound "PyTorch sequential" baseline.

Why a loop and not the dual (attention-like) form: the recurrence is the definition in the paper (Eq. 16)
with nothing to get wrong (no chunking, no masks, no padding), so it is what the chunked and fused
algorithms are checked against.  It keeps every per-step state for autograd (L x heads x headdim x N per
sequence), so it is for small problems.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.ssd.validate import accumulation_dtype, process_dt


def ssd_reference(x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
                  dt_limit=(0.0, math.inf), initial_states=None, return_final_states=False):
    """Per head: a_t = exp(dt_t A); h_t = a_t h_{t-1} + dt_t x_t B_t^T; y_t = h_t C_t + D x_t; y *= silu(z).

    Inputs already validated (``kernels.ssd`` does it).  ``chunk_size`` is accepted for a common signature
    and ignored.  Returns y in x.dtype, or (y, final_states (batch, heads, headdim, N) float32 (float64 in
    float64 mode)).  Differentiable through autograd.
    """
    acc = accumulation_dtype(x, dt, A, B, C)
    batch, L, heads, headdim = x.shape
    groups, N = B.shape[2], B.shape[3]
    rep = heads // groups
    # heads as (groups, heads per group): head h reads B/C group h // rep, without copying B and C
    xa = x.to(acc)              # cast once: two casts would round (and sum) x's gradient twice in bf16
    xf = xa.reshape(batch, L, groups, rep, headdim)
    dtf = process_dt(dt, dt_bias, dt_softplus, dt_limit, acc).reshape(batch, L, groups, rep)
    Af = A.to(acc).reshape(groups, rep)
    Bf, Cf = B.to(acc), C.to(acc)
    if initial_states is not None:
        h = initial_states.to(acc).reshape(batch, groups, rep, headdim, N)
    else:
        h = xf.new_zeros(batch, groups, rep, headdim, N)
    decay = torch.exp(dtf * Af)                                          # (b, L, g, r)
    dtx = dtf.unsqueeze(-1) * xf                                         # (b, L, g, r, p)
    ys = []
    # unbind, not [:, t]: the backward of one unbind is one stack, of L slices L full-size zero tensors
    for a_t, u_t, B_t, C_t in zip(decay.unbind(1), dtx.unbind(1), Bf.unbind(1), Cf.unbind(1)):
        h = a_t[..., None, None] * h + u_t.unsqueeze(-1) * B_t[:, :, None, None, :]
        ys.append((h * C_t[:, :, None, None, :]).sum(-1))               # (b, g, r, p)
    y = torch.stack(ys, 1) if L else xf.new_zeros(batch, 0, groups, rep, headdim)
    y = y.reshape(batch, L, heads, headdim)
    if D is not None:
        Dm = D.to(acc)
        y = y + xa * (Dm[:, None] if Dm.dim() == 1 else Dm)
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(x.dtype)
    return (y, h.reshape(batch, heads, headdim, N)) if return_final_states else y
