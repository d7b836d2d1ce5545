"""Peers for attention: FlashAttention's own ``flash_attn_func`` (Dao-AILab/flash-attention), causal, on
(batch, L, heads, head_dim) inputs, fp16/bf16 only; beside ``attention.sdpa`` (the default, torch's fused
kernel) and ``attention.naive`` (its reference here)."""
from __future__ import annotations

from harness.kinds.bench.op import Op, op_impl
from harness.kinds.bench.ops import ATTENTION_REFERENCE, attention_cost_fields, attention_inputs, attention_with
from harness.kinds.bench.peers import peer_attr, requires


def _inputs(cfg, device, requires_grad):
    return attention_inputs(cfg, device, requires_grad, layout="blhd")


def _official():
    flash_attn_func = peer_attr("flash_attn", "flash_attn", "flash_attn_func")

    def call(x):   # flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, ...)
        return flash_attn_func(x["q"], x["k"], x["v"], causal=True)
    return call


_naive = attention_with("naive")


def _reference(x):
    """attention.naive on the (batch, heads, L, head_dim) view, back to flash_attn's layout."""
    return _naive({k: v.transpose(1, 2) for k, v in x.items()}).transpose(1, 2)


FLASH_ATTN = op_impl("peer.flash_attn", Op(_inputs, _official, _reference, attention_cost_fields),
                     ATTENTION_REFERENCE, needs_cuda=True, uses_heads=True, dtypes=("fp16", "bf16"),
                     requires=requires("flash_attn"))
