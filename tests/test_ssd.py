"""The SSD scan (``kernels.ssd``, Mamba-2) on the CPU: every PyTorch backend against a float64 recurrence
written here (not the package's reference: a shared mistake would pass), values and gradients of every
input, on awkward shapes (odd L, L not a multiple of the chunk or shorter than one, groups > 1, headdim and
N not powers of two), with initial and final states, z, D of both shapes, dt_bias / softplus / dt_limit
(and the zero gradient where the clamp bites), bf16 and fp32 inputs; the memory promise of the chunked
backend; argument checks.  Every test draws a fresh seed and prints it on failure.

Tolerances (relative error ||out - ref|| / ||ref|| against float64 on the same input values), with the largest
errors measured over 200 fresh draws of every SHAPES and OPTIONS case per backend and dtype (2026-12-05, CPU):
* FP32 = 1e-5 for everything a float32 run returns and for every float32 quantity of a bf16 run (final
  states; the gradients of the float32 inputs A, D, dt_bias, initial_states): both backends compute in
  float32.  Measured: y <= 6.1e-7, final states <= 2.3e-7, gradients of x, dt, B, C, z, D, h0 <= 2.1e-6.
* FP32_SUM = 2e-5 for dA and d(dt_bias): per-head sums of batch x L x headdim x N terms of both signs, whose
  relative error grows with their cancellation.  Measured <= 4.0e-6.
* BF16 = 5e-3 for y and the gradients of the bf16 inputs (x, dt, B, C, z) of a bf16 run: float32 results
  rounded once to bf16 at the end, at most 2^-8 = 3.9e-3 relative per element (round to nearest, 8
  significant bits), so never more norm-wise.  Measured <= 3.5e-3.  The upstream gradient dy is drawn in bf16
  so that both sides backpropagate the same numbers and the float32 gradients of a bf16 run owe nothing to
  its rounding (they stay at FP32).
"""
from __future__ import annotations

import importlib.util
import math
import os
import secrets
from pathlib import Path

import pytest
import torch

import kernels
from kernels.selective_scan.testing import rel_err

FP32, FP32_SUM, BF16 = 1e-5, 2e-5, 5e-3
BACKENDS = ["reference", "chunked"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LOW = ("x", "dt", "B", "C", "z")                       # drawn in the run's dtype; A, D, dt_bias, h0 are float32


def fresh_seed() -> int:
    return secrets.randbits(31)


# ---------------------------------------------------------------------------- the float64 oracle
def oracle_dt(dt, dt_bias, softplus, dt_limit):
    """The official dt processing, written out: + bias, softplus where <= 20, clamp (zero gradient outside)."""
    v = dt.double()
    if dt_bias is not None:
        v = v + dt_bias.double()
    if softplus:
        v = torch.where(v <= 20.0, torch.log1p(torch.exp(torch.clamp(v, max=20.0))), v)
    lo, hi = dt_limit
    v = torch.where(v < lo, torch.full_like(v, lo), v)
    return torch.where(v > hi, torch.full_like(v, hi), v)


def oracle(x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=False, dt_limit=(0.0, math.inf), h0=None):
    """Per head, step by step in float64: h = exp(dt A) h + dt x B^T ; y = h C + D x ; y *= z sigmoid(z)."""
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    head_group = torch.tensor([h // (H // G) for h in range(H)])
    Bh = B.double().index_select(2, head_group)                   # (b, L, H, N)
    Ch = C.double().index_select(2, head_group)
    v = oracle_dt(dt, dt_bias, softplus, dt_limit)                 # (b, L, H)
    state = h0.double() if h0 is not None else torch.zeros(batch, H, P, N, dtype=torch.float64)
    ys = []
    for t in range(L):
        a = torch.exp(v[:, t] * A.double())                        # (b, H)
        state = a[:, :, None, None] * state + torch.einsum("bh,bhp,bhn->bhpn", v[:, t], x[:, t].double(), Bh[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, 1)
    if D is not None:
        y = y + x.double() * (D.double() if D.dim() == 2 else D.double()[:, None])
    if z is not None:
        y = y * z.double() * torch.sigmoid(z.double())
    return y, state


# ---------------------------------------------------------------------------- problems
def make_inputs(batch, L, H, P, G, N, *, dtype=torch.float32, D="head", z=True, bias=True, softplus=True,
                h0=True, seed=0):
    """A random problem: A < 0 per head, dt around 0.3 after softplus (positive without it)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift

    dt = r(batch, L, H, scale=0.5, shift=-1.0) if softplus else r(batch, L, H, scale=0.3).abs() + 0.02
    ins = dict(
        x=r(batch, L, H, P).to(dtype), dt=dt.to(dtype),
        A=-torch.empty(H, dtype=torch.float64).uniform_(0.5, 3.0, generator=g).float(),
        B=r(batch, L, G, N).to(dtype), C=r(batch, L, G, N).to(dtype),
        D={"head": r(H), "channel": r(H, P), None: None}[D],
        z=r(batch, L, H, P).to(dtype) if z else None,
        dt_bias=(r(H, scale=0.3) if softplus else r(H, scale=0.05).abs()) if bias else None,
        h0=r(batch, H, P, N) if h0 else None,
    )
    return {k: (v.float() if v is not None and k not in LOW else v) for k, v in ins.items()}


def run(backend, ins, chunk, softplus=True, dt_limit=(0.0, math.inf), final=True):
    return kernels.ssd(ins["x"], ins["dt"], ins["A"], ins["B"], ins["C"], chunk, D=ins["D"], z=ins["z"],
                       dt_bias=ins["dt_bias"], dt_softplus=softplus, dt_limit=dt_limit,
                       initial_states=ins["h0"], return_final_states=final, backend=backend)


def compare(backend, ins, chunk, softplus=True, dt_limit=(0.0, math.inf), final=True, seed=0):
    """Relative errors of y, the final state and every input's gradient against the float64 oracle; also the
    backend's and the oracle's dt gradients (for the clamp test).  dy and d(final) are drawn in the run's
    dtype / float32, so both sides backpropagate the same numbers."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in ins.items() if v is not None}
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in ins.items() if v is not None}
    out = run(backend, {k: leaves.get(k) for k in ins}, chunk, softplus, dt_limit, final)
    y, hT = out if final else (out, None)
    y64, h64 = oracle(*(ref_leaves.get(k) for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")),
                      softplus=softplus, dt_limit=dt_limit, h0=ref_leaves.get("h0"))
    assert y.dtype == ins["x"].dtype and y.shape == ins["x"].shape, (y.dtype, y.shape)
    errs = {"y": rel_err(y, y64)}
    g = torch.Generator().manual_seed(seed + 1)
    dy = torch.randn(y64.shape, generator=g, dtype=torch.float64).to(y.dtype).double()
    loss, loss64 = (y.double() * dy).sum(), (y64 * dy).sum()
    if final:
        assert hT.dtype == torch.float32 and hT.shape == h64.shape, (hT.dtype, hT.shape)
        errs["final"] = rel_err(hT, h64)
        dh = torch.randn(h64.shape, generator=g, dtype=torch.float64).float().double()
        loss, loss64 = loss + (hT.double() * dh).sum(), loss64 + (h64 * dh).sum()
    loss.backward()
    loss64.backward()
    for k in leaves:
        assert leaves[k].grad is not None, f"no gradient reached {k}"
        assert leaves[k].grad.dtype == leaves[k].dtype
        errs["d" + k] = rel_err(leaves[k].grad, ref_leaves[k].grad)
    return errs, leaves["dt"].grad, ref_leaves["dt"].grad


def tolerance(name: str, dtype) -> float:
    """BF16 for y and the gradients of the bf16 inputs of a bf16 run; FP32_SUM for the per-head gradient sums
    dA and d(dt_bias); FP32 for everything else (see the module docstring)."""
    if dtype == torch.bfloat16 and (name == "y" or name[1:] in LOW):
        return BF16
    return FP32_SUM if name in ("dA", "ddt_bias") else FP32


def assert_close(errs, dtype, seed, what):
    bad = {k: v for k, v in errs.items() if not v <= tolerance(k, dtype)}
    assert not bad, f"seed={seed} {what}: over tolerance {bad} (all: {errs})"


# (batch, L, heads, headdim, groups, N, chunk)
SHAPES = {
    "odd-L-partial-chunk": (2, 37, 4, 5, 2, 7, 8),
    "L-shorter-than-chunk": (1, 5, 2, 3, 1, 4, 16),
    "L-multiple-of-chunk": (2, 24, 3, 4, 1, 6, 8),
    "groups-eq-heads": (1, 19, 6, 3, 6, 5, 4),
    "L1": (2, 1, 2, 2, 1, 3, 4),
    "chunk1": (1, 7, 2, 3, 2, 3, 1),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_float64_recurrence(backend, shape, dtype):
    """Everything on (D per head, z, dt_bias, softplus, initial and final states): values and gradients."""
    seed = fresh_seed()
    *dims, chunk = SHAPES[shape]
    ins = make_inputs(*dims, dtype=DTYPES[dtype], seed=seed)
    errs, _, _ = compare(backend, ins, chunk, seed=seed)
    assert_close(errs, DTYPES[dtype], seed, (backend, shape, dtype))


OPTIONS = {   # (D, z, dt_bias, softplus, initial states, return final states)
    "nothing-optional": dict(D=None, z=False, bias=False, softplus=True, h0=False, final=False),
    "D-per-channel": dict(D="channel", z=True, bias=True, softplus=True, h0=True, final=True),
    "no-softplus": dict(D="head", z=False, bias=True, softplus=False, h0=True, final=True),
    "final-without-initial": dict(D="head", z=True, bias=False, softplus=True, h0=False, final=True),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_optional_inputs(backend, option, dtype):
    seed = fresh_seed()
    o = dict(OPTIONS[option])
    softplus, final = o["softplus"], o.pop("final")
    ins = make_inputs(2, 13, 4, 3, 2, 5, dtype=DTYPES[dtype], seed=seed, **o)
    errs, _, _ = compare(backend, ins, 4, softplus=softplus, final=final, seed=seed)
    assert_close(errs, DTYPES[dtype], seed, (backend, option, dtype))


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dt_limit_clamps_and_zeroes_the_gradient_where_it_bites(backend, softplus):
    """Limits inside the range of dt: many steps are clamped on both sides; there dt's gradient is exactly 0
    (the official backward), elsewhere it matches float64; y and every other gradient match too."""
    seed = fresh_seed()
    ins = make_inputs(2, 21, 4, 3, 2, 5, softplus=softplus, seed=seed)
    if not softplus:
        ins["dt"] = ins["dt"] - 0.15                       # some negative raw dt, clamped to the lower limit
    limit = (0.2, 0.5) if softplus else (0.05, 0.3)
    errs, ddt, ddt64 = compare(backend, ins, 8, softplus=softplus, dt_limit=limit, seed=seed)
    assert_close(errs, torch.float32, seed, (backend, softplus, limit))
    v = oracle_dt(ins["dt"], ins["dt_bias"], softplus, (-math.inf, math.inf))
    outside = (v < limit[0] - 1e-4) | (v > limit[1] + 1e-4)
    inside = (v > limit[0] + 1e-4) & (v < limit[1] - 1e-4)
    assert outside.float().mean() > 0.2 and inside.float().mean() > 0.2, f"seed={seed}: limits do not bite"
    assert torch.all(ddt[outside] == 0), f"seed={seed}: nonzero dt gradient where clamped"
    assert torch.all(ddt64[outside] == 0) and (ddt[inside] != 0).all(), seed


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_limit_clamps_negative_dt_to_zero(backend):
    """The default dt_limit (0, inf) is applied too: a negative dt (no softplus) is 0 -- no decay, no input --
    with zero gradient, as in the official kernels."""
    seed = fresh_seed()
    ins = make_inputs(1, 9, 2, 3, 1, 4, softplus=False, bias=False, seed=seed)
    ins["dt"][:, ::2] *= -1
    errs, ddt, _ = compare(backend, ins, 4, softplus=False, seed=seed)
    assert_close(errs, torch.float32, seed, backend)
    assert torch.all(ddt[:, ::2] == 0) and torch.all(ddt[:, 1::2] != 0), seed


@pytest.mark.parametrize("backend", BACKENDS)
def test_softplus_is_the_identity_above_20(backend):
    """dt + bias above 20 (exp(dt A) underflows to ~0 there): softplus is skipped, as officially."""
    seed = fresh_seed()
    ins = make_inputs(1, 11, 3, 2, 1, 3, seed=seed)
    ins["dt"][:, 3:5] = 19.0 + 3 * torch.rand(2, 3, generator=torch.Generator().manual_seed(seed))
    errs, _, _ = compare(backend, ins, 4, seed=seed)
    assert_close(errs, torch.float32, seed, backend)


# ---------------------------------------------------------------------------- contract details
def test_chunk_size_does_not_change_the_result_beyond_rounding():
    seed = fresh_seed()
    ins = make_inputs(2, 29, 4, 3, 2, 5, seed=seed)
    ref = run("reference", ins, 1)
    for chunk in (1, 3, 8, 29, 64, 256):
        y, hT = run("chunked", ins, chunk)
        assert rel_err(y, ref[0]) < FP32 and rel_err(hT, ref[1]) < FP32, (seed, chunk)


def test_auto_is_chunked_on_the_cpu_and_final_states_are_float32_for_bf16():
    seed = fresh_seed()
    ins = make_inputs(1, 10, 2, 4, 1, 4, dtype=torch.bfloat16, seed=seed)
    y, hT = run("auto", ins, 4)
    y_c, hT_c = run("chunked", ins, 4)
    assert torch.equal(y, y_c) and torch.equal(hT, hT_c)
    assert y.dtype == torch.bfloat16 and hT.dtype == torch.float32
    assert run("chunked", ins, 4, final=False).shape == ins["x"].shape


def test_float64_inputs_run_in_float64():
    seed = fresh_seed()
    ins = {k: (v.double() if v is not None else None) for k, v in make_inputs(1, 12, 2, 3, 1, 4, seed=seed).items()}
    y64, h64 = oracle(*(ins[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")), softplus=True,
                      h0=ins["h0"])
    for backend in BACKENDS:
        y, hT = run(backend, ins, 5)
        assert rel_err(y, y64) < 1e-12 and rel_err(hT, h64) < 1e-12 and y.dtype == torch.float64, (seed, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("h0", [True, False], ids=["h0", "no-h0"])
def test_an_empty_sequence_gives_an_empty_y_and_the_initial_state(backend, dtype, h0):
    """L = 0: y (batch, 0, heads, headdim) in x's dtype, and the final state is the initial one (zeros without
    it), float32 whatever the inputs' dtype, with the full (batch, heads, headdim, N) shape."""
    seed = fresh_seed()
    ins = make_inputs(2, 0, 4, 3, 2, 5, dtype=dtype, h0=h0, seed=seed)
    if h0:
        ins["h0"] = ins["h0"].to(dtype)       # a bf16 initial state still gives a float32 final state
    y, hT = run(backend, ins, 4)
    assert y.shape == (2, 0, 4, 3) and y.dtype == dtype
    assert hT.shape == (2, 4, 3, 5) and hT.dtype == torch.float32
    want = ins["h0"].float() if h0 else torch.zeros(2, 4, 3, 5)
    assert torch.equal(hT, want), seed


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["x", "dt", "A", "B", "C"])
def test_any_float64_input_makes_the_backend_run_in_float64(backend, name):
    """One float64 input is enough for float64 arithmetic (final states in float64): the oracle's promise, and
    the chunked backend's, so that float64 checks of it mean something."""
    seed = fresh_seed()
    ins = make_inputs(1, 6, 2, 3, 1, 4, seed=seed)
    ins[name] = ins[name].double()
    y, hT = run(backend, ins, 4)
    assert hT.dtype == torch.float64, (seed, name)
    ref = {k: (v.double() if v is not None else None) for k, v in ins.items()}
    _, h64 = run("reference", ref, 4)
    assert rel_err(hT, h64) < 1e-12, (seed, name)


def test_chunked_computes_on_the_device_of_its_inputs():
    """On the meta device (shapes and devices, no data) a tensor made without ``device=`` lands on the CPU and
    meets meta tensors, which raises, as it would on CUDA."""
    shapes = dict(x=(1, 8, 2, 3), dt=(1, 8, 2), A=(2,), B=(1, 8, 1, 4), C=(1, 8, 1, 4))
    ins = {k: torch.randn(*v, device="meta") for k, v in shapes.items()}
    y, hT = kernels.ssd(ins["x"], ins["dt"], ins["A"], ins["B"], ins["C"], 4, return_final_states=True,
                        backend="chunked")
    assert y.device.type == hT.device.type == "meta" and y.shape == shapes["x"] and hT.shape == (1, 2, 3, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bf16_x_gets_its_gradient_rounded_once(backend):
    """x is cast to float32 once and used twice (the scan and D x): its float32 gradient is summed first and
    rounded to bf16 once, exactly what a float32 copy of x gets, rounded.  Casting per use would round each
    part and add them in bf16."""
    seed = fresh_seed()
    ins = make_inputs(2, 9, 2, 3, 1, 4, dtype=torch.bfloat16, seed=seed)
    x16 = ins["x"].detach().clone().requires_grad_()
    x32 = ins["x"].detach().float().requires_grad_()
    dy = torch.randn(ins["x"].shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16).float()
    for leaf in (x16, x32):   # dy exact in bf16: both runs backpropagate the same numbers through y's cast
        y = run(backend, {**ins, "x": leaf}, 4, final=False)
        (y.float() * dy).sum().backward()
    assert torch.equal(x16.grad, x32.grad.to(torch.bfloat16)), seed


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_defaults_are_no_softplus_and_y_only(backend):
    from kernels.ssd.chunked import ssd_chunked
    from kernels.ssd.reference import ssd_reference

    fn = {"reference": ssd_reference, "chunked": ssd_chunked}[backend]
    seed = fresh_seed()
    ins = make_inputs(1, 7, 2, 3, 1, 4, softplus=False, seed=seed)
    args = (ins["x"], ins["dt"], ins["A"], ins["B"], ins["C"])
    y = fn(*args)
    assert isinstance(y, torch.Tensor)
    assert torch.equal(y, fn(*args, dt_softplus=False, return_final_states=False))


def test_chunked_keeps_no_per_step_states():
    """Memory promise: nothing autograd saves is as large as the per-step states (batch, L, heads, headdim, N)
    the recurrence would keep; the largest saved tensors are the Q x Q blocks and the chunk states."""
    batch, L, H, P, G, N, Q = 1, 64, 2, 8, 1, 16, 8
    ins = {k: (v.requires_grad_() if v is not None else None) for k, v in
           make_inputs(batch, L, H, P, G, N, seed=fresh_seed()).items()}
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, hT = run("chunked", ins, Q)
    per_step = batch * L * H * P * N
    blocks, chunk_states = batch * H * L * Q, batch * (L // Q) * H * P * N
    assert max(sizes) <= max(blocks, chunk_states, batch * L * H * P) < per_step / 4, (max(sizes), per_step)
    (y.sum() + hT.sum()).backward()


# ---------------------------------------------------------------------------- argument checks
def _bad(**change):
    ins = make_inputs(2, 6, 4, 3, 2, 5)
    ins.update(change)
    return ins


@pytest.mark.parametrize("ins, kw, needle", [
    (_bad(x=torch.zeros(2, 6, 4)), {}, "x must be a (batch, L, heads, headdim) tensor, got (2, 6, 4)"),
    (_bad(dt=torch.zeros(2, 6, 3)), {}, "dt must be (batch, L, heads) = (2, 6, 4), got (2, 6, 3)"),
    (_bad(A=torch.zeros(4, 5)), {}, "A must be (heads,) = (4,), got (4, 5)"),
    (_bad(B=torch.zeros(2, 5, 2, 5)), {}, "B must be (batch, L, groups, N) = (2, 6, groups, N), got (2, 5, 2, 5)"),
    (_bad(C=torch.zeros(2, 6, 2, 4)), {}, "C must be (batch, L, groups, N) like B = (2, 6, 2, 5), got (2, 6, 2, 4)"),
    (_bad(B=torch.zeros(2, 6, 3, 5), C=torch.zeros(2, 6, 3, 5)), {}, "groups=3, which does not divide heads=4"),
    (_bad(D=torch.zeros(3)), {}, "D must be None, (heads,) = (4,) or (heads, headdim) = (4, 3), got (3,)"),
    (_bad(z=torch.zeros(2, 6, 4, 2)), {}, "z must be (batch, L, heads, headdim) like x = (2, 6, 4, 3), got (2, 6, 4, 2)"),
    (_bad(dt_bias=torch.zeros(4, 1)), {}, "dt_bias must be (heads,) = (4,), got (4, 1)"),
    (_bad(h0=torch.zeros(2, 4, 3, 4)), {}, "initial_states must be (batch, heads, headdim, N) = (2, 4, 3, 5), got (2, 4, 3, 4)"),
    (_bad(x=torch.zeros(2, 6, 4, 3, dtype=torch.int32)), {}, "x must be a real float tensor"),
    (_bad(B=torch.zeros(2, 6, 2, 5, device="meta"), C=torch.zeros(2, 6, 2, 5, device="meta")), {},
     "B is on meta but x is on cpu"),
    (_bad(), dict(chunk=0), "chunk_size must be a positive int, got 0"),
    (_bad(), dict(dt_limit=(1.0, 0.5)), "dt_limit must have min <= max"),
    (_bad(), dict(backend="chunkd"), "unknown backend='chunkd' (did you mean 'chunked'?)"),
])
def test_bad_arguments_raise_clear_errors(ins, kw, needle):
    args = dict(chunk=4, softplus=True, backend="reference")
    args.update(kw)
    with pytest.raises(ValueError) as e:
        kernels.ssd(ins["x"], ins["dt"], ins["A"], ins["B"], ins["C"], args["chunk"], D=ins["D"], z=ins["z"],
                    dt_bias=ins["dt_bias"], dt_softplus=True, dt_limit=args.get("dt_limit", (0.0, math.inf)),
                    initial_states=ins["h0"], backend=args["backend"])
    assert needle in str(e.value), str(e.value)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="already interpreting")
def test_ssd_triton_kernels_in_the_interpreter():
    """Run tests/test_ssd_triton.py on the CPU with TRITON_INTERPRET=1 (set before triton is imported): how CI
    checks the fused SSD forward and backward against their float64 oracle."""
    from kernels.selective_scan.testing import run_tests_in_triton_interpreter

    run_tests_in_triton_interpreter(Path(__file__).resolve().parent / "test_ssd_triton.py")
