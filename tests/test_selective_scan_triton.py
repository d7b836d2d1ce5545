"""The fused Triton kernels against the float64 reference: forward, backward, every option.

Runs on CUDA (gpu-marked tests too), or on the CPU when TRITON_INTERPRET=1 was set before triton was
imported (tests/test_selective_scan.py starts this module that way in a subprocess).  Without either,
the module is skipped.  Every kernel output is NaN-poisoned before the run, so an element a kernel
forgets to write fails the comparison.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import replace

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
CUDA = torch.cuda.is_available() and not INTERPRET
if not (INTERPRET or CUDA):
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)
pytest.importorskip("triton")

from kernels.selective_scan.testing import compare, poisoned_outputs, random_inputs  # noqa: E402
from kernels.selective_scan.triton_backend import ScanConfig, selective_scan_triton  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
# small tiles in the interpreter: several chunks and channel blocks even at tiny sizes
SMALL = ScanConfig(block_d=2, block_l=16, fwd_warps=4, bwd_warps=4)
SPLIT = ScanConfig(block_d=4, block_l=16, fwd_warps=4, bwd_warps=4, bwd_block_d=1)
# every backward variant (ScanConfig.bwd_variant); v2 also with a state split of 2 (tile [L, N/2, D, 2])
VARIANTS = {"v1": {"bwd_variant": "v1"}, "v2": {"bwd_variant": "v2"},
            "v2-ni2": {"bwd_variant": "v2", "bwd_n_inner": 2}}
variants = pytest.mark.parametrize("variant", list(VARIANTS))


def with_variant(cfg: ScanConfig, variant: str) -> ScanConfig:
    return replace(cfg, **VARIANTS[variant])


def fresh_seed() -> int:
    return secrets.randbits(31)


def run_case(batch, dim, L, N, groups=None, z=True, D=True, bias=True, softplus=True, dtype=torch.float32,
             config=SMALL, grads=True, last_state=True):
    seed = fresh_seed()
    ins = random_inputs(batch, dim, L, N, groups, z=z, D=D, bias=bias, softplus=softplus, dtype=dtype,
                        device=DEVICE, seed=seed)

    def fn(*a, **k):
        return selective_scan_triton(*a, **k, config=config)

    with poisoned_outputs():
        errs = compare(fn, ins, softplus=softplus, last_state=last_state, grads=grads, seed=seed)
    return seed, errs


def assert_fp32(seed, errs, what):
    bad = {k: v for k, v in errs.items() if not v <= (1e-5 if k in ("y", "last_state") else 1e-4)}
    assert not bad, f"seed={seed} {what}: over tolerance {bad} (all {errs})"


CASES = [  # (batch, dim, L, N, groups, z, D, bias, softplus)
    (2, 4, 37, 4, None, True, True, True, True),
    (2, 17, 1, 16, None, True, True, True, True),      # L = 1, dim not a multiple of BLOCK_D
    (1, 4, 50, 16, 2, False, False, False, False),      # groups, nothing optional
    (2, 2, 33, 1, None, False, True, True, True),       # N = 1
    (1, 6, 40, 8, 3, True, False, True, False),         # groups of odd size -> BLOCK_D 1
]


@variants
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}L{}N{}g{}".format(*c[:5]))
def test_triton_matches_float64(case, variant):
    batch, dim, L, N, groups, z, D, bias, softplus = case
    seed, errs = run_case(batch, dim, L, N, groups, z, D, bias, softplus, config=with_variant(SMALL, variant))
    assert_fp32(seed, errs, (case, variant))


@variants
def test_triton_different_channel_blocks_forward_and_backward(variant):
    seed, errs = run_case(1, 8, 40, 4, 2, config=with_variant(SPLIT, variant))
    assert_fp32(seed, errs, ("bwd_block_d != block_d", variant))


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_triton_one_warp_default_tiles_several_chunks(variant):
    """The benchmark's tiles (one warp, BLOCK_L 8, bwd BLOCK_D 8, N 16: v2's 8 x 4 lane split), with
    L not a multiple of BLOCK_L, a partial channel block and dlast."""
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG

    seed, errs = run_case(1, 12, 29, 16, config=replace(DEFAULT_CONFIG, bwd_variant=variant))
    assert_fp32(seed, errs, ("default tiles", variant))


def test_triton_unknown_variant_is_an_error():
    ins = random_inputs(1, 2, 8, 2, device=DEVICE)
    with pytest.raises(ValueError, match="bwd_variant"):
        selective_scan_triton(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"],
                              config=ScanConfig(bwd_variant="v9"))


def test_triton_without_last_state_or_grads():
    seed, errs = run_case(1, 4, 20, 4, last_state=False, grads=False)
    assert_fp32(seed, errs, "no last state, no grads")


def test_triton_bf16_inputs():
    seed, errs = run_case(1, 4, 40, 8, 2, dtype=torch.bfloat16, grads=False)
    assert errs["y"] < 1e-2 and errs["last_state"] < 1e-2, f"seed={seed}: {errs}"


@variants
def test_triton_fp16_inputs_with_grads(variant):
    seed, errs = run_case(1, 2, 24, 4, dtype=torch.float16, config=with_variant(SMALL, variant))
    bad = {k: v for k, v in errs.items() if not v < 2e-2}
    assert not bad, f"seed={seed}: {errs}"


def test_triton_non_contiguous_inputs():
    """Strided views (u as a transpose, B/C sliced out of a bigger tensor) must give the same answer."""
    seed = fresh_seed()
    ins = random_inputs(2, 4, 29, 4, seed=seed, device=DEVICE)
    u_t = ins["u"].transpose(1, 2).contiguous().transpose(1, 2)              # stride (d*L, 1, d)
    B_big = torch.cat([ins["B"], torch.randn_like(ins["B"])], dim=1)[:, :4]  # non-contiguous batch stride
    C_big = torch.cat([torch.randn_like(ins["C"]), ins["C"]], dim=2)[:, :, 29:]
    assert not u_t.is_contiguous() and not B_big.is_contiguous() and not C_big.is_contiguous()
    with poisoned_outputs():
        y = selective_scan_triton(u_t, ins["delta"], ins["A"], B_big, C_big, D=ins["D"], z=ins["z"],
                                  delta_bias=ins["delta_bias"], delta_softplus=True, config=SMALL)
        y_ref = selective_scan_triton(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], D=ins["D"], z=ins["z"],
                                      delta_bias=ins["delta_bias"], delta_softplus=True, config=SMALL)
    torch.testing.assert_close(y, y_ref, msg=f"seed={seed}")


def test_triton_default_config_and_dispatch():
    import kernels

    seed = fresh_seed()
    ins = random_inputs(1, 4, 70, 4 if INTERPRET else 16, seed=seed, device=DEVICE)

    def fn(*a, **k):
        return kernels.selective_scan(*a, **k, backend="triton")

    with poisoned_outputs():
        errs = compare(fn, ins, seed=seed)
    assert_fp32(seed, errs, "default config")


# ---- CUDA only: realistic sizes and the default tiles -------------------------------------------
@pytest.mark.parametrize("case", [
    (2, 64, 1000, 16, None, True, True, True, True),
    (1, 32, 4097, 16, 4, False, True, True, True),
    (3, 40, 300, 16, None, True, False, False, True),
], ids=lambda c: "b{}d{}L{}N{}g{}".format(*c[:5]))
@pytest.mark.parametrize("cfg", [None, ScanConfig(8, 32, 8, 8, bwd_block_d=2), ScanConfig(1, 64, 4, 4),
                                 ScanConfig(bwd_variant="v2"), ScanConfig(bwd_variant="v2", bwd_block_d=16),
                                 ScanConfig(8, 32, 8, 8, bwd_block_d=2, bwd_variant="v2", bwd_n_inner=4)],
                         ids=["default", "wide", "narrow", "v2", "v2-bd16", "v2-wide"])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_cuda_sizes(case, cfg):
    batch, dim, L, N, groups, z, D, bias, softplus = case
    from kernels.selective_scan.triton_backend import default_config

    cfg = cfg or default_config(dim, L, N)
    seed, errs = run_case(batch, dim, L, N, groups, z, D, bias, softplus, config=cfg)
    assert_fp32(seed, errs, (case, cfg))


@pytest.mark.parametrize("tiles", [(16, 8, 1, 8, 1), (16, 4, 1, 4, 1), (16, 8, 2, 16, 2), (8, 8, 1, 2, 1),
                                   (16, 8, 1, 4, 2), (32, 8, 1, 8, 2), (16, 4, 1, 8, 2)],
                         ids=lambda t: "fbd{}-bl{}-fw{}-bbd{}-bw{}".format(*t))
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_cuda_swept_tiles(tiles):
    """Every tile shape kernels.bench may pick as the fastest computes the same function."""
    bd, bl, fw, bbd, bw = tiles
    cfg = ScanConfig(block_d=bd, block_l=bl, fwd_warps=fw, bwd_warps=bw, bwd_block_d=bbd)
    seed, errs = run_case(2, 48, 300, 16, None, True, True, True, True, config=cfg)
    assert_fp32(seed, errs, cfg)


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_cuda_bf16_mamba_shape(variant):
    from kernels.selective_scan.triton_backend import default_config

    cfg = replace(default_config(256, 2048, 16), bwd_variant=variant)
    seed, errs = run_case(2, 256, 2048, 16, dtype=torch.bfloat16, config=cfg)
    bad = {k: v for k, v in errs.items() if not v < 1e-2}
    assert not bad, f"seed={seed}: {errs}"
