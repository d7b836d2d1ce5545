"""Floors for the selective scan: the fewest HBM bytes and exponentials any implementation needs.

Used by ``kernels.bench`` and the speed suite to put measured times beside their floors
(PAPER_FACTS.md section 7; DESIGN.md "Limits at L = 4096").  Counting rule: every input read once,
every output written once; per-channel parameters (A, D, delta_bias) are counted too though they
are negligible.  The backward counts the recomputing design (the fused kernel's): it re-reads the
forward inputs instead of reading saved (batch, dim, L, N) states.
"""
from __future__ import annotations

import torch

_SIZES = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bf16": 2, "bfloat16": 2, "fp64": 8, "float64": 8}
PASSES = ("fwd", "bwd", "fwd+bwd")


def _itemsize(dtype) -> int:
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).element_size()
    try:
        return _SIZES[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_SIZES))} or a torch.dtype") from None


def _check_pass(pass_: str) -> None:
    if pass_ not in PASSES:
        raise ValueError(f"pass_={pass_!r} is not one of {', '.join(PASSES)}")


def selective_scan_bytes(batch: int, dim: int, L: int, N: int, dtype="bf16", z: bool = False,
                         groups: int = 1, pass_: str = "fwd", bc_dtype=None) -> int:
    """Minimum bytes that must cross HBM for one selective scan.

    fwd: read u, delta (and z), B, C, A, D, delta_bias; write y.
    bwd: read u, delta (and z), B, C, dy, A, D, delta_bias; write du, ddelta (and dz), dB, dC,
    dA, dD, ddelta_bias.  ``bc_dtype`` defaults to ``dtype``.
    """
    _check_pass(pass_)
    e = _itemsize(dtype)
    ebc = _itemsize(bc_dtype or dtype)
    per_chan = batch * dim * L * e                 # one (batch, dim, L) tensor
    bc = batch * groups * N * L * ebc              # one of B or C
    params = dim * N * 4 + 2 * dim * 4             # A, D, delta_bias in fp32
    nz = 1 if z else 0
    fwd = (2 + nz) * per_chan + 2 * bc + params + per_chan
    bwd = (3 + nz) * per_chan + 2 * bc + params + (2 + nz) * per_chan + 2 * bc + params
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_]


def selective_scan_exps(batch: int, dim: int, L: int, N: int, pass_: str = "fwd") -> int:
    """Exponentials needed: one exp(dt*A) per state update; the recomputing backward needs them again."""
    _check_pass(pass_)
    updates = batch * dim * L * N
    return {"fwd": updates, "bwd": updates, "fwd+bwd": 2 * updates}[pass_]


def floor_ms(batch: int, dim: int, L: int, N: int, dtype="bf16", z: bool = False, groups: int = 1,
             pass_: str = "fwd", bandwidth_Bps: float = 3.02e12, exp_per_s: float = 4.07e12) -> dict:
    """Memory floor, exp floor and the binding one, in ms (defaults: H100 figures of DESIGN.md)."""
    mem = selective_scan_bytes(batch, dim, L, N, dtype, z, groups, pass_) / bandwidth_Bps * 1e3
    exp = selective_scan_exps(batch, dim, L, N, pass_) / exp_per_s * 1e3
    return {"memory_ms": mem, "exp_ms": exp, "floor_ms": max(mem, exp)}


# --------------------------------------------------------------------------- SSD (Mamba-2)
def ssd_flops(batch: int, L: int, heads: int, headdim: int, N: int, ngroups: int = 1, chunk_size: int = 256,
              pass_: str = "fwd") -> int:
    """Matmul flops of the chunked SSD algorithm (MAMBA2_FACTS.md section 2, "Forward FLOPs [D]"), 2 per
    multiply-add over full Q x Q blocks, Q = min(chunk_size, L), the length padded to whole chunks T:

    fwd = 2 b T [H (Q P + 2 N P) + G Q N]: per head the diagonal blocks' (L o CB^T) X (Q P), the chunk states
    (N P) and the state-to-output (N P); CB^T once per group (G Q N).  State passing (L N P / Q) is left out
    (negligible).  The backward of a matmul is two matmuls of the same size, so bwd = 2 fwd.  These are the
    matmul flops ``kernels.ssd_chunked`` runs (tests/test_bench_ssd.py counts them with torch's FlopCounterMode)."""
    _check_pass(pass_)
    Q = max(1, min(int(chunk_size), int(L)))
    T = -(-int(L) // Q) * Q                       # the chunked algorithm pads the last chunk
    fwd = 2 * batch * T * (heads * (Q * headdim + 2 * N * headdim) + ngroups * Q * N)
    return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}[pass_]


def ssd_bytes(batch: int, L: int, heads: int, headdim: int, N: int, ngroups: int = 1, dtype="bf16",
              z: bool = False, pass_: str = "fwd", dt_dtype=None) -> int:
    """Minimum bytes that must cross HBM for one SSD scan (every input read once, every output written once;
    the chunk states stay on chip or are recomputed, as in the selective-scan floor).

    fwd: read x (and z), dt, B, C, A, D, dt_bias; write y.
    bwd: read x (and z), dt, B, C, dy and the parameters; write dx (and dz), ddt, dB, dC, dA, dD, d(dt_bias).
    ``dt_dtype`` defaults to ``dtype``; A, D and dt_bias are float32, D per head."""
    _check_pass(pass_)
    e, edt = _itemsize(dtype), _itemsize(dt_dtype or dtype)
    xs = batch * L * heads * headdim * e          # one of x, y, z
    dts = batch * L * heads * edt                  # dt
    bc = batch * L * ngroups * N * e               # one of B or C
    params = 3 * heads * 4                         # A, D, dt_bias in fp32
    nz = 1 if z else 0
    fwd = (1 + nz) * xs + dts + 2 * bc + params + xs
    bwd = (2 + nz) * xs + dts + 2 * bc + params + (1 + nz) * xs + dts + 2 * bc + params
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_]


def ssd_exps(batch: int, L: int, heads: int, pass_: str = "fwd") -> int:
    """Exponentials any SSD implementation needs: one exp(dt A) per head and step (the scalar decay; the
    chunked kernels also take one exp per pair of positions in a chunk, b H L Q, which a floor does not count);
    the recomputing backward needs them again."""
    _check_pass(pass_)
    steps = batch * L * heads
    return {"fwd": steps, "bwd": steps, "fwd+bwd": 2 * steps}[pass_]
