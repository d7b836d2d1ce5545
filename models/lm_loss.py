"""The language-model loss, optionally without holding every logit: ``lm_cross_entropy``.

Why: with a 50K vocabulary the head dominates a small model's training memory.  At Table 15's batch 8 x
2048 tokens the logits are 16384 x 50280 values; the plain path keeps them in bf16, an fp32 copy for the
loss, and the fp32 log-softmax for the backward (3.3 GB each in fp32), so once the layers are
checkpointed the head sets the peak of Mamba and Transformer alike (H200, 2026-12-02: 12.8 / 12.7 GB at
batch 8; reports/gpu/README.md).  The chunked path computes logits ``chunk`` tokens at a time, keeps only
each token's log-sum-exp, and recomputes the chunk's logits in the backward: memory of one chunk of
logits instead of all of them, for one more head matmul.  (Liger's and Apple's cut-cross-entropy kernels
fuse the same idea in Triton, GPU only; this is plain PyTorch, so it runs and is tested on the CPU too.)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def lm_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     chunk: Optional[int] = None) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``.

    hidden (..., d), weight (vocab, d) (the tied embedding), targets (...) int.  ``chunk``: tokens per
    chunk of logits (None: all at once, the plain path).  Under autocast the head matmul runs in the
    autocast dtype and the softmax in fp32, as the plain path does.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    if chunk is None:
        return F.cross_entropy((h @ weight.t()).float(), t)
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        compute = torch.get_autocast_dtype(dev)
    else:
        compute = torch.promote_types(h.dtype, weight.dtype)
    return _ChunkedLinearCrossEntropy.apply(h, weight, t, int(chunk), compute)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Head matmul + cross-entropy over chunks of tokens; saves (hidden, weight, targets, lse) only."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk, compute):
        w = weight.to(compute)
        lse = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], chunk):
            logits = (h[s:s + chunk].to(compute) @ w.t()).float()
            lse[s:s + chunk] = torch.logsumexp(logits, dim=-1)
            total += (lse[s:s + chunk] - logits.gather(1, targets[s:s + chunk, None])[:, 0]).sum()
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.chunk, ctx.compute = chunk, compute
        return total / h.shape[0]

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, targets, lse = ctx.saved_tensors
        chunk, compute = ctx.chunk, ctx.compute
        w = weight.to(compute)
        dh = torch.empty_like(h)
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        scale = grad_out.float() / h.shape[0]
        for s in range(0, h.shape[0], chunk):
            hc = h[s:s + chunk].to(compute)
            # d loss / d logits = softmax - onehot(target), times the incoming gradient / tokens
            g = torch.exp((hc @ w.t()).float() - lse[s:s + chunk, None])
            g[torch.arange(g.shape[0], device=g.device), targets[s:s + chunk]] -= 1.0   # unique rows: deterministic
            g = (g * scale).to(compute)
            dh[s:s + chunk] = (g @ w).to(h.dtype)
            dw += (g.t() @ hc).float()
        return dh, dw.to(weight.dtype), None, None, None
