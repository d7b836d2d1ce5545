"""Stand-ins for the torch.cuda functions the harness's GPU paths call, so those paths and their fallbacks
run on the CPU (tests/test_cuda_fallbacks.py).

:class:`FakeCuda` patches streams, device contexts, synchronize, CUDA graphs (capture may be told to fail,
at entry or from inside the captured code), CUDA events (a settable elapsed time) and the allocator's
counters (``allocate``/``free`` move ``memory_allocated`` and its high-water mark).  A fake graph cannot
record kernels: what ``replay`` does is given by the test (``on_replay``), typically the captured function
run again into the same output tensors, which is what a real replay computes.
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional

import torch


class FakeStream:
    def __init__(self, *args, **kwargs):
        self.waited: List["FakeStream"] = []

    def wait_stream(self, other):
        self.waited.append(other)


class FakeEvent:
    def __init__(self, cuda: "FakeCuda", enable_timing: bool = False):
        self.cuda, self.recorded_at = cuda, None

    def record(self, stream=None):
        self.recorded_at = self.cuda.clock_ms
        self.cuda.log.append("event.record")

    def synchronize(self):
        self.cuda.log.append("event.synchronize")

    def elapsed_time(self, end: "FakeEvent") -> float:
        assert self.recorded_at is not None and end.recorded_at is not None, "elapsed_time of an unrecorded event"
        return end.recorded_at - self.recorded_at


class FakeGraph:
    def __init__(self, cuda: "FakeCuda"):
        self.cuda, self.replays = cuda, 0

    def replay(self):
        self.replays += 1
        self.cuda.on_replay(self)


class FakeCuda:
    """Install with :meth:`install` (a pytest monkeypatch); ``capture_error`` makes capture fail."""

    def __init__(self):
        self.log: List[str] = []
        self.capture_error: Optional[BaseException] = None       # raised when capture starts
        self.capturing = False
        self.graphs: List[FakeGraph] = []
        self.on_replay: Callable[[FakeGraph], None] = lambda g: None
        self.clock_ms = 0.0
        self.allocated = 0
        self.peak = 0
        self.current = FakeStream()

    # the allocator's counters
    def allocate(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def free(self, n: int) -> None:
        self.allocated -= n

    def _reset_peak(self, device=None) -> None:
        self.log.append("reset_peak_memory_stats")
        self.peak = self.allocated

    @contextlib.contextmanager
    def _graph(self, graph, *args, **kwargs):
        self.log.append("capture")
        if self.capture_error is not None:
            raise self.capture_error
        self.capturing = True
        try:
            yield
        finally:
            self.capturing = False

    @contextlib.contextmanager
    def _context(self, *args, **kwargs):
        yield

    def _make_graph(self) -> FakeGraph:
        g = FakeGraph(self)
        self.graphs.append(g)
        return g

    def install(self, monkeypatch) -> "FakeCuda":
        c = torch.cuda
        monkeypatch.setattr(c, "is_available", lambda: True)
        monkeypatch.setattr(c, "Stream", FakeStream)
        monkeypatch.setattr(c, "current_stream", lambda *a, **k: self.current)
        monkeypatch.setattr(c, "stream", self._context)
        monkeypatch.setattr(c, "device", self._context)
        monkeypatch.setattr(c, "synchronize", lambda *a, **k: self.log.append("synchronize"))
        monkeypatch.setattr(c, "CUDAGraph", self._make_graph)
        monkeypatch.setattr(c, "graph", self._graph)
        monkeypatch.setattr(c, "Event", lambda enable_timing=False: FakeEvent(self, enable_timing))
        monkeypatch.setattr(c, "reset_peak_memory_stats", self._reset_peak)
        monkeypatch.setattr(c, "memory_allocated", lambda *a, **k: self.allocated)
        monkeypatch.setattr(c, "max_memory_allocated", lambda *a, **k: self.peak)
        return self
