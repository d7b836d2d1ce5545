"""SSD, the state-space layer of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"), as a sequence mixer.

Per head h (of H = d / headdim), with a scalar A_h < 0 and a_t = exp(dt_t A_h):
    state_t = a_t state_{t-1} + dt_t x_t B_t^T        (headdim x N)
    y_t     = state_t C_t + D_h x_t
x is the input split into heads of ``headdim`` channels; B, C (ngroups x N, each group shared by
H / ngroups heads) and dt (one per head, dt = softplus(proj + dt_bias)) are projected from the input.
The scan is ``kernels.ssd`` (chunked SSD; ``backend`` from the model), the decoding step
``kernels.selective_state_update`` on the multi-head state (batch, H, headdim, N).

:class:`SSDHeads` holds what the mixer and the Mamba-2 block (models/mamba2.py) share: A_log, dt_bias and
D per head with the official inits (MAMBA2_FACTS section 3: A ~ U[1, 16] stored as A_log, dt log-uniform
in [dt_min, dt_max] floored at dt_init_floor with dt_bias = softplus^-1(dt), D = 1, all three without
weight decay) and the scan / step / state calls on them.

The mixer stands where ``s6`` stands (arch ``none``, ``mamba``, ``h3``, ``transformer``): in the Mamba-1
block it is the paper's "sequential projections" ablation (B, C, dt from the conv output, Table 4).  Unlike
the Mamba-2 block it has no conv or SiLU of its own on B and C and no norm.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from models.config import ModelConfig
from models.hippo import inverse_softplus, log_uniform_dt

A_INIT_RANGE = (1.0, 16.0)   # Mamba-2: A = -U[1, 16] per head


def _kernels():
    """(kernels.ssd, kernels.selective_state_update, its differentiable reference), looked up at call time."""
    import kernels
    from kernels.selective_scan.state_update import selective_state_update_reference

    return kernels.ssd, kernels.selective_state_update, selective_state_update_reference


def state_dtype(dtype: Optional[torch.dtype]) -> torch.dtype:
    """The SSD state's dtype for a model in ``dtype``: float32 (as the kernels keep it), float64 for a float64
    model (the tests' exact mode)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(t: torch.Tensor) -> torch.Tensor:
    """t in float32, or float64 when it already is."""
    return t if t.dtype == torch.float64 else t.float()


class SSDHeads:
    """A_log, dt_bias, D per head and the SSD scan / step on them (mixed into an nn.Module)."""

    def _init_heads(self, cfg: ModelConfig, nheads: int, headdim: int, ngroups: int, d_state: int) -> None:
        self.nheads, self.headdim, self.ngroups, self.N = nheads, headdim, ngroups, d_state
        self.chunk_size, self.backend = cfg.chunk_size, cfg.backend
        dt = log_uniform_dt(nheads, cfg.dt_min, cfg.dt_max, floor=cfg.dt_init_floor)
        self.dt_bias = nn.Parameter(inverse_softplus(dt).float())
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(*A_INIT_RANGE)))
        self.D = nn.Parameter(torch.ones(nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

    def _A(self) -> torch.Tensor:
        return -torch.exp(_acc(self.A_log))

    def _scan(self, x, dt, B, C, initial_states=None, return_final_states: bool = False):
        """x (b, L, H, P), dt (b, L, H) raw, B and C (b, L, G, N) -> y (b, L, H, P) [, final state (b, H, P, N)]."""
        ssd = _kernels()[0]
        return ssd(x, dt, self._A(), B, C, chunk_size=self.chunk_size, D=_acc(self.D), dt_bias=_acc(self.dt_bias),
                   dt_softplus=True, initial_states=initial_states, return_final_states=return_final_states,
                   backend=self.backend)

    def _prefill_scan(self, x, dt, B, C, state):
        """The scan from ``state`` (b, H, P, N): (y, the state after the last position, in state's dtype).  The
        state goes in as the scan's initial state whatever it holds (no host read to test it for zeros)."""
        y, final = self._scan(x, dt, B, C, initial_states=state, return_final_states=True)
        return y, final.to(state.dtype)

    def _step(self, state, x, dt, B, C) -> Tuple[torch.Tensor, torch.Tensor]:
        """One token: state (b, H, P, N), x (b, H, P), dt (b, H) raw, B and C (b, G, N) -> (y (b, H, P), state).

        ``kernels.selective_state_update`` (fused on CUDA) updates ``state`` in place and returns y, so a
        CUDA-graph stepper copies nothing back.  While autograd records (grad mode on and a parameter or the
        state requires grad) it is the differentiable reference, which returns a new state and leaves ``state``
        alone."""
        _, update, update_reference = _kernels()
        b, H, P = x.shape
        N = state.shape[-1]
        # the official layout: A over (H, headdim, N), dt / D / dt_bias over headdim, as stride-0 views
        args = (x, dt.unsqueeze(-1).expand(b, H, P), self._A().view(H, 1, 1).expand(H, P, N), B, C)
        kw = dict(D=_acc(self.D).view(H, 1).expand(H, P), dt_bias=_acc(self.dt_bias).view(H, 1).expand(H, P),
                  dt_softplus=True)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (state, x, dt, B, C, self.A_log, self.D,
                                                                     self.dt_bias)):
            return update_reference(state, *args, **kw)
        return update(state, *args, **kw, backend=self.backend), state

    def _init_ssm_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """(batch, H, headdim, N) zeros, float32 (float64 for a float64 model)."""
        return torch.zeros(batch, self.nheads, self.headdim, self.N, device=device or self.D.device,
                           dtype=state_dtype(dtype or self.D.dtype))


class SSD(SSDHeads, nn.Module):
    """SSD over ``d`` channels: (B, L, d) -> (B, L, d), with ``init_state`` / ``step`` / ``prefill``.

    x_proj (no bias) maps the input to B (ngroups x N) | C (ngroups x N) | dt (H); x is the input itself in
    H = d / headdim heads."""

    def __init__(self, cfg: ModelConfig, d: int):
        nn.Module.__init__(self)
        if d % cfg.headdim:
            raise ValueError(f"SSD: headdim ({cfg.headdim}) must divide the mixer width ({d})")
        nheads = d // cfg.headdim
        if nheads % cfg.ngroups:
            raise ValueError(f"SSD: ngroups ({cfg.ngroups}) must divide the number of heads ({nheads})")
        self.d = d
        G, N = cfg.ngroups, cfg.d_state
        self.x_proj = nn.Linear(d, 2 * G * N + nheads, bias=False)
        self._init_heads(cfg, nheads, cfg.headdim, G, N)

    def _ssm_params(self, x: torch.Tensor):
        """x (..., d) -> x in heads (..., H, P), dt (..., H), B and C (..., G, N)."""
        GN = self.ngroups * self.N
        B, C, dt = self.x_proj(x).split([GN, GN, self.nheads], dim=-1)
        shape = x.shape[:-1]
        return (x.reshape(shape + (self.nheads, self.headdim)), dt,
                B.reshape(shape + (self.ngroups, self.N)), C.reshape(shape + (self.ngroups, self.N)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xh, dt, B, C = self._ssm_params(x)
        return self._scan(xh, dt, B, C).reshape(x.shape)

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        return self._init_ssm_state(batch, device, dtype)

    def prefill(self, x: torch.Tensor, state: torch.Tensor):
        """A prompt x (B, L, d) from ``state`` in one scan: (y, the state L calls of ``step`` leave)."""
        xh, dt, B, C = self._ssm_params(x)
        y, state = self._prefill_scan(xh, dt, B, C, state)
        return y.reshape(x.shape), state

    def step(self, x_t: torch.Tensor, state: torch.Tensor):
        """One token: x_t (B, d) -> (y_t (B, d), state)."""
        xh, dt, B, C = self._ssm_params(x_t)
        y, state = self._step(state, xh, dt, B, C)
        return y.reshape(x_t.shape), state

    def extra_repr(self) -> str:
        return (f"d={self.d}, heads={self.nheads}, headdim={self.headdim}, ngroups={self.ngroups}, N={self.N}, "
                f"chunk_size={self.chunk_size}, backend={self.backend}")
