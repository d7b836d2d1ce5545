#!/usr/bin/env bash
# Next GPU session, device call B (~9 min): quick selective copying at L 1536 under the runner's MPS.
# Rule fixed before the run (reports/gpu/README.md, "Next GPU session"): adopt L 1536 if every S6 row is >= 90%
# there, whatever the LTI rows show, and report every row as measured.
set -uo pipefail
bash reports/gpu/run_on_device.sh "$OUT/sc1536" timeout 570 python -m harness run suites/quick/selective_copying.yaml \
  --device cuda --set task.seq_len=1536 --set model.max_len=1536 --set 'train.eval_seq_lens=[1536]' --no-report
