"""The runner: failure rows, skip logic, deadlines, meta, Ctrl-C, and resume after a real SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_dirs, subprocess_env
from harness.cells import Cell, CellContext
from harness.run.execute import execute_cell, failure_row
from harness.run.executors import Executor
from harness.store.results import load, load_meta, read_rows
from harness.run.runner import RunInterrupted, read_plan, run_suite

SUITE = """
name: runs
kind: fake
device: cpu
defaults: {seq_len: 8}
sweep:
  behavior: [{behaviors}]
"""


def statuses(run_dir):
    rows = read_rows(Path(run_dir) / "rows.jsonl")
    out = {}
    for r in rows:
        if r["metric"] == "cell" or r["cell_id"] not in out:
            out[r["cell_id"]] = (r["behavior"], r["status"], r.get("message"))
    return sorted(out.values())


def test_every_failure_becomes_a_status_row_and_errors_exit_1(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "ok, error, oom, cuda_oom_text, diverged, skip, timeout, partial"))
    res = cli("run", path, "--no-report", "--quiet")
    assert res.code == 1, res.err
    (run_dir,) = run_dirs(tmp_path / "results")
    got = {b: (s, m) for b, s, m in statuses(run_dir)}
    assert got["ok"] == ("ok", None)
    assert got["error"] == ("error", f"ValueError: boom (traceback: cells/{_id(run_dir, 'error')}.log)")
    assert got["oom"][0] == "oom" and "CUDA out of memory" in got["oom"][1]
    assert got["cuda_oom_text"][0] == "oom"
    assert got["diverged"] == ("diverged", "loss is nan at step 3")
    assert got["skip"] == ("skipped", "not supported here")
    assert got["timeout"] == ("timeout", "took too long")
    assert got["partial"][0] == "error"
    rows = read_rows(Path(run_dir) / "rows.jsonl")
    partial = [r for r in rows if r["behavior"] == "partial"]
    assert [r["metric"] for r in partial] == ["time", "accuracy", "cell"]  # rows before the failure kept
    failure = partial[-1]
    assert failure["value"] is None and failure["status"] == "error"
    log = Path(run_dir) / "cells" / f"{_id(run_dir, 'error')}.log"
    assert "Traceback" in log.read_text() and "ValueError: boom" in log.read_text()


def _id(run_dir, behavior):
    return next(r["cell_id"] for r in read_rows(Path(run_dir) / "rows.jsonl") if r["behavior"] == behavior)


def test_non_error_failures_exit_0(write_suite, cli):
    path = write_suite(SUITE.replace("{behaviors}", "ok, oom, diverged, skip, timeout"))
    assert cli("run", path, "--no-report", "--quiet").code == 0


def test_running_out_of_memory_on_the_cpu_is_oom_as_on_cuda(write_suite, cli, tmp_path):
    """torch's CPU allocator raises a RuntimeError ("DefaultCPUAllocator: can't allocate memory"), and
    Python a MemoryError: both end the cell as ``oom`` (the first was ``error``), so the sweep skips
    the larger sizes and the exit code is 0 as for a CUDA OOM."""
    path = write_suite(SUITE.replace("{behaviors}", "cpu_oom, memory_error, oom"))
    res = cli("run", path, "--no-report", "--quiet")
    assert res.code == 0, res.err
    got = {b: (s, m) for b, s, m in statuses(run_dirs(tmp_path / "results")[0])}
    assert got["cpu_oom"][0] == "oom" and "DefaultCPUAllocator" in got["cpu_oom"][1]
    assert got["memory_error"][0] == "oom"
    assert got["oom"][0] == "oom"


def test_execute_cell_never_raises_and_adds_host_columns(tmp_path):
    for behavior, status in [("error", "error"), ("oom", "oom"), ("partial", "error"), ("ok", "ok")]:
        cell = Cell("s", "fake", "abc123", {"behavior": behavior})
        rows = execute_cell(cell, CellContext(run_dir=str(tmp_path)))
        assert rows[-1]["status"] == status
        assert all({"host", "device_name", "wall_s"} <= set(r) for r in rows)
    unknown_kind = execute_cell(Cell("s", "no-such-kind", "x", {}), CellContext())
    assert unknown_kind[0]["status"] == "error" and "unknown suite kind" in unknown_kind[0]["message"]


def test_deadline_from_timeout_s_ends_a_hanging_cell(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "sleep") + "  timeout_s: [0.2]\n  sleep_s: [30]\n")
    t0 = time.monotonic()
    assert cli("run", path, "--no-report", "--quiet").code == 0
    assert time.monotonic() - t0 < 20
    (run_dir,) = run_dirs(tmp_path / "results")
    assert statuses(run_dir)[0][1] == "timeout"


def test_skip_reason_sees_finished_cells(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "oom, ok") + "  skip_after_oom: [true]\n")
    cli("run", path, "--no-report", "--quiet")
    (run_dir,) = run_dirs(tmp_path / "results")
    assert ("ok", "skipped", "an earlier cell ran out of memory") in statuses(run_dir)


def test_cuda_suite_on_a_cpu_box_is_skipped_not_failed(write_suite, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU box, whatever this host has
    path = write_suite(SUITE.replace("{behaviors}", "ok, error").replace("device: cpu", "device: cuda"))
    res = cli("run", path, "--no-report", "--quiet")
    assert res.code == 1  # rows are written, but nothing was measured: not a success
    assert "nothing was measured: all 2 cells were skipped" in res.err
    (run_dir,) = run_dirs(tmp_path / "results")
    assert {s for _, s, _ in statuses(run_dir)} == {"skipped"}
    assert {m for _, _, m in statuses(run_dir)} == {"CUDA not available"}
    meta = load_meta(run_dir)
    assert meta["device"] == "cuda" and "fake_meta" not in meta   # no run_meta measured on a device not here


def test_run_directory_layout_and_meta(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "ok"))
    cli("run", path, "--no-report", "--quiet", "--out", "out")
    (run_dir,) = run_dirs(tmp_path / "out")
    assert run_dir.parent.name == "runs"
    assert {"rows.jsonl", "results.parquet", "results.csv", "meta.json", "suite.yaml"} <= {
        p.name for p in run_dir.iterdir()}
    meta = load_meta(run_dir)
    for key in ("commit", "dirty", "python", "torch", "cpu", "ram_gib", "host", "command", "start_time",
                "end_time", "cpu_percent", "ram_available_gib"):
        assert key in meta, key
    if hasattr(os, "getloadavg"):  # how busy the machine was: timings on a loaded box are noise
        assert meta["load_avg_1m"] >= 0 and {"load_avg_5m", "load_avg_15m"} <= set(meta)
    import psutil
    if psutil.cpu_freq() is not None and psutil.cpu_freq().current:
        assert meta["cpu_freq_mhz"] > 0
    assert meta["fake_meta"] == "cpu"  # KindSpec.run_meta
    assert meta["status_counts"] == {"ok": 1}
    plan, cells = read_plan(run_dir)
    assert plan["suite"]["name"] == "runs" and len(cells) == 1
    assert len(pd.read_parquet(run_dir / "results.parquet")) == len(read_rows(run_dir / "rows.jsonl"))


class _InterruptAfterOne(Executor):
    def run(self, cells, make_context, on_done, skip_reason):
        from harness.run.execute import execute_cell
        on_done(cells[0], execute_cell(cells[0], make_context(cells[0])))
        raise KeyboardInterrupt


def test_ctrl_c_writes_the_tables_and_the_run_can_be_resumed(write_suite, tmp_path):
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok, sleep")))[0]
    cells = expand(suite)
    with pytest.raises(RunInterrupted) as info:
        run_suite(suite.doc.data, cells, out_root=tmp_path / "results", executor=_InterruptAfterOne())
    run_dir = info.value.run_dir
    assert len(pd.read_parquet(run_dir / "results.parquet")["cell_id"].unique()) == 1
    assert load_meta(run_dir)["interrupted"] is True
    result = run_suite(suite.doc.data, cells, resume_dir=run_dir)
    assert result.counts == {"ok": 2}
    assert len(load(run_dir)["cell_id"].unique()) == 2
    import yaml
    plan = yaml.safe_load((run_dir / "suite.yaml").read_text())   # rewritten by the resume, order kept
    assert list(plan) == ["suite", "source", "overrides", "filters", "cells"] and plan["source"] == ""
    assert list(plan["suite"]) == list(suite.doc.data)


def test_resume_keeps_the_oom_skip_chain_of_the_interrupted_run(write_suite, tmp_path):
    """A run stopped right after an OOM is resumed: the cells the OOM rules out are skipped, not run."""
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "oom, ok") + "  skip_after_oom: [true]\n"))[0]
    cells = expand(suite)
    assert [c.get("behavior") for c in cells] == ["oom", "ok"]
    with pytest.raises(RunInterrupted) as info:
        run_suite(suite.doc.data, cells, out_root=tmp_path / "results", executor=_InterruptAfterOne())
    run_dir = info.value.run_dir
    assert statuses(run_dir) == [("oom", "oom", statuses(run_dir)[0][2])]
    result = run_suite(suite.doc.data, cells, resume_dir=run_dir)
    assert result.counts == {"oom": 1, "skipped": 1}
    assert ("ok", "skipped", "an earlier cell ran out of memory") in statuses(run_dir)


def test_resume_keeps_the_bench_oom_chain_of_larger_sizes(write_suite, tmp_path, monkeypatch):
    """The same with the speed/memory/decode kinds' rule (harness.kinds.bench.skips) on the fake kind: after
    an OOM of s4 at seq_len 16, a resume skips s4 at 32 and runs s4 at 8 and every s6 cell."""
    import dataclasses

    import fake_kind
    from harness.kinds import KINDS
    from harness.kinds.bench.skips import skip_reason
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites

    def run_cell(cell, ctx):
        if cell.get("model.mixer") == "s4" and cell.get("seq_len") >= 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield from fake_kind.run_cell(cell, ctx)

    monkeypatch.setitem(KINDS._entries, "fake", dataclasses.replace(KINDS.get("fake"), run_cell=run_cell,
                                                                     skip_reason=skip_reason))
    text = SUITE.replace("sweep:\n  behavior: [{behaviors}]\n", "sweep:\n  model.mixer: [s4, s6]\n"
                         "  seq_len: [16, 32, 8]\n")
    cells = expand(load_suites(write_suite(text))[0])
    suite_data = load_suites(write_suite(text))[0].doc.data
    assert [(c.get("model.mixer"), c.get("seq_len")) for c in cells][:2] == [("s4", 16), ("s4", 32)]
    with pytest.raises(RunInterrupted) as info:
        run_suite(suite_data, cells, out_root=tmp_path / "results", executor=_InterruptAfterOne())
    run_dir = info.value.run_dir
    result = run_suite(suite_data, cells, resume_dir=run_dir)
    assert result.counts == {"oom": 1, "skipped": 1, "ok": 4}, result.counts
    rows = read_rows(Path(run_dir) / "rows.jsonl")
    ended = {(r["model.mixer"], r["seq_len"]): (r["status"], r.get("message")) for r in rows if r["status"] != "ok"}
    assert ended[("s4", 32)] == ("skipped", "OOM at a smaller seq_len (L=16) of the same target")
    assert set(ended) == {("s4", 16), ("s4", 32)}


def test_resume_after_sigkill_has_exactly_one_set_of_rows_per_cell(write_suite, tmp_path, cli):
    n_cells = 8
    path = write_suite(SUITE.replace("{behaviors}", "sleep") + f"  seq_len: {list(range(1, n_cells + 1))}\n"
                       "  sleep_s: [0.4]\n")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--no-report", "--quiet"],
                            cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        rows_file = None
        while time.monotonic() < deadline:
            found = list((tmp_path / "results").rglob("rows.jsonl"))
            if found and len({r["cell_id"] for r in read_rows(found[0])}) >= 2:
                rows_file = found[0]
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert rows_file is not None, "the run never finished two cells"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = rows_file.parent
    done_before = {r["cell_id"] for r in read_rows(rows_file)}
    assert 2 <= len(done_before) < n_cells
    assert not (run_dir / "results.parquet").exists()  # it really died before the end

    res = cli("run", "--resume", run_dir, "--no-report", "--quiet")
    assert res.code == 0, res.err
    frame = load(run_dir)
    per_cell = frame.groupby("cell_id")["metric"].apply(list)
    assert len(per_cell) == n_cells
    assert all(metrics == ["time", "accuracy"] for metrics in per_cell)
    assert len(pd.read_parquet(run_dir / "results.parquet")) == 2 * n_cells
    assert len(run_dirs(tmp_path / "results")) == 1  # resumed in place


def test_torn_last_line_is_dropped_and_its_cell_runs_again(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "ok") + "  seq_len: [1, 2, 3]\n")
    cli("run", path, "--no-report", "--quiet")
    (run_dir,) = run_dirs(tmp_path / "results")
    rows_file = run_dir / "rows.jsonl"
    lines = rows_file.read_text().splitlines(keepends=True)
    last_cell = json.loads(lines[-1])["cell_id"]
    # simulate a kill in the middle of the last cell's write: its first row whole, the second torn
    rows_file.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert len(read_rows(rows_file)) == len(lines) - 1  # readers ignore the torn line
    res = cli("run", path, "--resume", run_dir, "--no-report", "--quiet")
    assert res.code == 0, res.err
    rows = read_rows(rows_file)
    assert len(rows) == len(lines)
    assert [r["metric"] for r in rows if r["cell_id"] == last_cell] == ["time", "accuracy"]


def test_resume_refuses_another_suite(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "ok"))
    cli("run", path, "--no-report", "--quiet")
    (run_dir,) = run_dirs(tmp_path / "results")
    other = write_suite(SUITE.replace("name: runs", "name: other").replace("{behaviors}", "ok"), "other.yaml")
    res = cli("run", other, "--resume", run_dir)
    assert res.code == 2 and "run is of suite 'runs'" in res.err
    res = cli("run", "--resume", tmp_path)
    assert res.code == 2 and "not a run directory" in res.err


def test_time_limit_comes_from_timeout_s_or_the_task_budget_with_grace():
    from harness.run.runner import cell_time_limit
    assert cell_time_limit({"timeout_s": 5}) == 5
    assert cell_time_limit({"train": {"timeout_s": 200}}) == 300
    assert cell_time_limit({"train": {"timeout_s": 10}}) == 70
    assert cell_time_limit({"train": {}}) is None and cell_time_limit({}) is None


def test_kind_defaults_fill_the_deadline_and_the_columns():
    from pydantic import Field

    from harness.config_types import StrictModel
    from harness.kinds import KindSpec
    from harness.run.runner import resolved_params

    class Config(StrictModel):
        seq_len: int = 8
        timeout_s: float = 0.25
        pass_: str = Field("fwd", alias="pass")

    spec = KindSpec("x", Config, lambda cell, ctx: [])
    full = resolved_params(spec, Cell("s", "x", "id", {"seq_len": 16}))
    assert full == {"seq_len": 16, "timeout_s": 0.25, "pass": "fwd"}


def test_progress_bar_renders_on_a_terminal():
    import io

    from rich.console import Console

    from harness.run.progress import BarProgress
    buf = io.StringIO()
    bar = BarProgress(console=Console(file=buf, force_terminal=True, width=150))
    cells = [Cell("s", "fake", f"{i:012d}", {"seq_len": i}, {"seq_len": i}) for i in range(2)]
    bar.start("s", total=2)
    for cell, status in zip(cells, ["ok", "oom"]):
        bar.cell_started(cell)
        bar.cell_done(cell, status, 0.1)
    bar.close()
    out = buf.getvalue()
    assert "2/2" in out and "oom" in out


def test_resume_with_other_filters_grows_the_run(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "ok") + "  batch: [1, 2]\n")
    assert cli("run", path, "--filter", "batch=1", "--no-report", "--quiet").code == 0
    (run_dir,) = run_dirs(tmp_path / "results")
    res = cli("run", path, "--resume", run_dir, "--filter", "batch=2", "--no-report", "--quiet")
    assert res.code == 0 and "1 cell(s) not in the run's original plan are added" in res.err
    plan, cells = read_plan(run_dir)
    assert len(cells) == 2 and load(run_dir)["cell_id"].nunique() == 2
    assert list(plan) == ["suite", "source", "overrides", "filters", "cells"]   # rewritten in its own order
    assert cli("run", "--resume", run_dir, "--no-report", "--quiet").code == 0  # nothing left to run
    assert len(read_rows(run_dir / "rows.jsonl")) == 4


def test_sigint_mid_run_exits_130_with_tables_written(write_suite, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "sleep") + "  seq_len: [1, 2, 3, 4, 5, 6]\n  sleep_s: [0.5]\n")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--no-report", "--quiet"],
                            cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = list((tmp_path / "results").rglob("rows.jsonl"))
            if found and read_rows(found[0]):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "resume with: ssmbench run --resume" in err and "Traceback" not in err
    (run_dir,) = run_dirs(tmp_path / "results")
    assert len(pd.read_parquet(run_dir / "results.parquet")) == len(read_rows(run_dir / "rows.jsonl")) > 0
    assert load_meta(run_dir)["interrupted"] is True



@pytest.fixture
def checkout(monkeypatch, tmp_path):
    """A one-commit git checkout in tmp_path that harness.store.meta takes for the project (no output folders
    excluded yet, no SSMBENCH_GIT_COMMIT), clean at the start."""
    from harness.store import meta

    repo = tmp_path / "checkout"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "a"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    monkeypatch.delenv("SSMBENCH_GIT_COMMIT", raising=False)
    monkeypatch.setattr(meta, "PROJECT_ROOT", repo)
    monkeypatch.setattr(meta, "_OUTPUT_DIRS", [])
    meta.git_state.cache_clear()
    return repo

def test_run_output_inside_the_checkout_does_not_make_it_dirty(checkout, monkeypatch, tmp_path):
    """Rows a run writes into a folder git does not ignore are not code: a second run or a --resume into that
    folder must not find the checkout 'dirty' (and refuse), while any other untracked file still counts."""
    from harness.store import meta

    repo = checkout
    try:
        out = repo / "my-results" / "suite" / "20261205T000000-abc"
        out.mkdir(parents=True)
        (out / "rows.jsonl").write_text("{}\n")
        assert meta.git_state()["dirty"] is True            # not yet known as an output folder
        meta.exclude_output_dir(repo / "my-results")
        assert meta.git_state()["dirty"] is False
        meta.exclude_output_dir(tmp_path / "elsewhere")       # outside the checkout: nothing to exclude
        meta.exclude_output_dir(repo)                         # the whole checkout is never excluded
        assert meta._OUTPUT_DIRS == ["my-results"]
        (repo / "pkg" / "new_module.py").write_text("y = 2\n")
        meta.git_state.cache_clear()
        assert meta.git_state()["dirty"] is True             # a new module still changes what runs
        (repo / "pkg" / "new_module.py").unlink()
        (repo / "pkg" / "code.py").write_text("x = 2\n")
        meta.git_state.cache_clear()
        assert meta.git_state()["dirty"] is True             # and so does an edit
    finally:
        meta.git_state.cache_clear()


def test_named_commit_wins_over_git(monkeypatch):
    """A tree copied to a GPU box may carry a stale .git: SSMBENCH_GIT_COMMIT says what code ran."""
    from harness.store import meta

    meta.git_state.cache_clear()
    monkeypatch.setenv("SSMBENCH_GIT_COMMIT", "0123456789abcdef")
    monkeypatch.setenv("SSMBENCH_GIT_DIRTY", "1")
    try:
        assert meta.git_state() == {"commit": "0123456789abcdef", "short": "0123456", "dirty": True}
    finally:
        meta.git_state.cache_clear()
    monkeypatch.delenv("SSMBENCH_GIT_COMMIT")
    assert meta.git_state()["commit"] not in ("0123456789abcdef",)
    meta.git_state.cache_clear()


def test_a_cell_estimated_larger_than_free_memory_is_skipped_before_it_runs(write_suite, cli, tmp_path):
    path = write_suite(SUITE.replace("{behaviors}", "ok") + "  needs_bytes: [1000, 1000000000000000000]\n")
    res = cli("run", path, "--no-report", "--quiet")
    assert res.code == 0, res.err
    rows = read_rows(run_dirs(tmp_path / "results")[0] / "rows.jsonl")
    by_need = {r["needs_bytes"]: r for r in rows if r["metric"] in ("cell", "time")}
    assert by_need[1000]["status"] == "ok"
    big = by_need[10**18]
    assert big["status"] == "skipped" and big["metric"] == "cell"
    assert "estimated to need at least 931,322,574.6 GiB" in big["message"] and "GiB free" in big["message"]


def test_a_task_cell_of_a_billion_tokens_is_skipped_not_grown(tmp_path):
    """It used to allocate ~12 GB before the allocator gave up; the estimate stops it at once."""
    import psutil
    cell = Cell("t", "task", "id", {"task": {"name": "copying", "seq_len": 10**9}, "train": {"batch": 1},
                                    "model": {"mixer": "s6", "d_model": 8, "n_layers": 1}, "device": "cpu"})
    rss = psutil.Process().memory_info().rss
    start = time.monotonic()
    (row,) = execute_cell(cell, CellContext(device="cpu"))
    assert row["status"] == "skipped", row
    assert "estimated to need at least" in row["message"]
    assert time.monotonic() - start < 30 and psutil.Process().memory_info().rss - rss < 2**30


def test_footprint_lower_bounds_grow_with_the_sizes():
    from harness.kinds.bench.config import DecodeConfig, SpeedConfig
    from harness.kinds.footprint import bench_bytes, decode_bytes
    small = SpeedConfig.model_validate({"impl": "s6.reference", "seq_len": 1024, "batch": 2, "d_model": 64,
                                        "dtype": "fp32"})
    assert bench_bytes(small) == 2 * 2 * 1024 * 128 * 4  # input and output of batch x L x width, fp32
    large = small.model_copy(update={"seq_len": 4096})
    assert bench_bytes(large) == 4 * bench_bytes(small)
    dec = DecodeConfig.model_validate({"model": {"mixer": "s6", "d_model": 32}, "prompt_len": 100, "gen_len": 28})
    assert decode_bytes(dec) == 128 * 8 + 100 * 32 * 2


@pytest.fixture
def at_commit(monkeypatch):
    """at_commit("aaaa...", dirty=False): make this process's checkout look like that commit."""
    from harness.store import meta

    def set_commit(commit: str, dirty: bool = False) -> None:
        monkeypatch.setenv("SSMBENCH_GIT_COMMIT", commit)
        monkeypatch.setenv("SSMBENCH_GIT_DIRTY", "1" if dirty else "0")
        meta.git_state.cache_clear()

    yield set_commit
    meta.git_state.cache_clear()


def _half_done_run(write_suite, cli, tmp_path):
    """A run of 4 cells of which 2 have rows (the others dropped, as if it had been killed)."""
    path = write_suite(SUITE.replace("{behaviors}", "ok") + "  seq_len: [1, 2, 3, 4]\n")
    assert cli("run", path, "--no-report", "--quiet").code == 0
    (run_dir,) = run_dirs(tmp_path / "results")
    rows = read_rows(run_dir / "rows.jsonl")
    keep = {r["cell_id"] for r in rows[:4]}
    (run_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["cell_id"] in keep))
    return path, run_dir, keep


def test_resume_at_another_commit_is_refused_unless_asked(write_suite, cli, tmp_path, at_commit):
    at_commit("a" * 40)
    path, run_dir, _ = _half_done_run(write_suite, cli, tmp_path)
    at_commit("b" * 40)
    res = cli("run", "--resume", run_dir, "--no-report", "--quiet")
    assert res.code == 2, res
    assert "made at commit aaaaaaa and this checkout is at bbbbbbb" in res.err and "--allow-other-commit" in res.err
    assert len(read_rows(run_dir / "rows.jsonl")) == 4  # nothing ran
    at_commit("a" * 40, dirty=True)
    res = cli("run", "--resume", run_dir, "--no-report", "--quiet")
    assert res.code == 2 and "made with a clean tree" in res.err

    at_commit("b" * 40)
    res = cli("run", "--resume", run_dir, "--no-report", "--quiet", "--allow-other-commit")
    assert res.code == 0, res.err
    rows = read_rows(run_dir / "rows.jsonl")
    assert {r["commit"] for r in rows} == {"a" * 40, "b" * 40} and len(rows) == 8
    assert load_meta(run_dir)["commits"] == "aaaaaaa, bbbbbbb"
    from harness.analysis.report import build_report
    report = build_report([run_dir], out_dir=tmp_path / "report")
    assert "aaaaaaa, bbbbbbb" in (report / "report.md").read_text()  # the report names both
    at_commit("b" * 40)  # the same code as the last resume: nothing to refuse
    assert cli("run", "--resume", run_dir, "--no-report", "--quiet").code == 0


def test_resume_refuses_set_and_filter_without_the_suite(write_suite, cli, tmp_path, at_commit):
    at_commit("a" * 40)
    path, run_dir, _ = _half_done_run(write_suite, cli, tmp_path)
    for flags in (["--filter", "seq_len=3"], ["--set", "batch=3"], ["--device", "cpu"]):
        res = cli("run", "--resume", run_dir, "--no-report", "--quiet", *flags)
        assert res.code == 2, (flags, res)
        assert f"{flags[0]} would change nothing" in res.err
    assert len(read_rows(run_dir / "rows.jsonl")) == 4
    # with the suite file the filter is applied: only the seq_len 3 cell runs (if it was left)
    res = cli("run", path, "--resume", run_dir, "--no-report", "--quiet", "--filter", "seq_len=3")
    assert res.code == 0, res.err


def test_resume_dry_run_lists_only_the_cells_left(write_suite, cli, tmp_path, at_commit):
    at_commit("a" * 40)
    path, run_dir, done = _half_done_run(write_suite, cli, tmp_path)
    res = cli("run", "--resume", run_dir, "--dry-run")
    assert res.code == 0, res.err
    assert "2 cells left of 4" in res.out
    listed = {line.split()[0] for line in res.out.splitlines()[2:] if line.strip()}
    _, cells = read_plan(run_dir)
    assert listed == {c.cell_id for c in cells} - done


def test_read_plan_refuses_anything_but_a_run_directory(tmp_path):
    """--resume's reader: the planned cells (suite.yaml with suite and cells) and meta.json must both be there;
    otherwise one issue naming the directory (line 0: it is not a file's line)."""
    import yaml

    from harness.errors import SuiteError

    plan = {"suite": {"name": "s", "kind": "fake"},
            "cells": [{"kind": "fake", "cell_id": "abc", "params": {"batch": 1}}]}
    cases = {"empty": ({}, False), "meta only": (None, True), "plan only": (plan, False),
             "no cells": ({"suite": plan["suite"]}, True), "not a mapping": (["x"], True)}
    for name, (data, meta) in cases.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        if data is not None:
            (d / "suite.yaml").write_text(yaml.safe_dump(data))
        if meta:
            (d / "meta.json").write_text("{}")
        with pytest.raises(SuiteError) as info:
            read_plan(d)
        (issue,) = info.value.issues
        assert (issue.source, issue.line) == (str(d), 0) and "not a run directory" in issue.message, name
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "suite.yaml").write_text(yaml.safe_dump(plan))   # exactly the two keys
    (ok / "meta.json").write_text("{}")
    data, cells = read_plan(ok)
    assert data["suite"]["name"] == "s" and [(c.suite, c.cell_id) for c in cells] == [("s", "abc")]


class _RecordingProgress:
    """A Progress that keeps every call."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


class _RecordingExecutor(Executor):
    """Runs cells in this process like the local executor, keeping what the runner hands it; with ``stop_after``
    it is interrupted (KeyboardInterrupt) after that many cells."""

    name = "recording"

    def __init__(self, stop_after=None):
        self.stop_after, self.suites, self.contexts, self.skips, self.ran = stop_after, [], [], [], []

    def use_suite(self, suite_data):
        self.suites.append(suite_data)

    def cluster_summary(self):
        return {"nodes": 1}

    def run_summary(self):
        return {"cells_here": len(self.contexts)}

    def run(self, cells, make_context, on_done, skip_reason):
        for i, cell in enumerate(cells):
            if i == self.stop_after:
                raise KeyboardInterrupt
            self.skips.append(skip_reason(cell))
            self.ran.append(cell)
            if self.skips[-1]:                      # the contract: a reason means a skipped row, not a run
                on_done(cell, [failure_row("skipped", self.skips[-1])])
                continue
            self.contexts.append(make_context(cell))
            on_done(cell, execute_cell(cell, self.contexts[-1]))


def test_run_suite_records_the_run_in_its_meta_and_a_resume_extends_it(write_suite, tmp_path, monkeypatch):
    """What run_suite itself writes, called as a library: the run's identity in meta.json, the executor's summaries,
    the progress calls, the rows' run columns, and on each resume (one with a torn row, one with nothing left)
    what is kept (start_time), what grows (resumed_at) and what is measured again (the kind's run_meta only when
    cells are left)."""
    import dataclasses

    from harness.kinds import KINDS
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites

    import harness.run.runner as runner_module

    measured, ticks = [], iter(range(100))
    monkeypatch.setitem(KINDS._entries, "fake", dataclasses.replace(
        KINDS.get("fake"), run_meta=lambda device: measured.append(device) or {"fake_meta": device}))
    monkeypatch.setattr(runner_module, "_now_iso", lambda: f"t{next(ticks):02d}")  # a clock that always moves
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok, skip") + "  timeout_s: [50]\n"))[0]
    cells = expand(suite)
    first, progress = _RecordingExecutor(stop_after=1), _RecordingProgress()
    with pytest.raises(RunInterrupted) as info:
        run_suite(suite.doc.data, cells, out_root=tmp_path / "results", executor=first, progress=progress,
                  source="suites/mine.yaml")
    run_dir = Path(info.value.run_dir)
    meta = load_meta(run_dir)
    assert {k: meta[k] for k in ("run_id", "suite", "kind", "source", "n_cells", "interrupted", "status_counts",
                                 "executor", "fake_meta")} == {
        "run_id": f"runs/{run_dir.name}", "suite": "runs", "kind": "fake", "source": "suites/mine.yaml",
        "n_cells": 2, "interrupted": True, "status_counts": {"ok": 1},
        "executor": {"name": "recording", "nodes": 1, "cells_here": 1}, "fake_meta": "cpu"}
    assert "resumed_at" not in meta and meta["start_time"] < meta["end_time"] and measured == ["cpu"]
    assert first.suites == [suite.doc.data] and first.skips == [None]
    (ctx,) = first.contexts
    assert ctx.device == "cpu" and ctx.run_dir == str(run_dir) and 45 < ctx.seconds_left() <= 50
    assert progress.calls[0] == ("start", f"runs -> {run_dir}", 2, 0)
    assert [c[0] for c in progress.calls[1:]] == ["cell_started", "cell_done", "close"]
    assert progress.calls[1] == ("cell_started", cells[0])
    (_, cell, status, wall_s) = progress.calls[2]                       # wall_s: the first row's
    assert (cell, status) == (cells[0], "ok") and wall_s == read_rows(run_dir / "rows.jsonl")[0]["wall_s"] > 0
    rows = read_rows(run_dir / "rows.jsonl")
    assert {(r["run_id"], r["suite"], r["cell_id"], r["kind"], r["status"]) for r in rows} == {
        (f"runs/{run_dir.name}", "runs", cells[0].cell_id, "fake", "ok")}

    # resume, after a torn row of the second cell (killed mid-write)
    with open(run_dir / "rows.jsonl", "a") as f:
        f.write('{"cell_id": "%s", "met' % cells[1].cell_id)
    second, progress = _RecordingExecutor(), _RecordingProgress()
    result = run_suite(suite.doc.data, cells, resume_dir=run_dir, executor=second, progress=progress)
    assert (result.run_dir, result.run_id, result.total, result.counts) == (
        run_dir, f"runs/{run_dir.name}", 2, {"ok": 1, "skipped": 1})
    assert ("message", f"dropped the torn rows of cell {cells[1].cell_id} (killed mid-write); it runs again") \
        in progress.calls
    assert ("start", f"runs -> {run_dir}", 2, 1) in progress.calls
    resumed = load_meta(run_dir)
    assert resumed["start_time"] == meta["start_time"] and len(resumed["resumed_at"]) == 1
    assert meta["end_time"] < resumed["resumed_at"][0] < resumed["end_time"]
    assert resumed["interrupted"] is False and resumed["status_counts"] == {"ok": 1, "skipped": 1}
    assert resumed["executor"] == {"name": "recording", "nodes": 1, "cells_here": 1} and measured == ["cpu"] * 2
    assert first.ran + second.ran == list(cells)

    # a resume with nothing left: the run's record grows, nothing is measured or run
    third = _RecordingExecutor()
    result = run_suite(suite.doc.data, cells, resume_dir=run_dir, executor=third, progress=_RecordingProgress())
    assert result.counts == {"ok": 1, "skipped": 1} and third.ran == [] and measured == ["cpu"] * 2
    assert len(load_meta(run_dir)["resumed_at"]) == 2 and len(read_rows(run_dir / "rows.jsonl")) == len(rows) + 1


def test_a_failing_run_meta_is_recorded_and_the_run_goes_on(write_suite, tmp_path, monkeypatch):
    import dataclasses

    from harness.kinds import KINDS
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites

    def broken(device):
        raise RuntimeError("no sensor")

    monkeypatch.setitem(KINDS._entries, "fake", dataclasses.replace(KINDS.get("fake"), run_meta=broken))
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok")))[0]
    result = run_suite(suite.doc.data, expand(suite), out_root=tmp_path / "results", executor=_RecordingExecutor())
    assert result.counts == {"ok": 1}
    assert load_meta(result.run_dir)["run_meta_error"] == "RuntimeError: no sensor"


def test_an_error_inside_the_executor_ends_the_run_as_interrupted_and_is_raised(write_suite, tmp_path):
    class Broken(_RecordingExecutor):
        def run(self, cells, make_context, on_done, skip_reason):
            on_done(cells[0], execute_cell(cells[0], make_context(cells[0])))
            raise OSError("the cluster went away")

    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok, ok") + "  seq_len: [1, 2]\n"))[0]
    with pytest.raises(OSError, match="went away"):
        run_suite(suite.doc.data, expand(suite), out_root=tmp_path / "results", executor=Broken())
    (run_dir,) = run_dirs(tmp_path / "results")
    meta = load_meta(run_dir)
    assert meta["interrupted"] is True and meta["status_counts"] == {"ok": 1}
    assert meta["executor"] == {"name": "recording", "nodes": 1, "cells_here": 0}      # its run_summary too
    assert len(pd.read_parquet(run_dir / "results.parquet")["cell_id"].unique()) == 1


def test_hand_made_cells_without_a_device_run_on_the_cpu_and_say_so(tmp_path):
    """A library caller's cells need not carry ``device`` (expand always adds it): they run on the CPU, and the run's
    meta and the kind's run_meta say cpu."""
    cells = [Cell("runs", "fake", f"{i:012x}", {"behavior": "ok", "seq_len": 8}) for i in range(2)]
    data = {"name": "runs", "kind": "fake"}
    executor = _RecordingExecutor()
    result = run_suite(data, cells, out_root=tmp_path / "results", executor=executor)
    meta = load_meta(result.run_dir)
    assert result.counts == {"ok": 2} and meta["device"] == "cpu" and meta["fake_meta"] == "cpu"
    assert [c.device for c in executor.contexts] == ["cpu", "cpu"]


def test_a_resume_counts_every_earlier_cell_and_the_plan_keeps_overrides_and_filters(write_suite, tmp_path):
    import yaml

    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok") + "  seq_len: [1, 2, 3]\n"))[0]
    cells = expand(suite)
    with pytest.raises(RunInterrupted) as info:
        run_suite(suite.doc.data, cells, out_root=tmp_path / "results", executor=_RecordingExecutor(stop_after=2),
                  overrides=[("batch", 3)], filters=[("seq_len", 2)])
    run_dir = info.value.run_dir
    plan = yaml.safe_load((run_dir / "suite.yaml").read_text())
    assert plan["overrides"] == {"batch": 3} and plan["filters"] == {"seq_len": 2}
    result = run_suite(suite.doc.data, cells, resume_dir=run_dir, executor=_RecordingExecutor())
    assert result.counts == {"ok": 3}


def test_a_resumed_run_inside_the_checkout_does_not_make_it_dirty(write_suite, checkout, monkeypatch, tmp_path):
    """A fresh process resuming a run whose folder is inside the checkout excludes that folder (the run directory's
    grandparent, the --out of the first run), not the default --out, and not the checkout itself."""
    from harness.store import meta
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites

    repo = checkout
    try:
        suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok, ok") + "  seq_len: [1, 2]\n"))[0]
        cells = expand(suite)
        with pytest.raises(RunInterrupted) as info:
            run_suite(suite.doc.data, cells, out_root=repo / "my-results", executor=_RecordingExecutor(stop_after=1))
        run_dir = Path(info.value.run_dir)
        assert run_dir.parents[1] == repo / "my-results"
        monkeypatch.setattr(meta, "_OUTPUT_DIRS", [])         # a new process: nothing excluded yet
        meta.git_state.cache_clear()
        run_suite(suite.doc.data, cells, resume_dir=run_dir, executor=_RecordingExecutor())
        assert load_meta(run_dir)["dirty"] is False and meta._OUTPUT_DIRS == ["my-results"]
    finally:
        meta.git_state.cache_clear()


class _ClusterStandIn(_RecordingExecutor):
    """An executor that runs cells elsewhere, as Ray's does: it says whether its machines have CUDA and measures
    the kind's run_meta on a worker."""

    name = "cluster"

    def cluster_has_gpus(self):
        return True

    def call_on_worker(self, fn, on_worker, device):
        self.measured = getattr(self, "measured", []) + [device]
        return {**fn(on_worker), "measured_on": f"worker for {device}"}


def test_run_meta_is_measured_per_device_where_the_cells_run(tmp_path, monkeypatch):
    """Cells on two devices: meta.json names both; the kind's run_meta is measured for each device the cells can
    use (not for cuda on a CPU box, also when cuda sorts first), and on a cluster's worker when the executor has
    one; each cell's context carries its own device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cells = [Cell("runs", "fake", "0" * 12, {"behavior": "ok", "device": "cuda"}),
             Cell("runs", "fake", "1" * 12, {"behavior": "ok", "device": "meta"})]
    data = {"name": "runs", "kind": "fake"}
    local = _RecordingExecutor()
    result = run_suite(data, cells, out_root=tmp_path / "a", executor=local)
    meta = load_meta(result.run_dir)
    assert meta["device"] == "cuda,meta" and meta["fake_meta"] == "meta" and "measured_on" not in meta
    assert result.counts == {"skipped": 1, "ok": 1} and [c.device for c in local.contexts] == ["meta"]
    cluster = _ClusterStandIn()
    meta = load_meta(run_suite(data, cells, out_root=tmp_path / "b", executor=cluster).run_dir)
    assert meta["fake_meta"] == "meta" and meta["measured_on"] == "worker for meta"
    assert cluster.measured == ["cuda", "meta"]          # the cluster has GPUs, though this box has none


def test_run_suite_records_the_command_and_drops_changes_left_by_a_dirty_part(write_suite, tmp_path, at_commit):
    """meta.json's command is the argv the caller gives; a resume on a clean tree at the same commit drops the list
    of uncommitted changes an earlier, dirty part of the run left in meta.json."""
    from harness.store.results import META_FILE
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    at_commit("a" * 40, dirty=True)
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok, ok") + "  seq_len: [1, 2]\n"))[0]
    cells = expand(suite)
    with pytest.raises(RunInterrupted) as info:
        run_suite(suite.doc.data, cells, out_root=tmp_path / "results", executor=_RecordingExecutor(stop_after=1),
                  argv=["ssmbench", "run", "mine.yaml"])
    run_dir = Path(info.value.run_dir)
    meta = load_meta(run_dir)
    assert meta["command"] == "ssmbench run mine.yaml" and meta["dirty"] is True
    (run_dir / META_FILE).write_text(json.dumps({**meta, "changes": "M models/s6.py"}))
    at_commit("a" * 40, dirty=False)
    run_suite(suite.doc.data, cells, resume_dir=run_dir, executor=_RecordingExecutor(), argv=["again"])
    meta = load_meta(run_dir)
    assert meta["dirty"] is False and "changes" not in meta and meta["command"] == "again"


def test_meta_json_is_written_before_the_first_cell_runs(write_suite, tmp_path):
    """A run killed in its first cell still says what it was: meta.json holds the run's identity before any cell."""
    from harness.store.results import META_FILE
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites

    seen = []

    class Peek(_RecordingExecutor):
        def run(self, cells, make_context, on_done, skip_reason):
            seen.append(json.loads((Path(make_context(cells[0]).run_dir) / META_FILE).read_text()))
            super().run(cells, make_context, on_done, skip_reason)

    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok")))[0]
    result = run_suite(suite.doc.data, expand(suite), out_root=tmp_path / "results", executor=Peek())
    assert seen[0]["run_id"] == result.run_id and seen[0]["n_cells"] == 1 and "end_time" not in seen[0]


def test_rows_carry_the_kinds_defaults_the_suite_left_out(write_suite, tmp_path):
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok")))[0]
    result = run_suite(suite.doc.data, expand(suite), out_root=tmp_path / "results", executor=_RecordingExecutor())
    row = read_rows(Path(result.run_dir) / "rows.jsonl")[0]
    assert row["repeats"] == 1 and row["sleep_s"] == 0.0 and row["batch"] == 2 and row["seq_len"] == 8


def test_a_dirty_run_keeps_the_list_of_its_changes(write_suite, tmp_path, monkeypatch):
    """meta.json's ``changes`` (which files differ from the commit) stays when the tree is dirty; only a clean resume
    drops the list an earlier part left."""
    from harness.store import meta as run_meta_module
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites

    def dirty_tree():
        return {"commit": "a" * 40, "short": "aaaaaaa", "dirty": True, "changes": "M models/s6.py"}

    dirty_tree.cache_clear = lambda: None
    monkeypatch.setattr(run_meta_module, "git_state", dirty_tree)
    suite = load_suites(write_suite(SUITE.replace("{behaviors}", "ok")))[0]
    result = run_suite(suite.doc.data, expand(suite), out_root=tmp_path / "results", executor=_RecordingExecutor())
    meta = load_meta(result.run_dir)
    assert meta["dirty"] is True and meta["changes"] == "M models/s6.py"
