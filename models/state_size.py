"""The recurrent state one sequence carries at inference (DESIGN.md "State size"), from the config alone.

What ``LM.init_state`` / ``LM.prefill`` hold per sequence after ``seq_len`` tokens, summed over layers,
counting only what is per sequence (tensors with a batch dimension): S4's discretised matrices, shared by the
batch, and the step counters are not state.  Per layer, with d the mixer's width (expand * d_model inside a
Mamba or Mamba-2 block, d_model elsewhere):

| part | elements | dtype |
|---|---|---|
| Mamba block conv window | d * d_conv | model |
| Mamba-2 conv window (raw x, B, C) | (E + 2 ngroups N) * d_conv | model |
| Mamba-2 / SSD state | heads * headdim * N = d * N | float32 (float64 for a float64 model) |
| S6 state | d * N (complex A: d * N/2 complex) | float32 (complex64) |
| S4 state | d * N/2 (complex inits) or d * N, complex | complex64 |
| H3 shift-SSM window | d_model * d_state | model |
| Hyena history (grows) | d * seq_len | model |
| attention KV cache (grows) | 2 * d * seq_len | model |

A complex element counts as one element of 8 bytes.  tests/test_state_size.py checks every arch x mixer
against the tensors of a real prefill.
"""
from __future__ import annotations

from typing import Dict, Union

import torch

from models.config import ModelConfig, as_config
from models.ssd import state_dtype

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "fp64": torch.float64, "float64": torch.float64}


def as_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or a torch.dtype")


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _mixer_parts(cfg: ModelConfig, d: int, seq_len: int, dtype: torch.dtype) -> Dict[str, tuple]:
    """{part: (elements, dtype)} of one mixer over ``d`` channels."""
    N, mixer = cfg.d_state, cfg.mixer
    if mixer == "s6":
        return {"s6": (d * N // 2, torch.complex64)} if cfg.complex_a else {"s6": (d * N, torch.float32)}
    if mixer == "ssd":
        return {"ssd": (d * N, state_dtype(dtype))}
    if mixer == "s4":
        return {"s4": (d * (N // 2 if cfg.complex_a else N), torch.complex64)}
    if mixer == "hyena":
        return {"hyena_history": (d * seq_len, dtype)}
    if mixer == "attention":
        return {"kv_cache": (2 * d * seq_len, dtype)}
    raise ValueError(f"state_size: no formula for mixer {mixer!r} (a plugin mixer); count its init_state instead")


def _layer_parts(cfg: ModelConfig, seq_len: int, dtype: torch.dtype) -> Dict[str, tuple]:
    if cfg.arch == "mamba2":
        E, GN = cfg.expand * cfg.d_model, cfg.ngroups * cfg.d_state
        return {"conv": ((E + 2 * GN) * cfg.d_conv, dtype), "ssd": (E * cfg.d_state, state_dtype(dtype))}
    if cfg.arch == "mamba":
        return {"conv": (cfg.d_inner * cfg.d_conv, dtype), **_mixer_parts(cfg, cfg.d_inner, seq_len, dtype)}
    if cfg.arch == "h3":
        return {"shift": (cfg.d_model * cfg.d_state, dtype), **_mixer_parts(cfg, cfg.d_model, seq_len, dtype)}
    if cfg.arch in ("none", "transformer"):
        return _mixer_parts(cfg, cfg.d_model, seq_len, dtype)
    raise ValueError(f"state_size: no formula for arch {cfg.arch!r} (a plugin block); count its init_state instead")


def state_size_parts(model_cfg: "dict | ModelConfig", seq_len: int,
                     dtype: Union[str, torch.dtype] = torch.float32) -> Dict[str, Dict[str, int]]:
    """{part: {"elements", "bytes"}} over all layers, per sequence (parts as in the module's table)."""
    cfg, dtype = as_config(model_cfg), as_dtype(dtype)
    if seq_len < 0:
        raise ValueError(f"seq_len must be >= 0, got {seq_len}")
    out: Dict[str, Dict[str, int]] = {}
    for name, (n, dt) in _layer_parts(cfg, int(seq_len), dtype).items():
        n *= cfg.n_layers
        out[name] = {"elements": n, "bytes": n * _size(dt)}
    return out


def state_size(model_cfg: "dict | ModelConfig", seq_len: int,
               dtype: Union[str, torch.dtype] = torch.float32) -> Dict[str, int]:
    """{"elements", "bytes"}: the recurrent state one sequence carries at inference after ``seq_len`` tokens
    (the KV cache at that length for attention, the history for Hyena; fixed for the SSMs), all layers, for a
    model in ``dtype`` (a torch.dtype or "fp32", "bf16", "fp16", "fp64").  SSM states are float32 whatever the
    model dtype (as the models keep them)."""
    parts = state_size_parts(model_cfg, seq_len, dtype).values()
    return {"elements": sum(p["elements"] for p in parts), "bytes": sum(p["bytes"] for p in parts)}
