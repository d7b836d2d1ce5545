"""Plain PyTorch references the correctness gate compares targets with, for operators that have no
reference backend in ``kernels`` (the selective scan's is ``kernels.selective_scan(backend="reference")``).

Each is the operator's defining recurrence or sum, written for clarity, in the dtype it is given (the gate
calls them on float64 copies), on the published layouts of the packages whose kernels they check.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def causal_conv_direct(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{j <= t} k_j u_{t-j} per channel: u (batch, dim, L), k (dim, W) with W <= L or any W."""
    W = k.shape[-1]
    return F.conv1d(F.pad(u, (W - 1, 0)), k.flip(-1).unsqueeze(1), groups=u.shape[1])


def ssd_via_selective_scan(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    """Mamba-2's SSD in mamba_chunk_scan_combined's layout, as the selective scan it is (scalar A per head):
    x (batch, L, heads, headdim), dt (batch, L, heads), A (heads,), B, C (batch, L, groups, N), D (heads,) or
    (heads, headdim), dt_bias (heads,) -> y (batch, L, heads, headdim).  Channels are heads * headdim; the
    groups of B and C are the selective scan's groups.  Uses the reference backend (float64 in, float64 out)."""
    from kernels import selective_scan

    b, L, h, p = x.shape
    N = B.shape[-1]
    u = x.permute(0, 2, 3, 1).reshape(b, h * p, L)
    delta = dt.permute(0, 2, 1).repeat_interleave(p, dim=1)                      # (b, h*p, L)
    A_full = A[:, None, None].expand(h, p, N).reshape(h * p, N)                    # the head's A on every channel
    Bs, Cs = (M.permute(0, 2, 3, 1) for M in (B, C))                             # (b, groups, N, L)
    Dfull = None if D is None else (D[:, None].expand(h, p) if D.dim() == 1 else D).reshape(h * p)
    bias = None if dt_bias is None else dt_bias.repeat_interleave(p)
    y = selective_scan(u, delta, A_full, Bs, Cs, D=Dfull, delta_bias=bias,
                       delta_softplus=dt_softplus, backend="reference")
    return y.reshape(b, h, p, L).permute(0, 3, 1, 2)


def state_update_step(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    """One decoding step of the S6 recurrence, official selective_state_update meaning, S6 layout: state
    (batch, dim, N), x, dt (batch, dim), A (dim, N), B, C (batch, N), D, dt_bias (dim,) -> y (batch, dim).
    Returns y only (the target updates its state in place; the reference works on a copy)."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    h = torch.exp(dt[..., None] * A) * state + (dt * x)[..., None] * B[:, None, :]
    y = (h * C[:, None, :]).sum(-1)
    return y + x * D if D is not None else y


def gla_recurrence(q, k, v, g, scale: Optional[float] = None):
    """Gated linear attention, fla's chunk_gla meaning: q, k, g (batch, L, heads, K) (g: log forget gates),
    v (batch, L, heads, V).  S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t ; o_t = (scale q_t) S_t."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b, L, h, K = q.shape
    S = q.new_zeros(b, h, K, v.shape[-1])
    out = []
    for t in range(L):
        S = S * g[:, t].exp()[..., None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(((q[:, t] * scale)[..., None] * S).sum(-2))
    return torch.stack(out, dim=1)


def gated_delta_rule_recurrence(q, k, v, g, beta, scale: Optional[float] = None):
    """The gated delta rule, fla's chunk_gated_delta_rule meaning: q, k (batch, L, heads, K), v (batch, L,
    heads, V), g, beta (batch, L, heads) (g: log decay).  S <- exp(g_t) S; u = beta_t (v_t - S^T k_t);
    S <- S + k_t u^T; o_t = S^T (scale q_t)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b, L, h, K = q.shape
    S = q.new_zeros(b, h, K, v.shape[-1])
    out = []
    for t in range(L):
        S = S * g[:, t].exp()[..., None, None]
        kt = k[:, t]
        u = (v[:, t] - (S * kt[..., None]).sum(-2)) * beta[:, t, :, None]
        S = S + kt[..., None] * u[..., None, :]
        out.append(((q[:, t] * scale)[..., None] * S).sum(-2))
    return torch.stack(out, dim=1)
