"""Render a :class:`ReportData` as one self-contained HTML file (``report.html``).

Images are embedded as base64 PNG data URIs and the style sheet is inline: the file opens offline
and can be mailed or attached to a CI run as is.  Every string is escaped with :func:`html.escape`.
"""
from __future__ import annotations

import base64
from html import escape
from typing import TYPE_CHECKING, Iterable, List, Sequence

from harness.analysis.report.expect import fmt_value
if TYPE_CHECKING:  # the types only: importing the model pulls in the tables, models and torch
    from harness.analysis.report.model import ReportData, Section

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
.wide{max-width:100%;overflow-x:auto}td{overflow-wrap:anywhere;max-width:32em}
details.meta summary{cursor:pointer;font-weight:600;margin-top:1.6em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
blockquote{color:#555;border-left:4px solid #ddd;margin:0;padding:.2em 1em}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}img{max-width:100%}
.matches{color:#1a7f37}.close{color:#9a6700}.misses{color:#cf222e}.nodata{color:#777}
"""


def e(x) -> str:
    return escape(str(x), quote=True)


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[str] = ()) -> str:
    num = set(numeric)
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(f'<td class="num">{e(c)}</td>' if header[i] in num else f"<td>{e(c)}</td>"
                        for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<div class=\"wide\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def render_html(data: ReportData) -> str:
    parts: List[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                        f"<title>{e(data.title)}</title><style>{CSS}</style></head><body>",
                        f"<h1>{e(data.title)}</h1>"]
    parts += [f"<p><i>{e(n)}</i></p>" for n in data.notes]
    many = len(data.sections) > 1
    for sec in data.sections:
        parts += _section(sec, "h3" if many else "h2", many)
    # read top-down like a paper's results: the findings first, the run's provenance folded at the end
    parts.append('<details class="meta"><summary>Run metadata (commits, versions, machine, command)</summary>')
    parts.append(html_table(["", *data.meta_columns], [[label, *vals] for label, vals in data.meta_rows]))
    parts.append("</details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _section(sec: Section, h: str, titled: bool) -> List[str]:
    sub = "h4" if h == "h3" else "h3"
    parts: List[str] = []
    if titled:
        parts.append(f"<h2>{e(sec.suite)}</h2>")
    if sec.description:
        parts.append(f"<blockquote>{e(sec.description)}</blockquote>")
    for line in sec.overrides:  # the description is the suite's as written; these changed it
        parts.append(f"<p>Run with <code>--set</code> overrides ({e(line)})</p>")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sec.status_counts.items()))
    parts.append(f"<p><strong>{sec.n_cells} cells</strong> ({e(counts or 'no rows')}); kind: {e(sec.kind)}</p>")
    if sec.summary:
        parts.append(f"<{h}>Summary</{h}>")
        for t in sec.summary:
            unit = f" ({t.unit})" if t.unit else ""
            parts.append(f"<p><strong>{e(t.metric)}</strong>{e(unit)}</p>")
            parts.append(html_table(t.columns, t.frame.astype(str).values.tolist(), numeric=t.columns[1:]))
    if sec.tuned or sec.tune_warnings:
        parts.append(f"<{h}>Tuned</{h}>")
        for t in sec.tuned:
            parts.append(f"<p><strong>{e(t.metric)}</strong></p>")
            parts.append(html_table(t.columns, t.frame.astype(str).values.tolist()))
        parts += [f'<p class="close">⚠ {e(w)}</p>' for w in sec.tune_warnings]
    if sec.expects:
        parts.append(f"<{h}>Measured vs expected</{h}>")
        head = ["where", "metric", "expected", "measured", "n", "verdict", "rule", "source", "note"]
        rows = []
        for x in sec.expects:
            cls = x.verdict.replace(" ", "")
            rows.append(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in (
                    ", ".join(f"{k}={v}" for k, v in x.where.items()), x.metric)) +
                f'<td class="num">{e((x.op if x.op != "==" else "") + fmt_value(x.expected))}</td>'
                f'<td class="num">{e(fmt_value(x.measured))}</td><td class="num">{x.n}</td>'
                f'<td class="{e(cls)}">{e(x.verdict)}</td>' +
                "".join(f"<td>{e(c)}</td>" for c in (x.rule, x.source, x.note)) + "</tr>")
        parts.append('<div class="wide"><table><thead><tr>' + "".join(f"<th>{e(c)}</th>" for c in head) +
                     "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")
    for t in sec.expects_along_curve:
        parts.append(f"<p><strong>{e(t.metric)}</strong></p>")
        parts.append(html_table(t.columns, t.frame.astype(str).values.tolist(), numeric=t.columns[:1]))
    if sec.figures:
        parts.append(f"<{h}>Figures</{h}>")
        for f in sec.figures:
            b64 = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<figure><img alt="{e(f.title)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption>{e(f.caption)}</figcaption></figure>")
    if len(sec.failed):
        parts.append(f"<{h}>Cells that did not finish ok</{h}>")
        parts.append(html_table(list(sec.failed.columns), sec.failed.astype(str).values.tolist()))
    if sec.tables:
        parts.append(f"<{h}>Results</{h}>")
        for t in sec.tables:
            unit = f" ({t.unit})" if t.unit else ""
            parts.append(f"<{sub}>{e(t.metric + unit)}</{sub}>")
            parts.append(html_table(t.columns, t.frame.astype(str).values.tolist(),
                                    numeric=("median", "mean", "IQR", "sd", "n")))
    return parts
