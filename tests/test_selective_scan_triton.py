"""The fused Triton kernels against the float64 reference: forward (every segmentation T of the
time-parallel forward, T = 1 the single pass), backward (v2, with both of its state splits), every option.

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

from kernels.selective_scan.testing import (compare, over_fp32_tolerance, poisoned_outputs,  # noqa: E402
                                            random_inputs)
from kernels.selective_scan.triton_backend import ScanConfig, selective_scan_triton  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
# small tiles in the interpreter: several chunks and channel blocks even at tiny sizes
SMALL = ScanConfig(block_d=2, block_l=16, fwd_warps=4, bwd_warps=4)
SPLIT = ScanConfig(block_d=4, block_l=16, fwd_warps=4, bwd_warps=4, bwd_block_d=1)
# the backward (v2, the only one) with its default state split and with a split of 2 (tile [L, N/2, D, 2])
VARIANTS = {"v2": {}, "v2-ni2": {"bwd_n_inner": 2}}
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
    bad = over_fp32_tolerance(errs)
    assert not bad, f"seed={seed} {what}: over tolerance {bad} (all {errs})"


CASES = [  # (batch, dim, L, N, groups, z, D, bias, softplus)
    (2, 4, 37, 4, None, True, True, True, True),
    (2, 5, 1, 16, None, True, True, True, True),       # L = 1, dim not a multiple of BLOCK_D
    (1, 4, 50, 16, 2, False, False, False, False),      # groups, nothing optional
    (2, 2, 33, 1, None, False, True, True, True),       # N = 1
    (1, 6, 40, 8, 3, True, False, True, False),         # groups of odd size -> BLOCK_D 1
]


@variants
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}L{}N{}g{}".format(*c[:5]))
def test_triton_matches_float64(case, variant):
    """Every case with every backward; SMALL's auto T is 1 at these sizes (<= 4 chunks of 16), so the
    forward is the single pass (the segmented forward: test_triton_forward_segments_match_float64)."""
    batch, dim, L, N, groups, z, D, bias, softplus = case
    seed, errs = run_case(batch, dim, L, N, groups, z, D, bias, softplus, config=with_variant(SMALL, variant))
    assert_fp32(seed, errs, (case, variant))


@variants
def test_triton_different_channel_blocks_forward_and_backward(variant):
    seed, errs = run_case(1, 8, 40, 4, 2, config=with_variant(SPLIT, variant))
    assert_fp32(seed, errs, ("bwd_block_d != block_d", variant))


def test_triton_one_warp_default_tiles_several_chunks():
    """The benchmark's tiles (one warp, BLOCK_L 8, bwd BLOCK_D 8, N 16: v2's 8 x 4 lane split), with
    L not a multiple of BLOCK_L, a partial channel block and dlast."""
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG

    seed, errs = run_case(1, 12, 29, 16, config=DEFAULT_CONFIG)
    assert_fp32(seed, errs, "default tiles")


# ---- the forward's segments: ScanConfig(fwd_split=T), T = 1 one pass, None auto ---------------------------
# Every CASE once with backward v2 (gradients through the chunk states the segmented forward saved), each
# with a T that exercises a different segmentation (with SMALL's BLOCK_L 16):
SPLIT_T = {
    "b2d4L37N4gNone": 3,     # 3 chunks -> 3 segments of 1 chunk, the last one partial
    "b2d5L1N16gNone": 4,     # 1 chunk: T > chunks degrades to T = 1 (pass 3 alone)
    "b1d4L50N16g2": 3,       # 4 chunks, T 3 -> 2 segments of 2 chunks (L not a multiple of the segment)
    "b2d2L33N1gNone": 8,     # T > chunks (3) -> 3 segments of 1 chunk
    "b1d6L40N8g3": None,     # auto T (1 at this size: segments keep >= FWD_SPLIT_MIN_CHUNKS chunks)
}


def case_id(c):
    return "b{}d{}L{}N{}g{}".format(*c[:5])


def split_cfg(cfg: ScanConfig, T) -> ScanConfig:
    return replace(cfg, fwd_split=T)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_triton_forward_segments_match_float64(case):
    batch, dim, L, N, groups, z, D, bias, softplus = case
    cfg = split_cfg(SMALL, SPLIT_T[case_id(case)])
    seed, errs = run_case(batch, dim, L, N, groups, z, D, bias, softplus, config=cfg)
    assert_fp32(seed, errs, (case, cfg))


def _forward_outputs(ins, cfg):
    from kernels.selective_scan.triton_backend import _forward

    with poisoned_outputs():
        y, last, states, fitted = _forward(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], ins["D"], ins["z"],
                                           ins["delta_bias"], True, cfg, save_states=True, write_last=True)
    return y, last, states, fitted


def _float64_forward(ins, block_l):
    """The float64 reference's y, last state and state before each BLOCK_L chunk ((b, d, chunks, N): what
    the forward saves for the backward)."""
    from kernels.selective_scan.reference import selective_scan_reference

    x = {k: (v.double() if v is not None else None) for k, v in ins.items()}

    def upto(t, **kw):   # the reference over the first t steps
        return selective_scan_reference(x["u"][..., :t], x["delta"][..., :t], x["A"], x["B"][..., :t],
                                        x["C"][..., :t], delta_bias=x["delta_bias"], delta_softplus=True,
                                        return_last_state=True, **kw)

    L = x["u"].shape[2]
    y, last = upto(L, D=x["D"], z=x["z"])
    states = [torch.zeros_like(last)] + [upto(t)[1] for t in range(block_l, L, block_l)]
    return y, last, torch.stack(states, dim=2)


@pytest.mark.parametrize("L,dim,N,Ts", [(70, 3, 4, [(1, 1), (2, 2), (5, 5), (64, 9)]),
                                        (200, 2, 2, [(1, 1), (25, 25)])], ids=["L70", "L200-prologue-3-rounds"])
def test_triton_forward_states_match_float64_for_every_T(L, dim, N, Ts):
    """y, the last state and the saved chunk-start states (what the backward reads) agree with the float64
    reference for every T (the states directly, not only through gradients) and with the single pass T = 1.
    BLOCK_L 8: L 70 is 9 chunks: one pass, 2 segments of 5 chunks, 5 of 2, and T 64 > chunks (9 of 1);
    L 200 with T 25 gives segment 24 a start state folded from 24 summaries, three BLOCK_L rounds."""
    seed = fresh_seed()
    ins = random_inputs(1, dim, L, N, seed=seed, device=DEVICE)
    tiles = ScanConfig(block_d=2, block_l=8)
    ref = _float64_forward(ins, tiles.block_l)
    one_pass = None
    for T, segs in Ts:
        y, last, states, fitted = _forward_outputs(ins, split_cfg(tiles, T))
        assert fitted.fwd_split == segs
        one_pass = one_pass if one_pass is not None else (y, last, states)
        for a, b, r, what in zip((y, last, states), one_pass, ref, ("y", "last", "states")):
            torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"seed={seed} T={T} {what} vs float64: {m}")
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"seed={seed} T={T} {what}: {m}")


def test_triton_forward_segments_fp16_with_grads_and_bf16():
    seed, errs = run_case(1, 2, 24, 4, dtype=torch.float16, config=split_cfg(SMALL, 2))
    assert all(v < 2e-2 for v in errs.values()), f"seed={seed}: {errs}"
    seed, errs = run_case(1, 4, 40, 8, 2, dtype=torch.bfloat16, grads=False, config=split_cfg(SMALL, 3))
    assert errs["y"] < 1e-2 and errs["last_state"] < 1e-2, f"seed={seed}: {errs}"


def test_triton_forward_segments_without_last_state_or_grads():
    seed, errs = run_case(1, 4, 50, 4, last_state=False, grads=False, config=split_cfg(SMALL, 4))
    assert_fp32(seed, errs, "4 segments, no last state, no grads")


def test_triton_forward_auto_segments():
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG, _fit_config, fwd_split_segments

    def segs(batch, dim, L, T=None):
        cfg = _fit_config(split_cfg(DEFAULT_CONFIG, T), dim, L, 1)
        return fwd_split_segments(cfg, batch, dim, L, "cpu")   # 132 SMs off CUDA

    assert segs(1, 1024, 8192) == (8, 128)        # 64 programs -> ~4 per SM with T 8
    assert segs(1, 1024, 2048) == (8, 32)
    assert segs(4, 2048, 4096) == (1, 512)        # 512 programs fill the GPU already
    assert segs(1, 1024, 64) == (2, 4)            # capped: >= 4 chunks per segment
    assert segs(1, 1024, 8192, 16) == (16, 64)    # an explicit T wins
    assert segs(1, 1024, 20, 64) == (3, 1)        # T > chunks: one chunk per segment
    assert segs(1, 1024, 8192, 1) == (1, 1024)    # T = 1: one pass over all chunks


def test_triton_bad_fwd_split_is_an_error():
    ins = random_inputs(1, 2, 8, 2, device=DEVICE)
    for T in (0, -2, 2.0, "4"):
        with pytest.raises(ValueError, match="fwd_split"):
            selective_scan_triton(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"],
                                  config=ScanConfig(fwd_split=T))
    with pytest.raises(TypeError, match="fwd_variant"):   # the fused forward and its switch are gone
        ScanConfig(fwd_variant="fused")


# ---- time-parallel backward (ScanConfig.bwd_split, v2): pass 1 writes each later segment's carry-out of
# the adjoint state from zero and its sum of dt; pass 3 folds those into its carry-in and runs the backward.
# BLOCK_L 4 gives L 37..50 10..13 chunks, so T 3 makes uneven segments and T 64 is capped at one per chunk.

BWD_SPLIT_T = {   # one T per case (the interpreter's time): uneven segments, or capped at one chunk each
    "b2d4L37N4gNone": 64,    # 10 chunks -> 10 one-chunk segments
    "b2d5L1N16gNone": 3,     # 1 chunk: T > chunks degrades to one segment
    "b1d4L50N16g2": 3,       # 13 chunks -> segments of 5, 5 and 3
    "b2d2L33N1gNone": 64,    # 9 chunks -> 9 one-chunk segments
    "b1d6L40N8g3": 3,        # 10 chunks -> 4, 4 and 2
}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_triton_backward_segments_match_float64(case):
    batch, dim, L, N, groups, z, D, bias, softplus = case
    T = BWD_SPLIT_T[case_id(case)]
    cfg = replace(SMALL, block_l=4, bwd_split=T)
    seed, errs = run_case(batch, dim, L, N, groups, z, D, bias, softplus, config=cfg)
    assert_fp32(seed, errs, ("bwd_split", T))


def test_triton_backward_segments_without_last_state_and_with_a_state_split():
    """No dlast (the last segment's carry-in is zero) and v2's N_INNER 2 tiles, T 2."""
    cfg = replace(SMALL, block_l=4, bwd_split=2, bwd_n_inner=2)
    seed, errs = run_case(2, 4, 45, 8, last_state=False, config=cfg)
    assert_fp32(seed, errs, "bwd_split 2, no last state")


def test_triton_backward_segments_carry_across_many_segments():
    """Slow decay (A / 100): the adjoint carry of every later segment reaches the first one, so an error in
    a segment summary or in the fold's decay shows (13 segments of one chunk each)."""
    seed = fresh_seed()
    ins = random_inputs(2, 4, 50, 4, device=DEVICE, seed=seed)
    ins["A"] = ins["A"] / 100

    def fn(*a, **k):
        return selective_scan_triton(*a, **k, config=replace(SMALL, block_l=4, bwd_split=64))

    with poisoned_outputs():
        errs = compare(fn, ins, seed=seed)
    assert_fp32(seed, errs, "13 one-chunk segments, slow decay")


def test_triton_backward_segments_deterministic(deterministic_algorithms):
    cfg = replace(SPLIT, block_l=4, bwd_split=3)
    seed, errs = run_case(1, 8, 41, 4, 2, config=cfg)
    assert_fp32(seed, errs, "bwd_split 3, deterministic")


def test_triton_backward_auto_segments():
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG, _fit_config, bwd_split_segments

    def segs(batch, dim, L, **kw):
        cfg = _fit_config(replace(DEFAULT_CONFIG, **kw), dim, L, 1)
        return bwd_split_segments(cfg, batch, dim, -(-L // cfg.block_l), "cpu")   # 132 SMs off CUDA

    # the H200 A/B of 2026-12-02 (kernels/NOTES.md): batch 1 dim 1024 is 128 programs
    assert segs(1, 1024, 2048) == (1, 256)        # segments would be < 2048 steps
    assert segs(1, 1024, 8192) == (4, 256)
    assert segs(1, 1024, 32768) == (8, 512)
    assert segs(1, 1024, 1 << 20) == (8, 16384)   # ~8 programs per SM reached
    assert segs(1, 256, 1 << 20) == (16, 8192)    # 32 programs would want 32: capped at BWD_SPLIT_MAX
    assert segs(4, 2048, 4096) == (1, 512)        # 1024 programs fill the GPU already
    assert segs(64, 128, 1024) == (1, 128)        # the quick task suites' shape
    assert segs(1, 1024, 8192, bwd_split=2) == (2, 512)             # an explicit T wins


def test_triton_bad_bwd_split_is_an_error():
    ins = {k: (v.requires_grad_() if v is not None and v.is_floating_point() else v)
           for k, v in random_inputs(1, 2, 40, 2, device=DEVICE).items()}

    def backward(cfg):
        y = selective_scan_triton(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], delta_softplus=True,
                                  config=cfg)
        y.sum().backward()

    for T in (0, -2, 2.0):
        with pytest.raises(ValueError, match="bwd_split"):
            backward(replace(SMALL, block_l=4, bwd_split=T))
    with pytest.raises(TypeError, match="bwd_variant"):   # backward v1 and the switch to it are gone
        ScanConfig(bwd_variant="v1")


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
                                 ScanConfig(bwd_block_d=16), ScanConfig(8, 32, 8, 8, bwd_block_d=2, bwd_n_inner=4),
                                 ScanConfig(fwd_split=1), ScanConfig(fwd_split=7), ScanConfig(fwd_split=1000),
                                 ScanConfig(8, 32, 8, 8, bwd_block_d=2, fwd_split=1),
                                 ScanConfig(1, 64, 4, 4, fwd_split=1)],
                         ids=["default", "wide", "narrow", "bwd-bd16", "wide-ni4", "fwd-T1", "fwd-T7",
                              "fwd-T-max", "wide-T1", "narrow-T1"])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_cuda_sizes(case, cfg):
    batch, dim, L, N, groups, z, D, bias, softplus = case
    from kernels.selective_scan.triton_backend import default_config

    cfg = cfg or default_config(dim, L, N)
    seed, errs = run_case(batch, dim, L, N, groups, z, D, bias, softplus, config=cfg)
    assert_fp32(seed, errs, (case, cfg))


@pytest.mark.parametrize("T", [None, 1], ids=["fwd-auto", "fwd-T1"])
@pytest.mark.parametrize("tiles", [(16, 8, 1, 8, 1), (16, 4, 1, 4, 1), (16, 8, 2, 16, 2), (8, 8, 1, 2, 1),
                                   (16, 8, 1, 4, 2), (32, 8, 1, 8, 2), (16, 4, 1, 8, 2)],
                         ids=lambda t: "fbd{}-bl{}-fw{}-bbd{}-bw{}".format(*t))
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_cuda_swept_tiles(tiles, T):
    """Every tile shape kernels.bench may pick as the fastest computes the same function, with the
    forward's auto T (8 segments here) and as one pass."""
    bd, bl, fw, bbd, bw = tiles
    cfg = ScanConfig(block_d=bd, block_l=bl, fwd_warps=fw, bwd_warps=bw, bwd_block_d=bbd, fwd_split=T)
    seed, errs = run_case(2, 48, 300, 16, None, True, True, True, True, config=cfg)
    assert_fp32(seed, errs, cfg)


@pytest.mark.parametrize("variant", ["default", "fwd-T1", "fwd-T8", "bwd-T8"])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_cuda_bf16_mamba_shape(variant):
    """The default config (forward auto T, 16 segments here); the forward as one pass and with T 8;
    the time-parallel backward with 8 segments."""
    from kernels.selective_scan.triton_backend import default_config

    cfg = default_config(256, 2048, 16)
    if variant.startswith("fwd-T"):
        cfg = split_cfg(cfg, int(variant[5:]))
    elif variant.startswith("bwd-T"):
        cfg = replace(cfg, bwd_split=int(variant[5:]))
    seed, errs = run_case(2, 256, 2048, 16, dtype=torch.bfloat16, config=cfg)
    bad = {k: v for k, v in errs.items() if not v < 1e-2}
    assert not bad, f"seed={seed}: {errs}"


# --------------------------------------------------------------------------------------------
# deterministic mode: under torch.use_deterministic_algorithms(True) the backward sums dB and dC per
# channel block in slices of their own, in a fixed order, instead of with atomics in any order.


@pytest.fixture
def deterministic_algorithms():
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)


@pytest.mark.parametrize("variant,case", [("v2", (1, 8, 37, 16, 2)), ("v2-ni2", (2, 6, 33, 8, None))],
                         ids=["v2-groups2", "v2-ni2"])
def test_triton_deterministic_backward_matches_float64(deterministic_algorithms, case, variant):
    """Several channel blocks per group (bwd BLOCK_D 1), so the per-block slices must be summed right."""
    batch, dim, L, N, groups = case
    seed, errs = run_case(batch, dim, L, N, groups, config=with_variant(SPLIT, variant))
    assert_fp32(seed, errs, ("deterministic", variant))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_triton_deterministic_backward_is_bitwise_repeatable(deterministic_algorithms):
    """A quick-suite Mamba layer's shape (batch 64, d_inner 128, L 1024, N 16; 16 channel blocks share dB
    and dC): every gradient identical over repeated backwards."""
    seed = fresh_seed()
    ins = random_inputs(64, 128, 1024, 16, dtype=torch.bfloat16, device=DEVICE, seed=seed)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in ins.items() if v is not None}
    dy = torch.randn(ins["u"].shape, device=DEVICE).to(ins["u"].dtype)

    def grads():
        y = selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                  D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True)
        return dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), dy)))

    first = grads()
    for _ in range(3):
        again = grads()
        for name in first:
            assert torch.equal(first[name], again[name]), f"seed={seed}: d{name} differs between two backwards"


# ---- constant B / C (dim, N): the official non-selective case, read as [N, BD] tiles, never expanded ----------
CONST_CASES = [  # (batch, dim, L, N, groups, var_B, var_C, fwd_split)
    (2, 4, 37, 4, None, False, True, 1),
    (1, 6, 40, 8, 3, True, False, 1),      # a grouped (3 groups) time-varying B beside a constant C
    (2, 3, 33, 4, None, False, False, 3),  # both constant, forward in 3 segments, partial channel block
]


@pytest.mark.parametrize("case,variant", list(zip(CONST_CASES, ["v2", "v2-ni2", "v2"])),
                         ids=lambda c: "b{}d{}L{}N{}g{}B{}C{}T{}".format(
                             *c[:5], "v" if c[5] else "c", "v" if c[6] else "c", c[7]) if isinstance(c, tuple) else c)
def test_triton_constant_B_or_C_matches_float64(case, variant):
    """Each case with one backward variant (both variants are covered across the cases; the interpreter is slow)."""
    from kernels.selective_scan.testing import expanded_oracle

    batch, dim, L, N, groups, var_B, var_C, T = case
    seed = fresh_seed()
    ins = random_inputs(batch, dim, L, N, groups, device=DEVICE, seed=seed, var_B=var_B, var_C=var_C)
    cfg = split_cfg(with_variant(SMALL, variant), T)

    def fn(*a, **k):
        return selective_scan_triton(*a, **k, config=cfg)

    with poisoned_outputs():
        errs = compare(fn, ins, seed=seed, oracle=expanded_oracle)
    assert_fp32(seed, errs, (case, variant))
