"""What a report shows, independent of how it is rendered (Markdown or HTML).

:func:`assemble` turns loaded runs into a :class:`ReportData`: run metadata, the measured-vs-
expected verdicts, the figures for the suite's kind, one summary table per metric and the cells
that did not end ok.  The renderers only format it, so both outputs always say the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import pandas as pd

from harness.analysis.report import expect as expect_mod
from harness.analysis.report.expect_curve import curve_expectations
from harness.analysis.report.figures import Figure, figures_for
from harness.analysis.report.runs import Run, cell_status, combined_rows, meta_facts
from harness.analysis.report.summary import summary_tables
from harness.analysis.report.tables import MetricTable, metric_tables, status_table
from harness.analysis.report.tuning import tuned_for

#: meta.json facts shown first, in this order: (label, key of ``meta_facts`` or of meta.json).
META_FIELDS = (("run id", "run_id"), ("suite", "suite"), ("kind", "kind"), ("commit", "commit"),
               ("dirty", "dirty"), ("started", "started"), ("ended", "ended"), ("host", "host"),
               ("device", "device"), ("GPU", "gpu"), ("GPU driver", "driver"), ("CPU", "cpu"),
               ("python", "python"), ("torch", "torch"), ("triton", "triton"), ("CUDA", "cuda"),
               ("command", "command"))
#: meta.json keys already covered by META_FIELDS (in either layout), or too bulky for the table.
_SHOWN = {"run_id", "suite", "kind", "commit", "dirty", "started", "ended", "start_time", "end_time", "host",
          "device", "gpu", "gpu_name", "gpus", "driver", "cpu", "python", "torch", "triton", "cuda",
          "versions", "command"}


@dataclass
class Section:
    """Everything about one suite (a report of a multi-document run has one section per suite)."""

    suite: str
    kind: str
    description: str
    n_cells: int
    status_counts: Dict[str, int]
    expects: List[expect_mod.ExpectResult]
    figures: List[Figure]
    tables: List[MetricTable]
    failed: pd.DataFrame
    summary: List[MetricTable] = field(default_factory=list)
    expects_along_curve: List[MetricTable] = field(default_factory=list)   # task suites: per step budget
    overrides: List[str] = field(default_factory=list)  # "run id: key=value, ..." for runs made with --set
    tuned: List[MetricTable] = field(default_factory=list)   # the suite's ``tune:``: rows at their best lr
    tune_warnings: List[str] = field(default_factory=list)   # e.g. a best value at the edge of the sweep


@dataclass
class ReportData:
    title: str
    meta_columns: List[str]                 # one per run
    meta_rows: List[Tuple[str, List[str]]]  # label -> one value per run
    sections: List[Section]
    notes: List[str] = field(default_factory=list)


def _meta_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)


def _section(suite: str, runs: Sequence[Run], figure_prefix: str) -> Section:
    rows = combined_rows(runs)
    kind = runs[0].kind
    description = str(runs[0].suite.get("description") or "")
    statuses = cell_status(rows)
    counts: Dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    entries: List[Dict[str, Any]] = []
    for r in runs:
        for e in r.suite.get("expect") or []:
            if e not in entries:
                entries.append(e)
    figures = figures_for(kind, rows)
    for f in figures:
        f.name = figure_prefix + f.name
    overrides = [f"{r.run_id}: " + ", ".join(f"{k}={v}" for k, v in r.overrides.items())
                 for r in runs if r.overrides]
    tuned = tuned_for([r.suite for r in runs], rows)
    return Section(suite=suite, kind=kind, description=description, n_cells=len(statuses),
                   tuned=[tuned.table] if tuned.table is not None else [], tune_warnings=tuned.warnings,
                   status_counts=counts, expects=expect_mod.evaluate(entries, rows), figures=figures,
                   tables=metric_tables(rows), failed=status_table(rows), summary=summary_tables(kind, rows),
                   overrides=overrides,
                   expects_along_curve=curve_expectations(entries, rows) if kind == "task" else [])


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") + "_"


def assemble(runs: Sequence[Run]) -> ReportData:
    by_suite: Dict[str, List[Run]] = {}
    for r in runs:
        by_suite.setdefault(r.suite_name, []).append(r)
    meta_rows = []
    facts = [meta_facts(r.meta) for r in runs]
    for label, key in META_FIELDS:
        if key == "run_id":
            values = [r.run_id for r in runs]
        elif key == "suite":
            values = [r.suite_name for r in runs]
        elif key == "kind":
            values = [r.kind for r in runs]
        else:
            values = [_meta_value(f[key] if key in f else r.meta.get(key)) for f, r in zip(facts, runs)]
        if any(v != "—" for v in values):
            meta_rows.append((label, values))
    extra_keys = sorted({k for r in runs for k, v in r.meta.items()
                         if k not in _SHOWN and not isinstance(v, (dict, list))})
    for k in extra_keys:
        meta_rows.append((k, [_meta_value(r.meta.get(k)) for r in runs]))
    many = len(by_suite) > 1
    sections = [_section(name, group, _slug(name) if many else "") for name, group in by_suite.items()]
    notes = []
    pooled = [name for name, group in by_suite.items() if len(group) > 1]
    if pooled:
        notes.append(f"several runs of {', '.join(pooled)} combined: their repeats and seeds are pooled.")
    return ReportData(title=f"{' + '.join(by_suite)} — ssmbench report", meta_columns=[r.run_id for r in runs],
                      meta_rows=meta_rows, sections=sections, notes=notes)
