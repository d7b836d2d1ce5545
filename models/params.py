"""Parameter counts, and the paper's model sizes next to ours (``ssmbench list --params``)."""
from __future__ import annotations

from typing import List, Tuple

from torch import nn


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (tied weights counted once)."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


# (name, model config, vocab, the paper's figure or None, note)
PAPER_CONFIGS = [
    ("induction/mamba", dict(arch="mamba", mixer="s6", n_layers=2, d_model=64), 16, 74_000,
     "Mamba paper Table 11: Mamba, 2 layers, D=64, vocab 16 (~74K)"),
    ("induction/mha-rope", dict(arch="transformer", mixer="attention", n_layers=2, d_model=128, heads=8,
                                pos="rope", mlp_ratio=0), 16, 137_000,
     "Table 11: MHA 2 layers, D=128, 8 heads, attention-only (~137K)"),
    ("induction/mha-abs", dict(arch="transformer", mixer="attention", n_layers=2, d_model=128, heads=8,
                               pos="abs", mlp_ratio=0, max_len=256), 16, 137_000,
     "Table 11: MHA-Abs; position table sized to the training length 256 (+32.8K); "
     "a table sized for 2^14 test lengths adds 2.1M untrained rows"),
    ("induction/h3", dict(arch="h3", mixer="s4", s4_mode="diag", n_layers=2, d_model=128, d_state=16), 16, 153_000,
     "Table 11: H3, 2 layers, D=128 (~153K); inner S4D-Lin, d_state 16 (with the H3 paper's N=64 and "
     "per-channel B, C our H3 has ~200K)"),
    ("induction/hyena", dict(arch="h3", mixer="hyena", n_layers=2, d_model=128), 16, None,
     "Table 11 gives 69M for Hyena ('mostly learnable positional encodings'); not reproduced"),
    ("selective_copying/mamba", dict(arch="mamba", mixer="s6", n_layers=2, d_model=64), 16, None,
     "Table 1: 2 layers, D=64, vocab 16; the paper gives no parameter count"),
    ("selective_copying/s4-nogate", dict(arch="none", mixer="s4", n_layers=2, d_model=64), 16, None,
     "Table 1: S4, no gate"),
    ("selective_copying/h3-s6", dict(arch="h3", mixer="s6", n_layers=2, d_model=64), 16, None,
     "Table 1: H3 with inner S6"),
    # Mamba-2 (MAMBA2_FACTS section 3): per layer d_model (2E + 2GN + H) + E d_model + (E + 2GN)(d_conv + 1)
    # + 3H + E, i.e. mamba2_layer_params(); 24 layers at d_model 768, tied embeddings, vocab 50288
    ("lm/mamba2-130m", dict(arch="mamba2", n_layers=24, d_model=768), 50288, 129_000_000,
     "mamba2-130m: 24 layers, d_model 768, N 128, headdim 64 (facts sheet: 3,764,552 per layer, ~129.0M)"),
    ("lm/mamba2-125m-N64", dict(arch="mamba2", n_layers=24, d_model=768, d_state=64), 50288, 126_500_000,
     "Mamba-2 paper Table 4 (block ablations, ~125M): N 64 (126.5M in the paper; the formula gives ~126.6M)"),
]


def mamba2_layer_params(d_model: int, d_state: int = 128, expand: int = 2, headdim: int = 64, ngroups: int = 1,
                        d_conv: int = 4) -> int:
    """Parameters of one Mamba-2 block by the facts sheet's formula (no pre-norm):
    d_model (2E + 2GN + H) + E d_model + (E + 2GN)(d_conv + 1) + 3H + E."""
    E = expand * d_model
    H, GN = E // headdim, ngroups * d_state
    return d_model * (2 * E + 2 * GN + H) + E * d_model + (E + 2 * GN) * (d_conv + 1) + 3 * H + E


def _mamba2_lm_formula(cfg: dict, vocab: int) -> int:
    """A Mamba-2 LM by the facts sheet: n_layers x mamba2_layer_params + tied embedding + RMSNorm weights (one
    pre-norm per layer and the final one)."""
    from models.config import as_config

    c = as_config(cfg)
    layer = mamba2_layer_params(c.d_model, c.d_state, c.expand, c.headdim, c.ngroups, c.d_conv)
    return c.n_layers * layer + vocab * c.d_model + (c.n_layers + 1) * c.d_model


def _build_counting(cfg: dict, vocab: int) -> int:
    """count_params of the LM, built on the meta device when it can be (no memory, no init time for the
    100M-parameter configs), else on the CPU."""
    import torch

    from models.lm import build_lm

    try:
        with torch.device("meta"):
            return count_params(build_lm(cfg, vocab))
    except (NotImplementedError, RuntimeError):
        return count_params(build_lm(cfg, vocab))


def paper_param_counts() -> List[Tuple[str, int, str]]:
    """(name, our parameter count, note with the paper's figure) for the paper's small configs."""
    rows = []
    for name, cfg, vocab, paper, note in PAPER_CONFIGS:
        n = _build_counting(cfg, vocab)
        if cfg.get("arch") == "mamba2":
            note = f"{note}; formula {_mamba2_lm_formula(cfg, vocab):,}"
        if paper:
            note = f"{note}; ours/paper = {n / paper:.2f}"
        rows.append((name, n, note))
    return rows
