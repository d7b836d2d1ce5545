#!/usr/bin/env bash
# Next GPU session, device call E (~6 min; issue 19): the kernel race at the Figure 8 shape (batch 1, D 1024), then
# the report (one table and figure per run: time against L per target, gate rows and peak memory beside them), and
# kernels.bench with the official scan timed in the same run (ratio columns from this run's rows).
set -uo pipefail
R=reports/gpu/run_on_device.sh
export PYTHONPATH="$PWD/.peers/site:${PYTHONPATH:-}"
bash $R "$OUT/race_b1" timeout 360 python -m harness run suites/kernels/race.yaml --device cuda --filter batch=1 \
  --no-report > /dev/null
tail -n 6 "$OUT/race_b1/log.txt"
timeout 150 python -m kernels.bench --L 1024 4096 16384 --impls triton official sdpa 2>&1 | tee "$OUT/bench.txt" | tail -n 14
