"""Mamba-2: the ``mamba2`` block and the ``ssd`` mixer (models/mamba2.py, models/ssd.py).

Config (official defaults, the mixer fixed to ssd, clear errors), inits (MAMBA2_FACTS section 3), the block
against a hand-written per-token recurrence of the official module, step == forward and prefill + steps ==
forward in float64 for mamba2 and for the ssd mixer in every block (odd lengths, groups > 1), the static
stepper of graphed decoding, gradients through the step, and the parameter counts of the facts sheet.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import models
from harness.kinds.bench.static_step import StaticStepper, capture_problem, leaves
from harness.kinds.bench.testing import greedy_logits, stepper_logits
from models import ModelConfig, build_lm, build_mixer, count_params, mamba2_layer_params
from models.mamba2 import Mamba2Block
from models.ssd import SSD

VOCAB = 13
TINY = dict(n_layers=2, d_model=16, d_state=5, headdim=4, chunk_size=4, backend="reference")
MODELS = {
    "mamba2": dict(arch="mamba2"),
    "mamba2-g2": dict(arch="mamba2", ngroups=2, headdim=8),
    "mamba2-g4-chunked": dict(arch="mamba2", ngroups=4, headdim=2, backend="chunked", chunk_size=3),
    "mamba/ssd": dict(arch="mamba", mixer="ssd", ngroups=2),
    "none/ssd": dict(arch="none", mixer="ssd"),
    "h3/ssd": dict(arch="h3", mixer="ssd", ngroups=2, headdim=2),
    "transformer/ssd": dict(arch="transformer", mixer="ssd", mlp_ratio=2, backend="chunked"),
}


def build(name, seed=0, **kw):
    torch.manual_seed(seed)
    return build_lm({**TINY, **MODELS[name], **kw}, VOCAB).double().eval()


def step_all(lm, tokens, state):
    out = []
    for t in range(tokens.shape[1]):
        logits, state = lm.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1), state


TIGHT = dict(rtol=1e-10, atol=1e-11)


# ---------------------------------------------------------------------------- config
def test_mamba2_defaults_are_the_official_ones_and_others_unchanged():
    cfg = ModelConfig(arch="mamba2")
    assert (cfg.mixer, cfg.d_state, cfg.d_conv, cfg.expand, cfg.headdim, cfg.ngroups, cfg.chunk_size) == \
        ("ssd", 128, 4, 2, 64, 1, 256)
    assert cfg.dt_min == 0.001 and cfg.dt_max == 0.1 and cfg.dt_init_floor == 1e-4 and cfg.norm_eps == 1e-5
    assert not cfg.bias and cfg.conv_bias
    # every other model keeps d_state 16; the ssd mixer too (it stands in for s6 at matched settings)
    assert ModelConfig().d_state == 16 and ModelConfig(mixer="ssd", d_model=64).d_state == 16
    assert ModelConfig(arch="mamba2", d_state=64).d_state == 64
    # a validated config round-trips (the bench re-validates model_dump())
    for c in (cfg, ModelConfig(), ModelConfig(arch="h3", mixer="ssd", d_model=128)):
        assert ModelConfig.model_validate(c.model_dump()) == c
    assert ModelConfig(arch="mamba2", mixer="ssd").mixer == "ssd"


@pytest.mark.parametrize("bad, needle", [
    (dict(arch="mamba2", mixer="s6"), "mixer must be 'ssd' or left out"),
    (dict(arch="mamba2", d_model=48, headdim=64), "headdim (64) must divide the SSD width (expand*d_model = 96)"),
    (dict(arch="none", mixer="ssd", d_model=16), "set model.headdim to a divisor of 16, e.g. 16"),
    (dict(arch="mamba2", d_model=64, headdim=32, ngroups=3), "ngroups (3) must divide the number of heads (4"),
    (dict(arch="mamba2", headdim=0), "greater than 0"),
])
def test_invalid_ssd_configs_fail_with_a_clear_message(bad, needle):
    with pytest.raises(ValidationError) as err:
        ModelConfig(**bad)
    assert needle in str(err.value), str(err.value)


def test_ssd_keys_are_not_checked_for_models_without_ssd():
    ModelConfig(arch="transformer", mixer="attention", d_model=16, heads=2, headdim=64, ngroups=3)


# ---------------------------------------------------------------------------- block layout and inits
def test_mamba2_block_layout_and_inits():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="mamba2", d_model=256, ngroups=2, d_state=32)
    block = Mamba2Block(cfg)
    E, G, N, H = 512, 2, 32, 8
    assert block.in_proj.out_features == 2 * E + 2 * G * N + H and block.in_proj.bias is None
    assert block.out_proj.in_features == E and block.out_proj.bias is None
    assert block.conv.conv.in_channels == E + 2 * G * N and block.conv.conv.bias is not None
    assert block.conv.kernel_size == 4 and block.norm.group_size == E // G and block.norm.eps == 1e-5
    assert torch.equal(block.norm.weight, torch.ones(E))
    A = -torch.exp(block.A_log)
    assert A.shape == (H,) and bool(((A >= -16) & (A <= -1)).all())
    assert torch.equal(block.D, torch.ones(H))
    for p in (block.A_log, block.dt_bias, block.D):
        assert getattr(p, "_no_weight_decay", False) and p.dtype == torch.float32
    assert not getattr(block.in_proj.weight, "_no_weight_decay", False)


def test_dt_and_A_inits_follow_the_official_distributions():
    torch.manual_seed(0)
    block = Mamba2Block(ModelConfig(arch="mamba2", d_model=4096, headdim=2, d_state=1))   # 4096 heads
    dt = F.softplus(block.dt_bias.detach())
    assert dt.min() >= 1e-4 - 1e-9 and dt.min() < 0.0015 and 0.07 < dt.max() <= 0.1 + 1e-6
    assert abs(dt.log().median().item() - math.log(0.01)) < 0.15               # log-uniform in [1e-3, 1e-1]
    A = torch.exp(block.A_log.detach())
    assert abs(A.mean().item() - 8.5) < 0.3 and A.min() >= 1 and A.max() <= 16    # U[1, 16]
    floored = Mamba2Block(ModelConfig(arch="mamba2", d_model=64, headdim=2, dt_min=1e-6, dt_max=1e-5))
    assert torch.allclose(F.softplus(floored.dt_bias), torch.full((64,), 1e-4))   # floored at dt_init_floor


def _official_block_by_hand(block: Mamba2Block, u: torch.Tensor) -> torch.Tensor:
    """The official Mamba2 module's forward, written out per token in float64 from the facts sheet."""
    b, L, _ = u.shape
    E, H, P, G, N = block.d_inner, block.nheads, block.headdim, block.ngroups, block.N
    zxbcdt = u @ block.in_proj.weight.T
    z, x, Bm, Cm, dt = torch.split(zxbcdt, [E, E, G * N, G * N, H], dim=-1)
    xbc = torch.cat([x, Bm, Cm], -1)
    K = block.conv.kernel_size
    w, cb = block.conv.conv.weight[:, 0, :], block.conv.conv.bias          # (E+2GN, K), oldest tap first
    pad = torch.cat([xbc.new_zeros(b, K - 1, xbc.shape[-1]), xbc], 1)
    xbc = F.silu(torch.stack([(pad[:, t: t + K] * w.T).sum(1) + cb for t in range(L)], 1))
    x, Bm, Cm = torch.split(xbc, [E, G * N, G * N], dim=-1)
    A = -torch.exp(block.A_log)
    dt = F.softplus(dt + block.dt_bias)
    h = u.new_zeros(b, H, P, N)
    ys = []
    for t in range(L):
        xt = x[:, t].reshape(b, H, P)
        Bt = Bm[:, t].reshape(b, G, N)[:, torch.arange(H) // (H // G)]      # head h reads group h // (H/G)
        Ct = Cm[:, t].reshape(b, G, N)[:, torch.arange(H) // (H // G)]
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * xt)[..., None] * Bt[:, :, None]
        ys.append((h * Ct[:, :, None]).sum(-1) + block.D[:, None] * xt)
    y = torch.stack(ys, 1).reshape(b, L, E)
    g = (y * F.silu(z)).reshape(b, L, G, E // G)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)
    return (g.reshape(b, L, E) * block.norm.weight) @ block.out_proj.weight.T


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_mamba2_block_matches_the_official_computation_by_hand(ngroups, backend):
    torch.manual_seed(ngroups)
    block = Mamba2Block(ModelConfig(arch="mamba2", d_model=12, d_state=6, headdim=6, ngroups=ngroups,
                                    chunk_size=4, backend=backend)).double()
    with torch.no_grad():
        block.norm.weight.normal_()
        block.D.normal_()
        block.conv.conv.bias.normal_()
    u = torch.randn(2, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(u), _official_block_by_hand(block, u), **TIGHT)


# ---------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("length", [1, 7, 13])
@pytest.mark.parametrize("name", list(MODELS))
def test_step_matches_forward_in_float64(name, length):
    lm = build(name, seed=length)
    tokens = torch.randint(0, VOCAB, (3, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        stepped, state = step_all(lm, tokens, lm.init_state(3))
        torch.testing.assert_close(stepped, lm(tokens), **TIGHT)


@pytest.mark.parametrize("name", list(MODELS))
def test_prefill_then_steps_match_forward_and_stepping(name):
    lm = build(name, seed=3)
    tokens = torch.randint(0, VOCAB, (2, 15), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = lm(tokens)
        for cut in (1, 9):                                   # 9 = two chunks and a bit at chunk_size 4
            logits, state = lm.prefill(tokens[:, :cut], lm.init_state(2))
            torch.testing.assert_close(logits, full[:, cut - 1], **TIGHT)
            _, stepped = step_all(lm, tokens[:, :cut], lm.init_state(2))
            for a, b in zip(leaves(state), leaves(stepped)):
                if isinstance(a, torch.Tensor):
                    assert a.shape == b.shape and a.dtype == b.dtype
                    torch.testing.assert_close(a, b, **TIGHT)
            rest, _ = step_all(lm, tokens[:, cut:], state)
            torch.testing.assert_close(rest, full[:, cut:], **TIGHT)
        # a prompt prefilled in two pieces: the second starts from a state that holds tokens
        _, state = lm.prefill(tokens[:, :6], lm.init_state(2))
        logits, _ = lm.prefill(tokens[:, 6:], state)
        torch.testing.assert_close(logits, full[:, -1], **TIGHT)


def test_decoding_state_layout():
    lm = build_lm({**TINY, "arch": "mamba2", "ngroups": 2}, VOCAB)
    state = lm.init_state(3, "cpu", torch.bfloat16)
    E, GN = 32, 2 * 5
    for layer in state["layers"]:
        (s,) = layer
        assert s["conv"].shape == (3, E + 2 * GN, 4) and s["conv"].dtype == torch.bfloat16
        assert s["ssm"].shape == (3, 8, 4, 5) and s["ssm"].dtype == torch.float32    # (batch, H, headdim, N)
    ssd = build_mixer({**TINY, "mixer": "ssd", "arch": "none"}, 16)
    assert isinstance(ssd, SSD) and ssd.init_state(2).shape == (2, 4, 4, 5)


def test_step_updates_the_ssm_state_in_place_without_autograd():
    lm = build("mamba2")
    state = lm.init_state(2)
    ssm = [layer[0]["ssm"] for layer in state["layers"]]
    with torch.no_grad():
        _, new = lm.step(torch.tensor([1, 2]), state)
    assert all(layer[0]["ssm"] is t for layer, t in zip(new["layers"], ssm))
    assert all(bool(t.abs().sum() > 0) for t in ssm)


@pytest.mark.parametrize("name", ["mamba2", "mamba2-g2", "mamba/ssd"])
def test_static_stepper_decodes_as_plain_stepping(name):
    """The graphed decoder's static-buffer logic (run eagerly on the CPU): same logits through prompt, greedy
    generation and a reset, a prefill loaded into it, and buffers that keep their addresses."""
    lm = build(name, seed=5)
    prompt = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        stepper = StaticStepper(lm, lambda: lm.init_state(2), 2, "cpu", capture=False)
        assert stepper.problem() is None
        buffers = [id(t) for t in leaves(stepper.state) if isinstance(t, torch.Tensor)]
        for _ in range(2):
            plain = greedy_logits(lm, lm.init_state(2), prompt, 5)
            static = stepper_logits(stepper, prompt, 5)
            for a, b in zip(plain, static):
                torch.testing.assert_close(a, b, **TIGHT)
        assert [id(t) for t in leaves(stepper.state) if isinstance(t, torch.Tensor)] == buffers
        logits, state = lm.prefill(prompt, lm.init_state(2))
        stepper.reset()
        stepper.load(state, logits)
        stepper.step()
        torch.testing.assert_close(stepper.logits, plain[prompt.shape[1]], **TIGHT)
        _, after = lm.step(torch.tensor([0, 1]), lm.init_state(2))
        assert capture_problem(lm, lm.init_state(2), after) is None


@pytest.mark.parametrize("name", ["mamba2-g2", "none/ssd"])
def test_gradients_through_the_step_match_the_forward(name):
    """With autograd on, the step is plain PyTorch and returns a new state (the in-place kernel would break
    the backward): the gradients of stepped logits are those of the parallel forward."""
    lm = build(name, seed=9)
    tokens = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(9))
    grads = []
    for stepped in (False, True):
        lm.zero_grad()
        logits = step_all(lm, tokens, lm.init_state(2))[0] if stepped else lm(tokens)
        logits.square().sum().backward()
        grads.append([p.grad.clone() for p in lm.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TIGHT)


def test_chunk_size_changes_rounding_only():
    outs = []
    for chunk in (2, 5, 256):
        lm = build("mamba2-g2", seed=1, backend="chunked", chunk_size=chunk)
        with torch.no_grad():
            outs.append(lm(torch.arange(11).remainder(VOCAB).unsqueeze(0)))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], **TIGHT)


def test_float32_model_keeps_a_float32_state_and_decodes_close():
    torch.manual_seed(0)
    lm = build_lm({**TINY, "arch": "mamba2", "backend": "chunked"}, VOCAB).eval()
    tokens = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        stepped, state = step_all(lm, tokens, lm.init_state(2))
        torch.testing.assert_close(stepped, lm(tokens), rtol=1e-4, atol=1e-5)
    assert all(layer[0]["ssm"].dtype == torch.float32 for layer in state["layers"])


_FUSED_STEP_SCRIPT = """
import torch, models
from models.ssd import SSDHeads
torch.manual_seed(0)
for kw in (dict(arch="mamba2", ngroups=2), dict(arch="none", mixer="ssd")):
    lm = models.build_lm(dict(n_layers=2, d_model=16, d_state=5, headdim=4, chunk_size=4, backend="reference",
                              **kw), 11).eval()
    tokens = torch.randint(0, 11, (2, 6))
    with torch.inference_mode():
        want = lm(tokens)
        for m in lm.modules():
            if isinstance(m, SSDHeads):
                m.backend = "triton"          # the step through the fused kernel, the scan stays the reference
        state, out = lm.init_state(2), []
        for t in range(6):
            logits, state = lm.step(tokens[:, t], state)
            out.append(logits)
    err = (torch.stack(out, 1) - want).abs().max().item()
    assert err < 1e-5, (kw, err)
print("ok")
"""


def test_the_fused_triton_step_in_the_model_under_the_interpreter():
    """The model's step call (official layout, stride-0 A / dt / dt_bias / D) through the fused Triton kernel,
    run by the Triton interpreter in a subprocess (TRITON_INTERPRET must be set before triton is imported)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root, "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, "-c", _FUSED_STEP_SCRIPT], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


# ---------------------------------------------------------------------------- parameter counts
def test_layer_parameter_count_is_the_facts_sheet_formula():
    assert mamba2_layer_params(768) == 3_764_552                     # MAMBA2_FACTS section 3
    with torch.device("meta"):
        for kw in (dict(), dict(d_state=64), dict(ngroups=4, headdim=32, d_conv=3, expand=3)):
            cfg = ModelConfig(arch="mamba2", d_model=768, **kw)
            assert count_params(Mamba2Block(cfg)) == mamba2_layer_params(
                768, cfg.d_state, cfg.expand, cfg.headdim, cfg.ngroups, cfg.d_conv)


@pytest.mark.parametrize("d_state, total", [(128, 129.0e6), (64, 126.6e6)])
def test_24_layer_tied_embedding_totals(d_state, total):
    with torch.device("meta"):
        lm = build_lm(dict(arch="mamba2", n_layers=24, d_model=768, d_state=d_state), 50288)
    n = count_params(lm)
    # layers + tied embedding + a pre-norm per layer and the final norm
    assert n == 24 * mamba2_layer_params(768, d_state) + 50288 * 768 + 25 * 768
    assert abs(n - total) < 0.05e6, n
    rows = {name: (n, note) for name, n, note in models.paper_param_counts()}
    ours, note = rows["lm/mamba2-130m" if d_state == 128 else "lm/mamba2-125m-N64"]
    assert ours == n and f"formula {n:,}" in note


# ---------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mamba2", "mamba2-g2", "mamba/ssd"])
def test_on_cuda_auto_backend_matches_reference_and_decodes(name):
    """float32 on CUDA: backend auto (the Triton SSD and the fused step) against the reference backend."""
    torch.manual_seed(0)
    cfg = {**TINY, **MODELS[name], "d_model": 64, "chunk_size": 16}
    ref = build_lm({**cfg, "backend": "reference"}, VOCAB).cuda().eval()
    fast = build_lm({**cfg, "backend": "auto"}, VOCAB).cuda().eval()
    fast.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, VOCAB, (3, 40), device="cuda")
    with torch.inference_mode():
        want = ref(tokens)
        torch.testing.assert_close(fast(tokens), want, rtol=1e-3, atol=1e-3)
        logits, state = fast.prefill(tokens[:, :30], fast.init_state(3))
        rest, _ = step_all(fast, tokens[:, 30:], state)
        torch.testing.assert_close(rest, want[:, 30:], rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_decoding_matches_the_parallel_forward_like_the_official_test_generation():
    """mamba_ssm tests/test_generation.py (MAMBA2_FACTS section 4): an fp16 model, d_model 1024, 4 layers, gives
    the same logits decoding token by token as in the parallel forward, within rtol 1e-3, atol 1e-2."""
    torch.manual_seed(0)
    lm = build_lm(dict(arch="mamba2", n_layers=4, d_model=1024), 1000).cuda().half().eval()
    tokens = torch.randint(0, 1000, (2, 64), device="cuda")
    with torch.inference_mode():
        want = lm(tokens).float()
        stepped, _ = step_all(lm, tokens, lm.init_state(2))
        torch.testing.assert_close(stepped.float(), want, rtol=1e-3, atol=1e-2)
        logits, state = lm.prefill(tokens[:, :40], lm.init_state(2))
        rest, _ = step_all(lm, tokens[:, 40:], state)
        torch.testing.assert_close(rest.float(), want[:, 40:], rtol=1e-3, atol=1e-2)


def _ssd_mixer(**kw):
    return build_mixer({**TINY, "mixer": "ssd", "arch": "none", **kw}, 16)


def test_ssd_mixer_state_follows_the_asked_or_the_parameters_device_and_dtype():
    """init_state(batch, device, dtype): the asked device/dtype win, else the parameters'; the state is float32
    for any lower precision and float64 for a float64 model (the meta device shows a CPU tensor made by mistake)."""
    ssd = _ssd_mixer()
    assert ssd.init_state(2, device="meta").device.type == "meta"
    assert ssd.init_state(2, dtype=torch.float64).dtype == torch.float64
    assert ssd.init_state(2, dtype=torch.bfloat16).dtype == torch.float32
    assert ssd.double().init_state(2).dtype == torch.float64
    assert _ssd_mixer().to("meta").init_state(2).device.type == "meta"


def test_ssd_mixer_passes_its_chunk_size_and_backend_to_the_kernels(monkeypatch):
    import models.ssd as ssd_mod

    seen = []
    real = ssd_mod._kernels()

    def spy(name, fn):
        def wrapped(*a, **k):
            seen.append((name, k.get("chunk_size"), k.get("backend")))
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(ssd_mod, "_kernels", lambda: tuple(spy(n, f) if callable(f) else f
                                                          for n, f in zip(("ssd", "update", "ref"), real)))
    layer = _ssd_mixer(chunk_size=3, backend="chunked")
    with torch.no_grad():
        layer(torch.randn(1, 7, 16))
        layer.step(torch.randn(1, 16), layer.init_state(1))
    assert ("ssd", 3, "chunked") in seen and ("update", None, "chunked") in seen, seen


def test_ssd_mixer_parameters_stay_float32_in_its_arithmetic_and_x_proj_has_no_bias():
    layer = _ssd_mixer().to(torch.bfloat16)
    assert layer._A().dtype == torch.float32 and layer.x_proj.bias is None
    assert "d=16," in repr(layer)


@pytest.mark.parametrize("kw, needle", [(dict(headdim=5), "headdim (5) must divide the mixer width (16)"),
                                        (dict(ngroups=3), "ngroups (3) must divide the number of heads (4)")])
def test_ssd_mixer_refuses_a_width_its_heads_do_not_divide(kw, needle):
    cfg = ModelConfig.model_construct(**{**ModelConfig(**{**TINY, "mixer": "ssd", "arch": "none"}).model_dump(), **kw})
    with pytest.raises(ValueError, match=re.escape(needle)):
        SSD(cfg, 16)
