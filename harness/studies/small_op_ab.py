"""A/B of the two small ops that cost most per quick-suite step after the scan backward (H200 profile,
2026-12-02: RMSNorm's weight-gradient reduction 0.50 ms, depthwise conv ~0.45 ms per step).

Before changing model code, measure: each op's forward+backward at the quick suite's shapes (batch 64,
L 1024; RMSNorm over d_model 64 on the fp32 residual stream, two per layer plus the final one; causal
depthwise conv, kernel 4, over d_inner 128 in bf16), torch's op against alternatives written with plain
ops (and those compiled), all checked against the torch op's outputs and gradients first.  CUDA events,
warm-up, median of repeats; the ratio is against the torch op measured in the same run.

    python -m harness.studies.small_op_ab          (--device cpu: a correctness dry run)
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from harness.kinds.bench.timing import make_timer, median


def rms_torch(x, w, eps=1e-5):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def rms_plain(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def conv_torch(x, w, b):
    """x (B, L, d) -> causal depthwise conv, as models/conv.py does it (cuDNN through nn.Conv1d)."""
    L, k = x.shape[1], w.shape[-1]
    return F.conv1d(x.transpose(1, 2), w, b, padding=k - 1, groups=x.shape[-1])[..., :L].transpose(1, 2)


def conv_shifted(x, w, b):
    """The same as a sum of k shifted, scaled copies (channels last: no transposes)."""
    L, k = x.shape[1], w.shape[-1]
    xp = F.pad(x, (0, 0, k - 1, 0))
    y = b.to(x.dtype)
    for j in range(k):
        y = y + xp[:, j:j + L] * w[:, 0, j].to(x.dtype)
    return y


def time_ms(fn, device, repeats=50, warmup=10):
    """Median ms of ``fn`` after warm-up: CUDA events on a GPU, perf_counter on the CPU (harness.kinds.bench.timing)."""
    timer = make_timer(str(device), flush_l2=False)
    for _ in range(warmup):
        fn()
    return median([timer(fn) for _ in range(repeats if device.type == "cuda" else max(3, repeats // 10))])


def fwd_bwd(op, inputs, dy):
    def run():
        for t in inputs:
            t.grad = None
        op(*inputs).backward(dy)
    return run


def check(name, op, ref, inputs, dy, tol):
    outs = []
    for f in (ref, op):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
        y = f(*leaves)
        y.backward(dy)
        outs.append([y.detach().float()] + [t.grad.float() for t in leaves if t.requires_grad])
    errs = [float((o - r).norm() / r.norm().clamp_min(1e-30)) for o, r in zip(outs[1], outs[0])]
    assert max(errs) < tol, f"{name}: relative errors {errs} over {tol}"
    return max(errs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--L", type=int, default=1024)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    B, L = (args.batch, args.L) if dev.type == "cuda" else (2, 64)
    g = torch.Generator(device=dev).manual_seed(0)
    rows = []
    compiled = dev.type == "cuda"
    for d in (64, 128):
        x = torch.randn(B, L, d, device=dev, generator=g, requires_grad=True)
        w = (1 + 0.1 * torch.randn(d, device=dev, generator=g)).requires_grad_()
        dy = torch.randn(B, L, d, device=dev, generator=g)
        variants = {"plain": rms_plain}
        if compiled:
            variants["plain+compile"] = torch.compile(rms_plain)
        base = time_ms(fwd_bwd(rms_torch, [x, w], dy), dev)
        rows.append((f"rmsnorm d={d} fp32", "torch F.rms_norm", base, 1.0, 0.0))
        for name, op in variants.items():
            err = check(name, op, rms_torch, [x, w], dy, 1e-5)
            t = time_ms(fwd_bwd(op, [x, w], dy), dev)
            rows.append((f"rmsnorm d={d} fp32", name, t, base / t, err))
    for d in (128, 256):
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
        x = torch.randn(B, L, d, device=dev, generator=g).to(dt).requires_grad_()
        w = torch.randn(d, 1, 4, device=dev, generator=g).to(dt).requires_grad_()
        b = torch.randn(d, device=dev, generator=g).to(dt).requires_grad_()
        dy = torch.randn(B, L, d, device=dev, generator=g).to(dt)
        variants = {"shifted sum": conv_shifted}
        if compiled:
            variants["shifted sum+compile"] = torch.compile(conv_shifted)
        base = time_ms(fwd_bwd(conv_torch, [x, w, b], dy), dev)
        rows.append((f"dwconv k=4 d={d} {str(dt)[6:]}", "torch conv1d", base, 1.0, 0.0))
        for name, op in variants.items():
            err = check(name, op, conv_torch, [x, w, b], dy, 2e-2 if dt == torch.bfloat16 else 1e-5)
            t = time_ms(fwd_bwd(op, [x, w, b], dy), dev)
            rows.append((f"dwconv k=4 d={d} {str(dt)[6:]}", name, t, base / t, err))
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"{name}, batch {B}, L {L}, fwd+bwd, median ms (speed-up vs the torch op, same run; max rel. error)")
    for op, variant, t, speedup, err in rows:
        print(f"{op:24s} {variant:22s} {t:8.3f} ms  {speedup:5.2f}x  err {err:.1e}")


if __name__ == "__main__":
    main()
