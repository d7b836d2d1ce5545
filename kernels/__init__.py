"""Kernels: the selective scan with reference / chunked / triton backends (contract in DESIGN.md), and its
one-step (decoding) form, ``selective_state_update``."""
from __future__ import annotations

import torch

from kernels.roofline import selective_scan_bytes, selective_scan_exps
from kernels.selective_scan.chunked import selective_scan_chunked
from kernels.selective_scan.reference import selective_scan_reference
from kernels.selective_scan.state_update import selective_state_update
from kernels.selective_scan.validate import BACKENDS, check_inputs, resolve_backend

__all__ = ["selective_scan", "BACKENDS", "resolve_backend", "selective_scan_bytes", "selective_scan_exps",
           "selective_scan_reference", "selective_scan_chunked", "selective_state_update"]


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
