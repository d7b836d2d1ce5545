"""Operator-level benchmark targets: the selective scan, the SSD scan, the S4 FFT convolution, causal attention.

Each builds its inputs once on the cell's device (seeded, random: never zeros, which can run
faster than real data) and returns a :class:`Workload`.  Scan inputs follow Mamba's initialisation
(S4D-real A = -(1..N), delta_bias = softplus^-1 of a log-uniform dt in [1e-3, 1e-1]) so the
exponentials see realistic magnitudes.  Attention and the FFT convolution are the models package's
own operators (``models.attention.causal_attention``, ``models.s4.fft_conv``), so the op-level
numbers time exactly what the model-level targets run.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from harness.kinds.bench.costs import attention_costs, fft_conv_bytes, scan_costs, ssd_costs
from harness.kinds.bench.workload import Impl, Workload, forward_or_backward


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


def _scan_build(backend: str) -> Callable:
    def build(cfg, device: str) -> Workload:
        from kernels import selective_scan
        train = cfg.pass_ != "fwd"
        u, delta, A, B, C, D, delta_bias = scan_inputs(cfg, device, requires_grad=train)

        def forward():
            return selective_scan(u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=True,
                                  backend=backend)
        fn = forward_or_backward(forward, (u, delta, A, B, C, D, delta_bias), cfg.pass_)
        nbytes, exps = scan_costs(cfg.batch, cfg.width, cfg.seq_len, cfg.d_state, cfg.torch_dtype, cfg.pass_)
        return Workload(fn, tokens=cfg.batch * cfg.seq_len, bytes=nbytes, exps=exps)
    return build


S6_TRITON = Impl("s6.triton", _scan_build("triton"), needs_cuda=True)
S6_CHUNKED = Impl("s6.chunked", _scan_build("chunked"))
S6_REFERENCE = Impl("s6.reference", _scan_build("reference"))


# --------------------------------------------------------------------------- S4 FFT convolution
def _fft_build(cfg, device: str) -> Workload:
    """The paper's "convolution" baseline: FFT of input and filter, multiply, inverse FFT, at 2L
    in float32 (``models.s4.fft_conv``, the op the S4 layers run)."""
    from models.s4 import fft_conv
    train = cfg.pass_ != "fwd"
    b, d, L = cfg.batch, cfg.width, cfg.seq_len
    g = _generator(device, cfg.seed)
    u = _randn((b, d, L), g, device, cfg.torch_dtype, requires_grad=train)
    # an S4D-like decaying filter, fp32 (building it is excluded, as in the paper's set-up)
    decay = torch.exp(-torch.linspace(0, 8, L, device=device))
    k = (_randn((d, L), g, device, torch.float32) * decay).requires_grad_(train)
    fn = forward_or_backward(lambda: fft_conv(u, k), (u, k), cfg.pass_)
    return Workload(fn, tokens=b * L, bytes=fft_conv_bytes(b, d, L, cfg.torch_dtype, cfg.pass_))


S4_FFT = Impl("s4.fft", _fft_build)


# --------------------------------------------------------------------------- causal attention
def _attention_build(backend: str) -> Callable:
    """q, k, v (batch, heads, L, head_dim) through ``models.attention.causal_attention`` (the
    operator the Transformer baseline runs): ``sdpa`` is torch's fused kernel (FlashAttention-2 on
    recent GPUs for fp16/bf16), ``naive`` materialises the (L, L) scores."""
    def build(cfg, device: str) -> Workload:
        from models.attention import causal_attention
        train = cfg.pass_ != "fwd"
        b, h, L, hd = cfg.batch, cfg.heads, cfg.seq_len, cfg.attn_head_dim
        g = _generator(device, cfg.seed)
        q, k, v = (_randn((b, h, L, hd), g, device, cfg.torch_dtype, requires_grad=train) for _ in range(3))
        fn = forward_or_backward(lambda: causal_attention(q, k, v, backend), (q, k, v), cfg.pass_)
        nbytes, flops = attention_costs(b, h, L, hd, cfg.torch_dtype, cfg.pass_)
        return Workload(fn, tokens=b * L, bytes=nbytes, flops=flops)
    return build


ATTENTION_SDPA = Impl("attention.sdpa", _attention_build("sdpa"), uses_heads=True)
ATTENTION_NAIVE = Impl("attention.naive", _attention_build("naive"), uses_heads=True)


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


def _ssd_build(backend: str) -> Callable:
    """One SSD scan through ``kernels.ssd`` (dt_softplus, dt_bias, D per head, no z), the call the Mamba-2
    block makes; costs from ``kernels.roofline`` (harness.kinds.bench.costs.ssd_costs)."""
    def build(cfg, device: str) -> Workload:
        from kernels import ssd
        train = cfg.pass_ != "fwd"
        x, dt, A, B, C, D, dt_bias = ssd_inputs(cfg, device, requires_grad=train)

        def forward():
            return ssd(x, dt, A, B, C, chunk_size=cfg.chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                       backend=backend)
        fn = forward_or_backward(forward, (x, dt, A, B, C, D, dt_bias), cfg.pass_)
        nbytes, flops, exps = ssd_costs(cfg.batch, cfg.seq_len, cfg.ssd_heads, cfg.ssd_headdim, cfg.d_state,
                                        cfg.ngroups, cfg.chunk_size, cfg.torch_dtype, cfg.pass_)
        return Workload(fn, tokens=cfg.batch * cfg.seq_len, bytes=nbytes, flops=flops, exps=exps)
    return build


SSD_TRITON = Impl("ssd.triton", _ssd_build("triton"), needs_cuda=True)
SSD_CHUNKED = Impl("ssd.chunked", _ssd_build("chunked"))
SSD_REFERENCE = Impl("ssd.reference", _ssd_build("reference"))
