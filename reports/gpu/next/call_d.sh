#!/usr/bin/env bash
# Next GPU session, device call D (~8 min; issue 19): the kernel race at batch 4 / dim 2048 / N 16 (one run, one GPU):
# the Triton scan, the official CUDA scan, the chunked scan, causal SDPA and the official SSD, fwd and fwd+bwd, each
# gated first.  Needs call C's .peers/site (same warm machine); without it the peers' rows are `skipped`.
set -uo pipefail
R=reports/gpu/run_on_device.sh
export PYTHONPATH="$PWD/.peers/site:${PYTHONPATH:-}"
bash $R "$OUT/race_b4" timeout 540 python -m harness run suites/kernels/race.yaml --device cuda --filter batch=4 \
  --no-report > /dev/null
tail -n 6 "$OUT/race_b4/log.txt"
