"""Stand-ins for the peer packages (mamba_ssm, causal_conv1d, flash_attn, fla), for tests on the CPU.

Each implements the official function's signature and meaning with plain PyTorch (written from the packages'
docs and reference code: state-spaces/mamba, Dao-AILab/causal-conv1d, Dao-AILab/flash-attention,
fla-org/flash-linear-attention), checks the layout it is documented to take, and records each call's
argument shapes, dtypes and keywords in ``CALLS`` so a test can check what an adapter passed.
``install(monkeypatch, package)`` puts the package's modules into ``sys.modules``; ``broken=`` variants
are deliberately wrong (the correctness gate must catch them).
"""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

CALLS: List[Dict[str, Any]] = []


def _record(fn: str, **args: Any) -> None:
    CALLS.append({"fn": fn, **{k: ((tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else v)
                               for k, v in args.items()}})


def _softplus_dt(dt, bias, softplus):
    dt = dt.float() + (bias.float() if bias is not None else 0)
    return F.softplus(dt) if softplus else dt


# ---- mamba_ssm ------------------------------------------------------------------------------------------
def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, _wrong=None):
    _record("selective_scan_fn", u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
            delta_softplus=delta_softplus)
    b, d, L = u.shape
    assert delta.shape == u.shape and A.shape[0] == d and A.dtype == torch.float32
    N = A.shape[1]

    def per_step(M):   # (b, N, L) | (b, g, N, L) | (d, N) -> a function of t giving (b|1, d, N)
        if M.dim() == 2:
            return lambda t: M.float()[None]
        M4 = M.float().unsqueeze(1) if M.dim() == 3 else M.float()
        assert M4.shape[0] == b and M4.shape[2:] == (N, L), f"B/C must be (batch, [groups,] N, L), got {M.shape}"
        M4 = M4.repeat_interleave(d // M4.shape[1], dim=1)
        return lambda t: M4[..., t]
    Bt, Ct = per_step(B), per_step(C)
    dt = _softplus_dt(delta, delta_bias[:, None] if delta_bias is not None else None, delta_softplus)
    h = u.new_zeros(b, d, N, dtype=torch.float32)
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t].float())[..., None] * Bt(t)
        ys.append((h * Ct(t)).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None and _wrong != "no_D":
        y = y + D.float()[:, None] * u.float()
    if z is not None:
        y = y * F.silu(z.float())
    if _wrong == "bad_du":
        y = _ScaleGrad.apply(y, u)
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y


class _ScaleGrad(torch.autograd.Function):
    """y unchanged forward; the backward adds a wrong extra gradient into u (a kernel with a bad du)."""

    @staticmethod
    def forward(ctx, y, u):
        return y.clone()

    @staticmethod
    def backward(ctx, dy):
        return dy, 0.5 * dy


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False):
    _record("mamba_chunk_scan_combined", x=x, dt=dt, A=A, B=B, C=C, chunk_size=chunk_size, D=D, dt_bias=dt_bias,
            dt_softplus=dt_softplus)
    b, L, H, P = x.shape
    assert dt.shape == (b, L, H) and A.shape == (H,) and B.dim() == 4 and B.shape[:2] == (b, L)
    assert isinstance(chunk_size, int)
    G, N = B.shape[2], B.shape[3]
    Bh = B.float().repeat_interleave(H // G, dim=2)           # (b, L, H, N)
    Ch = C.float().repeat_interleave(H // G, dim=2)
    dts = _softplus_dt(dt, dt_bias, dt_softplus)               # (b, L, H)
    h = x.new_zeros(b, H, P, N, dtype=torch.float32)
    ys = []
    for t in range(L):
        decay = torch.exp(dts[:, t] * A)[..., None, None]
        h = decay * h + (dts[:, t, :, None] * x[:, t].float())[..., None] * Bh[:, t, :, None, :]
        y = (h * Ch[:, t, :, None, :]).sum(-1)
        if D is not None:
            y = y + (D.float()[:, None] if D.dim() == 1 else D.float()) * x[:, t].float()
        ys.append(y)
    return torch.stack(ys, 1).to(x.dtype)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    _record("selective_state_update", state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, dt_bias=dt_bias,
            dt_softplus=dt_softplus)
    b, d, N = state.shape
    assert x.shape == (b, d) and dt.shape == (b, d) and A.shape == (d, N) and B.shape == (b, N) == C.shape
    dts = _softplus_dt(dt, dt_bias, dt_softplus)
    new = torch.exp(dts[..., None] * A) * state + (dts * x.float())[..., None] * B.float()[:, None, :]
    state.copy_(new)
    y = (new * C.float()[:, None, :]).sum(-1)
    if D is not None:
        y = y + D.float() * x.float()
    return y.to(x.dtype)


# ---- causal_conv1d ----------------------------------------------------------------------------------------
def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    _record("causal_conv1d_fn", x=x, weight=weight, bias=bias, activation=activation)
    b, d, L = x.shape
    assert weight.shape[0] == d and weight.dim() == 2
    W = weight.shape[1]
    out = F.conv1d(F.pad(x.float(), (W - 1, 0)), weight.float().unsqueeze(1),
                   bias.float() if bias is not None else None, groups=d)
    if activation in ("silu", "swish"):
        out = F.silu(out)
    return out.to(x.dtype)


# ---- flash_attn --------------------------------------------------------------------------------------------
def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _record("flash_attn_func", q=q, k=k, v=v, causal=causal)
    assert q.dtype in (torch.float16, torch.bfloat16), "FlashAttention only supports fp16 and bf16"
    b, L, h, d = q.shape
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    s = torch.einsum("blhd,bmhd->bhlm", q.float(), k.float()) * scale
    if causal:
        s = s.masked_fill(torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.einsum("bhlm,bmhd->blhd", s.softmax(-1), v.float()).to(q.dtype)


# ---- fla ------------------------------------------------------------------------------------------------------
def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None):
    _record("chunk_gla", q=q, k=k, v=v, g=g)
    b, T, H, K = q.shape
    assert k.shape == q.shape == g.shape and v.shape[:3] == (b, T, H)
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(b, H, K, v.shape[-1], dtype=torch.float32)
    o = []
    for t in range(T):
        S = S * g[:, t].float().exp()[..., None] + k[:, t].float()[..., None] * v[:, t].float()[..., None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q[:, t].float() * scale, S))
    return torch.stack(o, 1).to(q.dtype), None


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           use_qk_l2norm_in_kernel=False, cu_seqlens=None, head_first=False):
    _record("chunk_gated_delta_rule", q=q, k=k, v=v, g=g, beta=beta)
    b, T, H, K = q.shape
    assert k.shape == q.shape and g.shape == (b, T, H) == beta.shape and v.shape[:3] == (b, T, H)
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(b, H, K, v.shape[-1], dtype=torch.float32)
    o = []
    for t in range(T):
        S = S * g[:, t].float().exp()[..., None, None]
        kt = k[:, t].float()
        u = (v[:, t].float() - torch.einsum("bhkv,bhk->bhv", S, kt)) * beta[:, t].float()[..., None]
        S = S + kt[..., None] * u[..., None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q[:, t].float() * scale, S))
    return torch.stack(o, 1).to(q.dtype), None


# ---- installing them ----------------------------------------------------------------------------------------
def _modules(package: str, broken: str | None) -> Dict[str, types.ModuleType]:
    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m
    if package == "mamba_ssm":
        scan = selective_scan_fn if broken is None else (lambda *a, **k: selective_scan_fn(*a, **k, _wrong=broken))
        return {"mamba_ssm": mod("mamba_ssm"), "mamba_ssm.ops": mod("mamba_ssm.ops"),
                "mamba_ssm.ops.selective_scan_interface": mod("mamba_ssm.ops.selective_scan_interface",
                                                              selective_scan_fn=scan),
                "mamba_ssm.ops.triton": mod("mamba_ssm.ops.triton"),
                "mamba_ssm.ops.triton.ssd_combined": mod("mamba_ssm.ops.triton.ssd_combined",
                                                         mamba_chunk_scan_combined=mamba_chunk_scan_combined),
                "mamba_ssm.ops.triton.selective_state_update": mod("mamba_ssm.ops.triton.selective_state_update",
                                                                   selective_state_update=selective_state_update)}
    if package == "causal_conv1d":
        return {"causal_conv1d": mod("causal_conv1d", causal_conv1d_fn=causal_conv1d_fn)}
    if package == "flash_attn":
        return {"flash_attn": mod("flash_attn", flash_attn_func=flash_attn_func)}
    if package == "fla":
        # fla.utils: the flags of fla's toolchain guards, here as on a non-Hopper GPU with Triton 3.6
        return {"fla": mod("fla"), "fla.ops": mod("fla.ops"), "fla.ops.gla": mod("fla.ops.gla", chunk_gla=chunk_gla),
                "fla.utils": mod("fla.utils", IS_NVIDIA_HOPPER=False, TRITON_ABOVE_3_4_0=True, TRITON_ABOVE_3_7_1=False),
                "fla.ops.gated_delta_rule": mod("fla.ops.gated_delta_rule",
                                                chunk_gated_delta_rule=chunk_gated_delta_rule)}
    raise KeyError(package)


def install(monkeypatch, package: str, broken: str | None = None) -> None:
    """Put the stand-in ``package`` into sys.modules for this test (``broken``: "no_D" forgets the D skip,
    "bad_du" returns a wrong gradient for u; mamba_ssm's selective_scan_fn only)."""
    CALLS.clear()
    for name, m in _modules(package, broken).items():
        monkeypatch.setitem(sys.modules, name, m)
