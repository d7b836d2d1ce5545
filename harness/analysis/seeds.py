"""Seed distributions in a diff: does the *model* differ, or only one draw of it?

``ssmbench diff`` matches cells by ``cell_id``, and the seed is part of a cell, so a quality number is
compared seed by seed: with deterministic training that says "this seed changed", not "the model got worse".
Here the cells that differ only by their seed are pooled per side and the two sets of per-seed values are
compared with an exact two-sided permutation test on the difference of means (all relabellings when they
are few, else 20,000 random ones).  What the seeds can support is said plainly:

* several seeds per side: ``p`` and the difference of means; "differs" only when ``p < alpha`` and the
  difference is beyond the quality tolerance.  The smallest reachable p is ``2 / C(n1 + n2, n1)``
  (2 vs 2 seeds: 0.33, 3 vs 3: 0.1, 4 vs 4: 0.029), so too few seeds give "not enough seeds", never a verdict.
* one seed on a side: no test; the note puts the change beside the other side's seed-to-seed spread.

These comparisons inform; they do not change the diff's exit code (the per-cell verdicts do that).
"""
from __future__ import annotations

import fnmatch
import itertools
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from harness.analysis.report.metrics import classify
from harness.analysis.report.runs import row_key_columns, varying_params
from harness.analysis.report.tables import fmt_param, seed_column


@dataclass
class SeedComparison:
    label: str                 # the setting, seed left out
    metric: str
    key: Dict[str, Any]        # row-level keys (eval_seq_len=...)
    base_n: int
    new_n: int
    base_mean: float
    new_mean: float
    base_sd: Optional[float]
    new_sd: Optional[float]
    delta: float
    p_value: Optional[float]
    p_floor: float
    verdict: str               # differs | no evidence | not enough seeds | one seed
    note: str = ""


def min_p(n1: int, n2: int) -> float:
    return min(1.0, 2.0 / math.comb(n1 + n2, n1)) if n1 and n2 else 1.0


def permutation_p(a: Sequence[float], b: Sequence[float], n_random: int = 20000, seed: int = 0) -> float:
    """Two-sided p of |mean(b) - mean(a)| under random relabelling (exact when the relabellings are few)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    n, k = len(pooled), len(a)
    observed = abs(b.mean() - a.mean())
    total = pooled.sum()
    if math.comb(n, k) <= n_random:
        idx = np.array(list(itertools.combinations(range(n), k)))
        sums_a = pooled[idx].sum(axis=1)
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.broadcast_to(np.arange(n), (n_random, n)), axis=1)[:, :k]
        sums_a = pooled[perms].sum(axis=1)
    diffs = np.abs((total - sums_a) / (n - k) - sums_a / k)
    return float(np.mean(diffs >= observed - 1e-12))


def _final_quality(df: pd.DataFrame, metrics: Optional[Sequence[str]]) -> pd.DataFrame:
    ok = df[(df["status"] == "ok") & (df["metric"] != "cell")]
    if "step" in ok.columns:
        ok = ok[ok["step"].isna()]
    names = [m for m in ok["metric"].unique() if classify(m).family == "quality"
             and (not metrics or any(fnmatch.fnmatchcase(m, p) for p in metrics))]
    return ok[ok["metric"].isin(names)]


def compare_seeds(base: pd.DataFrame, new: pd.DataFrame, *, alpha: float = 0.01, tol: float = 0.01,
                  metrics: Optional[Sequence[str]] = None) -> List[SeedComparison]:
    """One comparison per (setting without the seed, quality metric, row key) present on both sides with
    more than one seed on at least one side."""
    b, n = _final_quality(base, metrics), _final_quality(new, metrics)
    if not len(b) or not len(n):
        return []
    both = pd.concat([b, n], ignore_index=True, sort=False)
    seed = seed_column(both)
    if seed is None:
        return []
    params = [c for c in varying_params(both) if c != seed]
    keys = sorted({k for side in (b, n) for k in row_key_columns(side) if k != "step" and k in both.columns})
    both["_side"] = ["base"] * len(b) + ["new"] * len(n)
    both["_label"] = (both[params].apply(lambda col: col.name + "=" + col.map(fmt_param)).agg(", ".join, axis=1)
                      if params else "all cells")
    both["value"] = pd.to_numeric(both["value"], errors="coerce")
    group_cols = ["_label", "metric"] + keys
    out: List[SeedComparison] = []
    for gkey, g in both.groupby(group_cols, dropna=False, sort=True):
        label, metric, *rest = gkey
        per_seed = g.groupby(["_side", g[seed].map(str)])["value"].mean().dropna()
        sides = {s: per_seed[s].to_numpy(float) for s in ("base", "new") if s in per_seed.index.get_level_values(0)}
        if len(sides) < 2 or max(len(v) for v in sides.values()) < 2:
            continue
        out.append(_compare(label, metric, {k: v for k, v in zip(keys, rest) if not _missing(v)},
                            sides["base"], sides["new"], alpha, tol))
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _compare(label: str, metric: str, key: Dict[str, Any], a: np.ndarray, b: np.ndarray, alpha: float,
             tol: float) -> SeedComparison:
    sd = lambda v: float(v.std(ddof=1)) if len(v) > 1 else None  # noqa: E731
    comp = SeedComparison(label, metric, key, len(a), len(b), float(a.mean()), float(b.mean()), sd(a), sd(b),
                          float(b.mean() - a.mean()), None, min_p(len(a), len(b)), "no evidence")
    if min(len(a), len(b)) < 2:
        spread = comp.base_sd if len(a) > 1 else comp.new_sd
        other = "base" if len(a) > 1 else "new"
        within = abs(comp.delta) <= 2 * spread
        comp.verdict = "one seed"
        comp.note = (f"one seed on a side is one draw: the change {comp.delta:+.4g} is "
                     f"{'within' if within else 'beyond'} twice the {other} side's seed sd ({spread:.3g}); "
                     f"run >= 4 seeds per side for a test at p < 0.05")
        return comp
    if comp.p_floor >= alpha:
        comp.verdict = "not enough seeds"
        comp.note = (f"{len(a)} vs {len(b)} seeds: the smallest reachable p is {comp.p_floor:.2g} >= alpha "
                     f"{alpha:g}")
        comp.p_value = permutation_p(a, b)
        return comp
    comp.p_value = permutation_p(a, b)
    if comp.p_value < alpha and abs(comp.delta) > tol:
        comp.verdict = "differs"
        comp.note = f"permutation p={comp.p_value:.2g} < {alpha:g}, |Δ| > {tol:g}"
    else:
        comp.note = f"permutation p={comp.p_value:.2g}" + ("" if abs(comp.delta) > tol else f", |Δ| ≤ {tol:g}")
    return comp


def single_seed_note(base: pd.DataFrame, new: pd.DataFrame) -> str:
    """A line for diffs whose quality numbers all come from one seed per setting (the common CI case)."""
    b, n = _final_quality(base, None), _final_quality(new, None)
    if not len(b) or not len(n):
        return ""
    return ("quality numbers come from one seed per setting: a change says that seed's result changed, not the "
            "model's; with 4 seeds per side a permutation test can reach p < 0.05")


def _fmt(x: Optional[float]) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4g}"


def seed_rows(comps: Sequence[SeedComparison]) -> List[List[str]]:
    return [[c.verdict, c.label, c.metric + ("" if not c.key else " (" + ", ".join(
        f"{k}={fmt_param(v)}" for k, v in c.key.items()) + ")"),
        f"{_fmt(c.base_mean)} ± {_fmt(c.base_sd)} (n={c.base_n})", f"{_fmt(c.new_mean)} ± {_fmt(c.new_sd)} (n={c.new_n})",
        f"{c.delta:+.4g}", _fmt(c.p_value), c.note] for c in comps]


SEED_HEADER = ["verdict", "setting", "metric", "base (mean ± sd, n seeds)", "new", "Δ mean", "p", "note"]


def format_seeds_text(comps: Sequence[SeedComparison], note: str = "") -> List[str]:
    if not comps:
        return [f"seeds: {note}"] if note else []
    rows = [SEED_HEADER] + seed_rows(comps)
    widths = [max(len(r[i]) for r in rows) for i in range(len(SEED_HEADER) - 1)]
    lines = ["", "seed distributions (cells differing only by seed, pooled per side; informative, not gated):"]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return lines


def format_seeds_markdown(comps: Sequence[SeedComparison], note: str = "") -> List[str]:
    from harness.analysis.report.markdown import md_table

    if not comps:
        return ["", f"_{note}_"] if note else []
    return ["", "#### Seed distributions", "",
            "Cells differing only by seed, pooled per side; exact permutation test on the difference of means "
            "(informative, not gated).", ""] + md_table(SEED_HEADER, seed_rows(comps))
