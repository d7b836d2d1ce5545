"""Microbenchmarks of the harness's own hot paths (pytest-benchmark), per DESIGN.md.

Not part of the default test run (pyproject's addopts ignore tests/bench). Run and compare across
commits with:

    python -m pytest tests/bench --benchmark-only --benchmark-save=NAME
    python -m pytest tests/bench --benchmark-only --benchmark-compare

Each benchmark also asserts what it produced, so a fast wrong answer fails.
"""
from __future__ import annotations

import pytest

from harness.suite.expand import expand
from harness.store.results import RowStore, read_frame
from harness.suite.schema import load_suites

SUITE_10K = """
name: bench-expand
kind: speed
device: cpu
defaults: {batch: 1, d_model: 16, expand: 2, d_state: 4, heads: 2, dtype: fp32, pass: fwd,
           warmup: 0, repeats: 1, timeout_s: 10}
sweep:
  impl: [s6.reference, s6.chunked, s4.fft, attention.naive, attention.sdpa]
  seq_len: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
  batch: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  d_state: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
  seed: [0, 1]
"""


def test_expand_10k_cells(benchmark, tmp_path):
    """Expanding + validating a 10,000-cell suite (5 x 10 x 10 x 10 x 2)."""
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_10K)
    suite = load_suites(path)[0]
    cells = benchmark.pedantic(expand, args=(suite,), kwargs={"cuda_available": False}, rounds=3, iterations=1)
    assert len(cells) == 10_000
    assert len({c.cell_id for c in cells}) == 10_000


def _rows(n: int):
    return [{"run_id": "r", "suite": "s", "cell_id": f"{i // 30:012x}", "commit": "abc", "dirty": False,
             "kind": "speed", "status": "ok", "metric": "time_ms", "value": 0.5 + i * 1e-6, "unit": "ms",
             "repeat": i % 30, "impl": "s6.triton", "seq_len": 4096} for i in range(n)]


@pytest.mark.parametrize("n_rows", [1_000_000])
def test_append_and_load_rows(benchmark, tmp_path, n_rows):
    """Appending 1M rows cell by cell (30 rows per fsync'd append) and loading them back as a frame."""
    rows = _rows(n_rows)
    cells = [rows[i:i + 30_000] for i in range(0, n_rows, 30_000)]  # batch the fsyncs: 34 appends

    def append_then_load():
        run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run_dir.mkdir()
        store = RowStore(run_dir)
        for chunk in cells:
            store.append(chunk)
        return read_frame(store.path)

    frame = benchmark.pedantic(append_then_load, rounds=1, iterations=1)
    assert len(frame) == n_rows
    assert frame["value"].iloc[-1] == pytest.approx(rows[-1]["value"])


def test_kernel_launch_overhead(benchmark):
    """Python + dispatch overhead of one tiny selective-scan call (chunked backend on CPU)."""
    import torch

    from kernels import selective_scan

    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 4, 8, generator=g)
    delta = torch.rand(1, 4, 8, generator=g)
    A = -torch.rand(4, 2, generator=g)
    B = torch.randn(1, 2, 8, generator=g)
    C = torch.randn(1, 2, 8, generator=g)
    y = benchmark(selective_scan, u, delta, A, B, C, backend="chunked")
    assert y.shape == u.shape and torch.isfinite(y).all()
