"""Operator-level benchmark targets: the selective scan, the SSD scan, the S4 FFT convolution, causal attention.

Each builds its inputs once on the cell's device (seeded, random: never zeros, which can run
faster than real data) and returns a :class:`Workload`.  Scan inputs follow Mamba's initialisation
(S4D-real A = -(1..N), delta_bias = softplus^-1 of a log-uniform dt in [1e-3, 1e-1]) so the
exponentials see realistic magnitudes.  Attention and the FFT convolution are the models package's
own operators (``models.attention.causal_attention``, ``models.s4.fft_conv``), so the op-level
numbers time exactly what the model-level targets run.  Each is an :class:`~harness.kinds.bench.op.Op`:
its inputs, its call and the reference the correctness gate compares it with.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from harness.kinds.bench.costs import attention_costs, fft_conv_bytes, scan_costs, ssd_costs
from harness.kinds.bench.op import Op, op_impl
from harness.kinds.bench.references import causal_conv_direct
from harness.kinds.bench.workload import Impl


def _generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _randn(shape, g, device, dtype, scale=1.0, requires_grad=False):
    t = torch.randn(shape, generator=g, device=device, dtype=torch.float32) * scale
    return t.to(dtype).requires_grad_(requires_grad)


# --------------------------------------------------------------------------- selective scan
def scan_inputs(cfg, device: str, requires_grad: bool):
    """u, delta (batch, dim, L) in cfg.dtype; A (dim, N), D, delta_bias (dim,) fp32; B, C (batch, N, L)."""
    b, d, n, L, dt = cfg.batch, cfg.width, cfg.d_state, cfg.seq_len, cfg.torch_dtype
    g = _generator(device, cfg.seed)
    u = _randn((b, d, L), g, device, dt, requires_grad=requires_grad)
    delta = _randn((b, d, L), g, device, dt, scale=0.5, requires_grad=requires_grad)
    B = _randn((b, n, L), g, device, dt, requires_grad=requires_grad)
    C = _randn((b, n, L), g, device, dt, requires_grad=requires_grad)
    A = (-torch.arange(1, n + 1, device=device, dtype=torch.float32)).repeat(d, 1).requires_grad_(requires_grad)
    D = torch.ones(d, device=device).requires_grad_(requires_grad)
    log_dt = torch.rand(d, generator=g, device=device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    dt_init = log_dt.exp()
    delta_bias = (dt_init + torch.log(-torch.expm1(-dt_init))).requires_grad_(requires_grad)  # softplus^-1
    return u, delta, A, B, C, D, delta_bias


def scan_input_dict(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """:func:`scan_inputs` by name (u, delta, A, B, C, D, delta_bias)."""
    return dict(zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), scan_inputs(cfg, device, requires_grad)))


def selective_scan_with(backend: str) -> Callable[[Dict[str, torch.Tensor]], torch.Tensor]:
    """``kernels.selective_scan`` on a :func:`scan_input_dict` (softplus, D, delta_bias; no z)."""
    def call(x):
        from kernels import selective_scan
        return selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], delta_bias=x["delta_bias"],
                              delta_softplus=True, backend=backend)
    return call


def scan_cost_fields(cfg) -> Dict[str, float]:
    nbytes, exps = scan_costs(cfg.batch, cfg.width, cfg.seq_len, cfg.d_state, cfg.torch_dtype, cfg.pass_)
    return dict(bytes=nbytes, exps=exps)


SCAN_REFERENCE = "s6.reference (kernels.selective_scan, backend reference) in float64"


def _scan_impl(name: str, backend: str, **fields) -> Impl:
    op = Op(scan_input_dict, lambda: selective_scan_with(backend), selective_scan_with("reference"), scan_cost_fields)
    return op_impl(name, op, SCAN_REFERENCE, **fields)


S6_TRITON = _scan_impl("s6.triton", "triton", needs_cuda=True)
S6_CHUNKED = _scan_impl("s6.chunked", "chunked")
S6_REFERENCE = _scan_impl("s6.reference", "reference")


# --------------------------------------------------------------------------- S4 FFT convolution
def _fft_inputs(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """u (batch, dim, L) in the cell's dtype; an S4D-like decaying filter k (dim, L) fp32 (building it is
    excluded, as in the paper's set-up)."""
    b, d, L = cfg.batch, cfg.width, cfg.seq_len
    g = _generator(device, cfg.seed)
    u = _randn((b, d, L), g, device, cfg.torch_dtype, requires_grad=requires_grad)
    decay = torch.exp(-torch.linspace(0, 8, L, device=device))
    k = (_randn((d, L), g, device, torch.float32) * decay).requires_grad_(requires_grad)
    return dict(u=u, k=k)


def _fft_call(x):
    """The paper's "convolution" baseline: FFT of input and filter, multiply, inverse FFT, at 2L in float32
    (``models.s4.fft_conv``, the op the S4 layers run)."""
    from models.s4 import fft_conv
    return fft_conv(x["u"], x["k"])


S4_FFT = op_impl("s4.fft", Op(_fft_inputs, lambda: _fft_call, lambda x: causal_conv_direct(x["u"], x["k"]),
                              lambda cfg: dict(bytes=fft_conv_bytes(cfg.batch, cfg.width, cfg.seq_len,
                                                                    cfg.torch_dtype, cfg.pass_))),
                 "the direct causal convolution in float64")


# --------------------------------------------------------------------------- causal attention
def attention_inputs(cfg, device: str, requires_grad: bool, layout: str = "bhld") -> Dict[str, torch.Tensor]:
    """q, k, v of ``cfg.heads`` heads of ``cfg.attn_head_dim``: (batch, heads, L, head_dim) for ``bhld``, or
    (batch, L, heads, head_dim) for ``blhd`` (flash_attn's layout), each contiguous in its layout."""
    b, h, L, hd = cfg.batch, cfg.heads, cfg.seq_len, cfg.attn_head_dim
    g = _generator(device, cfg.seed)
    shape = (b, h, L, hd) if layout == "bhld" else (b, L, h, hd)
    return {name: _randn(shape, g, device, cfg.torch_dtype, requires_grad=requires_grad) for name in "qkv"}


def attention_with(backend: str) -> Callable[[Dict[str, torch.Tensor]], torch.Tensor]:
    """``models.attention.causal_attention`` (the operator the Transformer baseline runs) on q, k, v
    (batch, heads, L, head_dim): ``sdpa`` is torch's fused kernel (FlashAttention-2 on recent GPUs for
    fp16/bf16), ``naive`` materialises the (L, L) scores."""
    def call(x):
        from models.attention import causal_attention
        return causal_attention(x["q"], x["k"], x["v"], backend)
    return call


def attention_cost_fields(cfg) -> Dict[str, float]:
    nbytes, flops = attention_costs(cfg.batch, cfg.heads, cfg.seq_len, cfg.attn_head_dim, cfg.torch_dtype, cfg.pass_)
    return dict(bytes=nbytes, flops=flops)


ATTENTION_REFERENCE = "attention.naive (materialised scores) in float64"
ATTENTION_SDPA = op_impl("attention.sdpa", Op(attention_inputs, lambda: attention_with("sdpa"), attention_with("naive"),
                                              attention_cost_fields), ATTENTION_REFERENCE, uses_heads=True)
ATTENTION_NAIVE = op_impl("attention.naive", Op(attention_inputs, lambda: attention_with("naive"), attention_with("naive"),
                                                attention_cost_fields), ATTENTION_REFERENCE, uses_heads=True)


# --------------------------------------------------------------------------- SSD (Mamba-2)
def ssd_inputs(cfg, device: str, requires_grad: bool):
    """x (batch, L, heads, P), dt (batch, L, heads), B, C (batch, L, ngroups, N) in cfg.dtype; A, D, dt_bias
    (heads,) fp32, initialised as Mamba-2 does (A ~ -U[1, 16], dt_bias = softplus^-1 of a log-uniform dt in
    [1e-3, 1e-1], D = 1; MAMBA2_FACTS.md section 3).  heads = width / ssd_headdim."""
    b, L, h, p, n, G = cfg.batch, cfg.seq_len, cfg.ssd_heads, cfg.ssd_headdim, cfg.d_state, cfg.ngroups
    dt_ = cfg.torch_dtype
    g = _generator(device, cfg.seed)
    x = _randn((b, L, h, p), g, device, dt_, requires_grad=requires_grad)
    dt = _randn((b, L, h), g, device, dt_, scale=0.5, requires_grad=requires_grad)
    B = _randn((b, L, G, n), g, device, dt_, requires_grad=requires_grad)
    C = _randn((b, L, G, n), g, device, dt_, requires_grad=requires_grad)
    A = -(torch.rand(h, generator=g, device=device) * 15 + 1)
    log_dt = torch.rand(h, generator=g, device=device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    dt_init = log_dt.exp()
    dt_bias = dt_init + torch.log(-torch.expm1(-dt_init))  # softplus^-1
    D = torch.ones(h, device=device)
    return (x, dt, A.requires_grad_(requires_grad), B, C, D.requires_grad_(requires_grad),
            dt_bias.requires_grad_(requires_grad))


def ssd_input_dict(cfg, device: str, requires_grad: bool) -> Dict[str, object]:
    """:func:`ssd_inputs` by name (x, dt, A, B, C, D, dt_bias), and the cell's chunk_size (not a tensor: the gate
    passes it through as it is)."""
    names = ("x", "dt", "A", "B", "C", "D", "dt_bias")
    return {**dict(zip(names, ssd_inputs(cfg, device, requires_grad))), "chunk_size": cfg.chunk_size}


def ssd_with(backend: str) -> Callable[[Dict[str, object]], torch.Tensor]:
    """One SSD scan through ``kernels.ssd`` (dt_softplus, dt_bias, D per head, no z): the call the Mamba-2
    block makes."""
    def call(x):
        from kernels import ssd
        return ssd(x["x"], x["dt"], x["A"], x["B"], x["C"], chunk_size=x["chunk_size"], D=x["D"],
                   dt_bias=x["dt_bias"], dt_softplus=True, backend=backend)
    return call


def ssd_cost_fields(cfg) -> Dict[str, float]:
    """Costs from ``kernels.roofline`` (harness.kinds.bench.costs.ssd_costs)."""
    nbytes, flops, exps = ssd_costs(cfg.batch, cfg.seq_len, cfg.ssd_heads, cfg.ssd_headdim, cfg.d_state,
                                    cfg.ngroups, cfg.chunk_size, cfg.torch_dtype, cfg.pass_)
    return dict(bytes=nbytes, flops=flops, exps=exps)


SSD_REFERENCE_NAME = "ssd.reference (kernels.ssd, backend reference: the sequential recurrence) in float64"


def _ssd_impl(name: str, backend: str, **fields) -> Impl:
    op = Op(ssd_input_dict, lambda: ssd_with(backend), ssd_with("reference"), ssd_cost_fields)
    return op_impl(name, op, SSD_REFERENCE_NAME, **fields)


SSD_TRITON = _ssd_impl("ssd.triton", "triton", needs_cuda=True)
SSD_CHUNKED = _ssd_impl("ssd.chunked", "chunked")
SSD_REFERENCE = _ssd_impl("ssd.reference", "reference")
