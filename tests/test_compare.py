"""``ssmbench compare``: worktrees at two revisions, cells interleaved A/B, then a diff."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from harness.analysis.compare import CellJob, CompareError, compare, filter_value, split_documents
from harness.analysis.cli import main as cli_main
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
