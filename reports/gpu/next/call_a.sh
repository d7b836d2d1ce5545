#!/usr/bin/env bash
# Next GPU session, device call A (~6 min): the GPU tests of what landed CPU-only or helper-run on 2026-12-02e (the
# parallel prefill, the fused S6 step), then the quick decode suites graphed with the default parallel prefill, the
# prompt-128 cells again with prefill=step as the peer, and the kernel count per step.
# Run as the device command after the usual prefix (reports/gpu/README.md, "Running on the GPU box").
set -uo pipefail
R=reports/gpu/run_on_device.sh
timeout 240 python -m pytest -q -m gpu tests/test_prefill.py tests/test_selective_state_update_triton.py \
  tests/test_bench_gpu.py tests/test_decode_kind.py 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -n 5
bash $R "$OUT/decode_graph" timeout 150 python -m harness run suites/quick/decode.yaml --device cuda --set cuda_graph=true --no-report > /dev/null
bash $R "$OUT/decode_graph_step_prefill" timeout 100 python -m harness run suites/quick/decode.yaml --device cuda \
  --filter prompt_len=128 --set cuda_graph=true --set prefill=step --no-report > /dev/null
tail -n 9 "$OUT/decode_graph/log.txt" "$OUT/decode_graph_step_prefill/log.txt"
timeout 90 python -m harness.studies.decode_step_kernels 2>&1 | grep -v USDT | tee "$OUT/count.txt"
