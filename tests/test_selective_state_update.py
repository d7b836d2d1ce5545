"""The one-step selective SSM update (kernels/selective_scan/state_update.py, mamba_ssm's signature) on the CPU,
for both state layouts: S6 (batch, dim, N) and multi-head Mamba-2 (batch, heads, headdim, N).  The reference
against a float64 step written here, and stepped over a sequence against the scans (S6: the selective scan;
multi-head: ``kernels.ssd``), the dispatcher's in-place contract, stride-0 (Mamba-2's expanded) arguments,
argument checks, S6.step giving the numbers it gave before, and (in a subprocess with TRITON_INTERPRET=1) the
Triton kernel's tests in tests/test_selective_state_update_triton.py.

Tolerances (relative error ||out - ref|| / ||ref||; largest seen over 150 fresh draws per case, 2026-12-05, CPU):
FP32 = 1e-5 for float32 results (a handful of float32 operations per state, ~1e-7 each; measured: y <= 3.4e-7,
new state <= 8.7e-8 vs float64; stepping 11 steps vs kernels.ssd: y <= 1.6e-7, final state <= 1.3e-7); bf16 y
6e-3 (y is rounded to bf16 once at the end: at most 2^-8 = 3.9e-3 relative per element; measured <= 3.3e-3 vs
float64, <= 8.4e-5 between the step and the scan, which round the same float32 values but for rare one-ulp
flips).  Both sit far inside the official test_selective_state_update tolerances
(MAMBA2_FACTS section 4: fp32 rtol 3e-4 / atol 1e-3, bf16 rtol 1e-2 / atol 5e-2), which are asserted too as
the upper bound.
"""
from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.selective_scan.state_update import selective_state_update_reference, selective_state_update_triton
from kernels.selective_scan.testing import rel_err, run_tests_in_triton_interpreter

ROOT = Path(__file__).resolve().parents[1]
FP32, BF16_Y = 1e-5, 6e-3
OFFICIAL = {torch.float32: (3e-4, 1e-3), torch.bfloat16: (1e-2, 5e-2)}      # (rtol, atol), MAMBA2_FACTS 4
# S6 B/C layouts: (batch, N) shared by all channels, (batch, dim, N) per channel (groups = dim), (batch, 2, N)
LAYOUTS = list(itertools.product(["shared", "channel"], repeat=2)) + [("groups", "groups")]
# (dt_bias, D, z, softplus): everything on, nothing optional, no softplus (then dt = dt + bias > 0)
OPTIONS = [(True, True, True, True), (False, False, False, True), (True, True, False, False)]
OPTION_IDS = ["all", "none", "no-softplus"]


def fresh_seed() -> int:
    return secrets.randbits(31)


def make_inputs(batch, dim, N, layout=("shared", "shared"), bias=True, D=True, z=True, softplus=True, L=None,
                dtype=torch.float32, seed=0, device="cpu"):
    """A random S6 step (or, with L, a sequence of L steps on a last axis): state, x, dt, dt_bias, A, B, C, D, z."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    t = () if L is None else (L,)
    bc = {"shared": (batch, N), "channel": (batch, dim, N), "groups": (batch, 2, N)}
    dt = r(batch, dim, *t, scale=0.5) - 1.0 if softplus else r(batch, dim, *t, scale=0.3).abs() + 0.01
    ins = dict(
        state=r(batch, dim, N).float(),
        x=r(batch, dim, *t).to(dtype),
        dt=dt.to(dtype),
        dt_bias=((r(dim, scale=0.3) if softplus else r(dim, scale=0.1).abs()).float() if bias else None),
        A=(-torch.arange(1, N + 1, dtype=torch.float64).repeat(dim, 1)
           * torch.empty(dim, N, dtype=torch.float64).uniform_(0.5, 1.5, generator=g)).float(),
        B=r(*bc[layout[0]], *t).to(dtype),
        C=r(*bc[layout[1]], *t).to(dtype),
        D=r(dim).float() if D else None,
        z=r(batch, dim, *t).to(dtype) if z else None,
    )
    return {k: (v.to(device) if v is not None else None) for k, v in ins.items()}


def make_mh_inputs(batch, heads, headdim, groups, N, *, tie=True, bias=True, D=True, z=True, softplus=True, L=None,
                   dtype=torch.float32, seed=0):
    """A random multi-head (Mamba-2) step, or a sequence of L steps on a last axis.  ``tie``: A, dt, dt_bias and
    D per head, expanded over headdim (A also over N) with stride 0, as Mamba-2 passes them; otherwise full
    tensors of the same shapes."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    t = () if L is None else (L,)
    P = headdim
    if tie:
        A = (-torch.empty(heads, dtype=torch.float64).uniform_(0.5, 3.0, generator=g)).float()
        A = A[:, None, None].expand(heads, P, N)
        dt = (r(batch, heads, *t, scale=0.5) - 1.0 if softplus else r(batch, heads, *t, scale=0.3).abs() + 0.01)
        dt = dt.to(dtype).unsqueeze(2).expand(batch, heads, P, *t)
        dt_bias = (r(heads, scale=0.3) if softplus else r(heads, scale=0.1).abs()).float()[:, None].expand(heads, P)
        Dm = r(heads).float()[:, None].expand(heads, P)
    else:
        A = (-torch.empty(heads, P, N, dtype=torch.float64).uniform_(0.5, 3.0, generator=g)).float()
        dt = (r(batch, heads, P, *t, scale=0.5) - 1.0 if softplus
              else r(batch, heads, P, *t, scale=0.3).abs() + 0.01).to(dtype)
        dt_bias = (r(heads, P, scale=0.3) if softplus else r(heads, P, scale=0.1).abs()).float()
        Dm = r(heads, P).float()
    return dict(
        state=r(batch, heads, P, N).float(), x=r(batch, heads, P, *t).to(dtype), dt=dt,
        dt_bias=dt_bias if bias else None, A=A,
        B=r(batch, groups, N, *t).to(dtype), C=r(batch, groups, N, *t).to(dtype),
        D=Dm if D else None, z=r(batch, heads, P, *t).to(dtype) if z else None,
    )


def float64_step(state, x, dt, dt_bias, A, B, C, D, z, softplus=True):
    """The official update written out in float64 for either layout (per channel, group by index)."""
    d = lambda t: t.double() if t is not None else None   # noqa: E731
    state, x, dt, dt_bias, A, B, C, D, z = map(d, (state, x, dt, dt_bias, A, B, C, D, z))
    v = dt + (dt_bias if dt_bias is not None else 0.0)
    v = torch.where(v <= 20, torch.log1p(torch.exp(v.clamp(max=20))), v) if softplus else v
    B = B if B.dim() == 3 else B[:, None]
    C = C if C.dim() == 3 else C[:, None]
    unit = state.shape[1]                                  # dim (S6) or heads (multi-head): what groups divide
    def per_unit(M):                                       # (b, groups, N) -> (b, unit, N)
        return M.index_select(1, torch.tensor([u // (unit // M.shape[1]) for u in range(unit)]))

    Bu, Cu = per_unit(B), per_unit(C)
    if state.dim() == 4:
        Bu, Cu = Bu[:, :, None], Cu[:, :, None]
    new = torch.exp(v[..., None] * A) * state + (v * x)[..., None] * Bu
    y = (new * Cu).sum(-1) + (D * x if D is not None else 0.0)
    if z is not None:
        y = y * z * torch.sigmoid(z)
    return y, new


def call(fn, ins, softplus=True, **kw):
    return fn(ins["state"], ins["x"], ins["dt"], ins["A"], ins["B"], ins["C"], D=ins["D"], z=ins["z"],
              dt_bias=ins["dt_bias"], dt_softplus=softplus, **kw)


def assert_official(out, ref, dtype, what):
    rtol, atol = OFFICIAL[dtype]
    assert torch.allclose(out.double(), ref.double(), rtol=rtol, atol=atol), (what, (out.double() - ref).abs().max())


# ---------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("layout", LAYOUTS, ids="-".join)
def test_reference_matches_float64_recomputation(layout, options):
    """float32 math: relative error a few float32 ulps (~1e-7); 1e-5 leaves 100x for exp's and the sum's
    rounding (the selective-scan tests' tolerance).  With a float64 state it computes in float64: 1e-12."""
    bias, D, z, softplus = options
    seed = fresh_seed()
    ins = make_inputs(3, 8, 5, layout, bias, D, z, softplus, seed=seed)
    before = ins["state"].clone()
    y, new = call(selective_state_update_reference, ins, softplus)
    y64, new64 = float64_step(**ins, softplus=softplus)
    assert torch.equal(ins["state"], before), "the reference must not modify its input state"
    assert y.dtype == torch.float32 and new.dtype == torch.float32
    assert rel_err(y, y64) < FP32 and rel_err(new, new64) < FP32, (seed, rel_err(y, y64), rel_err(new, new64))
    y, new = call(selective_state_update_reference, {k: v.double() if v is not None else None for k, v in ins.items()},
                  softplus)
    assert y.dtype == new.dtype == torch.float64
    assert rel_err(y, y64) < 1e-12 and rel_err(new, new64) < 1e-12, seed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("tie", [True, False], ids=["stride0", "full"])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_multihead_reference_matches_float64(options, tie, dtype):
    """Multi-head state, groups > 1 (heads 6, groups 3), headdim and N not powers of two; the new state is
    float32 (FP32) whatever x's dtype, y in x's dtype; and within the official test's tolerances."""
    bias, D, z, softplus = options
    seed = fresh_seed()
    ins = make_mh_inputs(2, 6, 5, 3, 7, tie=tie, bias=bias, D=D, z=z, softplus=softplus, dtype=dtype, seed=seed)
    y, new = call(selective_state_update_reference, ins, softplus)
    y64, new64 = float64_step(**ins, softplus=softplus)
    assert y.dtype == dtype and y.shape == ins["x"].shape and new.dtype == torch.float32
    y_tol = BF16_Y if dtype == torch.bfloat16 else FP32
    assert rel_err(y, y64) < y_tol and rel_err(new, new64) < FP32, (seed, rel_err(y, y64), rel_err(new, new64))
    assert_official(y, y64, dtype, seed)
    assert_official(new, new64, torch.float32, seed)


def test_stride0_arguments_give_the_same_numbers_as_contiguous_copies():
    seed = fresh_seed()
    ins = make_mh_inputs(2, 4, 3, 2, 5, tie=True, seed=seed)
    assert all(0 in ins[k].stride() for k in ("A", "dt", "dt_bias", "D"))
    dense = {k: (v.contiguous() if v is not None else None) for k, v in ins.items()}
    for a, b in zip(call(selective_state_update_reference, ins), call(selective_state_update_reference, dense)):
        assert torch.equal(a, b), seed


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("layout", LAYOUTS, ids="-".join)
def test_reference_steps_reproduce_the_selective_scan(layout, options):
    """S6: T steps from h = 0 give the sequential scan's y and last state.  A per-channel B/C is the scan's B/C
    with dim groups.  float64 both ways: same math, different op order -> 1e-12; float32: 1e-5 (as above)."""
    bias, D, z, softplus = options
    seed = fresh_seed()
    batch, dim, N, T = 2, 6, 4, 9
    seq = make_inputs(batch, dim, N, layout, bias, D, z, softplus, L=T, seed=seed)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, FP32)):
        s = {k: (v.to(dtype) if v is not None else None) for k, v in seq.items()}
        y_scan, last = kernels.selective_scan_reference(
            s["x"], s["dt"], s["A"], s["B"], s["C"], D=s["D"], z=s["z"], delta_bias=s["dt_bias"],
            delta_softplus=softplus, return_last_state=True)
        state, ys = torch.zeros(batch, dim, N, dtype=dtype), []
        for t in range(T):
            y = kernels.selective_state_update(
                state, s["x"][..., t], s["dt"][..., t], s["A"], s["B"][..., t], s["C"][..., t], D=s["D"],
                z=s["z"][..., t] if z else None, dt_bias=s["dt_bias"], dt_softplus=softplus, backend="reference")
            ys.append(y)
        errs = rel_err(torch.stack(ys, -1), y_scan), rel_err(state, last)
        assert max(errs) < tol, (seed, dtype, errs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_multihead_steps_reproduce_the_ssd_scan(options, backend, dtype):
    """Multi-head: T steps from ``initial_states`` (stride-0 A/dt/dt_bias/D as Mamba-2 passes them) give
    kernels.ssd's y and final state.  Both sides compute in float32 from the same values: the final state
    within FP32; y within FP32 for fp32 inputs, and for bf16 inputs within one bf16 rounding of each other
    (BF16_Y)."""
    bias, D, z, softplus = options
    seed = fresh_seed()
    batch, H, P, G, N, T = 2, 6, 5, 3, 7, 11
    seq = make_mh_inputs(batch, H, P, G, N, tie=True, bias=bias, D=D, z=z, softplus=softplus, L=T, dtype=dtype,
                         seed=seed)
    h0 = seq["state"]
    tl = lambda t: t.movedim(-1, 1)           # noqa: E731  time first: (b, ..., L) -> (b, L, ...)
    y_scan, final = kernels.ssd(
        tl(seq["x"]), tl(seq["dt"][:, :, 0]), seq["A"][:, 0, 0], tl(seq["B"]), tl(seq["C"]), 4,
        D=seq["D"][:, 0] if D else None, z=tl(seq["z"]) if z else None,
        dt_bias=seq["dt_bias"][:, 0] if bias else None, dt_softplus=softplus, initial_states=h0,
        return_final_states=True, backend=backend)
    state, ys = h0.clone(), []
    for t in range(T):
        ys.append(kernels.selective_state_update(
            state, seq["x"][..., t], seq["dt"][..., t], seq["A"], seq["B"][..., t], seq["C"][..., t], D=seq["D"],
            z=seq["z"][..., t] if z else None, dt_bias=seq["dt_bias"], dt_softplus=softplus))
    y_tol = BF16_Y if dtype == torch.bfloat16 else FP32
    errs = rel_err(torch.stack(ys, 1), y_scan), rel_err(state, final)
    assert errs[0] < y_tol and errs[1] < FP32, (seed, errs)


def test_reference_keeps_bf16_inputs_and_returns_y_in_their_dtype():
    """bf16 x, dt, B, C are upcast exactly; only y's final rounding to bf16 differs from float64: at most
    2^-8 relative per element (round to nearest, 8 significant bits), so 6e-3 norm-wise."""
    seed = fresh_seed()
    ins = make_inputs(2, 8, 16, ("shared", "channel"), dtype=torch.bfloat16, seed=seed)
    y, new = call(selective_state_update_reference, ins)
    y64, new64 = float64_step(**ins)
    assert y.dtype == torch.bfloat16 and new.dtype == torch.float32
    assert rel_err(y, y64) < BF16_Y and rel_err(new, new64) < FP32, seed


def test_a_bf16_state_is_computed_in_float32_and_stored_rounded():
    seed = fresh_seed()
    ins = make_mh_inputs(2, 4, 3, 2, 5, seed=seed)
    ins["state"] = ins["state"].bfloat16()
    y64, new64 = float64_step(**ins)
    state = ins["state"]
    y = call(kernels.selective_state_update, ins, backend="reference")
    assert state.dtype == torch.bfloat16 and rel_err(y, y64) < FP32 and rel_err(state, new64) < BF16_Y, seed


# ---------------------------------------------------------------------------- the dispatcher
@pytest.mark.parametrize("multihead", [False, True], ids=["s6", "multihead"])
@pytest.mark.parametrize("backend", ["auto", "chunked", "reference"])
def test_dispatcher_updates_the_state_in_place_on_every_backend(backend, multihead):
    seed = fresh_seed()
    ins = make_mh_inputs(2, 4, 3, 2, 5, seed=seed) if multihead else make_inputs(2, 6, 4, ("channel", "groups"),
                                                                                  seed=seed)
    y_ref, new_ref = call(selective_state_update_reference, ins)
    state = ins["state"]
    y = call(kernels.selective_state_update, ins, backend=backend)
    assert isinstance(y, torch.Tensor) and torch.equal(state, new_ref) and torch.equal(y, y_ref), seed


def test_triton_on_cpu_without_interpreter_says_what_to_do():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("interpreter is on in this process")
    ins = make_inputs(2, 5, 4)
    with pytest.raises(ValueError, match="needs CUDA"):
        call(selective_state_update_triton, ins)
    with pytest.raises(ValueError, match="did you mean 'triton'"):
        call(kernels.selective_state_update, ins, backend="trition")


@pytest.mark.parametrize("change, needle", [
    (dict(state=torch.zeros(2, 5, 4, dtype=torch.int32)), "state must be a real float tensor"),
    (dict(state=torch.zeros(2, 5)), "state must be (batch, dim, N) (S6) or (batch, heads, headdim, N) (multi-head), got (2, 5)"),
    (dict(x=torch.zeros(2, 6)), "x must be (batch, dim) = (2, 5) to match state (2, 5, 4), got (2, 6)"),
    (dict(dt=torch.zeros(5)), "dt must be (batch, dim) = (2, 5)"),
    (dict(z=torch.zeros(2, 4)), "z must be (batch, dim) = (2, 5)"),
    (dict(A=torch.zeros(5, 3)), "A must be a real float (dim, N) = (5, 4) tensor, got torch.float32 (5, 3)"),
    (dict(A=torch.zeros(5, 4, dtype=torch.complex64)), "A must be a real float"),
    (dict(B=torch.zeros(2, 1, 3)), "B must be (batch, N) = (2, 4) or (batch, groups, N) = (2, groups, 4), got (2, 1, 3)"),
    (dict(B=torch.zeros(2, 2, 4)), "B has groups=2, which does not divide dim=5"),
    (dict(C=torch.zeros(3, 4)), "C must be (batch, N) = (2, 4)"),
    (dict(D=torch.zeros(4)), "D must be None or (dim,) = (5,), got (4,)"),
    (dict(dt_bias=torch.zeros(5, 1)), "dt_bias must be None or (dim,) = (5,), got (5, 1)"),
    (dict(x=torch.zeros(2, 5, dtype=torch.int64)), "x must be a real float tensor"),
    (dict(B=torch.zeros(2, 4, device="meta")), "B is on meta but state is on cpu"),
])
def test_bad_arguments_raise_clear_errors(change, needle):
    ins = {**make_inputs(2, 5, 4), **change}
    for fn in (kernels.selective_state_update, selective_state_update_reference):
        with pytest.raises(ValueError) as e:
            call(fn, ins)
        assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("change, needle", [
    (dict(x=torch.zeros(2, 4, 4)), "x must be (batch, heads, headdim) = (2, 4, 3) to match state (2, 4, 3, 5)"),
    (dict(A=torch.zeros(4)), "A must be a real float (heads, headdim, N) = (4, 3, 5) tensor"),
    (dict(B=torch.zeros(2, 3, 5), C=torch.zeros(2, 3, 5)), "B has groups=3, which does not divide heads=4"),
    (dict(D=torch.zeros(4)), "D must be None or (heads, headdim) = (4, 3), got (4,)"),
])
def test_multihead_bad_arguments_raise_clear_errors(change, needle):
    ins = {**make_mh_inputs(2, 4, 3, 2, 5), **change}
    with pytest.raises(ValueError) as e:
        call(kernels.selective_state_update, ins)
    assert needle in str(e.value), str(e.value)


# ---------------------------------------------------------------------------- S6.step
def old_s6_step(s6, x_t, state):
    """S6.step as it was before the fused update (real A), to check the CPU numbers did not change."""
    delta, delta_bias, B, C = s6._ssm_params(x_t)
    dt = F.softplus(delta.float() + delta_bias.float()).unsqueeze(-1)
    state = torch.exp(dt * s6._A()) * state + dt * B.float() * x_t.float().unsqueeze(-1)
    y = (state * C.float()).sum(-1)
    return (y + s6.D.float() * x_t.float()).to(x_t.dtype), state


SELECTIVE = [dict(delta=d, B=b, C=c) for d, b, c in itertools.product([True, False], repeat=3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("sel", SELECTIVE, ids=lambda s: "".join(k for k, v in s.items() if v) or "none")
def test_s6_step_gives_the_same_numbers_as_before_and_updates_in_place_only_without_autograd(sel, dtype):
    from models import build_mixer

    torch.manual_seed(fresh_seed())
    s6 = build_mixer(dict(d_model=16, d_state=8, selective=sel, backend="auto"), 12).to(dtype)
    with torch.no_grad():           # parameters away from their init, so D != 1 and B, C are not constant
        for p in s6.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    xs = torch.randn(2, 5, 12).to(dtype)
    for mode in (torch.inference_mode, torch.enable_grad):
        old = state = s6.init_state(2)
        with mode():
            for t in range(5):
                y_old, old = old_s6_step(s6, xs[:, t], old)
                before = state.clone()
                y, new = s6.step(xs[:, t], state)
                assert torch.equal(y, y_old) and torch.equal(new, old), (mode, t)
                if mode is torch.inference_mode:
                    assert new is state, "without autograd the state is updated in place"
                else:
                    assert new is not state and torch.equal(state, before), "autograd: the input state is kept"
                state = new


def test_s6_steps_stay_differentiable_under_autograd():
    """Backpropagation through several steps (the reason S6.step does not update in place under autograd)."""
    from models import build_mixer

    torch.manual_seed(0)
    s6 = build_mixer(dict(d_model=16, d_state=8, backend="auto"), 12)
    state, total = s6.init_state(2), 0.0
    for t in range(4):
        y, state = s6.step(torch.randn(2, 12), state)
        total = total + y.square().sum()
    (total + state.sum()).backward()
    assert s6.A_log.grad is not None and torch.isfinite(s6.A_log.grad).all() and s6.A_log.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- the Triton kernel, interpreted
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="already interpreting")
def test_triton_state_update_in_the_interpreter():
    """Run tests/test_selective_state_update_triton.py on the CPU with TRITON_INTERPRET=1 (set before import)."""
    pytest.importorskip("triton")
    run_tests_in_triton_interpreter(ROOT / "tests" / "test_selective_state_update_triton.py")
