"""The language-model backbone shared by every architecture, so task results differ only by the YAML.

embedding (+ learned absolute positions when ``mixer: attention, pos: abs``) -> n_layers x
(pre-norm RMSNorm + block, residual) -> RMSNorm -> head tied to the embedding
(mixer_seq_simple: rms_norm, tied embeddings, N(0, 0.02) embedding init, out_proj rescaled by
1/sqrt(number of residual branches), GPT-2 scheme).

Decoding: ``init_state`` / ``step`` one token at a time; ``prefill`` a whole prompt (the parallel form where a
block has one, :mod:`models.prefill`).  ``init_state(..., capacity, static=True)`` builds a
state with fixed shapes and no Python numbers that change (a static KV cache in every attention layer, the
position a device tensor), which a CUDA graph can replay (harness/kinds/bench/static_step.py).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
import torch.utils.checkpoint
from torch import nn

from models.attention import current_kv_cache_options, kv_cache_options
from models.config import ModelConfig, as_config
from models.prefill import prefill
from models.registry import ARCHS


class Residual(nn.Module):
    """x + block(norm(x)); ``step`` does the same for one token.  With ``checkpoint`` (and autograd on),
    only x is kept for the backward, which recomputes norm and block (torch.utils.checkpoint)."""

    def __init__(self, block: nn.Module, d: int, eps: float, checkpoint: bool = False):
        super().__init__()
        self.norm = nn.RMSNorm(d, eps=eps)
        self.block = block
        self.checkpoint = checkpoint

    def _branch(self, x):
        return self.block(self.norm(x))

    def forward(self, x):
        if self.checkpoint and torch.is_grad_enabled():
            return x + torch.utils.checkpoint.checkpoint(self._branch, x, use_reentrant=False)
        return x + self._branch(x)

    def init_state(self, batch, device=None, dtype=None):
        return self.block.init_state(batch, device, dtype)

    def step(self, x_t, state):
        y, state = self.block.step(self.norm(x_t), state)
        return x_t + y, state

    def prefill(self, x, state):
        y, state = prefill(self.block, self.norm(x), state)
        return x + y, state


class Layer(nn.Module):
    """One backbone layer: the arch's sub-blocks, each in pre-norm + residual.  (B, L, d) -> (B, L, d)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.sublayers = nn.ModuleList(Residual(b, cfg.d_model, cfg.norm_eps, cfg.checkpoint)
                                       for b in ARCHS.get(cfg.arch)(cfg))

    def forward(self, x):
        for sub in self.sublayers:
            x = sub(x)
        return x

    def init_state(self, batch, device=None, dtype=None) -> List[Any]:
        return [sub.init_state(batch, device, dtype) for sub in self.sublayers]

    def step(self, x_t, state):
        new = []
        for sub, s in zip(self.sublayers, state):
            x_t, s = sub.step(x_t, s)
            new.append(s)
        return x_t, new

    def prefill(self, x, state):
        new = []
        for sub, s in zip(self.sublayers, state):
            x, s = sub.prefill(x, s)
            new.append(s)
        return x, new


class LM(nn.Module):
    """tokens (B, L) long -> logits (B, L, vocab) float; ``init_state`` / ``step`` decode one token at a time."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.d_model)
        self.pos_embedding = (nn.Embedding(cfg.max_len, cfg.d_model)
                              if cfg.mixer == "attention" and cfg.pos == "abs" else None)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self._init_weights()

    def _init_weights(self):
        nn.init.normal_(self.embedding.weight, std=self.cfg.init_std)
        if self.pos_embedding is not None:
            nn.init.normal_(self.pos_embedding.weight, std=self.cfg.init_std)
        n_branches = sum(len(layer.sublayers) for layer in self.layers)
        for name, p in self.named_parameters():
            if name.endswith("out_proj.weight"):
                with torch.no_grad():
                    p.div_(math.sqrt(n_branches))

    def _check_max_len(self, end: int) -> None:
        if end > self.cfg.max_len:
            raise ValueError(f"sequence of length {end} exceeds model.max_len={self.cfg.max_len}, the size of the "
                             f"learned absolute-position table (pos: abs); raise model.max_len or use pos: rope/xpos")

    def _positions(self, start: int, length: int, device) -> torch.Tensor:
        self._check_max_len(start + length)
        return self.pos_embedding(torch.arange(start, start + length, device=device))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hidden(tokens) @ self.embedding.weight.t()

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final normed states, before the (tied) head: what ``models.lm_loss`` takes."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, length) integers, got shape {tuple(tokens.shape)}")
        x = self.embedding(tokens)
        if self.pos_embedding is not None:
            x = x + self._positions(0, tokens.shape[1], tokens.device)
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)

    def init_state(self, batch: int, device=None, dtype=None, capacity: Optional[int] = None,
                   static: Optional[bool] = None) -> Dict[str, Any]:
        """{"pos": tokens stepped so far, "layers": each layer's state}.

        Default: growing KV caches (``capacity`` their first size) and ``pos`` a Python int.  ``static=True``:
        every attention layer gets a static KV cache of ``capacity`` slots (models.attention) and ``pos`` is a
        0-dim int64 tensor on ``device``, so nothing in the state changes shape or Python value from step to
        step; at most ``capacity`` steps fit (with pos: abs, ``capacity`` must fit in model.max_len, checked
        here since a step cannot read its position).  Other mixers' states are the same either way.  Left None,
        ``capacity`` and ``static`` come from an enclosing :func:`models.attention.kv_cache_options`.
        """
        dtype = dtype or self.embedding.weight.dtype
        device = device or self.embedding.weight.device
        outer = current_kv_cache_options()          # what an enclosing kv_cache_options asked for, if any
        capacity = outer["capacity"] if capacity is None else capacity
        static = outer["static"] if static is None else static
        if static and self.pos_embedding is not None and isinstance(capacity, int):
            self._check_max_len(capacity)
        with kv_cache_options(capacity, static):
            layers = [layer.init_state(batch, device, dtype) for layer in self.layers]
        pos = torch.zeros((), dtype=torch.long, device=device) if static else 0
        return {"pos": pos, "layers": layers}

    def step(self, tokens_t: torch.Tensor, state: Dict[str, Any]):
        """tokens_t (B,) long -> (logits (B, vocab), new state)."""
        x = self.embedding(tokens_t)
        if self.pos_embedding is not None:
            pos = state["pos"]
            if not isinstance(pos, torch.Tensor):
                x = x + self._positions(pos, 1, tokens_t.device)[0]
            else:                          # a static state: the table row by a tensor index (bound checked at init)
                if pos.device.type == "cpu":
                    self._check_max_len(int(pos) + 1)       # free on the CPU, a host sync on CUDA
                x = x + self.pos_embedding(pos)
        new = []
        for layer, s in zip(self.layers, state["layers"]):
            x, s = layer.step(x, s)
            new.append(s)
        return self.norm_f(x) @ self.embedding.weight.t(), {"pos": state["pos"] + 1, "layers": new}


    def prefill(self, tokens: torch.Tensor, state: Dict[str, Any]):
        """A prompt tokens (B, L) long, L >= 1, through the parallel form where a block has one
        (:mod:`models.prefill`) -> (logits of its last position (B, vocab), the state after it): what L calls of
        ``step`` give, in one pass over the prompt."""
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"prefill takes a (batch, length >= 1) prompt, got shape {tuple(tokens.shape)}")
        x = self.embedding(tokens)
        if self.pos_embedding is not None:
            x = x + self._positions(int(state["pos"]), tokens.shape[1], tokens.device)
        new = []
        for layer, s in zip(self.layers, state["layers"]):
            x, s = layer.prefill(x, s)
            new.append(s)
        logits = self.norm_f(x[:, -1]) @ self.embedding.weight.t()
        return logits, {"pos": state["pos"] + tokens.shape[1], "layers": new}


def build_lm(model_cfg: "dict | ModelConfig", vocab_size: int) -> LM:
    return LM(as_config(model_cfg), vocab_size)


def build_block(model_cfg: "dict | ModelConfig") -> Layer:
    """One backbone layer (pre-norm + arch block + residual): (B, L, d_model) -> (B, L, d_model)."""
    return Layer(as_config(model_cfg))
