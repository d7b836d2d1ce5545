"""Benchmark of the selective-scan backends against causal SDPA attention, on CUDA.

    python -m kernels.bench [--L 1024 4096 16384 65536] [--batch 4] [--dim 2048] [--out FILE] [--sweep]
    python -m kernels.bench --variants v2:T=1 v2 [v2:bd=4 ...] --L 4096 8192    (backward A/B, see below)

Shape as DESIGN.md's reference table: batch 4, dim 2048, N 16, bf16, delta_softplus, D skip, no z.
Per L it checks triton against a float64 oracle (output and every gradient), times forward and
forward+backward of ``triton``, ``chunked``, ``reference`` (short L only) and causal SDPA (16 heads
x 64) with ``triton.testing.do_bench`` (median, L2 flushed), measures peak memory of one fwd+bwd
(inputs included), and prints a table last with ratios to the official mamba_ssm CUDA scan timed in the same
run (``official``: mamba_ssm's ``selective_scan_fn`` where the package is installed; the peers build,
``python -m harness.kinds.bench.peers build``, installs it offline; without it the ratio columns are empty --
no typed-in reference numbers), and the memory floor (bytes / copy bandwidth measured in this run) and exp
floor (4.07e12 exp2/s).
Does not import ``harness`` (the device machine has no pydantic).

``--variants`` instead compares settings of the backward kernel side by side in one run: per L, causal
SDPA first, then per variant a check against the float64 oracle (batch 1, bf16 inputs; "FAIL" past 2e-2
relative error) and fwd / fwd+bwd timings with DEFAULT_CONFIG changed as the variant says.  A variant is
``v2[:key=value,...]`` (v2: the backward kernel, the only one since its predecessor v1 was deleted on
2026-12-02), keys bd (bwd_block_d), ni (bwd_n_inner), bl (block_l), w (bwd_warps), fbd (block_d),
u (unroll), T (bwd_split: segments of the time-parallel backward; without T the variant picks T per
shape, ``T=1`` is a single pass).
E.g. ``--variants v2:T=1 v2 v2:T=4 v2:T=16 --batch 1 --dim 1024 --L 2048 8192 32768``.

``--fwd-variants`` compares settings of the forward kernel (the time-parallel "split" kernel, the only
forward) in one run over ``--shapes`` (default: batch 1 dim 1024 at L 2048 8192 32768, the Mamba paper's
Figure 8 shape, and batch 4 dim 2048 at L 4096): per shape causal SDPA, then per variant a check against
the float64 oracle (batch 1, dim <= 256, same L and the same T; bf16 inputs; backward v2 through the
states the forward saved) and fwd / fwd+bwd timings.  A variant is ``split[:T=8,fbd=16,bl=8,w=1,u=1]``
(T: ScanConfig.fwd_split, auto when absent).  ``split:T=1`` is one pass over L per program: the former
``fused`` forward kernel's single pass (deleted 2026-12-02; it is no longer a variant name).
E.g. ``python -m kernels.bench --fwd-variants split split:T=1 split:T=4 split:T=16``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import gc
import json
import math
import sys
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from kernels.roofline import selective_scan_bytes, selective_scan_exps
from kernels.selective_scan.chunked import selective_scan_chunked
from kernels.selective_scan.reference import selective_scan_reference

EXP_PER_S = 4.07e12
MAX_L = {"chunked": 4096, "reference": 1024}


@functools.lru_cache(maxsize=1)
def official_scan() -> Optional[Callable]:
    """mamba_ssm's selective_scan_fn (the official CUDA scan), or None (with a line saying why) when it is not
    importable here."""
    from kernels.optional_import import import_attr   # also when only mamba_ssm's __init__ fails

    try:
        return import_attr("mamba_ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
    except Exception as e:   # not installed, or its extension does not import
        print(f"  official: skipped (mamba_ssm not importable: {type(e).__name__}: {str(e)[:120]}; "
              "python -m harness.kinds.bench.peers build installs it offline)", flush=True)
        return None


def make_inputs(batch, dim, L, N, dtype=torch.bfloat16, device="cuda", seed=0, requires_grad=False):
    """Mamba-like inputs: S4D-Real A, dt bias from the Mamba init, bf16 u/delta/B/C."""
    g = torch.Generator(device=device).manual_seed(seed)
    u = torch.randn(batch, dim, L, device=device, generator=g).to(dtype)
    delta = (0.5 * torch.randn(batch, dim, L, device=device, generator=g)).to(dtype)
    A = -torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(dim, 1)
    B = torch.randn(batch, N, L, device=device, generator=g).to(dtype)
    C = torch.randn(batch, N, L, device=device, generator=g).to(dtype)
    D = torch.ones(dim, device=device)
    dt0 = torch.exp(torch.rand(dim, device=device, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    bias = dt0 + torch.log(-torch.expm1(-dt0))          # inverse softplus, as mamba_simple.py
    ins = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, delta_bias=bias)
    if requires_grad:
        for t in ins.values():
            t.requires_grad_(True)
    return ins


def scan_fn(impl: str, config=None) -> Callable:
    def run(ins):
        kw = dict(D=ins["D"], delta_bias=ins["delta_bias"], delta_softplus=True)
        args = (ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"])
        if impl == "triton":
            from kernels.selective_scan.triton_backend import selective_scan_triton
            return selective_scan_triton(*args, **kw, config=config)
        if impl == "chunked":
            return selective_scan_chunked(*args, **kw)
        if impl == "official":
            return official_scan()(*args, **kw)
        return selective_scan_reference(*args, **kw)
    return run


def sdpa_inputs(batch, L, heads=16, head_dim=64, requires_grad=False):
    qkv = [torch.randn(batch, heads, L, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=requires_grad)
           for _ in range(3)]
    return dict(q=qkv[0], k=qkv[1], v=qkv[2])


def sdpa_fn(ins):
    return F.scaled_dot_product_attention(ins["q"], ins["k"], ins["v"], is_causal=True)


def bench_ms(fn: Callable, budget_ms: float = 400.0) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=int(budget_ms), return_mode="median"))


def time_impl(name, make, fn, wants_bwd=True, budget_ms=400.0):
    """fwd ms, fwd+bwd ms, peak GB of one fwd+bwd (inputs included); None where OOM."""
    out = {"fwd_ms": None, "fwdbwd_ms": None, "peak_gb": None}
    try:
        ins = make(False)
        with torch.no_grad():
            out["fwd_ms"] = bench_ms(lambda: fn(ins), budget_ms)
        del ins
        if wants_bwd:
            _clean()
            ins = make(True)
            dy = torch.randn_like(fn(ins).detach())
            _clean()
            torch.cuda.reset_peak_memory_stats()
            fn(ins).backward(dy)
            torch.cuda.synchronize()
            out["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
            leaves = [t for t in ins.values() if t.requires_grad]
            out["fwdbwd_ms"] = bench_ms(lambda: (fn(ins).backward(dy), [setattr(t, "grad", None) for t in leaves]),
                                        budget_ms)
            del ins, dy
    except torch.cuda.OutOfMemoryError as e:
        print(f"  {name}: OOM ({str(e).splitlines()[0][:100]})", flush=True)
    _clean()
    return out


def _clean():
    gc.collect()
    torch.cuda.empty_cache()


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy."""
    src = torch.empty(2 ** 28, device="cuda", dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), 200)
    src = dst = None  # free before the timings that follow
    _clean()
    return 2 * 2 ** 30 / (ms * 1e-3)


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def check_correctness(dim, L, N, config=None, seed=1) -> Dict[str, float]:
    """triton (bf16 inputs) vs a float64 chunked oracle on the same values, batch 1: y and all grads."""
    ins = make_inputs(1, dim, L, N, seed=seed, requires_grad=True)
    with torch.no_grad():
        ins["u"].copy_(ins["u"].float().sin() * 2)  # fresh values, different from the timing inputs
    y = scan_fn("triton", config)(ins)
    dy = torch.randn_like(y)
    y.backward(dy)
    ref_ins = {k: v.detach().double().requires_grad_(True) for k, v in ins.items()}
    yr = selective_scan_chunked(ref_ins["u"], ref_ins["delta"], ref_ins["A"], ref_ins["B"], ref_ins["C"],
                                D=ref_ins["D"], delta_bias=ref_ins["delta_bias"], delta_softplus=True)
    yr.backward(dy.double())
    errs = {"y": rel(y, yr)}
    for k in ins:
        errs["d" + k] = rel(ins[k].grad, ref_ins[k].grad)
    del ins, ref_ins, y, yr
    _clean()
    return errs


# (BLOCK_D, BLOCK_L, warps) worth timing: few or no register spills on sm_90 (ptxas -v; kernels/NOTES.md)
FWD_SWEEP = [(16, 8, 1, 1), (16, 4, 1, 1), (8, 8, 1, 1), (16, 8, 2, 1), (32, 8, 1, 1)]
BWD_SWEEP = [(8, 8, 1, 1), (4, 8, 1, 1), (2, 8, 1, 1), (8, 8, 2, 1), (16, 8, 2, 1), (4, 8, 2, 1), (4, 4, 1, 1),
             (8, 4, 1, 1), (8, 4, 2, 1)]


def sweep(batch, dim, L, N, budget_ms=150.0):
    """Time the tile configs at one L: fwd alone, then fwd+bwd with the best fwd tiles of that BLOCK_L."""
    from kernels.selective_scan.triton_backend import ScanConfig

    rows = []
    best_fwd, best_by_bl, best_bwd = None, {}, None
    ins = make_inputs(batch, dim, L, N)
    for bd, bl, w, un in FWD_SWEEP:
        cfg = ScanConfig(block_d=bd, block_l=bl, fwd_warps=w, unroll=un)
        try:
            with torch.no_grad():
                ms = bench_ms(lambda: scan_fn("triton", cfg)(ins), budget_ms)
        except Exception as e:  # a config that fails to compile (e.g. out of resources) is skipped
            print(f"  sweep fwd {cfg}: failed {type(e).__name__}: {str(e)[-300:]}", flush=True)
            continue
        rows.append({"pass": "fwd", **cfg.__dict__, "ms": ms})
        print(f"  sweep fwd bd={bd} bl={bl} w={w} unroll={un}: {ms:.4f} ms", flush=True)
        if best_fwd is None or ms < best_fwd[1]:
            best_fwd = (cfg, ms)
        if bl not in best_by_bl or ms < best_by_bl[bl][1]:
            best_by_bl[bl] = (cfg, ms)
    ins = None
    if best_fwd is None:
        raise RuntimeError("no forward config compiled; see the errors above")
    for bd, bl, w, un in BWD_SWEEP:
        f = best_by_bl.get(bl, best_fwd)[0]
        if f.block_l != bl:
            continue
        # the fwd and bwd share `unroll`; keep the fwd's best BLOCK_D/warps for this BLOCK_L
        cfg = ScanConfig(block_d=f.block_d, block_l=bl, fwd_warps=f.fwd_warps, bwd_warps=w, bwd_block_d=bd, unroll=un)
        try:
            r = time_impl("triton", lambda g: make_inputs(batch, dim, L, N, requires_grad=g),
                          scan_fn("triton", cfg), budget_ms=budget_ms)
        except Exception as e:
            print(f"  sweep bwd {cfg}: failed {type(e).__name__}: {str(e)[-300:]}", flush=True)
            continue
        rows.append({"pass": "fwd+bwd", **cfg.__dict__, "ms": r["fwdbwd_ms"], "fwd_ms": r["fwd_ms"]})
        print(f"  sweep fwd+bwd bwd_bd={bd} bl={bl} w={w} unroll={un} (fwd bd={f.block_d} w={f.fwd_warps}): "
              f"fwd {r['fwd_ms']:.4f} fwd+bwd {r['fwdbwd_ms']:.4f} ms", flush=True)
        if r["fwdbwd_ms"] is not None and (best_bwd is None or r["fwdbwd_ms"] < best_bwd[1]):
            best_bwd = (cfg, r["fwdbwd_ms"])
    return best_fwd, best_bwd, rows


VARIANT_KEYS = {"bd": "bwd_block_d", "ni": "bwd_n_inner", "bl": "block_l", "w": "bwd_warps", "fbd": "block_d",
                "u": "unroll", "T": "bwd_split"}


def variant_config(spec: str):
    """'v2:bd=4,ni=8' -> DEFAULT_CONFIG with bwd_block_d 4, bwd_n_inner 8; 'v2' -> DEFAULT_CONFIG."""
    from dataclasses import replace

    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG

    name, _, rest = spec.partition(":")
    if name != "v2":
        hint = " (backward v1 was deleted on 2026-12-02)" if name == "v1" else ""
        raise SystemExit(f"--variants: unknown variant {name!r} in {spec!r} (valid: v2[:key=value,...]){hint}")
    return replace(DEFAULT_CONFIG, **_settings(spec, rest, VARIANT_KEYS, "--variants"))


def _settings(spec: str, rest: str, keys: dict, flag: str) -> dict:
    """'bd=4,ni=8' -> {ScanConfig field: int} through ``keys``; a bad item exits naming ``flag``."""
    kw = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        if k not in keys or not v.isdigit() or int(v) < 1:
            raise SystemExit(f"{flag}: bad setting {item!r} in {spec!r} (keys: {', '.join(keys)})")
        kw[keys[k]] = int(v)
    return kw


FWD_VARIANT_KEYS = {"T": "fwd_split", "fbd": "block_d", "bl": "block_l", "w": "fwd_warps", "u": "unroll"}
FWD_SHAPES = ["1x1024x2048", "1x1024x8192", "1x1024x32768", "4x2048x4096"]


def fwd_variant_config(spec: str):
    """'split:T=8' -> DEFAULT_CONFIG with fwd_split 8; 'split' -> DEFAULT_CONFIG (auto T)."""
    from dataclasses import replace

    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG

    name, _, rest = spec.partition(":")
    if name != "split":
        hint = " ('fused' was deleted: split:T=1 is its single pass)" if name == "fused" else ""
        raise SystemExit(f"--fwd-variants: unknown variant {name!r} in {spec!r} (valid: split[:T=...]){hint}")
    kw = {"fwd_split": None, **_settings(spec, rest, FWD_VARIANT_KEYS, "--fwd-variants")}
    return replace(DEFAULT_CONFIG, **kw)


def parse_shape(spec: str):
    try:
        b, d, L = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--shapes: {spec!r} is not BATCHxDIMxL (e.g. 1x1024x8192)") from None
    return b, d, L


def resolved_split(cfg, batch, dim, L, N):
    """(T, programs of one pass) the backend will launch for cfg at this shape."""
    from kernels.selective_scan.triton_backend import _fit_config, fwd_split_segments

    fitted = _fit_config(cfg, dim, L, 1)
    T = fwd_split_segments(fitted, batch, dim, L, "cuda")[0]
    return T, -(-dim // fitted.block_d) * batch * T


def check_then_time(name, check_dim, check_cfg, batch, dim, L, N, cfg, budget_ms=400.0, width=10, note=""):
    """One variant of a side-by-side comparison: checked against the float64 oracle (batch 1,
    ``check_dim`` channels, ``check_cfg``), then, unless the check could not run, timed at
    (batch, dim, L) with ``cfg``.  -> (errors per output or None, worst error, timings, failed)."""
    label = f"{name}{note}"
    try:
        errs = check_correctness(check_dim, L, N, check_cfg)
    except Exception as e:  # a variant that does not compile or run: report, go on
        print(f"  {label}: failed {type(e).__name__}: {str(e)[-400:]}", flush=True)
        return None, float("inf"), {"fwd_ms": None, "fwdbwd_ms": None, "peak_gb": None}, True
    worst = max(errs.values())
    bad = not worst <= 2e-2
    print(f"  {label}: vs float64 oracle " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
          + ("  FAIL" if bad else ""), flush=True)
    r = time_impl("triton", lambda g: make_inputs(batch, dim, L, N, requires_grad=g), scan_fn("triton", cfg),
                  budget_ms=budget_ms)
    print(f"  {name:{width}s} fwd {_fmt(r['fwd_ms'], 4)} ms  fwd+bwd {_fmt(r['fwdbwd_ms'], 4)} ms  "
          f"peak {_fmt(r['peak_gb'], 2)} GB", flush=True)
    return errs, worst, r, bad


def compare_fwd_variants(a, dev, stamp, bw) -> int:
    """Forward variants side by side (and SDPA) per shape; returns 1 if a variant failed its check."""
    from dataclasses import replace

    specs = [(v, fwd_variant_config(v)) for v in a.fwd_variants]
    rows, records, failed = [], [], False
    for shape in a.shapes:
        batch, dim, L = parse_shape(shape)
        print(f"batch={batch} dim={dim} L={L}", flush=True)
        s = time_impl("sdpa", lambda g: sdpa_inputs(batch, L, requires_grad=g), sdpa_fn, budget_ms=a.budget_ms)
        print(f"  sdpa      fwd {_fmt(s['fwd_ms'], 4)} ms  fwd+bwd {_fmt(s['fwdbwd_ms'], 4)} ms", flush=True)
        rows.append({"shape": (batch, dim, L), "variant": "sdpa", "T": None, "programs": None, "err": None, **s})
        for name, cfg in specs:
            T, programs = resolved_split(cfg, batch, dim, L, a.N)
            # the oracle check runs at batch 1 and <= 256 channels with the T resolved for the timed shape
            errs, worst, r, bad = check_then_time(name, min(dim, 256), replace(cfg, fwd_split=T), batch, dim, L,
                                                  a.N, cfg, budget_ms=a.budget_ms, width=12, note=f" (T {T})")
            failed |= bad
            rows.append({"shape": (batch, dim, L), "variant": name, "T": T, "programs": programs, "err": worst, **r})
            if errs is not None:
                records.append({"kind": "fwd_variant", "batch": batch, "dim": dim, "L": L, "variant": name, "T": T,
                                "programs": programs, "config": str(cfg), **errs, **r})
    if a.out:
        with open(a.out, "w") as f:
            for r in records:
                f.write(json.dumps({"device": dev, "date": stamp, "N": a.N, **r}) + "\n")
    print(f"\n## {dev}: forward variants; N {a.N}, bf16, softplus, D; backward v2; "
          f"copy {bw / 1e12:.2f} TB/s")
    print("| batch | dim | L | variant | T | programs | fwd ms | fwd / first | fwd / SDPA fwd | fwd+bwd ms | "
          "fwd+bwd / SDPA | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        at = [r for r in rows if r["shape"] == shape]
        sd = next((r for r in at if r["variant"] == "sdpa"), {})
        first = next((r["fwd_ms"] for r in at if r["variant"] != "sdpa"), None)
        for r in at:
            f, fb = r["fwd_ms"], r["fwdbwd_ms"]
            vs_first = f / first if (f and first and r["variant"] != "sdpa") else None
            err = "-" if r["err"] is None else f"{r['err']:.1e}"
            print(f"| {shape[0]} | {shape[1]} | {shape[2]} | {r['variant']} | {r['T'] or '-'} | "
                  f"{r['programs'] or '-'} | {_fmt(f)} | {_fmt(vs_first)} | "
                  f"{_fmt(f / sd['fwd_ms'] if (f and sd.get('fwd_ms')) else None)} | {_fmt(fb)} | "
                  f"{_fmt(fb / sd['fwdbwd_ms'] if (fb and sd.get('fwdbwd_ms')) else None)} | {err} |")
    return 1 if failed else 0


def compare_variants(a, dev, stamp, bw) -> int:
    """Backward variants side by side (and SDPA) per L; returns 1 if a variant failed its check."""
    cfgs = [(v, variant_config(v)) for v in a.variants]
    rows, records, failed = [], [], False
    for L in a.L:
        print(f"L={L}", flush=True)
        s = time_impl("sdpa", lambda g: sdpa_inputs(a.batch, L, requires_grad=g), sdpa_fn)
        print(f"  sdpa      fwd {_fmt(s['fwd_ms'], 4)} ms  fwd+bwd {_fmt(s['fwdbwd_ms'], 4)} ms", flush=True)
        rows.append({"L": L, "variant": "sdpa", "cfg": None, "err": None, **s})
        for name, cfg in cfgs:
            errs, worst, r, bad = check_then_time(name, a.dim, cfg, a.batch, a.dim, L, a.N, cfg)
            failed |= bad
            rows.append({"L": L, "variant": name, "cfg": cfg, "err": worst, **r})
            if errs is not None:
                records.append({"kind": "variant", "L": L, "variant": name, "config": str(cfg), **errs, **r})
    if a.out:
        with open(a.out, "w") as f:
            for r in records:
                meta = {"device": dev, "date": stamp, "batch": a.batch, "dim": a.dim, "N": a.N}
                f.write(json.dumps({**meta, **r}) + "\n")
    print(f"\n## {dev}: backward variants; batch {a.batch}, dim {a.dim}, N {a.N}, bf16, softplus, D; "
          f"copy {bw / 1e12:.2f} TB/s")
    print("| L | variant | fwd ms | fwd+bwd ms | bwd ms (diff) | fwd+bwd / first variant | fwd+bwd / SDPA | "
          "max rel err | config |")
    print("|---|---|---|---|---|---|---|---|---|")
    for L in a.L:
        at = [r for r in rows if r["L"] == L]
        sd = next((r["fwdbwd_ms"] for r in at if r["variant"] == "sdpa"), None)
        first = next((r["fwdbwd_ms"] for r in at if r["variant"] != "sdpa"), None)
        for r in at:
            fb, f = r["fwdbwd_ms"], r["fwd_ms"]
            bwd = fb - f if (fb and f) else None
            c = r["cfg"]
            cs = "-" if c is None else (f"bwd_bd={c.bwd_block_d} ni={c.bwd_n_inner} bl={c.block_l} "
                                        f"w={c.bwd_warps} fwd_bd={c.block_d} unroll={c.unroll}")
            err = "-" if r["err"] is None else f"{r['err']:.1e}"
            vs_first = fb / first if (fb and first and r["variant"] != "sdpa") else None
            print(f"| {L} | {r['variant']} | {_fmt(f)} | {_fmt(fb)} | {_fmt(bwd)} | {_fmt(vs_first)} | "
                  f"{_fmt(fb / sd if (fb and sd) else None)} | {err} | {cs} |")
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--N", type=int, default=16)
    p.add_argument("--out", default=None, help="write one JSON line per measurement here")
    p.add_argument("--sweep", action="store_true", help="first time a grid of tile configs at L=4096")
    p.add_argument("--impls", nargs="+", default=["triton", "official", "chunked", "reference", "sdpa"],
                   help="official: mamba_ssm's selective_scan_fn, skipped when not installed")
    p.add_argument("--variants", nargs="+", default=None,
                   help="compare backward settings instead (v2[:bd=8,ni=8,T=1,...]; see the module doc)")
    p.add_argument("--fwd-variants", nargs="+", default=None,
                   help="compare forward variants instead (split[:T=8,...]; split:T=1 is one pass; see the module doc)")
    p.add_argument("--shapes", nargs="+", default=FWD_SHAPES, help="--fwd-variants shapes, BATCHxDIMxL")
    p.add_argument("--budget-ms", type=float, default=300.0, help="--fwd-variants: do_bench budget per timing")
    a = p.parse_args(argv)
    if a.variants and a.fwd_variants:
        p.error("--variants and --fwd-variants are separate runs")
    for v in a.variants or []:
        variant_config(v)   # bad specs fail before any GPU work
    for v in a.fwd_variants or []:
        fwd_variant_config(v)
    for sh in a.shapes:
        parse_shape(sh)
    if not torch.cuda.is_available():
        print("kernels.bench needs CUDA (no GPU found)", file=sys.stderr)
        return 2
    dev = torch.cuda.get_device_name()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {dev}, torch {torch.__version__}, {stamp}; cmd: python -m kernels.bench {' '.join(argv or sys.argv[1:])}")
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s (read+write)", flush=True)
    if a.variants:
        return compare_variants(a, dev, stamp, bw)
    if a.fwd_variants:
        return compare_fwd_variants(a, dev, stamp, bw)
    records = []
    cfg_fwd = cfg_bwd = None   # None: the backend's defaults (INFERENCE_CONFIG / DEFAULT_CONFIG)
    if a.sweep:
        best_fwd, best_bwd, rows = sweep(a.batch, a.dim, 4096, a.N)
        records += [{"kind": "sweep", **r} for r in rows]
        print(f"best fwd {best_fwd}; best fwd+bwd {best_bwd}", flush=True)
        cfg_fwd = best_fwd[0] if best_fwd else None
        cfg_bwd = best_bwd[0] if best_bwd else None
    table = []
    for L in a.L:
        print(f"L={L}", flush=True)
        if L <= 4096 and "triton" in a.impls:
            errs = check_correctness(a.dim, L, a.N, cfg_bwd)
            print("  triton vs float64 oracle (bf16 inputs, batch 1): "
                  + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
            records.append({"kind": "check", "L": L, **errs})
        for impl in a.impls:
            if L > MAX_L.get(impl, 1 << 30) or (impl == "official" and official_scan() is None):
                continue
            if impl == "sdpa":
                r = time_impl(impl, lambda g: sdpa_inputs(a.batch, L, requires_grad=g), sdpa_fn,
                              budget_ms=400 if L < 65536 else 3000)
            elif impl == "triton":
                rf = time_impl(impl, lambda g: make_inputs(a.batch, a.dim, L, a.N, requires_grad=g),
                               scan_fn(impl, cfg_fwd), wants_bwd=False)
                r = time_impl(impl, lambda g: make_inputs(a.batch, a.dim, L, a.N, requires_grad=g),
                              scan_fn(impl, cfg_bwd))
                r["fwd_ms"] = min(x for x in (rf["fwd_ms"], r["fwd_ms"]) if x is not None)
            else:
                r = time_impl(impl, lambda g: make_inputs(a.batch, a.dim, L, a.N, requires_grad=g), scan_fn(impl),
                              wants_bwd=impl != "reference", budget_ms=1000 if impl == "reference" else 400)
            print(f"  {impl:9s} fwd {r['fwd_ms']} ms  fwd+bwd {r['fwdbwd_ms']} ms  peak {r['peak_gb']} GB", flush=True)
            table.append({"L": L, "impl": impl, **r})
            records.append({"kind": "time", "L": L, "impl": impl, **r})
    if a.out:
        with open(a.out, "w") as f:
            for r in records:
                f.write(json.dumps({"device": dev, "date": stamp, "batch": a.batch, "dim": a.dim, "N": a.N,
                                    "copy_TBps": bw / 1e12, **{k: (str(v) if hasattr(v, "block_d") else v)
                                                               for k, v in r.items()}}) + "\n")
    _print_table(table, a, bw, dev, cfg_fwd, cfg_bwd)
    return 0


def _fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def _print_table(table, a, bw, dev, cfg_fwd, cfg_bwd):
    print(f"\n## {dev}: batch {a.batch}, dim {a.dim}, N {a.N}, bf16, softplus, D; copy {bw / 1e12:.2f} TB/s")
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG, INFERENCE_CONFIG

    print(f"triton configs: fwd {cfg_fwd or INFERENCE_CONFIG}, fwd+bwd {cfg_bwd or DEFAULT_CONFIG}")
    print("| L | impl | fwd ms | fwd+bwd ms | peak GB | fwd / official | fwd+bwd / official | fwd floor ms (mem, exp) | fwd+bwd floor ms (mem, exp) |")
    print("|---|---|---|---|---|---|---|---|---|")
    by = {(r["L"], r["impl"]): r for r in table}
    for r in table:
        L = r["L"]
        off = by.get((L, "official"), {})   # the official CUDA scan, this run, this GPU
        cf, cb = off.get("fwd_ms"), off.get("fwdbwd_ms")
        rf = r["fwd_ms"] / cf if (cf and r["fwd_ms"]) else None
        rb = r["fwdbwd_ms"] / cb if (cb and r["fwdbwd_ms"]) else None
        fl = ""
        flb = ""
        if r["impl"] != "sdpa":
            mf = selective_scan_bytes(a.batch, a.dim, L, a.N, "bf16", pass_="fwd") / bw * 1e3
            ef = selective_scan_exps(a.batch, a.dim, L, a.N, "fwd") / EXP_PER_S * 1e3
            mb = selective_scan_bytes(a.batch, a.dim, L, a.N, "bf16", pass_="fwd+bwd") / bw * 1e3
            eb = selective_scan_exps(a.batch, a.dim, L, a.N, "fwd+bwd") / EXP_PER_S * 1e3
            fl, flb = f"{mf:.3f}, {ef:.3f}", f"{mb:.3f}, {eb:.3f}"
        print(f"| {L} | {r['impl']} | {_fmt(r['fwd_ms'])} | {_fmt(r['fwdbwd_ms'])} | {_fmt(r['peak_gb'], 2)} | "
              f"{_fmt(rf, 2)} | {_fmt(rb, 2)} | {fl} | {flb} |")
    # the targets of issue 19, at L = 4096, against the official scan of this run (none without mamba_ssm)
    t, o = by.get((4096, "triton")), by.get((4096, "official"))
    if t and o:
        c = by.get((4096, "chunked"), {})
        print(f"targets @4096 (same run): fwd {_fmt(t['fwd_ms'])} <= official {_fmt(o['fwd_ms'])} (aim: half); "
              f"fwd+bwd {_fmt(t['fwdbwd_ms'])} <= official {_fmt(o['fwdbwd_ms'])} (aim: half); chunked/triton "
              f"fwd+bwd {_fmt((c.get('fwdbwd_ms') or float('nan')) / (t['fwdbwd_ms'] or float('nan')), 1)}")
    for L in sorted({r["L"] for r in table}):
        t, s = by.get((L, "triton")), by.get((L, "sdpa"))
        if t and s and t["fwdbwd_ms"] and s["fwdbwd_ms"]:
            print(f"L={L}: triton fwd+bwd / SDPA fwd+bwd = {t['fwdbwd_ms'] / s['fwdbwd_ms']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
