"""What a metric means for comparisons: its family (timing / quality / memory / info) and direction.

The diff treats families differently: timings are noisy and need repeats and a significance test,
quality numbers (accuracy, loss) are deterministic for fixed seeds on one device (on a GPU only
with ``train.deterministic``: harness/kinds/training/determinism.py) and get an absolute tolerance, memory is
compared by ratio, and ``info`` metrics (``n_params``, ``state_bytes``) are only reported when they change.  The direction says which way is a regression.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

TIMING_UNITS = {"ns", "us", "µs", "ms", "s", "sec", "tokens/s", "tok/s", "gb/s", "gbps", "1/s"}
MEMORY_UNITS = {"b", "bytes", "kb", "mb", "gb", "kib", "mib", "gib"}

_HIGHER_BETTER = re.compile(r"(accuracy|acc$|_acc_|tokens_per_s|per_s$|gbps|tflops|throughput|"
                            r"roofline_fraction|speedup)", re.I)
_LOWER_BETTER = re.compile(r"(loss|perplexity|ppl|time|_ms|_s$|latency|mem|rss|bytes|_iqr$)", re.I)
_QUALITY = re.compile(r"(accuracy|acc$|loss|perplexity|ppl|bpc|bits_per)", re.I)
_TIMING = re.compile(r"(time|_ms|_s$|latency|per_s$|tokens_per_s|gbps|tflops|roofline_fraction|"
                     r"throughput)", re.I)
_MEMORY = re.compile(r"(mem|rss|bytes)", re.I)
#: Facts of the configuration, whatever their unit: the state one sequence carries (harness/kinds/state_rows.py)
#: and the parameter count change only when the model does, so a diff reports them, never as a regression.
INFO_METRICS = {"n_params", "state_elements", "state_bytes"}
#: Summaries the speed kind derives from per-repeat rows; the diff tests the raw samples instead.
SUMMARY_SUFFIXES = ("_median", "_iqr", "_mean", "_std", "_p10", "_p90", "_min", "_max")


@dataclass(frozen=True)
class MetricInfo:
    name: str
    family: str      # timing | quality | memory | info
    direction: int   # +1 higher is better, -1 lower is better, 0 neutral

    def worse(self, delta: float) -> bool:
        """Is a change of ``delta`` (new - base, or log ratio) in the bad direction?"""
        return self.direction != 0 and delta * self.direction < 0


def classify(metric: str, unit: str = "") -> MetricInfo:
    """Family and direction of ``metric`` from its name and unit (names win over units)."""
    u = (unit or "").strip().lower()
    if metric == "cell" or metric in INFO_METRICS:
        return MetricInfo(metric, "info", 0)
    if _QUALITY.search(metric):
        family = "quality"
    elif _MEMORY.search(metric) or u in MEMORY_UNITS:
        family = "memory"
    elif _TIMING.search(metric) or u in TIMING_UNITS:
        family = "timing"
    else:
        family = "info"
    if family == "info":
        direction = 0
    elif _HIGHER_BETTER.search(metric):
        direction = +1
    elif _LOWER_BETTER.search(metric) or family in ("timing", "memory"):
        direction = -1
    else:
        direction = 0
    return MetricInfo(metric, family, direction)


def is_summary_of(metric: str, available: set) -> bool:
    """``time_ms_median`` when ``time_ms`` is also present: a derived summary, not a new observation."""
    for suffix in SUMMARY_SUFFIXES:
        if metric.endswith(suffix) and metric[: -len(suffix)] in available:
            return True
    return False


def is_fraction_metric(metric: str) -> bool:
    """Accuracies are fractions in [0, 1] (the suites' convention)."""
    return bool(re.search(r"accuracy|acc$|fraction", metric, re.I))


def iqr_exceeds_median(values: Sequence[float]) -> bool:
    """A timing sample too noisy to read: its interquartile range is larger than its median."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return False
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return bool(q3 - q1 > abs(med))
