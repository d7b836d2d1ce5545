"""``ssmbench compare REV_A REV_B SUITE``: run one suite at two commits, interleaved, and diff them.

The asv-continuous workflow: both revisions are checked out as detached git worktrees under a
temporary directory, and the suite is run *alternately* at A and B so slow drift of the machine
(clocks, temperature, other load) lands on both sides instead of on one.  The unit of alternation
is ``interleave``:

* ``suite`` (default): each suite document runs whole in one ``ssmbench run`` process per side --
  document 1 at A then B, document 2 at B then A, ...; one process start per document and side, so
  cheap cells do not pay a Python + torch start each.
* ``cell``: each cell runs in its own process, selected with ``--filter`` on the parameters that vary
  between cells (robust across revisions even if a revision changes how cell ids are computed); the
  first cell of a side creates its run directory and later cells ``--resume`` it.  Finer drift
  cancellation for long cells, at one process start per cell and side.

Both give the same cells and rows.  ``rounds > 1`` repeats the whole interleaved pass into fresh run
directories (alternating which side goes first), and the diff pools them.

Both sides run the caller's suite file (the same definition), each with its own code: the
subprocess runs ``python -m harness.cli run`` with the worktree as working directory, and the
module path is checked so a stray installed copy of the harness cannot answer for both.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from harness.analysis.diff import DiffOptions, DiffResult, check_metric_patterns, diff_runs
from harness.analysis.report.runs import load_run


class CompareError(RuntimeError):
    """A compare that cannot proceed (bad revision, not a git repo, a failing run); one line."""


@dataclass
class CellJob:
    """One cell to run at both revisions: its suite document file and the filters that select it."""

    suite_file: Path
    suite_name: str
    filters: Dict[str, Any]


#: (worktree, job, run_dir or None, out_root) -> run_dir.  Tests pass a fake; the default runs the CLI.
Runner = Callable[[Path, CellJob, Optional[Path], Path], Path]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise CompareError(f"git {' '.join(args)}: {msg[-1] if msg else 'failed'}")
    return proc.stdout.strip()


def resolve_commit(repo: Path, rev: str) -> str:
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except CompareError:
        raise CompareError(f"unknown revision {rev!r} in {repo}") from None


def filter_value(value: Any) -> str:
    """A ``--filter key=value`` value the run command reads back (as YAML) to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)  # YAML 1.1 reads "1e-05" as text: give the mantissa a dot
        mantissa, e, exp = text.partition("e")
        return text if not e or "." in mantissa else f"{mantissa}.0e{exp}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def split_documents(suite: Path, into: Path) -> List[Path]:
    """One file per YAML document (a file may hold several suites); a single document is used as is."""
    try:
        docs = [d for d in yaml.safe_load_all(suite.read_text(encoding="utf-8")) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise CompareError(f"{suite}: cannot read the suite ({str(exc).splitlines()[0]})") from None
    if len(docs) <= 1:
        return [suite.resolve()]
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for i, doc in enumerate(docs):
        path = into / f"{suite.stem}.{i}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        out.append(path)
    return out


INTERLEAVE = ("suite", "cell")


def list_jobs(suite_files: Sequence[Path], interleave: str = "cell") -> List[CellJob]:
    """The cells of each document (expanded by this checkout's harness), as filter sets; with
    ``interleave="suite"`` one job (no filters: every cell) per document that has cells."""
    try:
        from harness.suite.plan import plan
    except ImportError as exc:
        raise CompareError(f"cannot expand suites here ({exc})") from None
    jobs = []
    for f in suite_files:
        try:
            planned = plan([f], [], [], None)
        except Exception as exc:  # noqa: BLE001 - SuiteError renders itself
            render = getattr(exc, "render", None)
            raise CompareError(render() if render else str(exc)) from None
        for loaded, cells in planned:
            name = loaded.spec.name if hasattr(loaded, "spec") else loaded.doc.data["name"]
            if interleave == "suite":
                if cells:
                    jobs.append(CellJob(f, str(name), {}))
                continue
            for cell in cells:
                # a key an ``include`` cell lacks cannot be filtered on; without it the filter may
                # select a few cells at once, and --resume skips them when their own turn comes
                filters = {k: v for k, v in cell.varying.items() if v is not None}
                jobs.append(CellJob(f, str(name), filters))
    return jobs


def cli_runner(extra_args: Sequence[str] = ()) -> Runner:
    """Run one cell with ``python -m harness.cli run`` inside a worktree."""

    def run(worktree: Path, job: CellJob, run_dir: Optional[Path], out_root: Path) -> Path:
        cmd = [sys.executable, "-m", "harness.cli", "run", str(job.suite_file), "--quiet", "--no-report",
               "--out", str(out_root), *extra_args]
        for key, value in job.filters.items():
            cmd += ["--filter", f"{key}={filter_value(value)}"]
        if run_dir is not None:
            cmd += ["--resume", str(run_dir)]
        env = dict(os.environ, PYTHONPATH=_pythonpath(worktree))
        before = _run_dirs(out_root / job.suite_name)
        proc = subprocess.run(cmd, cwd=worktree, env=env, capture_output=True, text=True)
        if proc.returncode not in (0, 1):  # 1: a cell errored, which the diff reports as a status
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise CompareError(f"run at {worktree.name} failed (exit {proc.returncode}): "
                               f"{tail[-1] if tail else 'no output'}")
        if run_dir is not None:
            return run_dir
        created = sorted(_run_dirs(out_root / job.suite_name) - before)
        if not created:
            raise CompareError(f"run at {worktree.name} wrote no run directory under {out_root / job.suite_name}")
        return created[-1]

    return run


def _pythonpath(worktree: Path) -> str:
    """The worktree first (its harness answers), then whatever the caller had (plugins of SSMBENCH_PLUGINS)."""
    return os.pathsep.join(filter(None, [str(worktree), os.environ.get("PYTHONPATH", "")]))


def _run_dirs(parent: Path) -> set:
    return {p for p in parent.iterdir() if p.is_dir()} if parent.is_dir() else set()


def check_worktree_imports(worktree: Path) -> None:
    """Make sure ``python -m`` in the worktree imports the worktree's harness, not an installed one."""
    env = dict(os.environ, PYTHONPATH=_pythonpath(worktree))
    proc = subprocess.run([sys.executable, "-c", "import harness; print(harness.__file__)"], cwd=worktree,
                          env=env, capture_output=True, text=True)
    where = Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
    if where is None or worktree.resolve() not in where.parents:
        raise CompareError(f"in {worktree} `import harness` loads {where or 'nothing'}, not the worktree's "
                           "copy; uninstall a non-editable ssmbench or run from a source checkout")


def checkout(repo: Path, tree: Path, commit: str) -> Path:
    """A detached git worktree of ``commit`` at ``tree`` (reused when it already holds that commit)."""
    if not tree.exists():
        _git(repo, "worktree", "add", "--detach", str(tree), commit)
    elif _git(tree, "rev-parse", "HEAD") != commit:
        raise CompareError(f"{tree} is a checkout of another commit; remove it "
                           f"(git worktree remove {tree}) or pick another --workdir")
    return tree


def remove_worktree(repo: Path, tree: Path) -> None:
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)


def run_jobs(tree: Path, jobs: Sequence[CellJob], runner: Runner, out_root: Path,
             log: Callable[[str], None] = lambda msg: None) -> List[Path]:
    """Run every job in ``tree`` (one run directory per suite document); returns the run directories."""
    run_dirs: Dict[str, Path] = {}
    for i, job in enumerate(jobs):
        log(f"  cell {i + 1}/{len(jobs)}: {job.filters or job.suite_name}")
        run_dirs[str(job.suite_file)] = runner(tree, job, run_dirs.get(str(job.suite_file)), out_root)
    return list(run_dirs.values())


def check_suite_metrics(suite: Path, patterns: Sequence[str]) -> None:
    """A ``--metric`` pattern that no kind of the suite writes is refused before either revision runs (after
    the runs the diff would refuse it anyway, minutes later)."""
    if not patterns:
        return
    from harness.kinds import KINDS
    from harness.registry import UnknownNameError
    from harness.suite.schema import read_suites

    suites, _ = read_suites(suite)   # a broken suite is reported by the runs themselves
    metrics = set()
    for loaded in suites:
        try:
            metrics.update(getattr(KINDS.get(loaded.spec.kind), "metrics", None) or ())
        except UnknownNameError:   # (a plugin's kind, registered by the runs): only the diff can check
            return
    if metrics:
        check_metric_patterns(patterns, sorted(metrics), where=f"that the kinds of {suite} write")


def compare(rev_a: str, rev_b: str, suite: str, *, repo: Optional[Path] = None, workdir: Optional[str] = None,
            run_args: Sequence[str] = (), rounds: int = 1, options: Optional[DiffOptions] = None,
            report: bool = False, runner: Optional[Runner] = None, interleave: str = "suite",
            jobs: Optional[Sequence[CellJob]] = None, log: Callable[[str], None] = None) -> DiffResult:
    """Run ``suite`` at both revisions, interleaved per suite document or per cell (``interleave``),
    and diff B (new) against A (base)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    repo = Path(repo or _git(Path.cwd(), "rev-parse", "--show-toplevel"))
    suite_path = Path(suite)
    if not suite_path.is_file():
        raise CompareError(f"{suite}: no such suite file")
    if rounds < 1:
        raise CompareError("--rounds must be at least 1")
    if interleave not in INTERLEAVE:
        raise CompareError(f"--interleave {interleave!r}: use one of {', '.join(INTERLEAVE)}")
    commits = {"a": resolve_commit(repo, rev_a), "b": resolve_commit(repo, rev_b)}
    check_suite_metrics(suite_path, (options.metrics if options else None) or ())
    keep = workdir is not None
    # absolute: the runs execute with a worktree as their working directory
    root = (Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="ssmbench-compare-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    trees = {side: root / f"worktree-{side}" for side in commits}
    try:
        for side, commit in commits.items():
            checkout(repo, trees[side], commit)
        if runner is None:
            for tree in trees.values():
                check_worktree_imports(tree)
            runner = cli_runner(run_args)
        if jobs is None:
            jobs = list_jobs(split_documents(suite_path, root / "suite-docs"), interleave)
        if not jobs:
            raise CompareError(f"{suite}: no cells to run")
        runs: Dict[str, List[Path]] = {"a": [], "b": []}
        for r in range(rounds):
            run_dirs: Dict[tuple, Path] = {}
            for i, job in enumerate(jobs):
                order = ("a", "b") if (i + r) % 2 == 0 else ("b", "a")
                for side in order:
                    key = (side, str(job.suite_file))
                    out_root = root / f"results-{side}-round{r}"
                    log(f"[round {r + 1}/{rounds}] {interleave} {i + 1}/{len(jobs)} at {side.upper()} "
                        f"({commits[side][:10]}): {job.filters or job.suite_name}")
                    run_dirs[key] = runner(trees[side], job, run_dirs.get(key), out_root)
            for (side, _), d in run_dirs.items():
                runs[side].append(d)
        base = [load_run(d) for d in runs["a"]]
        new = [load_run(d) for d in runs["b"]]
        if report:
            from harness.analysis.report import build_report
            for side, dirs in runs.items():
                out = build_report(dirs, out_dir=root / f"report-{side}" if keep else None)
                log(f"report ({side.upper()}): {out}")
        return diff_runs(base, new, options)
    finally:
        if not keep:
            for tree in trees.values():
                remove_worktree(repo, tree)
            shutil.rmtree(root, ignore_errors=True)
