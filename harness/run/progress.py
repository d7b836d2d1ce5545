"""Progress of a run: a rich bar on a terminal, one line per finished cell elsewhere, or nothing.

CI logs and pipes get plain lines (a redrawn bar would fill them with control codes); ``--quiet``
silences both.  Several cells may be in flight at once (the Ray executor runs them in parallel, and
they end in any order): the bar shows the latest started and how many run.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional, TextIO

from harness.cells import Cell


def _label(cell: Cell, width: int = 70) -> str:
    # a key that only some cells have is None in the others: say nothing rather than "key=None"
    text = " ".join(f"{k}={v}" for k, v in cell.varying.items() if k != "device" and v is not None)
    return text if len(text) <= width else text[: width - 3] + "..."


class Progress:
    """Silent base: the interface the runner calls."""

    def start(self, title: str, total: int, done: int = 0) -> None: ...

    def cell_started(self, cell: Cell) -> None: ...

    def cell_done(self, cell: Cell, status: str, wall_s: Optional[float]) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class LineProgress(Progress):
    """``[3/12] ok       1.2s  a1b2c3d4e5f6  model.mixer=s6 seq_len=64`` per finished cell."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream, self.total, self.done, self.t0 = stream or sys.stdout, 0, 0, time.monotonic()

    def start(self, title: str, total: int, done: int = 0) -> None:
        self.total, self.done, self.t0 = total, done, time.monotonic()
        resumed = f" ({done} already done)" if done else ""
        print(f"{title}: {total} cells{resumed}", file=self.stream, flush=True)

    def cell_done(self, cell: Cell, status: str, wall_s: Optional[float]) -> None:
        self.done += 1
        wall = f"{wall_s:7.1f}s" if wall_s is not None else "        "
        count = f"[{self.done}/{self.total}]".ljust(2 * len(str(self.total)) + 3)
        print(f"{count} {status:<8} {wall}  {cell.cell_id}  {_label(cell)}".rstrip(),
              file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class BarProgress(Progress):
    """A rich progress bar: cells done/total, the current cell, elapsed and remaining time."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[current]}"), transient=False,
                                 console=console)
        self._task: Any = None
        self._counts: Dict[str, int] = {}
        self._running: Dict[str, str] = {}  # cell_id -> label, in the order the cells started

    def _show_running(self) -> None:
        """The latest started cell still running, and how many run when that is more than one."""
        if not self._running:
            current = ""
        else:
            latest = next(reversed(self._running.values()))
            n = len(self._running)
            current = latest if n == 1 else f"{n} running, latest: {latest}"
        self._bar.update(self._task, current=current)

    def start(self, title: str, total: int, done: int = 0) -> None:
        self._bar.start()
        self._task = self._bar.add_task(title, total=total, completed=done, current="")

    def cell_started(self, cell: Cell) -> None:
        self._running.pop(cell.cell_id, None)  # a retried cell moves to the end
        self._running[cell.cell_id] = _label(cell, 50)
        self._show_running()

    def cell_done(self, cell: Cell, status: str, wall_s: Optional[float]) -> None:
        self._counts[status] = self._counts.get(status, 0) + 1
        self._running.pop(cell.cell_id, None)
        if status != "ok":
            self._bar.console.print(f"[yellow]{status}[/] {cell.cell_id} {_label(cell)}")
        self._bar.advance(self._task)
        self._show_running()

    def message(self, text: str) -> None:
        self._bar.console.print(text)

    def close(self) -> None:
        self._running.clear()
        self._bar.update(self._task, current="")
        self._bar.stop()


def make_progress(quiet: bool = False, stream: Optional[TextIO] = None) -> Progress:
    """Bar on a terminal, lines otherwise, nothing when quiet."""
    stream = stream or sys.stdout
    if quiet:
        return Progress()
    if stream.isatty():
        try:
            return BarProgress()
        except ImportError:
            pass
    return LineProgress(stream)
