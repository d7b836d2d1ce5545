"""``ssmbench history``: runs of one suite over commits -> trend page, steps named by commit."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.changepoint import detect_steps
from harness.analysis.cli import main as cli_main
from harness.analysis.history import HistoryError, build_history, find_run_dirs, history_command
from harness.analysis.report.runs import load_run
from harness.analysis.report.synthetic import default_meta, speed_rows, write_run


def _sha(i: int) -> str:
    return f"{i:02d}" + "c" * 38


def _write_history(root: Path, n_commits: int = 30, step_at=None, factor=1.08, runs_per_commit=1,
                   gpus=("H200",), suite="hist-speed", impls=("s6.chunked",), seq_lens=(256,), repeats=15,
                   seed=0) -> Path:
    for i in range(n_commits):
        for g in gpus:
            for r in range(runs_per_commit):
                slow = factor if step_at is not None and i >= step_at else 1.0
                rows = speed_rows(impls=impls, seq_lens=seq_lens, repeats=repeats, noise=0.03,
                                  slowdown={impl: slow for impl in impls}, seed=seed + 1000 * i + 100 * r + len(g))
                run_id = f"2026-01-{i + 1:02d}T00-00-{r:02d}-{g}"
                meta = default_meta(run_id, suite, "speed", gpu=g, commit=_sha(i))
                meta["started"] = f"2026-01-{i + 1:02d}T00:00:{r:02d}Z"
                write_run(root / suite / run_id, rows, meta)
    return root


def test_planted_step_names_its_commit_on_every_machine(tmp_path):
    root = _write_history(tmp_path / "results", step_at=17, gpus=("H200", "A100"))
    runs = [load_run(d) for d in find_run_dirs([str(root)])]
    hist = build_history(runs, repo=None, metrics=["time_ms"])
    assert hist.order == "start time"           # the fake commits are in no repository
    assert hist.machines == ["A100 @ testhost", "H200 @ testhost"]
    by_machine = {s.machine: s for s in hist.series}
    assert len(by_machine) == 2                  # never one series across machines
    for s in hist.series:
        assert len(s.steps) == 1, s.steps
        (step,) = s.steps
        assert hist.commits[int(s.positions[step.index])].commit == _sha(17)
        assert step.change == pytest.approx(0.08, abs=0.02)
        assert step.p_value < 0.01


def test_pure_noise_names_no_commit(tmp_path):
    root = _write_history(tmp_path / "results", step_at=None, runs_per_commit=2)
    runs = [load_run(d) for d in find_run_dirs([str(root)])]
    hist = build_history(runs, repo=None)
    assert hist.series and not hist.steps


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_detector_on_plain_series(seed):
    rng = np.random.default_rng(seed)
    y = 10 * np.exp(rng.normal(0, 0.01, 30))
    assert detect_steps(y, seed=seed) == []
    y[17:] *= 1.08
    assert [s.index for s in detect_steps(y, seed=seed)] == [17]
    y[17:] /= 1.08
    y[10:] *= 0.9  # a drop is a step too
    steps = detect_steps(y, seed=seed)
    assert [s.index for s in steps] == [10] and steps[0].change == pytest.approx(-0.1, abs=0.02)


@pytest.mark.parametrize("seed", range(10))
def test_noisy_series_need_significance_not_only_size(seed):
    """5% noise: medians of segments differ by more than min_change by chance; the permutation test must
    keep them from being steps (with alpha=1 they all are)."""
    y = 10 * np.exp(np.random.default_rng(100 + seed).normal(0, 0.05, 30))
    assert detect_steps(y, seed=seed) == []
    assert detect_steps(y, seed=seed, alpha=1.0) != []


def test_outlier_run_is_not_a_step():
    rng = np.random.default_rng(7)
    y = 10 * np.exp(rng.normal(0, 0.01, 30))
    y[20] *= 3.0   # one bad commit's value, not a level change
    assert detect_steps(y) == []


def test_300_runs_are_fast_and_the_page_is_self_contained(tmp_path, capsys):
    root = _write_history(tmp_path / "results", n_commits=30, step_at=17, runs_per_commit=10, repeats=5)
    t0 = time.perf_counter()
    hist, _ = history_command([str(root)], out=str(tmp_path / "fast"), plots=False)
    elapsed = time.perf_counter() - t0
    assert hist.runs == 300 and len(hist.commits) == 30
    assert elapsed < 5.0, f"loading and testing 300 runs took {elapsed:.1f} s"
    assert cli_main(["history", str(root), "-o", str(tmp_path / "page"), "--metric", "time_ms"]) == 0
    out = capsys.readouterr().out
    assert "300 runs, 30 commits" in out and _sha(17)[:10] in out
    html = (tmp_path / "page" / "history.html").read_text()
    assert "data:image/png;base64," in html and 'src="figures' not in html
    md = (tmp_path / "page" / "history.md").read_text()
    assert _sha(17)[:10] in md and "regression" in md and "(figures/" in md


def test_git_history_orders_commits_not_time(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    shas = []
    for i in range(4):
        (repo / "f.txt").write_text(str(i))
        git("add", ".")
        git("commit", "-q", "-m", f"change {i}")
        shas.append(git("rev-parse", "HEAD"))
    results = tmp_path / "results"
    for i, sha in enumerate(shas):
        meta = default_meta(f"run{i}", "s", "speed", commit=sha)
        meta["started"] = f"2026-01-0{4 - i}T00:00:00Z"   # newest commit ran first
        write_run(results / "s" / f"run{i}", speed_rows(impls=("s6.chunked",), seq_lens=(64,), repeats=3), meta)
    hist = build_history([load_run(d) for d in find_run_dirs([str(results)])], repo=repo)
    assert hist.order == "git history"
    assert [p.commit for p in hist.commits] == shas
    assert hist.commits[2].subject == "change 2"


def test_no_runs_or_several_suites_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["history", str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err
    root = _write_history(tmp_path / "results", n_commits=3, suite="a")
    _write_history(root, n_commits=3, suite="b")
    assert cli_main(["history", str(root), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "several suites" in err and "--suite" in err
    assert cli_main(["history", str(root), "--suite", "b", "-o", str(tmp_path / "o")]) == 0
    with pytest.raises(HistoryError):
        history_command([str(root)], suite="c", out=str(tmp_path / "o"))


def test_row_keys_split_series_and_missing_keys_are_left_out(tmp_path):
    from harness.analysis.report.synthetic import task_rows

    for i in range(6):
        meta = default_meta(f"run{i}", "t", "task", commit=_sha(i))
        meta["started"] = f"2026-01-0{i + 1}T00:00:00Z"
        rows = task_rows(archs=("mamba",), mixers=("s6",), seeds=(0,), eval_lens=(64, 128), seed=i)
        write_run(tmp_path / "t" / f"run{i}", rows, meta)
    hist = build_history([load_run(d) for d in find_run_dirs([str(tmp_path)])])
    keys = {(s.metric, s.key) for s in hist.series}
    assert ("accuracy", "eval_seq_len=64") in keys and ("accuracy", "eval_seq_len=128") in keys
    assert ("n_params", "") in keys   # no eval_seq_len on this metric: no "eval_seq_len=nan"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_steps_are_both_found_whichever_is_found_first(seed):
    """A small step at 12, a large one at 24: the large one is found first, and the segment left of it must be
    searched again for the small one (and the right one, by the mirror image)."""
    rng = np.random.default_rng(seed)
    y = 10 * np.exp(rng.normal(0, 0.005, 36))
    y[12:] *= 1.1
    y[24:] *= 1.5
    assert [s.index for s in detect_steps(y, seed=seed)] == [12, 24]
    assert [s.index for s in detect_steps(y[::-1].copy(), seed=seed)] == [12, 24]


def test_each_accepted_step_shares_alpha_with_the_two_tests_it_opens(monkeypatch):
    """Bonferroni over the tests so far: after one step the next must reach p < alpha / 3, after two alpha / 5;
    the permutation test is replaced here by fixed p-values to check exactly that rule."""
    import harness.analysis.changepoint as cp

    def fixed(ps):
        calls = iter(ps)
        monkeypatch.setattr(cp, "best_split", lambda values, **kw: (len(values) // 2, next(calls, 1.0)))

    y = np.geomspace(1.0, 1000.0, 32)       # every split moves the median by far more than min_change
    fixed([0.009, 0.004, 0.004])          # first accepted (< 0.01), then 0.004 >= 0.01 / 3: none more
    assert len(detect_steps(y, alpha=0.01)) == 1
    fixed([0.009, 0.003, 0.0025, 0.0019, 0.0019])   # 0.003 < 0.01/3; 0.0025 >= 0.01/5; 0.0019 < 0.01/5 but
    assert len(detect_steps(y, alpha=0.01)) == 3     # then >= 0.01/7
