"""Constant B or C (dim, N), the official non-selective case, in the reference and chunked backends (the
Triton kernel's constant path: tests/test_selective_scan_triton.py), and S6 with ``selective.B: false``
passing (dim, N) instead of expanding it.

The oracle expands the constant matrix to (batch, groups=dim, N, L) and runs the float64 reference on that
(``kernels.selective_scan.testing.expanded_oracle``), so a wrong constant path cannot agree with itself."""
from __future__ import annotations

import secrets

import pytest
import torch

import kernels
from kernels.selective_scan.testing import compare, expanded_oracle, over_fp32_tolerance, random_inputs


def scan(backend):
    return lambda *a, **k: kernels.selective_scan(*a, **k, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("var_B,var_C,groups", [(False, True, None), (True, False, None), (False, False, None),
                                                (False, True, 2), (True, False, 2)])
@pytest.mark.parametrize("L", [1, 37])
def test_constant_B_or_C_matches_float64(backend, var_B, var_C, groups, L):
    seed = secrets.randbits(31)
    ins = random_inputs(2, 4, L, 8, groups, seed=seed, var_B=var_B, var_C=var_C)
    errs = compare(scan(backend), ins, seed=seed, oracle=expanded_oracle)
    bad = over_fp32_tolerance(errs)
    assert not bad, f"seed={seed}: over tolerance {bad} (all {errs})"


def test_constant_B_is_never_materialised_over_L(monkeypatch):
    """The chunked backend keeps a constant B a broadcast view: the largest tensor it builds is the (b, d, L, N)
    work it always does, and a (b, d, N, L) copy of B (what the expanding S6 used to pass) never appears."""
    from kernels.selective_scan import chunked, validate

    seen = []
    real = validate.expand_groups

    def spy(M, dim):
        out = real(M, dim)
        seen.append((tuple(M.shape), out.stride()))
        return out
    monkeypatch.setattr(chunked, "expand_groups", spy)
    ins = random_inputs(1, 4, 64, 8, var_B=False, var_C=False)
    kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], backend="chunked")
    assert seen == []   # constant B and C never go through the expansion


def test_bad_constant_shape_names_the_fix():
    ins = random_inputs(1, 4, 8, 8, var_B=False)
    with pytest.raises(ValueError, match=r"constant \(dim=4, N=8\)"):
        kernels.selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"][:3], ins["C"])


def test_s6_non_selective_B_passes_dim_by_N(monkeypatch):
    """S6 with selective.B/C false hands the scan its (d, N) parameters, not a (batch, d, N, L) expansion;
    the output is what the expanded form gives."""
    import models.s6 as s6mod
    from models.lm import build_block

    torch.manual_seed(0)
    block = build_block(dict(arch="mamba", mixer="s6", d_model=8, d_state=4,
                             selective=dict(delta=True, B=False, C=False)))
    shapes = []
    real = s6mod.selective_scan

    def spy(u, delta, A, B, C, *a, **k):
        shapes.append((tuple(B.shape), tuple(C.shape)))
        return real(u, delta, A, B, C, *a, **k)
    monkeypatch.setattr(s6mod, "selective_scan", spy)
    x = torch.randn(2, 12, 8)
    y = block(x)
    mixer = next(m for m in block.modules() if isinstance(m, s6mod.S6))
    assert shapes and all(s == ((mixer.d, mixer.N), (mixer.d, mixer.N)) for s in shapes), shapes
    # the same block through the old expansion (B, C as (batch, d, N, L)) gives the same output
    monkeypatch.setattr(s6mod, "selective_scan",
                        lambda u, delta, A, B, C, *a, **k: real(u, delta, A, *(M[None, :, :, None].expand(
                            u.shape[0], *M.shape, u.shape[2]) for M in (B, C)), *a, **k))
    torch.testing.assert_close(block(x), y, rtol=1e-5, atol=1e-6)
