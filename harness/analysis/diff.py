"""Noise-aware comparison of two sets of runs: ``ssmbench diff BASE NEW``.

Cells are matched by ``cell_id``; inside a cell, observations are matched by metric and row-level
keys (``eval_seq_len``, a context length, ...).  Numbers derived from others are not judged twice
unless ``--metric`` names them: summaries (``time_ms_median`` beside ``time_ms``) and single-valued
timing metrics (``tokens_per_s``, ``achieved_GBps``) of a cell whose per-repeat times are compared.
Each metric family gets the rule that fits its noise (see :mod:`harness.analysis.report.metrics`):

* **timing** -- a two-sided Mann-Whitney U test on the per-repeat samples of each (cell, metric);
  the p-values of all timing tests of one diff are adjusted with Holm's step-down method, so the
  chance of *any* false alarm among them (the family-wise error rate) is at most ``alpha``.  A
  change is flagged when the ratio of medians (new / base) is outside ``threshold`` *and* the
  adjusted p is below ``alpha``; the percentile-bootstrap interval of the ratio (level ``1 - alpha``,
  per comparison) is shown beside it.  A ratio outside ``threshold`` that the test cannot confirm
  (adjusted p too large, or too few repeats to ever reach ``alpha``: smallest p = 2 / C(n1+n2, n1))
  is "inconclusive", never "unchanged" and never a regression.
* **quality** -- deterministic for fixed seeds on one device (a GPU run only with ``train.deterministic``
  and no ``train.timeout_s``; otherwise expect seed-level noise): any change is reported, a change
  beyond ``quality_tol`` (absolute; 0.01 = one accuracy point) in the bad direction is a regression.
  Cells that do not repeat for a seed (GPU training without ``train.deterministic``) get
  "inconclusive" instead: one sample of a noisy number cannot confirm a change.
* **memory** -- ratio of medians outside ``threshold``.  Allocator and tensor counts (``peak_mem_bytes``,
  ``saved_activation_bytes``, ``state_bytes``) are exact; the process's resident set size
  (``peak_rss*``) is not (allocator caches, page reuse), so with one sample per side a change of it is
  "inconclusive", and with repeats it gets the timing test.
* **info** (``n_params`` and other neutral numbers) -- any change is reported as "changed".
* **status** -- a cell whose status changes (ok -> oom/error/...) is always flagged.
* **missing** -- a cell (or a metric of a cell that is ok on both sides) present in BASE and absent
  from NEW stopped being measured: a regression unless ``allow_missing`` (``--allow-missing``).

Timing and memory depend on the machine: when the runs' GPU/CPU or key versions (torch, triton,
CUDA) differ, those verdicts are withheld unless ``cross_machine`` is set.

A diff that compares nothing raises :class:`DiffError` (the CLI exits 2): no cell of BASE is in NEW,
or a ``--metric`` pattern matches no metric.  A timing cell whose interquartile range exceeds its
median is marked "noisy".
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from harness.analysis.report.metrics import MetricInfo, classify, iqr_exceeds_median, is_summary_of
from harness.analysis.report.runs import (Run, cell_status, combined_rows, meta_facts, row_key_columns,
                                 varying_params)

FAMILIES = ("timing", "quality", "memory", "info")


class DiffError(ValueError):
    """A diff that cannot judge anything (no common cells, a ``--metric`` that matches nothing): one
    paragraph saying why; the CLI prints it and exits 2."""
FAIL_ON = ("regression", "change", "never")
#: Verdicts that are flagged (shown first, and counted by ``--fail-on change``).
FLAGGED = ("regression", "improvement", "changed")
#: Flagged, plus deterministic numbers that moved within their tolerance: shown, and counted by
#: ``--fail-on change`` (identical seeds on one device should give identical numbers).
REPORTED = FLAGGED + ("within tolerance",)
#: Verdicts that say nothing either way: a gate whose comparisons all end so has no teeth.
UNJUDGED = ("not enough data", "no verdict")


@dataclass
class DiffOptions:
    threshold: float = 0.05        # relative, for timing and memory
    alpha: float = 0.01            # significance level of the timing test
    quality_tol: float = 0.01      # absolute, for accuracy / loss
    metrics: Optional[List[str]] = None   # fnmatch patterns; None = all
    cross_machine: bool = False
    include_curves: bool = False   # compare learning-curve points (rows with a ``step``) too
    allow_missing: bool = False    # cells/metrics only in BASE are listed, not counted as regressions
    n_boot: int = 2000
    seed: int = 0


@dataclass
class Comparison:
    cell_id: str
    label: str                     # the cell's varying parameters, for humans
    metric: str
    key: Dict[str, Any]            # row-level keys (eval_seq_len=..., ...)
    family: str
    unit: str
    base_n: int
    new_n: int
    base: Optional[float]          # median (timing, memory) or mean (quality, info)
    new: Optional[float]
    ratio: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    p_value: Optional[float] = None
    p_adjusted: Optional[float] = None  # Holm-adjusted over the timing tests of the diff
    delta: Optional[float] = None
    verdict: str = "unchanged"     # regression | improvement | changed | within tolerance | inconclusive
    #                                | unchanged | not enough data | no verdict
    note: str = ""
    noisy: bool = False            # timing samples whose IQR exceeds their median (on either side)

    @property
    def flagged(self) -> bool:
        return self.verdict in FLAGGED

    @property
    def reported(self) -> bool:
        return self.verdict in REPORTED

    @property
    def decisive(self) -> bool:
        """Could this comparison have failed a gate?  A tested one could (whatever its verdict); an
        untested one only if its rule gave a verdict (not "not enough data", "no verdict", "inconclusive")."""
        return self.p_value is not None or self.verdict not in UNJUDGED + ("inconclusive",)


@dataclass
class StatusChange:
    cell_id: str
    label: str
    base: str
    new: str
    message: str = ""

    @property
    def verdict(self) -> str:
        return "fixed" if self.new == "ok" else "regression"


@dataclass
class DiffResult:
    base_runs: List[Dict[str, Any]]
    new_runs: List[Dict[str, Any]]
    machine_differences: List[str]
    comparisons: List[Comparison] = field(default_factory=list)
    status_changes: List[StatusChange] = field(default_factory=list)
    only_base: List[Tuple[str, str]] = field(default_factory=list)
    only_new: List[Tuple[str, str]] = field(default_factory=list)
    #: (cell label, metric with keys) measured in BASE but not in NEW, for cells ok on both sides
    missing_metrics: List[Tuple[str, str]] = field(default_factory=list)
    compared_cells: int = 0        # cells present on both sides
    timing_tests: int = 0          # timing comparisons that ran a test (the Holm family)
    warnings: List[str] = field(default_factory=list)  # incomplete or truncated runs, files read
    options: DiffOptions = field(default_factory=DiffOptions)
    #: quality per setting with the seeds pooled (harness.analysis.seeds); informative, not gated
    seed_comparisons: List[Any] = field(default_factory=list)
    seed_note: str = ""

    @property
    def timing_withheld(self) -> bool:
        return bool(self.machine_differences) and not self.options.cross_machine

    def gated(self, gate: Sequence[str]) -> List[Comparison]:
        families = set(FAMILIES) if "all" in gate else set(gate)
        return [c for c in self.comparisons if c.family in families]

    @property
    def missing_count(self) -> int:
        """Cells and metrics that vanished from NEW and count as regressions (0 with ``allow_missing``)."""
        return 0 if self.options.allow_missing else len(self.only_base) + len(self.missing_metrics)

    def exit_code(self, fail_on: str = "regression", gate: Sequence[str] = ("all",)) -> int:
        """1 when the ``fail_on`` condition holds for the gated families (status changes and cells or
        metrics missing from NEW always count)."""
        if fail_on == "never":
            return 0
        comps = self.gated(gate)
        if fail_on == "regression":
            bad = any(c.verdict == "regression" for c in comps) or any(
                s.verdict == "regression" for s in self.status_changes) or self.missing_count > 0
        elif fail_on == "change":
            bad = (any(c.reported for c in comps) or bool(self.status_changes) or self.missing_count > 0
                   or bool(self.only_new))
        else:
            raise ValueError(f"fail_on must be one of {FAIL_ON}, got {fail_on!r}")
        return 1 if bad else 0

    def gate_problem(self, gate: Sequence[str] = ("all",)) -> Optional[str]:
        """Why a gate on these families could not fail whatever the numbers were, or None.

        A gate whose families hold no comparison that could have failed it (none of them measured, all
        untestable for want of repeats or withheld across machines: see :attr:`Comparison.decisive`),
        while no status changed and nothing went missing, passed vacuously.
        """
        if self.status_changes or self.missing_count:
            return None
        comps = self.gated(gate)
        if any(c.decisive for c in comps):
            return None
        names = "all families" if "all" in gate else ", ".join(gate)
        found = ", ".join(f"{fam} {n}" for fam, n in sorted(
            {fam: sum(counts.values()) for fam, counts in self.counts_by_family().items()}.items())) or "none"
        if comps:
            why = (f"none of its {len(comps)} comparisons could be tested "
                   f"({', '.join(sorted({c.verdict for c in comps}))}: "
                   + ("the runs come from different machines; pass --cross-machine"
                      if any(c.verdict == "no verdict" for c in comps) else "add repeats") + ")")
        else:
            why = "no metric of these families was compared"
        return (f"the gate ({names}) could not fail: {why}. Comparisons by family: {found}. "
                f"Gate on families the suites measure (--gate), or compare runs that measure them.")

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for c in self.comparisons:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        if self.only_base or self.missing_metrics:
            out["missing"] = len(self.only_base) + len(self.missing_metrics)
        regressed = sum(s.verdict == "regression" for s in self.status_changes)
        if regressed:
            out["status regression"] = regressed
        fixed = len(self.status_changes) - regressed
        if fixed:
            out["status fixed"] = fixed
        return out

    def counts_by_family(self) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {}
        for c in self.comparisons:
            fam = out.setdefault(c.family, {})
            fam[c.verdict] = fam.get(c.verdict, 0) + 1
        return out

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for comp, src in zip(d["comparisons"], self.comparisons):
            comp["flagged"] = src.flagged
        for st, src in zip(d["status_changes"], self.status_changes):
            st["verdict"] = src.verdict
        d["counts"] = self.counts()
        d["counts_by_family"] = self.counts_by_family()
        d["timing_withheld"] = self.timing_withheld
        d["summary"] = summary_line(self)
        return _jsonable(d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# --------------------------------------------------------------------------- statistics


def min_two_sided_p(n1: int, n2: int) -> float:
    """The smallest two-sided Mann-Whitney p-value reachable with samples of these sizes."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def bootstrap_ratio_ci(base: np.ndarray, new: np.ndarray, level: float, n_boot: int,
                       rng: np.random.Generator) -> Tuple[float, float]:
    """Percentile bootstrap interval of median(new) / median(base).

    Each end is the resampled ratio at or outside its cut (no interpolation between neighbours): resamples whose
    base median is 0 give inf (or nan, left out), and an end among them is inf, where interpolating would give
    inf - inf = nan and a numpy warning."""
    bi = rng.integers(0, len(base), size=(n_boot, len(base)))
    ni = rng.integers(0, len(new), size=(n_boot, len(new)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.median(new[ni], axis=1) / np.median(base[bi], axis=1)
    lo = np.nanquantile(ratios, (1 - level) / 2, method="lower")
    hi = np.nanquantile(ratios, 1 - (1 - level) / 2, method="higher")
    return float(lo), float(hi)


def holm_adjust(p_values: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) of m becomes ``max_{j<=i} min(1, (m - j) p_(j))``;
    rejecting where the adjusted p is below ``alpha`` keeps the chance of one or more false rejections
    among the m tests at most ``alpha``, whatever their dependence.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def timing_verdict(ratio: float, p: float, *, threshold: float, alpha: float, direction: int) -> Tuple[str, str]:
    """(verdict, note) of a tested timing comparison: flagged only when the ratio is outside
    ``threshold`` and ``p < alpha``; outside but unconfirmed is inconclusive."""
    outside = abs(ratio - 1.0) > threshold
    significant = p < alpha
    if outside and significant:
        worse = (ratio > 1.0) if direction <= 0 else (ratio < 1.0)
        return ("regression" if worse else "improvement",
                f"ratio {ratio:.3f} outside ±{threshold:.0%}, p={p:.2g} < {alpha:g}")
    if outside:
        return "inconclusive", f"ratio {ratio:.3f} outside ±{threshold:.0%} but not significant (p={p:.2g})"
    return "unchanged", f"within ±{threshold:.0%}" + ("" if significant else f", not significant (p={p:.2g})")


def _mwu_method(b: np.ndarray, n: np.ndarray) -> str:
    """The exact null distribution whenever it applies (no ties; cheap up to 50 a side).  scipy's
    default switches to the normal approximation above 8 samples, whose smallest p is far larger
    (10 vs 10 separated: 1.8e-4 instead of 1.1e-5): Holm over many tests needs the exact one."""
    ties = len(np.unique(np.concatenate([b, n]))) < len(b) + len(n)
    return "exact" if not ties and max(len(b), len(n)) <= 50 else "auto"


def compare_timing(base: Sequence[float], new: Sequence[float], *, threshold: float = 0.05,
                   alpha: float = 0.01, direction: int = -1, n_boot: int = 2000,
                   rng: Optional[np.random.Generator] = None) -> Dict[str, Any]:
    """Verdict on two samples of a noisy measurement, as one test at level ``alpha``.

    Returns ``{verdict, ratio, ci_low, ci_high, p_value, note}``; ``direction`` -1 means lower is
    better (times), +1 higher is better (throughput).  :func:`diff_runs` re-decides the verdicts of
    all tests of a diff with Holm-adjusted p-values (:func:`holm_adjust`, :func:`timing_verdict`).
    """
    from scipy.stats import mannwhitneyu

    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    b, n = b[np.isfinite(b)], n[np.isfinite(n)]
    out: Dict[str, Any] = {"verdict": "not enough data", "ratio": None, "ci_low": None,
                           "ci_high": None, "p_value": None, "note": ""}
    if len(b) and len(n) and np.median(b) != 0:
        out["ratio"] = float(np.median(n) / np.median(b))
    floor = min_two_sided_p(len(b), len(n))
    if len(b) < 2 or len(n) < 2 or floor >= alpha:
        out["note"] = (f"{len(b)} vs {len(n)} samples: the smallest reachable p is {floor:.2g} "
                       f">= alpha {alpha:g}; add repeats")
        if out["ratio"] is not None and abs(out["ratio"] - 1.0) > threshold:
            out["verdict"] = "inconclusive"
            out["note"] = f"ratio {out['ratio']:.3f} outside ±{threshold:.0%}, untestable: " + out["note"]
        return out
    if out["ratio"] is None:
        out["note"] = "base median is zero"
        return out
    rng = rng if rng is not None else np.random.default_rng(0)
    p = float(mannwhitneyu(n, b, alternative="two-sided", method=_mwu_method(b, n)).pvalue)
    lo, hi = bootstrap_ratio_ci(b, n, 1 - alpha, n_boot, rng)
    out.update(p_value=p, ci_low=lo, ci_high=hi)
    out["verdict"], out["note"] = timing_verdict(out["ratio"], p, threshold=threshold, alpha=alpha,
                                                 direction=direction)
    return out


def compare_quality(base: Sequence[float], new: Sequence[float], *, tol: float = 0.01,
                    direction: int = 1) -> Dict[str, Any]:
    """Deterministic numbers: report any change, flag beyond ``tol`` (absolute) by direction."""
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    bv = float(np.mean(b)) if len(b) else math.nan
    nv = float(np.mean(n)) if len(n) else math.nan
    out: Dict[str, Any] = {"verdict": "unchanged", "delta": None, "note": ""}
    if math.isnan(bv) and math.isnan(nv):
        out["note"] = "no finite value on either side"
        return out
    if math.isnan(nv) != math.isnan(bv):
        out["verdict"] = "regression" if math.isnan(nv) else "improvement"
        out["note"] = "value became NaN" if math.isnan(nv) else "value was NaN"
        return out
    delta = nv - bv
    out["delta"] = delta
    if delta == 0.0:
        out["note"] = "identical"
    elif abs(delta) <= tol:
        out["verdict"] = "within tolerance"
        out["note"] = f"changed by {delta:+.4g}, within tolerance {tol:g}"
    elif direction == 0:
        out["verdict"] = "changed"
        out["note"] = f"changed by {delta:+.4g} (beyond {tol:g})"
    else:
        worse = delta * direction < 0
        out["verdict"] = "regression" if worse else "improvement"
        out["note"] = f"{delta:+.4g} beyond tolerance {tol:g}"
    return out


def compare_ratio(base: Sequence[float], new: Sequence[float], *, threshold: float = 0.05,
                  direction: int = -1) -> Dict[str, Any]:
    """Memory-like numbers: median ratio outside ``threshold`` -> regression/improvement."""
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    b, n = b[np.isfinite(b)], n[np.isfinite(n)]
    out: Dict[str, Any] = {"verdict": "unchanged", "ratio": None, "note": ""}
    if not len(b) or not len(n):
        out["verdict"] = "not enough data"
        out["note"] = "no finite value on one side"
        return out
    if np.median(b) == 0:
        same = np.median(n) == 0
        out["verdict"] = "unchanged" if same else "changed"
        out["note"] = "zero on both sides" if same else "was zero"
        return out
    ratio = float(np.median(n) / np.median(b))
    out["ratio"] = ratio
    if abs(ratio - 1.0) > threshold:
        worse = (ratio > 1.0) if direction <= 0 else (ratio < 1.0)
        out["verdict"] = "regression" if worse else "improvement"
        out["note"] = f"ratio {ratio:.3f} outside ±{threshold:.0%}"
    else:
        out["note"] = f"within ±{threshold:.0%}"
    return out


def is_exact_memory(metric: str) -> bool:
    """Allocator/tensor byte counts repeat exactly; the process's resident set size does not."""
    return "rss" not in metric.lower()


def compare_info(base: Sequence[float], new: Sequence[float]) -> Dict[str, Any]:
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    same = len(b) == len(n) and np.allclose(np.sort(b), np.sort(n), rtol=0, atol=0, equal_nan=True)
    return {"verdict": "unchanged" if same else "changed", "note": "" if same else "value changed"}


# --------------------------------------------------------------------------- machines


def machine_fingerprint(run: Run) -> Dict[str, str]:
    """What timing numbers depend on: the device (GPU, else CPU model) and key library versions."""
    facts = meta_facts(run.meta)
    fp = {"gpu": str(facts["gpu"] or "none"), "torch": str(facts["torch"] or "?"),
          "triton": str(facts["triton"] or "?"), "cuda": str(facts["cuda"] or "none")}
    if fp["gpu"] == "none":
        fp["cpu"] = str(facts["cpu"] or "?")
    devices = run.rows["device"].dropna().astype(str).unique() if "device" in run.rows else []
    if len(devices):
        fp["device"] = ",".join(sorted(devices))
    return fp


def machine_differences(base: Sequence[Run], new: Sequence[Run]) -> List[str]:
    """Human lines naming each fingerprint field that differs between (or within) the two sides."""
    def side(runs):
        merged: Dict[str, set] = {}
        for r in runs:
            for k, v in machine_fingerprint(r).items():
                merged.setdefault(k, set()).add(v)
        return merged

    b, n = side(base), side(new)
    lines = []
    for key in sorted(set(b) | set(n)):
        bv, nv = b.get(key, {"?"}), n.get(key, {"?"})
        if bv != nv or len(bv) > 1 or len(nv) > 1:
            lines.append(f"{key}: {' / '.join(sorted(bv))} (base) vs {' / '.join(sorted(nv))} (new)")
    return lines


# --------------------------------------------------------------------------- matching


def cell_labels(df: pd.DataFrame) -> Dict[str, str]:
    """cell_id -> "k=v, k=v" over the parameters that vary between the cells of its suite
    (prefixed with the suite's name when the table holds several suites)."""
    if not len(df):
        return {}
    suites = df["suite"].fillna("").astype(str) if "suite" in df.columns else pd.Series("", index=df.index)
    many = suites.nunique() > 1
    labels: Dict[str, str] = {}
    for suite, part in df.groupby(suites, sort=False):
        varying = varying_params(part, exclude=())
        per_cell = part.drop_duplicates("cell_id").set_index("cell_id")
        for cid, row in per_cell.iterrows():
            parts = [f"{c}={_fmt_param(row[c])}" for c in varying if not _missing(row[c])]
            text = ", ".join(parts) if parts else str(cid)
            labels[str(cid)] = f"{suite}: {text}" if many else text
    return labels


def _missing(v: Any) -> bool:
    try:
        return v is None or (isinstance(v, float) and math.isnan(v))
    except TypeError:
        return False


def _fmt_param(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _select_metrics(metrics: Sequence[str], patterns: Optional[Sequence[str]]) -> List[str]:
    if not patterns:
        return list(metrics)
    return [m for m in metrics if any(fnmatch.fnmatchcase(m, p) for p in patterns)]


def _observations(df: pd.DataFrame, keys: List[str], include_curves: bool) -> pd.DataFrame:
    ok = df[(df["status"] == "ok") & (df["metric"] != "cell")]
    if "step" in ok.columns and not include_curves:
        ok = ok[ok["step"].isna()]
    ok = ok.copy()
    for k in keys:
        if k not in ok.columns:
            ok[k] = np.nan
    return ok


def _key_tuple(values: Sequence[Any]) -> Tuple[Any, ...]:
    return tuple(None if _missing(v) else v for v in values)


def diff_runs(base: Sequence[Run], new: Sequence[Run], options: Optional[DiffOptions] = None) -> DiffResult:
    """Compare two sides (each one or more runs of the same suite) cell by cell.

    Raises :class:`DiffError` when nothing can be compared: no cell of BASE is in NEW, or a
    ``metrics`` pattern matches no metric of the common cells.
    """
    opts = options or DiffOptions()
    rng = np.random.default_rng(opts.seed)
    bdf, ndf = combined_rows(base), combined_rows(new)
    both = pd.concat([bdf, ndf], ignore_index=True, sort=False)
    keys = [k for k in row_key_columns(both) if k != "step" or opts.include_curves]
    if opts.include_curves and "step" in both.columns and "step" not in keys:
        keys.append("step")
    labels = cell_labels(both)
    differences = machine_differences(base, new)
    withhold = bool(differences) and not opts.cross_machine
    result = DiffResult(
        base_runs=[_run_summary(r) for r in base], new_runs=[_run_summary(r) for r in new],
        machine_differences=differences, options=opts,
        warnings=[f"{side}: {note}" for side, runs in (("base", base), ("new", new)) for r in runs for note in r.notes])

    same = {r.path.resolve() for r in base} & {r.path.resolve() for r in new}
    if same:
        result.warnings.append(f"BASE and NEW share {len(same)} run(s) ({', '.join(sorted(str(p) for p in same))}): "
                               "those cells are compared with themselves")
    bcells, ncells = set(bdf["cell_id"]), set(ndf["cell_id"])
    result.only_base = [(c, labels.get(c, c)) for c in sorted(bcells - ncells)]
    result.only_new = [(c, labels.get(c, c)) for c in sorted(ncells - bcells)]
    common = bcells & ncells
    if not common:
        raise DiffError(_nothing_in_common(base, new, bdf, ndf))
    result.compared_cells = len(common)

    bstat, nstat = cell_status(bdf), cell_status(ndf)
    for cid in sorted(common):
        if bstat[cid] != nstat[cid]:
            msg = _first_message(ndf if nstat[cid] != "ok" else bdf, cid)
            result.status_changes.append(StatusChange(cid, labels.get(cid, cid), bstat[cid], nstat[cid], msg))

    bobs = _observations(bdf[bdf["cell_id"].isin(common)], keys, opts.include_curves)
    nobs = _observations(ndf[ndf["cell_id"].isin(common)], keys, opts.include_curves)
    group_cols = ["cell_id", "metric"] + keys
    bgroups = {(_key_tuple(k)): g for k, g in bobs.groupby(group_cols, dropna=False, sort=True)}
    ngroups = {(_key_tuple(k)): g for k, g in nobs.groupby(group_cols, dropna=False, sort=True)}
    metrics_per_cell: Dict[str, set] = {}
    for (cid, metric, *_rest) in list(bgroups) + list(ngroups):
        metrics_per_cell.setdefault(cid, set()).add(metric)

    unrepeatable = _unrepeatable_cells(bdf) | _unrepeatable_cells(ndf)
    all_metrics = sorted({k[1] for k in bgroups} | {k[1] for k in ngroups})
    check_metric_patterns(opts.metrics, all_metrics)
    selected = set(_select_metrics(all_metrics, opts.metrics))
    sampled = _cells_with_sampled_timing(bgroups, ngroups)

    def derived(cid, metric, bg, ng) -> bool:
        """Derived numbers are judged through the samples they come from (unless --metric names them)."""
        if opts.metrics:
            return False
        if is_summary_of(metric, metrics_per_cell.get(cid, set())):
            return True
        return (cid in sampled and len(bg) == 1 and len(ng) == 1
                and classify(metric, str(bg["unit"].iloc[0])).family == "timing")

    both_ok = {cid for cid in common if bstat[cid] == "ok" and nstat[cid] == "ok"}
    for gkey in sorted(set(bgroups) - set(ngroups), key=lambda t: tuple(str(x) for x in t)):
        cid, metric, *rest = gkey
        if cid in both_ok and metric in selected and not derived(cid, metric, bgroups[gkey], bgroups[gkey]):
            where = metric + "".join(f" {k}={_fmt_param(v)}" for k, v in zip(keys, rest) if v is not None)
            result.missing_metrics.append((labels.get(cid, cid), where))

    for gkey in sorted(set(bgroups) & set(ngroups), key=lambda t: tuple(str(x) for x in t)):
        cid, metric, *rest = gkey
        if metric not in selected:
            continue
        bg, ng = bgroups[gkey], ngroups[gkey]
        if derived(cid, metric, bg, ng):
            continue
        unit = str(bg["unit"].iloc[0] or ng["unit"].iloc[0])
        info = classify(metric, unit)
        bvals, nvals = bg["value"].to_numpy(float), ng["value"].to_numpy(float)
        comp = Comparison(cell_id=cid, label=labels.get(cid, cid), metric=metric,
                          key={k: v for k, v in zip(keys, rest) if v is not None}, family=info.family,
                          unit=unit, base_n=len(bvals), new_n=len(nvals),
                          base=_centre(bvals, info), new=_centre(nvals, info))
        _judge(comp, bvals, nvals, info, opts, rng, withhold, unrepeatable=cid in unrepeatable)
        result.comparisons.append(comp)
    result.timing_tests = _holm(result.comparisons, opts)
    result.comparisons.sort(key=lambda c: (c.label, c.metric, tuple(str(v) for v in c.key.values())))
    result.status_changes.sort(key=lambda s: s.label)
    _add_seed_comparisons(result, bdf, ndf, opts)
    return result


def _holm(comps: List[Comparison], opts: DiffOptions) -> int:
    """Re-decide every tested comparison with Holm-adjusted p-values; returns the family size."""
    tested = [c for c in comps if c.p_value is not None and c.ratio is not None]
    for c, adj in zip(tested, holm_adjust([c.p_value for c in tested])):
        c.p_adjusted = adj
        direction = classify(c.metric, c.unit).direction or -1
        c.verdict, note = timing_verdict(c.ratio, adj, threshold=opts.threshold, alpha=opts.alpha,
                                         direction=direction)
        if len(tested) > 1:
            note = note.replace("p=", "Holm p=")
        c.note = "; ".join(filter(None, [note, "noisy: IQR exceeds median" if c.noisy else ""]))
    return len(tested)


def check_metric_patterns(patterns: Optional[Sequence[str]], metrics: Sequence[str],
                          where: str = "of the cells both sides have") -> None:
    """Every ``--metric`` pattern must match a metric of the common cells (a typo compares nothing)."""
    import difflib

    for pattern in patterns or ():
        if any(fnmatch.fnmatchcase(m, pattern) for m in metrics):
            continue
        close = difflib.get_close_matches(pattern, metrics, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(metrics[:25]) + (" ..." if len(metrics) > 25 else "")
        raise DiffError(f"--metric {pattern!r} matches no metric {where}, so it would "
                        f"compare nothing.{hint} Metrics measured: {shown or 'none'}. Patterns are globs "
                        "matched against the whole name ('time_ms', 'acc*').")


def _nothing_in_common(base: Sequence[Run], new: Sequence[Run], bdf: pd.DataFrame, ndf: pd.DataFrame) -> str:
    def side(runs: Sequence[Run], df: pd.DataFrame) -> str:
        suites = ", ".join(sorted({r.suite_name for r in runs})) or "?"
        files = ", ".join(str(r.path / r.source) if r.source else str(r.path) for r in runs)
        return f"{df['cell_id'].nunique()} cells of suite {suites} (read from {files})"

    b, n = side(base, bdf), side(new, ndf)
    if not len(ndf):
        why = "NEW has no rows at all (the run measured nothing or its rows were lost)"
    elif not len(bdf):
        why = "BASE has no rows at all"
    elif {r.suite_name for r in base}.isdisjoint({r.suite_name for r in new}):
        why = "NEW is a run of another suite"
    else:
        why = "the cells' parameters differ (a changed suite or --set), so their cell ids do not match"
    return (f"nothing to compare: no cell of BASE is in NEW; {why}. BASE: {b}. NEW: {n}. "
            "A diff that compares nothing cannot pass a gate: compare runs of the same suite.")


def _add_seed_comparisons(result: DiffResult, bdf: pd.DataFrame, ndf: pd.DataFrame, opts: DiffOptions) -> None:
    """Seed distributions beside the per-cell verdicts (harness.analysis.seeds)."""
    from harness.analysis.seeds import compare_seeds, single_seed_note

    result.seed_comparisons = compare_seeds(bdf, ndf, alpha=opts.alpha, tol=opts.quality_tol, metrics=opts.metrics)
    if not result.seed_comparisons and any(c.family == "quality" for c in result.comparisons):
        result.seed_note = single_seed_note(bdf, ndf)


UNREPEATABLE_NOTE = "GPU training without train.deterministic: one seed differs run to run, so this may be noise"


def _unrepeatable_cells(df: pd.DataFrame) -> set:
    """Task cells trained on a GPU without ``train.deterministic``: the same seed does not give the same
    numbers twice there (float atomics; harness/kinds/training/determinism.py), so a quality change can be noise."""
    if not len(df) or not {"kind", "device", "cell_id"} <= set(df.columns):
        return set()
    task = df[(df["kind"] == "task") & df["device"].astype(str).str.startswith("cuda")]
    if task.empty:
        return set()
    if "train.deterministic" in task.columns:
        repeatable = task["train.deterministic"].map(lambda v: v is True or v == 1.0).astype(bool)
        task = task[~repeatable]
    return set(task["cell_id"])


def _cells_with_sampled_timing(bgroups: Dict[tuple, pd.DataFrame], ngroups: Dict[tuple, pd.DataFrame]) -> set:
    """Cells with a per-repeat timing metric on both sides: their single-valued timing metrics
    (tokens_per_s, achieved_GBps, roofline_fraction, ...) are derived from it and not judged again."""
    out = set()
    for key in set(bgroups) & set(ngroups):
        b, n = bgroups[key], ngroups[key]
        if len(b) > 1 and len(n) > 1 and classify(key[1], str(b["unit"].iloc[0])).family == "timing":
            out.add(key[0])
    return out


def _centre(values: np.ndarray, info: MetricInfo) -> Optional[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    return float(np.median(finite) if info.family in ("timing", "memory") else np.mean(finite))


def _judge(comp: Comparison, b: np.ndarray, n: np.ndarray, info: MetricInfo, opts: DiffOptions,
           rng: np.random.Generator, withhold: bool, unrepeatable: bool = False) -> None:
    if info.family == "timing":
        comp.noisy = iqr_exceeds_median(b) or iqr_exceeds_median(n)
    if info.family in ("timing", "memory") and withhold:
        res = compare_ratio(b, n, threshold=math.inf, direction=info.direction)
        comp.ratio = res["ratio"]
        comp.verdict = "no verdict"
        comp.note = "different machines: pass --cross-machine to judge"
        return
    sampled_memory = info.family == "memory" and not is_exact_memory(comp.metric)
    if info.family == "timing" or (sampled_memory and min(comp.base_n, comp.new_n) > 1):
        res = compare_timing(b, n, threshold=opts.threshold, alpha=opts.alpha,
                             direction=info.direction or -1, n_boot=opts.n_boot, rng=rng)
        comp.ratio, comp.ci_low, comp.ci_high = res["ratio"], res["ci_low"], res["ci_high"]
        comp.p_value = res["p_value"]
    elif info.family == "quality":
        res = compare_quality(b, n, tol=opts.quality_tol, direction=info.direction)
        comp.delta = res["delta"]
        if unrepeatable and res["verdict"] != "unchanged":
            res["note"] = "; ".join(filter(None, [res["note"], UNREPEATABLE_NOTE]))
            if res["verdict"] in FLAGGED:
                res["verdict"] = "inconclusive"
    elif info.family == "memory":
        res = compare_ratio(b, n, threshold=opts.threshold, direction=info.direction or -1)
        comp.ratio = res["ratio"]
        if sampled_memory and res["verdict"] in FLAGGED:
            res["verdict"] = "inconclusive"
            res["note"] += "; one sample of the resident set size (noisy): add repeats to test it"
    else:
        res = compare_info(b, n)
        if comp.base is not None and comp.new is not None:
            comp.delta = comp.new - comp.base
    comp.verdict = res["verdict"]
    comp.note = "; ".join(filter(None, [res["note"], "noisy: IQR exceeds median" if comp.noisy else ""]))


def _first_message(df: pd.DataFrame, cid: str) -> str:
    rows = df[(df["cell_id"] == cid) & (df["status"] != "ok")]
    if "message" in rows.columns:
        msgs = rows["message"].dropna().astype(str)
        if len(msgs):
            return msgs.iloc[0]
    return ""


def _run_summary(run: Run) -> Dict[str, Any]:
    m = run.meta
    commit = m.get("commit") or (run.rows["commit"].iloc[0] if len(run.rows) else "")
    return {"run_id": run.run_id, "suite": run.suite_name, "commit": str(commit or ""),
            "dirty": bool(m.get("dirty", False)), "path": str(run.path),
            "machine": machine_fingerprint(run)}


# --------------------------------------------------------------------------- rendering


#: Units that only name what is counted: left out beside the number.
_SILENT_UNITS = {"fraction", "params", "steps", "count", "1"}


def _num(x: Optional[float], unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    ax = abs(x)
    if float(x).is_integer() and ax < 1e7:
        s = str(int(x))
    elif ax != 0 and (ax >= 1e5 or ax < 1e-3):
        s = f"{x:.3g}"
    elif ax >= 100:
        s = f"{x:.1f}"
    else:
        s = f"{x:.4g}"
    return s if unit in _SILENT_UNITS else f"{s} {unit}".strip()


def _change(c: Comparison) -> str:
    if c.family == "quality" or (c.family == "info" and c.ratio is None):
        return "—" if c.delta is None else f"{c.delta:+.4g}"
    return "—" if c.ratio is None else f"×{c.ratio:.3f}"


def _interval(c: Comparison) -> str:
    if c.ci_low is None:
        return "—"
    return f"[{c.ci_low:.3f}, {c.ci_high:.3f}]"


def _p(c: Comparison) -> str:
    """The p the verdict used: Holm-adjusted when the comparison was tested."""
    p = c.p_adjusted if c.p_adjusted is not None else c.p_value
    return "—" if p is None else f"{p:.2g}"


def _where(c: Comparison) -> str:
    return c.metric + ("" if not c.key else " (" + ", ".join(f"{k}={_fmt_param(v)}" for k, v in c.key.items()) + ")")


def _headline(res: DiffResult) -> str:
    counts = res.counts()
    order = ["status regression", "regression", "missing", "improvement", "changed", "within tolerance",
             "inconclusive", "status fixed", "not enough data", "no verdict", "unchanged"]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return ", ".join(parts) if parts else "no metric compared"


def summary_line(res: DiffResult) -> str:
    """How much was compared, then the verdict counts: a log reader sees at once whether the gate had teeth."""
    n_metrics = len({c.metric for c in res.comparisons})
    of = f" of {res.compared_cells + len(res.only_base)}" if res.only_base else ""
    return (f"compared {res.compared_cells}{of} cells, {len(res.comparisons)} metric values "
            f"({n_metrics} metrics): {_headline(res)}")


def rules_line(res: DiffResult) -> str:
    o = res.options
    tests = (f"Holm over the {res.timing_tests} timing tests of this diff (family-wise alpha {o.alpha:g})"
             if res.timing_tests > 1 else f"alpha {o.alpha:g}")
    missing = ("cells/metrics missing from new are listed only (--allow-missing)" if o.allow_missing
               else "cells/metrics missing from new count as regressions")
    return (f"timing flagged when the median ratio is outside ±{o.threshold:.0%} and the Mann-Whitney p < "
            f"alpha, {tests}; quality beyond ±{o.quality_tol:g} (absolute); memory beyond ±{o.threshold:.0%} "
            f"(one-sample RSS: inconclusive); status changes always; {missing}")


def _by_family(res: DiffResult) -> str:
    parts = []
    for fam in FAMILIES:
        counts = res.counts_by_family().get(fam)
        if counts:
            inner = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            parts.append(f"{fam}: {inner}")
    return "; ".join(parts)


def _side(runs: List[Dict[str, Any]]) -> str:
    return ", ".join(f"{r['run_id']} ({r['commit'][:10]}{'-dirty' if r['dirty'] else ''})" for r in runs)


_SEVERITY = {"regression": 0, "changed": 1, "improvement": 2, "within tolerance": 3, "inconclusive": 4}


def _interesting(res: DiffResult) -> List[Comparison]:
    """Reported and inconclusive comparisons, worst first."""
    return sorted((c for c in res.comparisons if c.verdict in _SEVERITY), key=lambda c: _SEVERITY[c.verdict])


def _missing_lines(res: DiffResult, limit: int) -> List[Tuple[str, str]]:
    """(title, items) of what BASE measured and NEW did not."""
    how = "listed only, --allow-missing" if res.options.allow_missing else "counted as regressions"
    out = []
    if res.only_base:
        cells = [l for _, l in res.only_base]
        out.append((f"missing in new ({len(cells)} cells, {how})",
                    "; ".join(cells[:limit]) + (" ..." if len(cells) > limit else "")))
    if res.missing_metrics:
        items = [f"{label}: {where}" for label, where in res.missing_metrics]
        out.append((f"metrics missing in new ({len(items)}, {how})",
                    "; ".join(items[:limit]) + (" ..." if len(items) > limit else "")))
    if res.only_new:
        cells = [l for _, l in res.only_new]
        out.append((f"only in new ({len(cells)} cells, not compared)",
                    "; ".join(cells[:limit]) + (" ..." if len(cells) > limit else "")))
    return out


def format_text(res: DiffResult, verbose: bool = False) -> str:
    lines = [f"base: {_side(res.base_runs)}", f"new:  {_side(res.new_runs)}"]
    if res.machine_differences:
        lines.append("different machines: " + "; ".join(res.machine_differences))
        lines.append("  timing/memory verdicts " + ("given anyway (--cross-machine)" if res.options.cross_machine
                                                     else "withheld (pass --cross-machine to judge)"))
    for w in res.warnings:
        lines.append(f"warning: {w}")
    lines.append(f"result: {summary_line(res)}")
    if res.comparisons:
        lines.append(f"by family: {_by_family(res)}")
    lines.append(f"rules: {rules_line(res)}")
    if res.status_changes:
        lines.append("")
        lines.append("status changes:")
        for s in res.status_changes:
            lines.append(f"  [{s.verdict}] {s.label}: {s.base} -> {s.new}" + (f"  ({s.message})" if s.message else ""))
    shown = res.comparisons if verbose else _interesting(res)
    if shown:
        header = ("verdict", "cell", "metric", "base", "new", "change", "interval", "p (Holm)", "note")
        table = [header] + [(c.verdict, c.label, _where(c), _num(c.base, c.unit), _num(c.new, c.unit),
                             _change(c), _interval(c), _p(c), c.note) for c in shown]
        widths = [max(len(str(r[i])) for r in table) for i in range(len(header) - 1)]
        lines.append("")
        for r in table:
            lines.append("  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths)) + "  " + str(r[-1]))
    from harness.analysis.seeds import format_seeds_text
    lines += format_seeds_text(res.seed_comparisons, res.seed_note)
    for title, items in _missing_lines(res, 20):
        lines.append("")
        lines.append(f"{title}: {items}")
    return "\n".join(lines) + "\n"


def _md_cell(x: Any) -> str:
    from harness.analysis.report.markdown import md_escape
    return md_escape(str(x))


def _md_table(comps: List[Comparison]) -> List[str]:
    out = ["| verdict | cell | metric | base | new | change | interval | p (Holm) | note |",
           "|---|---|---|---:|---:|---:|---|---:|---|"]
    icon = {"regression": "🔴 regression", "improvement": "🟢 improvement", "changed": "🟡 changed",
            "inconclusive": "⚪ inconclusive"}
    for c in comps:
        out.append("| " + " | ".join(_md_cell(v) for v in (
            icon.get(c.verdict, c.verdict), c.label, _where(c), _num(c.base, c.unit), _num(c.new, c.unit),
            _change(c), _interval(c), _p(c), c.note)) + " |")
    return out


def format_markdown(res: DiffResult) -> str:
    """A pull-request comment: headline, machine warning, flagged table, the rest folded."""
    suites = sorted({r["suite"] for r in res.base_runs + res.new_runs})
    lines = [f"### ssmbench diff — {_md_cell(', '.join(suites))}", "",
             f"**{_md_cell(summary_line(res))}**", "",
             f"- base: {_md_cell(_side(res.base_runs))}", f"- new: {_md_cell(_side(res.new_runs))}",
             f"- by family: {_md_cell(_by_family(res) or 'nothing compared')}",
             f"- rules: {_md_cell(rules_line(res))}"]
    if res.warnings:
        lines += ["", "> [!WARNING]"] + [f"> {_md_cell(w)}  " for w in res.warnings]
    if res.machine_differences:
        lines += ["", "> [!WARNING]", "> The runs come from different machines or versions: "
                  + _md_cell("; ".join(res.machine_differences)) + ".",
                  "> Timing and memory verdicts are " + ("given anyway (`--cross-machine`)."
                                                         if res.options.cross_machine else
                                                         "withheld (pass `--cross-machine` to judge them).")]
    if res.status_changes:
        lines += ["", "#### Status changes", "", "| verdict | cell | base | new | message |", "|---|---|---|---|---|"]
        for s in res.status_changes:
            lines.append("| " + " | ".join(_md_cell(v) for v in (
                "🔴 regression" if s.verdict == "regression" else "🟢 fixed", s.label, s.base, s.new,
                s.message)) + " |")
    flagged = _interesting(res)
    if flagged:
        lines += ["", "#### Changes", ""] + _md_table(flagged)
    if res.comparisons:
        lines += ["", f"<details><summary>All {len(res.comparisons)} comparisons</summary>", ""]
        lines += _md_table(res.comparisons) + ["", "</details>"]
    from harness.analysis.seeds import format_seeds_markdown
    lines += format_seeds_markdown(res.seed_comparisons, res.seed_note)
    for title, items in _missing_lines(res, 30):
        lines += ["", f"**{_md_cell(title[0].upper() + title[1:])}**: {_md_cell(items)}"]
    return "\n".join(lines) + "\n"


def format_json(res: DiffResult) -> str:
    return json.dumps(res.to_dict(), indent=2, default=str) + "\n"


FORMATTERS = {"text": format_text, "md": format_markdown, "json": format_json}
