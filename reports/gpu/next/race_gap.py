"""Why did the race time our scan's forward at L 4096 1.6x slower than kernels.bench (H100, 2026-12-05, run f2 vs f7)?

One process, one GPU, the race's shape (batch 4, dim 2048, N 16, bf16, fwd): each path timed by each timer.
Paths: the race's workload (``IMPLS["s6.triton"]``: kernels.selective_scan dispatch, harness inputs) and
kernels.bench's call (``selective_scan_triton(config=INFERENCE_CONFIG)`` on its inputs), with the official scan
beside them. Timers: the harness's (one call per CUDA-event pair, synchronised after each, L2 zeroed before)
and triton's ``do_bench`` (calls queued back to back). A gap that moves with the timer is host time
(launch / Python) inside the harness's event pair; one that moves with the path is the path.

    python reports/gpu/next/race_gap.py            # on the GPU machine, peers on PYTHONPATH for the official scan
"""
from __future__ import annotations

import statistics

import torch

from harness.kinds.bench import IMPLS
from harness.kinds.bench.config import SpeedConfig
from harness.kinds.bench.timing import make_timer, measure
from kernels.bench import make_inputs, scan_fn
from kernels.selective_scan.triton_backend import INFERENCE_CONFIG


def harness_ms(fn) -> float:
    return statistics.median(measure(fn, make_timer("cuda", True), warmup=10, repeats=30, device="cuda"))


def do_bench_ms(fn) -> float:
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=25, rep=300, return_mode="median"))


def main() -> None:
    rows = []
    for L in (1024, 2048, 4096, 8192):
        cfg = SpeedConfig.model_validate(dict(impl="s6.triton", batch=4, d_model=1024, expand=2, d_state=16,
                                              seq_len=L, dtype="bf16", device="cuda", **{"pass": "fwd"}))
        race = IMPLS.get("s6.triton").workload(cfg, "cuda").fn
        ins = make_inputs(4, 2048, L, 16)
        direct = scan_fn("triton", INFERENCE_CONFIG)
        paths = {"race workload": race, "bench call": lambda: direct(ins)}
        try:
            official = scan_fn("official")
            official(ins)
            paths["official"] = lambda: official(ins)
        except Exception as e:  # noqa: BLE001 - the official scan is optional here
            print(f"official scan not timed: {type(e).__name__}: {e}")
        for name, fn in paths.items():
            with torch.no_grad():
                rows.append((L, name, harness_ms(fn), do_bench_ms(fn)))
    print("| L | path | harness timer ms | do_bench ms |")
    print("|---|---|---|---|")
    for L, name, h, d in rows:
        print(f"| {L} | {name} | {h:.3f} | {d:.3f} |")


if __name__ == "__main__":
    main()
