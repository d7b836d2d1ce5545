"""The process executor (``ssmbench run --jobs N``): several cells at once, one spawned process each.

Cells are the test-only kind ``ray_fake`` (tests/ray_fake_kind.py): cheap, and able to sleep, OOM or
kill their own process on request.  Every test here starts real processes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import ray_fake_kind  # noqa: F401  (registers kind "ray_fake")
from conftest import OOM_SWEEP, OOM_SWEEP_STATUSES, comparable, run_and_load, suite_file
from harness.run import process_executor
from harness.cells import Cell, CellContext
from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.run.process_executor import ProcessExecutor, describe_exit

def write_suite(tmp_path: Path, body: str) -> Path:
    return suite_file(tmp_path, body)


def run_cli(tmp_path: Path, suite: Path, *flags: str, out: str):
    return run_and_load(tmp_path / out, suite, *flags)


table = comparable


def run_cells(executor: ProcessExecutor, cells: List[Cell], device: str = "cpu",
              deadline_s: float | None = None) -> Tuple[Dict[str, list], List[str], Dict[str, Tuple[float, float]]]:
    """Run ``cells``; -> rows per cell id, the order cells were reported in, (start, end) per cell
    (start: when the driver launched it; end: when it was reported)."""
    rows: Dict[str, list] = {}
    order: List[str] = []
    span: Dict[str, Tuple[float, float]] = {}

    def make_context(cell):
        span[cell.cell_id] = (time.monotonic(), float("nan"))
        return CellContext(device=device, deadline=None if deadline_s is None else time.monotonic() + deadline_s)

    def on_done(cell, cell_rows):
        rows[cell.cell_id] = cell_rows
        order.append(cell.cell_id)
        span[cell.cell_id] = (span.get(cell.cell_id, (float("nan"),))[0], time.monotonic())

    executor.run(cells, make_context, on_done, lambda c: None)
    return rows, order, span


def overlaps(a: Tuple[float, float], b: Tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_parallel_table_equals_local_table(tmp_path):
    suite = write_suite(tmp_path, OOM_SWEEP)
    code_local, local = run_cli(tmp_path, suite, out="local")
    code_par, par = run_cli(tmp_path, suite, "--jobs", "3", out="par")
    assert code_local == code_par == EXIT_OK
    # same rows; x=3 OOMs and x=4 is skipped for both impls (the chain per impl saw the OOM)
    assert table(par).equals(table(local)), (table(par), table(local))
    by_x = par.drop_duplicates("cell_id").set_index(["impl", "x"])["status"].to_dict()
    assert by_x == OOM_SWEEP_STATUSES
    meta = next((tmp_path / "par").rglob("meta.json")).read_text()
    assert '"jobs": 3' in meta and '"threads_per_cell"' in meta


def test_suite_key_jobs_runs_cells_at_once_and_the_flag_wins(tmp_path):
    from harness.run.local import LocalExecutor

    executor = LocalExecutor()
    executor.use_suite({"jobs": 4})
    assert executor.jobs == 4
    flagged = LocalExecutor(jobs=2)
    flagged.use_suite({"jobs": 4})
    assert flagged.jobs == 2
    suite = write_suite(tmp_path, OOM_SWEEP + "    jobs: 2\n")
    code, rows = run_cli(tmp_path, suite, out="suite_jobs")
    assert code == EXIT_OK and set(rows.status) == {"ok", "oom", "skipped"}
    assert '"jobs": 2' in next((tmp_path / "suite_jobs").rglob("meta.json")).read_text()


def test_cells_run_side_by_side_up_to_jobs():
    cells = [Cell("s", "ray_fake", f"c{i}", {"impl": f"i{i}", "x": i, "sleep_s": 2.0}) for i in range(3)]
    rows, order, span = run_cells(ProcessExecutor(jobs=2, cpus=2), cells)
    assert sorted(order) == ["c0", "c1", "c2"]
    assert all(r[0]["status"] == "ok" for r in rows.values())
    assert overlaps(span["c0"], span["c1"])                        # two at once ...
    assert not overlaps(span["c0"], span["c2"]) or not overlaps(span["c1"], span["c2"])  # ... never three
    assert [r["value"] for r in rows["c2"] if r["metric"] == "square"] == [4]


def test_timing_cells_run_alone_on_the_gpu(monkeypatch):
    """A cell of a timing kind on a GPU starts only when nothing else runs, and nothing starts beside it
    (the GPU here is pretend: no cell touches CUDA)."""
    monkeypatch.setattr(process_executor, "EXCLUSIVE_GPU_KINDS", frozenset({"ray_fake"}))
    cells = [Cell("s", "ray_fake", f"c{i}", {"impl": f"i{i}", "x": i, "sleep_s": 1.0}) for i in range(3)]
    _, order, span = run_cells(ProcessExecutor(jobs=3, cpus=3, gpus=[]), cells, device="cuda")
    assert order == ["c0", "c1", "c2"]
    assert not overlaps(span["c0"], span["c1"]) and not overlaps(span["c1"], span["c2"])


def test_gpus_are_handed_out_least_loaded_first(monkeypatch):
    """With two (pretend) GPUs, two cells at once get one GPU each, and the rows say which."""
    monkeypatch.setattr(process_executor, "EXCLUSIVE_GPU_KINDS", frozenset())
    cells = [Cell("s", "ray_fake", f"c{i}", {"impl": f"i{i}", "x": i, "sleep_s": 1.0}) for i in range(2)]
    rows, _, _ = run_cells(ProcessExecutor(jobs=2, cpus=2, gpus=["0", "1"]), cells, device="cuda")
    assert {rows[c][0]["gpu_index"] for c in ("c0", "c1")} == {"0", "1"}


def test_a_killed_cell_becomes_an_error_row_and_the_rest_finish():
    cells = [Cell("s", "ray_fake", "crash", {"impl": "z", "x": 7, "crash": "always"}),
             Cell("s", "ray_fake", "fine", {"impl": "a", "x": 2})]
    rows, _, _ = run_cells(ProcessExecutor(jobs=2, cpus=2), cells)
    assert [r["status"] for r in rows["crash"]] == ["error"]
    assert "died without results" in rows["crash"][0]["message"] and "SIGKILL" in rows["crash"][0]["message"]
    assert {r["metric"]: r["value"] for r in rows["fine"]} == {"square": 4, "cube": 8}


def test_a_cell_hung_past_its_deadline_is_killed(monkeypatch):
    monkeypatch.setattr(process_executor, "KILL_GRACE_S", 0.5)
    cells = [Cell("s", "ray_fake", "hang", {"impl": "a", "x": 1, "sleep_s": 300})]
    start = time.monotonic()
    rows, _, _ = run_cells(ProcessExecutor(jobs=2, cpus=2), cells, deadline_s=1.0)
    assert time.monotonic() - start < 60
    assert rows["hang"][0]["status"] == "timeout" and "killed" in rows["hang"][0]["message"]


def test_ctrl_c_kills_the_running_cells(tmp_path):
    pid_file = tmp_path / "slow.pid"
    cells = [Cell("s", "ray_fake", "quick", {"impl": "a", "x": 1, "sleep_s": 0.5}),
             Cell("s", "ray_fake", "slow", {"impl": "z", "x": 2, "sleep_s": 120, "pid_file": str(pid_file)})]

    def on_done(cell, rows):
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor(jobs=2, cpus=2).run(cells, lambda c: CellContext(), on_done, lambda c: None)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


def test_bad_jobs_flag_is_a_usage_error(tmp_path, capsys):
    suite = write_suite(tmp_path, OOM_SWEEP)
    assert main(["run", str(suite), "--out", str(tmp_path), "--jobs", "0", "--quiet"]) == EXIT_USAGE
    assert "--jobs 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs must be"):
        ProcessExecutor(jobs=0)


def test_exit_codes_are_described():
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9).startswith("killed by SIGKILL")
    assert describe_exit(-11) == "killed by SIGSEGV"
