"""The ``report``, ``diff``, ``compare``, ``history`` and ``bisect`` subcommands (wired into ``ssmbench`` by harness.cli).

``add_commands(subparsers)`` adds them; each sets ``func`` (args -> exit code).  Also runnable
alone: ``python -m harness.analysis.cli diff BASE NEW``.

Exit codes (the README's table says the same):

* ``report``: 0 every planned cell of the runs has rows; 1 the report was written but some planned
  cells have no rows (the run did less than it planned: the report and stderr say which); 2 bad paths.
* ``diff`` / ``compare``: 0 the gate held and had teeth; 1 the ``--fail-on`` condition held (a regression,
  a status change to a failure, or a cell/metric of BASE missing from NEW unless ``--allow-missing``);
  2 usage errors, bad paths, and comparisons that could not fail: no cell in common, a ``--metric``
  that matches nothing, a gate whose families reached no verdict (one paragraph on stderr, no traceback).

"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from harness.analysis.report.runs import RunDirError

GATES = ("all", "quality", "timing", "memory", "info")


def _split(values: Sequence[str]) -> List[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: sides may be given as comma lists or repeated."""
    out = []
    for v in values:
        out += [p for p in str(v).split(",") if p]
    return out


def _threshold(text: str) -> float:
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r}: give a fraction (0.05) or a percentage (5%)")
    if value < 0:
        raise argparse.ArgumentTypeError("threshold must be >= 0")
    return value


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha {text!r} is not a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("alpha must be between 0 and 1 (e.g. 0.01)")
    return value


def _gate(text: str) -> List[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in GATES]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"--gate {text!r}: use one or more of {', '.join(GATES)} (comma-separated)")
    return parts


def _filter(text: str):
    from harness.analysis.bisect import parse_filter

    try:
        return parse_filter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def add_diff_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", action="append", default=None, metavar="PATTERN",
                   help="compare only these metrics (glob, repeatable), e.g. --metric 'time_ms' --metric 'acc*'")
    p.add_argument("--threshold", type=_threshold, default=0.05,
                   help="relative change that matters for timing/memory (default 5%%)")
    p.add_argument("--alpha", type=_alpha, default=0.01, help="significance level of the timing test (default 0.01)")
    p.add_argument("--quality-tol", type=float, default=0.01,
                   help="absolute tolerance for accuracy/loss (default 0.01 = one accuracy point)")
    p.add_argument("--format", choices=("text", "md", "json"), default="text", dest="fmt")
    p.add_argument("--fail-on", choices=("regression", "change", "never"), default="regression",
                   help="exit 1 when this holds (default: regression)")
    p.add_argument("--gate", type=_gate, default=["all"], metavar="FAMILIES",
                   help="metric families that count for --fail-on: all (default) or a comma list of "
                        "quality, timing, memory, info; status changes always count")
    p.add_argument("--cross-machine", action="store_true",
                   help="judge timing/memory even when the runs' machines or versions differ")
    p.add_argument("--include-curves", action="store_true", help="also compare learning-curve points")
    p.add_argument("--allow-missing", action="store_true",
                   help="cells or metrics of BASE that NEW no longer has are listed, not counted as "
                        "regressions (for intended suite changes)")
    p.add_argument("--all", action="store_true", dest="verbose", help="text format: list every comparison")
    p.add_argument("--output", "-o", default=None, help="also write the formatted diff to this file")


def add_worktree_options(p: argparse.ArgumentParser) -> None:
    """``compare`` and ``bisect`` run suites in git worktrees: where those go, and what each run is given."""
    p.add_argument("--workdir", default=None, help="keep worktrees and runs here (default: a temp dir, removed)")
    p.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for each `ssmbench run` (repeatable), e.g. --run-arg=--device=cuda")


def add_commands(subparsers) -> None:
    rp = subparsers.add_parser("report", help="write report.md / report.html / figures for run directories",
                               description="Write reports/<suite>/<run id>/report.{md,html} and figures.")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default=None, help="output directory (default reports/<suite>/<run id>/)")
    rp.add_argument("--suite", default=None, metavar="FILE",
                    help="judge by this suite file's expect/tune instead of the runs' copies (a changed criterion)")
    rp.set_defaults(func=cmd_report)

    dp = subparsers.add_parser(
        "diff", help="noise-aware comparison of two runs (exit 1 on regression)",
        description="Compare NEW against BASE cell by cell. BASE and NEW are run directories; give "
                    "several per side as a comma list (base1,base2) to pool repeats.")
    dp.add_argument("base", metavar="BASE")
    dp.add_argument("new", metavar="NEW")
    add_diff_options(dp)
    dp.set_defaults(func=cmd_diff)

    cp = subparsers.add_parser(
        "compare", help="run a suite at two git revisions (interleaved) and diff them",
        description="Check out REV_A and REV_B as git worktrees, run SUITE alternately at A and B "
                    "(per suite document, or per cell with --interleave cell; cancelling drift), then "
                    "diff B against A.")
    cp.add_argument("rev_a", metavar="REV_A")
    cp.add_argument("rev_b", metavar="REV_B")
    cp.add_argument("suite", metavar="SUITE")
    add_worktree_options(cp)
    cp.add_argument("--rounds", type=int, default=1, help="A/B passes over the cells (default 1)")
    cp.add_argument("--interleave", choices=("suite", "cell"), default="suite",
                    help="alternate A and B per suite document, one process each (default), or per cell, "
                         "one process per cell and side (finer drift cancellation for long cells)")
    cp.add_argument("--report", action="store_true", help="also write a report for each side")
    add_diff_options(cp)
    cp.set_defaults(func=cmd_compare)

    hp = subparsers.add_parser(
        "history", help="trend page of one suite's runs over commits, with the steps named",
        description="Order the runs of one suite by git history (else start time), plot each cell's metrics "
                    "per machine and name the commits where a metric's level moved (size, p-value). Writes "
                    "history.html (self-contained) and history.md.")
    hp.add_argument("results", nargs="+", metavar="RESULTS", help="run directories or folders holding them")
    hp.add_argument("-o", "--out", default=None, help="output directory (default reports/<suite>/history/)")
    hp.add_argument("--suite", default=None, help="the suite to draw when RESULTS hold runs of several")
    hp.add_argument("--repo", default=None, help="git repository that orders the commits (default: here)")
    hp.add_argument("--metric", action="append", default=None, metavar="PATTERN", help="only these metrics (glob)")
    hp.add_argument("--alpha", type=_alpha, default=0.01, help="significance level of each step test (default 0.01)")
    hp.add_argument("--min-change", type=_threshold, default=0.02,
                    help="smallest relative move of the median that counts as a step (default 2%%)")
    hp.set_defaults(func=cmd_history)

    bp = subparsers.add_parser(
        "bisect", help="find the first commit where a metric regressed (binary search over worktrees)",
        description="Run SUITE (or its --filter'ed cells) at commits between GOOD and BAD chosen by binary "
                    "search, judge each against GOOD with the statistics of `ssmbench diff`, and print the "
                    "first regressed commit with its diff against its parent.")
    bp.add_argument("good", metavar="GOOD")
    bp.add_argument("bad", metavar="BAD")
    bp.add_argument("suite", metavar="SUITE")
    bp.add_argument("--filter", action="append", default=[], type=_filter, metavar="KEY=VALUE",
                    help="run only the cells with this value (repeatable)")
    add_worktree_options(bp)
    add_diff_options(bp)
    bp.set_defaults(func=cmd_bisect)


def _fail(msg: str) -> int:
    print(f"ssmbench: {msg}", file=sys.stderr)
    return 2


def cmd_report(args) -> int:
    from harness.analysis.report import build_report, load_runs

    try:
        runs = load_runs(args.run_dirs)
        out = build_report(runs, out_dir=args.out, suite_file=args.suite)
    except RunDirError as exc:
        return _fail(str(exc))
    except OSError as exc:  # an unwritable --out (or reports/): a usage error, not a crash
        return _fail(f"{exc.filename or args.out}: cannot write the report ({exc.strerror or exc})")
    print(f"report: {out / 'report.md'}\n        {out / 'report.html'}")
    for run in runs:
        for note in run.notes:
            print(f"warning: {note}", file=sys.stderr)
    if not any(len(run.rows) for run in runs):
        print("ssmbench: the runs have no rows at all: the report is empty (exit 1)", file=sys.stderr)
        return 1
    if any(run.missing_cells for run in runs):
        print("ssmbench: the report covers less than the runs planned (exit 1); finish the runs with "
              "`ssmbench run --resume RUN_DIR`", file=sys.stderr)
        return 1
    return 0


def _emit(result, args) -> int:
    from harness.analysis.diff import FORMATTERS, format_text

    text = FORMATTERS[args.fmt](result) if args.fmt != "text" else format_text(result, verbose=args.verbose)
    sys.stdout.write(text)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"{args.output}: cannot write the diff ({exc.strerror or exc})")
    problem = result.gate_problem(args.gate) if args.fail_on != "never" else None
    if problem:
        return _fail(problem)
    return result.exit_code(args.fail_on, args.gate)


def diff_options(args):
    from harness.analysis.diff import DiffOptions

    return DiffOptions(threshold=args.threshold, alpha=args.alpha, quality_tol=args.quality_tol,
                       metrics=args.metric, cross_machine=args.cross_machine, include_curves=args.include_curves,
                       allow_missing=args.allow_missing)


def cmd_diff(args) -> int:
    from harness.analysis.diff import DiffError, diff_runs
    from harness.analysis.report.runs import load_runs

    try:
        base = load_runs(_split([args.base]))
        new = load_runs(_split([args.new]))
        result = diff_runs(base, new, diff_options(args))
    except (RunDirError, DiffError) as exc:
        return _fail(str(exc))
    return _emit(result, args)


def cmd_compare(args) -> int:
    from harness.analysis.compare import CompareError, compare
    from harness.analysis.diff import DiffError

    try:
        result = compare(args.rev_a, args.rev_b, args.suite, workdir=args.workdir, run_args=args.run_arg,
                         rounds=args.rounds, options=diff_options(args), report=args.report,
                         interleave=args.interleave)
    except (CompareError, RunDirError, DiffError) as exc:
        return _fail(str(exc))
    return _emit(result, args)


def cmd_history(args) -> int:
    from harness.analysis.history import HistoryError, history_command, step_rows

    try:
        hist, out = history_command(args.results, out=args.out, suite=args.suite, repo=args.repo,
                                    metrics=args.metric, alpha=args.alpha, min_change=args.min_change)
    except (HistoryError, RunDirError) as exc:
        return _fail(str(exc))
    rows = step_rows(hist)
    print(f"history of {hist.suite}: {hist.runs} runs, {len(hist.commits)} commits ({hist.order}), "
          f"{len(hist.series)} series, {len(rows)} steps")
    for r in rows:
        print(f"  step at {r[0]}: {r[1]} {r[2]} on {r[3]}: {r[5]} ({r[6]}, p={r[7]})")
    print(f"history: {out / 'history.html'}\n         {out / 'history.md'}")
    return 0


def cmd_bisect(args) -> int:
    from harness.analysis.bisect import bisect
    from harness.analysis.compare import CompareError
    from harness.analysis.diff import FORMATTERS, DiffError, format_text

    try:
        res = bisect(args.good, args.bad, args.suite, args.metric or [], filters=args.filter,
                     options=diff_options(args), workdir=args.workdir, run_args=args.run_arg)
    except (CompareError, RunDirError, DiffError) as exc:  # DiffError: a --metric that matches nothing
        return _fail(str(exc))
    text = res.text(FORMATTERS[args.fmt] if args.fmt != "text" else format_text)
    sys.stdout.write(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="ssmbench", description="reports and diffs of ssmbench runs")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
