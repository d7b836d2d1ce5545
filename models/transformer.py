"""The Transformer layer: a mixer sub-layer (attention, or any mixer) then an MLP sub-layer.

Each sub-layer gets its own pre-norm and residual from the backbone.  ``mlp_ratio: 0`` drops the
MLP (attention-only, the set-up whose size matches the paper's 137K MHA induction-heads models).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.prefill import prefill
from models.registry import MIXERS


class MLP(nn.Module):
    """Linear (d -> ratio*d) -> GELU -> Linear; stateless, so ``step`` is the same map."""

    def __init__(self, d: int, ratio: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(d, ratio * d, bias=bias)
        self.out_proj = nn.Linear(ratio * d, d, bias=bias)

    def forward(self, x):
        return self.out_proj(F.gelu(self.fc1(x)))

    def init_state(self, batch, device=None, dtype=None):
        return None

    def step(self, x_t, state):
        return self.forward(x_t), state

    def prefill(self, x, state):
        return self.forward(x), state


class MixerSublayer(nn.Module):
    """A bare mixer on d_model channels (attention brings its own projections)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.mixer = MIXERS.get(cfg.mixer)(cfg, cfg.d_model)

    def forward(self, x):
        return self.mixer(x)

    def init_state(self, batch, device=None, dtype=None):
        return self.mixer.init_state(batch, device, dtype)

    def step(self, x_t, state):
        return self.mixer.step(x_t, state)

    def prefill(self, x, state):
        return prefill(self.mixer, x, state)


def transformer_layer(cfg: ModelConfig) -> list:
    subs = [MixerSublayer(cfg)]
    if cfg.mlp_ratio > 0:
        subs.append(MLP(cfg.d_model, cfg.mlp_ratio, bias=cfg.bias))
    return subs
