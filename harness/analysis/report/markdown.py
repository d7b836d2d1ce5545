"""Render a :class:`ReportData` as GitHub-flavoured Markdown (``report.md``).

Every string that came from YAML or from the results goes through :func:`md_escape`, so a suite
description cannot inject HTML or break a table.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence

from harness.analysis.report.expect import fmt_value
from harness.analysis.report.model import ReportData, Section

_MD_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "\\": "\\\\", "`": "\\`",
               "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]"}


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: no HTML, no pipes, no emphasis, one line."""
    out = "".join(_MD_SPECIAL.get(ch, ch) for ch in str(text))
    return " ".join(out.split())


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] = ()) -> List[str]:
    marks = [("---:" if (align[i] if i < len(align) else "l") == "r" else "---") for i in range(len(header))]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "| " + " | ".join(marks) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(md_escape(c) for c in r) + " |")
    return lines


VERDICT_ICON = {"matches": "✅ matches", "close": "🟡 close", "misses": "❌ misses", "no data": "⚪ no data"}


def render_markdown(data: ReportData, figure_paths: dict) -> str:
    """``figure_paths`` maps a figure name to its path relative to the report (PNG)."""
    out: List[str] = [f"# {md_escape(data.title)}", ""]
    for note in data.notes:
        out += [f"*{md_escape(note)}*", ""]
    many = len(data.sections) > 1
    for sec in data.sections:
        out += _section(sec, figure_paths, "###" if many else "##", many)
    # the findings first, the run's provenance folded at the end (GitHub renders <details>)
    out += ["", "## Run metadata", "", "<details><summary>commits, versions, machine, command</summary>", ""]
    out += md_table(["", *data.meta_columns], [[label, *vals] for label, vals in data.meta_rows])
    out += ["", "</details>"]
    return "\n".join(out).rstrip() + "\n"


def _section(sec: Section, figure_paths: dict, h: str, titled: bool) -> List[str]:
    out: List[str] = [""]
    if titled:
        out += [f"## {md_escape(sec.suite)}", ""]
    if sec.description:
        out += ["> " + md_escape(sec.description), ""]
    for line in sec.overrides:  # the description is the suite's as written; these changed it
        out += ["Run with `--set` overrides (" + md_escape(line) + ")", ""]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sec.status_counts.items()))
    out += [f"**{sec.n_cells} cells** ({md_escape(counts or 'no rows')}); kind: {md_escape(sec.kind)}"]
    if sec.summary:
        out += ["", f"{h} Summary", ""]
        for t in sec.summary:
            unit = f" ({md_escape(t.unit)})" if t.unit else ""
            out += [f"**{md_escape(t.metric)}**{unit}", ""]
            out += md_table(t.columns, t.frame.astype(str).values.tolist(),
                            align=["l"] + ["r"] * (len(t.columns) - 1))
            out.append("")
    if sec.tuned or sec.tune_warnings:
        out += ["", f"{h} Tuned", ""]
        for t in sec.tuned:
            out += [f"**{md_escape(t.metric)}**", ""]
            out += md_table(t.columns, t.frame.astype(str).values.tolist())
            out.append("")
        out += [f"- ⚠️ {md_escape(w)}" for w in sec.tune_warnings]
    if sec.expects:
        out += ["", f"{h} Measured vs expected", ""]
        out += md_table(["where", "metric", "expected", "measured", "n", "verdict", "rule", "source", "note"],
                        [[", ".join(f"{k}={v}" for k, v in e.where.items()), e.metric,
                          f"{e.op if e.op != '==' else ''}{fmt_value(e.expected)}", fmt_value(e.measured),
                          str(e.n), VERDICT_ICON.get(e.verdict, e.verdict), e.rule, e.source, e.note]
                         for e in sec.expects], align="lllrrllll")
    for t in sec.expects_along_curve:
        out += ["", f"**{md_escape(t.metric)}**", ""]
        out += md_table(t.columns, t.frame.astype(str).values.tolist(), align="rlll")
    if sec.figures:
        out += ["", f"{h} Figures", ""]
        for f in sec.figures:
            out += [f"![{md_escape(f.title)}]({figure_paths[f.name]})", "", "*" + md_escape(f.caption) + "*", ""]
    if len(sec.failed):
        out += ["", f"{h} Cells that did not finish ok", ""]
        out += md_table(list(sec.failed.columns), sec.failed.astype(str).values.tolist())
    if sec.tables:
        out += ["", f"{h} Results", ""]
        for t in sec.tables:
            unit = f" ({md_escape(t.unit)})" if t.unit else ""
            out += [f"{h}# {md_escape(t.metric)}{unit}", ""]
            numeric = {"median", "mean", "IQR", "sd", "n"}
            out += md_table(t.columns, t.frame.astype(str).values.tolist(),
                            align=["r" if c in numeric else "l" for c in t.columns])
            out.append("")
    return out
