#!/usr/bin/env bash
# GPU session of 2026-12-05 (sixth): the GPU tests of everything that landed CPU-only on 2026-12-05 (Mamba-2 / SSD,
# the fused S6 step, the peers), the official kernels built offline, and the kernel race against them.
# Three device calls on one warm machine, each under the 10-minute limit, after the usual prefix
# (reports/gpu/README.md, "Running on the GPU box"); carry [".whl", ".peers/src"]:
#   bash reports/gpu/next/h200_2026-12-05.sh 1   # peers build started in the background (setsid); every -m gpu test;
#                                                # the Mamba-2 test files whole; the official grid on Triton
#   bash reports/gpu/next/h200_2026-12-05.sh 2   # the peers through their gate (call_c's tests), race at batch 4
#   bash reports/gpu/next/h200_2026-12-05.sh 3   # race at batch 1 (Figure 8's shape), kernels.bench with the official scan
set -uo pipefail
R=reports/gpu/run_on_device.sh
part="${1:-1}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv | tee "$OUT/gpu_$part.txt"
export PYTHONPATH="$PWD/.peers/site:${PYTHONPATH:-}"
if [[ "$part" == 1 ]]; then
  mkdir -p .peers
  setsid nohup python -m harness.kinds.bench.peers build --src .peers/src --out .peers/site --jobs 12 \
    > /tmp/peers_build.txt 2>&1 < /dev/null &
  timeout 240 python -m pytest -q -m "gpu and not official_grid" tests/ --durations=12 -p no:cacheprovider \
    --deselect tests/test_selective_scan_official_grid.py 2>&1 | tee "$OUT/pytest_gpu_marked.txt" | tail -n 25
  timeout 150 python -m pytest -q tests/test_ssd.py tests/test_mamba2.py tests/test_selective_state_update.py \
    tests/test_bench_ssd.py tests/test_state_rows.py tests/test_state_size.py tests/test_ssd_triton.py \
    tests/test_prefill.py -k "not interpreter" -p no:cacheprovider 2>&1 | tee "$OUT/pytest_mamba2.txt" | tail -n 8
  timeout 150 python -m pytest -q tests/test_selective_scan_official_grid.py -k triton -p no:cacheprovider \
    2>&1 | tee "$OUT/pytest_official_grid_triton.txt" | tail -n 5
  cp /tmp/peers_build.txt "$OUT/peers_build_so_far.txt"; tail -n 5 /tmp/peers_build.txt
elif [[ "$part" == 2 ]]; then
  for i in $(seq 1 60); do pgrep -f "bench.peers build" >/dev/null || break; sleep 5; done   # the build of call 1
  cp /tmp/peers_build.txt "$OUT/peers_build.txt"; grep -E "^==|FAILED|installed|error" /tmp/peers_build.txt | tail -n 12
  python -c "import mamba_ssm, causal_conv1d; print('mamba_ssm', mamba_ssm.__version__, 'causal_conv1d', causal_conv1d.__version__)" 2>&1 | tail -n 2
  timeout 150 python -m pytest -q -m gpu tests/test_peers.py tests/test_selective_scan_official_grid.py \
    -k "real_peer or (official_grid_triton and 372)" -p no:cacheprovider 2>&1 | tee "$OUT/pytest_peers.txt" | tail -n 5
  bash $R "$OUT/race_b4" timeout 390 python -m harness run suites/kernels/race.yaml --device cuda --filter batch=4 \
    --no-report > /dev/null
  tail -n 6 "$OUT/race_b4/log.txt"
elif [[ "$part" == 3 ]]; then
  bash $R "$OUT/race_b1" timeout 330 python -m harness run suites/kernels/race.yaml --device cuda --filter batch=1 \
    --no-report > /dev/null
  tail -n 6 "$OUT/race_b1/log.txt"
  timeout 150 python -m kernels.bench --L 1024 4096 16384 --impls triton official sdpa 2>&1 | tee "$OUT/bench.txt" | tail -n 14
else
  echo "usage: $0 1|2|3" >&2; exit 2
fi
