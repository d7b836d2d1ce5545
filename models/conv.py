"""Depthwise causal 1-D convolution with a step form (Mamba's conv1d, H3's shift-SSM, Hyena's short filter)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalDepthwiseConv(nn.Module):
    """y_t = sum_j w_j x_{t-j} (+ bias) per channel; input and output (B, L, d)."""

    def __init__(self, d: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(d, d, kernel_size, groups=d, padding=kernel_size - 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2)

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """The last kernel_size inputs, oldest first: (B, d, kernel_size)."""
        w = self.conv.weight
        return torch.zeros(batch, self.conv.in_channels, self.kernel_size, device=device or w.device, dtype=dtype or w.dtype)

    def prefill(self, x: torch.Tensor, state: torch.Tensor):
        """x (B, L, d) after ``state`` -> (y (B, L, d), state): the convolution over the state's last
        kernel_size - 1 inputs followed by x, in one call; exactly what L calls of ``step`` give."""
        k = self.kernel_size
        history = torch.cat([state[..., 1:], x.transpose(1, 2).to(state.dtype)], dim=-1)   # (B, d, k - 1 + L)
        y = F.conv1d(history.to(self.conv.weight.dtype), self.conv.weight, self.conv.bias, groups=history.shape[1])
        return y.transpose(1, 2).to(x.dtype), history[..., -k:].contiguous()

    def step(self, x_t: torch.Tensor, state: torch.Tensor):
        state = torch.cat([state[..., 1:], x_t.unsqueeze(-1).to(state.dtype)], dim=-1)
        y = (state * self.conv.weight[:, 0, :]).sum(-1)
        if self.conv.bias is not None:
            y = y + self.conv.bias
        return y.to(x_t.dtype), state
