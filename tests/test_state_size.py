"""models.state_size against the real decoding state: after a prefill of seq_len tokens, the elements and bytes
that one more sequence in the batch adds (batch 2 minus batch 1: what is shared by the batch, like S4's
discretised matrices, and the step counters drop out), for every arch x mixer."""
from __future__ import annotations

import itertools

import pytest
import torch

from harness.kinds.bench.static_step import leaves
from models import ARCHS, MIXERS, ModelConfig, build_lm, state_size, state_size_parts

VOCAB = 11
BASE = dict(n_layers=2, d_model=16, d_state=6, heads=2, headdim=4, chunk_size=4, hyena_filter_dim=8,
            backend="reference", max_len=64)


def combos():
    for arch, mixer in itertools.product(ARCHS.names(), MIXERS.names()):
        if (arch == "h3" and mixer == "attention") or (arch == "mamba2" and mixer != "ssd"):
            continue
        yield dict(arch=arch, mixer=mixer)
    yield dict(arch="mamba", mixer="s6", a_init="s4d_lin", backend="auto")    # complex S6
    yield dict(arch="none", mixer="s4", s4_mode="dplr")
    yield dict(arch="none", mixer="s4", a_init="s4d_real")                     # real S4D: N modes
    yield dict(arch="mamba2", ngroups=2, d_state=3, d_conv=3, expand=3)
    yield dict(arch="mamba", mixer="ssd", ngroups=4)


COMBOS = list(combos())
IDS = ["-".join(str(v) for v in c.values()) for c in COMBOS]


def measured(lm, seq_len, dtype):
    """(elements, bytes) per sequence of the state after prefilling seq_len tokens."""
    sizes = []
    for batch in (1, 2):
        state = lm.init_state(batch, "cpu", dtype, capacity=seq_len, static=True)   # KV caches of seq_len slots
        tokens = torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            _, state = lm.prefill(tokens, state)
        tensors = [t for t in leaves(state) if isinstance(t, torch.Tensor)]
        sizes.append((sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)))
    return sizes[1][0] - sizes[0][0], sizes[1][1] - sizes[0][1]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_state_size_is_the_size_of_the_real_state(combo, dtype):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**BASE, **combo})
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    lm = build_lm(cfg, VOCAB).to(torch_dtype).eval()
    for seq_len in (5, 9):
        elements, nbytes = measured(lm, seq_len, torch_dtype)
        assert state_size(cfg, seq_len, dtype) == {"elements": elements, "bytes": nbytes}
        assert state_size(cfg.model_dump(), seq_len, torch_dtype) == {"elements": elements, "bytes": nbytes}


def test_known_values():
    # Mamba-2 130m: per layer conv (1536 + 256) x 4 in bf16 and 24 heads x 64 x 128 float32
    s = state_size({"arch": "mamba2", "n_layers": 24, "d_model": 768}, 2048, "bf16")
    assert s == {"elements": 24 * (1792 * 4 + 1536 * 128), "bytes": 24 * (1792 * 4 * 2 + 1536 * 128 * 4)}
    # Mamba (S6, N 16): conv d_inner x 4 + d_inner x 16, whatever the length
    m = {"arch": "mamba", "mixer": "s6", "n_layers": 24, "d_model": 768}
    assert state_size(m, 1, "fp32") == state_size(m, 100_000, "fp32") == \
        {"elements": 24 * 1536 * 20, "bytes": 24 * 1536 * 20 * 4}
    # attention: the KV cache grows with the length
    t = {"arch": "transformer", "mixer": "attention", "n_layers": 2, "d_model": 64}
    assert state_size(t, 1000, "bf16") == {"elements": 2 * 2 * 64 * 1000, "bytes": 2 * 2 * 64 * 1000 * 2}
    parts = state_size_parts({"arch": "mamba2", "d_model": 64, "n_layers": 1}, 10, torch.float32)
    assert set(parts) == {"conv", "ssd"} and parts["ssd"]["elements"] == 128 * 128


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown dtype 'f32'"):
        state_size({}, 10, "f32")
    with pytest.raises(ValueError, match="seq_len must be >= 0"):
        state_size({}, -1)
