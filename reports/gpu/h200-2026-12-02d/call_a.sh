#!/usr/bin/env bash
# H200, 2026-12-02 (fourth session), device call A: the runner's --mps on a GPU, then the induction suite with
# 8 Mamba seeds and the step cap raised to 30000 (the 300 s budget binds instead), all 18 cells under one MPS daemon.
set -uo pipefail
R=reports/gpu/run_on_device.sh
# 0. --mps through the runner: meta.json executor.mps must say active
bash $R "$OUT/mps_check" python -m harness run suites/quick/selective_copying.yaml --device cuda --mps \
  --set train.timeout_s=60 --no-report
pgrep -a -f nvidia-cuda-mps && echo "MPS DAEMON LEFT RUNNING" || echo "no MPS daemon left (ok)"
# 2. induction: the suite (12 cells, seeds 0-1) and Mamba seeds 2-7 beside it, one hand-started daemon for both
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY && nvidia-cuda-mps-control -d
bash $R "$OUT/ind_suite" timeout 420 python -m harness run suites/quick/induction_heads.yaml --device cuda --mps \
  --set train.steps=30000 --no-report > /dev/null &
sleep 2
bash $R "$OUT/ind_mamba" timeout 420 python -m harness run suites/quick/induction_heads.yaml --device cuda --mps \
  --filter model.arch=mamba --set 'seeds=[2,3,4,5,6,7]' --set train.steps=30000 --jobs 6 --no-report > /dev/null &
wait
echo quit | nvidia-cuda-mps-control
tail -n 25 "$OUT/ind_suite/log.txt" "$OUT/ind_mamba/log.txt"
