"""The sequential selective scan: a plain loop over time in float32. The oracle and the unfused baseline."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.selective_scan.validate import discretize_dt, expand_groups


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """h_t = exp(dt_t*A) h_{t-1} + dt_t B_t u_t ;  y_t = <C_t, h_t> + D u_t ;  y *= silu(z).

    Computes in float32 (float64 if any input is float64, which makes it the test oracle) whatever
    the input dtype; y comes back in u.dtype.  Differentiable through autograd.  One PyTorch step
    per time step: this is the launch-bound "PyTorch sequential" baseline of DESIGN.md.
    """
    dtype_in = u.dtype
    acc = torch.float64 if torch.float64 in (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype) else torch.float32
    u, delta, A, B, C = (t.to(acc) for t in (u, delta, A, B, C))
    batch, dim, L = u.shape
    dt = discretize_dt(delta, delta_bias, delta_softplus)
    Bx, Cx = expand_groups(B, dim), expand_groups(C, dim)            # (b, d, n, L)
    dA = torch.exp(dt.unsqueeze(2) * A[None, :, :, None])            # (b, d, n, L)
    dBu = dt.unsqueeze(2) * Bx * u.unsqueeze(2)                      # (b, d, n, L)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    # unbind, not [..., t]: the backward of one unbind is one stack, the backward of L slices is
    # L full-size zero tensors (O(L^2) work)
    C_steps = Cx.unbind(-1) if Cx.shape[-1] == L else [Cx[..., 0]] * L   # a constant C is one (1, d, n) view
    for dA_t, dBu_t, C_t in zip(dA.unbind(-1), dBu.unbind(-1), C_steps):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1) if L else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u * D.to(acc)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
