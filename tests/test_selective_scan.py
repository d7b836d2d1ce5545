"""The selective scan: chunked and reference backends against a float64 evaluation, argument checks,
and (in a subprocess with TRITON_INTERPRET=1) the Triton kernels on the CPU."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import torch

import kernels
from kernels.selective_scan.testing import (compare, over_fp32_tolerance, random_inputs,
                                            run_tests_in_triton_interpreter)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Decays of exp(dt*A) underflow through the denormal range, which is ~20x slower on x86 CPUs."""
    previous = torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    del previous


def fresh_seed() -> int:
    return secrets.randbits(31)


def scan(backend):
    return lambda *a, **k: kernels.selective_scan(*a, **k, backend=backend)


# (batch, dim, L, N, groups, z, D, bias, softplus): awkward sizes, every optional input on and off
CASES = [
    (2, 17, 1, 16, None, True, True, True, True),  # L = 1 (more channels: a 3-value y can cancel to ~1e-3)
    (2, 4, 37, 16, None, True, True, True, True),
    (1, 4, 37, 1, None, False, False, False, False),
    (2, 6, 100, 16, 3, True, False, True, False),
    (1, 4, 1000, 16, 2, False, True, False, True),
    (1, 2, 4097, 16, None, True, True, True, True),
    (1, 2, 4097, 1, None, False, True, True, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}L{}N{}g{}{}{}{}{}".format(
    *c[:5], *("z" if c[5] else "", "D" if c[6] else "", "b" if c[7] else "", "s" if c[8] else "")))
def test_chunked_matches_float64(case):
    batch, dim, L, N, groups, z, D, bias, softplus = case
    seed = fresh_seed()
    ins = random_inputs(batch, dim, L, N, groups, z=z, D=D, bias=bias, softplus=softplus, seed=seed)
    errs = compare(scan("chunked"), ins, softplus=softplus, seed=seed)
    bad = over_fp32_tolerance(errs)
    assert not bad, f"seed={seed} case={case}: errors over tolerance {bad} (all: {errs})"


@pytest.mark.parametrize("L", [1, 37, 300])
def test_reference_fp32_matches_float64(L):
    seed = fresh_seed()
    ins = random_inputs(2, 3, L, 16, seed=seed)
    errs = compare(scan("reference"), ins, seed=seed)
    bad = over_fp32_tolerance(errs)
    assert not bad, f"seed={seed}: {bad}"


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_bf16_inputs(backend):
    seed = fresh_seed()
    ins = random_inputs(2, 4, 200, 16, 2, dtype=torch.bfloat16, seed=seed)
    errs = compare(scan(backend), ins, grads=False, seed=seed)
    # y comes back in bf16: its error is the rounding of a float32 result, bounded by bf16's unit
    # roundoff 2^-8 = 3.9e-3 (measured 1.4e-3 .. 1.9e-3).  The last state stays float32 and is compared
    # with the float64 scan of the same bf16 values, so it is held to a float32 tolerance (measured
    # 4e-8 .. 8e-8): accumulating in bf16 and casting the state back to float32 gives ~1e-3.
    assert errs["y"] < 4e-3, f"seed={seed}: {errs}"
    assert errs["last_state"] < 1e-5, f"seed={seed}: {errs}"


def test_chunk_size_does_not_change_the_result():
    seed = fresh_seed()
    ins = random_inputs(1, 3, 123, 8, seed=seed)
    args = [ins[k] for k in ("u", "delta", "A", "B", "C")]
    ys = [kernels.selective_scan_chunked(*args, D=ins["D"], z=ins["z"], delta_bias=ins["delta_bias"],
                                         delta_softplus=True, chunk=c) for c in (1, 7, 64, 500)]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], rtol=1e-5, atol=1e-5, msg=f"seed={seed}")


@pytest.mark.parametrize("L,chunk", [(64, None), (48, 16), (47, 16), (49, 16), (5, 1)],
                         ids=["L64-default8", "L48-T16", "L47-T16", "L49-T16", "L5-T1"])
def test_last_state_whatever_the_padding_of_the_last_chunk(L, chunk):
    """The last state is read at the last step of the last chunk, which is h_{L-1} only because padded steps
    keep the state; with no padding (L a multiple of the chunk) that step is the last real one. The
    CASES above all pad, so this holds the last state and its gradients to float64 at pad 0, 1 and T-1."""
    seed = fresh_seed()
    ins = random_inputs(2, 3, L, 8, z=True, D=True, bias=True, softplus=True, seed=seed)
    errs = compare(lambda *a, **k: kernels.selective_scan_chunked(*a, **k, chunk=chunk), ins, seed=seed)
    bad = over_fp32_tolerance(errs)
    assert not bad, f"seed={seed} L={L} chunk={chunk}: errors over tolerance {bad} (all: {errs})"


def test_long_decay_is_numerically_safe():
    """Huge dt*A sums (state forgotten within a chunk) must not overflow in the chunked scan."""
    ins = random_inputs(1, 2, 256, 4, seed=fresh_seed())
    ins["delta"] = ins["delta"] + 30.0          # dt ~ 30, dt*A down to -120 per step
    y = kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], delta_softplus=True,
                               backend="chunked")
    yr = kernels.selective_scan(*(ins[k].double() for k in ("u", "delta", "A", "B", "C")), delta_softplus=True,
                                backend="reference")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), yr, rtol=1e-4, atol=1e-4)


def test_auto_is_chunked_on_cpu():
    assert kernels.resolve_backend("auto", "cpu") == "chunked"
    assert kernels.resolve_backend("auto", "cuda") == "triton"


def _ok():
    return random_inputs(2, 4, 10, 3, seed=0)


@pytest.mark.parametrize("change, needle", [
    (dict(backend="trition"), "did you mean 'triton'"),
    (dict(delta=torch.zeros(2, 4, 9)), "delta must have u's shape"),
    (dict(A=torch.zeros(5, 3)), "A must be (dim=4, N)"),
    (dict(A=torch.zeros(4, 3, dtype=torch.complex64)), "A must be a real float32"),
    (dict(A=torch.zeros(4, 3, dtype=torch.float16)), "A.float()"),
    (dict(B=torch.zeros(2, 3, 3, 10)), "groups=3, which does not divide dim=4"),
    (dict(C=torch.zeros(2, 4, 10)), "C must be (batch=2, N=3, L=10)"),
    (dict(D=torch.zeros(3)), "D must be a (dim=4,) tensor"),
    (dict(z=torch.zeros(2, 4, 11)), "z must have u's shape"),
    (dict(delta_bias=torch.zeros(4, 1)), "delta_bias must be a (dim=4,) tensor"),
    (dict(u=torch.zeros(2, 4, 10, dtype=torch.int64)), "u must be a real float tensor"),
])
def test_bad_arguments_raise_clear_errors(change, needle):
    ins = {**_ok(), **{k: v for k, v in change.items() if k != "backend"}}
    with pytest.raises(ValueError) as e:
        kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], D=ins["D"], z=ins["z"],
                               delta_bias=ins["delta_bias"], backend=change.get("backend", "chunked"))
    assert needle in str(e.value), str(e.value)


def test_triton_backend_on_cpu_without_interpreter_says_what_to_do():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("interpreter is on in this process")
    ins = _ok()
    with pytest.raises(ValueError, match="needs CUDA"):
        kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], backend="triton")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"), reason="already interpreting")
def test_triton_kernels_in_the_interpreter():
    """Run tests/test_selective_scan_triton.py on the CPU with TRITON_INTERPRET=1 (set before import)."""
    run_tests_in_triton_interpreter(ROOT / "tests" / "test_selective_scan_triton.py")


def test_bench_backward_variant_specs():
    """``python -m kernels.bench --variants v2:T=1 v2 v2:bd=4`` (the README's and reports' commands) parse to
    configs of the one backward; the deleted v1 is refused with a hint."""
    pytest.importorskip("triton")
    from dataclasses import replace

    from kernels.bench import variant_config
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG

    assert variant_config("v2") == DEFAULT_CONFIG
    assert variant_config("v2:T=1") == replace(DEFAULT_CONFIG, bwd_split=1)
    assert variant_config("v2:bd=4,ni=4") == replace(DEFAULT_CONFIG, bwd_block_d=4, bwd_n_inner=4)
    with pytest.raises(SystemExit, match="v1 was deleted"):
        variant_config("v1")
    with pytest.raises(SystemExit, match="bad setting 'T=0'"):
        variant_config("v2:T=0")
    with pytest.raises(SystemExit, match="bad setting"):
        variant_config("v2:x=1")


def test_bench_table_ratios_come_from_the_same_run(capsys):
    """kernels.bench's ratio columns divide by the official scan's row of the same table (no typed-in figures):
    empty without an ``official`` row."""
    from types import SimpleNamespace

    import kernels.bench as bench

    assert not hasattr(bench, "CUDA_REF") and not hasattr(bench, "SDPA_REF")
    a = SimpleNamespace(batch=4, dim=2048, N=16)
    rows = [{"L": 4096, "impl": "triton", "fwd_ms": 0.5, "fwdbwd_ms": 2.0, "peak_gb": 0.7},
            {"L": 4096, "impl": "official", "fwd_ms": 1.0, "fwdbwd_ms": 4.0, "peak_gb": 0.9}]
    bench._print_table(rows, a, 4e12, "H200", None, None)
    triton_line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| 4096 | triton"))
    assert "| 0.50 | 0.50 |" in triton_line
    bench._print_table(rows[:1], a, 4e12, "H200", None, None)
    triton_line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| 4096 | triton"))
    assert "| - | - |" in triton_line


# --------------------------------------------------------------------------- an oracle that shares no code


def _naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence written out per (batch, channel, step) in float64 Python/torch scalars-ish: shares no
    code with the backends (they are checked against the reference, which must itself be right)."""
    import math
    batch, dim, L = u.shape
    groups = 1 if B.dim() == 3 else B.shape[1]
    y = torch.zeros(batch, dim, L, dtype=torch.float64)
    last = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            g = d // (dim // groups)
            Bd = B[b] if B.dim() == 3 else B[b, g]
            Cd = C[b] if C.dim() == 3 else C[b, g]
            h = torch.zeros(A.shape[1], dtype=torch.float64)
            for t in range(L):
                dt = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
                if delta_softplus:
                    dt = math.log1p(math.exp(dt))
                h = torch.exp(dt * A[d].double()) * h + dt * Bd[:, t].double() * float(u[b, d, t])
                out = float((Cd[:, t].double() * h).sum()) + (float(D[d]) * float(u[b, d, t]) if D is not None else 0.0)
                if z is not None:
                    zz = float(z[b, d, t])
                    out *= zz / (1 + math.exp(-zz))
                y[b, d, t] = out
            last[b, d] = h
    return y, last


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("options", [dict(), dict(z=True, D=True, bias=True, softplus=True),
                                     dict(groups=2, D=True), dict(bias=True, softplus=False)],
                         ids=["bare", "all", "groups", "bias"])
def test_float64_backends_match_the_written_out_recurrence(backend, options):
    """In float64 every backend must reach ~1e-12 of the recurrence written out by hand (a float32
    computation reaches only ~1e-7): catches a reference that loses float64, or a formula slip shared by
    the reference and a backend."""
    seed = fresh_seed()
    softplus = options.get("softplus", False)
    ins = random_inputs(2, 4, 11, 3, options.get("groups"), z=options.get("z", False), D=options.get("D", False),
                        bias=options.get("bias", False), softplus=softplus, seed=seed)
    ins = {k: (v.double() if v is not None else None) for k, v in ins.items()}
    args = [ins[k] for k in ("u", "delta", "A", "B", "C")]
    kw = {k: ins[k] for k in ("D", "z", "delta_bias") if ins[k] is not None}
    want_y, want_last = _naive_scan(*args, **kw, delta_softplus=softplus)
    y, last = kernels.selective_scan(*args, **kw, delta_softplus=softplus, return_last_state=True, backend=backend)
    assert y.dtype == last.dtype == torch.float64
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12, msg=lambda m: f"seed={seed}: y {m}")
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12, msg=lambda m: f"seed={seed}: last {m}")


def test_scan_functions_defaults_are_no_softplus_and_no_last_state():
    """The backends called directly with only the required arguments: dt = delta as given, y alone back."""
    from kernels.selective_scan.chunked import selective_scan_chunked
    from kernels.selective_scan.reference import selective_scan_reference
    ins = {k: (v.double() if v is not None else None) for k, v in random_inputs(1, 2, 9, 3, softplus=False).items()}
    args = [ins[k] for k in ("u", "delta", "A", "B", "C")]
    want_y, _ = _naive_scan(*args)
    for fn in (selective_scan_reference, selective_scan_chunked):
        y = fn(*args)
        assert isinstance(y, torch.Tensor), fn.__name__
        torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12, msg=fn.__name__)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("extras", [True, False], ids=["D,z", "bare"])
def test_an_empty_sequence_gives_an_empty_y_and_a_zero_float32_state(backend, dtype, extras):
    ins = random_inputs(3, 4, 0, 5, dtype=dtype, D=extras, z=extras)
    y, last = kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], D=ins["D"], z=ins["z"],
                                     return_last_state=True, backend=backend)
    assert y.shape == (3, 4, 0) and y.dtype == dtype
    assert last.shape == (3, 4, 5) and last.dtype == torch.float32 and not last.any()
    y_only = kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], backend=backend)
    assert isinstance(y_only, torch.Tensor) and y_only.shape == (3, 4, 0)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_bf16_inputs_are_computed_in_float32_and_only_y_is_rounded(backend):
    """bf16 inputs are upcast before any arithmetic (z's gate included): the result is exactly the float32
    computation on the same values, rounded to bf16 once at the end."""
    seed = fresh_seed()
    ins = random_inputs(2, 4, 30, 8, 2, dtype=torch.bfloat16, seed=seed)
    up = {k: (v.float() if v is not None else None) for k, v in ins.items()}

    def run(t):
        return kernels.selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"],
                                      delta_bias=t["delta_bias"], delta_softplus=True, return_last_state=True,
                                      backend=backend)
    y, last = run(ins)
    y32, last32 = run(up)
    assert torch.equal(y, y32.to(torch.bfloat16)), f"seed={seed}"
    assert torch.equal(last, last32), f"seed={seed}"


def test_default_chunk_is_a_power_of_two_near_sqrt_L_between_8_and_256():
    """Performance, not correctness (any chunk gives the same result): ~2 sqrt(L) Python steps per scan."""
    from kernels.selective_scan.chunked import default_chunk
    table = {0: 8, 1: 8, 100: 8, 300: 16, 1000: 32, 4096: 64, 5000: 64, 2**16: 256, 2**18: 256, 2**22: 256}
    assert {L: default_chunk(L) for L in table} == table
