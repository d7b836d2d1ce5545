"""Plain PyTorch references the correctness gate compares targets with, for operators that have no
reference backend in ``kernels`` (the selective scan's is ``kernels.selective_scan(backend="reference")``, SSD's
``kernels.ssd(backend="reference")``, the decoding step's ``selective_state_update_reference``).

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
