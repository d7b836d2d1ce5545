"""The one table a reader wants first: the headline metric laid out like the papers' tables.

speed / memory / decode: median of the headline metric, rows = the swept length (or batch),
columns = impl (one table per pass); failed cells show their status (``oom``, ``timeout``).
task: final accuracy at the training length (mean over seeds, ± sd), rows = the grid's first axis,
columns = the others -- the layout of the Mamba paper's Table 1; then, per cell, when training got
going: the first evaluation step at which validation accuracy reached 50% and 90%.  S6 rows sit at
chance for a random number of steps before they learn (reports/gpu/README.md), so a final number
alone does not say whether a row was slow or unable.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import pandas as pd

from harness.analysis.report.axes import (HEADLINE_METRICS, at_training_length, facet_column, final_accuracy, numeric,
                                 series_columns, series_label, x_column)
from harness.analysis.report.runs import varying_params
from harness.analysis.report.seeds import per_cell_values, seed_stats, target_of
from harness.analysis.report.tables import (NOT_APPLICABLE, MetricTable, fmt, fmt_param, model_key_applies, order_key,
                                   seed_column, shown_param)

#: validation accuracies whose first crossing the milestones table reports
MILESTONES = (0.5, 0.9)
#: the milestones table also gives the mean and range of the last LAST_K evaluations: at a constant lr a
#: curve can swing several points between evaluations (none/S6 at L 1024 on the H200: 94.5, 91.3, 95.4%
#: 1K steps apart), so one final number is one draw of a wobbling curve
LAST_K = 3


def _scale_bytes(values: pd.Series) -> tuple:
    top = float(np.nanmax(values)) if len(values) else 0.0
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if top >= size:
            return size, unit
    return 1, "bytes"


def _pivot(rows: pd.DataFrame, failed: pd.DataFrame, x: Optional[str], series: List[str], title: str,
           unit: str, family: str, scale: float = 1.0) -> Optional[MetricTable]:
    if not len(rows) and not len(failed):
        return None
    index_name = x or "cells"
    cells = {}
    for frame, is_ok in ((rows, True), (failed, False)):
        if not len(frame):
            continue
        frame = frame.assign(_s=series_label(frame, series),
                             _x=frame[x].map(fmt_param) if x else "all")
        for (xv, sv), g in frame.groupby(["_x", "_s"], sort=False):
            if is_ok:
                cells[(xv, sv)] = fmt(np.median(numeric(g["value"]).dropna()) / scale)
            else:
                cells.setdefault((xv, sv), str(g["status"].iloc[0]))
    xs = sorted({k[0] for k in cells}, key=lambda v: (numeric(pd.Series([v])).iloc[0], v))
    cols = sorted({k[1] for k in cells})
    table = [[xv] + [cells.get((xv, c), "—") for c in cols] for xv in xs]
    frame = pd.DataFrame(table, columns=[index_name] + cols)
    return MetricTable(title, unit, family, list(frame.columns), frame)


def bench_summary(kind: str, df: pd.DataFrame) -> List[MetricTable]:
    metric = next((m for m in HEADLINE_METRICS[kind] if (df["metric"] == m).any()), None)
    if metric is None:
        return []
    x = x_column(kind, df)
    facet = facet_column(df)
    series = series_columns(df, x, facet)
    ok = df[(df["status"] == "ok") & (df["metric"] == metric)]
    failed = df[df["status"] != "ok"].drop_duplicates("cell_id")
    unit = str(ok["unit"].iloc[0]) if len(ok) else ""
    scale = 1.0
    if unit == "bytes" or metric.endswith("_bytes"):
        scale, unit = _scale_bytes(numeric(ok["value"]))
    out = []
    facets = sorted(df[facet].dropna().astype(str).unique()) if facet else [None]
    for fv in facets:
        part_ok = ok if fv is None else ok[ok[facet].astype(str) == fv]
        part_failed = failed if fv is None else failed[failed[facet].astype(str) == fv]
        title = f"{metric} (median)" + (f", {facet} = {fv}" if fv is not None else "")
        t = _pivot(part_ok, part_failed, x, series, title, unit, "timing" if kind != "memory" else "memory", scale)
        if t is not None:
            out.append(t)
    return out


def task_summary(df: pd.DataFrame) -> List[MetricTable]:
    acc = final_accuracy(df)
    axes_ = varying_params(df)
    if not len(acc) or not axes_:
        return []
    rows_key, col_keys = axes_[0], axes_[1:]

    def col_label(frame: pd.DataFrame) -> pd.Series:
        if len(col_keys) == 1:  # the axis name goes in the corner: "model.arch \ model.mixer"
            return shown_param(frame, col_keys[0])
        return series_label(frame, col_keys) if col_keys else pd.Series("accuracy", index=frame.index)

    acc = acc.assign(_r=shown_param(acc, rows_key), _c=col_label(acc), _v=numeric(acc["value"]))
    cells = {}
    for (r, c), g in acc.groupby(["_r", "_c"], sort=False):
        st = seed_stats(per_cell_values(g), target_of(g))
        if st is None:
            continue
        text = f"{100 * st.mean:.1f}%"
        if st.n > 1:   # one seed is one draw: show the spread and how many seeds reached the target
            text += f" ± {100 * st.sd:.1f} (n={st.n}" + (f", {st.reached}/{st.n} ≥ {100 * st.target:g}%" if
                                                          st.reached is not None else "") + ")"
        cells[(r, c)] = text
    failed = df[df["status"] != "ok"].drop_duplicates("cell_id")
    if len(failed):
        failed = failed.assign(_r=shown_param(failed, rows_key), _c=col_label(failed))
        for _, f in failed.iterrows():
            cells.setdefault((f["_r"], f["_c"]), str(f["status"]))
    rs = sorted({k[0] for k in cells})
    cs = sorted({k[1] for k in cells})
    corner = f"{rows_key} \\ {col_keys[0]}" if len(col_keys) == 1 else rows_key
    frame = pd.DataFrame([[r] + [cells.get((r, c), "—") for c in cs] for r in rs], columns=[corner] + cs)
    title = ("final accuracy per answer token (at the training length; mean ± sd over seeds, n seeds, how many "
             "reached train.target_accuracy)")
    return [MetricTable(title, "", "quality", list(frame.columns), frame)]


def task_milestones(df: pd.DataFrame, max_rows: int = 200) -> List[MetricTable]:
    """Per cell: steps taken, the first evaluation step with val_accuracy >= each of MILESTONES at the
    training length ("never" when it did not get there), the last curve value, and the mean and range of
    the last LAST_K curve values."""
    if "step" not in df.columns:
        return []
    curve = df[(df["status"] == "ok") & (df["metric"] == "val_accuracy") & df["step"].notna()]
    curve = curve[at_training_length(curve)]  # extra curve lengths carry eval_seq_len; the training one may too
    if not len(curve):
        return []
    labels = varying_params(df)
    seed = seed_column(df)
    keys = labels + ([seed] if seed and df.drop_duplicates("cell_id")[seed].nunique() > 1 else [])
    steps_taken = df[(df["metric"] == "steps") & (df["status"] == "ok")].set_index("cell_id")["value"]
    rows = []
    for cell_id, g in curve.groupby("cell_id", sort=False):
        g = g.assign(_step=numeric(g["step"]), _v=numeric(g["value"])).sort_values("_step")
        first = g.iloc[0]
        row = [fmt_param(first[k]) if model_key_applies(k, first) else NOT_APPLICABLE for k in keys]
        row.append(fmt(steps_taken.get(cell_id, g["_step"].max())))
        for m in MILESTONES:
            hit = g[g["_v"] >= m]
            row.append(fmt(hit["_step"].iloc[0]) if len(hit) else "never")
        row.append(f"{100 * g['_v'].iloc[-1]:.1f}%")
        tail = 100 * g["_v"].iloc[-LAST_K:]
        row.append(f"{tail.mean():.1f}% ({tail.min():.1f}–{tail.max():.1f})")
        rows.append(row)
    rows.sort(key=lambda r: tuple(order_key(v) for v in r[:len(keys)]))
    cols = (keys + ["steps"] + [f"step at >= {round(100 * m)}%" for m in MILESTONES]
            + ["last val accuracy", f"last {LAST_K} val, mean (range)"])
    frame = pd.DataFrame(rows[:max_rows], columns=cols)
    title = ("when training got going (first evaluation at or above each validation accuracy per answer token, "
             "training length)")
    return [MetricTable(title, "", "quality", cols, frame)]


def summary_tables(kind: str, df: pd.DataFrame) -> List[MetricTable]:
    """The headline table(s) for a suite of ``kind``; none for a kind without one."""
    if not len(df):
        return []
    if kind in HEADLINE_METRICS:
        return bench_summary(kind, df)
    if kind == "task":
        return task_summary(df) + task_milestones(df)
    return []
