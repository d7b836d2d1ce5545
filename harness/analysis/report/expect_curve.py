"""Would any number of training steps have met a task suite's expectations?

The ``expect`` entries on final accuracy, judged again along the learning curve: after each evaluated
step, every entry against the validation accuracy of its cells at the training length (or at the entry's
evaluation length, where the curve tracks it).

Why: a time budget fixes how many steps each cell gets, and the synthetic tasks' verdicts depend on it.
On the H200 (2026-12-02, quick selective copying at L 1024 under MPS) the LTI rows passed 70% at 9K steps
while none/S6 first reached 90% at 15K, so no budget met all 8 entries; a final table cannot show that,
this one does (and shows the window of budgets that works, when there is one).

Rules: the budgets are the evaluated steps and each cell's final step (where its final accuracy was
measured); at a budget a cell counts with its latest evaluation at or before it.  A cell that stopped
earlier because it reached ``train.target_accuracy`` keeps its last value (at that budget it would have
stopped too); a cell that stopped for its time budget or step cap has no value past its last step, and an
entry over it is "not reached" at later budgets.
An entry on another evaluation length (``eval_seq_len`` in its ``where``, Table 11's 16x) is judged on the
curve at that length when the cells track it (``train.curve_seq_lens``), else left out; so are entries on
other metrics.  Over several seeds an entry is judged on their mean,
as in the final table.  When the matching cells differ in a parameter besides the seed (two runs at two
lrs), one table per setting.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from harness.analysis.report import expect as expect_mod
from harness.analysis.report.axes import at_training_length, numeric
from harness.analysis.report.tables import MetricTable, fmt, fmt_param

#: final metric -> the learning-curve metric it is judged on
CURVE_METRIC = {"accuracy": "val_accuracy", "seq_accuracy": "val_seq_accuracy"}
REACHED_TARGET = "reached train.target_accuracy"


def _at_length(rows: pd.DataFrame, eval_len: Optional[float]) -> pd.Series:
    """Mask of the rows at the training length (``eval_len`` None or equal to it), else at ``eval_len``."""
    train = numeric(rows["task.seq_len"]) if "task.seq_len" in rows.columns else pd.Series(float("nan"), rows.index)
    if eval_len is None or (train == eval_len).all():
        return at_training_length(rows)
    return numeric(rows["eval_seq_len"]) == eval_len if "eval_seq_len" in rows.columns else rows["cell_id"].isna()


def _curves(rows: pd.DataFrame, metric: str, eval_len: Optional[float] = None) -> Dict[str, pd.Series]:
    """cell_id -> its curve (value indexed by step, ascending) of final ``metric`` at the training length (or
    at ``eval_len``): the validation curve, ending with the final evaluation at the number of steps the cell
    took.  Cells with no curve point at that length are left out (a final value alone is no curve)."""
    if "step" not in rows.columns:
        return {}
    ok = (rows["status"] == "ok") & _at_length(rows, eval_len)
    curve = rows[ok & (rows["metric"] == CURVE_METRIC[metric]) & rows["step"].notna()]
    if not len(curve):
        return {}
    final = rows[ok & (rows["metric"] == metric) & rows["step"].isna()].drop_duplicates("cell_id")
    steps = rows[(rows["metric"] == "steps") & (rows["status"] == "ok")].drop_duplicates("cell_id")
    final = final.assign(step=final["cell_id"].map(steps.set_index("cell_id")["value"])).dropna(subset=["step"])
    out = {}
    final = final[final["cell_id"].isin(set(curve["cell_id"]))]
    for cid, g in pd.concat([curve, final]).groupby("cell_id", sort=False):
        c = pd.Series(numeric(g["value"]).to_numpy(float), index=numeric(g["step"]).to_numpy(float))
        out[cid] = c[~c.index.duplicated(keep="last")].sort_index()
    return out


def _stopped_at_target(rows: pd.DataFrame) -> set:
    if "message" not in rows.columns:
        return set()
    steps = rows[(rows["metric"] == "steps") & rows["message"].notna()]
    return set(steps[steps["message"].astype(str).str.startswith(REACHED_TARGET)]["cell_id"])


def _value_at(curve: pd.Series, step: float, kept: bool) -> Optional[float]:
    """The cell's accuracy as last measured once it had trained ``step`` steps: its latest evaluation at or
    before ``step``; past its last step, its last value if it stopped at its target, else None."""
    if not len(curve) or step < curve.index[0]:
        return None
    if step > curve.index[-1]:
        return float(curve.iloc[-1]) if kept else None
    return float(curve[curve.index <= step].iloc[-1])


def _label(where: Dict[str, Any]) -> str:
    return "/".join(fmt_param(v) for v in where.values()) or "all cells"


def _entry_groups(entries: Sequence[Dict[str, Any]], rows: pd.DataFrame) -> Dict[Tuple, List[Tuple[str, Dict]]]:
    """Curve-judgeable entries as (label, entry with its ``where`` as evaluate_split resolves it), grouped
    by the setting that split added (an empty tuple when nothing split)."""
    groups: Dict[Tuple, List[Tuple[str, Dict]]] = {}
    for entry in entries or []:
        if not isinstance(entry, dict) or str(entry.get("metric")) not in CURVE_METRIC:
            continue
        if "step" in (entry.get("where") or {}) or entry.get("than"):
            continue   # a margin over other rows (``than``) is judged on final numbers only
        base = dict(entry.get("where") or {})
        for res in expect_mod.evaluate_split(entry, rows):
            if res.expected is None or res.op not in ("==", ">=", "<="):
                continue
            setting = tuple((k, v) for k, v in res.where.items() if k not in base)
            groups.setdefault(setting, []).append((_label(base), {**entry, "where": res.where}))
    return groups


def curve_expectations(entries: Sequence[Dict[str, Any]], rows: pd.DataFrame,
                       max_rows: int = 40) -> List[MetricTable]:
    """One table per setting: for each evaluated step, how many entries the run would meet had
    training stopped there, which miss (with their values) and which cells had not got there."""
    tables = []
    stopped = _stopped_at_target(rows)
    for setting, group in _entry_groups(entries, rows).items():
        judged = []   # (label, cell_id -> curve, expected, op, tol)
        for label, e in group:
            metric = str(e["metric"])
            sel, missing = expect_mod.matching_rows(rows, metric, e["where"])
            if missing is not None or sel is None or not len(sel):
                continue
            eval_len = e["where"].get("eval_seq_len")
            curves = _curves(rows[rows["cell_id"].isin(set(sel["cell_id"]))], metric,
                             None if eval_len is None else float(eval_len))
            if not curves:
                continue
            expected = float(e["value"])
            tol, _ = expect_mod.parse_tolerance(e.get("tolerance"), expected, metric)
            judged.append((label, curves, expected, str(e.get("op", "==")).strip(), tol))
        if not judged:
            continue
        steps = sorted({s for _, curves, *_ in judged for c in curves.values() for s in c.index})
        if len(steps) > max_rows:   # every k-th evaluation, and always the last
            k = -(-len(steps) // max_rows)
            steps = steps[::k] + ([steps[-1]] if (len(steps) - 1) % k else [])
        out, best = [], (-1, [])
        for step in steps:
            met, misses, unreached = 0, [], []
            for label, curves, expected, op, tol in judged:
                values = [_value_at(c, step, cid in stopped) for cid, c in curves.items()]
                if any(v is None for v in values):
                    unreached.append(label)
                    continue
                mean = sum(values) / len(values)
                verdict = expect_mod.judge(mean, expected, op, tol)
                met += verdict == "matches"
                if verdict != "matches":
                    misses.append(f"{label} {100 * mean:.1f}%" + (" (close)" if verdict == "close" else ""))
            out.append([fmt(step), f"{met} of {len(judged)}", "; ".join(misses) or "—",
                        "; ".join(unreached) or "—"])
            if met > best[0]:
                best = (met, [fmt(step)])
            elif met == best[0]:
                best[1].append(fmt(step))
        cols = ["steps", "entries met", "missed (value)", "not reached (training ended before)"]
        where = f" ({', '.join(f'{k}={fmt_param(v)}' for k, v in setting)})" if setting else ""
        shown = ", ".join(best[1][:6]) + (", …" if len(best[1]) > 6 else "")
        title = (f"expectations along the training curve{where}: validation accuracy (at the training length, or at "
                 f"an entry's eval_seq_len) had training stopped after each number of steps; most met: {best[0]} of "
                 f"{len(judged)}, at {shown}")
        tables.append(MetricTable(title, "", "quality", cols, pd.DataFrame(out, columns=cols)))
    return tables
