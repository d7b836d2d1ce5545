"""HiPPO-LegS and the diagonal initialisations (PAPER_FACTS.md 6.3)."""
from __future__ import annotations

import math

import pytest
import torch

from models.hippo import diag_init, inverse_softplus, legs_matrices, legs_nplr, log_uniform_dt


def test_legs_matrix_matches_its_closed_form():
    N = 7
    A, B = legs_matrices(N)
    for n in range(N):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1))
        for k in range(N):
            want = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k].item() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("N", [4, 16, 64])
def test_legs_nplr_reconstructs_the_legs_matrix(N):
    A, B = legs_matrices(N)
    nplr = legs_nplr(N, half=False)
    V = nplr.V
    assert torch.allclose(V.conj().T @ V, torch.eye(N, dtype=torch.complex128), atol=1e-10)   # unitary
    rebuilt = V @ (torch.diag(nplr.Lambda) - nplr.P[:, None] * nplr.P.conj()[None, :]) @ V.conj().T
    assert torch.allclose(rebuilt, A.to(torch.complex128), atol=1e-8 * N)
    assert torch.allclose(V @ nplr.B, B.to(torch.complex128), atol=1e-10 * N)
    assert torch.allclose(nplr.Lambda.real, torch.full((N,), -0.5, dtype=torch.float64), atol=1e-10)


def test_legs_nplr_half_keeps_one_of_each_conjugate_pair():
    full, half = legs_nplr(8, half=False), legs_nplr(8)
    imag = torch.sort(full.Lambda.imag).values
    assert torch.allclose(imag, -imag.flip(0), atol=1e-10)                       # pairs +-w
    assert half.Lambda.shape == (4,) and torch.all(half.Lambda.imag > 0)


def test_diag_inits_follow_the_s4d_formulas():
    N = 8
    n = torch.arange(N // 2, dtype=torch.float64)
    A, B = diag_init("s4d_lin", N)
    assert torch.allclose(A, torch.complex(torch.full_like(n, -0.5), math.pi * n)) and torch.all(B == 1)
    A, _ = diag_init("s4d_inv", N)
    assert torch.allclose(A.imag, (N / math.pi) * (N / (2 * n + 1) - 1))
    A, _ = diag_init("s4d_real", N)
    assert torch.allclose(A, -(torch.arange(N, dtype=torch.float64) + 1))
    A, _ = diag_init("real_half", N)
    assert torch.all(A == -0.5)
    torch.manual_seed(0)
    A, _ = diag_init("random", 4000)
    assert torch.all(A < 0) and abs((-A).log().mean().item()) < 0.1 and abs((-A).log().std().item() - 1) < 0.1
    A, B = diag_init("legs", N)
    assert torch.allclose(A, legs_nplr(N).Lambda)
    A, B = diag_init("random", 5, channels=3)                                  # one draw per channel
    assert A.shape == B.shape == (3, 5) and not torch.allclose(A[0], A[1])
    A, _ = diag_init("s4d_real", 5, channels=3)
    assert torch.equal(A[2], -(torch.arange(5, dtype=torch.float64) + 1))
    with pytest.raises(ValueError, match="unknown a_init"):
        diag_init("s5", N)


def test_dt_init_and_inverse_softplus():
    torch.manual_seed(0)
    dt = log_uniform_dt(5000, 0.001, 0.1, floor=1e-4)
    assert dt.min() >= 0.001 - 1e-9 and dt.max() <= 0.1 + 1e-9
    x = torch.tensor([1e-4, 0.01, 0.5, 3.0], dtype=torch.float64)
    assert torch.allclose(torch.nn.functional.softplus(inverse_softplus(x)), x, rtol=1e-10)


@pytest.mark.parametrize("init", ["s4d_real", "real_half", "random", "s4d_lin", "s4d_inv", "legs"])
@pytest.mark.parametrize("channels", [None, 3])
def test_diag_inits_are_float64_or_complex128(init, channels):
    """The inits are computed in double precision (the layers cast once, at the end)."""
    A, B = diag_init(init, 8, channels=channels)
    want = torch.complex128 if init in ("s4d_lin", "s4d_inv", "legs") else torch.float64
    assert A.dtype == want and B.dtype == want, (A.dtype, B.dtype)
    modes = 4 if want.is_complex else 8
    assert A.shape == B.shape == ((modes,) if channels is None else (channels, modes))


def test_s4d_inits_match_their_formulas_in_double_precision():
    N = 64
    n = torch.arange(N // 2, dtype=torch.float64)
    A, _ = diag_init("s4d_lin", N)
    torch.testing.assert_close(A, torch.complex(torch.full_like(n, -0.5), math.pi * n), rtol=1e-14, atol=0)
    A, _ = diag_init("s4d_inv", N)
    torch.testing.assert_close(A, torch.complex(torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1)),
                               rtol=1e-14, atol=0)


def test_dt_fills_the_log_uniform_range_and_the_floor_clamps():
    torch.manual_seed(0)
    dt = log_uniform_dt(20000, 0.001, 0.1)
    logs = dt.log()
    lo, hi = math.log(0.001), math.log(0.1)
    assert logs.min() < lo + 0.01 * (hi - lo) and logs.max() > hi - 0.01 * (hi - lo)   # the whole range
    assert abs(logs.mean().item() - (lo + hi) / 2) < 0.02 * (hi - lo)                 # uniform in log
    assert abs(logs.std().item() - (hi - lo) / math.sqrt(12)) < 0.02 * (hi - lo)
    floored = log_uniform_dt(20000, 0.001, 0.1, floor=0.01)
    assert floored.min().item() == pytest.approx(0.01) and (floored == floored.min()).sum() > 1000
    assert torch.equal(log_uniform_dt(10, 0.5, 0.5, floor=0.0), torch.full((10,), 0.5))
