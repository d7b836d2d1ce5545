"""Kernels: the selective scan (S6) and the SSD scan (Mamba-2), each with reference / chunked / triton backends
(contracts in DESIGN.md), and their one-step (decoding) form, ``selective_state_update`` (one function for
both state layouts, as in mamba_ssm)."""
from __future__ import annotations

import math

import torch

from kernels.roofline import selective_scan_bytes, selective_scan_exps
from kernels.selective_scan.chunked import selective_scan_chunked
from kernels.selective_scan.reference import selective_scan_reference
from kernels.selective_scan.state_update import selective_state_update
from kernels.selective_scan.validate import BACKENDS, check_inputs, resolve_backend
from kernels.ssd.chunked import ssd_chunked
from kernels.ssd.reference import ssd_reference
from kernels.ssd.validate import check_backend as check_ssd_backend
from kernels.ssd.validate import check_inputs as check_ssd_inputs

__all__ = ["selective_scan", "BACKENDS", "resolve_backend", "selective_scan_bytes", "selective_scan_exps",
           "selective_scan_reference", "selective_scan_chunked", "selective_state_update",
           "ssd", "ssd_reference", "ssd_chunked"]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """Same shapes and meaning as mamba_ssm's ``selective_scan_fn``; ``backend`` picks the implementation.

    u, delta, z: (batch, dim, L); A: (dim, N) float32; B, C: (batch, N, L) or (batch, groups, N, L);
    D, delta_bias: (dim,).  Returns y (u.dtype), or (y, last_state (batch, dim, N) float32).
    """
    backend = resolve_backend(backend, u.device if isinstance(u, torch.Tensor) else "cpu")
    check_inputs(u, delta, A, B, C, D, z, delta_bias)
    args = (u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), bool(return_last_state))
    if backend == "reference":
        return selective_scan_reference(*args)
    if backend == "chunked":
        return selective_scan_chunked(*args)
    from kernels.selective_scan.triton_backend import selective_scan_triton  # triton is imported lazily

    return selective_scan_triton(*args)


def ssd(x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
        dt_limit=(0.0, math.inf), initial_states=None, return_final_states=False, backend="auto"):
    """The SSD scan of Mamba-2: same shapes and meaning as mamba_ssm's ``mamba_chunk_scan_combined``.

    x, z: (batch, L, heads, headdim); dt: (batch, L, heads); A, dt_bias: (heads,); B, C: (batch, L, groups, N)
    with groups dividing heads; D: (heads,) or (heads, headdim); initial_states: (batch, heads, headdim, N).
    dt = clamp(softplus(dt + dt_bias) if dt_softplus else dt + dt_bias, *dt_limit), in float32.
    Per head: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T;  y_t = h_t C_t + D x_t;  y *= silu(z).
    Returns y (x.dtype), or (y, final_states (batch, heads, headdim, N) float32).  ``chunk_size`` is the
    chunk length of the chunked and triton backends (the result does not depend on it beyond rounding).
    """
    check_ssd_backend(backend)
    backend = resolve_backend(backend, x.device if isinstance(x, torch.Tensor) else "cpu")
    check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_limit, initial_states)
    args = (x, dt, A, B, C, chunk_size, D, z, dt_bias, bool(dt_softplus), tuple(dt_limit), initial_states,
            bool(return_final_states))
    if backend == "reference":
        return ssd_reference(*args)
    if backend == "chunked":
        return ssd_chunked(*args)
    try:
        from kernels.ssd.triton_backend import ssd_triton  # triton is imported lazily
    except ModuleNotFoundError as e:
        if e.name not in ("kernels.ssd.triton_backend", "triton"):
            raise
        raise ValueError(f"ssd: backend='triton' is not available here ({e}); use backend='chunked' or "
                         "'reference'") from None
    return ssd_triton(*args)
