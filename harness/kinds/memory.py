"""``kind: memory``: peak memory of one pass (fwd | fwd+bwd | train_step) of a benchmark target.

The baseline is taken before the target builds anything, so parameters, gradients, optimizer state
and activations all count (the Mamba paper's Table 15 measures a whole training step).  ``warmup``
passes first (the optimizer's state exists only after one step), then ``repeats`` measured passes,
each after a reset of the peak: one ``peak_mem_bytes`` row per repeat on CUDA (``peak_rss_bytes`` /
``peak_rss_delta_bytes`` on CPU), plus ``peak_mem_GB`` (the largest repeat, in 1e9 bytes, the unit of
the paper's table) and the target's facts (``n_params``).  Passes with a backward also give
``saved_activation_bytes`` (what the forward kept for the backward, counted on the first measured
repeat: exact and the same on every machine for one code path; see ``harness/kinds/bench/saved_activations``).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Dict, Iterator

import torch

from harness.kinds.bench import IMPLS
from harness.kinds.bench.config import MemoryConfig, cell_device
from harness.kinds.bench.device_info import GPU_STATE_METRICS, gpu_meta, gpu_state_rows
from harness.kinds.bench.skips import skip_reason
from harness.kinds.bench.peak_memory import GB, PEAK_METRICS, PeakMemory
from harness.kinds.bench.saved_activations import SavedActivations
from harness.kinds.bench.timing import synchronize
from harness.cells import Cell, CellContext, make_row
from harness.kinds import KindSpec
from harness.kinds.footprint import bench_bytes


def run_cell(cell: Cell, ctx: CellContext) -> Iterator[Dict[str, Any]]:
    cfg = MemoryConfig.model_validate(cell.params)
    device = cell_device(cfg, ctx)
    torch.manual_seed(cfg.seed)
    synchronize(device)
    baseline = PeakMemory.current_bytes(device)
    work = IMPLS.get(cfg.impl).workload(cfg, device)
    for _ in range(cfg.warmup):
        ctx.check_deadline()
        work.fn()
    peaks = []
    saved = SavedActivations()
    for i in range(cfg.repeats):
        ctx.check_deadline()
        with PeakMemory(device, baseline_bytes=baseline) as peak, (saved if i == 0 else nullcontext()):
            work.fn()
        peaks.append(peak.cell_peak_bytes)
        yield from peak.rows(repeat=i)
    if device.startswith("cuda"):
        yield make_row("peak_mem_GB", max(peaks) / GB, "GB")
    if cfg.pass_ != "fwd" and cfg.repeats:
        yield make_row("saved_activation_bytes", saved.bytes, "bytes")
    for key, value in work.info.items():
        yield make_row(key, value, "")
    yield from gpu_state_rows(device)


SPEC = KindSpec(name="memory", config_model=MemoryConfig, run_cell=run_cell,
                skip_reason=skip_reason, run_meta=gpu_meta,
                metrics=(*PEAK_METRICS, "peak_mem_GB", "saved_activation_bytes", "n_params", *GPU_STATE_METRICS),
                estimate_bytes=lambda cell: bench_bytes(MemoryConfig.model_validate(cell.params)))
