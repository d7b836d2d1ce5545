"""The SSD benchmark targets (ssd.reference | ssd.chunked | ssd.triton): they build the cell's shapes, compute
the SSD scan of their inputs (against a float64 recurrence written here), reach every input in the backward,
declare the roofline costs of kernels.roofline (flops equal to what the chunked algorithm runs, counted by
torch's FlopCounterMode), and the Triton one is skipped without CUDA.  Fresh seeds are printed on failure."""
import math
import secrets

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from harness.cells import CellSkipped
from harness.kinds.bench import IMPLS
from harness.kinds.bench.config import SpeedConfig
from harness.kinds.bench.ops import ssd_inputs
from kernels import roofline

TINY_SSD = dict(seq_len=21, batch=2, d_model=12, expand=2, d_state=5, ssd_headdim=6, ngroups=2, chunk_size=8,
                dtype="fp32", warmup=0, repeats=1, device="cpu")


def cfg_for(impl, **kw):
    return SpeedConfig.model_validate({**TINY_SSD, "impl": impl, **kw})


def ssd_recurrence64(x, dt, A, B, C, D, dt_bias):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t per head, float64, dt = softplus(dt + bias)."""
    x, dt, A, B, C, D, dt_bias = (t.detach().double() for t in (x, dt, A, B, C, D, dt_bias))
    b, L, H, P = x.shape
    G = B.shape[2]
    dt = F.softplus(dt + dt_bias)
    h = torch.zeros(b, H, P, B.shape[-1], dtype=torch.float64)
    ys = []
    for t in range(L):
        Bt, Ct = (M[:, t].repeat_interleave(H // G, dim=1) for M in (B, C))      # (b, H, N)
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bt[:, :, None]
        ys.append((h * Ct[:, :, None]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, 1)


@pytest.mark.parametrize("impl", ["ssd.reference", "ssd.chunked"])
def test_ssd_impl_computes_the_scan_of_its_inputs(impl):
    seed = secrets.randbelow(2 ** 31)
    cfg = cfg_for(impl, seed=seed)
    y = IMPLS.get(impl).workload(cfg, "cpu").fn()
    x, dt, A, B, C, D, bias = ssd_inputs(cfg, "cpu", requires_grad=False)
    assert x.shape == (2, 21, 4, 6) and B.shape == C.shape == (2, 21, 2, 5) and dt.shape == (2, 21, 4)
    ref = ssd_recurrence64(x, dt, A, B, C, D, bias)
    err = ((y.double() - ref).norm() / ref.norm()).item()
    assert err < 1e-5, f"seed {seed}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", ["ssd.reference", "ssd.chunked"])
def test_ssd_backward_reaches_every_input(impl):
    grads = IMPLS.get(impl).workload(cfg_for(impl, **{"pass": "fwd+bwd"}), "cpu").fn()
    assert len(grads) == 7 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_ssd_inputs_follow_mamba2_init():
    cfg = cfg_for("ssd.chunked", d_model=64, ssd_headdim=4, ngroups=1)
    x, dt, A, B, C, D, bias = ssd_inputs(cfg, "cpu", requires_grad=False)
    assert ((A <= -1) & (A >= -16)).all() and A.shape == (32,) and (D == 1).all()
    assert F.softplus(bias).min() >= 1e-3 * 0.999 and F.softplus(bias).max() <= 0.1 * 1.001
    assert x.std() > 0.5   # random, never zeros


@pytest.mark.parametrize("seq_len,chunk,groups", [(64, 16, 1), (64, 16, 2), (50, 16, 1), (5, 16, 1)])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_ssd_flops_are_the_chunked_algorithms(seq_len, chunk, groups, pass_):
    cfg = cfg_for("ssd.chunked", seq_len=seq_len, chunk_size=chunk, ngroups=groups, d_model=16, ssd_headdim=8,
                  d_state=8, **{"pass": pass_})
    work = IMPLS.get("ssd.chunked").workload(cfg, "cpu")
    with FlopCounterMode(display=False) as counter:
        work.fn()
    if seq_len <= chunk and pass_ != "fwd":
        # one chunk: autograd skips the gradient matmuls of the (zero) carried-in state, which the count keeps
        assert counter.get_total_flops() < work.flops
        return
    assert work.flops == counter.get_total_flops()


def test_ssd_costs_formulas():
    # MAMBA2_FACTS.md section 2: fwd flops 2 b T [H (Q P + 2 N P) + G Q N]; here b 1, T 4096, H 32, P 64, N 64, Q 256
    assert roofline.ssd_flops(1, 4096, 32, 64, 64, 1, 256) == 2 * 4096 * (32 * (256 * 64 + 2 * 64 * 64) + 256 * 64)
    assert roofline.ssd_flops(1, 4096, 32, 64, 64, 1, 256, pass_="fwd+bwd") == 3 * roofline.ssd_flops(
        1, 4096, 32, 64, 64, 1, 256)
    # bytes: x read, y written (bf16), dt, B, C read, 3 fp32 per-head parameters
    assert roofline.ssd_bytes(1, 4096, 32, 64, 64) == 2 * 4096 * 32 * 64 * 2 + 4096 * 32 * 2 + 2 * 4096 * 64 * 2 + 3 * 32 * 4
    assert roofline.ssd_exps(2, 100, 8, pass_="fwd+bwd") == 2 * 2 * 100 * 8
    work = IMPLS.get("ssd.chunked").workload(cfg_for("ssd.chunked"), "cpu")
    assert work.bytes == roofline.ssd_bytes(2, 21, 4, 6, 5, 2, "fp32") and work.exps == 2 * 21 * 4


def test_ssd_triton_is_skipped_without_cuda():
    with pytest.raises(CellSkipped, match="needs a CUDA device"):
        IMPLS.get("ssd.triton").workload(cfg_for("ssd.triton"), "cpu")


@pytest.mark.parametrize("bad,match", [(dict(ssd_headdim=7), "ssd_headdim=7 does not divide the SSD width 24"),
                                       (dict(ngroups=3), "ngroups=3 does not divide the 4 SSD heads")])
def test_ssd_shapes_that_cannot_work_fail_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        cfg_for("ssd.chunked", **bad)


def test_speed_and_memory_cells_of_ssd_give_roofline_rows():
    from harness.kinds import memory, speed
    from harness.kinds.bench.testing import by_metric, cell, ctx
    rows = by_metric(speed.run_cell(cell("speed", impl="ssd.chunked", **{**TINY_SSD, "repeats": 2}), ctx()))
    assert len(rows["time_ms"]) == 2 and rows["tokens_per_s"][0]["value"] > 0
    rows = by_metric(memory.run_cell(cell("memory", impl="ssd.chunked", **{**TINY_SSD, "pass": "fwd+bwd"}), ctx()))
    assert rows["saved_activation_bytes"][0]["value"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-4), ("bf16", 1e-2)])
def test_ssd_triton_target_equals_the_chunked_one_on_cuda(dtype, tol):
    import importlib.util
    if importlib.util.find_spec("kernels.ssd.triton_backend") is None:
        pytest.skip("the Triton SSD (branch h-ssd-triton) is not in this checkout")
    seed = secrets.randbelow(2 ** 31)
    shape = dict(seq_len=1000, batch=2, d_model=256, d_state=64, ssd_headdim=64, ngroups=2, chunk_size=256,
                 dtype=dtype, device="cuda", seed=seed)
    out = {impl: IMPLS.get(impl).workload(cfg_for(impl, **shape), "cuda").fn().double() for impl in
           ("ssd.triton", "ssd.chunked")}
    err = ((out["ssd.triton"] - out["ssd.chunked"]).norm() / out["ssd.chunked"].norm()).item()
    assert err < tol, f"seed {seed}: relative error {err:.2e}"


_INTERPRETED = """
import torch
from harness.kinds.bench.config import SpeedConfig
from harness.kinds.bench.ops import SSD_CHUNKED, SSD_TRITON
for p in ("fwd", "fwd+bwd"):
    cfg = SpeedConfig.model_validate(dict(impl="ssd.chunked", seq_len=40, batch=1, d_model=8, expand=2, d_state=8,
                                          ssd_headdim=8, ngroups=2, chunk_size=16, dtype="fp32", device="cpu",
                                          **{"pass": p}))
    torch.manual_seed(0); a = SSD_TRITON.build(cfg, "cpu").fn()   # build: past the needs-CUDA check
    torch.manual_seed(0); b = SSD_CHUNKED.build(cfg, "cpu").fn()
    a, b = ([a], [b]) if p == "fwd" else (a, b)
    err = max(((x - y).norm() / y.norm()).item() for x, y in zip(a, b))
    assert len(a) == (1 if p == "fwd" else 7) and err < 1e-5, (p, err)
print("ok")
"""


def test_ssd_triton_target_under_the_interpreter_equals_the_chunked_one():
    """The ssd.triton target's call (inputs, dt_softplus, dt_bias, D; the same dy) through the Triton kernels
    under TRITON_INTERPRET=1, values and every gradient, against ssd.chunked (a subprocess: the flag is read
    when triton is imported)."""
    import importlib.util
    import os
    import subprocess
    import sys
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed here (an optional package on non-Linux hosts)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
