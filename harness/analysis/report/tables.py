"""Summary tables of a run: one per metric, over the parameters that vary between cells.

Repeats (timings) are summarised by median and interquartile range; seeds and everything else by
mean, standard deviation, n and min-max -- the same centre the diff uses -- and a final ``accuracy`` of
cells with a ``train.target_accuracy`` also by how many seeds reached it (:mod:`.seeds`).  Learning-curve points (rows with a
``step``) are left to the figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, List, Optional

import numpy as np
import pandas as pd

from harness.analysis.report.metrics import classify, is_summary_of
from harness.analysis.report.runs import row_key_columns, varying_params
from harness.analysis.report.seeds import seed_stats, target_of
from models.applicability import applies

SEED_COLUMNS = ("seed",)


@dataclass
class MetricTable:
    metric: str
    unit: str
    family: str
    columns: List[str]          # display columns, in order
    frame: pd.DataFrame         # already formatted as strings


def seed_column(df: pd.DataFrame) -> Optional[str]:
    for c in ("seed",) + tuple(c for c in df.columns if c.endswith(".seed")):
        if c in df.columns:
            return c
    return None


def fmt(x: Any) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    if float(x).is_integer() and abs(x) < 1e5:
        return str(int(x))
    return f"{x:.4g}"


def fmt_param(x: Any) -> str:
    if isinstance(x, float) and np.isfinite(x) and x.is_integer():
        return str(int(x))
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    return str(x)


def order_key(v: Any) -> tuple:
    """Sort key: numbers before text, numbers by value."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


#: Shown for a ``model.*`` value that the row's model ignores (a Mamba row's ``model.pos``); distinct from the
#: "—" of a missing value.  Rows that differ only in such a key are the same model and are grouped together.
NOT_APPLICABLE = "n/a"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


@lru_cache(maxsize=None)
def _applies(key: str, arch: Any, mixer: Any, pos: Any) -> bool:
    return applies(key, {"arch": arch, "mixer": mixer} if _missing(pos) else {"arch": arch, "mixer": mixer, "pos": pos})


def model_key_applies(col: str, row: pd.Series) -> bool:
    """False for a ``model.*`` column the row's model ignores (models/applicability.py); True for other
    columns and for rows that do not say which block and mixer they are."""
    arch, mixer = row.get("model.arch"), row.get("model.mixer")
    if not col.startswith("model.") or _missing(arch) or _missing(mixer):
        return True
    return _applies(col[len("model."):], arch, mixer, row.get("model.pos"))


def applicable(df: pd.DataFrame, col: str) -> pd.Series:
    """Per row of ``df``: :func:`model_key_applies` (one look-up per distinct block/mixer/pos, not per row)."""
    if not col.startswith("model.") or "model.arch" not in df.columns or "model.mixer" not in df.columns:
        return pd.Series(True, index=df.index)
    key = col[len("model."):]
    pos = df["model.pos"] if "model.pos" in df.columns else pd.Series(None, index=df.index, dtype=object)
    return pd.Series([True if _missing(a) or _missing(m) else _applies(key, a, m, p)
                      for a, m, p in zip(df["model.arch"], df["model.mixer"], pos)], index=df.index, dtype=bool)


def shown_param(df: pd.DataFrame, col: str) -> pd.Series:
    """``df[col]`` formatted for a table, :data:`NOT_APPLICABLE` where the row's model ignores it."""
    shown = df[col].map(fmt_param)
    return shown.where(applicable(df, col), NOT_APPLICABLE)


#: What a synthetic task's accuracies count, shown beside the unit so a reader knows which one a table holds.
METRIC_MEANING = {"accuracy": "per answer token", "val_accuracy": "per answer token",
                  "seq_accuracy": "per sequence: every answer right",
                  "val_seq_accuracy": "per sequence: every answer right"}


def metric_tables(df: pd.DataFrame, max_rows: int = 400) -> List[MetricTable]:
    ok = df[(df["status"] == "ok") & (df["metric"] != "cell")]
    if "step" in ok.columns:
        ok = ok[ok["step"].isna()]
    if not len(ok):
        return []
    params = varying_params(df)
    extras = [k for k in row_key_columns(df) if k != "step" and k in ok.columns and ok[k].notna().any()]
    tables = []
    available = set(ok["metric"])
    for metric, g in ok.groupby("metric", sort=True):
        if is_summary_of(metric, available):  # time_ms_median beside time_ms: the table shows both
            continue
        unit = str(g["unit"].iloc[0])
        info = classify(metric, unit)
        with_target = metric in TARGET_METRICS and target_of(g) is not None
        keys = params + [k for k in extras if g[k].notna().any()]
        g = g.copy()
        shown = {k: shown_param(g, k) for k in keys}   # before overwriting: needs the raw model columns
        for k in keys:  # group on text (mixed types), order numerically where the axis is numeric
            g[k] = shown[k]
        rows = []
        grouped = list(g.groupby(keys, sort=False, dropna=False)) if keys else [((), g)]
        grouped.sort(key=lambda kv: tuple(order_key(v) for v in (kv[0] if isinstance(kv[0], tuple) else (kv[0],))))
        for key, sub in grouped:
            key = key if isinstance(key, tuple) else (key,)
            vals = pd.to_numeric(sub["value"], errors="coerce").dropna().to_numpy(float)
            if info.family == "timing":
                centre = np.median(vals) if len(vals) else np.nan
                spread = (np.percentile(vals, 75) - np.percentile(vals, 25)) if len(vals) > 1 else np.nan
            else:
                centre = np.mean(vals) if len(vals) else np.nan
                spread = np.std(vals, ddof=1) if len(vals) > 1 else np.nan
            row = list(key) + [fmt(centre), fmt(spread), str(len(vals))]
            if info.family != "timing":   # over seeds: the range too, and how many reached the target
                row.append(f"{fmt(vals.min())}–{fmt(vals.max())}" if len(vals) > 1 else "—")
                if with_target:
                    st = seed_stats(vals, target_of(sub))
                    row.append(st.reached_text() if st is not None and _at_train(sub) else "—")
            rows.append(row)
        centre_name = "median" if info.family == "timing" else "mean"
        spread_name = "IQR" if info.family == "timing" else "sd"
        cols = keys + [centre_name, spread_name, "n"]
        if info.family != "timing":
            cols.append("min–max")
            if with_target:
                cols.append("seeds ≥ target")
        frame = pd.DataFrame(rows[:max_rows], columns=cols)
        shown_unit = "; ".join(x for x in (unit, METRIC_MEANING.get(metric, "")) if x)
        tables.append(MetricTable(metric, shown_unit, info.family, cols, frame))
    return tables


#: Final metrics the task's ``train.target_accuracy`` is about.
TARGET_METRICS = ("accuracy",)


def _at_train(rows: pd.DataFrame) -> bool:
    """Are these rows measured at the training length (the target is about that length)?"""
    if "eval_seq_len" not in rows.columns or rows["eval_seq_len"].isna().all():
        return True
    train = next((c for c in ("task.seq_len", "seq_len") if c in rows.columns), None)
    if train is None:
        return False
    return bool((pd.to_numeric(rows["eval_seq_len"], errors="coerce")
                 == pd.to_numeric(rows[train], errors="coerce")).all())


def status_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cells that did not end ok: their parameters, status and message."""
    bad = df[df["status"] != "ok"]
    if not len(bad):
        return pd.DataFrame(columns=["cell", "status", "message"])
    params = varying_params(df, exclude=())
    out = []
    for cid, g in bad.groupby("cell_id", sort=False):
        first = g.iloc[0]
        label = ", ".join(f"{p}={fmt_param(first[p])}" for p in params) or cid
        msg = g["message"].dropna().astype(str).iloc[0] if "message" in g and g["message"].notna().any() else ""
        out.append([label, str(first["status"]), msg])
    return pd.DataFrame(out, columns=["cell", "status", "message"])
