"""A tiny suite kind "fake" for the harness tests: fast, and told by its params how to end.

``behavior`` picks the ending: ok | error | oom | cuda_oom_text | cpu_oom | memory_error | diverged | skip | timeout | sleep
(sleeps ``sleep_s`` then ends ok) | partial (yields a row, then raises).  Importing this module
registers the kind; the CLI imports it in subprocess tests through ``SSMBENCH_PLUGINS=fake_kind``.
"""
from __future__ import annotations

import time
from typing import Literal, Optional

from pydantic import Field

from harness.cells import CellDiverged, CellSkipped, CellTimeout, make_row
from harness.config_types import PositiveFloat, PositiveInt, StrictModel, registered
from harness.kinds import KINDS, KindSpec
from harness.registry import Registry

FAKE_MIXERS = Registry("mixer")
for _name in ("s4", "s6", "attention", "hyena"):
    FAKE_MIXERS.add(_name, object())


class FakeModel(StrictModel):
    arch: str = "none"
    mixer: registered(FAKE_MIXERS) = "s6"
    d_state: PositiveInt = 16
    d_model: PositiveInt = 8


class FakeConfig(StrictModel):
    model: FakeModel = Field(default_factory=FakeModel)
    seq_len: PositiveInt = 32
    batch: PositiveInt = 2
    behavior: Literal["ok", "error", "oom", "cuda_oom_text", "cpu_oom", "memory_error", "diverged", "skip",
                      "timeout", "sleep", "partial"] = "ok"
    sleep_s: float = 0.0
    repeats: PositiveInt = 1
    timeout_s: Optional[PositiveFloat] = None
    skip_after_oom: bool = False
    needs_bytes: Optional[int] = None  # the kind's size estimate (KindSpec.estimate_bytes)
    device: str = "cpu"
    seed: int = 0


def run_cell(cell, ctx):
    cfg = FakeConfig.model_validate(cell.params)
    if cfg.behavior == "error":
        raise ValueError("boom")
    if cfg.behavior == "oom":
        import torch
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if cfg.behavior == "cuda_oom_text":
        raise RuntimeError("CUDA error: out of memory")
    if cfg.behavior == "cpu_oom":  # what torch's CPU allocator raises
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 12000000000 bytes. Error code 12 (Cannot allocate memory)")
    if cfg.behavior == "memory_error":
        raise MemoryError()
    if cfg.behavior == "diverged":
        raise CellDiverged("loss is nan at step 3")
    if cfg.behavior == "skip":
        raise CellSkipped("not supported here")
    if cfg.behavior == "timeout":
        raise CellTimeout("took too long")
    if cfg.behavior == "sleep":
        end = time.monotonic() + cfg.sleep_s
        while time.monotonic() < end:
            ctx.check_deadline()
            time.sleep(0.01)
    for r in range(cfg.repeats):
        yield make_row("time", 0.001 * cfg.seq_len * (r + 1), "ms", repeat=r)
    yield make_row("accuracy", 0.5 + 0.01 * cfg.seed, "", step=10)
    if cfg.behavior == "partial":
        raise RuntimeError("died after the first rows")


def skip_reason(cell, finished):
    if cell.get("skip_after_oom") and any(status == "oom" for _, status in finished):
        return "an earlier cell ran out of memory"
    return None


SPEC = KindSpec("fake", FakeConfig, run_cell, skip_reason=skip_reason,
                run_meta=lambda device: {"fake_meta": device},
                estimate_bytes=lambda cell: cell.params.get("needs_bytes"))

if "fake" not in KINDS:
    KINDS.add("fake", SPEC, help="test-only kind")
