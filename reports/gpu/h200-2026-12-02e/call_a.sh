#!/usr/bin/env bash
# Next GPU session, device call A (~9 min): the GPU tests of what landed CPU-only on 2026-12-02 (v1's deletion, the
# static KV cache), the kernel's headline timing, then decode with both models graphed and eager beside it.
# Run as the device command after the usual prefix (reports/gpu/README.md, "Running on the GPU box").
set -uo pipefail
R=reports/gpu/run_on_device.sh
timeout 240 python -m pytest -q -m gpu tests/test_selective_scan_triton.py tests/test_bench_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -n 5
timeout 60 python -m kernels.bench --L 4096 2>&1 | tee "$OUT/bench_L4096.txt" | tail -n 8
bash $R "$OUT/decode_graph" timeout 150 python -m harness run suites/quick/decode.yaml --device cuda --filter prompt_len=128 --set cuda_graph=true --no-report > /dev/null
bash $R "$OUT/decode_eager" timeout 150 python -m harness run suites/quick/decode.yaml --device cuda --filter prompt_len=128 --no-report > /dev/null
tail -n 12 "$OUT/decode_graph/log.txt" "$OUT/decode_eager/log.txt"
