"""What the machine can do and what state it is in: measured ceilings and GPU clocks/temperature.

The ceilings (device copy bandwidth, matmul rate) are measured once per process and cached; they
go into ``meta.json`` through the kinds' ``run_meta`` and are the denominators of every
``roofline_fraction``.  GPU state comes from NVML (nvidia-ml-py) and is only read, never set:
clocks, temperature and power at the start of a run and at the end of every cell let a diff tell
a throttled run from a regression.
"""
from __future__ import annotations

import functools
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from harness.cells import make_row


# --------------------------------------------------------------------------- NVML
def _nvml_handle(device: str):
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no driver, no library: not an error on a CPU machine
        return None, None
    index = torch.device(device).index or 0
    try:
        index = torch.cuda._get_nvml_device_index(index)  # honours CUDA_VISIBLE_DEVICES
    except Exception:
        pass
    try:
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None, None


def _try(f: Callable[[], Any]) -> Any:
    try:
        return f()
    except Exception:
        return None


def gpu_state(device: str) -> Dict[str, Any]:
    """Name, driver, SM/memory clocks, temperature, power and throttle reasons (empty off CUDA)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return {}
    nv, h = _nvml_handle(device)
    if h is None:
        return {"name": torch.cuda.get_device_name(device), "nvml": "unavailable"}
    name = _try(lambda: nv.nvmlDeviceGetName(h))
    state = {
        "name": name.decode() if isinstance(name, bytes) else name,
        "driver": _try(nv.nvmlSystemGetDriverVersion),
        "sm_clock_mhz": _try(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        "mem_clock_mhz": _try(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        "max_sm_clock_mhz": _try(lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
        "temperature_c": _try(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        "power_w": _try(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1e3),
        "power_limit_w": _try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
        "throttle_reasons": _try(lambda: int(nv.nvmlDeviceGetCurrentClocksEventReasons(h))),
    }
    return state


def gpu_state_rows(device: str) -> List[Dict[str, Any]]:
    """Clock, temperature and power at the end of a cell, as rows (none off CUDA)."""
    s = gpu_state(device)
    return [make_row(f"gpu_{k}", s[k], unit) for k, unit in GPU_STATE_UNITS.items() if s.get(k) is not None]


GPU_STATE_UNITS = {"sm_clock_mhz": "MHz", "mem_clock_mhz": "MHz", "temperature_c": "C", "power_w": "W",
                   "throttle_reasons": ""}
#: the metrics of :func:`gpu_state_rows`
GPU_STATE_METRICS = tuple(f"gpu_{k}" for k in GPU_STATE_UNITS)


# --------------------------------------------------------------------------- ceilings
def _median_ms(fn: Callable[[], Any], device: str, repeats: int) -> float:
    from harness.kinds.bench.timing import make_timer, synchronize
    timer = make_timer(device, flush_l2=False)
    fn()
    synchronize(device)
    return statistics.median(timer(fn) for _ in range(repeats))


def _copy_ms(device: str, n_bytes: int, repeats: int) -> float:
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    return _median_ms(lambda: dst.copy_(src), device, repeats)


def _matmul_ms(device: str, n: int, dtype: torch.dtype, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return _median_ms(lambda: a @ b, device, repeats)


@functools.lru_cache(maxsize=None)
def ceilings(device: str) -> Dict[str, Optional[float]]:
    """Measured copy bandwidth (bytes read + written per s) and matmul rate; derived exp rate on CUDA.

    CUDA: a 1 GiB device-to-device copy and a bf16 8192^3 matmul.  CPU: a 64 MiB copy and an
    fp32 1024^3 matmul (the CPU kinds' rows carry ``device`` so nobody mixes them up).  The exp rate
    is not measured: it is 16 exp2 per SM per clock (the SFU rate of Hopper/Ampere) x SMs x the
    maximum SM clock, labelled as derived.
    """
    cuda = str(device).startswith("cuda")
    n_copy = (1 << 30) if cuda else (64 << 20)
    n, mm_dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    copy_ms = _copy_ms(device, n_copy, repeats=10 if cuda else 5)
    mm_ms = _matmul_ms(device, n, mm_dtype, repeats=10 if cuda else 5)
    out: Dict[str, Optional[float]] = {
        "bytes_per_s": 2 * n_copy / (copy_ms / 1e3),
        "flops_per_s": 2 * n ** 3 / (mm_ms / 1e3),
        "flops_dtype": str(mm_dtype).replace("torch.", ""),
        "exps_per_s": None,
    }
    if cuda:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        clock = gpu_state(device).get("max_sm_clock_mhz")
        if clock:
            out["exps_per_s"] = 16.0 * sms * clock * 1e6
            out["exps_per_s_source"] = f"derived: 16/SM/clk x {sms} SMs x {clock} MHz"
    return out


def run_meta(device: str) -> Dict[str, Any]:
    """Once per run, into meta.json: the GPU's state at the start and the measured ceilings (the
    speed kind's roofline denominators)."""
    meta = gpu_meta(device)
    t0 = time.time()
    meta["bench"]["ceilings"] = {"device": str(device), **ceilings(str(device)),
                                 "measured_in_s": round(time.time() - t0, 3)}
    return meta


def gpu_meta(device: str) -> Dict[str, Any]:
    """Once per run, into meta.json: the GPU's state at the start (memory and decode kinds, which
    need no ceilings)."""
    meta: Dict[str, Any] = {"cpu": platform.processor() or platform.machine()}
    if str(device).startswith("cuda"):
        meta["gpu_start"] = gpu_state(device)
    return {"bench": meta}
