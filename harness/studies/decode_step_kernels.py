"""Kernels per decode step of the quick-decode models (~125M Mamba 24 x 768, Transformer 12 x 768), bf16.

Why: graphed, the Transformer's step took 1.39-1.65 ms and Mamba's 2.13-3.29 ms (H200, 2026-12-02, run e3), so
at these sizes the step is not bound by the state or the KV cache.  This counts the GPU kernels one eager step
launches and sums their device time, per model and batch, with the static states the graphed decode uses.

    python -m harness.studies.decode_step_kernels            # on a GPU machine (CPU: counts aten ops)
"""
from __future__ import annotations

import sys
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from models.lm import build_lm

COMMON = dict(d_model=768, d_state=16, expand=2, heads=12, pos="rope", mlp_ratio=4, attn_backend="sdpa",
              backend="auto")
MODELS = [("mamba", "s6", 24), ("transformer", "attention", 12)]


def main(argv=None, batches=(1, 8, 64), prompt=128, models=None, vocab=50280) -> None:
    """``models``/``batches``/``prompt``/``vocab``: smaller settings for a quick check (tests use them)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print("| model | batch | context | kernels per step | per layer | kernel time per step (us) | top kernels |")
    print("|---|---|---|---|---|---|---|")
    for arch, mixer, n_layers, *width in models or MODELS:
        cfg = dict(COMMON, arch=arch, mixer=mixer, n_layers=n_layers, **(dict(d_model=width[0]) if width else {}))
        lm = build_lm(cfg, vocab).to(device, dtype).eval()
        for batch in batches:
            capacity = prompt + 32
            state = lm.init_state(batch, device, dtype, capacity=capacity, static=True)
            token = torch.zeros(batch, dtype=torch.long, device=device)
            with torch.no_grad():
                for _ in range(prompt):   # a prompt's worth of steps, as in the suite
                    logits, state = lm.step(token, state)
                if device == "cuda":
                    torch.cuda.synchronize()
                with profile(activities=[activity]) as prof:
                    logits, state = lm.step(token, state)
                    if device == "cuda":
                        torch.cuda.synchronize()
            if device == "cuda":
                kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
                total_us = sum(e.device_time for e in kernels)
            else:
                kernels = [e for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children]
                total_us = float("nan")
            top = Counter(e.name[:40] for e in kernels).most_common(3)
            print(f"| {arch} | {batch} | {capacity} | {len(kernels)} | {len(kernels) / n_layers:.1f} | "
                  f"{total_us:.0f} | {'; '.join(f'{n} x{c}' for n, c in top)} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
