#!/usr/bin/env bash
# Device call C of 2026-12-02e (after the usual prefix): both decode suites with cuda_graph (every prompt length),
# then the quick selective-copying suite as committed with seed 1.
set -uo pipefail
R=reports/gpu/run_on_device.sh
bash $R "$OUT/decode_graph_all" timeout 150 python -m harness run suites/quick/decode.yaml --device cuda --set cuda_graph=true --no-report >/dev/null
bash $R "$OUT/sc1024_seed1" timeout 540 python -m harness run suites/quick/selective_copying.yaml --device cuda --set seed=1 --no-report >/dev/null
