"""Tuned comparisons: each row at its own best hyperparameters, chosen on validation numbers only.

An architecture comparison is fair when every row gets its own best learning rate (the Mamba and MAD
papers sweep lr per model and report the best).  A suite asks for it with a top-level key::

    tune: {over: [train.lr, train.weight_decay], by: val_accuracy, mode: max}

For each setting of the other axes (seeds pooled), every combination of the ``over`` axes is scored by
the mean over seeds of the cells' *last* ``by`` value -- a validation metric, the learning curve's final
point at the training length -- and the best one is kept.  Only then are the result metrics (``accuracy``,
``loss``: final numbers, the ones a paper's table shows) of the chosen setting reported, beside the chosen
values, with mean, sd and n over seeds and how many seeds reached the task's target.  Test numbers never
enter the choice (``tests/test_tuning.py`` changes them and checks the choice stays); unless the cells
were run with ``train.test_set: held_out`` the final numbers are measured on the validation sequences
themselves, and the table says so.  A choice at the
smallest or largest value swept is flagged: the optimum may lie outside the range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from harness.analysis.report.axes import at_training_length
from harness.analysis.report.expect import column_for
from harness.analysis.report.metrics import classify
from harness.analysis.report.runs import varying_params
from harness.analysis.report.tables import MetricTable, fmt, fmt_param, order_key, seed_column


@dataclass
class Tuned:
    """The tuned table of one suite and its warnings."""

    table: Optional[MetricTable]
    warnings: List[str] = field(default_factory=list)


def is_validation_metric(metric: str) -> bool:
    """``val_accuracy``, ``val_loss`` ...: measured on the validation set the training loop evaluates."""
    return metric.startswith("val_") or metric.startswith("valid_") or metric.endswith("_val")


def final_validation(rows: pd.DataFrame, metric: str) -> pd.Series:
    """cell_id -> the cell's last validation value of ``metric`` at the training length."""
    val = rows[(rows["metric"] == metric) & (rows["status"] == "ok")]
    val = val[at_training_length(val)]
    if not len(val):
        return pd.Series(dtype=float)
    if "step" in val.columns and val["step"].notna().any():
        val = val[val["step"].notna()]
        last = pd.to_numeric(val["step"]).groupby(val["cell_id"]).transform("max")
        val = val[pd.to_numeric(val["step"]) == last]
    return pd.to_numeric(val["value"], errors="coerce").groupby(val["cell_id"]).mean().dropna()


def _target_column(df: pd.DataFrame) -> Optional[str]:
    return column_for(df, "train.target_accuracy")


def result_metrics(rows: pd.DataFrame, by: str) -> List[str]:
    """The final quality numbers to report beside the choice (not curve points, not validation metrics)."""
    final = rows[(rows["status"] == "ok")]
    if "step" in final.columns:
        final = final[final["step"].isna()]
    names = sorted({m for m in final["metric"] if classify(m).family == "quality" and not is_validation_metric(m)
                    and not m.startswith("chance_")})   # chance_accuracy: a property of the task, not a result
    return [m for m in names if m != by]


def _edges(chosen: Dict[str, Any], candidates: pd.DataFrame, over: Sequence[str]) -> List[str]:
    """Axes whose chosen value is the smallest or largest swept (numeric axes with >= 2 values)."""
    out = []
    for col in over:
        values = pd.to_numeric(candidates[col], errors="coerce").dropna().unique()
        if len(values) < 2:
            continue
        try:
            v = float(chosen[col])
        except (TypeError, ValueError):
            continue
        if v <= values.min():
            out.append(f"{col}={fmt_param(chosen[col])} is the smallest value swept")
        elif v >= values.max():
            out.append(f"{col}={fmt_param(chosen[col])} is the largest value swept")
    return out


def tune(rows: pd.DataFrame, spec: Dict[str, Any]) -> Tuned:
    """The tuned table for ``spec`` = ``{over, by, mode}`` (see the module docstring)."""
    over_keys = list(spec.get("over") or [])
    by = str(spec.get("by", ""))
    mode = spec.get("mode") or ("min" if classify(by).direction < 0 else "max")
    if not len(rows) or not over_keys:
        return Tuned(None)
    over = [column_for(rows, k) for k in over_keys]
    missing = [k for k, c in zip(over_keys, over) if c is None]
    if missing:
        return Tuned(None, [f"tune: no column {', '.join(missing)} in the results"])
    if not is_validation_metric(by):
        return Tuned(None, [f"tune.by {by!r} is not a validation metric (val_*): the choice would see test numbers"])
    scores = final_validation(rows, by)
    if not len(scores):
        return Tuned(None, [f"tune: no {by} rows to choose by"])
    cells = rows.drop_duplicates("cell_id").set_index("cell_id")
    seed = seed_column(rows)
    others = [c for c in varying_params(rows) if c not in over and c != seed]
    results = result_metrics(rows, by)
    final = rows[(rows["status"] == "ok") & rows["metric"].isin(results)]
    if "step" in final.columns:
        final = final[final["step"].isna()]
    final = final[at_training_length(final)]
    target_col = _target_column(rows)
    out_rows, warnings = [], []
    groups = cells.groupby([cells[c].map(fmt_param) for c in others], sort=False) if others else [((), cells)]
    for key, group in sorted(groups, key=lambda kv: tuple(order_key(v) for v in (kv[0] if isinstance(kv[0], tuple) else (kv[0],)))):
        key = key if isinstance(key, tuple) else (key,)
        cand = group.assign(score=scores.reindex(group.index))
        per_setting = cand.groupby([cand[c].map(str) for c in over], sort=False)["score"].agg(["mean", "std", "count"])
        per_setting = per_setting[per_setting["count"] > 0]
        label = ", ".join(f"{c}={v}" for c, v in zip(others, key)) or "all cells"
        if not len(per_setting):
            warnings.append(f"{label}: no {by} values, nothing to choose")
            continue
        best = per_setting["mean"].idxmax() if mode == "max" else per_setting["mean"].idxmin()
        best = best if isinstance(best, tuple) else (best,)
        chosen_cells = cand[np.logical_and.reduce([cand[c].map(str) == v for c, v in zip(over, best)])]
        chosen = {c: chosen_cells[c].iloc[0] for c in over}
        for edge in _edges(chosen, cand, over):
            warnings.append(f"{label}: {edge}; the best value may lie outside the range")
        row = list(key) + [fmt_param(chosen[c]) for c in over]
        s = per_setting.loc[best if len(over) > 1 else best[0]]
        row += [fmt(s["mean"]), fmt(s["std"]) if s["count"] > 1 else "—", str(int(s["count"]))]
        mine = final[final["cell_id"].isin(chosen_cells.index)]
        for metric in results:
            v = pd.to_numeric(mine[mine["metric"] == metric]["value"], errors="coerce").groupby(
                mine[mine["metric"] == metric]["cell_id"]).mean().dropna()
            row += [fmt(v.mean()) if len(v) else "—", fmt(v.std()) if len(v) > 1 else "—", str(len(v))]
        if target_col is not None and "accuracy" in results:
            acc = mine[mine["metric"] == "accuracy"]
            per_cell = pd.to_numeric(acc["value"], errors="coerce").groupby(acc["cell_id"]).mean()
            target = pd.to_numeric(cells.loc[per_cell.index, target_col], errors="coerce")
            reached = int((per_cell >= target).sum())
            row.append(f"{reached}/{len(per_cell)}" if len(per_cell) else "—")
        out_rows.append(row)
    if results:
        warnings.extend(_same_data_warning(rows))
    cols = others + [f"best {c}" for c in over] + [f"{by} mean", f"{by} sd", "n"]
    for metric in results:
        cols += [f"{metric} mean", f"{metric} sd", f"{metric} n"]
    if target_col is not None and "accuracy" in results:
        cols.append("seeds ≥ target")
    title = (f"tuned: each row at its best {', '.join(over)} by the last {by} ({mode}, mean over seeds); "
             "the result columns are the chosen setting's final numbers")
    return Tuned(MetricTable(title, "", "quality", cols, pd.DataFrame(out_rows, columns=cols)), warnings)


def _same_data_warning(rows: pd.DataFrame) -> List[str]:
    """The task kind measures its final numbers on the validation sequences unless ``train.test_set:
    held_out``: then the tuned rows are judged on the data they were chosen on, which flatters them."""
    col = column_for(rows, "train.test_set")
    if col is not None and (rows[col].dropna().astype(str) == "held_out").all() and rows[col].notna().any():
        return []
    return ["the final numbers come from the validation sequences the choice was made on (train.test_set is not "
            "held_out), so the tuned rows look better than they would on new data; set train.test_set: held_out"]


def tuned_for(runs_suites: Sequence[Dict[str, Any]], rows: pd.DataFrame) -> Tuned:
    """The ``tune:`` of the first suite document that has one (runs of one suite share it)."""
    for suite in runs_suites:
        spec = suite.get("tune") if isinstance(suite, dict) else None
        if spec:
            return tune(rows, spec)
    return Tuned(None)


__all__ = ["Tuned", "tune", "tuned_for", "is_validation_metric", "final_validation"]
