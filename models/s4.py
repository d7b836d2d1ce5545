"""S4, the LTI state-space baseline: S4D (diagonal, Vandermonde kernel) and S4 (DPLR, Cauchy + Woodbury).

Both compute a length-L convolution kernel K per channel and apply it by FFT at length 2L
(``fft_conv``); ``step`` runs the same SSM as a recurrence, and the two agree (tests/test_s4.py).

* ``s4_mode: diag`` (S4D; state-spaces/s4 ``SSMKernelDiag``, ZOH):
  A_bar = exp(dt A), B_bar = (exp(dt A) - 1) / A * B, K_l = c Re sum_n C_n B_bar_n A_bar_n^l, where
  c = 2 for complex inits (one mode per conjugate pair) and c = 1 for real inits.
* ``s4_mode: dplr`` (S4; ``SSMKernelDPLR``, bilinear): A = Lambda - P P^* from HiPPO-LegS
  (:func:`models.hippo.legs_nplr`).  The truncated generating function at the L-th roots of unity,
      K_hat(w) = sum_{l<L} C A_bar^l B_bar w^l = 2 C~ [2(1-w) I - (1+w) dt A]^{-1} dt B,  C~ = C (I - A_bar^L),
  is a Cauchy kernel over the diagonal Lambda with the rank-1 term removed by Woodbury; K = 2 Re ifft(K_hat).
  (Written with 2(1-w) and (1+w) multiplied through, so w = -1 needs no special case.)
Learnable: A (log of -Re, and Im), B, C, P (dplr), log dt (log-uniform [dt_min, dt_max]), D.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from models.config import ModelConfig
from models.hippo import diag_init, legs_nplr, log_uniform_dt


DPLR_FREQ_BLOCK = 1 << 15


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = sum_{j<=t} k_j u_{t-j} by FFT at length 2L; u (B, H, L), k (H, L) -> (B, H, L).

    Computed in float32 (float64 if given), returned in u.dtype; k may be shorter than L (zero-padded).
    """
    L = u.shape[-1]
    if k.shape[-1] > L:
        k = k[..., :L]
    acc = torch.float64 if torch.float64 in (u.dtype, k.dtype) else torch.float32
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.to(acc), n=n) * torch.fft.rfft(k.to(acc), n=n), n=n)[..., :L]
    return y.to(u.dtype)


def _cplx(p: torch.Tensor) -> torch.Tensor:
    """A (..., 2) real parameter as a complex64 tensor (float32 even when the module is cast to bf16)."""
    return torch.view_as_complex(p.float())


def _as_param(z: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.view_as_real(z.to(torch.complex64)).contiguous())


def vandermonde_block(L: int) -> int:
    """The block T of :func:`diag_kernel`'s split l = jT + t: the power of two at or above sqrt(L), so both
    factors stay O(sqrt L) long (the result does not depend on T; memory and speed do)."""
    return 1 << max(0, math.ceil(math.log2(max(L, 1)) / 2))


def diag_kernel(dtA: torch.Tensor, C_tilde: torch.Tensor, L: int, conj_pairs: bool) -> torch.Tensor:
    """K_l = c Re sum_n C~_n exp(dtA_n l) (Vandermonde product); dtA, C~ (H, M) complex -> (H, L) real.

    Split as l = jT + t with T ~ sqrt(L): K[jT + t] = sum_n (C~_n e^{dtA_n jT}) e^{dtA_n t}, one batched
    matmul over (H, L/T, M) x (H, M, T), so memory is O(H M sqrt L) instead of O(H M L) (L = 2^20
    evaluations would otherwise need a (H, M, L) complex tensor).
    """
    T = vandermonde_block(L)
    n_blocks = -(-L // T)
    real = dtA.real.dtype
    inner = torch.exp(dtA.unsqueeze(-1) * torch.arange(T, device=dtA.device, dtype=real))              # (H, M, T)
    outer = C_tilde.unsqueeze(1) * torch.exp(
        dtA.unsqueeze(1) * (T * torch.arange(n_blocks, device=dtA.device, dtype=real))[None, :, None])   # (H, J, M)
    K = torch.bmm(outer, inner).real.reshape(dtA.shape[0], n_blocks * T)[:, :L]
    return 2 * K if conj_pairs else K


def dplr_kernel(Lambda, P, B, C, dt, L: int) -> torch.Tensor:
    """The bilinear-discretised DPLR SSM's length-L kernel, 2 Re of the half-mode complex SSM.

    Lambda, P, B, C (H, M) complex; dt (H,) real -> K (H, L) real.  C is the SSM's C (not C~).
    """
    dA, _ = dplr_discretize(Lambda, P, B, dt)
    C_tilde = C - torch.einsum("hm,hmn->hn", C, torch.linalg.matrix_power(dA, L))
    dt = dt.to(Lambda.dtype).unsqueeze(-1)                                      # (H, 1)
    freq = torch.exp(-2j * math.pi * torch.arange(L, device=Lambda.device, dtype=dt.real.dtype) / L).to(Lambda.dtype)
    dB, dP, Pc = (dt * B).unsqueeze(-1), (dt * P).unsqueeze(-1), P.conj().unsqueeze(-1)
    a = C_tilde.unsqueeze(-1)
    K_hat = []
    for omega in freq.split(DPLR_FREQ_BLOCK):                                   # bounds the (H, M, block) temporaries
        denom = 2 * (1 - omega) - (1 + omega) * (dt * Lambda).unsqueeze(-1)     # (H, M, block)
        U = (1 + omega) * dP
        k00, k01 = (a * dB / denom).sum(1), (a * U / denom).sum(1)
        k10, k11 = (Pc * dB / denom).sum(1), (Pc * U / denom).sum(1)
        K_hat.append(2 * (k00 - k01 * k10 / (1 + k11)))                         # (H, block)
    return 2 * torch.fft.ifft(torch.cat(K_hat, -1), n=L).real


def dplr_discretize(Lambda, P, B, dt):
    """Bilinear: A_bar = (I - dt/2 A)^-1 (I + dt/2 A), B_bar = (I - dt/2 A)^-1 dt B, A = diag(Lambda) - P P^*."""
    M = Lambda.shape[-1]
    A = torch.diag_embed(Lambda) - P.unsqueeze(-1) * P.conj().unsqueeze(-2)
    I = torch.eye(M, dtype=A.dtype, device=A.device)
    half = (dt.to(A.dtype) / 2)[:, None, None]
    back = I - half * A
    dA = torch.linalg.solve(back, I + half * A)
    dB = torch.linalg.solve(back, (2 * half[..., 0] * B).unsqueeze(-1)).squeeze(-1)
    return dA, dB


class S4(nn.Module):
    """LTI SSM over ``d`` channels, (B, L, d) -> (B, L, d): y = K * u + D u, with ``init_state`` / ``step``."""

    def __init__(self, cfg: ModelConfig, d: int):
        super().__init__()
        self.d, self.N, self.mode = d, cfg.d_state, cfg.s4_mode
        init = cfg.resolved_a_init
        if self.mode == "dplr":
            if init != "legs":
                raise ValueError(f"s4_mode 'dplr' needs a_init 'legs', got {init!r}; use s4_mode: diag for {init}")
            nplr = legs_nplr(self.N)
            A, B0, P0 = nplr.Lambda, nplr.B, nplr.P
            self.P = _as_param(P0.unsqueeze(0).expand(d, -1))
            A, B0 = A.expand(d, -1), B0.expand(d, -1)
        else:
            A, B0 = diag_init(init, self.N, channels=d)
        self.conj_pairs = A.is_complex()
        M = A.shape[-1]
        self.log_dt = nn.Parameter(torch.log(log_uniform_dt(d, cfg.dt_min, cfg.dt_max)))
        self.A_re_log = nn.Parameter(torch.log(-A.real).float().contiguous())
        if self.conj_pairs:
            self.A_im = nn.Parameter(A.imag.float().contiguous())
            self.B = _as_param(B0)
            self.C = _as_param(torch.randn(d, M, dtype=torch.complex64))           # S4D: C ~ N(0, 1) complex
        else:
            self.B = nn.Parameter(B0.float().contiguous())
            self.C = nn.Parameter(torch.randn(d, M))
        self.D = nn.Parameter(torch.randn(d))
        # the SSM's own parameters (state-spaces/s4 registers A's real and imaginary parts, B, P and dt with
        # weight decay 0 and their own lr): train.ssm_lr and the no-decay group take exactly these
        for p in (self.log_dt, self.A_re_log, getattr(self, "A_im", None), self.B, getattr(self, "P", None), self.D):
            if p is not None:
                p._no_weight_decay = True

    # ------------------------------------------------------------------ parameters
    def _ssm(self):
        """(Lambda, B, C) as complex (H, M) tensors and dt (H,)."""
        re = -torch.exp(self.A_re_log.float())
        if self.conj_pairs:
            A, B, C = torch.complex(re, self.A_im.float()), _cplx(self.B), _cplx(self.C)
        else:
            A, B, C = (t.float().to(torch.complex64) for t in (re, self.B, self.C))
        return A, B, C, torch.exp(self.log_dt.float())

    def kernel(self, L: int) -> torch.Tensor:
        """The SSM convolution kernel (H, L), float32."""
        A, B, C, dt = self._ssm()
        if self.mode == "dplr":
            return dplr_kernel(A, _cplx(self.P), B, C, dt, L)
        dtA = dt.unsqueeze(-1) * A
        return diag_kernel(dtA, C * B * torch.expm1(dtA) / A, L, self.conj_pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.transpose(1, 2)
        y = fft_conv(u, self.kernel(u.shape[-1])) + u * self.D.unsqueeze(-1).to(u.dtype)
        return y.transpose(1, 2)

    # ------------------------------------------------------------------ recurrent form
    def _discrete(self):
        A, B, C, dt = self._ssm()
        if self.mode == "dplr":
            dA, dB = dplr_discretize(A, _cplx(self.P), B, dt)
        else:
            dtA = dt.unsqueeze(-1) * A
            dA, dB = torch.exp(dtA), B * torch.expm1(dtA) / A
        return dA, dB, C

    def init_state(self, batch: int, device=None, dtype=None) -> Dict[str, torch.Tensor]:
        """Zero state plus the discretised (A_bar, B_bar, C), computed once per decode."""
        dA, dB, C = self._discrete()
        x = torch.zeros(batch, self.d, C.shape[-1], dtype=torch.complex64, device=device or C.device)
        return {"x": x, "dA": dA, "dB": dB, "C": C}

    def step(self, x_t: torch.Tensor, state):
        """One token: x_t (B, d) -> (y_t (B, d), state)."""
        dA, dB, C, h = state["dA"], state["dB"], state["C"], state["x"]
        if self.mode == "dplr":
            h = torch.einsum("hmn,bhn->bhm", dA, h)
        else:
            h = dA * h
        h = h + dB * x_t.float().unsqueeze(-1)
        y = (C * h).sum(-1).real
        y = 2 * y if self.conj_pairs else y
        y = y + self.D.float() * x_t.float()
        return y.to(x_t.dtype), {**state, "x": h}

    def extra_repr(self) -> str:
        return f"d={self.d}, N={self.N}, mode={self.mode}, complex={self.conj_pairs}"
