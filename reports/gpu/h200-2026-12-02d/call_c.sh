#!/usr/bin/env bash
# H200, 2026-12-02 (fourth session), device call C: backward auto-T A/B (batch 1 and 2), backward v1 vs v2,
# then decode eager vs the CUDA-graph step in the same call (prompt 128 cells of suites/quick/decode.yaml).
set -uo pipefail
R=reports/gpu/run_on_device.sh
timeout 100 python -m kernels.bench --variants v2:T=1 v2 --batch 1 --dim 1024 --L 2048 8192 32768 2>&1 | tee "$OUT/bench_auto_t_b1.txt"
timeout 100 python -m kernels.bench --variants v2:T=1 v2 --batch 2 --dim 1024 --L 2048 8192 32768 2>&1 | tee "$OUT/bench_auto_t_b2.txt"
timeout 80 python -m kernels.bench --variants v1 v2 --L 4096 8192 2>&1 | tee "$OUT/bench_v1_v2.txt"
bash $R "$OUT/decode_eager" timeout 150 python -m harness run suites/quick/decode.yaml --device cuda --filter prompt_len=128 --no-report > /dev/null
bash $R "$OUT/decode_graph" timeout 150 python -m harness run suites/quick/decode.yaml --device cuda --filter prompt_len=128 --set cuda_graph=true --no-report > /dev/null
tail -n 12 "$OUT/decode_eager/log.txt" "$OUT/decode_graph/log.txt"
