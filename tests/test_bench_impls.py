"""Every benchmark target builds and runs on CPU, computes the right function, and declares sane costs."""
import math

import pytest
import torch
import torch.nn.functional as F

from harness.kinds.bench import IMPLS
from harness.kinds.bench.config import MemoryConfig, SpeedConfig
from harness.kinds.bench.costs import attention_costs, scan_costs
from harness.kinds.bench.ops import scan_inputs
from harness.cells import CellSkipped
from harness.kinds.bench.testing import TINY_MODEL, TINY_OP

OP_IMPLS = ["s6.reference", "s6.chunked", "s4.fft", "attention.sdpa", "attention.naive"]


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def cfg_for(impl, **kw):
    return SpeedConfig.model_validate({**TINY_OP, "impl": impl, **kw})


@pytest.mark.parametrize("impl", OP_IMPLS)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_op_impl_runs_and_declares_costs(impl, pass_):
    cfg = cfg_for(impl, **{"pass": pass_})
    work = IMPLS.get(impl).workload(cfg, "cpu")
    out = work.fn()
    assert work.tokens == cfg.batch * cfg.seq_len
    assert work.bytes is not None and work.bytes > 0
    if pass_ == "fwd":
        assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()
        assert out.shape[-1] in (cfg.seq_len, cfg.attn_head_dim)
    else:
        grads = out
        assert len(grads) >= 2 and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_backward_reaches_every_scan_input():
    cfg = cfg_for("s6.chunked", **{"pass": "fwd+bwd"})
    grads = IMPLS.get("s6.chunked").workload(cfg, "cpu").fn()
    assert len(grads) == 7   # u, delta, A, B, C, D, delta_bias


def test_scan_backends_agree_on_the_benchmark_inputs():
    from kernels import selective_scan
    cfg = cfg_for("s6.chunked", seq_len=40)
    u, delta, A, B, C, D, bias = scan_inputs(cfg, "cpu", requires_grad=False)
    args = dict(D=D, delta_bias=bias, delta_softplus=True)
    ref = selective_scan(*(t.double() for t in (u, delta, A, B, C)), **{k: v.double() if torch.is_tensor(v) else v
                                                                      for k, v in args.items()}, backend="reference")
    got = selective_scan(u, delta, A, B, C, **args, backend="chunked")
    assert rel_err(got, ref) < 1e-4


def test_scan_inputs_follow_mamba_init():
    cfg = cfg_for("s6.reference", d_model=64)
    u, delta, A, B, C, D, bias = scan_inputs(cfg, "cpu", requires_grad=False)
    dt = F.softplus(bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert (A < 0).all() and A.dtype == torch.float32 and A.shape == (cfg.width, cfg.d_state)
    assert u.shape == delta.shape == (cfg.batch, cfg.width, cfg.seq_len) and B.shape == (cfg.batch, cfg.d_state, cfg.seq_len)
    assert u.std() > 0.5  # random, never zeros


def test_fft_conv_op_matches_direct_causal_convolution_in_float64():
    from models.s4 import fft_conv
    torch.manual_seed(1)
    for L in (1, 7, 64):
        u, k = torch.randn(2, 3, L), torch.randn(3, L)
        direct = torch.zeros(2, 3, L, dtype=torch.float64)
        for t in range(L):
            direct[..., t] = (u.double()[..., : t + 1] * k.double()[:, : t + 1].flip(-1)).sum(-1)
        assert rel_err(fft_conv(u, k), direct) < 1e-5


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_attention_ops_are_causal_attention(backend):
    from models.attention import causal_attention
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 3, 17, 8) for _ in range(3))
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(8)
    s = s.masked_fill(torch.ones(17, 17, dtype=torch.bool).triu(1), float("-inf"))
    ref = s.softmax(-1) @ v.double()
    assert rel_err(causal_attention(q, k, v, backend), ref) < 1e-5


def test_triton_scan_is_skipped_without_cuda():
    cfg = cfg_for("s6.triton")
    with pytest.raises(CellSkipped, match="needs a CUDA device"):
        IMPLS.get("s6.triton").workload(cfg, "cpu")


def test_scan_costs_match_design_floors():
    # DESIGN.md: batch 4, dim 2048, N 16, L 4096, bf16: memory floor 0.067 ms at 3.02 TB/s, 537 M exps
    nbytes, exps = scan_costs(4, 2048, 4096, 16, torch.bfloat16, "fwd")
    assert nbytes / 3.02e12 * 1e3 == pytest.approx(0.067, abs=0.001)
    assert exps == 4 * 2048 * 4096 * 16
    nbytes2, exps2 = scan_costs(4, 2048, 4096, 16, torch.bfloat16, "fwd+bwd")
    assert nbytes2 > 2 * nbytes and exps2 == 2 * exps


def test_attention_costs_flash_convention():
    nbytes, flops = attention_costs(4, 16, 1024, 64, torch.bfloat16, "fwd")
    assert flops == 4 * 4 * 16 * 1024 ** 2 * 64 / 2
    assert nbytes == 4 * (4 * 16 * 1024 * 64) * 2
    _, flops_fb = attention_costs(4, 16, 1024, 64, torch.bfloat16, "fwd+bwd")
    assert flops_fb == pytest.approx(3.5 * flops)


@pytest.mark.parametrize("impl", ["layer", "model"])
@pytest.mark.parametrize("arch,mixer", [("mamba", "s6"), ("transformer", "attention")])
def test_model_level_impls_run_every_pass(impl, arch, mixer):
    model = {**TINY_MODEL, "arch": arch, "mixer": mixer}
    for pass_ in ("fwd", "fwd+bwd"):
        cfg = SpeedConfig.model_validate({**TINY_OP, "impl": impl, "model": model, "vocab": 32, "pass": pass_})
        work = IMPLS.get(impl).workload(cfg, "cpu")
        work.fn()
        assert work.info["n_params"] > 0 and work.flops == pytest.approx(
            (2 if pass_ == "fwd" else 6) * work.info["n_params"] * work.tokens)
    cfg = MemoryConfig.model_validate({**TINY_OP, "impl": impl, "model": model, "vocab": 32, "pass": "train_step"})
    work = IMPLS.get(impl).workload(cfg, "cpu")
    loss1 = float(work.fn())
    loss2 = float(work.fn())
    assert math.isfinite(loss1) and math.isfinite(loss2) and loss1 != loss2   # the optimizer stepped
