"""``ssmbench compare``: worktrees at two revisions, cells interleaved A/B, then a diff."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.analysis.compare import CellJob, CompareError, compare, filter_value, split_documents
from harness.analysis.cli import main as cli_main
from harness.analysis.diff import DiffOptions, format_text
from harness.analysis.report.synthetic import default_meta, speed_rows, write_run


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git repo whose two commits differ in a 'slowdown' file the fake runner reads."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q")
    _git(r, "config", "user.email", "t@example.com")
    _git(r, "config", "user.name", "t")
    (r / "slowdown.txt").write_text("1.0")
    (r / "suite.yaml").write_text("name: speed-test\nkind: speed\n")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "a")
    (r / "slowdown.txt").write_text("1.2")
    _git(r, "commit", "-q", "-am", "b")
    return r


def _fake_runner(calls):
    """Writes one synthetic cell per call, slowed by the worktree's slowdown.txt (its 'code')."""

    def run(worktree, job, run_dir, out_root):
        factor = float((worktree / "slowdown.txt").read_text())
        side = worktree.name[-1]
        calls.append((side, job.filters["seq_len"]))
        run_dir = run_dir or out_root / job.suite_name / f"run-{side}"
        rows = speed_rows(impls=("s6.chunked",), seq_lens=(job.filters["seq_len"],), repeats=20,
                          slowdown={"s6.chunked": factor}, seed=len(calls))
        old = (run_dir / "rows.jsonl").read_text() if (run_dir / "rows.jsonl").exists() else ""
        write_run(run_dir, rows, default_meta(f"run-{side}", job.suite_name, "speed"))
        (run_dir / "rows.jsonl").write_text(old + (run_dir / "rows.jsonl").read_text())
        return run_dir

    return run


def test_compare_interleaves_cells_and_diffs(repo, tmp_path):
    calls = []
    jobs = [CellJob(repo / "suite.yaml", "speed-test", {"seq_len": L}) for L in (128, 256, 512)]
    res = compare("HEAD~1", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=_fake_runner(calls),
                  jobs=jobs, log=lambda m: None)
    assert calls == [("a", 128), ("b", 128), ("b", 256), ("a", 256), ("a", 512), ("b", 512)]
    timing = [c for c in res.comparisons if c.metric == "time_ms"]
    assert len(timing) == 3 and all(c.verdict == "regression" for c in timing)
    assert res.exit_code("regression") == 1
    assert _git(repo, "worktree", "list").count("\n") == 0  # temporary worktrees removed


def test_compare_rounds_pool_runs_and_workdir_is_kept(repo, tmp_path):
    calls = []
    jobs = [CellJob(repo / "suite.yaml", "speed-test", {"seq_len": 128})]
    work = tmp_path / "work"
    res = compare("HEAD~1", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=_fake_runner(calls), jobs=jobs,
                  rounds=2, workdir=str(work), log=lambda m: None)
    assert calls == [("a", 128), ("b", 128), ("b", 128), ("a", 128)]
    assert len(res.base_runs) == 2 and len(res.new_runs) == 2
    (timing,) = [c for c in res.comparisons if c.metric == "time_ms"]
    assert timing.base_n == 40 and timing.new_n == 40
    assert (work / "worktree-a" / "slowdown.txt").read_text() == "1.0"
    assert (work / "worktree-b" / "slowdown.txt").read_text() == "1.2"


def test_compare_bad_revision_is_a_one_line_error(repo, capsys, monkeypatch):
    with pytest.raises(CompareError, match="unknown revision 'nope'"):
        compare("nope", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=_fake_runner([]), jobs=[])
    monkeypatch.chdir(repo)
    assert cli_main(["compare", "nope", "HEAD", "suite.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown revision" in err and "Traceback" not in err


def test_compare_refuses_a_metric_typo_before_running_anything(repo, capsys, monkeypatch):
    """A --metric pattern that no kind of the suite writes would compare nothing: refused (exit 2, with the
    closest names) before either revision runs, not minutes later by the diff."""
    from harness.analysis.diff import DiffError

    calls = []
    jobs = [CellJob(repo / "suite.yaml", "speed-test", {"seq_len": 128})]
    with pytest.raises(DiffError, match=r"'tme_ms' matches no metric that the kinds of .*suite.yaml write.*"
                                        r"Did you mean 'time_ms'"):
        compare("HEAD~1", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=_fake_runner(calls), jobs=jobs,
                options=DiffOptions(metrics=["tme_ms"]), log=lambda m: None)
    assert calls == [] and _git(repo, "worktree", "list").count("\n") == 0
    monkeypatch.chdir(repo)
    assert cli_main(["compare", "HEAD~1", "HEAD", "suite.yaml", "--metric", "tme_ms"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'time_ms'" in err and "Traceback" not in err
    # a pattern that matches is let through to the runs
    res = compare("HEAD~1", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=_fake_runner(calls), jobs=jobs,
                  options=DiffOptions(metrics=["time_*"]), log=lambda m: None)
    assert calls and {c.metric for c in res.comparisons} <= {"time_ms", "time_ms_median", "time_ms_iqr"}


@pytest.mark.parametrize("value", [64, 1.0e-4, 1e-05, 2.5e10, True, "s6.triton", "fwd+bwd", [32, 64]])
def test_filter_values_read_back_as_yaml(value):
    assert yaml.safe_load(filter_value(value)) == value


def test_multi_document_suites_are_split(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text("name: a\nkind: speed\n---\nname: b\nkind: task\n")
    parts = split_documents(f, tmp_path / "docs")
    assert [yaml.safe_load(p.read_text())["name"] for p in parts] == ["a", "b"]
    single = tmp_path / "one.yaml"
    single.write_text("name: a\nkind: speed\n")
    assert split_documents(single, tmp_path / "docs1") == [single.resolve()]


def test_list_jobs_gives_one_filter_set_per_cell(tmp_path):
    from harness.analysis.compare import list_jobs

    suite = tmp_path / "tiny.yaml"
    suite.write_text("name: tiny-speed\nkind: speed\ndevice: cpu\n"
                     "defaults: {batch: 1, d_model: 16, expand: 2, d_state: 4, heads: 2, dtype: fp32,\n"
                     "           pass: fwd, warmup: 1, repeats: 3, timeout_s: 60}\n"
                     "sweep: {impl: [s6.chunked, attention.naive], seq_len: [32, 64]}\n")
    jobs = list_jobs([suite])
    assert {j.suite_name for j in jobs} == {"tiny-speed"}
    assert sorted((j.filters["impl"], j.filters["seq_len"]) for j in jobs) == [
        ("attention.naive", 32), ("attention.naive", 64), ("s6.chunked", 32), ("s6.chunked", 64)]


# --------------------------------------------------------------------------- issue 17: gates with teeth, no false alarms


IMPLS = ("s6.reference", "s6.chunked", "s4.fft", "attention.naive", "attention.sdpa")


def _cpu_like_runner(repeats, seed=0, rss_noise=0.06, outliers=0.05):
    """A runner whose rows look like this 2-core box's: log-normal timing noise with occasional 1.3-3x outliers
    (another process took the core), one peak-RSS sample per cell off by up to ``rss_noise``, and
    deterministic accuracies.  The worktree's slowdown.txt slows s6.chunked (the planted regression)."""
    calls = []

    def run(worktree, job, run_dir, out_root):
        factor = float((worktree / "slowdown.txt").read_text())
        calls.append((worktree.name[-1], dict(job.filters)))
        rng = np.random.default_rng([seed, len(calls), int(1000 * factor)])
        seq_lens = (job.filters["seq_len"],) if "seq_len" in job.filters else (64, 128)
        rows = speed_rows(impls=IMPLS, seq_lens=seq_lens, repeats=repeats, noise=0.1,
                          slowdown={"s6.chunked": factor}, seed=int(rng.integers(1 << 30)))
        for r in rows:
            if r["metric"] == "time_ms" and rng.random() < outliers:
                r["value"] *= rng.uniform(1.3, 3.0)
            if r["metric"] == "peak_rss_bytes":
                r["value"] *= 1 + rng.uniform(-rss_noise, rss_noise)
        rows += [{**{k: v for k, v in r.items() if k not in ("metric", "value", "unit", "repeat")},
                  "metric": "accuracy", "value": 0.5, "unit": "", "repeat": 0}
                 for r in rows if r["metric"] == "roofline_fraction"]
        run_dir = run_dir or out_root / job.suite_name / f"run-{worktree.name[-1]}"
        old = (run_dir / "rows.jsonl").read_text() if (run_dir / "rows.jsonl").exists() else ""
        write_run(run_dir, rows, default_meta(f"run-{worktree.name[-1]}", job.suite_name, "speed"))
        (run_dir / "rows.jsonl").write_text(old + (run_dir / "rows.jsonl").read_text())
        return run_dir

    return run, calls


def test_self_compare_on_cpu_noise_never_fails(repo):
    """``compare HEAD HEAD`` on smoke-like cells (2 repeats, one RSS sample off by up to 6%, outliers): ten
    times in a row, exit 0 for every gate; the big unconfirmable moves are shown as inconclusive."""
    jobs = [CellJob(repo / "suite.yaml", "speed-test", {})]
    inconclusive = 0
    for trial in range(10):
        runner, _ = _cpu_like_runner(repeats=2, seed=trial)
        res = compare("HEAD", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=runner, jobs=jobs,
                      log=lambda m: None, options=DiffOptions(n_boot=200, seed=trial))
        assert res.exit_code("regression") == 0, format_text(res)
        assert res.exit_code("regression", gate=["quality"]) == 0 and res.gate_problem(["quality"]) is None
        inconclusive += sum(c.verdict == "inconclusive" for c in res.comparisons)
        assert not [c for c in res.comparisons if c.verdict == "regression"]
    assert inconclusive > 0   # noise this large is visible, not hidden as "unchanged"


def test_planted_slowdown_of_one_impl_is_caught_with_ten_repeats(repo):
    """x1.6 of s6.chunked (HEAD~1 -> HEAD writes 1.6 to slowdown.txt) among five impls, 10 repeats,
    with outliers and Holm over every timing test: every trial fails the gate on s6.chunked and nothing else,
    and nearly every slowed cell is flagged on its own."""
    (repo / "slowdown.txt").write_text("1.6")
    _git(repo, "commit", "-q", "-am", "slow")
    jobs = [CellJob(repo / "suite.yaml", "speed-test", {})]
    caught = 0
    for trial in range(5):
        runner, _ = _cpu_like_runner(repeats=10, seed=trial)
        res = compare("HEAD~2", "HEAD", str(repo / "suite.yaml"), repo=repo, runner=runner, jobs=jobs,
                      log=lambda m: None, options=DiffOptions(n_boot=200, seed=trial))
        regressed = [c for c in res.comparisons if c.verdict == "regression"]
        assert {(c.metric, c.label.split(",")[0]) for c in regressed} == {("time_ms", "impl=s6.chunked")}, \
            format_text(res)
        assert res.exit_code("regression") == 1
        assert res.timing_tests >= 10 and all(c.p_adjusted < 0.01 for c in regressed)
        caught += len(regressed)
    assert caught >= 8, f"{caught} of 10 slowed cells flagged"


def test_compare_runs_each_suite_document_in_one_process_per_side(repo, tmp_path):
    """--interleave suite (default): one runner call per document and side, not one per cell."""
    from harness.analysis.compare import list_jobs

    suite = tmp_path / "two.yaml"
    suite.write_text("name: fake-a\nkind: fake\nsweep: {seq_len: [8, 16, 32]}\n---\n"
                     "name: fake-b\nkind: fake\nsweep: {seq_len: [8, 16]}\n")
    docs = split_documents(suite, tmp_path / "docs")
    assert [(j.suite_name, j.filters) for j in list_jobs(docs, "suite")] == [("fake-a", {}), ("fake-b", {})]
    assert len(list_jobs(docs, "cell")) == 5
    runner, calls = _cpu_like_runner(repeats=2)
    compare("HEAD", "HEAD", str(suite), repo=repo, runner=runner, log=lambda m: None)
    assert [side for side, _ in calls] == ["a", "b", "b", "a"] and all(f == {} for _, f in calls)
    runner, calls = _cpu_like_runner(repeats=2)
    with pytest.raises(CompareError, match="--interleave"):
        compare("HEAD", "HEAD", str(suite), repo=repo, runner=runner, interleave="fast", log=lambda m: None)


def test_one_process_per_suite_gives_the_same_rows_as_one_per_cell(tmp_path, monkeypatch):
    """The real CLI runner on the fake kind: a whole-suite job and per-cell jobs give identical rows."""
    from conftest import REPO, TESTS, comparable
    from harness.analysis.compare import cli_runner, list_jobs
    from harness.store.results import load

    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("SSMBENCH_PLUGINS", "fake_kind")
    suite = tmp_path / "fake.yaml"
    suite.write_text("name: fake-three\nkind: fake\ndefaults: {repeats: 2}\nsweep: {seq_len: [8, 16, 32]}\n")
    runner = cli_runner()
    (whole,) = list_jobs([suite], "suite")
    one = runner(REPO, whole, None, tmp_path / "suite-mode")
    per_cell = None
    for job in list_jobs([suite], "cell"):
        per_cell = runner(REPO, job, per_cell, tmp_path / "cell-mode")
    a, b = comparable(load(one)), comparable(load(per_cell))
    assert len(a) == 3 * 3 and a.equals(b)
