"""Compile the selective-scan kernels for sm_90 on a machine without a GPU and count what matters.

    python -m kernels.inspect_sm90 [--which bwd|fwd] [--variant v2 v2:bd=4 v2:T=4 ...] [--z] [--dim 2048] [--N 16]
                                   [--block-d BD] [--block-l BL] [--warps W] [--dump DIR]
    python -m kernels.inspect_sm90 --which fwd --variant split:T=1 split:T=8  (forward variants: one row per
                                   launch, pass 1 and pass 3 when T > 1; specs as kernels.bench --fwd-variants)

The launch arguments are captured from the real launcher (``triton_backend._forward`` / ``_backward`` run
on small CPU tensors of the benchmark's layout, with the kernel launch replaced by a recorder), then
specialised exactly as the JIT would (16-byte alignment of pointers, divisibility of ints, ints equal
to 1 as constants) and compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)``.  Printed per
variant: instruction counts of the whole PTX and of the chunk loop's body (the basic blocks between the
loop header and its back edge, found from the PTX labels), and registers / spills from the ptxas that
ships with triton (``-v``).  ``--dump DIR`` writes the TTGIR, PTX and SASS-free ptxas log per variant.

No GPU, no CUDA driver needed; the counts are a cost model (shuffles ~ 1 warp instruction/clock/SM,
ex2 ~ 16/clock/SM), not a timing.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import replace
from typing import Dict, List, Optional

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")   # triton 3.9 warns otherwise; 3.6 (the GPU's) fuses

import torch

COUNTS = [  # (column, regex on a PTX instruction line)
    ("shfl", r"\bshfl\.sync"),
    ("ex2", r"\bex2\.approx"),
    ("rcp/div", r"\b(rcp|div)\.(rn|approx|full)"),
    ("bar", r"\bbar\.sync|\bbarrier\.sync"),
    ("atom/red", r"\b(atom|red)\.(global|shared)"),
    ("ld.shared", r"\bld\.shared"),
    ("st.shared", r"\bst\.shared"),
    ("ld.global", r"\bld\.global"),
    ("st.global", r"\bst\.global"),
    ("fma", r"\bfma\.rn\.f32"),
    ("instr", None),
]


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``rec[grid](*args, **kw)`` records the call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.calls.append((grid, args, kw))
        return launch


def _inputs(batch, dim, L, N, z, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    return dict(u=r(batch, dim, L), delta=r(batch, dim, L), A=-torch.rand(dim, N, generator=g) - 0.5,
                B=r(batch, N, L), C=r(batch, N, L), D=torch.ones(dim), z=r(batch, dim, L) if z else None,
                delta_bias=torch.zeros(dim))


def capture_all(which: str, cfg, z: bool, dim: int, N: int, L: int = 4096):
    """[(kernel, args, kwargs)] of every launch, recorded from the real launcher on CPU tensors."""
    from kernels.selective_scan import triton_backend as tb

    ins = _inputs(2, dim, L, N, z)
    fitted = tb._fit_config(cfg, dim, L, 1)
    saved_fwd, saved_bwd = tb.selective_scan_fwd_split_kernel, tb.selective_scan_bwd_kernel_v2
    recs = [_Recorder(saved_fwd), _Recorder(saved_bwd)]
    tb.selective_scan_fwd_split_kernel, tb.selective_scan_bwd_kernel_v2 = recs
    old_empty = tb._empty
    tb._empty = torch.empty
    try:
        args = (ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], ins["D"], ins["z"], ins["delta_bias"])
        if which == "fwd":
            tb._forward(*args, True, fitted, save_states=True, write_last=False)
        else:
            n_chunks = -(-L // fitted.block_l)
            states = torch.zeros(2, dim, n_chunks, N)
            dout = torch.randn(2, dim, L).to(torch.bfloat16)
            tb._backward(dout, None, *args, states, True, fitted)
    finally:
        tb._empty = old_empty
        tb.selective_scan_fwd_split_kernel, tb.selective_scan_bwd_kernel_v2 = saved_fwd, saved_bwd
    return [(rcd.fn, a, kw) for rcd in recs for (grid, a, kw) in rcd.calls]


def capture(which: str, cfg, z: bool, dim: int, N: int, L: int = 4096):
    """(kernel, args, kwargs) of the one launch of a single-kernel pass."""
    calls = capture_all(which, cfg, z, dim, N, L)
    assert len(calls) == 1, f"expected one launch, got {len(calls)}"
    return calls[0]


def compile_sm90(fn, args, kwargs):
    """triton.compile for sm_90 with the JIT's own specialisation of these arguments."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime import jit as _jit

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    binder = _jit.create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    src = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(src, target=target, options=options.__dict__)


_LABEL = re.compile(r"^\$?(\$L__BB\d+_\d+|[A-Za-z_$][\w$]*):")
_BRA = re.compile(r"\bbra(\.uni)?\s+(\$L__BB\d+_\d+);")


def _instr_lines(ptx: str) -> List[str]:
    out = []
    for line in ptx.splitlines():
        s = line.strip()
        if not s or s.startswith("//") or s.startswith(".") or s in ("{", "}") or s.endswith(":"):
            continue
        if s.startswith("@") or re.match(r"^[a-z]", s):
            out.append(s)
    return out


def loop_body(ptx: str) -> str:
    """PTX text of the chunk loop: the largest span between a branch and its target label that holds
    LLVM's "Loop Header" comment (LLVM may place the latch before the header, so both directions)."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^\s*(\$L__BB\d+_\d+):", line))}
    headers = [i for i, line in enumerate(lines) if "Loop Header" in line]
    best = None
    for i, line in enumerate(lines):
        b = _BRA.search(line)
        if not b or b.group(2) not in labels:
            continue
        lo, hi = sorted((labels[b.group(2)], i))
        if headers and not any(lo <= h <= hi for h in headers):
            continue
        if best is None or hi - lo > best[1] - best[0]:
            best = (lo, hi)
    return "" if best is None else "\n".join(lines[best[0]:best[1] + 1])


def count(ptx: str) -> Dict[str, int]:
    ins = _instr_lines(ptx)
    out = {}
    for name, rx in COUNTS:
        out[name] = len(ins) if rx is None else sum(1 for s in ins if re.search(rx, s))
    return out


def ptxas_info(ptx: str) -> Dict[str, Optional[int]]:
    """Registers, spill stores/loads, stack from the bundled ptxas -v (None where it cannot run)."""
    try:  # the ptxas triton itself uses for this arch (triton >= 3.4 ships a newer one for sm_90+)
        from triton.backends.nvidia.compiler import get_ptxas
        exe = get_ptxas(90).path
    except Exception:
        import triton
        exe = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    res = {"regs": None, "spill_st": None, "spill_ld": None, "stack": None}
    if not os.path.exists(exe):
        return res
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.ptx")
        with open(p, "w") as f:
            f.write(ptx)
        r = subprocess.run([exe, "-arch=sm_90a", "-v", p, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    log = r.stdout + r.stderr
    m = re.search(r"Used (\d+) registers", log)
    res["regs"] = int(m.group(1)) if m else None
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if m:
        res["spill_st"], res["spill_ld"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"(\d+) bytes stack frame", log)
    res["stack"] = int(m.group(1)) if m else None
    res["log"] = log
    return res


def layouts(ttgir: str) -> List[str]:
    return sorted(set(re.findall(r"#ttg\.blocked<\{[^}]*\}>", ttgir)))


def inspect_all(which: str, variant: str, z: bool, dim: int, N: int, cfg=None, dump: Optional[str] = None):
    """One result dict per launch of the variant (two when T > 1: pass 1 and pass 3)."""
    from kernels.selective_scan.triton_backend import DEFAULT_CONFIG

    cfg = cfg or DEFAULT_CONFIG
    if which == "bwd":   # a variant spec as kernels.bench --variants takes it: v2[:bd=8,ni=8,...]
        from kernels.bench import VARIANT_KEYS, variant_config

        spec = variant_config(variant)
        cfg = replace(cfg, **{f: getattr(spec, f) for f in VARIANT_KEYS.values()
                              if getattr(spec, f) != getattr(DEFAULT_CONFIG, f)})
    elif variant != "fwd":   # a forward spec as kernels.bench --fwd-variants takes it: split, split:T=8
        from kernels.bench import FWD_VARIANT_KEYS, fwd_variant_config

        spec = fwd_variant_config(variant)
        cfg = replace(cfg, **{f: getattr(spec, f) for f in FWD_VARIANT_KEYS.values()
                              if getattr(spec, f) != getattr(DEFAULT_CONFIG, f)})
    out = []
    for fn, args, kw in capture_all(which, cfg, z, dim, N):
        k = compile_sm90(fn, args, kw)
        ptx, ttgir = k.asm["ptx"], k.asm["ttgir"]
        body = loop_body(ptx)
        info = ptxas_info(ptx)
        label = variant + (f"/pass{kw['PASS']}" if "PASS" in kw else "")
        if dump:
            os.makedirs(dump, exist_ok=True)
            tag = f"{which}-{label.replace('/', '-').replace(':', '-')}{'-z' if z else ''}"
            for ext, text in (("ttgir", ttgir), ("ptx", ptx), ("loop.ptx", body), ("ptxas.txt", info.get("log", ""))):
                with open(os.path.join(dump, f"{tag}.{ext}"), "w") as f:
                    f.write(text)
        out.append({"label": label, "loop": count(body), "all": count(ptx),
                    **{k2: v for k2, v in info.items() if k2 != "log"}, "layouts": layouts(ttgir),
                    "kw": {k2: v for k2, v in kw.items() if k2.isupper() or "warps" in k2}})
    return out


def inspect(which: str, variant: str, z: bool, dim: int, N: int, cfg=None, dump: Optional[str] = None):
    return inspect_all(which, variant, z, dim, N, cfg, dump)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", choices=["fwd", "bwd"], default="bwd")
    p.add_argument("--variant", nargs="+", default=None,
                   help="backward variants, v2[:bd=8,ni=8,bl=8,w=1,T=4] as kernels.bench --variants (default: v2); "
                        "with --which fwd forward variants as kernels.bench --fwd-variants (split, split:T=1, "
                        "split:T=8; default: the default config, auto T)")
    p.add_argument("--z", action="store_true", help="with z (gated); default: both without and with")
    p.add_argument("--no-z", action="store_true", help="only without z")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--N", type=int, default=16)
    p.add_argument("--block-d", type=int, default=None, help="BLOCK_D (bwd_block_d for --which bwd)")
    p.add_argument("--block-l", type=int, default=None)
    p.add_argument("--warps", type=int, default=None)
    p.add_argument("--layouts", action="store_true", help="print the TTGIR blocked layouts")
    p.add_argument("--dump", default=None, help="write ttgir / ptx / loop ptx / ptxas log here")
    a = p.parse_args(argv)
    from kernels.selective_scan import triton_backend as tb

    variants = a.variant or (["v2"] if a.which == "bwd" else ["fwd"])
    zs = [True] if a.z else [False] if a.no_z else [False, True]
    cfg = tb.DEFAULT_CONFIG
    if a.block_l:
        cfg = replace(cfg, block_l=a.block_l)
    if a.block_d:
        cfg = replace(cfg, **({"bwd_block_d": a.block_d} if a.which == "bwd" else {"block_d": a.block_d}))
    if a.warps:
        cfg = replace(cfg, **({"bwd_warps": a.warps} if a.which == "bwd" else {"fwd_warps": a.warps}))
    cols = [c for c, _ in COUNTS]
    import triton

    print(f"# triton {triton.__version__}: sm_90 compile of the {a.which} kernel, dim {a.dim}, N {a.N}, bf16, D, "
          f"delta_bias, softplus; {cfg}")
    print("| variant | z | BLOCK_D | BLOCK_L | warps | " + " | ".join(f"loop {c}" for c in cols)
          + " | all shfl | regs | spill st/ld B |")
    print("|" + "---|" * (5 + len(cols) + 3))
    for v in variants:
        for z in zs:
            try:
                results = inspect_all(a.which, v, z, a.dim, a.N, cfg, a.dump)
            except Exception as e:  # report and go on with the next variant
                print(f"| {v} | {int(z)} | failed: {type(e).__name__}: {str(e)[-300:]} |")
                continue
            for r in results:
                kw = r["kw"]
                print(f"| {r['label']} | {int(z)} | {kw.get('BLOCK_D')} | {kw.get('BLOCK_L')} | "
                      f"{kw.get('num_warps')} | "
                      + " | ".join(str(r["loop"][c]) for c in cols)
                      + f" | {r['all']['shfl']} | {r['regs']} | {r['spill_st']}/{r['spill_ld']} |", flush=True)
                if a.layouts:
                    for lay in r["layouts"]:
                        print(f"    {lay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
