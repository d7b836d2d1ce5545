"""Synthetic run directories in the runner's on-disk format, for tests and demos of reports/diffs.

:func:`write_run` writes ``rows.jsonl``, ``meta.json`` and ``suite.yaml`` exactly as the contract in
DESIGN.md describes; :func:`speed_rows` and :func:`task_rows` generate plausible rows with known,
controllable effects (a slowdown factor, an accuracy shift, failed cells), so a test can check that
a report or a diff sees what was put in.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import yaml


def cell_id(params: Dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def default_meta(run_id: str, suite: str, kind: str, *, gpu: Optional[str] = None, torch: str = "2.13.0",
                 cpu: str = "Test CPU", commit: str = "0" * 40) -> Dict[str, Any]:
    return {"run_id": run_id, "suite": suite, "kind": kind, "commit": commit, "dirty": False,
            "started": "2026-01-01T00:00:00Z", "ended": "2026-01-01T00:01:00Z",
            "versions": {"python": "3.11", "torch": torch, "triton": "3.6.0", "cuda": None if gpu is None else "12.8"},
            "gpu": None if gpu is None else {"name": gpu, "driver": "570"},
            "cpu": {"model": cpu}, "host": "testhost", "command": "ssmbench run test.yaml"}


def write_run(run_dir: Path, rows: Iterable[Dict[str, Any]], meta: Dict[str, Any],
              suite: Optional[Dict[str, Any]] = None, overrides: Optional[Dict[str, Any]] = None) -> Path:
    """Write a run directory; each row gets the run columns from ``meta``; ``overrides`` as ``--set`` gives them."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_cols = {"run_id": meta["run_id"], "suite": meta["suite"], "commit": meta["commit"],
                "dirty": meta["dirty"], "kind": meta["kind"]}
    with open(run_dir / "rows.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({**run_cols, **row}) + "\n")
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    doc = suite or {"name": meta["suite"], "kind": meta["kind"]}
    plan = {"suite": doc, "source": "synthetic", "overrides": overrides or {}, "filters": {}, "cells": []}
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    return run_dir


def _row(params: Dict[str, Any], metric: str, value: Any, unit: str, repeat: int = 0,
         status: str = "ok", message: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    row = {"cell_id": cell_id(params), "status": status, "metric": metric, "value": value, "unit": unit,
           "repeat": repeat, "message": message}
    row.update(params)
    row.update(extra)
    return row


def speed_rows(*, impls: Sequence[str] = ("s6.chunked", "attention.sdpa"),
               seq_lens: Sequence[int] = (256, 512, 1024), repeats: int = 30, noise: float = 0.03,
               slowdown: Optional[Dict[str, float]] = None, failures: Optional[Dict[tuple, str]] = None,
               passes: Sequence[str] = ("fwd",), seed: int = 0) -> List[Dict[str, Any]]:
    """Per-repeat ``time_ms`` rows (log-normal noise) plus derived and memory rows.

    ``slowdown`` maps an impl to a time factor; ``failures`` maps ``(impl, seq_len)`` to a status
    (``oom``, ``timeout``, ...), which replaces that cell's rows by one failure row.
    """
    rng = np.random.default_rng(seed)
    slowdown, failures = slowdown or {}, failures or {}
    rows: List[Dict[str, Any]] = []
    for impl in impls:
        for p in passes:
            for L in seq_lens:
                params = {"impl": impl, "seq_len": L, "batch": 2, "d_model": 64, "d_state": 16,
                          "dtype": "fp32", "pass": p, "device": "cpu", "repeats": repeats}
                if (impl, L) in failures:
                    status = failures[(impl, L)]
                    rows.append(_row(params, "cell", None, "", status=status, message=f"{status} at L={L}"))
                    continue
                base = (0.002 * L if impl.startswith("s6") else 1e-5 * L * L) * (2.5 if p == "fwd+bwd" else 1)
                base *= slowdown.get(impl, 1.0)
                times = base * np.exp(rng.normal(0.0, noise, repeats))
                rows += [_row(params, "time_ms", float(t), "ms", repeat=i) for i, t in enumerate(times)]
                med = float(np.median(times))
                rows += [_row(params, "time_ms_median", med, "ms"),
                         _row(params, "time_ms_iqr", float(np.subtract(*np.percentile(times, [75, 25]))), "ms"),
                         _row(params, "tokens_per_s", 2 * L / med * 1e3, "tokens/s"),
                         _row(params, "roofline_fraction", 0.25, ""),
                         _row(params, "peak_rss_bytes", float(1e6 * L), "bytes")]
    return rows


def task_rows(*, archs: Sequence[str] = ("h3", "mamba"), mixers: Sequence[str] = ("s4", "s6"),
              seeds: Sequence[int] = (0, 1), train_len: int = 64, eval_lens: Sequence[int] = (32, 64, 128, 256),
              steps: Sequence[int] = (0, 10, 20, 30), accuracy_shift: float = 0.0,
              failures: Optional[Dict[tuple, str]] = None, seed: int = 0,
              extra_params: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Learning-curve and final per-length accuracy rows of an arch x mixer grid over seeds.

    Deterministic for a given ``seed``; ``accuracy_shift`` is added to every final accuracy
    (clipped to [0, 1]); ``failures`` maps ``(arch, mixer)`` to a status for all its seeds;
    ``extra_params`` overrides or adds cell parameters (e.g. ``{"device": "cuda"}``).
    """
    rng = np.random.default_rng(seed)
    failures = failures or {}
    rows: List[Dict[str, Any]] = []
    for ai, arch in enumerate(archs):
        for mi, mixer in enumerate(mixers):
            for s in seeds:
                params = {"task.name": "induction_heads", "task.seq_len": train_len, "model.arch": arch,
                          "model.mixer": mixer, "model.d_model": 32, "train.steps": max(steps),
                          "device": "cpu", "seed": s, **(extra_params or {})}
                if (arch, mixer) in failures:
                    st = failures[(arch, mixer)]
                    rows.append(_row(params, "cell", None, "", status=st, message=f"{st}: loss became NaN"))
                    continue
                skill = 0.3 + 0.3 * ai + 0.3 * mi
                for step in steps:
                    frac = step / max(steps)
                    rows.append(_row(params, "loss", float(2.8 * (1 - 0.8 * skill * frac) + rng.normal(0, 0.01)), "",
                                     step=step))
                    rows.append(_row(params, "accuracy", float(min(1.0, 0.06 + skill * frac)), "", step=step))
                for L in eval_lens:
                    decay = 1.0 if L <= train_len else (1.0 - (1 - skill) * np.log2(L / train_len) / 3)
                    acc = float(np.clip(min(1.0, 0.06 + skill) * decay + accuracy_shift + rng.normal(0, 0.005), 0, 1))
                    rows.append(_row(params, "accuracy", acc, "", eval_seq_len=L))
                rows.append(_row(params, "n_params", 12345.0, ""))
                rows.append(_row(params, "train_time_s", float(1.0 + rng.random()), "s"))
    return rows
