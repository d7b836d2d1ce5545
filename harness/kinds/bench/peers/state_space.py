"""Peers from mamba_ssm (the official selective scan, Mamba-2's chunked SSD, the decoding step) and
causal_conv1d, each called with its published signature and layout (state-spaces/mamba,
Dao-AILab/causal-conv1d), on inputs drawn as ssmbench's own targets draw them (ops.py: Mamba's init)."""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

from harness.kinds.bench.op import Op, op_impl
from harness.kinds.bench.ops import (SCAN_REFERENCE, _generator, _randn, scan_cost_fields, scan_input_dict,
                                     selective_scan_with)
from harness.kinds.bench.peers import peer_attr, requires
from harness.kinds.bench.references import causal_conv_direct

CONV_WIDTH = 4          # Mamba's d_conv
SSD_CHUNK = 256         # Mamba-2's chunk_size


def _dt_bias(n: int, g: torch.Generator, device: str) -> torch.Tensor:
    """softplus^-1 of a log-uniform dt in [1e-3, 1e-1] (Mamba's dt init), fp32."""
    log_dt = torch.rand(n, generator=g, device=device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    dt = log_dt.exp()
    return dt + torch.log(-torch.expm1(-dt))


# --------------------------------------------------------------------------- selective_scan_fn
def _official_scan():
    selective_scan_fn = peer_attr("mamba_ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")

    def call(x):   # selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, ...)
        return selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=None,
                                 delta_bias=x["delta_bias"], delta_softplus=True)
    return call


SELECTIVE_SCAN = op_impl("peer.mamba_ssm.selective_scan",
                         Op(scan_input_dict, _official_scan, selective_scan_with("reference"), scan_cost_fields),
                         SCAN_REFERENCE, needs_cuda=True, requires=requires("mamba_ssm"))


# --------------------------------------------------------------------------- mamba_chunk_scan_combined (SSD)
def ssd_inputs(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """Mamba-2's layout: the scan width (``dim``, or expand * d_model) split into heads of ``head_dim`` (Mamba-2:
    64; without head_dim, ``heads`` heads); x (batch, L, heads, head_dim) and dt (batch, L, heads) in the cell's
    dtype, B, C (batch, L, 1 group, d_state) in the cell's dtype; A (heads,) = -U(1, 16), D, dt_bias (heads,) fp32."""
    p, n = cfg.attn_head_dim, cfg.d_state
    b, L, h = cfg.batch, cfg.seq_len, cfg.width // p
    g = _generator(device, cfg.seed)
    dt_ = cfg.torch_dtype
    ins = dict(x=_randn((b, L, h, p), g, device, dt_), dt=_randn((b, L, h), g, device, dt_, scale=0.5),
               B=_randn((b, L, 1, n), g, device, dt_), C=_randn((b, L, 1, n), g, device, dt_),
               A=-(torch.rand(h, generator=g, device=device) * 15 + 1), D=torch.ones(h, device=device),
               dt_bias=_dt_bias(h, g, device))
    return {k: v.requires_grad_(requires_grad) for k, v in ins.items()}


def _official_ssd():
    combined = peer_attr("mamba_ssm", "mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")

    def call(x):   # mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, ...)
        return combined(x["x"], x["dt"], x["A"], x["B"], x["C"], SSD_CHUNK, D=x["D"], dt_bias=x["dt_bias"],
                        dt_softplus=True)
    return call


def _ssd_reference(x):
    from kernels import ssd
    return ssd(x["x"], x["dt"], x["A"], x["B"], x["C"], SSD_CHUNK, D=x["D"], dt_bias=x["dt_bias"], dt_softplus=True,
               backend="reference")


SSD = op_impl("peer.mamba_ssm.ssd", Op(ssd_inputs, _official_ssd, _ssd_reference),
              "kernels.ssd (backend reference) in float64", needs_cuda=True, uses_heads=True,
              requires=requires("mamba_ssm"))


# --------------------------------------------------------------------------- selective_state_update
def state_update_inputs(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """One token of S6 decoding (seq_len is not used): state (batch, dim, N) fp32, x, dt (batch, dim) and
    B, C (batch, N) in the cell's dtype; A (dim, N) S4D-real, D, dt_bias (dim,) fp32."""
    b, d, n = cfg.batch, cfg.width, cfg.d_state
    g = _generator(device, cfg.seed)
    dt_ = cfg.torch_dtype
    return dict(state=torch.randn(b, d, n, generator=g, device=device),
                x=_randn((b, d), g, device, dt_), dt=_randn((b, d), g, device, dt_, scale=0.5),
                A=(-torch.arange(1, n + 1, device=device, dtype=torch.float32)).repeat(d, 1),
                B=_randn((b, n), g, device, dt_), C=_randn((b, n), g, device, dt_),
                D=torch.ones(d, device=device), dt_bias=_dt_bias(d, g, device))


def _official_state_update():
    update = peer_attr("mamba_ssm", "mamba_ssm.ops.triton.selective_state_update", "selective_state_update")

    def call(x):   # selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False)
        return update(x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"], D=x["D"], z=None,
                      dt_bias=x["dt_bias"], dt_softplus=True)
    return call


def _state_update_reference(x):
    from kernels.selective_scan.state_update import selective_state_update_reference
    y, _ = selective_state_update_reference(x["state"], x["x"], x["dt"], x["A"], x["B"], x["C"], D=x["D"],
                                            dt_bias=x["dt_bias"], dt_softplus=True)
    return y


STATE_UPDATE = op_impl("peer.mamba_ssm.state_update",
                       Op(state_update_inputs, _official_state_update, _state_update_reference,
                          tokens=lambda cfg: cfg.batch),
                       "one step of the S6 recurrence in float64", passes=("fwd",), needs_cuda=True,
                       requires=requires("mamba_ssm"))


# --------------------------------------------------------------------------- causal_conv1d_fn
def conv_inputs(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """x (batch, dim, L), weight (dim, 4), bias (dim,), all in the cell's dtype (as Mamba's conv runs)."""
    b, d, L = cfg.batch, cfg.width, cfg.seq_len
    g = _generator(device, cfg.seed)
    dt_ = cfg.torch_dtype
    return dict(x=_randn((b, d, L), g, device, dt_, requires_grad=requires_grad),
                weight=_randn((d, CONV_WIDTH), g, device, dt_, scale=CONV_WIDTH ** -0.5, requires_grad=requires_grad),
                bias=_randn((d,), g, device, dt_, scale=0.1, requires_grad=requires_grad))


def _official_conv():
    causal_conv1d_fn = peer_attr("causal_conv1d", "causal_conv1d", "causal_conv1d_fn")

    def call(x):   # causal_conv1d_fn(x, weight, bias=None, ..., activation=None)
        return causal_conv1d_fn(x["x"], x["weight"], x["bias"], activation="silu")
    return call


def _conv_reference(x):
    """out_t = silu(bias + sum_i weight[:, i] x_{t - (W-1) + i}): the conv's tap i has lag W-1-i."""
    return F.silu(causal_conv_direct(x["x"], x["weight"].flip(-1)) + x["bias"][:, None])


CAUSAL_CONV1D = op_impl("peer.causal_conv1d", Op(conv_inputs, _official_conv, _conv_reference),
                        "the direct causal convolution in float64", needs_cuda=True,
                        requires=requires("causal_conv1d"))
