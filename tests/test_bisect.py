"""``ssmbench bisect``: a small git repository whose code slows down at one commit; bisect must name it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.bisect import BisectError, bisect, parse_filter, select_jobs
from harness.analysis.cli import main as cli_main
from harness.analysis.compare import CellJob
from harness.analysis.report.synthetic import _row, default_meta, write_run

N_COMMITS, SLOW_AT = 12, 7

TINY_KERNEL = '''"""A stand-in kernel: its per-repeat times, with the cost factor of this commit."""
COST = {cost}


def times(n):
    # deterministic jitter of +-1%, so the diff's Mann-Whitney test has samples to work with
    return [10.0 * COST * (1 + 0.01 * ((7 * i) % 5 - 2) / 2) for i in range(n)]
'''


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


class Repo(type(Path())):
    """The repository's path, with its commits (oldest first) as ``shas``."""

    def __new__(cls, path, shas):
        self = super().__new__(cls, path)
        self.shas = shas
        return self

    def __init__(self, path, shas):  # Python >= 3.12 calls __init__ with the same arguments
        try:
            super().__init__(path)
        except TypeError:
            pass


@pytest.fixture
def repo(tmp_path):
    """Commits 0..11 of a tiny package; commit SLOW_AT makes the kernel 20% slower, the others touch a README."""
    r = tmp_path / "repo"
    (r / "tinykernel").mkdir(parents=True)
    _git(r, "init", "-q")
    _git(r, "config", "user.email", "t@example.com")
    _git(r, "config", "user.name", "t")
    (r / "suite.yaml").write_text("name: tiny\nkind: speed\n")
    shas = []
    for i in range(N_COMMITS):
        cost = 1.2 if i >= SLOW_AT else 1.0
        (r / "tinykernel" / "__init__.py").write_text(TINY_KERNEL.format(cost=cost))
        (r / "README").write_text(f"revision {i}\n")
        _git(r, "add", ".")
        _git(r, "commit", "-q", "-m", f"commit {i}" + (" (slower kernel)" if i == SLOW_AT else ""))
        shas.append(_git(r, "rev-parse", "HEAD"))
    return Repo(r, shas)


def tiny_runner(calls):
    """Runs the worktree's own ``tinykernel`` in a subprocess (its code at that commit) and writes a run."""

    def run(worktree, job, run_dir, out_root):
        code = "import json, tinykernel; print(json.dumps(tinykernel.times(12)))"
        out = subprocess.run([sys.executable, "-c", code], cwd=worktree, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(worktree)), check=True).stdout
        commit = _git(worktree, "rev-parse", "HEAD")
        calls.append(commit)
        params = {"impl": "tiny", "seq_len": job.filters["seq_len"], "device": "cpu"}
        rows = [_row(params, "time_ms", t, "ms", repeat=i) for i, t in enumerate(json.loads(out))]
        rows.append(_row(params, "n_params", 10.0, ""))
        run_dir = run_dir or out_root / job.suite_name / "run"
        write_run(run_dir, rows, default_meta("run", job.suite_name, "speed", commit=commit))
        return run_dir

    return run


def _jobs(repo):
    return [CellJob(repo / "suite.yaml", "tiny", {"seq_len": 128}), CellJob(repo / "suite.yaml", "tiny", {"seq_len": 256})]


def test_bisect_names_the_commit_that_slowed_down(repo):
    calls = []
    res = bisect(repo.shas[0], repo.shas[-1], str(repo / "suite.yaml"), ["time_ms"], repo=repo,
                 filters=[("seq_len", "128")], runner=tiny_runner(calls), jobs=_jobs(repo), log=lambda m: None)
    assert res.culprit == repo.shas[SLOW_AT]
    assert res.subject == f"commit {SLOW_AT} (slower kernel)"
    (ev,) = [c for c in res.evidence.comparisons if c.metric == "time_ms"]
    assert ev.verdict == "regression" and ev.ratio == pytest.approx(1.2, rel=0.01)
    # binary search: the two ends plus about log2(11) commits, each measured once
    assert len(set(calls)) == len(calls) <= 2 + 5
    assert all(len(c) == 40 for c in calls)
    text = res.text(lambda r: "evidence table")
    assert repo.shas[SLOW_AT] in text and "evidence table" in text
    assert _git(repo, "worktree", "list").count("\n") == 0  # worktrees removed


@pytest.mark.parametrize("good_index", [SLOW_AT - 1, 0])
def test_culprit_at_the_end_of_the_range(repo, good_index):
    """BAD is the culprit itself: one commit apart from GOOD, or the last of a longer path."""
    res = bisect(repo.shas[good_index], repo.shas[SLOW_AT], str(repo / "suite.yaml"), ["time_ms"], repo=repo,
                 runner=tiny_runner([]), jobs=_jobs(repo)[:1], log=lambda m: None)
    assert res.culprit == repo.shas[SLOW_AT]


def test_bisect_refuses_without_a_change_or_ancestry(repo, capsys, monkeypatch):
    with pytest.raises(BisectError, match="does not regress"):
        bisect(repo.shas[0], repo.shas[SLOW_AT - 1], str(repo / "suite.yaml"), ["time_ms"], repo=repo,
               runner=tiny_runner([]), jobs=_jobs(repo), log=lambda m: None)
    with pytest.raises(BisectError, match="does not regress"):   # the metric named did not move
        bisect(repo.shas[0], repo.shas[-1], str(repo / "suite.yaml"), ["n_params"], repo=repo,
               runner=tiny_runner([]), jobs=_jobs(repo), log=lambda m: None)
    monkeypatch.chdir(repo)
    assert cli_main(["bisect", repo.shas[-1], repo.shas[0], "suite.yaml", "--metric", "time_ms"]) == 2
    assert "not an ancestor" in capsys.readouterr().err
    assert cli_main(["bisect", repo.shas[0], repo.shas[-1], "suite.yaml"]) == 2
    assert "--metric" in capsys.readouterr().err


def test_filter_keys_are_checked():
    jobs = [CellJob(Path("s.yaml"), "s", {"seq_len": 128, "impl": "a"}), CellJob(Path("s.yaml"), "s", {"seq_len": 256, "impl": "a"})]
    assert [j.filters["seq_len"] for j in select_jobs(jobs, [parse_filter("seq_len=256")])] == [256]
    with pytest.raises(BisectError, match="did you mean 'seq_len'"):
        select_jobs(jobs, [("seqlen", "256")])
    with pytest.raises(ValueError, match="key=value"):
        parse_filter("seq_len")
