"""Where a run ran: git commit, library versions, CPU/RAM, machine load, GPU (name, driver, memory, clocks).

A timing means little without the machine and code behind it, so every run directory gets a
``meta.json`` built by :func:`collect`.  Everything here degrades to "unknown" instead of failing:
a run on a box without git or without a GPU still runs.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


#: run output folders inside the checkout (relative to it), left out of the dirty check: see exclude_output_dir
_OUTPUT_DIRS: List[str] = []


def exclude_output_dir(path) -> None:
    """Leave a run output folder that lies inside the checkout out of the dirty check.  The rows, tables and
    suite copies a run writes there are not code: without this a second run (or a ``--resume``) into a folder
    that git does not ignore would find the checkout 'dirty' because of the first run's own output."""
    try:
        rel = Path(path).resolve().relative_to(PROJECT_ROOT.resolve())
    except ValueError:   # outside the checkout: git does not see it
        return
    if rel == Path(".") or rel.as_posix() in _OUTPUT_DIRS:   # never exclude the whole checkout
        return
    _OUTPUT_DIRS.append(rel.as_posix())
    git_state.cache_clear()


def _code_paths() -> List[str]:
    """The pathspec of what counts as code for the dirty check: the checkout, less the run output folders."""
    return ["--", ".", *(f":(exclude){d}" for d in _OUTPUT_DIRS)]


@functools.lru_cache(maxsize=1)
def git_state() -> Dict[str, Any]:
    """{"commit": full sha or "unknown", "short": 7 hex, "dirty": bool} of the project checkout.

    ``SSMBENCH_GIT_COMMIT`` (and ``SSMBENCH_GIT_DIRTY=1``) name the commit explicitly and win over
    ``.git``: a copy of the tree shipped to a GPU box may carry no ``.git``, or a stale one, and its
    rows must still say what code ran.
    """
    named = os.environ.get("SSMBENCH_GIT_COMMIT", "").strip()
    if named:
        return {"commit": named, "short": named[:7], "dirty": os.environ.get("SSMBENCH_GIT_DIRTY", "0") == "1"}
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"commit": "unknown", "short": "nogit", "dirty": False}
    # untracked (not ignored) files count: a new module changes what runs as much as an edit does
    status = _git("status", "--porcelain", *_code_paths())
    state = {"commit": commit, "short": commit[:7], "dirty": bool(status)}
    if status:
        state["changes"] = _changes_digest(status)
    return state


def _changes_digest(status: str) -> str:
    """12 hex naming the uncommitted changes (the diff against HEAD and the untracked files' names), so
    two dirty trees at one commit can be told apart (``--resume`` refuses to mix them)."""
    import hashlib
    digest = hashlib.sha1(status.encode())
    digest.update((_git("diff", "HEAD", *_code_paths()) or "").encode())
    return digest.hexdigest()[:12]


def commit_label(commit: str, dirty: bool, changes: Optional[str] = None) -> str:
    """``3aa1a21`` or ``3aa1a21-dirty`` (``3aa1a21-dirty:ab12...`` when the changes are known)."""
    label = f"{commit[:7]}{'-dirty' if dirty else ''}"
    return f"{label}:{changes[:6]}" if dirty and changes else label


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_name(device: str = "cuda") -> Optional[str]:
    """Name of the GPU a cell ran on, or None on CPU."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - metadata must never fail a run
        return None
    return None


def device_name(device: str) -> str:
    """GPU name for cuda devices, CPU model otherwise (a row column)."""
    return gpu_name(device) or cpu_model()


def _nvml() -> List[Dict[str, Any]]:
    """Per-GPU facts from NVML (nvidia-ml-py); empty without a driver."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            info: Dict[str, Any] = {"index": i, "driver": driver}

            def put(key: str, fn, *args: Any) -> None:
                try:
                    value = fn(h, *args)
                    info[key] = value.decode() if isinstance(value, bytes) else value
                except Exception:  # noqa: BLE001 - not every GPU reports every field
                    pass

            put("name", pynvml.nvmlDeviceGetName)
            try:
                info["memory_total_mib"] = pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20
            except Exception:  # noqa: BLE001
                pass
            put("sm_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM)
            put("mem_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM)
            put("sm_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM)
            put("temperature_c", pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU)
            put("power_limit_w", lambda handle: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000)
            gpus.append(info)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return gpus


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", None)
    except Exception:  # noqa: BLE001 - triton is absent on macOS, for one
        return None


def machine_load() -> Dict[str, Any]:
    """How busy the machine was when the run started: timings on a loaded box (other jobs, a CPU
    clocked down) are noise, and a later reader can only tell from what was recorded.

    ``load_avg_1m/5m/15m`` (runnable processes, from ``os.getloadavg``; compare with ``cpu_count``),
    ``cpu_percent`` (all cores over 0.1 s), ``cpu_freq_mhz`` / ``cpu_freq_max_mhz`` (current and
    maximum clock; absent where the OS does not say, e.g. some VMs and macOS on Apple silicon),
    ``ram_available_gib``.
    """
    import psutil

    out: Dict[str, Any] = {}
    try:
        one, five, fifteen = os.getloadavg()
        out.update(load_avg_1m=round(one, 2), load_avg_5m=round(five, 2), load_avg_15m=round(fifteen, 2))
    except (OSError, AttributeError):  # Windows has no load average
        pass
    try:
        out["cpu_percent"] = psutil.cpu_percent(interval=0.1)
    except Exception:  # noqa: BLE001 - metadata must never fail a run
        pass
    try:
        freq = psutil.cpu_freq()
    except Exception:  # noqa: BLE001
        freq = None
    if freq is not None:
        if freq.current:
            out["cpu_freq_mhz"] = round(freq.current, 1)
        if freq.max:
            out["cpu_freq_max_mhz"] = round(freq.max, 1)
    try:
        out["ram_available_gib"] = round(psutil.virtual_memory().available / 2**30, 2)
    except Exception:  # noqa: BLE001
        pass
    return out


def collect(device: str, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """The machine and code facts for ``meta.json``."""
    import psutil

    git = git_state()
    meta: Dict[str, Any] = {
        "commit": git["commit"],
        "dirty": git["dirty"],
        "host": socket.gethostname(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "triton": _version("triton"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "device": device,
    }
    if git.get("changes"):  # which uncommitted changes (see git_state)
        meta["changes"] = git["changes"]
    meta.update(machine_load())
    try:
        import torch
        meta["cuda"] = torch.version.cuda
        meta["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            meta["gpu_name"] = torch.cuda.get_device_name(0)
            meta["gpu_count"] = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        meta["cuda"] = None
    gpus = _nvml()
    if gpus:
        meta["gpus"] = gpus
        meta["driver"] = gpus[0].get("driver")
    return meta
