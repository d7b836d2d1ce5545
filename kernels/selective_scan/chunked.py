"""The chunked selective scan: a parallel scan in plain PyTorch (no custom kernel), autograd backward.

This is the "standard scan implementation in PyTorch" that the Mamba paper compares its fused
kernel against: it materialises dA = exp(dt*A) and dB*u, and the states, as (batch, dim, L, N)
float32 tensors, so it moves O(batch*dim*L*N) bytes where the fused kernel moves O(batch*dim*L).

The classic three-phase chunked scan (as in GPU prefix sums), with L split into chunks of T steps:

1. **within each chunk**, a sequential scan over its T steps, run for all chunks at once (so T
   PyTorch steps, each over batch*dim*n_chunks*N elements), starting from a zero state;
2. **across chunks**, carry the state: h0[c+1] = decay[c] * h0[c] + h_local[c, T-1] (n_chunks small
   steps over (batch, dim, N));
3. **fix up** every step in parallel: h_t = h_local_t + exp(cumsum_{s<=t in chunk} dt_s*A) * h0[c].

Numerically safe: nothing but products of exp(dt*A) <= 1 and exp of a within-chunk cumulative sum
of dt*A <= 0 (bounded by 1), never exp of a positive number or a division by a decay.  With
T ~ sqrt(L) the Python loop has ~2*sqrt(L) steps instead of L.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from kernels.selective_scan.validate import discretize_dt, expand_groups


def default_chunk(L: int) -> int:
    """A power of two near sqrt(L): balances the within-chunk and across-chunk loop lengths."""
    return int(min(256, max(8, 2 ** round(math.log2(max(L, 1)) / 2))))


def _per_step(M: torch.Tensor, batch: int, dim: int, N: int, nc: int, T: int, pad: int) -> torch.Tensor:
    """B or C laid out as (batch, dim, nc, T, N); a constant (dim, N) stays a (1, dim, 1, 1, N) view."""
    if M.dim() == 2:
        return M[None, :, None, None, :]
    return F.pad(expand_groups(M, dim), (0, pad)).view(batch, dim, N, nc, T).permute(0, 1, 3, 4, 2)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, chunk: Optional[int] = None):
    """Same contract as ``kernels.selective_scan``; ``chunk`` is the number of time steps per chunk."""
    dtype_in = u.dtype
    acc = torch.float64 if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype) else torch.float32
    batch, dim, L = u.shape
    N = A.shape[1]
    uf, A = u.to(acc), A.to(acc)
    dt = discretize_dt(delta.to(acc), delta_bias, delta_softplus)                 # (b, d, L)
    if L == 0:
        y = uf.new_zeros(batch, dim, 0).to(dtype_in)
        return (y, uf.new_zeros(batch, dim, N)) if return_last_state else y
    T = int(chunk or default_chunk(L))
    nc = -(-L // T)
    pad = nc * T - L
    # Padded steps have dt = 0: decay 1 and input 0, so they leave the state unchanged.
    dt_p = F.pad(dt, (0, pad)).view(batch, dim, nc, T)
    u_p = F.pad(uf, (0, pad)).view(batch, dim, nc, T)
    Bx, Cx = (_per_step(M.to(acc), batch, dim, N, nc, T, pad) for M in (B, C))   # (b|1, d, nc|1, T|1, N)
    dtA = dt_p.unsqueeze(-1) * A[None, :, None, None, :]                          # (b, d, nc, T, N) <= 0
    dA = torch.exp(dtA)
    dBu = (dt_p * u_p).unsqueeze(-1) * Bx                                          # (b, d, nc, T, N)

    # 1. within-chunk scan from a zero state, all chunks at once
    # unbind, not [:, :, :, t]: one stack in the backward instead of T full-size zero tensors
    dA_t, dBu_t = dA.unbind(3), dBu.unbind(3)
    h = dBu_t[0]
    local = [h]
    for t in range(1, T):
        h = dA_t[t] * h + dBu_t[t]
        local.append(h)
    h_local = torch.stack(local, dim=3)                                            # (b, d, nc, T, N)

    # 2. carry the state across chunks
    decay_in = torch.exp(torch.cumsum(dtA, dim=3))                                 # prod of dA up to t, <= 1
    chunk_decay, chunk_end = decay_in[:, :, :, T - 1].unbind(2), h_local[:, :, :, T - 1].unbind(2)
    h0 = [h_local.new_zeros(batch, dim, N)]
    for c in range(nc - 1):
        h0.append(chunk_decay[c] * h0[-1] + chunk_end[c])
    h0 = torch.stack(h0, dim=2)                                                    # (b, d, nc, N)

    # 3. fix up every step, contract with C
    states = h_local + decay_in * h0.unsqueeze(3)
    y = (states * Cx).sum(-1).reshape(batch, dim, nc * T)[..., :L]
    if D is not None:
        y = y + uf * D.to(acc)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(dtype_in)
    if return_last_state:
        return y, states[:, :, nc - 1, T - 1]  # padded steps keep the state, so this is h_{L-1}
    return y
