#!/usr/bin/env bash
# H200, 2026-12-02 (fourth session), device call B: quick selective copying at L 2048 (the paper's direction:
# 4096) under the runner's MPS, every other setting as in the file.
set -uo pipefail
bash reports/gpu/run_on_device.sh "$OUT/sc2048" timeout 570 python -m harness run suites/quick/selective_copying.yaml \
  --device cuda --mps --set task.seq_len=2048 --set model.max_len=2048 --set 'train.eval_seq_lens=[2048]' --no-report
