"""The derived rows of a timed cell: median, IQR, throughput and roofline fraction."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from harness.kinds.bench.costs import floor_ms
from harness.kinds.bench.timing import iqr, median
from harness.kinds.bench.workload import Workload
from harness.cells import make_row

#: the metrics :func:`timing_summary_rows` may write
SUMMARY_METRICS = ("time_ms_median", "time_ms_iqr", "tokens_per_s", "achieved_GBps", "achieved_TFLOPs",
                   "roofline_floor_ms", "roofline_fraction")


def timing_summary_rows(times_ms: Sequence[float], work: Workload,
                        ceilings: Optional[Dict[str, Optional[float]]]) -> List[Dict[str, Any]]:
    """time_ms_median, time_ms_iqr, tokens_per_s, and where the workload declares costs:
    achieved_GBps / achieved_TFLOPs, roofline_floor_ms and roofline_fraction (floor / median,
    with a ``bound`` column naming the binding resource: memory, compute or exp)."""
    if not times_ms:
        return []
    med = median(times_ms)
    rows = [make_row("time_ms_median", med, "ms"),
            make_row("time_ms_iqr", iqr(times_ms), "ms")]
    if med <= 0:
        return rows
    seconds = med / 1e3
    rows.append(make_row("tokens_per_s", work.tokens / seconds, "tokens/s"))
    if work.bytes is not None:
        rows.append(make_row("achieved_GBps", work.bytes / seconds / 1e9, "GB/s", min_bytes=work.bytes))
    if work.flops is not None:
        rows.append(make_row("achieved_TFLOPs", work.flops / seconds / 1e12, "TFLOP/s", flops=work.flops))
    if ceilings:
        floor, bound = floor_ms({"bytes": work.bytes, "flops": work.flops, "exps": work.exps}, ceilings)
        if floor is not None:
            rows.append(make_row("roofline_floor_ms", floor, "ms", bound=bound))
            rows.append(make_row("roofline_fraction", floor / med, "", bound=bound))
    return rows
