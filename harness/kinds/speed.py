"""``kind: speed``: time one pass (fwd | fwd+bwd) of a benchmark target.

Per cell: first the correctness gate (harness/kinds/bench/gate.py; ``gate: false`` turns it off): the target
against its reference on a reduced problem, one ``gate_max_rel_err`` row per tensor and ``gate_passed``; a
target that fails ends the cell ``error`` and is not timed.  Then build the target's inputs once (outside the timed region), ``warmup`` untimed calls,
then ``repeats`` timed calls -> one ``time_ms`` row per repeat, then the derived rows
(``time_ms_median``, ``time_ms_iqr``, ``tokens_per_s``, ``achieved_GBps`` / ``roofline_fraction``
where the target declares its costs), the cell's peak memory (``peak_mem_bytes`` on CUDA,
``peak_rss_bytes`` on CPU), for impl model / layer the state size per sequence (``state_elements``,
``state_bytes``: harness/kinds/state_rows.py) and, on CUDA, the GPU's clocks and temperature at the cell's end.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator

import torch

from harness.kinds.bench import IMPLS
from harness.kinds.bench.config import SpeedConfig, cell_device, model_state_rows
from harness.kinds.bench.device_info import GPU_STATE_METRICS, ceilings, gpu_state_rows, run_meta
from harness.kinds.bench.gate import GATE_METRICS, gate_rows
from harness.kinds.bench.peak_memory import PEAK_METRICS, PeakMemory
from harness.kinds.bench.skips import skip_reason
from harness.kinds.bench.summary import SUMMARY_METRICS, timing_summary_rows
from harness.kinds.bench.timing import make_timer, measure
from harness.cells import Cell, CellContext, make_row
from harness.kinds import KindSpec
from harness.kinds.state_rows import METRICS as STATE_METRICS
from harness.kinds.footprint import bench_bytes


def run_cell(cell: Cell, ctx: CellContext) -> Iterator[Dict[str, Any]]:
    cfg = SpeedConfig.model_validate(cell.params)
    device = cell_device(cfg, ctx)
    torch.manual_seed(cfg.seed)
    impl = IMPLS.get(cfg.impl)
    impl.check_runnable(cfg, device)              # skipped (no CUDA, missing package, ...) before the gate
    if cfg.gate and impl.gate is not None:
        yield from gate_rows(impl, cfg, device)   # raises GateFailed: the cell ends `error`, untimed
    timer = make_timer(device, cfg.l2_flush)      # its flush buffer stays out of the peak
    times = []
    with PeakMemory(device) as peak:
        work = impl.workload(cfg, device)
        for i, ms in enumerate(measure(work.fn, timer, warmup=cfg.warmup, repeats=cfg.repeats,
                                       ctx=ctx, device=device)):
            times.append(ms)
            yield make_row("time_ms", ms, "ms", repeat=i)
    yield from timing_summary_rows(times, work, ceilings(device))
    for key, value in work.info.items():
        yield make_row(key, value, "")
    yield from model_state_rows(cfg)
    yield from peak.rows()
    yield from gpu_state_rows(device)


SPEC = KindSpec(name="speed", config_model=SpeedConfig, run_cell=run_cell,
                skip_reason=skip_reason, run_meta=run_meta,
                metrics=("time_ms", *SUMMARY_METRICS, "n_params", *STATE_METRICS, *PEAK_METRICS, *GPU_STATE_METRICS,
                         *GATE_METRICS),
                estimate_bytes=lambda cell: bench_bytes(SpeedConfig.model_validate(cell.params)))
