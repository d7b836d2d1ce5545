"""Planning: suite files on the command line -> [(LoadedSuite, cells)], every problem of every file at once.

Shared by ``ssmbench validate/run`` (harness.cli) and ``ssmbench compare`` (harness.analysis.compare), which
expands the suites of a checkout to run them cell by cell.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from harness.errors import Issue, SuiteError

SUITE_SUFFIXES = (".yaml", ".yml")


def suite_files(args: Sequence[str]) -> List[Path]:
    """Files named on the command line; a directory means every suite file under it."""
    out: List[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUITE_SUFFIXES)
            if not found:  # a command that was given nothing to do must not succeed at it
                raise SuiteError([Issue(str(path), 0, f"a directory with no suite files "
                                        f"({', '.join('*' + s for s in SUITE_SUFFIXES)}) under it; name a suite "
                                        "file or a directory that holds some (e.g. suites/)")])
            out.extend(found)
        else:
            out.append(path)
    return out


def plan(files: Sequence[Path], overrides: Sequence[Tuple[str, Any]], filters: Sequence[Tuple[str, Any]],
         device: Optional[str], cuda_available: Optional[bool] = None):
    """[(LoadedSuite, cells)] for every document of every file; every problem of every file at once.

    ``cuda_available``: what ``device: auto`` resolves against (None: this process's torch; the Ray
    executor passes whether its cluster has GPUs).

    With several suites (a multi-document file such as suites/smoke.yaml, or several files), a
    ``--set`` key goes only to the suites whose kind has its top-level section (``train.steps`` to
    task suites), and a suite none of whose cells has a ``--filter`` key or value is left out; a key or
    value that fits no suite at all is still an error, so a typo is never silently ignored.
    """
    from harness.suite.expand import NothingSelected, expand, known_keys
    from harness.suite.schema import read_suites

    issues: List[Issue] = []
    loaded_all = []
    for path in files:
        suites, problems = read_suites(path, overrides)
        issues.extend(problems)
        loaded_all.extend(suites)
    cell_overrides = [o for o in overrides if not _suite_level(o[0])]
    several = len(loaded_all) > 1
    used_sets, used_filters = set(), set()
    planned = []
    unmatched: List[Issue] = []  # --filter values a suite has none of (fine while another suite has them)
    left_out: List[str] = []     # suites the filters leave out (said on stderr: they do not run)
    for loaded in loaded_all:
        these_sets, these_filters = cell_overrides, filters
        try:
            if several:
                fields = _kind_fields(loaded.spec.kind)
                these_sets = [o for o in cell_overrides if fields is None or o[0].split(".")[0] in fields]
                keys = known_keys(c.params for c in expand(loaded, these_sets, (), device, validate=False,
                                                           cuda_available=cuda_available))
                if any(key not in keys for key, _ in filters):
                    left_out.append(loaded.spec.name)
                    continue  # no cell of this suite can match the filter
            used_sets.update(key for key, _ in these_sets)
            used_filters.update(key for key, _ in these_filters)
            planned.append((loaded, expand(loaded, these_sets, these_filters, device,
                                           cuda_available=cuda_available)))
        except NothingSelected as exc:
            left_out.append(loaded.spec.name)
            (unmatched if several else issues).extend(
                Issue(i.source, i.line, f"{i.message} (suite {loaded.spec.name!r})" if several else i.message)
                for i in exc.issues)
        except SuiteError as exc:
            issues.extend(exc.issues)
    if not issues and not planned and unmatched:  # the filters kept no cell of any suite
        issues.extend(unmatched)
    if several and not issues:
        for key, _ in cell_overrides:
            if key not in used_sets:
                issues.append(Issue("command line", 0, f"--set {key!r}: no suite given has this key"))
        for key, _ in filters:
            if key not in used_filters:
                issues.append(Issue("command line", 0, f"--filter {key!r}: no cell of any suite given has this key"))
    if not issues:
        issues.extend(_unused_filter_options(planned, filters))
    if issues:
        sources = sorted({i.source for i in issues})
        if sources == ["command line"]:
            headline = "the command line does not fit the suites:"
        elif len(sources) == 1:
            headline = f"{sources[0]} is not a valid suite file:"
        else:
            headline = "the suites are not valid:"
        raise SuiteError(issues, headline=headline)
    _warn_inert(planned, cell_overrides)
    if left_out and filters:
        shown = " ".join(f"{k}={v}" for k, v in filters)
        print(f"note: --filter {shown} keeps no cell of suite{'s' if len(left_out) > 1 else ''} "
              f"{', '.join(left_out)}; {'they do' if len(left_out) > 1 else 'it does'} not run "
              f"({len(planned)} of {len(planned) + len(left_out)} suites do)", file=sys.stderr)
    return planned


def _unused_filter_options(planned, filters: Sequence[Tuple[str, Any]]) -> List[Issue]:
    """``--filter key=[a,b]`` keeps cells with any of the values; one that no planned cell has (a typo
    in one of them) selected nothing, which is as much an error as a filter that keeps no cell."""
    from harness.dotted import get_dotted, has_dotted
    from harness.registry import closest
    from harness.suite.expand import values_equal as equal

    cells = [c for _, cs in planned for c in cs]
    issues = []
    for key, wanted in filters:
        if not isinstance(wanted, list):
            continue
        values = [get_dotted(c.params, key) for c in cells if has_dotted(c.params, key)]
        if any(isinstance(v, list) for v in values):  # the key holds lists: the filter value is one
            continue
        for option in wanted:
            if not any(equal(v, option) for v in values):
                hint = closest(str(option), sorted({str(v) for v in values}))
                tail = f" — did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
                issues.append(Issue("command line", 0, f"--filter {key}={wanted}: no cell has the value "
                                    f"{option!r}{tail}; drop it from the list"))
    return issues


def _warn_inert(planned, overrides: Sequence[Tuple[str, Any]]) -> None:
    """Print (stderr) the sweep axes and ``--set`` values that change no model (harness/suite/inert_axes.py)."""
    from harness.suite.inert_axes import inert_axis_issues, inert_override_issues

    warnings = [i for loaded, cells in planned for i in inert_axis_issues(loaded, cells)]
    warnings += inert_override_issues([c for _, cells in planned for c in cells], overrides)
    for issue in sorted(set(warnings)):
        print(issue, file=sys.stderr)


def _kind_fields(kind: str) -> Optional[set]:
    """Top-level keys a kind's cells may hold (aliases included), or None if the kind cannot load."""
    from harness.kinds import KINDS
    try:
        model = KINDS.get(kind).config_model
    except Exception:  # an unknown or broken kind is reported by expand's validation
        return None
    return {f.alias or name for name, f in model.model_fields.items()} | set(model.model_fields)


def _suite_level(key: str) -> bool:
    from harness.suite.schema import SUITE_LEVEL_KEYS
    return key in SUITE_LEVEL_KEYS or key.startswith("sweep.")
