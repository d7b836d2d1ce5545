"""The float32 grid of mamba_ssm's own ``selective_scan_fn`` test (state-spaces/mamba,
tests/ops/test_selective_scan.py), run against ssmbench's backends: batch 2, dim 4, N 8, A = -0.5 * rand,
every flag (return_last_state, delta_bias, softplus, z, D, variable or constant B and C), B/C groups 1-2
(groups 2 only with both variable), with its tolerances for the output and last state (rtol 6e-4, atol 2e-3)
and, since the official gradient asserts are commented out, ours for the gradients.

The oracle is the float64 reference with constant B/C expanded (``expanded_oracle``).  In CI the whole flag
grid runs once per backend at one short length (chunked at an odd 33, reference at 8); every official length (8 ... 4096, 372 / 784 / 1134
odd) is marked official_grid, which the default run deselects (6,240 cases, about an hour on 2 CPU cores:
``python -m pytest -m official_grid tests/test_selective_scan_official_grid.py`` runs them); the Triton backend
runs the full grid on a GPU (gpu-marked)."""
from __future__ import annotations

import itertools

import pytest
import torch

import kernels
from kernels.selective_scan.testing import expanded_oracle

OFFICIAL_LENGTHS = [8, 16, 32, 64, 128, 256, 372, 512, 784, 1024, 1134, 2048, 4096]
CI_LENGTH = {"chunked": 33, "reference": 8}
FLAGS = ("return_last_state", "has_delta_bias", "delta_softplus", "has_z", "has_D", "var_B", "var_C", "groups")


def _grid():
    for bits in itertools.product([False, True], repeat=7):
        for groups in (1, 2):
            if groups > 1 and not (bits[5] and bits[6]):
                continue   # the official test skips groups > 1 unless B and C both vary
            yield (*bits, groups)


GRID = list(_grid())


SHORT = ("last", "bias", "softplus", "z", "D", "varB", "varC")


def _id(flags):
    return "-".join([name for name, on in zip(SHORT, flags[:7]) if on] + [f"g{flags[7]}"])


def run_official_case(backend, seqlen, flags, device="cpu"):
    last, has_bias, softplus, has_z, has_D, var_B, var_C, groups = flags
    torch.random.manual_seed(0)
    batch, dim, dstate = 2, 4, 8
    rtol, atol = 6e-4, 2e-3
    A = (-0.5 * torch.rand(dim, dstate, device=device)).requires_grad_()

    def bc(var):
        if not var:
            return torch.randn(dim, dstate, device=device, requires_grad=True)
        shape = (batch, dstate, seqlen) if groups == 1 else (batch, groups, dstate, seqlen)
        return torch.randn(*shape, device=device, requires_grad=True)
    B, C = bc(var_B), bc(var_C)
    D = torch.randn(dim, device=device, requires_grad=True) if has_D else None
    z = torch.randn(batch, dim, seqlen, device=device, requires_grad=True) if has_z else None
    bias = (0.5 * torch.rand(dim, device=device)).requires_grad_() if has_bias else None
    u = torch.randn(batch, dim, seqlen, device=device, requires_grad=True)
    delta = (0.5 * torch.rand(batch, dim, seqlen, device=device)).requires_grad_()
    leaves = [t for t in (u, delta, A, B, C, D, z, bias) if t is not None]
    refs = [t.detach().double().requires_grad_() for t in leaves]
    it = iter(refs)
    u64, d64, A64, B64, C64 = (next(it) for _ in range(5))
    D64 = next(it) if has_D else None
    z64 = next(it) if has_z else None
    b64 = next(it) if has_bias else None

    out = kernels.selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=softplus,
                                 return_last_state=last, backend=backend)
    ref = expanded_oracle(u64, d64, A64, B64, C64, D=D64, z=z64, delta_bias=b64, delta_softplus=softplus,
                          return_last_state=last)
    y, yr = (out[0], ref[0]) if last else (out, ref)
    torch.testing.assert_close(y.double(), yr, rtol=rtol, atol=atol)
    if last:
        torch.testing.assert_close(out[1].double(), ref[1], rtol=rtol, atol=atol)
    g = torch.randn_like(yr)
    grads = torch.autograd.grad(y, leaves, g.to(y.dtype))
    grads_ref = torch.autograd.grad(yr, refs, g)
    names = [n for n, t in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), (u, delta, A, B, C, D, z, bias))
             if t is not None]
    for name, a, r in zip(names, grads, grads_ref):
        scale = r.abs().max().clamp_min(1.0)   # weights summed over batch and L grow with L
        torch.testing.assert_close(a.double(), r, rtol=1e-3, atol=1e-3 * float(scale), msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("flags", GRID, ids=_id)
@pytest.mark.parametrize("backend", list(CI_LENGTH))
def test_official_grid_short(backend, flags):
    run_official_case(backend, CI_LENGTH[backend], flags)


@pytest.mark.official_grid
@pytest.mark.parametrize("flags", GRID, ids=_id)
@pytest.mark.parametrize("seqlen", OFFICIAL_LENGTHS)
@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_official_grid_every_length(backend, seqlen, flags):
    run_official_case(backend, seqlen, flags)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("flags", GRID, ids=_id)
@pytest.mark.parametrize("seqlen", OFFICIAL_LENGTHS)
def test_official_grid_triton(seqlen, flags):
    run_official_case("triton", seqlen, flags, device="cuda")
