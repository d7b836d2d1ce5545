"""``ssmbench``: list what is registered, validate suites, run them.

Exit codes: 0 every cell ended ok/oom/diverged/skipped/timeout; 1 some cell errored, every cell of a
suite was skipped (nothing was measured), the report asked for could not be written, or a command failed; 2 usage or validation error (nothing is
written); 130 interrupted (the run can be
resumed with ``--resume RUN_DIR``).  ``SSMBENCH_PLUGINS=mod1,mod2`` imports extra modules first
(e.g. to register a kind, mixer or benchmark target that lives outside the repo).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from harness.errors import Issue, SuiteError
from harness.suite.plan import SUITE_SUFFIXES, plan, suite_files

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load_plugins() -> None:
    for name in filter(None, (s.strip() for s in os.environ.get("SSMBENCH_PLUGINS", "").split(","))):
        importlib.import_module(name)


def _import_registrations() -> List[str]:
    """Import the packages whose modules register mixers/archs/tasks/impls; returns import problems."""
    problems = []
    for module in ("models", "harness.kinds.tasks", "harness.kinds.bench"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - list what we can
            problems.append(f"{module}: {type(exc).__name__}: {exc}")
    return problems


def cells_table(cells) -> str:
    """Plain aligned table: cell id and the parameters that vary."""
    keys: List[str] = []
    for c in cells:
        keys.extend(k for k in c.varying if k not in keys)
    header = ["cell_id"] + keys
    rows = [[c.cell_id] + [_fmt(c.varying.get(k)) for k in keys] for c in cells]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header] + rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


# --------------------------------------------------------------------------- commands

def cmd_list(args: argparse.Namespace) -> int:
    from harness.kinds.bench import IMPLS
    from harness.kinds import KINDS
    from harness.kinds.tasks import TASKS
    from models.registry import ARCHS, MIXERS

    problems = _import_registrations()
    if args.params:
        try:
            from models import paper_param_counts
        except ImportError:
            _err("parameter counts are not available: models.paper_param_counts() is missing "
                 "(the models package provides it)")
            return EXIT_FAILED
        rows = paper_param_counts()
        width = max((len(str(r[0])) for r in rows), default=4)
        print(f"{'config'.ljust(width)}  {'params':>12}  note")
        for name, n, note in rows:
            print(f"{str(name).ljust(width)}  {n:>12,}  {note}")
        return EXIT_OK

    def section(title: str, registry) -> None:
        print(f"{title}:")
        if not len(registry):
            print("  (none registered)")
        for name in registry.names():
            text = registry.help(name)
            print(f"  {name:<22} {text}".rstrip())

    section("mixers (model.mixer)", MIXERS)
    section("archs (model.arch)", ARCHS)
    section("tasks (task.name)", TASKS)
    section("benchmark targets (impl)", IMPLS)
    section("suite kinds (kind)", KINDS)
    print("suites:")
    from harness.suite.schema import read_suites
    root = Path(args.suites_dir or "suites")
    if args.suites_dir and not root.is_dir():  # asked for, so not finding it is not "no suites"
        raise SuiteError([Issue("command line", 0, f"--suites-dir {root}: no such directory")])
    files = sorted(p for p in root.rglob("*") if p.suffix in SUITE_SUFFIXES) if root.is_dir() else []
    if not files:
        print(f"  (no suite files under {root})")
    entries = []
    for path in files:
        suites, issues = read_suites(path)
        entries.extend((str(path), s.spec.name, s.spec.kind, s.spec.description) for s in suites)
        if issues:
            entries.append((str(path), "INVALID", "", str(issues[0])))
    widths = [max((len(e[i]) for e in entries), default=0) for i in range(3)]
    for entry in entries:
        print("  " + "  ".join(x.ljust(w) for x, w in zip(entry[:3], widths)) + f"  {entry[3]}".rstrip())
    for problem in problems:
        _err(f"note: could not import {problem}")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from harness.kinds import KINDS
    from harness.suite import keys

    if args.kind is not None and args.kind not in KINDS:
        raise SuiteError([Issue("command line", 0, f"unknown kind {args.kind!r}; kinds: {', '.join(KINDS.names())}")])
    if args.write:
        if args.kind is not None:
            _err("keys --write rewrites the whole reference: give no kind")
            return EXIT_USAGE
        keys.KEYS_FILE.write_text(keys.render_markdown(), encoding="utf-8")
        print(f"wrote {keys.KEYS_FILE}")
        return EXIT_OK
    print(keys.render_markdown(args.kind), end="")
    return EXIT_OK


def _parse_common(args: argparse.Namespace):
    from harness.suite.expand import parse_assignments
    overrides = parse_assignments(args.set or [], "--set")
    filters = parse_assignments(getattr(args, "filter", None) or [], "--filter")
    return overrides, filters


def cmd_validate(args: argparse.Namespace) -> int:
    overrides, filters = _parse_common(args)
    planned = plan(suite_files(args.suites), overrides, filters, args.device)
    for loaded, cells in planned:
        spec = loaded.spec
        print(f"{loaded.source}: suite {spec.name!r} ({spec.kind}): {len(cells)} cells, valid")
        if not args.quiet:
            print(cells_table(cells))
    return EXIT_OK


def _make_executor(args: argparse.Namespace):
    """The executor ``--executor`` names, connected: a bad ``--address`` exits 2 here, before
    anything is planned or written; prints what a cluster executor will run the cells on."""
    from harness.run.local import LocalExecutor

    jobs = getattr(args, "jobs", None)
    mps = getattr(args, "mps", None)
    if args.executor == "local":
        ray_only = [flag for flag, value in (("--address", args.address), ("--gpus-per-cell", args.gpus_per_cell),
                                             ("--cpus-per-cell", args.cpus_per_cell), ("--retries", args.retries))
                    if value is not None]
        if ray_only:  # the local executor would ignore them
            raise SuiteError([Issue("command line", 0, f"{', '.join(ray_only)}: for --executor ray only; the local "
                                    "executor runs one cell at a time (or --jobs N at once) on this machine")])
        try:
            return LocalExecutor(jobs, mps=mps)
        except ValueError:
            raise SuiteError([Issue("command line", 0, f"--jobs {jobs}: give a whole number >= 1, e.g. --jobs 4")]) from None
    if jobs is not None:
        raise SuiteError([Issue("command line", 0, "--jobs is for the local executor; with --executor ray, "
                                                   "cells share a GPU through --gpus-per-cell (e.g. 0.25)")])
    if mps:
        raise SuiteError([Issue("command line", 0, "--mps is for the local executor's --jobs; with "
                                                   "--executor ray, start MPS on the nodes yourself")])
    executor = _ray_executor(args)
    try:
        executor.connect()
        print(_cluster_line(executor.cluster_summary(), args.gpus_per_cell), flush=True)
    except BaseException:
        executor.close()
        raise
    return executor


def _cluster_line(summary: dict, gpus_flag: Optional[float]) -> str:
    """One line on what the cells will run on, e.g. ``ray 2.60.0 at local: 1 node, 16 CPUs, 0 GPUs;
    per cell: 1 CPU, GPUs: 0.25 (timing kinds: 1); retries: 0``.  GPUs per cell are the flag's when
    given; otherwise they are known only per suite (each run's meta.json records them)."""
    nodes = summary.get("nodes", 0)
    gpus = f"{gpus_flag:g}" if gpus_flag is not None else "each suite's gpus_per_cell, else 1"
    return (f"{summary.get('executor')} {summary.get('ray_version')} at {summary.get('address')}: "
            f"{nodes} node{'' if nodes == 1 else 's'}, {summary.get('cpus', 0):g} CPUs, "
            f"{summary.get('gpus', 0):g} GPUs; per cell: {summary.get('cpus_per_cell', 0):g} CPU, "
            f"GPUs: {gpus} (timing kinds: 1); retries: {summary.get('retries', 0)}")


def _ray_executor(args: argparse.Namespace):
    try:
        import ray  # noqa: F401  (only to tell a missing extra from a broken executor)
    except ImportError:
        raise SuiteError([Issue("command line", 0, "ray is not installed: pip install -e '.[ray]'")]) from None
    try:
        from harness.run.ray_executor import RayExecutor
    except ModuleNotFoundError as exc:
        raise SuiteError([Issue("command line", 0, f"--executor ray is not available here ({exc})")]) from None
    return RayExecutor(address=args.address, gpus_per_cell=args.gpus_per_cell,
                       cpus_per_cell=args.cpus_per_cell, retries=args.retries or 0)


def _build_report(run_dirs: List[Path], out_dir: Optional[str] = None) -> bool:
    """Write the run's report; False when it was asked for and could not be written (the results are
    safe either way, and the message says how to make it later).  An install without the analysis
    package has no reports to make: True."""
    try:
        from harness.analysis.report import build_report
    except ModuleNotFoundError as exc:
        if exc.name == "harness.analysis.report":
            return True
        _err(f"report: skipped, it cannot be imported ({exc})")
        return False
    except Exception as exc:  # noqa: BLE001 - a broken report module must not hide the results
        _err(f"report: skipped, it cannot be imported ({type(exc).__name__}: {exc})")
        return False
    try:
        report_dir = build_report(run_dirs, out_dir=out_dir)
    except Exception as exc:  # noqa: BLE001 - the results are safe; say why there is no report
        _err(f"report: failed ({type(exc).__name__}: {exc}); the results are written, "
             f"try `ssmbench report {' '.join(map(str, run_dirs))}`")
        return False
    if report_dir:
        print(f"report: {report_dir}")
    return True


def cmd_run(args: argparse.Namespace) -> int:
    overrides, filters = _parse_common(args)
    # The executor first: `device: auto` means the GPUs of the machines that run the cells (a Ray
    # cluster's, not this machine's), and a bad --address exits 2 before anything is written.
    executor = _make_executor(args)
    try:
        return _plan_and_run(args, executor, overrides, filters)
    finally:
        executor.close()


def _check_resume(args: argparse.Namespace, run_dir: Path) -> None:
    """``--resume`` finishes a run exactly as it was planned, with the same code, or refuses (exit 2).

    Without suite files the run's own plan is replayed, so ``--set``/``--filter``/``--device`` would
    change nothing: they are refused rather than ignored (with the suite file they are applied, and
    cells they add join the run).  Another commit or other uncommitted changes than the run's are
    refused unless ``--allow-other-commit`` (each row keeps its own commit; meta.json lists them)."""
    from harness.run.runner import resume_mismatch

    given = [flag for flag, value in (("--set", args.set), ("--filter", args.filter), ("--device", args.device))
             if value]
    if given and not args.suites:
        raise SuiteError([Issue("command line", 0, f"--resume {run_dir} replays the run's own plan, so "
                                f"{' and '.join(given)} would change nothing; to add or change cells give the "
                                f"suite file too (ssmbench run SUITE --resume {run_dir} {given[0]} ...)")])
    mismatch = resume_mismatch(run_dir)
    if mismatch and not args.allow_other_commit:
        raise SuiteError([Issue(str(run_dir), 0, f"--resume: {mismatch}. Check out that version, start a new "
                                "run, or pass --allow-other-commit to mix them knowingly (each row keeps its "
                                "own commit, and meta.json lists every commit)")])
    if mismatch:
        _err(f"note: --allow-other-commit: {mismatch}; each row keeps its own commit")


def _plan_and_run(args: argparse.Namespace, executor: Any, overrides: List[Tuple[str, Any]],
                  filters: List[Tuple[str, Any]]) -> int:
    from harness.run.progress import make_progress
    from harness.run.runner import RunInterrupted, read_plan, run_suite
    from harness.store.results import RowStore

    has_gpus = getattr(executor, "cluster_has_gpus", None)
    cuda_available = has_gpus() if callable(has_gpus) else None  # None: this process's torch decides
    resume = Path(args.resume) if args.resume else None
    if resume is not None:
        stored, stored_cells = read_plan(resume)
        _check_resume(args, resume)
        stored_name = stored["suite"]["name"]
        if args.suites:
            planned = [(l, c) for l, c in plan(suite_files(args.suites), overrides, filters, args.device,
                                               cuda_available) if l.spec.name == stored_name]
            if not planned:
                raise SuiteError([Issue(str(resume), 0, f"--resume: the run is of suite {stored_name!r}, "
                                        "which none of the given files holds")])
            loaded, cells = planned[0]
            added = {c.cell_id for c in cells} - {c.cell_id for c in stored_cells}
            if added:  # e.g. another --filter: the run directory grows (harness.analysis.compare does this)
                _err(f"note: {len(added)} cell(s) not in the run's original plan are added to {resume}")
            jobs = [(loaded.doc.data, cells, loaded.source)]
            overrides_used = overrides
        else:
            jobs = [(stored["suite"], stored_cells, stored.get("source", ""))]
            overrides_used = list(stored.get("overrides", {}).items())
    else:
        if not args.suites:
            raise SuiteError([Issue("command line", 0, "run: name at least one suite file "
                                    "(or --resume RUN_DIR)")])
        jobs = [(l.doc.data, c, l.source) for l, c in plan(suite_files(args.suites), overrides, filters,
                                                             args.device, cuda_available)]
        overrides_used = overrides

    if args.report_dir and not (args.no_report or args.dry_run):
        Path(args.report_dir).mkdir(parents=True, exist_ok=True)  # unwritable: exit 2 before any cell runs

    if args.dry_run:
        done = set(RowStore(resume).finished()) if resume is not None else set()
        for data, cells, source in jobs:
            left = [c for c in cells if c.cell_id not in done]
            of = f" left of {len(cells)} (the others have rows in {resume})" if resume is not None else ""
            print(f"{source}: suite {data['name']!r} ({data['kind']}): {len(left)} cells{of}")
            print(cells_table(left))
            print()
        return EXIT_OK

    results = []
    for i, (data, cells, source) in enumerate(jobs):
        progress = make_progress(args.quiet)
        try:
            result = run_suite(data, cells, out_root=Path(args.out), resume_dir=resume, executor=executor,
                               progress=progress, source=source, overrides=overrides_used,
                               filters=filters, argv=sys.argv)
        except RunInterrupted as exc:
            not_started = [j[0]["name"] for j in jobs[i + 1:]]
            later = f"\nnot started: {', '.join(not_started)}" if not_started else ""
            _err(f"interrupted; finished cells are saved in {exc.run_dir}\n"
                 f"resume with: ssmbench run --resume {exc.run_dir}{later}")
            return EXIT_INTERRUPTED
        results.append(result)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
        print(f"{result.run_id}: {counts or 'no cells'} -> {result.run_dir}", flush=True)
    executor.close()  # before the report: a local Ray cluster's workers hold memory
    reported = True
    if not args.no_report and results:
        reported = _build_report([r.run_dir for r in results], args.report_dir)
    nothing_ran = [r for r in results if r.total and r.counts.get("skipped", 0) == r.total]
    for r in nothing_ran:
        _err(f"{r.run_id}: nothing was measured: all {r.total} cells were skipped (their rows say why, "
             f"e.g. no CUDA on this machine)")
    failed = nothing_ran or not reported or any(r.any_error for r in results)
    return EXIT_FAILED if failed else EXIT_OK


# --------------------------------------------------------------------------- parser

def _version() -> str:
    """The installed distribution's version (pyproject.toml), and the checkout's commit."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        number = version("ssmbench")
    except Exception:  # noqa: BLE001 - PackageNotFoundError: run from a checkout, not installed
        number = "(not installed)"
    from harness.store.meta import git_state
    git = git_state()
    commit = "" if git["commit"] == "unknown" else f" (commit {git['short']}{', dirty' if git['dirty'] else ''})"
    return f"{number}{commit}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmbench", description="Benchmark and ablation harness for "
                                     "state-space sequence models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="registered mixers, archs, tasks, benchmark targets, kinds and suites")
    p.add_argument("--params", action="store_true", help="parameter counts of the papers' configs")
    p.add_argument("--suites-dir", help="where to look for suites (default: suites)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("keys", help="every suite key of a kind: type, default, allowed values, help, which "
                                    "models it changes (suites/KEYS.md is this, generated)")
    p.add_argument("kind", nargs="?", help="one kind (task, speed, memory, decode); default: all, suite level too")
    p.add_argument("--write", action="store_true", help="rewrite suites/KEYS.md (after adding or changing a key)")
    p.set_defaults(func=cmd_keys)

    def suite_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a dotted key in every cell (value read as YAML), e.g. model.d_state=32")
        p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the suites' device")

    p = sub.add_parser("validate", help="check suite files and count their cells; runs nothing")
    p.add_argument("suites", nargs="+", metavar="SUITE")
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary line, not the cells")
    suite_options(p)
    p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="keep only matching cells")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run suites; writes results/<suite>/<timestamp>-<commit>/")
    p.add_argument("suites", nargs="*", metavar="SUITE")
    p.add_argument("--dry-run", action="store_true", help="print the expanded cells; run nothing")
    suite_options(p)
    p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="keep only matching cells")
    p.add_argument("--out", default="results", help="results root (default: results)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="finish the cells a run directory has no rows for; refused when this checkout's "
                        "commit or uncommitted changes differ from the run's")
    p.add_argument("--allow-other-commit", action="store_true",
                   help="with --resume: finish the run with this checkout's code although it differs from "
                        "the run's (each row keeps its own commit; meta.json lists them all)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-report", action="store_true", help="do not build a report at the end")
    p.add_argument("--report-dir", metavar="DIR",
                   help="where the report goes (report.md, report.html, figures/); default "
                        "reports/<suite>/<run id>/ under the current directory, whatever --out is")
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="run up to N cells at once on this machine, one process each (small training "
                        "cells share a GPU well; timing and memory cells still run alone); "
                        "default: the suite's jobs, else 1")
    p.add_argument("--mps", action=argparse.BooleanOptionalAction, default=None,
                   help="with --jobs N > 1, run the cells under NVIDIA CUDA MPS so the kernels of cells "
                        "sharing a GPU overlap (started for the run and stopped after it, unless a "
                        "daemon already runs; without a GPU or nvidia-cuda-mps-control the cells run "
                        "without it); --no-mps turns off a suite's mps: true; default: the suite's mps, "
                        "else off. meta.json says what happened")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="ray cluster address (--executor ray)")
    p.add_argument("--gpus-per-cell", type=float, help="GPUs per cell (--executor ray)")
    p.add_argument("--cpus-per-cell", type=float, help="CPUs per cell (--executor ray)")
    p.add_argument("--retries", type=int, help="retries of a lost worker (--executor ray; default 0)")
    p.set_defaults(func=cmd_run)

    try:
        from harness.analysis.cli import add_commands
    except ModuleNotFoundError as exc:
        if exc.name not in ("harness.analysis.report", "harness.analysis.cli"):
            raise
    else:
        add_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _load_plugins()
    except ImportError as exc:
        _err(f"SSMBENCH_PLUGINS: cannot import {exc.name or exc}")
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is handled, not at interpreter exit
    except SuiteError as exc:
        _err(exc.render())
        return EXIT_USAGE
    except BrokenPipeError:
        return _closed_pipe(args.command)
    except OSError as exc:  # results directory not writable, disk full, ...
        _err(_io_error(exc, args))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


#: Commands whose output is all they do: a reader that stops reading (``ssmbench list | head``) is done.
READ_ONLY_COMMANDS = ("list", "validate")


def _closed_pipe(command: str) -> int:
    """stdout was closed by its reader.  Not an error for a command that only prints; a run whose
    progress could not be printed stopped early, which must not look like success (its finished
    cells are saved, and ``--resume`` finishes it)."""
    try:  # Python would complain again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    if command in READ_ONLY_COMMANDS:
        return EXIT_OK
    try:
        _err("stopped: standard output was closed (broken pipe); finished cells are saved and "
             "`ssmbench run --resume RUN_DIR` finishes the run")
    except OSError:  # stderr is gone too: the exit code is all that is left to say it
        pass
    return EXIT_FAILED


def _io_error(exc: OSError, args: argparse.Namespace) -> str:
    """One paragraph for an I/O error the harness itself hit (a cell's own errors are rows):
    which file, what the OS said, and what to change."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    hint = ""
    out = getattr(args, "out", None)
    if args.command == "run":
        hint = (f"; check that --out {out} (and --report-dir, if given) is a writable directory "
                "with free space")
    elif out:
        hint = f"; check that {out} is a writable directory with free space"
    return f"error: cannot read or write{where}: {reason}{hint}"


if __name__ == "__main__":
    sys.exit(main())
