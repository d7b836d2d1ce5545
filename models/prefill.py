"""Prefill: run a whole prompt through a block and leave the decoding state that ``step`` would have left.

Why: decoding starts from a prompt.  Feeding it through ``step`` one token at a time is exact for every block
but costs one launch-bound step per token (2048 steps for the paper's Figure 8 prompt); the paper's
throughput, like mamba_ssm's and Hugging Face's ``generate``, runs the prompt through the parallel form
instead.  A block that can do so has ``prefill(x (B, L, d), state) -> (y (B, L, d), state)``; :func:`prefill`
calls it and falls back to a loop over ``step`` for the others (H3, S4, Hyena, ...), so every arch gets the
same answer either way, only at different speeds.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import nn


def prefill(module: nn.Module, x: torch.Tensor, state: Any) -> Tuple[torch.Tensor, Any]:
    """``module.prefill(x, state)`` when the module has one, else :func:`prefill_by_step`."""
    own = getattr(module, "prefill", None)
    if own is not None:
        return own(x, state)
    return prefill_by_step(module, x, state)


def prefill_by_step(module: nn.Module, x: torch.Tensor, state: Any) -> Tuple[torch.Tensor, Any]:
    """The reference: ``module.step`` over the L positions of x (B, L, d), outputs stacked along L."""
    ys = []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        ys.append(y)
    if not ys:
        return x, state
    return torch.stack(ys, dim=1), state
