"""suites/kernels/race.yaml on a machine without a GPU or the peer packages: it validates, and it runs with the
peers' cells skipped (saying which package is missing), ssmbench's own CPU targets gated and timed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RACE = ROOT / "suites" / "kernels" / "race.yaml"


def test_race_suite_validates(cli):
    r = cli("validate", RACE)
    assert r.code == 0, r.err
    for impl in ("s6.triton", "peer.mamba_ssm.selective_scan", "s6.chunked", "attention.sdpa", "peer.mamba_ssm.ssd",
                 "ssd.triton", "ssd.chunked"):
        assert impl in r.out


def test_race_suite_runs_on_the_cpu_skipping_what_it_cannot(cli, tmp_path, monkeypatch):
    import sys
    for package in ("mamba_ssm",):   # make sure no real install makes this a GPU-less error instead
        monkeypatch.setitem(sys.modules, package, None)
    out = tmp_path / "runs"
    r = cli("run", RACE, "--device", "cpu", "--filter", "seq_len=512", "--filter", "batch=1", "--filter", "pass=fwd+bwd",
            "--set", "repeats=1", "--set", "warmup=0", "--set", "d_model=16", "--set", "ssd_headdim=16", "--out", out, "--no-report")
    assert r.code == 0, r.out + r.err
    rows = [json.loads(x) for f in out.rglob("rows.jsonl") for x in f.read_text().splitlines()]
    by = {}
    for row in rows:
        by.setdefault(row["impl"], []).append(row)
    assert {x["status"] for x in by["s6.chunked"]} == {"ok"} and {x["status"] for x in by["attention.sdpa"]} == {"ok"}
    assert any(x["metric"] == "gate_passed" and x["value"] == 1 for x in by["s6.chunked"])
    for peer in ("peer.mamba_ssm.selective_scan", "peer.mamba_ssm.ssd"):
        (skip,) = by[peer]
        assert skip["status"] == "skipped" and "'mamba_ssm'" in skip["message"] and "pip install" in skip["message"]
    for target in ("s6.triton", "ssd.triton"):
        (triton,) = by[target]
        assert triton["status"] == "skipped" and "CUDA" in triton["message"]
    assert {x["status"] for x in by["ssd.chunked"]} == {"ok"}
    assert any(x["metric"] == "gate_passed" and x["value"] == 1 for x in by["ssd.chunked"])
