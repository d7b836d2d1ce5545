"""Mutation testing of the core modules with mutmut, one module at a time, each against only its tests.

    pip install mutmut            # 3.x; not a project dependency
    python tests/mutation/run.py --list
    python tests/mutation/run.py scan_reference scan_chunked --jobs 2
    python tests/mutation/run.py scan_reference --recheck     # only the recorded survivors, after new tests

For each target (module + the test files and ``-k`` selection that cover it, :data:`TARGETS`), the
tracked files are copied to ``<workdir>/<target>/`` with a ``[tool.mutmut]`` section that mutates only
that module (and, where :attr:`Target.functions` is set, only those functions), and ``mutmut run`` is
started there; mutmut then runs, per mutant, only the selected tests that execute the mutated
function.  The per-target counts, the score (killed / all mutants; a mutant no test executes counts
as a survivor) and every survivor's diff are merged into ``tests/mutation/results.json``; the triage of
each survivor (equivalent, or the test added for it) is written by hand in ``tests/MUTATION.md``.

Recheck: once every survivor of a complete run is triaged and tests are written, ``--recheck`` runs only those
survivors again in a fresh copy (today's tests, the module unchanged: the survivors' diffs must match the record)
and records the score they give, every other mutant staying killed; minutes instead of a full run.

Message text: a mutant that changes only the words of a message (a string in a ``raise``, an ``Issue``, a
printed line, a help text; :func:`message_text_mutants`) is counted, listed and also left out of a second
score, ``score_logic``: the tests assert a message's facts (the key, the file, the fix), not its wording.
A string used as data (a dict key, a separator, a compared value) is never treated as a message.

Cost: one pytest run of the selected tests per mutant, in forked workers; on a loaded 2-core box
0.5-3 s per mutant (``--jobs`` workers).  Not run in CI.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results.json"
#: the statuses mutmut gives a mutant that a test caught
KILLED = ("killed", "timeout", "segfault", "caught by type check")
#: statuses that mean mutmut did not decide (the run was stopped): reported, not scored
UNDECIDED = ("not checked", "skipped")


@dataclass(frozen=True)
class Target:
    """A module to mutate and the pytest arguments that select the tests covering it."""

    name: str
    path: str
    tests: Tuple[str, ...]
    functions: Tuple[str, ...] = field(default=())  # only these top-level functions (empty: the whole module)

    @property
    def dotted(self) -> str:
        return self.path[:-3].replace("/", ".")

    def mutant_globs(self) -> List[str]:
        """mutmut's names for the mutants of ``functions`` (``<module>.x_<function>__mutmut_<n>``)."""
        return [f"{self.dotted}.x_{fn}__mutmut_*" for fn in self.functions]


#: the scan's CPU tests (with the constant-B/C ones) without the Triton ones (a subprocess each) and the L=4097
#: cases (seconds each)
_SCAN_TESTS = ("tests/test_selective_scan.py", "tests/test_selective_scan_constant_bc.py",
               "-k", "not triton and not interpreter and not bench_backward and not L4097")
#: tests that start ``python -m harness`` in a subprocess: mutmut's trampolines fail outside its own process
_NO_SUBPROCESS = ("-k", "not sigkill and not sigint")
#: the SSD's CPU tests (the Triton interpreter's run is a subprocess per mutant: left to CI)
_SSD_TESTS = ("tests/test_ssd.py", "-k", "not interpreter")
TARGETS: Dict[str, Target] = {t.name: t for t in [
    Target("scan_reference", "kernels/selective_scan/reference.py", _SCAN_TESTS),
    Target("scan_chunked", "kernels/selective_scan/chunked.py", _SCAN_TESTS),
    Target("hippo", "models/hippo.py", ("tests/test_hippo.py", "tests/test_s4.py")),
    Target("s4", "models/s4.py", ("tests/test_s4.py",)),
    Target("s6", "models/s6.py", ("tests/test_s6.py", "tests/test_models.py", "tests/test_prefill.py", "-m", "not gpu")),
    Target("ssd_reference", "kernels/ssd/reference.py", _SSD_TESTS),
    Target("ssd_chunked", "kernels/ssd/chunked.py", _SSD_TESTS),
    Target("ssd_layer", "models/ssd.py", ("tests/test_mamba2.py", "tests/test_ssd.py", "-m", "not gpu",
                                          "-k", "not interpreter")),
    Target("diff_statistics", "harness/analysis/diff.py", ("tests/test_diff.py",),
           functions=("min_two_sided_p", "bootstrap_ratio_ci", "compare_timing", "compare_quality",
                      "compare_ratio", "compare_info")),
    Target("expand", "harness/suite/expand.py", ("tests/test_expand_selection.py", "tests/test_expand.py")),
    Target("results_store", "harness/store/results.py", ("tests/test_results.py", "tests/test_runner.py", *_NO_SUBPROCESS)),
    Target("runner_resume", "harness/run/runner.py", ("tests/test_runner.py", *_NO_SUBPROCESS),
           functions=("read_plan", "extend_plan", "run_suite")),
]}


#: calls whose string arguments are messages for a person (an exception, an Issue, a printed line, a help text)
_MESSAGE_CALLS = re.compile(r"(Error|Exception|Warning|Issue|print|warn|message|note|_fail|skip|fail)$")
#: variables a message is built in before it is passed on (``sentence = f"..."; Issue(.., sentence)``)
_MESSAGE_NAMES = re.compile(r"(msg|message|sentence|hint|why|reason|tail|headline|note|text|what|shown|detail)",
                            re.IGNORECASE)


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _in_message(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    """Whether a string constant sits where only a person reads it: inside a ``raise``, an argument of a message
    call (:data:`_MESSAGE_CALLS`), a ``help=``/``description=`` keyword, or a value assigned to a message
    variable (:data:`_MESSAGE_NAMES`)."""
    while node in parents:
        up = parents[node]
        if isinstance(up, ast.Raise):
            return True
        if isinstance(up, ast.Call) and node is not up.func and _MESSAGE_CALLS.search(_call_name(up)):
            return True
        if isinstance(up, ast.keyword) and up.arg in ("help", "description", "msg", "reason"):
            return True
        if isinstance(up, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node is up.value:
            targets = up.targets if isinstance(up, ast.Assign) else [up.target]
            names = [t.id if isinstance(t, ast.Name) else
                     t.slice.value if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant)
                     and isinstance(t.slice.value, str) else getattr(t, "attr", "") for t in targets]
            return any(_MESSAGE_NAMES.search(n) for n in names)
        if isinstance(up, (ast.stmt, ast.Lambda)):
            return False
        node = up
    return False


def _scalars(node: ast.AST) -> List[object]:
    """A node's own scalar fields (names, operators' flags, constants), not its children."""
    return [v for v in (getattr(node, f, None) for f in node._fields) if isinstance(v, (str, int, float, bool, type(None)))]


def message_text_mutants(mutated_source: str, dotted: str) -> set:
    """The names of mutants that change only the text of messages (see :func:`_in_message`): the mutated
    function's AST equals the original's except for string constants, all of them in message places.
    A changed string used as data (a key, a separator, a comparison) is not a message and stays scored."""
    funcs: Dict[Tuple[str, str], ast.AST] = {}
    for node in ast.walk(ast.parse(mutated_source)):
        m = re.fullmatch(r"(.+)__mutmut_(\d+|orig)", getattr(node, "name", "") or "")
        if m and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs[(m.group(1), m.group(2))] = node
    out = set()
    for (base, n), node in funcs.items():
        orig = funcs.get((base, "orig"))
        if n == "orig" or orig is None:
            continue
        a, b = list(ast.walk(orig)), list(ast.walk(node))
        if len(a) != len(b):
            continue
        changed = []
        for x, y in zip(a, b):
            if type(x) is not type(y):
                break
            if isinstance(x, ast.Constant):
                if x.value == y.value:
                    continue
                if not (isinstance(x.value, str) and isinstance(y.value, str)):
                    break
                changed.append(y)
            elif x is not orig and _scalars(x) != _scalars(y):   # (the two functions' names differ)
                break
        else:
            parents = {child: parent for parent in b for child in ast.iter_child_nodes(parent)}
            if changed and all(_in_message(c, parents) for c in changed):
                out.add(f"{dotted}.{base}__mutmut_{n}")
    return out


def mutmut_config(target: Target) -> str:
    """The ``[tool.mutmut]`` section for one target (appended to the copy's pyproject.toml)."""
    lines = ["", "[tool.mutmut]",
             'source_paths = ["harness/", "models/", "kernels/"]',  # all copied, so all import from the copy
             f'only_mutate = ["{target.path}"]',
             "pytest_add_cli_args_test_selection = " + json.dumps(list(target.tests)),
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]',
             'process_isolation = "forkserver"',  # torch is not fork-safe after pytest has run it
             ""]
    return "\n".join(lines)


def parse_results(text: str) -> Dict[str, str]:
    """``mutmut results --all true`` output ("    <name>: <status>" lines) -> {name: status}."""
    out = {}
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name and "__mutmut_" in name:
            out[name] = status.strip()
    return out


def summarize(statuses: Dict[str, str]) -> Dict[str, object]:
    """Counts per status and the score killed / decided mutants (None when none was decided)."""
    counts: Dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    decided = sum(n for s, n in counts.items() if s not in UNDECIDED)
    killed = sum(n for s, n in counts.items() if s in KILLED)
    return {"counts": dict(sorted(counts.items())), "mutants": len(statuses), "decided": decided,
            "killed": killed, "score": round(killed / decided, 4) if decided else None,
            "survivors": sorted(n for n, s in statuses.items() if s not in KILLED and s not in UNDECIDED)}


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    if dest.exists():
        shutil.rmtree(dest)
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
_MUTMUT = [sys.executable, "-m", "mutmut"]


class RecheckRefused(Exception):
    """``--recheck`` cannot stand in for a full run (no complete earlier run, or the module changed since)."""


def _fresh_copy(target: Target, here: Path) -> None:
    _copy_tree(here)
    with open(here / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write(mutmut_config(target))


def _mutmut(here: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_MUTMUT, *args], cwd=here, env=_ENV, capture_output=True, text=True)


def _statuses(target: Target, here: Path) -> Dict[str, str]:
    statuses = parse_results(_mutmut(here, "results", "--all", "true").stdout)
    if target.functions:
        statuses = {n: s for n, s in statuses.items() if any(f".x_{fn}__mutmut_" in n for fn in target.functions)}
    return statuses


def run_target(target: Target, workdir: Path, jobs: int, collect_only: bool = False) -> Dict[str, object]:
    """Mutate one target in a fresh copy of the repository; its summary plus every survivor's diff.
    ``collect_only``: summarise the copy an earlier (perhaps stopped) run left, running nothing."""
    here = workdir / target.name
    started = dt.datetime.now(dt.timezone.utc)
    run = subprocess.CompletedProcess([], 0, "", "")
    if not collect_only:
        _fresh_copy(target, here)
        run = _mutmut(here, "run", "--max-children", str(jobs), *target.mutant_globs())
    return _summary(target, here, _statuses(target, here), run, started, collect_only)


def merge_recheck(earlier: Dict[str, object], now: Dict[str, str]) -> Dict[str, str]:
    """Every mutant's status after re-running only ``earlier``'s survivors: a survivor takes the status it got
    now, every other mutant stays killed (``earlier`` was complete, so it was killed then, by tests that are
    still there).  Raises :class:`RecheckRefused` when ``earlier`` is not a complete run, or when the module
    no longer gives the same number of mutants."""
    if not earlier.get("mutants") or earlier.get("decided") != earlier.get("mutants"):
        raise RecheckRefused(f"the recorded run decided {earlier.get('decided')} of {earlier.get('mutants')} "
                             "mutants; only a complete run can be rechecked (run the target in full)")
    if len(now) != earlier["mutants"]:
        raise RecheckRefused(f"the module gives {len(now)} mutants now, {earlier['mutants']} when recorded: "
                             "it changed, so the names no longer match (run the target in full)")
    survivors = set(earlier["survivors"])
    missing = sorted(survivors - set(now))
    if missing:
        raise RecheckRefused(f"recorded survivors the module no longer has: {missing[:3]} (run the target in full)")
    return {n: (now[n] if n in survivors else "killed") for n in now}


def recheck_target(target: Target, workdir: Path, jobs: int, earlier: Dict[str, object]) -> Dict[str, object]:
    """Re-run only the survivors of ``earlier`` (a complete run of ``target``) against today's tests, in a fresh
    copy: the measured score after the tests written for them, for a few minutes instead of a full run.  The
    module must be unchanged: each survivor's diff must equal the recorded one (:class:`RecheckRefused` if not)."""
    here = workdir / target.name
    started = dt.datetime.now(dt.timezone.utc)
    _fresh_copy(target, here)
    survivors = list(earlier.get("survivors", []))
    if not survivors:
        raise RecheckRefused("the recorded run has no survivors to recheck")
    run = _mutmut(here, "run", "--max-children", str(jobs), *survivors)
    statuses = merge_recheck(earlier, _statuses(target, here))
    changed = [n for n in survivors if _diff(here, n) != earlier.get("diffs", {}).get(n)]
    if changed:  # same count, other mutations: the module was edited
        raise RecheckRefused(f"{len(changed)} recorded survivor(s) mutate other code now ({changed[0]}): "
                             "the module changed since the record (run the target in full)")
    summary = _summary(target, here, statuses, run, started, False)
    summary["recheck_of"] = {"date": earlier.get("date"), "survivors": len(survivors),
                             "score": earlier.get("score"), **({"recheck_of": earlier["recheck_of"]}
                                                               if "recheck_of" in earlier else {})}
    return summary


def _summary(target: Target, here: Path, statuses: Dict[str, str], run: subprocess.CompletedProcess,
             started: dt.datetime, collect_only: bool) -> Dict[str, object]:
    summary = summarize(statuses)
    mutated = here / "mutants" / target.path
    messages = message_text_mutants(mutated.read_text(), target.dotted) if mutated.exists() else set()
    logic = summarize({n: s for n, s in statuses.items() if n not in messages})
    summary.update(score_logic=logic["score"], killed_logic=logic["killed"], decided_logic=logic["decided"],
                   message_text_mutants=len([n for n in statuses if n in messages]),
                   message_text_survivors=sorted(n for n in summary["survivors"] if n in messages))
    if not statuses:
        summary["error"] = (run.stdout + run.stderr)[-3000:]
    summary["diffs"] = {name: _diff(here, name) for name in summary["survivors"]}
    summary.update(module=target.path, tests=list(target.tests), functions=list(target.functions),
                   date=started.strftime("%Y-%m-%d %H:%M UTC"), collected_only=collect_only,
                   minutes=None if collect_only else round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1))
    return summary


def _diff(here: Path, name: str) -> str:
    shown = _mutmut(here, "show", name).stdout
    return "\n".join(line for line in shown.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help=f"targets to mutate (default: all): {', '.join(TARGETS)}")
    ap.add_argument("--jobs", type=int, default=2, help="mutmut workers (default 2)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ssmbench-mutation"), help="where the copies go")
    ap.add_argument("--record", type=Path, default=RESULTS, help="JSON file the results are merged into")
    ap.add_argument("--list", action="store_true", help="print the targets and their tests, run nothing")
    ap.add_argument("--collect-only", action="store_true",
                    help="summarise what a stopped run left in --workdir (mutants not run count as 'not checked')")
    ap.add_argument("--recheck", action="store_true",
                    help="re-run only the recorded survivors of a complete run against today's tests (the module "
                         "unchanged): the score after the tests written for them, in minutes")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        print(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    chosen = [TARGETS[t] for t in (args.targets or TARGETS)]
    if args.list:
        for t in chosen:
            print(f"{t.name:16} {t.path:40} {' '.join(t.tests)}" + (f"  [{', '.join(t.functions)}]" if t.functions else ""))
        return 0
    worst = 0
    for target in chosen:
        if args.recheck:
            earlier = json.loads(args.record.read_text()).get(target.name, {}) if args.record.exists() else {}
            try:
                summary = recheck_target(target, args.workdir, args.jobs, earlier)
            except RecheckRefused as exc:
                print(f"{target.name}: not rechecked: {exc}", file=sys.stderr)
                worst = 2
                continue
        else:
            summary = run_target(target, args.workdir, args.jobs, args.collect_only)
        # re-read first: another run (other targets) may have recorded its results meanwhile
        record = json.loads(args.record.read_text()) if args.record.exists() else {}
        record[target.name] = summary
        args.record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        score = summary["score"]
        print(f"{target.name}: {summary['killed']}/{summary['decided']} killed"
              + (f" ({score:.0%})" if score is not None else "") + f", {len(summary['survivors'])} survived"
              + (f"; without the {summary['message_text_mutants']} message-text mutants "
                 f"{summary['killed_logic']}/{summary['decided_logic']}" if summary.get("message_text_mutants") else "")
              + (f"; mutmut said: {summary['error'][-500:]}" if "error" in summary else ""))
        if "recheck_of" in summary:
            print(f"  (rechecked the {summary['recheck_of']['survivors']} survivors of the run of "
                  f"{summary['recheck_of']['date']}, which scored {summary['recheck_of']['score']:.0%})")
        worst = max(worst, 1 if score is None or "error" in summary else 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
