"""The Mamba-2 block (state-spaces/mamba ``modules/mamba2.py``; MAMBA2_FACTS section 3), written afresh.

With E = expand * d_model, H = E / headdim heads, G = ngroups, N = d_state:
in_proj (d_model -> [z E | x E | B GN | C GN | dt H], no bias) -> causal depthwise conv (d_conv taps, with
bias) over x|B|C -> SiLU -> SSD (dt = softplus(dt + dt_bias), A = -exp(A_log), D per head) -> gated
RMSNorm, RMSNorm(y * silu(z)) * w over groups of E / G channels (norm_before_gate False) -> out_proj
(no bias).  Official defaults: d_state 128 (ModelConfig fills it in for arch mamba2), d_conv 4, expand 2,
headdim 64, ngroups 1, chunk_size 256; inits in :class:`models.ssd.SSDHeads`.  The ``mixer`` of this arch
is always ``ssd``.

Decoding keeps {"conv": (batch, E + 2GN, d_conv) raw x|B|C inputs, "ssm": (batch, H, headdim, N)};
``prefill`` runs the prompt through the conv and one SSD scan (from the given state) and leaves exactly the
state that stepping leaves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.conv import CausalDepthwiseConv
from models.ssd import SSDHeads, _acc


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) * weight, normalised over groups of ``group_size`` channels (Mamba-2's norm with
    norm_before_gate False); computed in float32 for half-precision inputs."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        if d % group_size:
            raise ValueError(f"GatedRMSNorm: group_size ({group_size}) must divide d ({d})")
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = y.dtype
        h = _acc(y) * F.silu(_acc(z))
        g = h.unflatten(-1, (-1, self.group_size))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return (g.flatten(-2) * self.weight).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, group_size={self.group_size}, eps={self.eps}"


class Mamba2Block(SSDHeads, nn.Module):
    """(B, L, d_model) -> (B, L, d_model), with ``init_state`` / ``step`` / ``prefill``."""

    def __init__(self, cfg: ModelConfig):
        nn.Module.__init__(self)
        d_model, E, G, N = cfg.d_model, cfg.expand * cfg.d_model, cfg.ngroups, cfg.d_state
        if E % cfg.headdim or (E // cfg.headdim) % G:
            raise ValueError(f"Mamba2Block: headdim ({cfg.headdim}) must divide expand*d_model ({E}) and ngroups "
                             f"({G}) the number of heads")
        H = E // cfg.headdim
        self.d_inner = E
        self.in_proj = nn.Linear(d_model, 2 * E + 2 * G * N + H, bias=cfg.bias)
        self.conv = CausalDepthwiseConv(E + 2 * G * N, cfg.d_conv, bias=cfg.conv_bias)
        self._init_heads(cfg, H, cfg.headdim, G, N)
        self.norm = GatedRMSNorm(E, E // G, eps=cfg.norm_eps)
        self.out_proj = nn.Linear(E, d_model, bias=cfg.bias)

    # ------------------------------------------------------------------ pieces
    def _split_in(self, u: torch.Tensor):
        """in_proj(u) -> z (..., E), xBC (..., E + 2GN), dt (..., H)."""
        E = self.d_inner
        return self.in_proj(u).split([E, E + 2 * self.ngroups * self.N, self.nheads], dim=-1)

    def _split_xbc(self, xbc: torch.Tensor):
        """conv output (..., E + 2GN) -> x (..., H, P), B (..., G, N), C (..., G, N)."""
        GN = self.ngroups * self.N
        x, B, C = F.silu(xbc).split([self.d_inner, GN, GN], dim=-1)
        shape = xbc.shape[:-1]
        return (x.reshape(shape + (self.nheads, self.headdim)), B.reshape(shape + (self.ngroups, self.N)),
                C.reshape(shape + (self.ngroups, self.N)))

    def _out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.norm(y.reshape(z.shape), z))

    # ------------------------------------------------------------------ forms
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z, xbc, dt = self._split_in(u)
        x, B, C = self._split_xbc(self.conv(xbc))
        return self._out(self._scan(x, dt, B, C), z)

    def init_state(self, batch: int, device=None, dtype=None):
        return {"conv": self.conv.init_state(batch, device, dtype), "ssm": self._init_ssm_state(batch, device, dtype)}

    def prefill(self, u: torch.Tensor, state):
        """A prompt (B, L, d_model) in parallel: the conv over the state's last inputs then the prompt, one SSD
        scan from the state's SSM state; returns the state L steps would leave (the last d_conv raw x|B|C)."""
        z, xbc, dt = self._split_in(u)
        xbc, conv_state = self.conv.prefill(xbc, state["conv"])
        x, B, C = self._split_xbc(xbc)
        y, ssm_state = self._prefill_scan(x, dt, B, C, state["ssm"])
        return self._out(y, z), {"conv": conv_state, "ssm": ssm_state}

    def step(self, u_t: torch.Tensor, state):
        """One token u_t (B, d_model) -> (y_t (B, d_model), state); the SSM state is updated in place (outside
        autograd), the conv window is a new tensor (a static stepper copies it back)."""
        z, xbc, dt = self._split_in(u_t)
        xbc, conv_state = self.conv.step(xbc, state["conv"])
        x, B, C = self._split_xbc(xbc)
        y, ssm_state = self._step(state["ssm"], x, dt, B, C)
        return self._out(y, z), {"conv": conv_state, "ssm": ssm_state}

    def extra_repr(self) -> str:
        return (f"d_inner={self.d_inner}, heads={self.nheads}, headdim={self.headdim}, ngroups={self.ngroups}, "
                f"N={self.N}, chunk_size={self.chunk_size}, backend={self.backend}")


def mamba2_layer(cfg: ModelConfig) -> list:
    return [Mamba2Block(cfg)]
