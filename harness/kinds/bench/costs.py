"""Minimal cost counts (bytes through device memory, flops, exponentials) per benchmark pass.

These are floors, not what an implementation moves: each input read once, each output written once
(PAPER_FACTS.md section 7).  Measured time over the floor time is the gap the report shows as
``roofline_fraction``.  The selective-scan and SSD counts are the kernels package's (``kernels.roofline``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from kernels import roofline


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def scan_costs(batch: int, dim: int, seq_len: int, d_state: int, dtype: torch.dtype,
               pass_: str) -> Tuple[float, float]:
    """(bytes, exps) of one selective scan (no z; B, C in ``dtype``), from ``kernels.roofline`` so the
    kernel report and the speed suites count with one formula (the backward recomputes the states)."""
    return (float(roofline.selective_scan_bytes(batch, dim, seq_len, d_state, dtype, pass_=pass_)),
            float(roofline.selective_scan_exps(batch, dim, seq_len, d_state, pass_=pass_)))


def ssd_costs(batch: int, seq_len: int, heads: int, headdim: int, d_state: int, ngroups: int, chunk_size: int,
              dtype: torch.dtype, pass_: str) -> Tuple[float, float, float]:
    """(bytes, flops, exps) of one SSD scan (no z; dt, B, C in ``dtype``), from ``kernels.roofline``: the
    chunked algorithm's matmul flops (MAMBA2_FACTS.md section 2) and the read-once / write-once bytes."""
    return (float(roofline.ssd_bytes(batch, seq_len, heads, headdim, d_state, ngroups, dtype, pass_=pass_)),
            float(roofline.ssd_flops(batch, seq_len, heads, headdim, d_state, ngroups, chunk_size, pass_=pass_)),
            float(roofline.ssd_exps(batch, seq_len, heads, pass_=pass_)))


def attention_costs(batch: int, heads: int, seq_len: int, head_dim: int, dtype: torch.dtype,
                    pass_: str) -> Tuple[float, float]:
    """(bytes, flops) of causal attention, FlashAttention's convention.

    fwd flops 4*b*h*L^2*d / 2 (two matmuls, half the square under the causal mask); backward is
    2.5x the forward.  Bytes: q, k, v read and o written; backward reads q, k, v, o, do and the
    fp32 log-sum-exp, writes dq, dk, dv.
    """
    e = element_size(dtype)
    bhld = batch * heads * seq_len * head_dim
    fwd_flops = 4.0 * batch * heads * seq_len ** 2 * head_dim / 2
    fwd_bytes = 4 * bhld * e
    if pass_ == "fwd":
        return float(fwd_bytes), fwd_flops
    bwd_bytes = 8 * bhld * e + batch * heads * seq_len * 4
    return float(fwd_bytes + bwd_bytes), 3.5 * fwd_flops


def fft_conv_bytes(batch: int, dim: int, seq_len: int, dtype: torch.dtype, pass_: str) -> float:
    """Bytes of a long convolution y = u * k: read u and k (fp32), write y; backward reads dy, u, k
    and writes du, dk.  FFT work is not matmul-class, so no flop count is declared."""
    e = element_size(dtype)
    bdl, dl = batch * dim * seq_len, dim * seq_len
    fwd = 2 * bdl * e + dl * 4
    if pass_ == "fwd":
        return float(fwd)
    return float(fwd + 3 * bdl * e + 2 * dl * 4)


def model_flops(n_params: int, tokens: int, pass_: str) -> float:
    """The usual dense-model estimate: 2 flops per parameter per token forward, 6 with backward.
    It ignores the attention L^2 and scan terms, so read the roofline fraction as an MFU-like figure."""
    return float((2 if pass_ == "fwd" else 6) * n_params * tokens)


def floor_ms(costs: Dict[str, Optional[float]], ceilings: Dict[str, Optional[float]]) -> Tuple[Optional[float], str]:
    """The binding floor time in ms and its name, from declared costs over measured ceilings.

    costs: bytes / flops / exps; ceilings: bytes_per_s / flops_per_s / exps_per_s.
    """
    pairs = (("memory", "bytes", "bytes_per_s"), ("compute", "flops", "flops_per_s"),
             ("exp", "exps", "exps_per_s"))
    best, bound = None, ""
    for name, c_key, r_key in pairs:
        c, r = costs.get(c_key), ceilings.get(r_key)
        if c is None or not r:
            continue
        t = c / r * 1e3
        if best is None or t > best:
            best, bound = t, name
    return best, bound
