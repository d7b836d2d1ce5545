"""S4 kernels against the SSM they stand for (float64), and the layer's forward against its recurrence."""
from __future__ import annotations

import pytest
import torch

from models import ModelConfig
from models.hippo import legs_nplr
from models.s4 import S4, diag_kernel, dplr_kernel, fft_conv, vandermonde_block


def test_fft_conv_matches_direct_causal_convolution():
    torch.manual_seed(0)
    u, k = torch.randn(2, 3, 20, dtype=torch.float64), torch.randn(3, 20, dtype=torch.float64)
    ref = torch.zeros_like(u)
    for t in range(20):
        for j in range(t + 1):
            ref[..., t] += k[:, j] * u[..., t - j]
    assert torch.allclose(fft_conv(u, k), ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(fft_conv(u, k[:, :5]), fft_conv(u, torch.cat([k[:, :5], torch.zeros(3, 15, dtype=k.dtype)], 1)))
    assert fft_conv(u.float(), k.float()).dtype == torch.float32


def _direct_conv64(u, k):
    """y_t = sum_{j<=t} k_j u_{t-j} as a float64 loop (k longer than L: its tail never reaches y)."""
    u, k = u.double(), k.double()
    ref = torch.zeros_like(u)
    for t in range(u.shape[-1]):
        for j in range(t + 1):
            ref[..., t] += k[:, j] * u[..., t - j]
    return ref


def test_fft_conv_drops_the_tail_of_a_kernel_longer_than_the_sequence():
    """A kernel longer than L (S4's kernel is cut at L; a caller's may not be): its taps past L must not wrap
    around the length-2L FFT into y."""
    seed = torch.seed()
    u, k = torch.randn(2, 3, 12, dtype=torch.float64), torch.randn(3, 31, dtype=torch.float64)
    torch.testing.assert_close(fft_conv(u, k), _direct_conv64(u, k), rtol=1e-10, atol=1e-10,
                               msg=lambda m: f"seed={seed}: {m}")


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_fft_conv_of_low_precision_inputs_computes_in_float32_and_returns_the_input_dtype(low):
    """bf16 / fp16 u (and k): the FFT runs in float32, so the only error is the final rounding of y."""
    seed = torch.seed()
    u, k = torch.randn(2, 3, 40).to(low), (torch.randn(3, 40) / 8).to(low)
    y = fft_conv(u, k)
    assert y.dtype == low
    ref = _direct_conv64(u, k)
    rel = ((y.double() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 8e-3, f"seed={seed}: relative error {rel:.2e}"   # one rounding to bf16 is <= 2^-8 = 3.9e-3


def test_vandermonde_block_is_the_power_of_two_at_or_above_sqrt_L():
    """diag_kernel's block size (memory O(sqrt L) per mode; the value is tested for any block above)."""
    table = {1: 1, 2: 2, 3: 2, 4: 2, 5: 4, 16: 4, 17: 8, 1000: 32, 1024: 32, 1025: 64, 1 << 20: 1024}
    assert {L: vandermonde_block(L) for L in table} == table


S4_VARIANTS = [("diag", "s4d_lin"), ("diag", "s4d_real"), ("dplr", "legs")]


@pytest.mark.parametrize("mode, a_init", S4_VARIANTS)
def test_s4_parameters_are_float32_per_channel_with_complex_modes_where_the_init_is_complex(mode, a_init):
    """Every channel owns its SSM (no parameter shared by broadcasting), every parameter is float32 (complex
    ones as (..., 2) real views), and S4D's C ~ N(0, 1) complex has both parts random."""
    d, N = 6, 8
    layer = S4(ModelConfig(mixer="s4", s4_mode=mode, a_init=a_init, d_state=N), d)
    M = N // 2 if layer.conj_pairs else N
    cplx = (2,) if layer.conj_pairs else ()
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    want = {"log_dt": (d,), "A_re_log": (d, M), "B": (d, M, *cplx), "C": (d, M, *cplx), "D": (d,)}
    if layer.conj_pairs:
        want["A_im"] = (d, M)
    if mode == "dplr":
        want["P"] = (d, M, 2)
    assert shapes == want
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    if layer.conj_pairs:
        C = torch.view_as_complex(layer.C.detach())
        assert C.real.std() > 0.3 and C.imag.std() > 0.3 and C.real.sub(C.real[0]).abs().sum() > 0


@pytest.mark.parametrize("mode, a_init", S4_VARIANTS)
def test_s4_marks_exactly_its_ssm_parameters_for_no_weight_decay(mode, a_init):
    """A (both parts), B, P, dt and D go to the optimizer's SSM group (no decay, train.ssm_lr); C is decayed as
    in state-spaces/s4."""
    layer = S4(ModelConfig(mixer="s4", s4_mode=mode, a_init=a_init, d_state=8), 4)
    flagged = {name for name, p in layer.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == {name for name, _ in layer.named_parameters()} - {"C"}


@pytest.mark.parametrize("mode, a_init", S4_VARIANTS)
def test_s4_computes_on_the_device_of_its_parameters(mode, a_init):
    """On the meta device (no data, but device checks) forward, init_state and step create nothing on the
    CPU: a tensor made without ``device=`` would be mixed with meta tensors and raise, as it would on CUDA."""
    layer = S4(ModelConfig(mixer="s4", s4_mode=mode, a_init=a_init, d_state=8), 6).to("meta")
    x = torch.randn(2, 16, 6, device="meta")
    assert layer(x).device.type == "meta"
    state = layer.init_state(2)
    y, state = layer.step(x[:, 0], state)
    assert y.device.type == "meta" and all(v.device.type == "meta" for v in state.values())
    assert layer.kernel(40).device.type == "meta"


@pytest.mark.parametrize("mode, a_init", S4_VARIANTS)
def test_s4_forward_and_step_return_the_input_dtype(mode, a_init):
    """bf16 activations in, bf16 out (the SSM itself computes in float32) for both the convolution and the
    recurrence, which agree to bf16 rounding."""
    torch.manual_seed(0)
    layer = S4(ModelConfig(mixer="s4", s4_mode=mode, a_init=a_init, d_state=8), 6)
    x = torch.randn(2, 24, 6).to(torch.bfloat16)
    y = layer(x)
    state, ys = layer.init_state(2), []
    for t in range(24):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    assert y.dtype == torch.bfloat16 and ys[0].dtype == torch.bfloat16
    ref = layer(x.float())
    rel = ((torch.stack(ys, 1).float() - ref).abs().max() / ref.abs().max()).item()
    assert ((y.float() - ref).abs().max() / ref.abs().max()).item() < 1e-2 and rel < 1e-2


@pytest.mark.parametrize("N, L", [(8, 16), (16, 33), (4, 1)])
def test_dplr_kernel_matches_direct_powers_of_the_discretised_matrix(N, L):
    """K_l = 2 Re(C A_bar^l B_bar), A_bar bilinear from A = Lambda - P P^*, computed densely in float64."""
    torch.manual_seed(0)
    H = 3
    nplr = legs_nplr(N)
    Lam = nplr.Lambda.expand(H, -1).clone()
    P = nplr.P.expand(H, -1).clone()
    B = nplr.B.expand(H, -1) * (1 + 0.1 * torch.randn(H, N // 2, dtype=torch.complex128))
    C = torch.randn(H, N // 2, dtype=torch.complex128)
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(-6.9, -2.3))
    K = dplr_kernel(Lam, P, B, C, dt, L)
    ref = torch.zeros(H, L, dtype=torch.float64)
    I = torch.eye(N // 2, dtype=torch.complex128)
    for h in range(H):
        A = torch.diag(Lam[h]) - P[h][:, None] * P[h].conj()[None, :]
        inv = torch.linalg.inv(I - dt[h] / 2 * A)
        dA, dB = inv @ (I + dt[h] / 2 * A), inv @ (dt[h] * B[h])
        x = dB
        for l in range(L):
            ref[h, l] = 2 * (C[h] @ x).real
            x = dA @ x
    rel = (K - ref).abs().max() / ref.abs().max()
    print(f"relative error {rel:.2e}")
    assert rel < 1e-9, f"relative error {rel:.2e}"


@pytest.mark.parametrize("complex_modes", [True, False])
def test_s4d_kernel_matches_the_direct_recurrence(complex_modes):
    """ZOH B_bar from the matrix exponential of [[dt A, dt B], [0, 0]] (independent of the closed form)."""
    torch.manual_seed(0)
    H, M, L = 2, 5, 24
    dtype = torch.complex128
    A = torch.complex(-torch.rand(H, M, dtype=torch.float64) - 0.1,
                      torch.randn(H, M, dtype=torch.float64) * 3 if complex_modes else torch.zeros(H, M, dtype=torch.float64))
    B, C = torch.randn(H, M, dtype=dtype), torch.randn(H, M, dtype=dtype)
    if not complex_modes:
        B, C = B.real.to(dtype), C.real.to(dtype)
    dt = torch.rand(H, dtype=torch.float64) * 0.5 + 0.01
    dtA = dt[:, None] * A
    K = diag_kernel(dtA, C * B * torch.expm1(dtA) / A, L, conj_pairs=complex_modes)
    ref = torch.zeros(H, L, dtype=torch.float64)
    for h in range(H):
        for m in range(M):
            aug = torch.zeros(2, 2, dtype=dtype)
            aug[0, 0], aug[0, 1] = dtA[h, m], dt[h] * B[h, m]
            E = torch.linalg.matrix_exp(aug)
            x = E[0, 1]                                  # B_bar (response to a unit impulse)
            for l in range(L):
                ref[h, l] += (2 if complex_modes else 1) * (C[h, m] * x).real.item()
                x = E[0, 0] * x
    rel = (K - ref).abs().max() / ref.abs().max()
    print(f"relative error {rel:.2e}")
    assert rel < 1e-9, f"relative error {rel:.2e}"


@pytest.mark.parametrize("mode, a_init", [("diag", "s4d_lin"), ("diag", "s4d_inv"), ("diag", "legs"),
                                          ("diag", "s4d_real"), ("diag", "real_half"), ("diag", "random"),
                                          ("dplr", "legs")])
def test_s4_forward_matches_step(mode, a_init):
    torch.manual_seed(0)
    layer = S4(ModelConfig(mixer="s4", s4_mode=mode, a_init=a_init, d_state=8), 6)
    x = torch.randn(2, 40, 6)
    y = layer(x)
    state, ys = layer.init_state(2), []
    for t in range(40):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    err = (torch.stack(ys, 1) - y).abs().max() / y.abs().max()
    assert err < 1e-5, f"relative error {err:.2e}"


@pytest.mark.parametrize("mode", ["diag", "dplr"])
def test_s4_gradients_reach_every_parameter(mode):
    layer = S4(ModelConfig(mixer="s4", s4_mode=mode, d_state=8), 4)
    layer(torch.randn(2, 16, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_s4_dt_is_log_uniform_in_the_configured_range():
    torch.manual_seed(0)
    dt = S4(ModelConfig(mixer="s4"), 2000).log_dt.exp()
    assert dt.min() >= 0.001 - 1e-7 and dt.max() <= 0.1 + 1e-7


def test_dplr_needs_legs():
    with pytest.raises(ValueError, match="s4_mode: diag"):
        S4(ModelConfig.model_construct(**{**ModelConfig().model_dump(), "mixer": "s4", "s4_mode": "dplr",
                                          "a_init": "s4d_lin"}), 4)


@pytest.mark.parametrize("L", [1, 2, 7, 100, 1025])
def test_blocked_vandermonde_matches_the_plain_product(L):
    torch.manual_seed(0)
    dtA = torch.complex(-torch.rand(3, 4, dtype=torch.float64) * 0.05, torch.randn(3, 4, dtype=torch.float64))
    C = torch.randn(3, 4, dtype=torch.complex128)
    plain = (C.unsqueeze(-1) * torch.exp(dtA.unsqueeze(-1) * torch.arange(L, dtype=torch.float64))).sum(1).real
    assert torch.allclose(diag_kernel(dtA, C, L, conj_pairs=False), plain, rtol=1e-12, atol=1e-12)


def test_dplr_kernel_frequency_blocks_do_not_change_the_result(monkeypatch):
    import models.s4 as s4

    torch.manual_seed(0)
    nplr = legs_nplr(8)
    args = (nplr.Lambda[None], nplr.P[None], nplr.B[None], torch.randn(1, 4, dtype=torch.complex128),
            torch.tensor([0.05], dtype=torch.float64), 37)
    whole = dplr_kernel(*args)
    monkeypatch.setattr(s4, "DPLR_FREQ_BLOCK", 5)
    assert torch.allclose(dplr_kernel(*args), whole, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- the layer against independent references


def _layer_ssm_float64(layer: S4):
    """The layer's continuous (A, B, C) per channel as complex128 (H, M) and dt (H,) float64, read from its
    parameters with none of the layer's helpers (so a bug in ``_ssm`` or the discretisation cannot cancel)."""
    re = -torch.exp(layer.A_re_log.detach().double())
    if layer.conj_pairs:
        A = torch.complex(re, layer.A_im.detach().double())
        B, C = (torch.view_as_complex(p.detach().double()) for p in (layer.B, layer.C))
    else:
        A = re.to(torch.complex128)
        B, C = (p.detach().double().to(torch.complex128) for p in (layer.B, layer.C))
    return A, B, C, layer.log_dt.detach().double().exp()


def _zoh_by_matrix_exp(A, B, dt):
    """ZOH of the scalar SSM x' = a x + b u per mode: exp([[dt a, dt b], [0, 0]]) = [[A_bar, B_bar], [0, 1]]."""
    H, M = A.shape
    aug = torch.zeros(H, M, 2, 2, dtype=torch.complex128)
    aug[..., 0, 0] = dt[:, None] * A
    aug[..., 0, 1] = dt[:, None] * B
    E = torch.linalg.matrix_exp(aug)
    return E[..., 0, 0], E[..., 0, 1]


def _impulse_response(dA, dB, C, L, conj_pairs):
    """K_l = c Re(C A_bar^l B_bar), stepping the recurrence; dA (H, M) diagonal or (H, M, M) dense."""
    x, K = dB.clone(), []
    for _ in range(L):
        K.append((C * x).sum(-1).real)
        x = torch.einsum("hmn,hn->hm", dA, x) if dA.dim() == 3 else dA * x
    K = torch.stack(K, -1)
    return 2 * K if conj_pairs else K


@pytest.mark.parametrize("a_init", ["s4d_lin", "s4d_inv", "legs", "s4d_real", "random"])
def test_s4d_layer_kernel_is_the_matrix_exponential_zoh_of_its_parameters(a_init):
    """S4.kernel (float32) against the ZOH computed by torch.linalg.matrix_exp in float64 on the layer's own
    A, B, C, dt.  Euler (B_bar = dt B, or A_bar = 1 + dt A) moves the kernel by percents; float32 is ~1e-6."""
    seed = torch.seed() % 2**31
    torch.manual_seed(seed)
    layer = S4(ModelConfig(mixer="s4", s4_mode="diag", a_init=a_init, d_state=8, dt_min=0.01, dt_max=0.2), 5)
    L = 64
    A, B, C, dt = _layer_ssm_float64(layer)
    dA, dB = _zoh_by_matrix_exp(A, B, dt)
    ref = _impulse_response(dA, dB, C, L, layer.conj_pairs)
    K = layer.kernel(L)
    assert K.dtype == torch.float32 and K.shape == (5, L)
    rel = ((K.double() - ref).norm() / ref.norm()).item()
    assert rel < 2e-5, f"seed={seed}: relative error {rel:.2e} against the matrix-exponential ZOH"
    # the recurrent form uses the same discretisation (the decode path)
    state = layer.init_state(1)
    for got, want in ((state["dA"], dA), (state["dB"], dB)):
        err = ((got.to(torch.complex128) - want).abs().max() / want.abs().max()).item()
        assert err < 2e-6, f"seed={seed}: init_state's discretisation is off by {err:.2e}"


def test_s4_dplr_layer_kernel_is_the_bilinear_discretisation_of_its_dense_matrix():
    """The DPLR layer's Cauchy/Woodbury kernel against dense float64 powers of its bilinear A_bar, where the
    layer's A = diag(Lambda) - P P^* is built from its parameters (so the layer's wiring is covered)."""
    seed = torch.seed() % 2**31
    torch.manual_seed(seed)
    layer = S4(ModelConfig(mixer="s4", s4_mode="dplr", a_init="legs", d_state=8, dt_min=0.01, dt_max=0.2), 3)
    L = 40
    A, B, C, dt = _layer_ssm_float64(layer)
    P = torch.view_as_complex(layer.P.detach().double())
    Adense = torch.diag_embed(A) - P.unsqueeze(-1) * P.conj().unsqueeze(-2)
    I = torch.eye(A.shape[-1], dtype=torch.complex128)
    inv = torch.linalg.inv(I - dt[:, None, None] / 2 * Adense)
    dA = inv @ (I + dt[:, None, None] / 2 * Adense)
    dB = (inv @ (dt[:, None] * B).unsqueeze(-1)).squeeze(-1)
    ref = _impulse_response(dA, dB, C, L, conj_pairs=True)
    rel = ((layer.kernel(L).double() - ref).norm() / ref.norm()).item()
    assert rel < 2e-5, f"seed={seed}: relative error {rel:.2e} against dense bilinear powers"
