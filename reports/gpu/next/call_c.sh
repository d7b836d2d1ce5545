#!/usr/bin/env bash
# Next GPU session, device call C (~8 min; issue 19): build the peers offline, then the GPU tests of what landed
# CPU-only on 2026-12-05 (constant B/C in the Triton scan, the official selective_scan_fn grid on Triton, the real
# peers through the gate), and the official scan's own test grid against ours.
# Before: on a machine with network, fill the git-ignored .peers/src (sdists; ~1 MB):
#   MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE python3 -m pip download --no-deps --no-binary :all: \
#     --no-build-isolation mamba-ssm causal-conv1d flash-linear-attention fla-core -d .peers/src
#   plus einops if the image lacks it (it has it: KINDS.md)
# and carry it with the call: carry [".whl", ".peers/src"].  Run as the device command after the usual prefix
# (reports/gpu/README.md, "Running on the GPU box").  The built .peers/site stays on the warm machine for calls D/E.
set -uo pipefail
mkdir -p "$OUT"
ls -la .peers/src | tee "$OUT/peers_src.txt"
timeout 420 python -m harness.kinds.bench.peers build --src .peers/src --out .peers/site 2>&1 \
  | tee "$OUT/peers_build.txt" | grep -E "^==|FAILED|installed|export|error" | tail -n 20
export PYTHONPATH="$PWD/.peers/site:${PYTHONPATH:-}"
python -c "import torch; from harness.kinds.bench.peers import peer_attr as p; \
print(p('mamba_ssm','mamba_ssm.ops.selective_scan_interface','selective_scan_fn'), torch.__version__)" 2>&1 | tail -n 2
timeout 200 python -m pytest -q -m gpu -x tests/test_peers.py tests/test_selective_scan_official_grid.py \
  -k "real_peer or (official_grid_triton and 372)" 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -n 5
timeout 120 python -m pytest -q tests/test_selective_scan_triton.py -k constant 2>&1 | tee -a "$OUT/pytest_gpu.txt" | tail -n 3
