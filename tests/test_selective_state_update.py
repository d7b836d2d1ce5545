"""The one-step selective SSM update (kernels/selective_scan/state_update.py) on the CPU: the reference against
a float64 recomputation and against the sequential scan over T steps, the dispatcher's in-place contract,
argument checks, S6.step giving the numbers it gave before, and (in a subprocess with TRITON_INTERPRET=1)
the Triton kernel's tests in tests/test_selective_state_update_triton.py."""
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
LAYOUTS = list(itertools.product(["shared", "channel"], repeat=2))      # (B, C): (batch, N) or (batch, dim, N)
# (delta_bias, D, softplus): everything on, nothing optional, and no softplus (then dt = delta + bias > 0)
OPTIONS = [(True, True, True), (False, False, True), (True, True, False)]


def fresh_seed() -> int:
    return secrets.randbits(31)


def make_inputs(batch, dim, N, layout=("shared", "shared"), bias=True, D=True, softplus=True, L=None,
                dtype=torch.float32, seed=0, device="cpu"):
    """A random step (or, with L, a sequence of L steps on a last axis): state, x, delta, delta_bias, A, B, C, D."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    t = () if L is None else (L,)
    bc = {"shared": (batch, N), "channel": (batch, dim, N)}
    delta = r(batch, dim, *t, scale=0.5) - 1.0 if softplus else r(batch, dim, *t, scale=0.3).abs() + 0.01
    ins = dict(
        state=r(batch, dim, N).float(),
        x=r(batch, dim, *t).to(dtype),
        delta=delta.to(dtype),
        delta_bias=((r(dim, scale=0.3) if softplus else r(dim, scale=0.1).abs()).float() if bias else None),
        A=(-torch.arange(1, N + 1, dtype=torch.float64).repeat(dim, 1)
           * torch.empty(dim, N, dtype=torch.float64).uniform_(0.5, 1.5, generator=g)).float(),
        B=r(*bc[layout[0]], *t).to(dtype),
        C=r(*bc[layout[1]], *t).to(dtype),
        D=r(dim).float() if D else None,
    )
    return {k: (v.to(device) if v is not None else None) for k, v in ins.items()}


def float64_step(state, x, delta, delta_bias, A, B, C, D, softplus=True):
    """The update written out in float64 as the docs state it (dt * x first), independent of the reference."""
    d = lambda t: t.double() if t is not None else None   # noqa: E731
    state, x, delta, delta_bias, A, B, C, D = map(d, (state, x, delta, delta_bias, A, B, C, D))
    dt = delta + (delta_bias if delta_bias is not None else 0.0)
    dt = F.softplus(dt) if softplus else dt
    Bx = B if B.dim() == 3 else B[:, None, :]
    Cx = C if C.dim() == 3 else C[:, None, :]
    new = torch.exp(dt[..., None] * A) * state + (dt * x)[..., None] * Bx
    y = (new * Cx).sum(-1) + (D * x if D is not None else 0.0)
    return y, new


def call(fn, ins, softplus=True, **kw):
    return fn(ins["state"], ins["x"], ins["delta"], ins["delta_bias"], ins["A"], ins["B"], ins["C"], ins["D"],
              delta_softplus=softplus, **kw)


# ---------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("options", OPTIONS, ids=["all", "none", "no-softplus"])
@pytest.mark.parametrize("layout", LAYOUTS, ids="-".join)
def test_reference_matches_float64_recomputation(layout, options):
    """float32 math: relative error a few float32 ulps (~1e-7); 1e-5 leaves 100x for exp's and the sum's
    rounding (the selective-scan tests' tolerance).  With a float64 state it computes in float64: 1e-12."""
    bias, D, softplus = options
    seed = fresh_seed()
    ins = make_inputs(3, 7, 5, layout, bias, D, softplus, seed=seed)
    before = ins["state"].clone()
    y, new = call(selective_state_update_reference, ins, softplus)
    y64, new64 = float64_step(**ins, softplus=softplus)
    assert torch.equal(ins["state"], before), "the reference must not modify its input state"
    assert y.dtype == torch.float32 and new.dtype == torch.float32
    assert rel_err(y, y64) < 1e-5 and rel_err(new, new64) < 1e-5, (seed, rel_err(y, y64), rel_err(new, new64))
    y, new = call(selective_state_update_reference, {k: v.double() if v is not None else None for k, v in ins.items()},
                  softplus)
    assert y.dtype == new.dtype == torch.float64
    assert rel_err(y, y64) < 1e-12 and rel_err(new, new64) < 1e-12, seed


@pytest.mark.parametrize("options", OPTIONS, ids=["all", "none", "no-softplus"])
@pytest.mark.parametrize("layout", LAYOUTS, ids="-".join)
def test_reference_steps_reproduce_the_scan(layout, options):
    """T steps from h = 0 give the sequential scan's y and last state.  A per-channel B/C is the scan's B/C with
    dim groups.  float64 both ways: same math, different op order -> 1e-12; float32: 1e-5 (as above)."""
    bias, D, softplus = options
    seed = fresh_seed()
    batch, dim, N, T = 2, 6, 4, 9
    seq = make_inputs(batch, dim, N, layout, bias, D, softplus, L=T, seed=seed)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        s = {k: (v.to(dtype) if v is not None else None) for k, v in seq.items()}
        y_scan, last = kernels.selective_scan_reference(
            s["x"], s["delta"], s["A"], s["B"], s["C"], D=s["D"], delta_bias=s["delta_bias"],
            delta_softplus=softplus, return_last_state=True)
        state, ys = torch.zeros(batch, dim, N, dtype=dtype), []
        for t in range(T):
            y, state = selective_state_update_reference(state, s["x"][..., t], s["delta"][..., t], s["delta_bias"],
                                                        s["A"], s["B"][..., t], s["C"][..., t], s["D"],
                                                        delta_softplus=softplus)
            ys.append(y)
        errs = rel_err(torch.stack(ys, -1), y_scan), rel_err(state, last)
        assert max(errs) < tol, (seed, dtype, errs)


def test_reference_keeps_bf16_inputs_and_returns_y_in_their_dtype():
    """bf16 x, delta, B, C are upcast exactly; only y's final rounding to bf16 differs from float64: at most
    2^-8 relative per element (round to nearest, 8 significant bits), so 6e-3 norm-wise."""
    seed = fresh_seed()
    ins = make_inputs(2, 8, 16, ("shared", "channel"), dtype=torch.bfloat16, seed=seed)
    y, new = call(selective_state_update_reference, ins)
    y64, new64 = float64_step(**ins)
    assert y.dtype == torch.bfloat16 and new.dtype == torch.float32
    assert rel_err(y, y64) < 6e-3 and rel_err(new, new64) < 1e-5, seed


# ---------------------------------------------------------------------------- the dispatcher
@pytest.mark.parametrize("backend", ["auto", "chunked", "reference"])
def test_dispatcher_updates_the_state_in_place_on_every_backend(backend):
    ins = make_inputs(2, 5, 4, ("channel", "shared"), seed=fresh_seed())
    y_ref, new_ref = call(selective_state_update_reference, ins)
    state = ins["state"]
    y, out = call(kernels.selective_state_update, ins, backend=backend)
    assert out is state and torch.equal(state, new_ref) and torch.equal(y, y_ref)


def test_triton_on_cpu_without_interpreter_says_what_to_do():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("interpreter is on in this process")
    ins = make_inputs(2, 5, 4)
    with pytest.raises(ValueError, match="needs CUDA"):
        call(selective_state_update_triton, ins)
    with pytest.raises(ValueError, match="did you mean 'triton'"):
        call(kernels.selective_state_update, ins, backend="trition")


@pytest.mark.parametrize("change, needle", [
    (dict(state=torch.zeros(2, 5, 4, dtype=torch.bfloat16)), "state must be float32"),
    (dict(state=torch.zeros(2, 5)), "state must be (batch, dim, N)"),
    (dict(x=torch.zeros(2, 6)), "x must be (batch=2, dim=5)"),
    (dict(delta=torch.zeros(5)), "delta must be (batch=2, dim=5)"),
    (dict(A=torch.zeros(5, 3)), "A must be a real float32 (dim=5, N=4)"),
    (dict(A=torch.zeros(5, 4, dtype=torch.complex64)), "A must be a real float32"),
    (dict(B=torch.zeros(2, 1, 4)), "B must be (batch=2, N=4) (shared by all channels) or (batch=2, dim=5, N=4)"),
    (dict(C=torch.zeros(3, 4)), "C must be (batch=2, N=4)"),
    (dict(D=torch.zeros(4)), "D must be None or a (dim=5,) tensor"),
    (dict(delta_bias=torch.zeros(5, 1)), "delta_bias must be None or a (dim=5,) tensor"),
    (dict(x=torch.zeros(2, 5, dtype=torch.int64)), "x must be a real float tensor"),
    (dict(B=torch.zeros(2, 4, device="meta")), "B is on meta but state is on cpu"),
])
def test_bad_arguments_raise_clear_errors(change, needle):
    ins = {**make_inputs(2, 5, 4), **change}
    for fn in (kernels.selective_state_update, selective_state_update_reference):
        with pytest.raises(ValueError) as e:
            call(fn, ins)
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
