"""Step detection in a metric's history: where (at which commit) did its level move, by how much, how surely.

The input is one value per commit in commit order (the median of that commit's runs, so one noisy run
cannot make a step).  The test is binary segmentation with a rank statistic:

* For every split ``k`` of a segment (at least ``min_size`` points each side) the standardised
  Mann-Whitney statistic of "left vs right" is computed from the ranks (a cumulative sum, so all
  splits together cost O(n)); its largest absolute value is the test statistic.  The step's position is
  the split with the least absolute deviation from the two sides' medians (the rank maximum leans
  towards the middle of the segment).
* Its p-value comes from a permutation test: the segment's ranks are shuffled ``n_perm`` times and the
  largest statistic over all splits recomputed each time (vectorised), so the p-value accounts for
  having picked the best split -- pure noise gives p roughly uniform, not small.
* A candidate is a step when ``p < alpha / (1 + 2 * steps found so far)`` and the medians on either side differ by at least
  ``min_change`` (relative); the search then recurses into both sides (a second step elsewhere).

Ranks make the test insensitive to outliers and to the scale of the metric.  The size reported is the
ratio of the medians after / before (and their difference); "confidence" is ``1 - p``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np


@dataclass
class Step:
    index: int            # first position of the new level
    before: float         # median of the segment before it
    after: float          # median of the segment after it
    p_value: float

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else float("inf")

    @property
    def change(self) -> float:
        """Relative change of the median (0.08 = 8% higher)."""
        return self.ratio - 1.0

    @property
    def confidence(self) -> float:
        return 1.0 - self.p_value


def _split_statistics(ranks: np.ndarray, min_size: int) -> np.ndarray:
    """|standardised rank-sum| of left vs right for each split k in [min_size, n - min_size] (last axis).

    ``ranks`` is (..., n); the result is (..., number of splits).
    """
    n = ranks.shape[-1]
    k = np.arange(min_size, n - min_size + 1)
    left = np.cumsum(ranks, axis=-1)[..., k - 1]
    expected = k * (n + 1) / 2.0
    sd = np.sqrt(k * (n - k) * (n + 1) / 12.0)
    return np.abs(left - expected) / sd


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = np.bincount(inverse, weights=ranks)
        ranks = sums[inverse] / counts[inverse]
    return ranks


def best_split(values: np.ndarray, *, min_size: int, n_perm: int, rng: np.random.Generator):
    """(split index, permutation p-value) of the strongest level change in ``values``, or None if too short."""
    n = len(values)
    if n < 2 * min_size:
        return None
    ranks = _ranks(values)
    stats = _split_statistics(ranks, min_size)
    observed = stats.max()
    perms = rng.permuted(np.broadcast_to(ranks, (n_perm, n)), axis=1)
    null_max = _split_statistics(perms, min_size).max(axis=1)
    p = (1.0 + np.sum(null_max >= observed - 1e-12)) / (1.0 + n_perm)
    return _l1_location(values, min_size), float(p)


def _l1_location(values: np.ndarray, min_size: int) -> int:
    """The split minimising the absolute deviations from each side's median.  The rank statistic decides
    *whether* there is a step; its maximum is biased towards the middle of the segment (its null variance
    is not flat), so *where* is taken from this cost instead."""
    n = len(values)
    costs = []
    for k in range(min_size, n - min_size + 1):
        left, right = values[:k], values[k:]
        costs.append(np.abs(left - np.median(left)).sum() + np.abs(right - np.median(right)).sum())
    return min_size + int(np.argmin(costs))


def detect_steps(values: Sequence[float], *, alpha: float = 0.01, min_change: float = 0.02, min_size: int = 3,
                 n_perm: int = 999, seed: int = 0, max_steps: int = 5) -> List[Step]:
    """The level changes of ``values`` (one per commit, in commit order), in order of position.

    Non-finite values are not allowed (drop them and keep the positions yourself).  ``alpha`` is the
    significance level of each permutation test; ``min_change`` the smallest relative move of the
    median that counts (a significant 0.1% step is real but not worth a line in a CI summary).
    """
    y = np.asarray(values, dtype=float)
    if not np.isfinite(y).all():
        raise ValueError("detect_steps: values must be finite")
    rng = np.random.default_rng(seed)
    found: List[Step] = []
    segments = [(0, len(y))]
    while segments and len(found) < max_steps:
        lo, hi = segments.pop(0)
        res = best_split(y[lo:hi], min_size=min_size, n_perm=n_perm, rng=rng)
        if res is None:
            continue
        k, p = res
        before, after = float(np.median(y[lo:lo + k])), float(np.median(y[lo + k:hi]))
        scale = abs(before) if before else max(abs(after), 1e-300)
        # each accepted step opens two more tests: share alpha among them (Bonferroni over the tests
        # so far) so that a real step does not bring spurious neighbours with it
        if p >= alpha / (1 + 2 * len(found)) or abs(after - before) / scale < min_change:
            continue
        found.append(Step(lo + k, before, after, p))
        segments += [(lo, lo + k), (lo + k, hi)]
    return sorted(found, key=lambda s: s.index)


def per_commit_medians(positions: Sequence[int], values: Sequence[float]) -> tuple:
    """(sorted distinct positions, median value at each): several runs at one commit count once."""
    pos = np.asarray(positions)
    val = np.asarray(values, dtype=float)
    keep = np.isfinite(val)
    pos, val = pos[keep], val[keep]
    if not len(pos):
        return np.array([], dtype=int), np.array([], dtype=float)
    order = np.argsort(pos, kind="mergesort")
    pos, val = pos[order], val[order]
    uniq, start = np.unique(pos, return_index=True)
    meds = np.array([np.median(chunk) for chunk in np.split(val, start[1:])])
    return uniq, meds


def describe(step: Step, unit: Optional[str] = None) -> str:
    unit = f" {unit}" if unit else ""
    return (f"{step.before:.4g}{unit} -> {step.after:.4g}{unit} ({step.change:+.1%}), "
            f"p={step.p_value:.2g}, confidence {step.confidence:.1%}")
