"""CUDA MPS (Multi-Process Service) around the cells that ``--jobs N`` runs side by side on one GPU.

Why: the process executor's cells are separate processes, and separate processes time-slice a GPU
-- one process's kernels at a time.  Under MPS one server runs all their kernels, so they overlap.
Measured on an H200 (2026-12-02), the 8 small training cells of a quick synthetic-task suite at
``jobs: 8``: 223 -> 351 training steps/s in total (1.57x); none/S6 37.9 -> 58.7 steps/s, Mamba/S4
19.9 -> 35.8.  ``ssmbench run --mps`` (or ``mps: true`` in a suite) gives that without starting the
daemon by hand.

What :func:`mps_for_children` does, in order (its status dict goes to ``meta.json["executor"]["mps"]``):

* not requested: nothing;
* a daemon already answers where the children would look for it (``$CUDA_MPS_PIPE_DIRECTORY``, else
  ``/tmp/nvidia-mps``, holding a ``control`` pipe): use it, start and stop nothing;
* no GPU visible (NVML), or no ``nvidia-cuda-mps-control`` on PATH: run without MPS (the latter
  with a warning);
* else start a private daemon (``nvidia-cuda-mps-control -d`` with its pipe and log directories
  in a temp dir), point the children at it through ``CUDA_MPS_PIPE_DIRECTORY`` /
  ``CUDA_MPS_LOG_DIRECTORY`` in ``os.environ`` (a spawned child copies it), and on the way out --
  an exception or Ctrl-C included -- send it ``quit``, restore both variables and remove the temp
  dir.  A daemon that will not start is a warning, and the cells run without MPS; one that will not
  quit is a warning saying how to stop it (its temp dir is kept for that), never an exception.

Caveats: MPS only helps several processes on one GPU, so with one cell at a time (``jobs`` 1)
the executor does not start it.  Timing and memory cells still run alone on their GPU (the process
executor's exclusive kinds), so their numbers are not perturbed by other cells; they do go through
the MPS server, like every cell of such a run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from harness.run.process_executor import environment, visible_gpus

CONTROL_BINARY = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
DEFAULT_PIPE_DIR = "/tmp/nvidia-mps"
START_TIMEOUT_S = 30.0
QUIT_TIMEOUT_S = 60.0

Status = Dict[str, Any]


def not_started(reason: str) -> Status:
    """The status of a run that asked for MPS and ran without it, saying why."""
    return {"requested": True, "active": False, "reason": reason}


def _warn(text: str) -> None:
    print(f"warning: CUDA MPS: {text}", file=sys.stderr, flush=True)


def running_daemon_pipe_dir() -> Optional[str]:
    """The pipe directory of an MPS daemon the children would reach as things stand, or None."""
    pipe_dir = os.environ.get(PIPE_ENV) or DEFAULT_PIPE_DIR
    return pipe_dir if (Path(pipe_dir) / "control").exists() else None


@contextmanager
def mps_for_children(requested: bool, gpus: Optional[Callable[[], Sequence[str]]] = None,
                     warn: Callable[[str], None] = _warn) -> Iterator[Status]:
    """Make CUDA MPS active for the processes this one starts inside the block; yields the status
    for meta.json (a daemon's trouble on the way out is added to it as ``stop_error``).

    ``gpus``: the visible GPU ids (default: :func:`harness.run.process_executor.visible_gpus`, NVML).
    """
    if not requested:
        yield {"requested": False}
        return
    pipe_dir = running_daemon_pipe_dir()
    if pipe_dir is not None:
        yield {"requested": True, "active": True, "how": "already running", "pipe_dir": pipe_dir}
        return
    if not (gpus or visible_gpus)():
        yield not_started("no NVIDIA GPU is visible (NVML finds none, or CUDA_VISIBLE_DEVICES hides them)")
        return
    binary = shutil.which(CONTROL_BINARY)
    if binary is None:
        reason = f"{CONTROL_BINARY} is not on PATH (it comes with the NVIDIA driver)"
        warn(f"{reason}; the cells run without MPS")
        yield not_started(reason)
        return
    with _private_daemon(binary, warn) as status:
        yield status


@contextmanager
def _private_daemon(binary: str, warn: Callable[[str], None]) -> Iterator[Status]:
    """A daemon of our own in a temp dir, for the block; see the module docstring."""
    root = Path(tempfile.mkdtemp(prefix="ssmbench-mps-"))  # short: a pipe path has ~100 bytes at most
    env = {PIPE_ENV: str(root / "pipe"), LOG_ENV: str(root / "log")}
    keep_root = False  # a daemon that would not quit keeps its pipe directory, to be told by hand
    try:
        for path in env.values():
            Path(path).mkdir()
        problem = _start(binary, env, root)
        if problem is not None:
            warn(f"{problem}; the cells run without MPS")
            yield not_started(problem)
            return
        status: Status = {"requested": True, "active": True, "how": "started by ssmbench",
                          "pipe_dir": env[PIPE_ENV], "log_dir": env[LOG_ENV]}
        try:
            with environment(env):
                yield status
        finally:
            problem = _quit(binary, env)
            if problem is not None:
                keep_root = True
                warn(f"{problem}; it may still run: stop it with `echo quit | {PIPE_ENV}={env[PIPE_ENV]} "
                     f"{CONTROL_BINARY}`")
                status["stop_error"] = problem
    finally:
        if not keep_root:
            shutil.rmtree(root, ignore_errors=True)


def _start(binary: str, env: Dict[str, str], root: Path) -> Optional[str]:
    """Start the daemon; None if it started, else what went wrong.  Its stderr goes to a file, not a
    pipe: the daemon forks and may keep the stream open, and a pipe would be read until it exits."""
    stderr_path = root / "start.stderr"
    try:
        with open(stderr_path, "wb") as stderr:
            result = subprocess.run([binary, "-d"], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`{CONTROL_BINARY} -d` did not return within {START_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return f"`{CONTROL_BINARY} -d` could not be run ({exc})"
    if result.returncode != 0:
        text = stderr_path.read_text(errors="replace").strip() or "no message"
        return f"`{CONTROL_BINARY} -d` failed with exit code {result.returncode}: {text}"
    return None


def _quit(binary: str, env: Dict[str, str]) -> Optional[str]:
    """Tell the daemon to quit; None if it took the command, else what went wrong (never raises:
    the run's own outcome must not be hidden by the daemon's)."""
    try:
        result = subprocess.run([binary], env={**os.environ, **env}, input="quit\n", text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=QUIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`echo quit | {CONTROL_BINARY}` did not return within {QUIT_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return f"`echo quit | {CONTROL_BINARY}` could not be run ({exc})"
    if result.returncode != 0:
        return (f"`echo quit | {CONTROL_BINARY}` failed with exit code {result.returncode}: "
                f"{result.stderr.strip() or 'no message'}")
    return None
