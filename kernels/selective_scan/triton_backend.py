"""The ``triton`` backend: launches the fused kernels and wraps them in a ``torch.autograd.Function``.

The forward is ``selective_scan_fwd_split_kernel``, time-parallel over T segments of the sequence
(``ScanConfig.fwd_split``; None picks T per shape, T = 1 is a single pass over L); the backward is
``selective_scan_bwd_kernel_v2``, time-parallel the same way (``ScanConfig.bwd_split``).

Runs on CUDA, and on the CPU under ``TRITON_INTERPRET=1`` (set before triton is imported) for tests.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
import triton

from kernels.selective_scan.triton_kernels import selective_scan_bwd_kernel_v2, selective_scan_fwd_split_kernel

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    from kernels.selective_scan.interpreter_compat import install as _install_interpreter_compat

    _install_interpreter_compat()

# Every output the kernels fully overwrite is allocated through this hook, so tests can swap in a
# NaN-filled allocator and catch any element a kernel forgets to write.
_empty = torch.empty


@dataclass(frozen=True)
class ScanConfig:
    """Tile sizes and warps.  BLOCK_L is shared by forward and backward (chunk states are per BLOCK_L)."""

    block_d: int = 16                   # channels per forward program
    block_l: int = 8                    # time steps per chunk (and per saved state)
    fwd_warps: int = 1
    bwd_warps: int = 1
    bwd_block_d: Optional[int] = 8      # channels per backward program; None: same as block_d
    unroll: int = 1                     # loop_unroll_factor of the chunk loops (ILP across chunks)
    bwd_n_inner: int = 8                # backward: states per lane group (tile [L, N/n_inner, D, n_inner])
    fwd_split: Optional[int] = None     # forward segments T of L; None = auto (fwd_split_segments), 1 = one pass
    bwd_split: Optional[int] = None     # backward segments T of L; None = auto (bwd_split_segments), 1 = one pass


# The forward (kernels/NOTES.md, "Split forward"): selective_scan_fwd_split_kernel, grid (dim/BLOCK_D, batch, T):
# pass 1 scans segments 0..T-2 from zero and writes their end states and sums of dt; pass 3 folds those into
# each segment's start state and re-scans it, writing y, the chunk states and the last state.
# T = ScanConfig.fwd_split, or chosen by fwd_split_segments when None; T = 1 runs pass 3 alone (one program
# walks all of L: what the single-pass "fused" forward kernel did before it was deleted on 2026-12-02).
FWD_SPLIT_PROGRAMS_PER_SM = 4   # auto T aims at about this many one-warp programs per SM
FWD_SPLIT_MIN_CHUNKS = 4        # auto T keeps at least this many BLOCK_L chunks per segment
FWD_SPLIT_MAX = 64

# The backward's T (kernels/NOTES.md, "Split backward"), fitted to the H200 A/B of 2026-12-02 (batch 1,
# dim 1024, 128 programs): best T 1 at L 2048, 4 at 8192, 8 (= 16) at 32768; batch 4 dim 2048 keeps T = 1.
BWD_SPLIT_PROGRAMS_PER_SM = 8   # auto T aims at about this many one-warp programs per SM
BWD_SPLIT_MIN_STEPS = 2048      # auto T keeps at least this many time steps per segment (pass 1 costs ~40 %)
BWD_SPLIT_MAX = 16


# Tiles: fastest of the sweep on an H100 (batch 4, dim 2048, N 16, L 4096, bf16; kernels/NOTES.md, run 5).
# Forward and backward with auto T; on one H200 (2026-12-02): batch 4 dim 2048 L 4096 (auto T = 1)
# forward 0.483 ms, forward+backward 1.924 ms; batch 1 dim 1024 L 8192 (auto T = 8) forward 0.308 ms.
DEFAULT_CONFIG = ScanConfig()
INFERENCE_CONFIG = ScanConfig(block_d=16, block_l=8, fwd_warps=1)


def _pow2_floor(x: int) -> int:
    return 1 << (max(int(x), 1).bit_length() - 1)


def _fit_config(cfg: ScanConfig, dim: int, L: int, groups: int) -> ScanConfig:
    """Shrink the tiles to the problem: BLOCK_D must divide dim/groups when groups > 1."""
    def fit_d(bd: int) -> int:
        bd = min(_pow2_floor(bd), triton.next_power_of_2(dim))
        if groups > 1:
            while (dim // groups) % bd:
                bd //= 2
        return bd

    if cfg.fwd_split is not None and (not isinstance(cfg.fwd_split, int) or cfg.fwd_split < 1):
        raise ValueError(f"ScanConfig.fwd_split={cfg.fwd_split!r}: None (auto) or an int >= 1")
    block_l = max(8, min(triton.next_power_of_2(cfg.block_l), triton.next_power_of_2(max(L, 1))))
    return replace(cfg, block_d=fit_d(cfg.block_d), block_l=block_l,
                   bwd_block_d=fit_d(cfg.bwd_block_d or cfg.block_d), bwd_n_inner=_pow2_floor(cfg.bwd_n_inner))


def _sm_count(device) -> int:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132   # an H100 / H200; what the interpreter tests assume


def _auto_segments(programs: int, per_sm: int, device, cap: int) -> int:
    """Auto T of a time-parallel pass: the power of two nearest (in log2) to per_sm * SMs / programs (1 when
    the grid already fills the GPU), at most ``cap``."""
    want = per_sm * _sm_count(device) / programs
    return min(1 << max(0, round(math.log2(want))) if want > 1 else 1, cap)


def fwd_split_segments(cfg: ScanConfig, batch: int, dim: int, L: int, device="cuda") -> Tuple[int, int]:
    """(T, chunks per segment) the forward runs with, for a *fitted* cfg.

    T = cfg.fwd_split if given, else auto: programs = cdiv(dim, block_d) * batch, and T is the power of
    two nearest (in log2) to FWD_SPLIT_PROGRAMS_PER_SM * SMs / programs (1 when the grid already fills the
    GPU), at most FWD_SPLIT_MAX and at most n_chunks / FWD_SPLIT_MIN_CHUNKS.  Segments are whole chunks;
    a T past the number of chunks degrades to one chunk per segment (T is then recomputed so that no
    segment is empty).  Batch 1, dim 1024, block_d 16 on 132 SMs: 64 programs -> T = 8."""
    n_chunks = triton.cdiv(max(L, 1), cfg.block_l)
    T = cfg.fwd_split
    if T is None:
        programs = triton.cdiv(dim, cfg.block_d) * batch
        T = _auto_segments(programs, FWD_SPLIT_PROGRAMS_PER_SM, device,
                           min(FWD_SPLIT_MAX, _pow2_floor(max(1, n_chunks // FWD_SPLIT_MIN_CHUNKS))))
    seg_chunks = triton.cdiv(n_chunks, min(T, n_chunks))
    return triton.cdiv(n_chunks, seg_chunks), seg_chunks


def bwd_split_segments(cfg: ScanConfig, batch: int, dim: int, n_chunks: int, device="cuda") -> Tuple[int, int]:
    """(T, chunks per segment) of the backward, for a *fitted* cfg.

    T = cfg.bwd_split if given, else auto: programs = cdiv(dim, bwd_block_d) * batch, and T is the power
    of two nearest (in log2) to BWD_SPLIT_PROGRAMS_PER_SM * SMs / programs, at most BWD_SPLIT_MAX and at
    most L / BWD_SPLIT_MIN_STEPS.  Fewer segments when L has fewer chunks, never an empty one.  Pass 1
    (segments 1..T-1) computes each one's carry-out of the adjoint state from zero; pass 3 folds the later
    segments' carries into its own and runs the backward.  Batch 1, dim 1024 on 132 SMs: T 1 at L 2048,
    4 at 8192, 8 at 32768; batch 4, dim 2048: T = 1."""
    T = cfg.bwd_split
    if T is None:
        programs = triton.cdiv(dim, cfg.bwd_block_d) * batch
        min_chunks = max(1, BWD_SPLIT_MIN_STEPS // cfg.block_l)
        T = _auto_segments(programs, BWD_SPLIT_PROGRAMS_PER_SM, device,
                           min(BWD_SPLIT_MAX, _pow2_floor(max(1, n_chunks // min_chunks))))
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"ScanConfig.bwd_split={T!r}: None (auto) or a whole number of segments >= 1")
    T = max(1, min(T, n_chunks))
    seg_chunks = max(1, triton.cdiv(n_chunks, T))
    return max(1, triton.cdiv(n_chunks, seg_chunks)), seg_chunks


def _as4d(M: torch.Tensor) -> torch.Tensor:
    """(batch, N, L) -> (batch, 1, N, L) view, so the kernels see one layout."""
    return M.unsqueeze(1) if M.dim() == 3 else M


def _bc_strides(M: torch.Tensor) -> Tuple[int, int, int, int]:
    """The (batch, group, state, time) strides the kernels index B or C with.  A constant (dim, N) is passed as
    itself: time and batch strides 0, and the group stride slot carries its channel stride (read under
    B_CONST / C_CONST), so nothing of size L is built."""
    if M.dim() == 2:
        return 0, M.stride(0), M.stride(1), 0
    return _as4d(M).stride()


def _groups(B: torch.Tensor, C: torch.Tensor) -> int:
    """Groups of the time-varying B / C (1 when both are constant or 3-D)."""
    return next((M.shape[1] for M in (B, C) if M.dim() == 4), 1)


def _forward(u, delta, A, B, C, D, z, delta_bias, softplus, cfg, save_states, write_last):
    batch, dim, L = u.shape
    N = A.shape[1]
    groups = _groups(B, C)
    cfg = _fit_config(cfg, dim, L, groups)
    n_chunks = triton.cdiv(L, cfg.block_l)
    y = _empty((batch, dim, L), device=u.device, dtype=u.dtype)
    states = _empty((batch, dim, n_chunks, N), device=u.device, dtype=torch.float32) if save_states else y
    last = _empty((batch, dim, N), device=u.device, dtype=torch.float32) if write_last else y
    zz = z if z is not None else u
    grid = (triton.cdiv(dim, cfg.block_d), batch)
    common = dict(N=N, BLOCK_N=triton.next_power_of_2(N), BLOCK_D=cfg.block_d, BLOCK_L=cfg.block_l,
                  HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                  SAVE_STATES=save_states, WRITE_LAST=write_last, UNROLL=cfg.unroll, num_warps=cfg.fwd_warps,
                  B_CONST=B.dim() == 2, C_CONST=C.dim() == 2)
    ins = (u, delta, A, B, C, D if D is not None else A, zz, delta_bias if delta_bias is not None else A)
    strides = (*u.stride(), *delta.stride(), *zz.stride(), *y.stride(), *A.stride(), *_bc_strides(B),
               *_bc_strides(C))
    if L > 0:
        T, seg_chunks = fwd_split_segments(cfg, batch, dim, L, u.device)
        cfg = replace(cfg, fwd_split=T)
        # segment summaries of segments 0 .. T-2 (fp32; tiny: (batch, T-1, N, dim) and (batch, T-1, dim))
        seg_end = _empty((batch, max(T - 1, 1), N, dim), device=u.device, dtype=torch.float32)
        seg_dt = _empty((batch, max(T - 1, 1), dim), device=u.device, dtype=torch.float32)
        for pass_, segs in ((1, T - 1), (3, T)):   # T = 1: pass 3 alone
            if segs == 0:
                continue
            selective_scan_fwd_split_kernel[grid + (segs,)](
                *ins, y, states, last, seg_end, seg_dt,
                dim, L, n_chunks, dim // groups, seg_chunks, T, *strides, **common, PASS=pass_,
            )
    elif write_last:
        last.zero_()
    return y, (last if write_last else None), (states if save_states else None), cfg


def _backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, states, softplus, cfg):
    batch, dim, L = u.shape
    N = A.shape[1]
    groups = _groups(B, C)
    n_chunks = states.shape[2]
    dev = u.device
    du = _empty((batch, dim, L), device=dev, dtype=u.dtype)
    ddelta = _empty((batch, dim, L), device=dev, dtype=delta.dtype)
    dz = _empty((batch, dim, L), device=dev, dtype=z.dtype) if z is not None else du
    grid = (triton.cdiv(dim, cfg.bwd_block_d), batch)
    # dB, dC: summed over channels with atomics, in no fixed order; deterministic mode gives each channel
    # block a slice of its own (one exact add per element) and sums the slices in a fixed order below.
    slices = grid[0] if torch.are_deterministic_algorithms_enabled() else 1
    T, seg_chunks = bwd_split_segments(cfg, batch, dim, n_chunks, dev)
    # a constant B / C gets per-(segment, batch row) partial sums (T, batch, dim, N) instead, like dA
    dB = (_empty((T, batch, dim, N), device=dev, dtype=torch.float32) if B.dim() == 2
          else torch.zeros((slices, batch, groups, N, L), device=dev, dtype=torch.float32))
    dC = (_empty((T, batch, dim, N), device=dev, dtype=torch.float32) if C.dim() == 2
          else torch.zeros((slices, batch, groups, N, L), device=dev, dtype=torch.float32))
    dBC_slice = batch * groups * N * L if slices > 1 else 0
    # per-(segment, batch row) partial sums of dA, dD, ddelta_bias, reduced here
    dA_part = _empty((T, batch, dim, N), device=dev, dtype=torch.float32)
    dD_part = _empty((T, batch, dim), device=dev, dtype=torch.float32) if D is not None else dA_part
    dbias_part = _empty((T, batch, dim), device=dev, dtype=torch.float32) if delta_bias is not None else dA_part
    zz = z if z is not None else u
    block_n = triton.next_power_of_2(N)
    args = (
        u, delta, A, B, C, D if D is not None else A, zz, delta_bias if delta_bias is not None else A,
        dout, states, dlast if dlast is not None else A,
        du, ddelta, dz, dB, dC, dA_part, dD_part, dbias_part,
        dim, L, n_chunks, dim // groups, groups, dBC_slice,
        *u.stride(), *delta.stride(), *zz.stride(), *dout.stride(),
        *A.stride(), *_bc_strides(B), *_bc_strides(C),
    )
    kw = dict(N=N, BLOCK_N=block_n, BLOCK_D=cfg.bwd_block_d, BLOCK_L=cfg.block_l,
              HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
              HAS_DLAST=dlast is not None, UNROLL=cfg.unroll, num_warps=cfg.bwd_warps,
              B_CONST=B.dim() == 2, C_CONST=C.dim() == 2)
    # segment summaries of segments 1 .. T-1 (fp32: carry-out (batch, T-1, dim, N), sum of dt (batch, T-1, dim))
    seg_q = _empty((batch, max(T - 1, 1), dim, N), device=dev, dtype=torch.float32)
    seg_dt = _empty((batch, max(T - 1, 1), dim), device=dev, dtype=torch.float32)
    kw.update(N_INNER=min(cfg.bwd_n_inner, block_n), seg_q_ptr=seg_q, seg_dt_ptr=seg_dt,
              seg_chunks=seg_chunks, n_segs=T)
    if T > 1:
        selective_scan_bwd_kernel_v2[grid + (T - 1,)](*args, **kw, PASS=1)
    selective_scan_bwd_kernel_v2[grid + (T,)](*args, **kw, PASS=3)
    dB, dC = (_reduce_dBC(g, M, slices) for g, M in ((dB, B), (dC, C)))
    dA = dA_part.sum((0, 1)).to(A.dtype)
    dD = dD_part.sum((0, 1)).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, (dz if z is not None else None), dbias


def _reduce_dBC(g: torch.Tensor, M: torch.Tensor, slices: int) -> torch.Tensor:
    """The gradient of B or C from the kernel's buffer: partial sums over (segment, batch row) for a constant
    (dim, N), channel-block slices (deterministic mode) otherwise."""
    if M.dim() == 2:
        return g.sum((0, 1)).to(M.dtype)
    return (g.sum(0) if slices > 1 else g[0]).to(M.dtype).reshape(M.shape)


class SelectiveScanTriton(torch.autograd.Function):
    """Fused forward (time-parallel over segments of L); fused backward that recomputes states from
    per-chunk checkpoints."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, return_last_state, cfg):
        needs_grad = any(ctx.needs_input_grad[:8])  # grad mode is off inside forward; ask ctx
        cfg = cfg or default_config(u.shape[1], u.shape[2], A.shape[1], training=needs_grad)
        y, last, states, fitted = _forward(u, delta, A, B, C, D, z, delta_bias, softplus, cfg,
                                           save_states=needs_grad, write_last=return_last_state)
        ctx.softplus, ctx.cfg, ctx.return_last_state = softplus, fitted, return_last_state
        if states is not None:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        return (y, last) if return_last_state else y

    @staticmethod
    def backward(ctx, dy, *rest):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        dlast = rest[0] if ctx.return_last_state else None
        if dy is None:
            dy = torch.zeros_like(u)
        grads = _backward(dy, dlast.contiguous() if dlast is not None else None,
                          u, delta, A, B, C, D, z, delta_bias, states, ctx.softplus, ctx.cfg)
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, config: Optional[ScanConfig] = None):
    """Same contract as ``kernels.selective_scan`` (inputs already validated there)."""
    if u.device.type != "cuda" and not _interpreting():
        raise ValueError(f"selective_scan: backend='triton' needs CUDA tensors (u is on {u.device}); "
                         "use backend='chunked' or 'auto' on the CPU, or set TRITON_INTERPRET=1 before "
                         "importing triton to run the kernel in the interpreter")
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                     bool(return_last_state), config)


def default_config(dim: int, L: int, N: int, training: bool = True) -> ScanConfig:
    """The tiles used when none are given (swept on an H100; see kernels/NOTES.md).

    A forward that no backward follows saves no chunk states, so it may use its own BLOCK_L.
    """
    return DEFAULT_CONFIG if training else INFERENCE_CONFIG


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
