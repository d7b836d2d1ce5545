"""S6 (models/s6.py) against a float64 recurrence written here from the layer's own parameters (independent of
the kernels and of the layer's code), its initialisation against mamba_simple's, and its state contract.

The oracle slices x_proj's output itself (dt_low_rank | B | C), applies dt_proj and softplus, and runs
h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t (complex A: one mode per conjugate pair, y = 2 Re),
so a wrong slice, a sign of A, a wrong B/C/D or the wrong branch of a non-selective parameter all show.  Every
parameter is re-drawn at random first (at init B = 1 and D = 1 would hide B or D mistakes).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig
from models.s6 import S6

# (selective delta, B, C), complex A
VARIANTS = [((True, True, True), False), ((True, True, True), True), ((False, True, False), False),
            ((True, False, True), False), ((False, False, False), True), ((True, False, False), True)]


def _ids(v):
    (delta, b, c), cplx = v
    return "".join(n for n, on in (("dt", delta), ("B", b), ("C", c)) if on) or "none" + ("-complex" if cplx else "")


def make_layer(sel, complex_a, d_model=16, d=12, N=6, dt_rank=3, **kw):
    delta, b, c = sel
    cfg = ModelConfig(mixer="s6", d_model=d_model, d_state=N, dt_rank=dt_rank,
                      a_init="s4d_lin" if complex_a else "s4d_real",
                      selective={"delta": delta, "B": b, "C": c}, **kw)
    return S6(cfg, d)


def randomize_(layer: S6, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if name in ("A_log", "A_re_log"):
                p.copy_(r * 0.5 - 1.0)            # |Re A| in a range where 40 steps decay neither to 0 nor blow up
            elif name in ("dt_bias", "dt_proj.bias"):
                p.copy_(r * 0.5 - 2.0)
            else:
                p.copy_(r * 0.5)


def oracle64(layer: S6, x: torch.Tensor) -> torch.Tensor:
    """y (b, L, d) in float64 from the layer's parameters, step by step."""
    P = {k: v.detach().double() for k, v in layer.named_parameters()}
    x = x.double()
    b, L, d = x.shape
    N, r = layer.N, layer.dt_rank
    proj = x @ P["x_proj.weight"].T if "x_proj.weight" in P else None
    i = 0
    if layer.sel.delta:
        dt = F.softplus(proj[..., :r] @ P["dt_proj.weight"].T + P["dt_proj.bias"])
        i = r
    else:
        dt = F.softplus(P["dt_bias"]).expand(b, L, d)
    if layer.sel.B:
        B = proj[..., i:i + N].unsqueeze(2).expand(b, L, d, N)
        i += N
    else:
        B = P["B"].expand(b, L, d, N)
    C = proj[..., i:i + N].unsqueeze(2).expand(b, L, d, N) if layer.sel.C else P["C"].expand(b, L, d, N)
    if layer.is_complex:
        A = torch.complex(-torch.exp(P["A_re_log"]), P["A_im"])           # (d, N/2)
        B, C = (torch.view_as_complex(t.reshape(b, L, d, N // 2, 2).contiguous()) for t in (B, C))
        h = torch.zeros(b, d, N // 2, dtype=torch.complex128)
    else:
        A = -torch.exp(P["A_log"])                                          # (d, N)
        h = torch.zeros(b, d, N, dtype=torch.float64)
    ys = []
    for t in range(L):
        dtt = dt[:, t].unsqueeze(-1)
        h = torch.exp(dtt * A) * h + dtt * B[:, t] * x[:, t].unsqueeze(-1)
        y = (C[:, t] * h).sum(-1)
        ys.append((2 * y.real if layer.is_complex else y) + P["D"] * x[:, t])
    return torch.stack(ys, 1)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_s6_forward_and_step_match_a_float64_recurrence_of_its_parameters(variant):
    sel, cplx = variant
    seed = torch.seed()
    layer = make_layer(sel, cplx, backend="reference" if not cplx else "auto")
    randomize_(layer, seed)
    x = torch.randn(2, 23, layer.d, generator=torch.Generator().manual_seed(seed + 1))
    ref = oracle64(layer, x)
    with torch.no_grad():
        y = layer(x)
        state, ys = layer.init_state(2), []
        for t in range(x.shape[1]):
            y_t, state = layer.step(x[:, t], state)
            ys.append(y_t)
    for got, what in ((y, "forward"), (torch.stack(ys, 1), "step")):
        err = ((got.double() - ref).abs().max() / ref.abs().max()).item()
        assert err < 2e-5, f"seed={seed} {what}: relative error {err:.2e} against the float64 recurrence"


def test_s6_init_follows_mamba_simple():
    """dt_proj.weight ~ U(-r^-1/2, r^-1/2) with a bias (softplus^-1 of dt in [dt_min, dt_max], floored at
    dt_init_floor); x_proj without bias; non-selective C ~ N(0, 1/N); B = 1; D = 1."""
    torch.manual_seed(0)
    layer = make_layer((True, True, True), False, d_model=64, d=256, N=16, dt_rank=4)
    bound = 4 ** -0.5
    w = layer.dt_proj.weight
    assert -bound <= w.min() < -0.9 * bound and 0.9 * bound < w.max() <= bound
    assert layer.dt_proj.bias is not None and layer.x_proj.bias is None
    dt = F.softplus(layer.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    floored = make_layer((True, True, True), False, d=256, dt_init_floor=0.05, dt_min=0.001, dt_max=0.1)
    assert F.softplus(floored.dt_proj.bias).min() >= 0.05 * 0.999
    fixed = make_layer((False, False, False), False, d_model=64, d=256, N=16)
    assert abs(fixed.C.std().item() - 16 ** -0.5) < 0.15 * 16 ** -0.5
    assert (fixed.B == 1).all() and (fixed.D == 1).all()


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_s6_marks_A_and_D_for_no_weight_decay_as_mamba_simple(cplx):
    layer = make_layer((True, True, True), cplx)
    flagged = {n for n, p in layer.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == ({"A_re_log", "A_im", "D"} if cplx else {"A_log", "D"})


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_s6_state_is_batch_by_channel_by_mode_in_float32_whatever_the_default_dtype(cplx):
    layer = make_layer((True, True, True), cplx)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        state = layer.init_state(3)
    finally:
        torch.set_default_dtype(old)
    assert state.shape == (3, layer.d, layer.N // 2 if cplx else layer.N)
    assert state.dtype == (torch.complex64 if cplx else torch.float32)


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_s6_computes_on_the_device_of_its_parameters(cplx):
    """On the meta device a tensor created without ``device=`` (on the CPU) would meet meta tensors and raise,
    as it would on CUDA."""
    layer = make_layer((True, True, True), cplx).to("meta")
    state = layer.init_state(2)
    assert state.device.type == "meta"
    if not cplx:   # the fused step's CPU path reads values; the complex step is plain torch
        return
    y, state = layer.step(torch.randn(2, layer.d, device="meta"), state)
    assert y.device.type == "meta" and state.device.type == "meta"


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_s6_returns_the_input_dtype(cplx):
    torch.manual_seed(0)
    layer = make_layer((True, True, True), cplx).to(torch.bfloat16)   # a bf16 model: the SSM still in float32
    x = torch.randn(2, 8, layer.d).to(torch.bfloat16)
    with torch.no_grad():
        assert layer(x).dtype == torch.bfloat16
        y, _ = layer.step(x[:, 0], layer.init_state(2))
    assert y.dtype == torch.bfloat16


def test_complex_step_with_an_odd_dt_rank_and_one_token_of_batch_one():
    """B sliced from x_proj's output after an odd dt_rank starts at an odd storage offset (batch 1, one token:
    a contiguous view), which view_as_complex refuses unless copied."""
    torch.manual_seed(0)
    layer = make_layer((True, True, True), True, dt_rank=3)
    x = torch.randn(1, 5, layer.d)
    with torch.no_grad():
        state, ys = layer.init_state(1), []
        for t in range(5):
            y, state = layer.step(x[:, t], state)
            ys.append(y)
        torch.testing.assert_close(torch.stack(ys, 1), layer(x), rtol=1e-5, atol=1e-5)


def test_real_step_updates_the_state_in_place_unless_autograd_records_it():
    """mamba_ssm's contract (a CUDA-graph stepper copies nothing back); while autograd records, a new state."""
    layer = make_layer((True, True, True), False)
    x = torch.randn(2, layer.d)
    state = layer.init_state(2)
    with torch.no_grad():
        _, same = layer.step(x, state)
    assert same is state and state.abs().sum() > 0
    before = state.clone()
    _, new = layer.step(x, state)          # grad mode on, parameters require grad
    assert new is not state and torch.equal(state, before) and new.requires_grad


def test_s6_passes_its_backend_to_the_kernels(monkeypatch):
    import models.s6 as s6

    seen = []

    def spy(fn):
        def wrapped(*a, **k):
            seen.append((fn.__name__, k.get("backend")))
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(s6, "selective_scan", spy(s6.selective_scan))
    monkeypatch.setattr(s6, "selective_state_update", spy(s6.selective_state_update))
    layer = make_layer((True, True, True), False, backend="chunked")
    with torch.no_grad():
        layer(torch.randn(1, 4, layer.d))
        layer.step(torch.randn(1, layer.d), layer.init_state(1))
    assert [b for _, b in seen] == ["chunked", "chunked"] and len(seen) == 2


def test_s6_repr_names_its_selective_parameters():
    assert "selective=delta,B,C" in repr(make_layer((True, True, True), False))
    assert "selective=B" in repr(make_layer((False, True, False), False))
    assert "selective=none" in repr(make_layer((False, False, False), False))
