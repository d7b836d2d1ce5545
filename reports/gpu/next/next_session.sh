#!/usr/bin/env bash
# Next GPU session (written 2026-12-05 after run f1-f7, reports/gpu/README.md): what f1-f7 left unrun or unexplained.
# Carry [".whl", ".peers/src", ".git_head"]; start each call with the usual prefix (reports/gpu/README.md,
# "Running on the GPU box"). Lesson of f1: the peers build takes the CPUs, so nothing timed or capped runs beside it.
#   bash reports/gpu/next/next_session.sh 1   # peers build alone (~4 min), then the real peers' gate (fla GDN now skips)
#   bash reports/gpu/next/next_session.sh 2   # every -m gpu test, uncapped by a parallel build; the f1 failure candidate x10
#   bash reports/gpu/next/next_session.sh 3   # the race/bench gap (race_gap.py); the race at batch 1 (Figure 8's shape)
set -uo pipefail
part="${1:-1}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/gpu_$part.txt"
export PYTHONPATH="$PWD/.peers/site:${PYTHONPATH:-}"
if [[ "$part" == 1 ]]; then
  python -m harness.kinds.bench.peers build --src .peers/src --out .peers/site --jobs 16 > "$OUT/peers_build.txt" 2>&1
  tail -n 3 "$OUT/peers_build.txt"
  timeout 240 python -m pytest -q -rfs -m gpu tests/test_peers.py -k real_peer -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest_peers.txt" | tail -n 8
elif [[ "$part" == 2 ]]; then
  timeout 420 python -m pytest -q -rfs -m "gpu and not official_grid" tests/ -p no:cacheprovider --durations=10 \
    --deselect tests/test_selective_scan_official_grid.py 2>&1 | tee "$OUT/pytest_gpu_marked.txt" | tail -n 25
  for i in $(seq 1 10); do timeout 30 python -m pytest -q -s tests/test_ssd_triton.py \
      -k "gpu_matches_float64 and L1000 and bf16" -p no:cacheprovider 2>&1 | grep -E "seed=|passed|failed"; done \
      > "$OUT/ssd_bf16_x10.txt"
  grep -c passed "$OUT/ssd_bf16_x10.txt"; grep -E "failed|Error" "$OUT/ssd_bf16_x10.txt" | head -n 5
elif [[ "$part" == 3 ]]; then
  timeout 200 python reports/gpu/next/race_gap.py 2>&1 | tee "$OUT/race_gap.txt" | tail -n 16
  bash reports/gpu/run_on_device.sh "$OUT/race_b1" timeout 330 python -m harness run suites/kernels/race.yaml \
    --device cuda --filter batch=1 --no-report > /dev/null
  tail -n 4 "$OUT/race_b1/log.txt"
else
  echo "usage: $0 1|2|3" >&2; exit 2
fi
