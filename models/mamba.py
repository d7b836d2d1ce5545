"""The Mamba block (state-spaces/mamba ``mamba_simple``), with the SSM swappable for any mixer.

in_proj (d_model -> 2 * expand * d_model, split x | z) -> depthwise causal conv (d_conv) -> SiLU ->
mixer on the expand * d_model channels -> y * SiLU(z) -> out_proj.  With mixer s6 this is exactly
mamba_simple (the z gate is applied here rather than fused into the scan, which is equivalent).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.conv import CausalDepthwiseConv
from models.prefill import prefill
from models.registry import MIXERS


class MambaBlock(nn.Module):
    """(B, L, d_model) -> (B, L, d_model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d_inner = cfg.expand * cfg.d_model
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner, bias=cfg.bias)
        self.conv = CausalDepthwiseConv(d_inner, cfg.d_conv, bias=cfg.conv_bias)
        self.mixer = MIXERS.get(cfg.mixer)(cfg, d_inner)
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        u, z = self.in_proj(x).chunk(2, dim=-1)
        y = self.mixer(F.silu(self.conv(u)))
        return self.out_proj(y * F.silu(z))

    def init_state(self, batch, device=None, dtype=None):
        return {"conv": self.conv.init_state(batch, device, dtype), "mixer": self.mixer.init_state(batch, device, dtype)}

    def prefill(self, x, state):
        """A prompt (B, L, d_model) in parallel: the conv and the mixer each continue from their state."""
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_state = self.conv.prefill(u, state["conv"])
        y, mixer_state = prefill(self.mixer, F.silu(u), state["mixer"])
        return self.out_proj(y * F.silu(z)), {"conv": conv_state, "mixer": mixer_state}

    def step(self, x_t, state):
        u, z = self.in_proj(x_t).chunk(2, dim=-1)
        u, conv_state = self.conv.step(u, state["conv"])
        y, mixer_state = self.mixer.step(F.silu(u), state["mixer"])
        return self.out_proj(y * F.silu(z)), {"conv": conv_state, "mixer": mixer_state}


def mamba_layer(cfg: ModelConfig) -> list:
    return [MambaBlock(cfg)]
