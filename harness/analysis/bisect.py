"""``ssmbench bisect GOOD BAD SUITE --metric PATTERN``: the first commit where a metric regressed.

asv's ``find``: the suite (or the ``--filter``ed cells of it) is run at commits picked by binary search on
the first-parent path from GOOD to BAD, each in a detached git worktree, with the machinery of
``ssmbench compare`` (:func:`harness.analysis.compare.checkout`, ``list_jobs``, ``cli_runner``).  A commit
counts as regressed when :func:`harness.analysis.diff.diff_runs` of it against GOOD -- the same statistics
and thresholds as ``ssmbench diff`` -- gives a regression in a metric the pattern names.

Before searching, both ends are measured and BAD must regress against GOOD; bisect refuses (exit 2)
when GOOD is not an ancestor of BAD or when the metric does not differ between the ends, since a
binary search needs a change to find.  The answer is the culprit commit with its diff against its
parent (the evidence), plus every commit measured and its verdict.
"""
from __future__ import annotations

import difflib
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from harness.analysis.compare import (CellJob, CompareError, Runner, _git, check_worktree_imports, checkout,
                                      cli_runner, filter_value, list_jobs, remove_worktree, resolve_commit,
                                      run_jobs, split_documents)
from harness.analysis.diff import DiffOptions, DiffResult, diff_runs
from harness.analysis.report.runs import Run, load_run


class BisectError(CompareError):
    """A bisect that cannot or should not run (not an ancestor, no change between the ends); exit 2."""


@dataclass
class BisectResult:
    good: str
    bad: str
    culprit: str
    subject: str
    evidence: DiffResult                       # culprit vs its parent
    ends: DiffResult                           # BAD vs GOOD
    tested: List[Tuple[str, str]] = field(default_factory=list)   # (commit, "good" / "regressed"), in test order

    def text(self, formatter: Callable[[DiffResult], str]) -> str:
        lines = [f"first regressed commit: {self.culprit} {self.subject}".rstrip(),
                 f"searched {self.good[:10]}..{self.bad[:10]}; measured {len(self.tested)} commits:"]
        lines += [f"  {c[:10]}  {verdict}" for c, verdict in self.tested]
        lines += ["", f"evidence: {self.culprit[:10]} against its parent", formatter(self.evidence).rstrip()]
        return "\n".join(lines) + "\n"


def regressed(result: DiffResult) -> bool:
    """The verdict bisect steers by: a regression (value or status) among the compared metrics."""
    return any(c.verdict == "regression" for c in result.comparisons) or any(
        s.verdict == "regression" for s in result.status_changes)


def select_jobs(jobs: Sequence[CellJob], filters: Sequence[Tuple[str, str]]) -> List[CellJob]:
    """The jobs whose cell has every ``key=value`` of ``filters`` (values compared as the command line writes them)."""
    axes = sorted({k for j in jobs for k in j.filters})
    for key, _ in filters:
        if key not in axes:
            close = difflib.get_close_matches(key, axes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BisectError(f"--filter {key}: not an axis of the suite{hint}; axes: {', '.join(axes) or 'none'}")
    return [j for j in jobs if all(filter_value(j.filters.get(k)) == v for k, v in filters)]


def first_parent_path(repo: Path, good: str, bad: str) -> List[str]:
    """Commits after GOOD up to and including BAD, oldest first, along BAD's first parents."""
    if _git_ok(repo, "merge-base", "--is-ancestor", good, bad) is False:
        raise BisectError(f"GOOD {good[:10]} is not an ancestor of BAD {bad[:10]}: bisect searches the commits "
                          "between them; swap them or pick a GOOD commit from BAD's history")
    path = _git(repo, "rev-list", "--first-parent", "--reverse", f"{good}..{bad}").split()
    if not path:
        raise BisectError(f"GOOD and BAD are the same commit ({good[:10]})")
    return path


def _git_ok(repo: Path, *args: str) -> bool:
    import subprocess

    return subprocess.run(["git", *args], cwd=repo, capture_output=True).returncode == 0


def bisect(good: str, bad: str, suite: str, metrics: Sequence[str], *, repo: Optional[Path] = None,
           filters: Sequence[Tuple[str, str]] = (), options: Optional[DiffOptions] = None,
           workdir: Optional[str] = None, run_args: Sequence[str] = (), runner: Optional[Runner] = None,
           jobs: Optional[Sequence[CellJob]] = None, log: Optional[Callable[[str], None]] = None) -> BisectResult:
    """Binary search for the first commit on GOOD..BAD whose ``metrics`` regress against GOOD."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not metrics:
        raise BisectError("name the metric that regressed: --metric PATTERN (e.g. --metric time_ms)")
    repo = Path(repo or _git(Path.cwd(), "rev-parse", "--show-toplevel"))
    suite_path = Path(suite)
    if not suite_path.is_file():
        raise BisectError(f"{suite}: no such suite file")
    good_sha, bad_sha = resolve_commit(repo, good), resolve_commit(repo, bad)
    path = first_parent_path(repo, good_sha, bad_sha)
    opts = DiffOptions(**{**(options.__dict__ if options else {}), "metrics": list(metrics)})
    keep = workdir is not None
    root = (Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="ssmbench-bisect-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if jobs is None:
        jobs = list_jobs(split_documents(suite_path, root / "suite-docs"))
    jobs = select_jobs(jobs, filters)
    if not jobs:
        raise BisectError(f"{suite}: no cells to run" + (" after --filter" if filters else ""))
    measured: Dict[str, List[Run]] = {}
    trees: List[Path] = []

    def measure(commit: str) -> List[Run]:
        nonlocal runner
        if commit not in measured:
            tree = checkout(repo, root / f"worktree-{commit[:12]}", commit)
            trees.append(tree)
            if runner is None:
                check_worktree_imports(tree)
                runner = cli_runner(run_args)
            log(f"running {len(jobs)} cells at {commit[:10]}")
            dirs = run_jobs(tree, jobs, runner, root / f"results-{commit[:12]}", log)
            measured[commit] = [load_run(d) for d in dirs]
            if not keep:
                remove_worktree(repo, tree)
        return measured[commit]

    try:
        base = measure(good_sha)
        ends = diff_runs(base, measure(bad_sha), opts)
        if not ends.comparisons and not ends.status_changes:
            raise BisectError(f"no metric matching {', '.join(metrics)} in both runs; check --metric")
        if not regressed(ends):
            raise BisectError(f"{', '.join(metrics)} does not regress between GOOD {good_sha[:10]} and BAD "
                              f"{bad_sha[:10]} ({_verdicts(ends)}): nothing to bisect; add repeats or "
                              "check the pattern")
        tested = [(good_sha, "good"), (bad_sha, "regressed")]
        lo, hi = -1, len(path) - 1          # path[lo] good (-1 = GOOD itself), path[hi] regressed
        while hi - lo > 1:
            mid = (lo + hi) // 2
            verdict = regressed(diff_runs(base, measure(path[mid]), opts))
            tested.append((path[mid], "regressed" if verdict else "good"))
            log(f"{path[mid][:10]}: {'regressed' if verdict else 'good'}")
            if verdict:
                hi = mid
            else:
                lo = mid
        culprit = path[hi]
        parent = good_sha if lo < 0 else path[lo]
        evidence = diff_runs(measure(parent), measure(culprit), opts)
        subject = _git(repo, "log", "-1", "--format=%s", culprit)
        return BisectResult(good_sha, bad_sha, culprit, subject, evidence, ends, tested)
    finally:
        for tree in trees:
            remove_worktree(repo, tree)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _verdicts(res: DiffResult) -> str:
    counts = res.counts()
    return ", ".join(f"{n} {v}" for v, n in counts.items()) or "nothing compared"


def parse_filter(text: str) -> Tuple[str, str]:
    """``key=value`` of ``--filter``; ValueError with the fix otherwise."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise ValueError(f"--filter {text!r}: write key=value, e.g. --filter seq_len=1024")
    return key.strip(), value.strip()
