"""Causal multi-head attention with positional variants and two backends, plus a KV cache for ``step``.

Positions (Mamba paper, Table 11's MHA-Abs / MHA-RoPE / MHA-xPos):
  abs : a learned table added to the token embedding by the LM backbone (sized ``max_len``; rows
        beyond the training length are never trained, which is how MHA-Abs meets longer tests);
  rope: rotary embeddings (Su et al. 2021), base 10000, on q and k;
  xpos: rotary plus the xPos decay (Sun et al. 2022): q scaled by zeta^(n/512), k by zeta^(-n/512),
        zeta_i = (2i/d_head + 0.4) / 1.4, so scores decay with distance.  Absolute positions are used
        (stable in float32 up to about 3.6e4 positions; the paper tests attention up to 2^14).
Backends: ``sdpa`` (torch.nn.functional.scaled_dot_product_attention: FlashAttention on GPU) and
``naive`` (materialised (L, L) scores and mask: the quadratic-memory baseline).

KV caches for ``step`` (``init_state``):
  dynamic (the default): a buffer that doubles when full, its length a Python int; what training and the
        eager decode cells use.
  static (``static=True``): ``capacity`` slots allocated up front and the length a 0-dim int64 tensor on the
        cache's device (as HF transformers' StaticCache and gpt-fast): a step writes k/v at that index
        (``index_copy_``), rotates at that position and attends over all ``capacity`` slots under a mask keeping
        slots <= the length, so its shapes are fixed and it reads no Python value: it can be replayed from a
        CUDA graph (harness/kinds/bench/static_step.py).  Each step costs attention over the whole capacity.
  ``kv_cache_options`` passes capacity/static to every ``init_state`` inside it, through blocks that do not
        know about attention (``models.lm.LM.init_state`` uses it).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Dict, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.prefill import prefill_by_step

ATTN_BACKENDS = ("sdpa", "naive")
ROPE_BASE = 10000.0
XPOS_SCALE_BASE = 512.0
DYNAMIC_CACHE_START = 64   # first size of the growing cache's buffer

Position = Union[int, torch.Tensor]   # a Python int, or a 0-dim integer tensor (a static cache's length)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v; q, k, v (B, H, L, d_head) -> (B, H, L, d_head).

    When k is longer than q (decoding against a cache), query i sits at key position Lk - Lq + i.
    """
    if backend not in ATTN_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid: {', '.join(ATTN_BACKENDS)}")
    Lq, Lk = q.shape[-2], k.shape[-2]
    if backend == "sdpa":
        if Lq == Lk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if Lq == 1:
            return F.scaled_dot_product_attention(q, k, v)
    mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(diagonal=Lk - Lq)
    return _naive_masked(q, k, v, mask)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor,
                     backend: str = "sdpa") -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the keys where the boolean ``keep`` (broadcastable to (B, H, Lq, Lk)) is
    True; every query must keep at least one key.  The static KV cache's attention over its whole capacity."""
    if backend not in ATTN_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid: {', '.join(ATTN_BACKENDS)}")
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return _naive_masked(q, k, v, keep)


def _naive_masked(q, k, v, keep):
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~keep, float("-inf"))
    # softmax in at least float32 (a bf16/fp16 model upcasts; a float64 one keeps its precision)
    return torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1).to(v.dtype) @ v


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RotaryPositions(nn.Module):
    """RoPE, optionally with the xPos scale; applied to (B, H, L, d_head) at absolute positions.

    A start position is a Python int or a 0-dim integer tensor (no host read: a static KV cache's length);
    both give the same float32 positions (exact integers below 2^24)."""

    def __init__(self, d_head: int, xpos: bool):
        super().__init__()
        self.d_head, self.xpos = d_head, xpos

    def forward(self, q: torch.Tensor, k: torch.Tensor, q_start: Position, k_start: Position):
        return self._rotate(q, q_start, +1), self._rotate(k, k_start, -1)

    def _rotate(self, x: torch.Tensor, start: Position, sign: int) -> torch.Tensor:
        # frequencies are rebuilt in float32 each call (cheap) so a bf16 model keeps exact positions
        half = torch.arange(0, self.d_head, 2, device=x.device, dtype=torch.float32)
        if isinstance(start, torch.Tensor):
            pos = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32) + start.to(x.device, torch.float32)
        else:
            pos = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float32)
        angles = pos[:, None] * ROPE_BASE ** (-half / self.d_head)[None, :]
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        if self.xpos:
            zeta = (half + 0.4 * self.d_head) / (1.4 * self.d_head)
            scale = zeta[None, :] ** (sign * pos[:, None] / XPOS_SCALE_BASE)
            scale = torch.cat([scale] * 2, -1)
            cos, sin = cos * scale, sin * scale
        xf = x.float()
        return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


class MultiHeadAttention(nn.Module):
    """Causal MHA over ``d`` channels: (B, L, d) -> (B, L, d); ``step`` uses a KV cache (growing, or static)."""

    def __init__(self, cfg: ModelConfig, d: int):
        super().__init__()
        if d % cfg.heads:
            raise ValueError(f"attention width {d} is not divisible by heads={cfg.heads}")
        self.d, self.heads, self.d_head = d, cfg.heads, d // cfg.heads
        self.backend = cfg.attn_backend
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.out_proj = nn.Linear(d, d, bias=cfg.bias)
        self.rotary = RotaryPositions(self.d_head, xpos=cfg.pos == "xpos") if cfg.pos in ("rope", "xpos") else None

    def _heads(self, x: torch.Tensor):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
        return q, k, v                                                  # each (B, H, L, d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        if self.rotary is not None:
            q, k = self.rotary(q, k, 0, 0)
        y = causal_attention(q, k, v, self.backend)
        return self.out_proj(y.transpose(1, 2).reshape(x.shape))

    # ------------------------------------------------------------------ KV cache
    def init_state(self, batch: int, device=None, dtype=None, capacity: Optional[int] = None,
                   static: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """Keys/values (rotary already applied) and the number of tokens stepped, ``len``.

        Dynamic (``static`` False, the default): a buffer of ``capacity`` slots (default 64) that doubles when
        full; ``len`` is a Python int.  Under ``torch.no_grad`` the buffer is written in place (a real KV cache:
        do not reuse an old state); with autograd on, each step copies it so gradients through decoding stay
        valid.

        Static (``static=True``): exactly ``capacity`` slots (required), never grown; ``len`` is a 0-dim int64
        tensor on ``device``, so ``step`` has fixed shapes and can be captured in a CUDA graph.  At most
        ``capacity`` steps fit: stepping a full cache is a clear error when ``len`` lives on the CPU (read for
        free); on CUDA the check would be a host sync per step, so there (eagerly or inside a graph) the
        out-of-range write trips ``index_copy_``'s device-side bounds assert instead: size the capacity for
        every step between resets, as the decode kind does.  Writes are in place unless autograd is on.

        ``capacity`` / ``static`` left None take the values of an enclosing :func:`kv_cache_options`.
        """
        opts = _CACHE_OPTIONS.get()
        capacity = opts["capacity"] if capacity is None else capacity
        static = opts["static"] if static is None else static
        if static:
            if capacity is None or isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
                raise ValueError(f"a static KV cache needs a positive integer capacity (the most tokens it will "
                                 f"hold), got {capacity!r}")
        elif capacity is None:
            capacity = DYNAMIC_CACHE_START
        shape = (batch, self.heads, capacity, self.d_head)
        device, dtype = device or self.qkv.weight.device, dtype or self.qkv.weight.dtype
        return {"k": torch.zeros(shape, device=device, dtype=dtype), "v": torch.zeros(shape, device=device, dtype=dtype),
                "len": torch.zeros((), device=device, dtype=torch.long) if static else 0}

    def step(self, x_t: torch.Tensor, state: Dict[str, torch.Tensor]):
        if isinstance(state["len"], torch.Tensor):
            return self._step_static(x_t, state)
        q, k, v = self._heads(x_t.unsqueeze(1))
        n = state["len"]
        if self.rotary is not None:
            q, k = self.rotary(q, k, n, n)
        K, V = state["k"], state["v"]
        if n == K.shape[2]:                                             # grow the cache
            K, V = _grown(K, n + 1), _grown(V, n + 1)
        elif torch.is_grad_enabled():                                   # autograd needs the old cache intact
            K, V = K.clone(), V.clone()
        K[:, :, n], V[:, :, n] = k[:, :, 0].to(K.dtype), v[:, :, 0].to(V.dtype)
        y = causal_attention(q, K[:, :, : n + 1].to(q.dtype), V[:, :, : n + 1].to(q.dtype), self.backend)
        return self.out_proj(y.reshape(x_t.shape)), {"k": K, "v": V, "len": n + 1}

    def prefill(self, x: torch.Tensor, state: Dict[str, torch.Tensor]):
        """A prompt x (B, L, d) into an empty KV cache (growing or static): causal attention over the prompt in
        one call, its keys and values written to slots 0..L-1.  A cache that already holds tokens is filled
        step by step instead (exact, slower).  Reads a static cache's length on the host: once per prompt."""
        n = state["len"]
        if int(n) != 0:
            return prefill_by_step(self, x, state)
        L = x.shape[1]
        q, k, v = self._heads(x)
        if self.rotary is not None:
            q, k = self.rotary(q, k, 0, 0)
        y = causal_attention(q, k, v, self.backend)
        K, V = state["k"], state["v"]
        if L > K.shape[2]:
            if isinstance(n, torch.Tensor):
                raise RuntimeError(f"static KV cache overflow: a prompt of {L} tokens does not fit its {K.shape[2]} "
                                   f"slots (init_state(capacity=...)); make it at least prompt + generated tokens")
            K, V = _grown(K, L), _grown(V, L)
        elif torch.is_grad_enabled():                                   # autograd needs the old cache intact
            K, V = K.clone(), V.clone()
        K[:, :, :L], V[:, :, :L] = k.to(K.dtype), v.to(V.dtype)
        return self.out_proj(y.transpose(1, 2).reshape(x.shape)), {"k": K, "v": V, "len": n + L}

    def _step_static(self, x_t: torch.Tensor, state: Dict[str, torch.Tensor]):
        """The static cache's step: fixed shapes, the position only as a tensor (no host read on CUDA)."""
        q, k, v = self._heads(x_t.unsqueeze(1))
        n, K, V = state["len"], state["k"], state["v"]
        capacity = K.shape[2]
        if n.device.type == "cpu" and int(n) >= capacity:              # free on the CPU; see init_state
            raise RuntimeError(f"static KV cache overflow: all {capacity} slots hold tokens; the cache was made "
                               f"for at most {capacity} steps (init_state(capacity=...)); reset it or make it larger")
        if self.rotary is not None:
            q, k = self.rotary(q, k, n, n)
        index = n.reshape(1)
        if torch.is_grad_enabled():                                     # autograd needs the old cache intact
            K, V = K.index_copy(2, index, k.to(K.dtype)), V.index_copy(2, index, v.to(V.dtype))
        else:
            K.index_copy_(2, index, k.to(K.dtype))
            V.index_copy_(2, index, v.to(V.dtype))
        keep = (torch.arange(capacity, device=K.device) <= n).view(1, 1, 1, capacity)   # slots 0..len (this token)
        y = masked_attention(q, K.to(q.dtype), V.to(q.dtype), keep, self.backend)
        return self.out_proj(y.reshape(x_t.shape)), {"k": K, "v": V, "len": n + 1}


def _grown(buffer: torch.Tensor, slots: int) -> torch.Tensor:
    """A growing cache's buffer (B, H, capacity, d_head) with its capacity doubled until ``slots`` fit: a new
    tensor, the old entries first and zeros after."""
    capacity = buffer.shape[2]
    while capacity < slots:
        capacity *= 2
    return torch.cat([buffer, buffer.new_zeros(buffer.shape[:2] + (capacity - buffer.shape[2],) + buffer.shape[3:])], 2)


_CACHE_OPTIONS: "contextvars.ContextVar[dict]" = contextvars.ContextVar(
    "kv_cache_options", default={"capacity": None, "static": False})


def current_kv_cache_options() -> dict:
    """{"capacity", "static"} of the innermost :func:`kv_cache_options` (defaults outside any)."""
    return dict(_CACHE_OPTIONS.get())


@contextlib.contextmanager
def kv_cache_options(capacity: Optional[int] = None, static: bool = False) -> Iterator[None]:
    """Inside: ``MultiHeadAttention.init_state`` calls that leave ``capacity`` / ``static`` out use these, so an
    LM asks for static caches through blocks (transformer, mamba, none) that only pass (batch, device, dtype)."""
    token = _CACHE_OPTIONS.set({"capacity": capacity, "static": static})
    try:
        yield
    finally:
        _CACHE_OPTIONS.reset(token)
