"""Argument checks shared by every backend, so a bad call fails the same way whatever the backend.

Every error is a ``ValueError`` that names the argument, what was expected and how to fix it,
because a shape mismatch deep inside a kernel launch is unreadable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

BACKENDS = ("reference", "chunked", "triton")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class ScanShape:
    """The sizes every backend needs: batch, dim (channels), L (time), N (state), groups (of B/C)."""

    batch: int
    dim: int
    L: int
    N: int
    groups: int


def check_backend(backend: str, where: str = "selective_scan", backends=BACKENDS) -> str:
    """``backend`` if it is one of ``backends`` or "auto", else a ValueError naming ``where`` (the kernel) and the
    closest valid name; kernels.ssd's check uses it too."""
    valid = tuple(backends) + ("auto",)
    if backend not in valid:
        import difflib

        near = difflib.get_close_matches(str(backend), valid, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"{where}: unknown backend={backend!r}{hint}; valid: {', '.join(valid)}")
    return backend


def _need_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in _FLOATS:
        raise ValueError(f"selective_scan: {name} must be a real float tensor (fp16/bf16/fp32/fp64), "
                         f"got dtype {t.dtype}; cast it, e.g. {name}.float()")


def check_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> ScanShape:
    """Validate shapes/dtypes/devices against the DESIGN.md contract; return the sizes."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    _need_float("u", u)
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    _need_float("delta", delta)
    if A.is_complex() or A.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"selective_scan: A must be a real float32 tensor (dim, N), got dtype {A.dtype}; "
                         "use A.float() (complex A is not supported)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (dim={dim}, N), got shape {tuple(A.shape)}")
    N = A.shape[1]
    groups = 1
    for name, M in (("B", B), ("C", C)):
        _need_float(name, M)
        if M.dim() == 2:                         # constant over time and batch (the non-selective case)
            ok = M.shape == (dim, N)
            g = 1
        elif M.dim() == 3:
            ok = M.shape == (batch, N, L)
            g = 1
        elif M.dim() == 4:
            g = M.shape[1]
            ok = M.shape[0] == batch and M.shape[2:] == (N, L) and g >= 1
        else:
            ok, g = False, 1
        if not ok:
            raise ValueError(f"selective_scan: {name} must be (batch={batch}, N={N}, L={L}), "
                             f"(batch={batch}, groups, N={N}, L={L}) or constant (dim={dim}, N={N}), "
                             f"got shape {tuple(M.shape)}")
        if dim % g:
            raise ValueError(f"selective_scan: {name} has groups={g}, which does not divide dim={dim}; "
                             f"use a group count that divides {dim}")
        if M.dim() == 4:
            if groups != 1 and g != groups:
                raise ValueError(f"selective_scan: B and C must have the same number of groups, got {groups} and {g}")
            groups = g
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B and C must have the same number of groups, "
                         f"got {B.shape[1]} and {C.shape[1]}")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is None:
            continue
        if not isinstance(v, torch.Tensor) or v.shape != (dim,):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"selective_scan: {name} must be a (dim={dim},) tensor, got {shape}")
        _need_float(name, v)
    if z is not None:
        if not isinstance(z, torch.Tensor) or z.shape != u.shape:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"selective_scan: z must have u's shape {tuple(u.shape)}, got {shape}")
        _need_float("z", z)
    dev = u.device
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)):
        if t is not None and t.device != dev:
            raise ValueError(f"selective_scan: {name} is on {t.device} but u is on {dev}; move it with .to(u.device)")
    return ScanShape(batch, dim, L, N, groups)


def expand_groups(M: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, N, L) or (batch, groups, N, L) -> (batch, dim, N, L) (a view where possible); a constant
    (dim, N) -> a (1, dim, N, 1) view that broadcasts over batch and time (never materialised over L)."""
    if M.dim() == 2:
        return M[None, :, :, None]
    if M.dim() == 3:
        return M.unsqueeze(1).expand(-1, dim, -1, -1)
    groups = M.shape[1]
    return M.repeat_interleave(dim // groups, dim=1)


def discretize_dt(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], delta_softplus: bool) -> torch.Tensor:
    """dt = softplus(delta + bias) or delta + bias, in delta's (already upcast) dtype."""
    if delta_bias is not None:
        delta = delta + delta_bias.to(delta.dtype)[None, :, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    return delta


def resolve_backend(backend: str, device) -> str:
    """``auto`` -> ``triton`` on CUDA, ``chunked`` elsewhere; other names are checked and returned."""
    check_backend(backend)
    if backend == "auto":
        return "triton" if torch.device(device).type == "cuda" else "chunked"
    return backend
