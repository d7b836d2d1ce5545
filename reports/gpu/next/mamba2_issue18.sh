#!/usr/bin/env bash
# Issue 18 (Mamba-2 / SSD) on the GPU: what was written and tested CPU-only on 2026-12-05 (no GPU lent).
# Two device calls, each under the 10-minute limit; run as the device command after the usual prefix
# (reports/gpu/README.md, "Running on the GPU box"):
#   bash reports/gpu/next/mamba2_issue18.sh a   # ~8 min: GPU tests of kernels.ssd / the Mamba-2 models / the SSD bench
#                                               # targets and state rows, then the quick SSD speed suite (Fig. 10)
#   bash reports/gpu/next/mamba2_issue18.sh b   # ~9 min: the quick MQAR suite (10 cells at once under CUDA MPS)
# What to look for: part a, ssd.triton >= 10x ssd.chunked, below s6.triton (paper: 2-8x) and below attention.sdpa
# from ~2K, flat over N while s6.triton grows (the roofline columns say how far from the floors); part b, the
# expect verdicts of suites/quick/mqar.yaml (Mamba-2 > Mamba-1 at N 16, more N helps, attention near the top) and
# the wall time (the suite promises < 10 minutes).  ssd.triton is the Triton SSD (kernels/ssd/triton_*, merged
# from h-ssd-triton).  The official mamba_ssm peer is issue 18's other half (branch h-peers).
set -uo pipefail
R=reports/gpu/run_on_device.sh
part="${1:-a}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
if [[ "$part" == a ]]; then
  tests=(tests/test_ssd.py tests/test_mamba2.py tests/test_selective_state_update.py tests/test_bench_ssd.py
         tests/test_state_rows.py tests/test_state_size.py)
  [[ -f tests/test_ssd_triton.py ]] && tests+=(tests/test_ssd_triton.py)
  timeout 200 python -m pytest -q -x "${tests[@]}" 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -n 5
  bash $R "$OUT/ssd_speed" timeout 330 python -m harness run suites/quick/ssd_speed.yaml --device cuda > /dev/null
  tail -n 12 "$OUT/ssd_speed/log.txt"
elif [[ "$part" == b ]]; then
  # CUDA MPS as the other quick task suites run (the suite sets mps: true; the harness starts the daemon)
  /usr/bin/time -v bash $R "$OUT/mqar" timeout 570 python -m harness run suites/quick/mqar.yaml --device cuda \
    > /dev/null 2> "$OUT/mqar_time.txt"
  grep -E "Elapsed|Maximum resident" "$OUT/mqar_time.txt"
  tail -n 20 "$OUT/mqar/log.txt"
else
  echo "usage: $0 a|b" >&2; exit 2
fi
