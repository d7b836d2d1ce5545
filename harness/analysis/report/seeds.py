"""What a group of seeds says: mean, spread, n, and how many seeds reached the task's target.

One seed is one draw: the selective-copying runs gave H3/S6 13% in one seed and 99% in two others
(reports/gpu/README.md), so a table cell shows its spread (sd and min-max) and n beside the mean, and for
task cells how many seeds reached the target accuracy the cells trained towards (``train.target_accuracy``,
the early-stop threshold) -- "2/3 ≥ 0.99" says what a mean of 0.71 hides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from harness.analysis.report.expect import column_for

TARGET_KEY = "train.target_accuracy"


@dataclass
class SeedStats:
    mean: float
    sd: float        # NaN with one value
    lo: float
    hi: float
    n: int
    reached: Optional[int] = None    # seeds at or above the target (None: no target known)
    target: Optional[float] = None

    def spread_text(self, scale: float = 1.0, digits: int = 4) -> str:
        if self.n < 2:
            return "—"
        return f"{self.lo * scale:.{digits}g}–{self.hi * scale:.{digits}g}"

    def reached_text(self) -> str:
        if self.reached is None or self.target is None:
            return "—"
        return f"{self.reached}/{self.n} ≥ {self.target:g}"


def seed_stats(values, target: Optional[float] = None) -> Optional[SeedStats]:
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    if not len(v):
        return None
    reached = int((v >= target).sum()) if target is not None else None
    return SeedStats(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), float(v.min()),
                     float(v.max()), int(len(v)), reached, target)


def target_of(rows: pd.DataFrame) -> Optional[float]:
    """The one ``train.target_accuracy`` of these rows (None when absent or when the cells differ in it)."""
    col = column_for(rows, TARGET_KEY)
    if col is None or col not in rows.columns:
        return None
    values = pd.to_numeric(rows[col], errors="coerce").dropna().unique()
    return float(values[0]) if len(values) == 1 else None


def per_cell_values(rows: pd.DataFrame) -> pd.Series:
    """One value per cell (its mean over repeats): a seed counts once however many rows it has."""
    if "cell_id" not in rows.columns:
        return pd.to_numeric(rows["value"], errors="coerce").dropna()
    return pd.to_numeric(rows["value"], errors="coerce").groupby(rows["cell_id"]).mean().dropna()
