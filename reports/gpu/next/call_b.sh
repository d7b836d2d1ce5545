#!/usr/bin/env bash
# Next GPU session, device call B (~9 min): the paper's Figure 8 (right) decode suite (Mamba-1.4B vs Transformer-1.3B,
# prompt 2048 + 128, batch 1..128, then context 512..8192 at batch 16), both models graphed, prompt read in parallel.
# First a single cell to see the time per cell; the run_on_device wrapper keeps the rows of whatever finished.
set -uo pipefail
R=reports/gpu/run_on_device.sh
bash $R "$OUT/paper_decode_one" timeout 120 python -m harness run suites/paper/decode.yaml --device cuda \
  --set cuda_graph=true --filter batch=16 --filter model.arch=mamba --filter prompt_len=2048 --no-report > /dev/null
tail -n 4 "$OUT/paper_decode_one/log.txt"
bash $R "$OUT/paper_decode" timeout 420 python -m harness run suites/paper/decode.yaml --device cuda \
  --set cuda_graph=true --no-report > /dev/null
tail -n 30 "$OUT/paper_decode/log.txt"
