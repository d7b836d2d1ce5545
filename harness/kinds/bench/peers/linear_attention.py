"""Peers from flash-linear-attention (``fla``, fla-org/flash-linear-attention) as extra baselines: chunked
gated linear attention (``chunk_gla``) and the gated delta rule (``chunk_gated_delta_rule``), Triton kernels,
on (batch, L, heads, head_dim) inputs; the references are their recurrences (references.py)."""
from __future__ import annotations

from importlib import import_module
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from harness.kinds.bench.op import Op, op_impl
from harness.kinds.bench.ops import _generator, _randn
from harness.kinds.bench.peers import peer_attr, requires
from harness.kinds.bench.references import gated_delta_rule_recurrence, gla_recurrence
from harness.kinds.bench.workload import package_installed


def _leaf(t: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return t.detach().requires_grad_(requires_grad)


def gla_inputs(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """q, k, v (batch, L, heads, head_dim); g = logsigmoid(noise) (log forget gates, < 0), same shape."""
    b, L, h, d = cfg.batch, cfg.seq_len, cfg.heads, cfg.attn_head_dim
    g = _generator(device, cfg.seed)
    dt_ = cfg.torch_dtype
    q, k, v = (_randn((b, L, h, d), g, device, dt_, requires_grad=requires_grad) for _ in range(3))
    gate = F.logsigmoid(torch.randn(b, L, h, d, generator=g, device=device) + 3.0).to(dt_)
    return dict(q=q, k=k, v=v, g=_leaf(gate, requires_grad))


def gdn_inputs(cfg, device: str, requires_grad: bool) -> Dict[str, torch.Tensor]:
    """q, v (batch, L, heads, head_dim), k L2-normalised over head_dim (as the delta rule needs for stability),
    g = logsigmoid(noise) (batch, L, heads) log decays, beta = sigmoid(noise) in (0, 1)."""
    b, L, h, d = cfg.batch, cfg.seq_len, cfg.heads, cfg.attn_head_dim
    g = _generator(device, cfg.seed)
    dt_ = cfg.torch_dtype
    q, v = (_randn((b, L, h, d), g, device, dt_, requires_grad=requires_grad) for _ in range(2))
    k = F.normalize(torch.randn(b, L, h, d, generator=g, device=device), dim=-1).to(dt_)
    decay = F.logsigmoid(torch.randn(b, L, h, generator=g, device=device) + 3.0).to(dt_)
    beta = torch.sigmoid(torch.randn(b, L, h, generator=g, device=device)).to(dt_)
    return dict(q=q, k=_leaf(k, requires_grad), v=v, g=_leaf(decay, requires_grad), beta=_leaf(beta, requires_grad))


def _first(out):
    """fla's ops return (o, final_state); older ones o alone."""
    return out[0] if isinstance(out, tuple) else out


def _official_gla():
    chunk_gla = peer_attr("fla", "fla.ops.gla", "chunk_gla")
    return lambda x: _first(chunk_gla(q=x["q"], k=x["k"], v=x["v"], g=x["g"]))


def fla_gated_backward_declined(cfg, device: str) -> Optional[str]:
    """fla's own guard: with Triton >= 3.4.0 and < 3.7.1 on Hopper its gated ``chunk_bwd_dqkwg`` gives wrong
    gradients (fla-org/flash-linear-attention#640), so fla raises in the backward unless TileLang serves that
    kernel.  Read from fla's flags (``fla.utils``), so the cell is skipped with the reason, not an ``error``;
    a fla without these flags has no such guard."""
    if cfg.pass_ == "fwd" or package_installed("tilelang"):
        return None
    utils = import_module("fla.utils")
    if not (getattr(utils, "IS_NVIDIA_HOPPER", False) and getattr(utils, "TRITON_ABOVE_3_4_0", False)
            and not getattr(utils, "TRITON_ABOVE_3_7_1", True)):
        return None
    import triton
    return (f"fla refuses the backward of its gated kernels with Triton {triton.__version__} on Hopper GPUs "
            "(wrong gradients in chunk_bwd_dqkwg, fla-org/flash-linear-attention#640): install Triton >= 3.7.1 or "
            "`pip install tilelang`, or time pass fwd")


def _official_gdn():
    chunk_gated_delta_rule = peer_attr("fla", "fla.ops.gated_delta_rule", "chunk_gated_delta_rule")
    return lambda x: _first(chunk_gated_delta_rule(q=x["q"], k=x["k"], v=x["v"], g=x["g"], beta=x["beta"]))


GLA = op_impl("peer.fla.gla", Op(gla_inputs, _official_gla, lambda x: gla_recurrence(x["q"], x["k"], x["v"], x["g"])),
              "the GLA recurrence in float64", needs_cuda=True, uses_heads=True, requires=requires("fla"))
GATED_DELTA_RULE = op_impl(
    "peer.fla.gated_delta_rule",
    Op(gdn_inputs, _official_gdn,
       lambda x: gated_delta_rule_recurrence(x["q"], x["k"], x["v"], x["g"], x["beta"])),
    "the gated delta rule recurrence in float64", needs_cuda=True, uses_heads=True, dtypes=("fp16", "bf16"),
    requires=requires("fla"), declines=fla_gated_backward_declined)
