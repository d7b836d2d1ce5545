"""The CI smoke gate (.ci/gate, called by .ci/run) fails unless it compared the baseline's cells and found
no regression: an empty run, a partial run, or a run of another suite must not pass it (issue 17).
Each case runs the gate script itself in a child process (slow-ish: one interpreter start each)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.report.synthetic import default_meta, speed_rows, write_run

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "results" / "baselines" / "cpu-smoke"
GATE = REPO / ".ci" / "gate"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _gate(new: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SSMBENCH=f"{sys.executable} -m harness",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])))
    return subprocess.run(["bash", str(GATE), str(BASELINE), str(new), str(tmp_path / "diff.md")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def _copy_baseline(tmp_path: Path) -> Path:
    new = tmp_path / "new"
    shutil.copytree(BASELINE, new)
    return new


def _rows_files(root: Path):
    return sorted(root.rglob("rows.jsonl"))


def test_gate_passes_an_identical_smoke_run_and_says_what_it_compared(tmp_path):
    res = _gate(_copy_baseline(tmp_path), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "compared" in res.stdout and "cells" in res.stdout


def test_gate_fails_on_a_partial_smoke_run(tmp_path):
    new = _copy_baseline(tmp_path)
    rows = next(p for p in _rows_files(new) if "smoke-task" in str(p))
    lines = rows.read_text().splitlines(keepends=True)
    first_cell = json.loads(lines[0])["cell_id"]
    rows.write_text("".join(l for l in lines if json.loads(l)["cell_id"] != first_cell))
    for table in ("results.parquet", "results.csv"):
        (rows.parent / table).unlink(missing_ok=True)
    res = _gate(new, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Missing in new (1 cells, counted as regressions)" in res.stdout


def test_gate_fails_on_an_empty_smoke_run(tmp_path):
    new = _copy_baseline(tmp_path)
    for rows in _rows_files(new):
        rows.write_text("")
        for table in ("results.parquet", "results.csv"):
            (rows.parent / table).unlink(missing_ok=True)
    res = _gate(new, tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "nothing to compare" in res.stderr and "NEW has no rows" in res.stderr


def test_gate_fails_on_a_run_of_another_suite(tmp_path):
    other = write_run(tmp_path / "other" / "speed-test" / "r", speed_rows(seq_lens=(64,), repeats=3),
                      default_meta("r", "speed-test", "speed"))
    res = _gate(other.parent.parent, tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "another suite" in res.stderr


def test_ci_run_uses_the_gate():
    ci = (REPO / ".ci" / "run").read_text()
    assert ".ci/gate results/baselines/cpu-smoke" in ci
    assert GATE.stat().st_mode & 0o111
