"""The ``triton`` backend of ``kernels.ssd``: fused Triton forward and backward of the chunked SSD scan.

Launches the kernels of ``kernels/ssd/triton_kernels.py`` (the algorithm and its notation are in that
module's docstring) and wraps them in a ``torch.autograd.Function``.  Runs on CUDA, and on the CPU under
``TRITON_INTERPRET=1`` (set before triton is imported) for tests.

Stored for the backward: the inputs, dt' and the chunk-local cumsum cs ((batch, heads, L) fp32 each), the
state entering each chunk ((batch, chunks, heads, headdim, N) fp32) and, with z, the pre-gate output
(x's shape and dtype).  Nothing of size L x N per head.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Optional

import torch
import triton
from torch.autograd.function import once_differentiable

from kernels.ssd import triton_kernels as K

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    from kernels.selective_scan.interpreter_compat import install as _install_interpreter_compat

    _install_interpreter_compat()

# Outputs the kernels fully overwrite are allocated through this hook, so tests can swap in a NaN-filled
# allocator and catch any element a kernel forgets to write.
_empty = torch.empty


@dataclass(frozen=True)
class SSDConfig:
    """Tiles and warps (not tuned: no GPU has run these kernels yet; kernels/NOTES.md, "SSD Triton")."""

    block_m: int = 32        # steps per row block of a chunk (tl.dot needs >= 16); clipped to the chunk
    block_e: int = 1024      # state elements (headdim * N) per program of the state-passing loops
    num_warps: int = 4
    gate_block: int = 1024   # elements per program of the gate's backward
    lowp_dots: bool = False  # 16-bit inputs: dot operands in the input dtype (official style) instead of tf32


DEFAULT_CONFIG = SSDConfig()


def _fit(cfg: SSDConfig, Q: int, PN: int) -> SSDConfig:
    bm = max(16, min(triton.next_power_of_2(cfg.block_m), triton.next_power_of_2(Q)))
    be = max(16, min(triton.next_power_of_2(cfg.block_e), triton.next_power_of_2(PN)))
    return replace(cfg, block_m=bm, block_e=be)


def _dot_prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def _dims(x, B, chunk_size, cfg):
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Q = min(int(chunk_size), max(L, 1))   # one chunk either way; no row blocks past the sequence
    n_chunks = triton.cdiv(L, Q)
    cfg = _fit(cfg, Q, P * N)
    blocks = dict(BLOCK_M=cfg.block_m, BLOCK_P=max(16, triton.next_power_of_2(P)),
                  BLOCK_N=max(16, triton.next_power_of_2(N)), DOT_PREC=_dot_prec(x.dtype),
                  LOWP=(2 if _interpreting() else 1) if cfg.lowp_dots and x.dtype in (torch.float16, torch.bfloat16)
                  else 0)
    return batch, L, H, P, G, N, Q, n_chunks, cfg, blocks


def _d_strides(D, P):
    if D is None:
        return 0, 0
    return (D.stride(0), 0) if D.dim() == 1 else (D.stride(0), D.stride(1))


def _forward(x, dt, A, B, C, Q, D, z, dt_bias, softplus, dt_min, dt_max, initial_states, write_final, cfg,
             for_backward=True):
    batch, L, H, P, G, N, Q, n_chunks, cfg, blocks = _dims(x, B, Q, cfg)
    dev = x.device
    if batch == 0 or L == 0:   # nothing to scan: the final state is the initial one
        final = None
        if write_final:
            final = (initial_states.float().clone() if initial_states is not None
                     else torch.zeros((batch, H, P, N), device=dev, dtype=torch.float32))
        return torch.empty_like(x, memory_format=torch.contiguous_format), final, None, cfg
    BH = batch * H
    dtp = _empty((batch, H, L), device=dev, dtype=torch.float32)
    cs = _empty((batch, H, L), device=dev, dtype=torch.float32)
    states = _empty((batch, n_chunks, H, P, N), device=dev, dtype=torch.float32)
    final = _empty((batch, H, P, N), device=dev, dtype=torch.float32) if write_final else None
    out = _empty((batch, L, H, P), device=dev, dtype=x.dtype)
    ypre = _empty((batch, L, H, P), device=dev, dtype=x.dtype) if z is not None and for_backward else None
    init = initial_states.contiguous() if initial_states is not None else None
    w = cfg.num_warps
    K.ssd_cumsum_fwd[(n_chunks, BH)](
        dt, A, dt_bias if dt_bias is not None else A, dtp, cs, L, H, Q, float(dt_min), float(dt_max),
        *dt.stride(), HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus,
        BLOCK_Q=max(16, triton.next_power_of_2(Q)), num_warps=w)
    K.ssd_chunk_state_fwd[(n_chunks, BH)](
        x, B, dtp, cs, states, L, H, Q, P, N, H // G, n_chunks, *x.stride(), *B.stride(), **blocks, num_warps=w)
    K.ssd_state_pass_fwd[(triton.cdiv(P * N, cfg.block_e), BH)](
        states, cs, init if init is not None else states, final if final is not None else states,
        L, H, Q, P * N, n_chunks, HAS_INIT=init is not None, WRITE_FINAL=write_final, BLOCK_E=cfg.block_e,
        num_warps=w)
    zz = z if z is not None else x
    K.ssd_chunk_scan_fwd[(triton.cdiv(Q, cfg.block_m), n_chunks, BH)](
        x, B, C, D if D is not None else A, zz, dtp, cs, states, out, ypre if ypre is not None else out,
        L, H, Q, P, N, H // G, n_chunks, *x.stride(), *B.stride(), *C.stride(), *zz.stride(), *_d_strides(D, P),
        HAS_D=D is not None, HAS_Z=z is not None, STORE_YPRE=ypre is not None, **blocks, num_warps=w)
    return out, final, (dtp, cs, states, ypre), cfg


def _backward(dout, dfinal, x, dt, A, B, C, Q, D, z, dt_bias, softplus, dt_min, dt_max, has_init,
              dtp, cs, states, ypre, cfg):
    batch, L, H, P, G, N, Q, n_chunks, cfg, blocks = _dims(x, B, Q, cfg)
    dev = x.device
    BH = batch * H
    w = cfg.num_warps
    f32 = torch.float32
    dz = None
    if z is not None:
        g = _empty((batch, L, H, P), device=dev, dtype=f32)
        dz = _empty((batch, L, H, P), device=dev, dtype=z.dtype)
        numel = g.numel()
        K.ssd_gate_bwd[(triton.cdiv(numel, cfg.gate_block),)](
            dout.contiguous(), z.contiguous(), ypre, g, dz, numel, BLOCK=cfg.gate_block, num_warps=w)
    else:
        g = dout.contiguous()
    # 1-2: gradients of the chunk states
    dst = _empty((batch, n_chunks, H, P, N), device=dev, dtype=f32)
    K.ssd_dstate_local_bwd[(n_chunks, BH)](
        g, C, cs, dst, L, H, Q, P, N, H // G, n_chunks, *C.stride(), **blocks, num_warps=w)
    n_eb = triton.cdiv(P * N, cfg.block_e)
    ddecay = _empty((BH, n_chunks, n_eb), device=dev, dtype=f32)
    dinit = _empty((batch, H, P, N), device=dev, dtype=f32) if has_init else None
    K.ssd_state_pass_bwd[(n_eb, BH)](
        dst, states, cs, dfinal if dfinal is not None else dst, dinit if dinit is not None else dst, ddecay,
        L, H, Q, P * N, n_chunks, n_eb, HAS_DFINAL=dfinal is not None, WRITE_DINIT=has_init,
        BLOCK_E=cfg.block_e, num_warps=w)
    # 3-4: per-step gradients
    n_qb = triton.cdiv(Q, cfg.block_m)
    dx = _empty((batch, L, H, P), device=dev, dtype=x.dtype)
    # dB, dC: the heads of a group add into one buffer with fp32 atomics (in no fixed order when a group has
    # several heads); deterministic mode gives each head of a group a slice of its own (one add per address,
    # exact), summed below in a fixed order, at the cost of (heads/groups) x B's size in fp32.
    slices = H // G if torch.are_deterministic_algorithms_enabled() else 1
    dB = torch.zeros((slices, batch, L, G, N), device=dev, dtype=f32)
    dC = torch.zeros((slices, batch, L, G, N), device=dev, dtype=f32)
    slice_stride = batch * L * G * N if slices > 1 else 0
    ddt_dir = _empty((batch, H, L), device=dev, dtype=f32)
    dcs_s = _empty((batch, H, L), device=dev, dtype=f32)
    dcs_t = _empty((batch, H, L), device=dev, dtype=f32)
    Fl = _empty((batch, H, L), device=dev, dtype=f32)
    dD_part = _empty((BH, n_chunks, n_qb, P), device=dev, dtype=f32) if D is not None else None
    K.ssd_dx_bwd[(n_qb, n_chunks, BH)](
        x, B, C, D if D is not None else A, g, dtp, cs, dst, dx, dB, ddt_dir, dcs_s, Fl,
        dD_part if dD_part is not None else dx,
        L, H, Q, P, N, G, H // G, n_chunks, n_qb, slice_stride, *x.stride(), *B.stride(), *C.stride(), *_d_strides(D, P),
        HAS_D=D is not None, **blocks, num_warps=w)
    K.ssd_dC_bwd[(n_qb, n_chunks, BH)](
        x, B, C, g, dtp, cs, states, dC, dcs_t, L, H, Q, P, N, G, H // G, n_chunks, slice_stride,
        *x.stride(), *B.stride(), *C.stride(), **blocks, num_warps=w)
    # 5: through the chunk cumsum, the clamp and the softplus
    ddt = _empty((batch, L, H), device=dev, dtype=dt.dtype)
    dA_part = _empty((BH, n_chunks), device=dev, dtype=f32)
    dbias_part = _empty((BH, n_chunks), device=dev, dtype=f32) if dt_bias is not None else None
    K.ssd_dt_bwd[(n_chunks, BH)](
        dt, A, dt_bias if dt_bias is not None else A, dtp, ddt_dir, dcs_s, dcs_t, Fl, ddecay,
        ddt, dA_part, dbias_part if dbias_part is not None else dA_part,
        L, H, Q, n_chunks, n_eb, float(dt_min), float(dt_max), *dt.stride(), *ddt.stride(),
        HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus, BLOCK_Q=max(16, triton.next_power_of_2(Q)),
        BLOCK_EB=max(2, triton.next_power_of_2(n_eb)), num_warps=w)
    dA = dA_part.view(batch, H, n_chunks).sum((0, 2)).to(A.dtype)
    dbias = dbias_part.view(batch, H, n_chunks).sum((0, 2)).to(dt_bias.dtype) if dt_bias is not None else None
    dD = None
    if D is not None:
        dDp = dD_part.view(batch, H, n_chunks * n_qb, P).sum((0, 2))
        dD = (dDp.sum(1) if D.dim() == 1 else dDp).to(D.dtype)
    dB = dB.sum(0) if slices > 1 else dB[0]
    dC = dC.sum(0) if slices > 1 else dC[0]
    return dx, ddt, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dz, dbias, dinit


class SSDTriton(torch.autograd.Function):
    """Fused chunked SSD: forward in four kernels, backward in six (recomputing per-step terms)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_states, chunk_size, softplus, dt_min, dt_max,
                return_final, cfg):
        needs_grad = any(ctx.needs_input_grad[:9])   # grad mode is off inside forward; ask ctx
        out, final, saved, fitted = _forward(x, dt, A, B, C, chunk_size, D, z, dt_bias, softplus, dt_min,
                                             dt_max, initial_states, return_final, cfg, for_backward=needs_grad)
        dtp, cs, states, ypre = saved if saved is not None else (None,) * 4
        ctx.empty = saved is None
        ctx.meta = (chunk_size, softplus, dt_min, dt_max, ctx.needs_input_grad[8], return_final, fitted)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, dtp, cs, states, ypre)
        ctx.init_dtype = initial_states.dtype if initial_states is not None else None
        if return_final:
            return out, final
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, *rest):
        x, dt, A, B, C, D, z, dt_bias, dtp, cs, states, ypre = ctx.saved_tensors
        chunk_size, softplus, dt_min, dt_max, has_init, return_final, cfg = ctx.meta
        dfinal = rest[0] if return_final and rest and rest[0] is not None else None
        if ctx.empty:   # batch 0 or L 0: only the initial state reaches an output
            dinit = rest[0].to(ctx.init_dtype) if has_init and return_final and rest[0] is not None else None
            zero = [torch.zeros_like(t) if t is not None else None for t in (x, dt, A, B, C, D, z, dt_bias)]
            return (*zero, dinit, None, None, None, None, None, None)
        if dout is None:
            dout = torch.zeros_like(x)
        grads = _backward(dout, dfinal.contiguous() if dfinal is not None else None, x, dt, A, B, C,
                          chunk_size, D, z, dt_bias, softplus, dt_min, dt_max, has_init, dtp, cs, states,
                          ypre, cfg)
        dx, ddt, dA, dB, dC, dD, dz, dbias, dinit = grads
        if dinit is not None:
            dinit = dinit.to(ctx.init_dtype)
        return dx, ddt, dA, dB, dC, dD, dz, dbias, dinit, None, None, None, None, None, None


def ssd_triton(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
               dt_limit=(0.0, float("inf")), initial_states=None, return_final_states=False,
               config: Optional[SSDConfig] = None):
    """Same contract as ``kernels.ssd`` (inputs already validated by the caller).

    Returns y in x.dtype, or (y, final_states) with final_states (batch, heads, headdim, N) float32.
    """
    if x.device.type != "cuda" and not _interpreting():
        raise ValueError(f"ssd: backend='triton' needs CUDA tensors (x is on {x.device}); use backend="
                         "'chunked' or 'auto' on the CPU, or set TRITON_INTERPRET=1 before importing triton")
    dt_min, dt_max = (float(v) for v in (dt_limit if dt_limit is not None else (0.0, math.inf)))
    return SSDTriton.apply(x, dt, A, B, C, D, z, dt_bias, initial_states, int(chunk_size), bool(dt_softplus),
                           dt_min, dt_max, bool(return_final_states), config or DEFAULT_CONFIG)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ------------------------------------------------------------------------------------- tools (no tests)
def _example(batch=2, L=4096, H=32, P=64, G=1, N=128, dtype=torch.bfloat16, device="cuda", seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    return (r(batch, L, H, P), r(batch, L, H) - 3.0, (-torch.rand(H, generator=g) * 15 - 1).to(device),
            r(batch, L, G, N) * 0.3, r(batch, L, G, N) * 0.3)


def bench(batch=2, L=4096, H=32, P=64, G=1, N=128, chunk=256, dtype=torch.bfloat16, config=None):
    """Median ms of forward and forward+backward (triton.testing.do_bench) on CUDA; dt_softplus, no D/z."""
    from triton.testing import do_bench

    x, dt, A, B, C = (t.requires_grad_(True) for t in _example(batch, L, H, P, G, N, dtype))
    dy = torch.randn_like(x)

    def fwd():
        with torch.no_grad():
            ssd_triton(x, dt, A, B, C, chunk, dt_softplus=True, config=config)

    def fwd_bwd():
        ssd_triton(x, dt, A, B, C, chunk, dt_softplus=True, config=config).backward(dy)

    return {"fwd_ms": do_bench(fwd), "fwd_bwd_ms": do_bench(fwd_bwd, grad_to_none=[x, dt, A, B, C])}


def inspect_sm90(batch=1, L=1024, H=4, P=64, G=1, N=128, chunk=256, dtype=torch.bfloat16, config=None):
    """Compile every launch for sm_90 without a GPU (kernels/inspect_sm90.py's compile_sm90 and ptxas -v):
    {kernel: (registers, spill-store bytes, shared-memory bytes)}.  The launches are recorded from the real
    launchers on CPU tensors (nothing runs)."""
    from kernels import inspect_sm90 as I

    names = [n for n in dir(K) if n.startswith("ssd_")]
    saved = {n: getattr(K, n) for n in names}
    recs = {n: I._Recorder(saved[n]) for n in names}
    cfg = config or DEFAULT_CONFIG
    try:
        for n in names:
            setattr(K, n, recs[n])
        x, dt, A, B, C = _example(batch, L, H, P, G, N, dtype, device="cpu")
        z, D, bias = torch.randn_like(x), torch.ones(H), torch.zeros(H)
        out, final, (dtp, cs, st, ypre), _ = _forward(x, dt, A, B, C, chunk, D, z, bias, True, 0.0, math.inf,
                                                      None, True, cfg)
        _backward(torch.randn_like(x), torch.zeros(batch, H, P, N), x, dt, A, B, C, chunk, D, z, bias, True,
                  0.0, math.inf, False, dtp, cs, st, ypre, cfg)
    finally:
        for n in names:
            setattr(K, n, saved[n])
    res = {}
    for n in names:
        for _grid, args, kw in recs[n].calls:
            k = I.compile_sm90(saved[n], args, kw)
            info = I.ptxas_info(k.asm["ptx"])
            res[n] = (info["regs"], info["spill_st"], k.metadata.shared)
    return res


if __name__ == "__main__":   # python -m kernels.ssd.triton_backend bench|inspect [block_m] [num_warps]
    import sys

    what = sys.argv[1] if len(sys.argv) > 1 else "bench"
    cfg = DEFAULT_CONFIG
    if len(sys.argv) > 2:
        cfg = replace(cfg, block_m=int(sys.argv[2]))
    if len(sys.argv) > 3:
        cfg = replace(cfg, num_warps=int(sys.argv[3]))
    if what == "inspect":
        for name, (regs, spill, smem) in inspect_sm90(config=cfg).items():
            print(f"{name:24s} regs={regs} spill_st={spill} smem={smem}")
    else:
        print(cfg, bench(config=cfg))
