"""A tiny suite kind for the Ray executor's tests: cheap, deterministic, and able to fail on purpose.

It lives in an importable module (not in the test file) because Ray workers import the kind's
code by module name: importing this module registers ``kind: ray_fake`` in the driver, the executor
ships the resolved spec to the workers, and they import this module (``tests/`` is on their
PYTHONPATH) to unpickle it.

A cell ``{impl, x, ...}`` yields ``square = x*x`` and ``cube = x**3``; on request it
* raises :class:`CellOOM` when ``x >= oom_at`` (and the kind's ``skip_reason`` then skips larger x of
  the same impl, like the speed kind's "OOM at a smaller L -> skip larger");
* writes its PID to ``pid_file`` and sleeps ``sleep_s`` (a cell still running at Ctrl-C);
* kills its own process with SIGKILL (``crash: always``), or only the first time it runs
  (``crash: once``, remembered by a marker file in ``marker_dir``) -- a worker lost mid-cell;
* writes the ``CUDA_MPS_*`` variables its process sees to ``env_dir/<cell id>.env`` (what a cell
  started under ``--mps`` inherits).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Tuple

from harness.cells import Cell, CellContext, CellOOM, make_row
from harness.config_types import StrictModel
from harness.kinds import KINDS, KindSpec

NAME = "ray_fake"


class FakeParams(StrictModel):
    impl: str = "a"
    x: int
    oom_at: Optional[int] = None
    crash: Literal["never", "always", "once"] = "never"
    marker_dir: Optional[str] = None
    sleep_s: float = 0.0
    pid_file: Optional[str] = None
    env_dir: Optional[str] = None
    device: str = "cpu"
    seed: int = 0


def run_cell(cell: Cell, ctx: CellContext) -> Iterator[dict]:
    p = FakeParams.model_validate(cell.params)
    if p.crash == "always":
        os.kill(os.getpid(), signal.SIGKILL)
    if p.crash == "once":
        if not p.marker_dir:
            raise ValueError("crash: once needs marker_dir (a directory the workers can write)")
        marker = Path(p.marker_dir) / f"{cell.cell_id}.attempted"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    if p.env_dir:
        seen = {k: v for k, v in os.environ.items() if k.startswith("CUDA_MPS_")}
        (Path(p.env_dir) / f"{cell.cell_id}.env").write_text(json.dumps(seen))
    if p.pid_file:  # lets a test see that this worker was killed on Ctrl-C
        Path(p.pid_file).write_text(str(os.getpid()))
    if p.sleep_s:
        time.sleep(p.sleep_s)
    ctx.check_deadline()
    if p.oom_at is not None and p.x >= p.oom_at:
        raise CellOOM(f"fake OOM at x={p.x} (oom_at={p.oom_at})")
    yield make_row("square", p.x * p.x, "")
    yield make_row("cube", p.x ** 3, "")


def skip_reason(cell: Cell, finished: List[Tuple[Cell, str]]) -> Optional[str]:
    for done, status in finished:
        if (status == "oom" and done.kind == cell.kind and done.get("impl") == cell.get("impl")
                and done.get("x") < cell.get("x")):
            return f"OOM at a smaller x={done.get('x')} for impl {cell.get('impl')}"
    return None


SPEC = KindSpec(NAME, FakeParams, run_cell, skip_reason=skip_reason)
if NAME not in KINDS:
    KINDS.add(NAME, SPEC, help="test-only kind for the Ray executor")
