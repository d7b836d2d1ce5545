"""Measured vs expected: each ``expect`` entry of a suite next to what the run measured.

An entry is ``{where: {dotted.key: value}, metric, value, source, tolerance?, op?}``.  The rows
matching ``where`` (ok status, that metric) are summarised -- median for timings, mean otherwise
(e.g. over seeds) -- and judged with a rule that the report prints beside the verdict:

* ``op: ==`` (default): ``|measured - expected| <= tol`` matches, ``<= 2 tol`` is close, else misses;
* ``op: >=`` / ``<=``: on the right side matches, within ``tol`` of it is close, else misses.

``tolerance`` is absolute (``0.02``) or relative (``"10%"``); without one, fractions (accuracies:
the suites write them as fractions, 0.998 not 99.8) get 0.01 and everything else 10%.
Learning-curve rows (with a ``step``) are ignored unless ``where`` names a step; when rows carry
several evaluation lengths and ``where`` names none, the training length (``task.seq_len``) is used.
When the matching cells differ in a parameter other than the seed (a report of two runs of one suite
with different ``--set`` values), the entry is judged once per setting, which its ``where`` then names.
A quality number over several cells (seeds) also says how many of them meet the rule on their own.

A ``where`` value may be a list (any of them).  Two keys make relative and per-seed criteria:

* ``than: {key: value}`` -- the entry is about a *margin*: the measured number minus every row that matches
  ``where`` updated with ``than`` (the reference rows) must satisfy ``op value``.  ``{where: {model.arch: mamba,
  model.mixer: s6}, than: {model.mixer: [s4, hyena]}, op: ">=", value: 0.15}`` reads "the Mamba/S6 row is at
  least 15 points above every Mamba LTI row" (for ``>=`` the largest reference counts, for ``<=`` the smallest).
* ``per_seed: true`` -- judged in every seed on its own (the reference rows of the same seed); the entry
  matches only when every seed does, and the note says how many seeds meet it (a mean over seeds can hide
  one that never left its plateau).  The measured value shown is the worst seed's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from harness.analysis.report.metrics import classify, is_fraction_metric
from harness.analysis.report.runs import varying_params


@dataclass
class ExpectResult:
    where: Dict[str, Any]
    metric: str
    expected: Optional[float]
    op: str
    source: str
    rule: str
    measured: Optional[float] = None
    n: int = 0
    unit: str = ""
    verdict: str = "no data"   # matches | close | misses | no data
    note: str = ""


def parse_tolerance(tol: Any, expected: float, metric: str) -> tuple:
    """(absolute tolerance, its description) from an entry's ``tolerance`` (number or "N%")."""
    if tol is None:
        if is_fraction_metric(metric):
            return 0.01, "0.01"
        tol = "10%"
    if isinstance(tol, str):
        text = tol.strip()
        if text.endswith("%"):
            frac = float(text[:-1]) / 100.0
            return abs(expected) * frac, text
        tol = float(text)
    return abs(float(tol)), f"{float(tol):g}"


def column_for(df: pd.DataFrame, key: str) -> Optional[str]:
    """The results column a ``where`` key names: exact, else its last dotted part (flat cells)."""
    if key in df.columns:
        return key
    short = key.rsplit(".", 1)[-1]
    if short in df.columns:
        return short
    return None


def _matches(series: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, (list, tuple)):   # any of these values
        out = pd.Series(False, index=series.index)
        for v in value:
            out |= _matches(series, v)
        return out
    if isinstance(value, float) and math.isnan(value):   # a parameter some cells do not have
        return series.isna()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return series.astype(str) == str(value)
    return pd.to_numeric(series, errors="coerce") == float(value)


def matching_rows(rows: pd.DataFrame, metric: str, where: Dict[str, Any]) -> tuple:
    """(the rows of ``metric`` that match every ``where`` key, None), or (None, the first key with no column)."""
    sel = rows[rows["metric"] == metric] if len(rows) else rows
    for key, value in where.items():
        col = column_for(rows, key)
        if col is None:
            return None, key
        sel = sel[_matches(sel[col], value)]
    return sel, None


def judge(measured: float, expected: float, op: str, tol: float) -> str:
    if op == "==":
        gap = abs(measured - expected)
        return "matches" if gap <= tol else "close" if gap <= 2 * tol else "misses"
    if op == ">=":
        return "matches" if measured >= expected else "close" if measured >= expected - tol else "misses"
    if op == "<=":
        return "matches" if measured <= expected else "close" if measured <= expected + tol else "misses"
    raise ValueError(f"expect op must be one of ==, >=, <= (got {op!r})")


def rule_text(op: str, tol_desc: str) -> str:
    if op == "==":
        return f"|Δ| ≤ {tol_desc} matches, ≤ 2×{tol_desc} close"
    side = "at least" if op == ">=" else "at most"
    return f"{side} the value matches, within {tol_desc} close"


def evaluate(entries: Sequence[Dict[str, Any]], rows: pd.DataFrame) -> List[ExpectResult]:
    """Judge every entry against ``rows`` (the tidy table of one or more runs)."""
    return [res for e in entries or [] if isinstance(e, dict) for res in evaluate_split(e, rows)]


def evaluate_split(entry: Dict[str, Any], rows: pd.DataFrame) -> List[ExpectResult]:
    """One result per setting of the parameters (other than the seed) that the matching cells differ in:
    two runs side by side -- the same suite at lr 1e-3 and at 2e-3 -- are each judged, not averaged into
    a number neither run measured.  Without such parameters, the one result of :func:`evaluate_one`."""
    where = dict(entry.get("where") or {})
    sel, missing = matching_rows(rows, str(entry.get("metric", "")), where)
    if missing is not None:
        return [evaluate_one(entry, rows)]
    named = {column_for(rows, k) for k in where}
    tidy = len(sel) and {"cell_id", "run_id"} <= set(sel.columns)   # a results table, not a hand-made one
    split = [c for c in varying_params(sel) if c not in named] if tidy else []
    if not split:
        return [evaluate_one(entry, rows)]
    settings = [{k: (v.item() if hasattr(v, "item") else v) for k, v in setting.items()}   # numpy -> python
                for setting in sel[split].drop_duplicates().to_dict("records")]
    return [evaluate_one({**entry, "where": {**where, **setting}}, rows) for setting in settings]


def final_rows(sel: pd.DataFrame, where: Dict[str, Any]) -> tuple:
    """(the ok, final rows of ``sel`` -- no curve points, the training length when rows carry several
    evaluation lengths and ``where`` names none --, a note on that choice, the rows that did not end ok)."""
    note = ""
    bad = sel[sel["status"] != "ok"]
    sel = sel[sel["status"] == "ok"]
    if "step" in sel.columns and "step" not in where:
        sel = sel[sel["step"].isna()]
    if "eval_seq_len" in sel.columns and "eval_seq_len" not in where and sel["eval_seq_len"].nunique() > 1:
        train_col = column_for(sel, "task.seq_len")
        if train_col is not None:
            at_train = sel[pd.to_numeric(sel["eval_seq_len"], errors="coerce")
                           == pd.to_numeric(sel[train_col], errors="coerce")]
            if len(at_train):
                sel = at_train
                note = "at the training length"
    return sel, note, bad


def _per_seed(sel: pd.DataFrame) -> Dict[Any, float]:
    """seed -> mean value of ``sel`` in that seed (one key, None, when the rows carry no seed)."""
    seed_col = column_for(sel, "seed")
    values = pd.to_numeric(sel["value"], errors="coerce")
    if seed_col is None:
        finite = values.dropna()
        return {None: float(finite.mean())} if len(finite) else {}
    out = {}
    for seed, v in values.groupby(sel[seed_col].map(str), sort=True):
        v = v.dropna()
        if len(v):
            out[seed] = float(v.mean())
    return out


def _add_note(res: ExpectResult, note: str) -> None:
    if note:
        res.note = (res.note + "; " if res.note else "") + note


def _describe_where(where: Dict[str, Any]) -> str:
    return ", ".join(f"{k} in [{', '.join(map(str, v))}]" if isinstance(v, (list, tuple)) else f"{k}={v}"
                     for k, v in where.items())


def evaluate_one(entry: Dict[str, Any], rows: pd.DataFrame) -> ExpectResult:
    where = dict(entry.get("where") or {})
    metric = str(entry.get("metric", ""))
    op = str(entry.get("op", "==")).strip()
    source = str(entry.get("source", ""))
    than = entry.get("than")
    per_seed = bool(entry.get("per_seed", False))
    try:
        expected = float(entry.get("value"))
    except (TypeError, ValueError):
        return ExpectResult(where, metric, None, op, source, "", note=f"expected value {entry.get('value')!r} is not a number")
    if op not in ("==", ">=", "<="):
        return ExpectResult(where, metric, expected, op, source, "", note=f"unknown op {op!r}: use ==, >= or <=")
    tol, tol_desc = parse_tolerance(entry.get("tolerance"), expected, metric)
    rule = rule_text(op, tol_desc)
    if than:
        rule = f"margin over every row with {_describe_where(than)}: " + rule
    if per_seed:
        rule += "; in every seed"
    res = ExpectResult(where, metric, expected, op, source, rule)
    if is_fraction_metric(metric) and expected > 1.0:
        res.note = "expected accuracy > 1: write accuracies as fractions (0.998, not 99.8)"

    sel, missing = matching_rows(rows, metric, where)
    if missing is not None:
        res.note = f"no column {missing!r} in the results"
        return res
    if not len(sel):
        res.note = res.note or "no rows match"
        return res
    sel, note, bad = final_rows(sel, where)
    _add_note(res, note)
    values = pd.to_numeric(sel["value"], errors="coerce").dropna().to_numpy(float)
    if not len(values):
        statuses = ", ".join(sorted(set(bad["status"]))) if len(bad) else "no finite values"
        _add_note(res, f"cell status: {statuses}")
        return res
    res.unit = str(sel["unit"].iloc[0]) if "unit" in sel.columns else ""
    if than or per_seed:
        return _judge_by_seed(res, entry, rows, sel, tol)
    family = classify(metric, res.unit).family
    res.measured = float(np.median(values) if family == "timing" else np.mean(values))
    res.n = int(len(values))
    res.verdict = judge(res.measured, expected, op, tol)
    if family == "quality" and res.n > 1:   # one value per cell (seed): a mean can hide how many make it
        meeting = sum(judge(float(v), expected, op, tol) == "matches" for v in values)
        _add_note(res, f"{meeting} of {res.n} cells meet it on their own")
    return res


_VERDICT_RANK = {"matches": 0, "close": 1, "misses": 2}


def _judge_by_seed(res: ExpectResult, entry: Dict[str, Any], rows: pd.DataFrame, sel: pd.DataFrame,
                   tol: float) -> ExpectResult:
    """Relative (``than``) and per-seed criteria: one number per seed (or one pooled), worst one shown."""
    op, expected = res.op, float(res.expected)
    mine = _per_seed(sel) if entry.get("per_seed") else {None: float(pd.to_numeric(sel["value"]).mean())}
    if entry.get("than"):
        ref_where = {**res.where, **entry["than"]}
        ref, missing = matching_rows(rows, res.metric, ref_where)
        if missing is not None:
            _add_note(res, f"no column {missing!r} in the results")
            return res
        ref, _, _ = final_rows(ref, ref_where)
        if not len(ref):
            _add_note(res, f"no reference rows match {_describe_where(ref_where)}")
            return res
        # every reference row: per cell (its own mean over repeats), in each seed the hardest one counts
        pick = max if op in (">=", "==") else min
        ref_cells = ref.assign(value=pd.to_numeric(ref["value"], errors="coerce"))
        if entry.get("per_seed"):
            refs = {}
            seed_col = column_for(ref, "seed")
            for seed in mine:
                g = ref_cells if seed is None or seed_col is None else ref_cells[ref_cells[seed_col].map(str) == seed]
                per_cell = g.groupby("cell_id")["value"].mean().dropna() if "cell_id" in g else g["value"].dropna()
                if len(per_cell):
                    refs[seed] = pick(per_cell)
        else:
            # pooled over seeds: each reference row is a setting of the other parameters, its mean over seeds
            axes = varying_params(ref_cells) if {"cell_id", "run_id"} <= set(ref_cells.columns) else []
            per_row = (ref_cells.groupby([ref_cells[a].map(str) for a in axes])["value"].mean() if axes
                       else ref_cells["value"].agg(["mean"])).dropna()
            refs = {None: pick(per_row)} if len(per_row) else {}
        margins = {s: mine[s] - refs[s] for s in mine if s in refs}
        lacking = [s for s in mine if s not in refs]
        if lacking:
            _add_note(res, f"no reference row in seed {', '.join(map(str, lacking))}")
    else:
        margins = mine
    if not margins:
        return res
    verdicts = {s: judge(v, expected, op, tol) for s, v in margins.items()}
    worst = max(margins, key=lambda s: (_VERDICT_RANK[verdicts[s]], -margins[s] if op == ">=" else margins[s]))
    res.measured, res.verdict, res.n = margins[worst], verdicts[worst], len(margins)
    if entry.get("per_seed"):
        meeting = sum(v == "matches" for v in verdicts.values())
        _add_note(res, f"{meeting} of {len(margins)} seeds meet it"
                  + (f" (worst: seed {worst})" if len(margins) > 1 else ""))
    return res


def summary(results: Sequence[ExpectResult]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for r in results:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out


def fmt_value(x: Optional[float]) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"
