#!/usr/bin/env bash
# Run commands on the GPU box and leave everything they write where the device tool copies it back.
#
#   bash reports/gpu/run_on_device.sh OUT_DIR COMMAND...      e.g. (as the device command, with $OUT set by the tool)
#   bash reports/gpu/run_on_device.sh "$OUT" python -m harness run suites/quick/selective_copying.yaml --device cuda --set train.lr=2.0e-3
#
# Why: the device copies back only files at most two folder levels under $OUT, so a run directory
# (results/<suite>/<run>/rows.jsonl) written there is lost (2026-12-02, run K).  This runs the command with
# `--out $OUT/results` when it is an `ssmbench run` / `python -m harness run` without its own --out, tees the
# output to $OUT/log.txt, and tars $OUT/results into $OUT/results.tgz at the end, whatever the exit status.
set -uo pipefail
out="$1"; shift
mkdir -p "$out"
args=("$@")
if [[ " ${args[*]} " == *" run "* && " ${args[*]} " != *" --out "* ]]; then
  args+=(--out "$out/results")
fi
export PYTHONUNBUFFERED=1
"${args[@]}" 2>&1 | tee -a "$out/log.txt"
rc=${PIPESTATUS[0]}
if [[ -d "$out/results" ]]; then
  tar czf "$out/results.tgz" -C "$out" results && rm -rf "$out/results"
fi
echo "exit status $rc" | tee -a "$out/log.txt"
exit "$rc"
