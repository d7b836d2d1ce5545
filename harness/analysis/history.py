"""``ssmbench history RESULTS... [-o OUT]``: a suite's metrics over commits, with the steps named.

A diff compares two runs, so a drift of 3% per commit never trips a 5% gate.  The history takes every
run of one suite it is given (run directories, or folders holding them at any depth), orders them by
the git history of ``--repo`` (topological order; when a run's commit is not in the repository, all runs
are ordered by their start time instead) and, per cell, metric and machine, draws the metric against
the commits and looks for level changes with :mod:`harness.analysis.changepoint` (the commit where the
median moved, its size and a permutation p-value).  Points from different machines (GPU or CPU model
and host) are separate series: never joined by a line, never tested together.

Writes ``history.html`` (self-contained: figures inlined as base64 PNG) and ``history.md`` (the summary,
figures beside it under ``figures/``).  The points are aggregated with one pandas group-by, so hundreds of
runs take seconds; the figures are one per cell and metric family, not per run.
"""
from __future__ import annotations

import base64
import fnmatch
import io
import subprocess
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from harness.analysis.changepoint import Step, describe, detect_steps, per_commit_medians
from harness.analysis.diff import cell_labels, machine_fingerprint
from harness.analysis.report.metrics import classify, is_summary_of
from harness.analysis.report.runs import Run, RunDirError, combined_rows, load_run, meta_facts, row_key_columns


class HistoryError(ValueError):
    """Nothing to draw, or an ambiguous request (runs of several suites); one line, exit 2."""


# --------------------------------------------------------------------------- finding and ordering runs


def find_run_dirs(paths: Sequence[str]) -> List[Path]:
    """Every run directory under the paths (a run directory itself, or folders of them at any depth)."""
    found: List[Path] = []
    seen = set()
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise HistoryError(f"{path}: no such file or directory")
        if path.is_file() and path.name == "rows.jsonl":
            path = path.parent
        marks = ([path / "rows.jsonl"] if (path / "rows.jsonl").is_file() or (path / "results.parquet").is_file()
                 else sorted(set(path.rglob("rows.jsonl")) | set(path.rglob("results.parquet"))))
        for m in marks:
            d = m.parent.resolve()
            if d not in seen:
                seen.add(d)
                found.append(m.parent)
    return found


def pick_suite(runs: Sequence[Run], suite: Optional[str]) -> List[Run]:
    by_suite: Dict[str, List[Run]] = {}
    for r in runs:
        by_suite.setdefault(r.suite_name, []).append(r)
    if suite is not None:
        if suite not in by_suite:
            raise HistoryError(f"no runs of suite {suite!r} (found: {', '.join(sorted(by_suite))})")
        return by_suite[suite]
    if len(by_suite) > 1:
        names = ", ".join(f"{k} ({len(v)} runs)" for k, v in sorted(by_suite.items()))
        raise HistoryError(f"the runs belong to several suites: {names}; pick one with --suite NAME")
    return list(runs)


def run_commit(run: Run) -> str:
    commit = run.meta.get("commit")
    if not commit and len(run.rows) and "commit" in run.rows:
        commit = run.rows["commit"].iloc[0]
    return str(commit or "unknown")


def run_time(run: Run) -> str:
    return str(meta_facts(run.meta)["started"] or run.run_id)


def git_order(repo: Optional[Path], commits: Sequence[str]) -> Optional[Dict[str, Tuple[int, str]]]:
    """commit -> (position in topological order, subject), or None when git cannot place every commit."""
    if repo is None or not commits or any(c in ("", "unknown") for c in commits):
        return None
    try:
        proc = subprocess.run(["git", "rev-list", "--topo-order", "--reverse", *commits], cwd=repo,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            return None
        order = {c: i for i, c in enumerate(proc.stdout.split())}
        full = subprocess.run(["git", "log", "--no-walk=unsorted", "--format=%H %s", *commits], cwd=repo,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if full.returncode != 0:
        return None
    out: Dict[str, Tuple[int, str]] = {}
    for given, line in zip(commits, full.stdout.splitlines()):
        sha, _, subject = line.partition(" ")
        if sha not in order:
            return None
        out[given] = (order[sha], subject)
    return out if len(out) == len(commits) else None


@dataclass
class Point:
    """Where a run sits on the history axis."""

    position: int
    commit: str
    subject: str = ""


def order_runs(runs: Sequence[Run], repo: Optional[Path]) -> Tuple[Dict[str, Point], str]:
    """run_id -> its place on the x axis, and how the order was found ("git history" or "start time")."""
    commits = sorted({run_commit(r) for r in runs})
    placed = git_order(repo, commits)
    out: Dict[str, Point] = {}
    if placed is not None:
        ranks = {c: i for i, c in enumerate(sorted(commits, key=lambda c: placed[c][0]))}
        for r in runs:
            c = run_commit(r)
            out[r.run_id] = Point(ranks[c], c, placed[c][1])
        return out, "git history"
    # by time: a commit sits where its first run started
    first: Dict[str, str] = {}
    for r in runs:
        c = run_commit(r)
        first[c] = min(first.get(c, run_time(r)), run_time(r))
    ranks = {c: i for i, c in enumerate(sorted(first, key=lambda c: (first[c], c)))}
    for r in runs:
        out[r.run_id] = Point(ranks[run_commit(r)], run_commit(r))
    return out, "start time"


def machine_label(run: Run) -> str:
    fp = machine_fingerprint(run)
    device = fp["gpu"] if fp["gpu"] != "none" else fp.get("cpu", "?")
    host = run.meta.get("host")
    return f"{device} @ {host}" if host else device


# --------------------------------------------------------------------------- the points and the steps


@dataclass
class Series:
    cell: str
    metric: str
    key: str             # row-level keys, e.g. "eval_seq_len=1024", or ""
    machine: str
    family: str
    unit: str
    positions: np.ndarray  # one per commit with a value (sorted)
    values: np.ndarray     # median over that commit's runs
    raw: pd.DataFrame      # position, value per run (the dots)
    steps: List[Step] = field(default_factory=list)


@dataclass
class History:
    suite: str
    order: str
    runs: int
    commits: List[Point]            # by position
    machines: List[str]
    series: List[Series]

    @property
    def steps(self) -> List[Tuple[Series, Step]]:
        return [(s, st) for s in self.series for st in s.steps]


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _key_value(v) -> str:
    """1024.0 -> "1024" (row keys come back as floats from JSON with missing values).  Not the report's
    fmt_param: importing the tables loads the models (torch), seconds the history does not need."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _metric_selected(metric: str, patterns: Optional[Sequence[str]]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(metric, p) for p in patterns)


def points(runs: Sequence[Run], df: pd.DataFrame, placed: Dict[str, Point],
           metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per (run, cell label, metric, row key): the run's value (median of repeats for timing and
    memory, mean otherwise), with its position on the commit axis and its machine."""
    df = df[(df["status"] == "ok") & (df["metric"] != "cell")]
    if "step" in df.columns:
        df = df[df["step"].isna()]                 # learning curves are the report's business
    if not len(df):
        return pd.DataFrame(columns=["run_id", "cell", "metric", "key", "unit", "value", "position", "machine"])
    available = set(df["metric"])
    keep = [m for m in available if not is_summary_of(m, available) and _metric_selected(m, metrics)]
    df = df[df["metric"].isin(keep)].copy()
    labels = cell_labels(df)
    df["cell"] = df["cell_id"].map(labels).fillna(df["cell_id"])
    keys = [k for k in row_key_columns(df) if k != "step"]
    # "eval_seq_len=1024, ..." over the row keys a row has (a key another metric carries is left out)
    df["key"] = [", ".join(f"{k}={_key_value(v)}" for k, v in zip(keys, values) if not _missing(v))
                 for values in zip(*(df[k] for k in keys))] if keys else ""
    grouped = df.groupby(["run_id", "cell", "metric", "key"], sort=False)
    agg = grouped.agg(value_median=("value", "median"), value_mean=("value", "mean"), unit=("unit", "first"))
    agg = agg.reset_index()
    family = {m: classify(m, u).family for m, u in zip(agg["metric"], agg["unit"])}
    agg["family"] = agg["metric"].map(family)
    agg["value"] = np.where(agg["family"].isin(["timing", "memory"]), agg["value_median"], agg["value_mean"])
    machine = {r.run_id: machine_label(r) for r in runs}
    agg["machine"] = agg["run_id"].map(machine)
    agg["position"] = agg["run_id"].map({k: v.position for k, v in placed.items()})
    return agg[["run_id", "cell", "metric", "key", "unit", "family", "value", "position", "machine"]]


def build_history(runs: Sequence[Run], *, rows: Optional[pd.DataFrame] = None, repo: Optional[Path] = None, metrics: Optional[Sequence[str]] = None,
                  alpha: float = 0.01, min_change: float = 0.02, min_size: int = 3) -> History:
    if not runs:
        raise HistoryError("no runs given")
    placed, how = order_runs(runs, repo)
    pts = points(runs, combined_rows(runs) if rows is None else rows, placed, metrics)
    if not len(pts):
        raise HistoryError("the runs hold no finished measurements" + (" of the --metric patterns" if metrics else ""))
    commits: Dict[int, Point] = {}
    for p in placed.values():
        commits.setdefault(p.position, p)
    series: List[Series] = []
    for (cell, metric, key, machine), g in pts.groupby(["cell", "metric", "key", "machine"], sort=True):
        pos, vals = per_commit_medians(g["position"].to_numpy(), g["value"].to_numpy(float))
        if not len(pos):
            continue
        s = Series(cell, metric, key, machine, str(g["family"].iloc[0]), str(g["unit"].iloc[0]), pos, vals,
                   g[["position", "value"]].reset_index(drop=True))
        if len(vals) >= 2 * min_size and np.ptp(vals) > 0:
            s.steps = detect_steps(vals, alpha=alpha, min_change=min_change, min_size=min_size)
        series.append(s)
    suite = runs[0].suite_name
    return History(suite, how, len(runs), [commits[k] for k in sorted(commits)],
                   sorted({machine_label(r) for r in runs}), series)


# --------------------------------------------------------------------------- rendering


def step_commit(history: History, series: Series, step: Step) -> Point:
    return history.commits[int(series.positions[step.index])]


def _commit_text(p: Point) -> str:
    return p.commit[:10] + (f" {p.subject}" if p.subject else "")


def step_rows(history: History) -> List[List[str]]:
    rows = []
    for s, st in history.steps:
        p = step_commit(history, s, st)
        info = classify(s.metric, s.unit)
        better = info.direction != 0 and (st.after - st.before) * info.direction > 0
        worse = info.direction != 0 and not better
        rows.append([_commit_text(p), s.cell, s.metric + (f" ({s.key})" if s.key else ""), s.machine,
                     "regression" if worse else "improvement" if better else "change",
                     f"{st.before:.4g} → {st.after:.4g} {s.unit}".strip(), f"{st.change:+.1%}",
                     f"{st.p_value:.2g}", f"{st.confidence:.1%}"])
    return rows


STEP_HEADER = ["commit", "cell", "metric", "machine", "direction", "before → after", "change", "p", "confidence"]


def figures(history: History, max_metrics: int = 6) -> List[Tuple[str, str, bytes]]:
    """(file stem, title, PNG) per cell and metric family: one panel per metric, one line per machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_panel: Dict[Tuple[str, str], List[Series]] = {}
    for s in history.series:
        by_panel.setdefault((s.cell, s.family), []).append(s)
    out = []
    colors = {m: f"C{i % 10}" for i, m in enumerate(history.machines)}
    ticks = [p.commit[:7] for p in history.commits]
    for n, ((cell, family), group) in enumerate(sorted(by_panel.items())):
        metrics = sorted({(s.metric, s.key) for s in group})[:max_metrics]
        fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.4 * len(metrics)), squeeze=False, sharex=True)
        for ax, (metric, key) in zip(axes[:, 0], metrics):
            panel = [s for s in group if (s.metric, s.key) == (metric, key)]
            unit = panel[0].unit
            for s in panel:
                c = colors.get(s.machine, "k")
                ax.scatter(s.raw["position"], s.raw["value"], s=8, alpha=0.35, color=c)
                ax.plot(s.positions, s.values, "-o", ms=3, lw=1.2, color=c, label=s.machine)
                for st in s.steps:
                    x = s.positions[st.index] - 0.5
                    ax.axvline(x, color="r", ls="--", lw=1)
                    ax.annotate(f"{st.change:+.1%} @ {step_commit(history, s, st).commit[:7]}", (x, 1.0),
                                xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=8, color="r")
            ax.set_ylabel(f"{metric}" + (f"\n{key}" if key else "") + (f" [{unit}]" if unit else ""), fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        step = max(1, len(ticks) // 30)
        axes[-1, 0].set_xticks(range(0, len(ticks), step))
        axes[-1, 0].set_xticklabels(ticks[::step], rotation=90, fontsize=7)
        axes[-1, 0].set_xlabel(f"commit ({history.order})")
        title = f"{cell} — {family}"
        fig.suptitle(title, fontsize=10)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        out.append((f"history_{n:03d}_{family}", title, buf.getvalue()))
    return out


def _md_escape(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(history: History, figs: Sequence[Tuple[str, str, bytes]]) -> str:
    lines = [f"# {history.suite} — history", "",
             f"{history.runs} runs over {len(history.commits)} commits (ordered by {history.order}), "
             f"{len(history.series)} series; machines: {', '.join(history.machines)}.", "",
             "A step is a level change of the per-commit median found by binary segmentation with a rank "
             "statistic; p is a permutation p-value (the best split of shuffled histories as null). Points of "
             "different machines are separate series.", ""]
    rows = step_rows(history)
    if rows:
        lines += [f"## Steps ({len(rows)})", "", "| " + " | ".join(STEP_HEADER) + " |",
                  "|" + "---|" * len(STEP_HEADER)]
        lines += ["| " + " | ".join(_md_escape(v) for v in r) + " |" for r in rows]
    else:
        lines += ["## Steps", "", "No step found in any series."]
    lines += ["", "## Commits", "", "| # | commit |", "|---:|---|"]
    lines += [f"| {p.position} | {_md_escape(_commit_text(p))} |" for p in history.commits]
    lines += ["", "## Trends", ""]
    lines += [f"![{_md_escape(t)}](figures/{stem}.png)" for stem, t, _ in figs]
    return "\n".join(lines) + "\n"


def render_html(history: History, figs: Sequence[Tuple[str, str, bytes]]) -> str:
    from harness.analysis.report.html import CSS, html_table

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(history.suite)} — history</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(history.suite)} — history</h1>",
             f"<p>{history.runs} runs over {len(history.commits)} commits (ordered by {escape(history.order)}), "
             f"{len(history.series)} series; machines: {escape(', '.join(history.machines))}.</p>"]
    rows = step_rows(history)
    parts.append(f"<h2>Steps ({len(rows)})</h2>")
    parts.append(html_table(STEP_HEADER, rows, numeric=("change", "p", "confidence")) if rows
                 else "<p>No step found in any series.</p>")
    parts.append("<h2>Trends</h2>")
    for stem, title, png in figs:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img alt="{escape(title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{escape(title)}</figcaption></figure>")
    parts.append("<h2>Commits</h2>")
    parts.append(html_table(["#", "commit"], [[str(p.position), _commit_text(p)] for p in history.commits]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_history(history: History, out: Path, plots: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    figs = figures(history) if plots else []
    if figs:
        (out / "figures").mkdir(exist_ok=True)
        for stem, _, png in figs:
            (out / "figures" / f"{stem}.png").write_bytes(png)
    (out / "history.md").write_text(render_markdown(history, figs), encoding="utf-8")
    (out / "history.html").write_text(render_html(history, figs), encoding="utf-8")
    return out


def load_light(run_dir: Path) -> Tuple[Run, List[dict]]:
    """A run's meta.json and raw rows, without the per-run DataFrame and suite.yaml parse of
    :func:`load_run` (hundreds of runs: one frame is built for all of them)."""
    import json

    from harness.store.results import read_rows

    meta_path = run_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        rows = read_rows(run_dir / "rows.jsonl") if (run_dir / "rows.jsonl").is_file() else None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{run_dir}: cannot load ({exc})") from None
    if rows is None:   # a parquet-only run: the full reader
        run = load_run(run_dir)
        return run, run.rows.to_dict("records")
    run = Run(path=run_dir, rows=pd.DataFrame(), meta=meta if isinstance(meta, dict) else {})
    if "suite" not in run.meta and rows:
        run.meta["suite"] = rows[0].get("suite")
    run_id = run.run_id
    for r in rows:
        r.setdefault("run_id", run_id)
    return run, rows


def load_history(paths: Sequence[str], suite: Optional[str] = None) -> Tuple[List[Run], pd.DataFrame]:
    """The runs under ``paths`` of one suite, and all their rows as one frame."""
    from harness.analysis.report.runs import normalise_rows
    from harness.store.results import rows_to_frame

    dirs = find_run_dirs(paths)
    if not dirs:
        raise HistoryError(f"no run directories (rows.jsonl) under {', '.join(map(str, paths))}")
    loaded = [load_light(d) for d in dirs]
    runs = pick_suite([r for r, _ in loaded], suite)
    keep = {id(r) for r in runs}
    rows = [row for r, rs in loaded if id(r) in keep for row in rs]
    return runs, normalise_rows(rows_to_frame(rows), "")


def history_command(paths: Sequence[str], *, out: Optional[str] = None, suite: Optional[str] = None,
                    repo: Optional[str] = None, metrics: Optional[Sequence[str]] = None, alpha: float = 0.01,
                    min_change: float = 0.02, plots: bool = True) -> Tuple[History, Path]:
    """Load, order, detect, write; raises HistoryError / RunDirError for the CLI to print (exit 2)."""
    runs, rows = load_history(paths, suite)
    hist = build_history(runs, rows=rows, repo=Path(repo) if repo else Path.cwd(), metrics=metrics, alpha=alpha,
                         min_change=min_change)
    target = Path(out) if out else Path("reports") / hist.suite / "history"
    return hist, write_history(hist, target, plots=plots)


__all__ = ["History", "HistoryError", "RunDirError", "build_history", "history_command", "detect_steps", "describe"]
