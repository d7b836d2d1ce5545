"""The Ray executor against the local one, on a 2-CPU local Ray cluster (one per module: ~6 s).

Runs go through the real CLI in-process (``harness.cli.main``), which joins the cluster this module
started.  The cells are the test-only kind ``ray_fake`` (tests/ray_fake_kind.py): cheap,
deterministic, and able to OOM (so later cells of its impl are skipped) or SIGKILL its worker.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor needs the optional extra: pip install -e '.[ray]'")

import ray_fake_kind  # noqa: E402,F401  (registers kind "ray_fake")
from conftest import OOM_SWEEP, OOM_SWEEP_STATUSES, comparable, run_and_load, suite_file  # noqa: E402
from harness.cells import Cell, CellContext  # noqa: E402
from harness.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main  # noqa: E402
from harness.errors import SuiteError  # noqa: E402
from harness.run.runner import cell_deadline  # noqa: E402

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray whose workers can import ``ray_fake_kind`` (tests/ on their PYTHONPATH)."""
    from harness.run.ray_executor import start_local_ray

    if ray.is_initialized():
        ray.shutdown()
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), previous]))
    try:
        start_local_ray(num_cpus=2)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    yield
    ray.shutdown()


def write_suite(tmp_path: Path, body: str, name: str = "suite.yaml") -> Path:
    return suite_file(tmp_path, body, name)


def run_cli(tmp_path: Path, suite: Path, *flags: str, out: str = "results"):
    """``ssmbench run SUITE FLAGS`` in-process -> (exit code, the run's rows as a DataFrame)."""
    return run_and_load(tmp_path / out, suite, *flags)


table = comparable


def test_ray_table_equals_local_table(cluster, tmp_path):
    suite = write_suite(tmp_path, OOM_SWEEP)
    code_local, local = run_cli(tmp_path, suite, "--executor", "local", out="local")
    code_ray, remote = run_cli(tmp_path, suite, "--executor", "ray", out="ray")
    assert code_local == code_ray == EXIT_OK
    # Same cells, metrics, values and statuses; x=3 OOMs and x=4 is skipped, for both impls.
    assert table(remote).equals(table(local)), (table(remote), table(local))
    by_x = remote.drop_duplicates("cell_id").set_index(["impl", "x"])["status"].to_dict()
    assert by_x == OOM_SWEEP_STATUSES
    ran = remote[remote.status != "skipped"]
    # Where each cell ran: a node, no GPU on this CPU box, the CPU's model, first attempt.
    assert ran.ray_node.notna().all() and ran.gpu_index.isna().all()
    assert (ran.device_name == local.device_name.iloc[0]).all()
    assert (ran.ray_attempt == 1).all()
    assert wait_for(lambda: ray.available_resources().get("CPU") == 2)  # every task gave its CPU back


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    """Poll ``condition`` (Ray's resource view and process exits lag behind by a moment)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


CRASH_SUITE = """
    name: ray-fake-crash
    kind: ray_fake
    sweep: {x: [1, 2]}
    include:
      - {impl: crash, x: 7, crash: always}
"""


def test_killed_worker_becomes_error_row_and_suite_finishes(cluster, tmp_path):
    code, rows = run_cli(tmp_path, write_suite(tmp_path, CRASH_SUITE), "--executor", "ray")
    assert code == EXIT_FAILED  # an error row, yet every cell reported
    crashed = rows[rows.impl == "crash"]
    assert list(crashed.status) == ["error"] and list(crashed.metric) == ["cell"]
    assert "worker died" in crashed.message.iloc[0] and "WorkerCrashedError" in crashed.message.iloc[0]
    others = rows[rows.impl != "crash"]
    assert set(others.status) == {"ok"} and sorted(others[others.metric == "square"].value) == [1, 4]
    meta = (next((tmp_path / "results").rglob("meta.json"))).read_text()
    assert '"interrupted": false' in meta


def test_retries_resubmit_a_killed_cell(cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    suite = write_suite(tmp_path, f"""
        name: ray-fake-retry
        kind: ray_fake
        sweep: {{x: [1]}}
        include:
          - {{impl: once, x: 5, crash: once, marker_dir: "{markers}"}}
          - {{impl: always, x: 6, crash: always}}
    """)
    code, rows = run_cli(tmp_path, suite, "--executor", "ray", "--retries", "1")
    assert code == EXIT_FAILED
    once = rows[rows.impl == "once"]
    assert set(once.status) == {"ok"} and set(once.ray_attempt) == {2}  # killed once, then ran
    assert sorted(once.value) == [25, 125] and len(list(markers.iterdir())) == 1
    always = rows[rows.impl == "always"]
    assert list(always.status) == ["error"] and "after 2 attempts" in always.message.iloc[0]
    assert set(rows[rows.impl == "a"].status) == {"ok"}


def test_ctrl_c_cancels_outstanding_cells(cluster, tmp_path):
    from harness.run.ray_executor import RayExecutor

    pid_file = tmp_path / "slow.pid"
    cells = [Cell("s", "ray_fake", "quick", {"impl": "a", "x": 1, "sleep_s": 1.0}),
             Cell("s", "ray_fake", "slow", {"impl": "z", "x": 2, "sleep_s": 120, "pid_file": str(pid_file)})]
    reported: List[str] = []

    def on_done(cell, rows):
        reported.append(cell.cell_id)
        assert wait_for(pid_file.exists, 30)  # "slow" is running in its worker
        raise KeyboardInterrupt  # the user presses Ctrl-C now

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        RayExecutor().run(cells, lambda c: CellContext(), on_done, lambda c: None)
    assert reported == ["quick"] and time.monotonic() - start < 60
    pid = int(pid_file.read_text())
    assert wait_for(lambda: not pid_alive(pid))  # the slow cell's worker is killed, not left sleeping


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


# ---------------------------------------------------------------------- policy, no cluster needed

def executor_on(cpus: float, gpus: float, **kwargs):
    from harness.run.ray_executor import RayExecutor

    executor = RayExecutor(**kwargs)
    executor._max_node = {"CPU": cpus, "GPU": gpus}  # what connect() reads from ray.nodes()
    return executor


def test_timing_cells_take_a_whole_gpu_training_cells_may_share():
    ex = executor_on(16, 8, gpus_per_cell=0.25, cpus_per_cell=2)
    speed = Cell("s", "speed", "1", {"impl": "s6.triton", "seq_len": 512})
    task = Cell("s", "task", "2", {"model": {"mixer": "s6"}})
    for kind in ("speed", "memory", "decode"):
        cell = Cell("s", kind, "1", speed.params)
        assert ex.resources_for(cell, "cuda") == {"num_cpus": 2.0, "num_gpus": 1.0}
    assert ex.resources_for(task, "cuda:3") == {"num_cpus": 2.0, "num_gpus": 0.25}
    assert ex.resources_for(task, "cpu") == {"num_cpus": 2.0, "num_gpus": 0.0}
    # the flag wins over the suite's gpus_per_cell; the suite's wins over the default 1
    ex.use_suite({"gpus_per_cell": 0.5})
    assert ex.gpus_per_cell == 0.25
    plain = executor_on(16, 8)
    plain.use_suite({"gpus_per_cell": 0.5})
    assert plain.resources_for(task, "cuda")["num_gpus"] == 0.5
    plain.use_suite({})
    assert plain.resources_for(task, "cuda")["num_gpus"] == 1.0


def test_cells_no_node_can_hold_fail_with_a_reason():
    from harness.run.ray_executor import CellUnschedulable

    cell = Cell("s", "task", "1", {})
    with pytest.raises(CellUnschedulable, match="no GPUs"):
        executor_on(8, 0).resources_for(cell, "cuda")
    with pytest.raises(CellUnschedulable, match="largest node has 4"):
        executor_on(8, 4, gpus_per_cell=8).resources_for(cell, "cuda")
    with pytest.raises(CellUnschedulable, match="--cpus-per-cell"):
        executor_on(2, 0, cpus_per_cell=4).resources_for(cell, "cpu")


@pytest.mark.parametrize("kwargs, words", [
    ({"gpus_per_cell": 1.5}, "fraction below 1"), ({"gpus_per_cell": 0}, "> 0"),
    ({"cpus_per_cell": "two"}, "must be a number"), ({"retries": -1}, "--retries"),
])
def test_bad_settings_are_clear_errors(kwargs, words):
    from harness.run.ray_executor import RayExecutor

    with pytest.raises(SuiteError, match=words):
        RayExecutor(**kwargs)


def test_bad_address_fails_fast(tmp_path):
    from harness.run.ray_executor import check_reachable

    with pytest.raises(SuiteError, match="could not reach"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    with pytest.raises(SuiteError, match="HOST:PORT"):
        check_reachable("not-an-address")


def test_only_kinds_with_skip_reason_are_chained_per_impl():
    from harness.run.ray_executor import RayExecutor

    a1, a2, b1 = (Cell("s", "ray_fake", str(i), {"impl": impl, "x": i}) for i, impl in
                  enumerate("aab"))
    assert RayExecutor.line_of(a1, 0) == RayExecutor.line_of(a2, 1) != RayExecutor.line_of(b1, 2)
    plain = [Cell("s", "task", str(i), {}) for i in range(2)]
    assert RayExecutor.line_of(plain[0], 0) != RayExecutor.line_of(plain[1], 1)


def test_deadline_travels_as_a_budget():
    from harness.run.ray_executor import _context_on_worker, _context_payload

    ctx = CellContext(device="cuda:3", deadline=time.monotonic() + 100, run_dir="/r")
    payload = _context_payload(ctx)
    assert "deadline" not in payload and 99 < payload["deadline_budget_s"] <= 100
    worker = _context_on_worker(payload, gpu_ids=["3"])
    assert worker.device == "cuda" and worker.run_dir == "/r"
    assert 99 < worker.seconds_left() <= 100
    assert _context_on_worker(_context_payload(CellContext()), []).deadline is None
    # the runner's deadline for a bench cell is its timeout_s
    assert 9 < cell_deadline(Cell("s", "speed", "1", {"timeout_s": 10})) - time.monotonic() <= 10


def test_import_without_ray_says_how_to_install():
    code = "import sys; sys.modules['ray'] = None; import harness.run.ray_executor"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr and "pip install -e '.[ray]'" in proc.stderr


def test_cli_exit_2_on_bad_flag(tmp_path):
    suite = write_suite(tmp_path, OOM_SWEEP)
    assert main(["run", str(suite), "--out", str(tmp_path), "--quiet", "--no-report",
                 "--executor", "ray", "--gpus-per-cell", "1.5"]) == EXIT_USAGE
