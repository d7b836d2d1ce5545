"""Hyena's implicit filter: shapes, causality, decay window, step vs forward, and the order-2 H3 form."""
from __future__ import annotations

import torch

from models import ModelConfig, build_block, build_mixer

CFG = dict(mixer="hyena", d_model=8, max_len=32, hyena_filter_dim=16, hyena_emb_dim=5)


def test_filter_shapes_features_and_window():
    f = build_mixer(CFG, 8)
    z = f.features(10)
    assert z.shape == (10, 5) and torch.allclose(z[:, 0], torch.arange(10) / 32.0)
    assert torch.allclose(z[:, 1:3].square() + z[:, 3:5].square(), torch.ones(10, 2), atol=1e-6)  # cos^2+sin^2
    h = f.kernel(20)
    assert h.shape == (8, 20) and torch.isfinite(h).all()
    # the window decays faster for later channels: exp(-rate_c t/T) with rates increasing over c
    rate = f.decay_rate()
    assert torch.all(rate[1:] > rate[:-1]) and torch.all(rate > 0)


def test_hyena_is_causal_and_step_matches_forward():
    torch.manual_seed(0)
    f = build_mixer(CFG, 8)
    x = torch.randn(2, 24, 8)
    y = f(x)
    x2 = x.clone()
    x2[:, 15:] += 1
    assert torch.allclose(f(x2)[:, :15], y[:, :15], atol=1e-5)
    state, ys = f.init_state(2), []
    for t in range(24):
        y_t, state = f.step(x[:, t], state)
        ys.append(y_t)
    assert torch.allclose(torch.stack(ys, 1), y, atol=1e-5)


def test_h3_with_hyena_is_the_order_2_operator():
    """y = out_proj(q * (h * (shift(k) * v) + bias * shift(k) * v)), computed by hand."""
    torch.manual_seed(0)
    block = build_block(ModelConfig(arch="h3", **CFG)).sublayers[0]
    h3 = block.block
    x = torch.randn(2, 12, 8)
    u = block.norm(x)
    q, k, v = h3.qkv(u).chunk(3, -1)
    kv = (h3.shift(k) * v).transpose(1, 2)                                    # (B, d, L)
    h = h3.inner.kernel(12)
    conv = torch.stack([sum(h[:, j] * kv[..., t - j] for j in range(t + 1)) for t in range(12)], -1)
    inner = conv + h3.inner.bias[:, None] * kv
    ref = x + h3.out_proj(q * inner.transpose(1, 2))
    assert torch.allclose(block(x), ref, atol=1e-5)


def test_hyena_gradients_reach_every_parameter():
    f = build_mixer(CFG, 8)
    f(torch.randn(2, 10, 8)).square().sum().backward()
    for name, p in f.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_filter_is_its_mlp_of_the_positional_features_times_the_window_computed_by_hand():
    """h (d, L) against a float64 computation written from the definition (safari's ``HyenaFilter``): features
    z_k = [k/T, cos(2 pi f_j k/T), sin(2 pi f_j k/T)] with f = linspace(1e-4, bands - 1, bands); the MLP
    Linear-Sin-Linear-Sin-Linear(no bias); the window exp(-rate_c k/T) + 0.05 with rate_c linear over the
    channels from log(1/0.01)/1.5 (slow) to log(1/0.01)/0.3 (fast)."""
    import math
    torch.manual_seed(1)
    d, L, T, emb = 6, 40, 32, 7
    f = build_mixer(dict(CFG, max_len=T, hyena_emb_dim=emb), d)
    for p in f.parameters():                       # every weight random, the Sin frequencies too
        p.data = torch.randn_like(p) * 0.7
    bands = (emb - 1) // 2
    k = torch.arange(L, dtype=torch.float64)[:, None] / T
    freqs = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64)
    z = torch.cat([k, torch.cos(2 * math.pi * k * freqs), torch.sin(2 * math.pi * k * freqs)], dim=-1)
    lin1, sin1, lin2, sin2, lin3 = (m for m in f.mlp)
    h = torch.sin(sin1.freq.double() * (z @ lin1.weight.double().T + lin1.bias.double()))
    h = torch.sin(sin2.freq.double() * (h @ lin2.weight.double().T + lin2.bias.double()))
    h = h @ lin3.weight.double().T                                                        # (L, d)
    rate = torch.linspace(math.log(100) / 1.5, math.log(100) / 0.3, d, dtype=torch.float64)
    window = torch.exp(-k * rate) + 0.05
    want = (h * window).T
    got = f.kernel(L)
    assert got.dtype == torch.float32 and got.shape == (d, L)
    assert ((got.double() - want).norm() / want.norm()).item() < 1e-5
