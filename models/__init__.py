"""Sequence models for ssmbench: mixers (s4, s6, ssd, hyena, attention), blocks (mamba, mamba2, h3, none,
transformer) and the LM backbone.  Importing ``models`` registers every name in MIXERS / ARCHS.

Public API: ``ModelConfig``, ``build_lm(cfg, vocab_size)``, ``build_block(cfg)``,
``build_mixer(cfg, d_model)``, ``count_params(module)``, ``paper_param_counts()``,
``state_size(cfg, seq_len, dtype) -> {"elements", "bytes"}``; operator-level
entry points ``models.attention.causal_attention(q, k, v, backend)`` and ``models.s4.fft_conv(u, k)``.
"""
from __future__ import annotations

from models.config import ModelConfig, SelectiveConfig, as_config
from models.registry import ARCHS, MIXERS
from models.lm import LM, build_block, build_lm
from models.params import count_params, mamba2_layer_params, paper_param_counts
from models.state_size import state_size, state_size_parts


def build_mixer(model_cfg, d_model: int):
    """The configured mixer alone, over ``d_model`` channels: (B, L, d_model) -> (B, L, d_model)."""
    cfg = as_config(model_cfg)
    return MIXERS.get(cfg.mixer)(cfg, d_model)


__all__ = ["ARCHS", "MIXERS", "LM", "ModelConfig", "SelectiveConfig", "as_config", "build_block", "build_lm",
           "build_mixer", "count_params", "mamba2_layer_params", "paper_param_counts", "state_size", "state_size_parts"]
