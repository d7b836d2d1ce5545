"""Peak memory of a region of work, labelled by what was actually measured.

CUDA: ``torch.cuda.max_memory_allocated`` after a reset, less a baseline -> metric
``peak_mem_bytes`` (tensors the caching allocator handed out for this cell: parameters, optimizer
state, activations, as in the Mamba paper's Table 15; not what other cells or the timer's L2-flush
buffer hold).  The baseline is what was allocated at entry, or what the caller passes (the memory
kind passes the allocation before it built the model, so the model itself counts).  CPU: the
process's peak resident set size -> ``peak_rss_bytes`` (everything the process holds, libraries
included) and ``peak_rss_delta_bytes`` (the rise over the baseline RSS, the part the cell caused).  On Linux the kernel's own high-water mark (VmHWM) is reset through
``/proc/self/clear_refs``; elsewhere a psutil thread samples the RSS every millisecond.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

import psutil
import torch

from harness.cells import make_row

#: the metrics of :meth:`PeakMemory.rows` (CUDA, then CPU)
PEAK_METRICS = ("peak_mem_bytes", "peak_rss_bytes", "peak_rss_delta_bytes")

GB = 1e9


def _read_vmhwm() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_vmhwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _read_vmhwm() is not None
    except OSError:
        return False


class _RssSampler(threading.Thread):
    def __init__(self, interval_s: float = 0.001):
        super().__init__(daemon=True)
        self.proc, self.interval_s = psutil.Process(), interval_s
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


class PeakMemory:
    """``with PeakMemory(device) as pm: work()`` then ``pm.peak_bytes`` / ``pm.rows()``."""

    def __init__(self, device: str, baseline_bytes: Optional[int] = None):
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        self.peak_bytes: Optional[int] = None
        self.start_bytes: Optional[int] = baseline_bytes
        self.method = ""

    @staticmethod
    def current_bytes(device: str) -> int:
        """Bytes held now: allocated tensors on CUDA, the resident set on CPU."""
        if str(device).startswith("cuda"):
            return int(torch.cuda.memory_allocated(device))
        return int(psutil.Process().memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            if self.start_bytes is None:
                self.start_bytes = self.current_bytes(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self._sampler = None
            if self.start_bytes is None:
                self.start_bytes = self.current_bytes(self.device)
            if _reset_vmhwm():
                self.method = "VmHWM after clear_refs"
            else:
                self._sampler = _RssSampler()
                self._sampler.start()
                self.method = "psutil RSS sampling (1 ms)"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self._sampler is not None:
            self.peak_bytes = self._sampler.stop()
        else:
            self.peak_bytes = _read_vmhwm()

    @property
    def cell_peak_bytes(self) -> Optional[int]:
        """The peak less the baseline: what the measured work itself needed at its worst."""
        if self.peak_bytes is None:
            return None
        return max(self.peak_bytes - (self.start_bytes or 0), 0)

    def rows(self, repeat: int = 0) -> List[Dict[str, Any]]:
        """CUDA: ``peak_mem_bytes`` (over the baseline).  CPU: ``peak_rss_bytes`` (absolute) and
        ``peak_rss_delta_bytes`` (over the baseline)."""
        if self.cuda:
            return [make_row("peak_mem_bytes", self.cell_peak_bytes, "bytes", repeat=repeat,
                             method=self.method, baseline_bytes=self.start_bytes)]
        return [make_row("peak_rss_bytes", self.peak_bytes, "bytes", repeat=repeat, method=self.method),
                make_row("peak_rss_delta_bytes", self.cell_peak_bytes, "bytes", repeat=repeat,
                         method=self.method, baseline_bytes=self.start_bytes)]
