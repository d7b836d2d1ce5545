"""S6, the selective SSM of Mamba (Gu & Dao 2023, Algorithm 2; state-spaces/mamba ``mamba_simple``).

x_proj maps the input to (dt_low_rank, B, C); dt = softplus(dt_proj(dt_low_rank) + bias).  Each of
dt, B, C can be made non-selective (``selective: {delta, B, C}``, paper Table 7): it then is a learned
per-channel parameter, independent of the input.  A = -exp(A_log) (real, through
``kernels.selective_scan(backend=cfg.backend)``) or, for complex inits, A = -exp(A_re_log) + i A_im
on the PyTorch complex scan (:mod:`models.complex_scan`), one mode per conjugate pair, output 2 Re.
Discretisation follows the reference code: ZOH for A, Euler (dt * B) for B (PAPER_FACTS 6.2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import selective_scan, selective_state_update
from kernels.selective_scan.state_update import selective_state_update_reference
from models.complex_scan import complex_linear_scan
from models.config import ModelConfig
from models.hippo import diag_init, inverse_softplus, log_uniform_dt
from models.prefill import prefill_by_step


class S6(nn.Module):
    """Selective SSM over ``d`` channels: (B, L, d) -> (B, L, d), with ``init_state`` / ``step``."""

    def __init__(self, cfg: ModelConfig, d: int):
        super().__init__()
        self.d, self.N = d, cfg.d_state
        self.sel = cfg.selective
        self.backend = cfg.backend
        self.is_complex = cfg.complex_a
        self.dt_rank = cfg.resolved_dt_rank
        # real width of B and C: N real modes, or N/2 complex modes stored as (re, im) pairs
        n_proj = (self.dt_rank if self.sel.delta else 0) + (self.N if self.sel.B else 0) + (self.N if self.sel.C else 0)
        self.x_proj = nn.Linear(d, n_proj, bias=False) if n_proj else None

        dt = log_uniform_dt(d, cfg.dt_min, cfg.dt_max, floor=cfg.dt_init_floor)
        if self.sel.delta:
            self.dt_proj = nn.Linear(self.dt_rank, d, bias=True)
            nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
            with torch.no_grad():
                self.dt_proj.bias.copy_(inverse_softplus(dt))
        else:
            self.dt_bias = nn.Parameter(inverse_softplus(dt))        # dt = softplus(dt_bias), learned
        if not self.sel.B:
            self.B = nn.Parameter(torch.ones(d, self.N))              # S4D convention: B = 1
        if not self.sel.C:
            self.C = nn.Parameter(torch.randn(d, self.N) * self.N ** -0.5)

        A, _ = diag_init(cfg.resolved_a_init, self.N, channels=d)
        if self.is_complex:
            self.A_re_log = nn.Parameter(torch.log(-A.real).float().contiguous())
            self.A_im = nn.Parameter(A.imag.float().contiguous())
            self.A_re_log._no_weight_decay = self.A_im._no_weight_decay = True
        else:
            self.A_log = nn.Parameter(torch.log(-A).float().contiguous())   # float32, as mamba_simple
            self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d))
        self.D._no_weight_decay = True

    # ------------------------------------------------------------------ parameters from the input
    def _ssm_params(self, x: torch.Tensor):
        """x (..., d) -> (delta_raw (..., d), delta_bias (d,), B (..., d|1, N), C (..., d|1, N))."""
        proj = self.x_proj(x) if self.x_proj is not None else None
        i = 0
        if self.sel.delta:
            low = proj[..., : self.dt_rank]
            i = self.dt_rank
            delta = F.linear(low, self.dt_proj.weight)               # bias added inside the scan
            delta_bias = self.dt_proj.bias
        else:
            delta = x.new_zeros(x.shape[:-1] + (self.d,))
            delta_bias = self.dt_bias
        if self.sel.B:
            B = proj[..., i: i + self.N].unsqueeze(-2)               # shared by all channels
            i += self.N
        else:
            B = self.B.expand(x.shape[:-1] + (self.d, self.N))
        if self.sel.C:
            C = proj[..., i: i + self.N].unsqueeze(-2)
        else:
            C = self.C.expand(x.shape[:-1] + (self.d, self.N))
        return delta, delta_bias, B, C

    def _A(self) -> torch.Tensor:
        if self.is_complex:
            return torch.complex(-torch.exp(self.A_re_log.float()), self.A_im.float())
        return -torch.exp(self.A_log.float())

    @staticmethod
    def _as_complex(M: torch.Tensor) -> torch.Tensor:
        """(..., N) real -> (..., N/2) complex from consecutive (re, im) pairs.  A copy when M starts at an odd
        offset in its storage (B or C sliced from x_proj's output after an odd dt_rank, with one token and
        batch 1 a contiguous view), which view_as_complex refuses."""
        pairs = M.float().reshape(M.shape[:-1] + (M.shape[-1] // 2, 2)).contiguous()
        return torch.view_as_complex(pairs if pairs.storage_offset() % 2 == 0 else pairs.clone())

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta, delta_bias, B, C = self._ssm_params(x)
        if self.is_complex:
            return self._forward_complex(x, delta, delta_bias, B, C)
        return self._scan(x, delta, delta_bias, B, C, return_last_state=False)

    def _scan(self, x, delta, delta_bias, B, C, return_last_state: bool):
        """The real-A scan through ``kernels.selective_scan``: y (B, L, d), and with ``return_last_state`` the
        state after the last position (B, d, N) float32, as ``step`` keeps it."""
        # kernel layout: u, delta (batch, dim, L); B, C (batch, N, L) when selective, else the learned (dim, N)
        # itself: the kernels' constant case, never expanded over batch and L
        u = x.transpose(1, 2)
        Bk = B[..., 0, :].transpose(1, 2) if self.sel.B else self.B
        Ck = C[..., 0, :].transpose(1, 2) if self.sel.C else self.C
        out = selective_scan(u, delta.transpose(1, 2), self._A(), Bk, Ck, self.D.float(),
                             delta_bias=delta_bias.float(), delta_softplus=True,
                             return_last_state=return_last_state, backend=self.backend)
        if return_last_state:
            return out[0].transpose(1, 2), out[1]
        return out.transpose(1, 2)

    def prefill(self, x: torch.Tensor, state: torch.Tensor):
        """A prompt x (B, L, d) from a fresh state (all zeros, as ``init_state`` makes it) through the scan:
        (y, the state after it), what L calls of ``step`` give.  The scan starts from zero, so a state that
        already holds tokens, and the complex-A path, step instead (exact, slower).  One host read per call."""
        if self.is_complex or bool(state.any()):
            return prefill_by_step(self, x, state)
        delta, delta_bias, B, C = self._ssm_params(x)
        y, last = self._scan(x, delta, delta_bias, B, C, return_last_state=True)
        return y, last.to(state.dtype)

    def _forward_complex(self, x, delta, delta_bias, B, C):
        dt = F.softplus(delta.float() + delta_bias.float())             # (b, L, d)
        A = self._A()                                                    # (d, M)
        Bc, Cc = self._as_complex(B), self._as_complex(C)               # (b, L, d|1, M)
        a = torch.exp(dt.unsqueeze(-1) * A)                              # (b, L, d, M)
        bu = (dt * x.float()).unsqueeze(-1) * Bc
        h = complex_linear_scan(a.permute(0, 2, 3, 1), bu.permute(0, 2, 3, 1))   # (b, d, M, L)
        y = 2 * (h * Cc.permute(0, 2, 3, 1)).real.sum(2).transpose(1, 2)         # (b, L, d)
        return (y + x.float() * self.D.float()).to(x.dtype)

    # ------------------------------------------------------------------ recurrent form
    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """The SSM state, float32 whatever the model dtype (as the reference scan)."""
        device = device or self.D.device
        if self.is_complex:
            return torch.zeros(batch, self.d, self.N // 2, device=device, dtype=torch.complex64)
        return torch.zeros(batch, self.d, self.N, device=device, dtype=torch.float32)

    def step(self, x_t: torch.Tensor, state: torch.Tensor):
        """One token: x_t (B, d) -> (y_t (B, d), state).

        Real A: ``kernels.selective_state_update`` (mamba_ssm's signature; one fused kernel on CUDA), which
        updates ``state`` in place (this returns that same tensor), so a CUDA-graph stepper copies nothing back.  While autograd records the step
        (grad mode on and a parameter or the state requires grad) it returns a new state instead and leaves
        ``state`` alone: an in-place update would break the backward through earlier steps.
        """
        delta, delta_bias, B, C = self._ssm_params(x_t)
        if self.is_complex:
            return self._step_complex(x_t, state, delta, delta_bias, B, C)
        B = B[..., 0, :] if self.sel.B else B           # (b, N) shared by all channels, or (b, groups = d, N)
        C = C[..., 0, :] if self.sel.C else C
        args = (state, x_t, delta, self._A(), B, C, self.D)
        if torch.is_grad_enabled() and any(t.requires_grad for t in args + (delta_bias,)):
            return selective_state_update_reference(*args, dt_bias=delta_bias, dt_softplus=True)
        y = selective_state_update(*args, dt_bias=delta_bias, dt_softplus=True, backend=self.backend)
        return y, state

    def _step_complex(self, x_t, state, delta, delta_bias, B, C):
        dt = F.softplus(delta.float() + delta_bias.float()).unsqueeze(-1)   # (b, d, 1)
        B, C = self._as_complex(B), self._as_complex(C)
        state = torch.exp(dt * self._A()) * state + dt * B * x_t.float().unsqueeze(-1)
        y = 2 * (state * C).sum(-1).real
        return (y + self.D.float() * x_t.float()).to(x_t.dtype), state

    def extra_repr(self) -> str:
        sel = ",".join(k for k, v in self.sel.model_dump().items() if v) or "none"
        return f"d={self.d}, N={self.N}, dt_rank={self.dt_rank}, selective={sel}, complex={self.is_complex}, backend={self.backend}"

