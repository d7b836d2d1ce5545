"""kind: speed end to end on CPU: tidy rows per impl, exact summaries on a fake timer, OOM, skip, timeout."""
import time

import pytest
import torch

from harness.kinds.bench import IMPLS
from harness.kinds.bench.workload import Impl, Workload
from harness.run.execute import execute_cell
from harness.kinds import KINDS
from harness.kinds.speed import SPEC
from harness.kinds.bench.testing import FakeTimer, TINY_MODEL, TINY_OP, by_metric, cell, ctx

DERIVED = {"time_ms_median", "time_ms_iqr", "tokens_per_s", "achieved_GBps", "roofline_floor_ms", "roofline_fraction"}


@pytest.fixture
def fake_impl(monkeypatch):
    """fake_impl(name, fn) registers a target whose one call is ``fn()``."""
    def add(name, fn, bytes_=1e6):
        monkeypatch.setitem(IMPLS._entries, name, Impl(name, lambda cfg, device: Workload(fn, tokens=cfg.batch * cfg.seq_len,
                                                                                         bytes=bytes_)))
    return add


@pytest.mark.parametrize("impl", ["s6.reference", "s6.chunked", "s4.fft", "attention.sdpa", "attention.naive"])
def test_each_op_impl_gives_tidy_rows(impl):
    rows = execute_cell(cell("speed", **TINY_OP, impl=impl, **{"pass": "fwd+bwd"}), ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert [r["repeat"] for r in m["time_ms"]] == [0, 1, 2]
    assert all(r["unit"] == "ms" and r["value"] > 0 for r in m["time_ms"])
    assert DERIVED <= set(m)
    assert 0 < m["roofline_fraction"][0]["value"] < 1.5
    # CPU: the peak is the process's resident set, labelled as such
    assert "peak_rss_bytes" in m and "peak_rss_delta_bytes" in m and "peak_mem_bytes" not in m
    assert not any(k.startswith("gpu_") for k in m)


def test_model_level_speed_cell():
    rows = execute_cell(cell("speed", **TINY_OP, impl="model", model=TINY_MODEL, vocab=32), ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert m["n_params"][0]["value"] > 0 and "achieved_TFLOPs" in m


def test_median_and_iqr_rows_on_a_fake_timer(monkeypatch, fake_impl):
    fake_impl("test.fake", lambda: None)
    timer = FakeTimer([7.0, 1.0, 5.0, 3.0, 2.0])
    monkeypatch.setattr("harness.kinds.speed.make_timer", lambda device, flush: timer)
    rows = list(SPEC.run_cell(cell("speed", **{**TINY_OP, "repeats": 5}, impl="test.fake"), ctx()))
    m = by_metric(rows)
    assert [r["value"] for r in m["time_ms"]] == [7.0, 1.0, 5.0, 3.0, 2.0]
    assert m["time_ms_median"][0]["value"] == 3.0
    assert m["time_ms_iqr"][0]["value"] == pytest.approx(5.0 - 2.0)
    assert m["tokens_per_s"][0]["value"] == pytest.approx(TINY_OP["batch"] * TINY_OP["seq_len"] / 3e-3)
    assert m["achieved_GBps"][0]["value"] == pytest.approx(1e6 / 3e-3 / 1e9)


def test_oom_is_recorded_and_larger_seq_len_skipped(fake_impl):
    def boom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    fake_impl("test.oom", boom)
    small = cell("speed", **{**TINY_OP, "seq_len": 1024}, impl="test.oom")
    rows = execute_cell(small, ctx())
    assert rows[-1]["status"] == "oom" and "out of memory" in rows[-1]["message"].lower()
    finished = [(small, "oom")]
    bigger = cell("speed", **{**TINY_OP, "seq_len": 4096}, impl="test.oom")
    assert SPEC.skip_reason(bigger, finished) == "OOM at a smaller seq_len (L=1024) of the same test.oom"
    # smaller L, another impl, another pass: still run
    assert SPEC.skip_reason(cell("speed", **{**TINY_OP, "seq_len": 512}, impl="test.oom"), finished) is None
    assert SPEC.skip_reason(cell("speed", **{**TINY_OP, "seq_len": 4096}, impl="s6.chunked"), finished) is None
    other_pass = cell("speed", **{**TINY_OP, "seq_len": 4096, "pass": "fwd+bwd"}, impl="test.oom")
    assert SPEC.skip_reason(other_pass, finished) is None
    # ok cells never cause skips
    assert SPEC.skip_reason(bigger, [(small, "ok")]) is None


def test_skip_after_timeout_and_on_batch_axis():
    small = cell("memory", **{**TINY_OP, "batch": 8}, impl="s6.chunked")
    big = cell("memory", **{**TINY_OP, "batch": 16}, impl="s6.chunked")
    reason = KINDS.get("memory").skip_reason(big, [(small, "timeout")])
    assert reason == "timeout at a smaller batch (batch=8) of the same s6.chunked"


def test_timeout_keeps_the_repeats_already_timed(fake_impl):
    fake_impl("test.slow", lambda: time.sleep(0.15))
    c = cell("speed", **{**TINY_OP, "warmup": 0, "repeats": 100, "timeout_s": 1}, impl="test.slow")
    rows = execute_cell(c, ctx(seconds=0.6))
    assert rows[-1]["status"] == "timeout"
    timed = [r for r in rows if r["metric"] == "time_ms"]
    assert 1 <= len(timed) <= 4 and all(r["status"] == "ok" for r in timed)


def test_triton_on_cpu_is_skipped_with_reason():
    rows = execute_cell(cell("speed", **TINY_OP, impl="s6.triton"), ctx())
    assert rows[-1]["status"] == "skipped" and "CUDA" in rows[-1]["message"]


def test_run_meta_has_measured_ceilings():
    meta = SPEC.run_meta("cpu")["bench"]
    assert meta["ceilings"]["bytes_per_s"] > 1e8 and meta["ceilings"]["flops_per_s"] > 1e8
    assert meta["ceilings"]["device"] == "cpu"


def test_a_sweep_records_oom_then_skips_larger_lengths(write_suite, cli, monkeypatch, tmp_path):
    """End to end through the runner: L=32 ok, L=64 runs out of memory, L=128 is skipped."""
    from harness.store import results

    def build(cfg, device):
        if cfg.seq_len >= 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return Workload(lambda: None, tokens=cfg.seq_len)
    monkeypatch.setitem(IMPLS._entries, "test.grows", Impl("test.grows", build))
    suite = write_suite("""
        name: oom-sweep
        kind: speed
        device: cpu
        defaults: {batch: 1, d_model: 8, d_state: 4, heads: 2, dtype: fp32, warmup: 0, repeats: 2}
        sweep:
          impl: [test.grows]
          seq_len: [32, 64, 128]
        """)
    res = cli("run", suite, "--out", tmp_path / "out", "--quiet", "--no-report")
    assert res.code in (0, 1), res.err
    df = results.load(tmp_path / "out")
    status = df.groupby("seq_len")["status"].agg(lambda s: "ok" if (s == "ok").all() else s[s != "ok"].iloc[0])
    assert status.to_dict() == {32: "ok", 64: "oom", 128: "skipped"}
    message = df[(df.seq_len == 128)]["message"].iloc[0]
    assert message == "OOM at a smaller seq_len (L=64) of the same test.grows"
