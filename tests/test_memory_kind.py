"""kind: memory on CPU: labelled peak-RSS rows, a tracker that sees a real allocation, train_step."""
import pytest
import torch

from harness.kinds.bench import IMPLS
from harness.kinds.bench.peak_memory import PeakMemory
from harness.kinds.bench.saved_activations import SavedActivations
from harness.kinds.bench.workload import Impl, Workload
from harness.run.execute import execute_cell
from harness.kinds.bench.testing import TINY_MODEL, TINY_OP, by_metric, cell, ctx


def test_peak_tracker_sees_a_large_temporary_allocation():
    with PeakMemory("cpu") as pm:
        x = torch.ones(64 * 1024 * 1024 // 4)    # 64 MiB, touched so it is resident
        x.add_(1)
        del x
    rows = by_metric(pm.rows())
    assert rows["peak_rss_delta_bytes"][0]["value"] >= 48 * 1024 * 1024
    assert rows["peak_rss_bytes"][0]["value"] >= rows["peak_rss_delta_bytes"][0]["value"]
    assert rows["peak_rss_bytes"][0]["unit"] == "bytes" and rows["peak_rss_bytes"][0]["method"]


def test_memory_cell_rows_are_labelled_on_cpu(monkeypatch):
    def build(cfg, device):
        def fn():
            y = torch.ones(cfg.seq_len * 1024 * 1024 // 4)   # seq_len MiB
            return y.add_(1).sum()
        return Workload(fn, tokens=cfg.batch * cfg.seq_len)
    monkeypatch.setitem(IMPLS._entries, "test.alloc", Impl("test.alloc", build))
    rows = execute_cell(cell("memory", **{**TINY_OP, "seq_len": 64, "repeats": 2}, impl="test.alloc"), ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert [r["repeat"] for r in m["peak_rss_bytes"]] == [0, 1]
    assert all(r["value"] >= 48 * 1024 * 1024 for r in m["peak_rss_delta_bytes"])
    assert "peak_mem_bytes" not in m and "peak_mem_GB" not in m   # CUDA-only names


@pytest.mark.parametrize("impl,extra", [("s6.chunked", {}), ("attention.naive", {}),
                                        ("model", {"model": TINY_MODEL, "vocab": 32, "pass": "train_step"})])
def test_memory_kind_runs_real_targets(impl, extra):
    rows = execute_cell(cell("memory", **TINY_OP, impl=impl, **extra), ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert len(m["peak_rss_bytes"]) == TINY_OP["repeats"]
    if impl == "model":
        assert m["n_params"][0]["value"] > 0


def test_saved_activations_count_each_kept_storage_once_and_skip_leaves():
    a = torch.randn(1000, requires_grad=True)              # a leaf: an input, not an activation
    w = torch.nn.Parameter(torch.randn(1000))
    with SavedActivations() as saved:
        (a * w).sum()                                        # mul keeps a and w: both leaves
    assert saved.bytes == 0
    with SavedActivations() as saved:
        b = a * 2                                            # keeps nothing (scalar)
        e = b.exp()                                          # keeps its output e: 4000 bytes
        (b * b).sum()                                        # keeps b twice: one storage, 4000 bytes
        b[:10].sin()                                         # a view of b: the same storage again
    assert saved.bytes == 2 * 4000
    del e


def test_memory_kind_reports_saved_activations_for_passes_with_a_backward():
    by_pass = {}
    for pass_ in ("fwd", "fwd+bwd"):
        rows = execute_cell(cell("memory", **{**TINY_OP, "pass": pass_}, impl="attention.naive"), ctx())
        assert all(r["status"] == "ok" for r in rows), rows[-1]
        by_pass[pass_] = by_metric(rows).get("saved_activation_bytes")
    assert by_pass["fwd"] is None
    [row] = by_pass["fwd+bwd"]
    # naive attention keeps at least the (batch, heads, L, L) softmax probabilities, in fp32
    assert row["unit"] == "bytes" and row["value"] >= TINY_OP["batch"] * TINY_OP["heads"] * TINY_OP["seq_len"] ** 2 * 4


def test_loss_chunk_keeps_one_chunk_of_logits_not_all_of_them():
    """impl model with loss_chunk: the same loss, and the saved bytes lose the fp32 log-softmax of every
    token (tokens x vocab x 4 bytes) but keep the hidden states the chunks recompute from."""
    vocab = 512
    base = {**TINY_OP, "dtype": "fp32", "pass": "fwd+bwd", "model": TINY_MODEL, "vocab": vocab}
    saved = {}
    for chunk in (None, 16):
        rows = execute_cell(cell("memory", **base, impl="model", loss_chunk=chunk), ctx())
        assert all(r["status"] == "ok" for r in rows), rows[-1]
        saved[chunk] = by_metric(rows)["saved_activation_bytes"][0]["value"]
    tokens = TINY_OP["batch"] * TINY_OP["seq_len"]
    assert saved[None] - saved[16] >= tokens * vocab * 4 * 0.9


def test_loss_chunk_needs_the_model_impl():
    rows = execute_cell(cell("memory", **TINY_OP, impl="attention.naive", loss_chunk=64), ctx())
    assert rows[-1]["status"] == "error" and "loss_chunk=64 chunks the LM head's loss" in rows[-1]["message"]
