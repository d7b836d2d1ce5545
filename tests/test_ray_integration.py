"""The harness core's side of the Ray executor: the suite key ``gpus_per_cell``, the optional executor
methods the runner uses (``use_suite``, ``cluster_summary``, ``cluster_has_gpus``, ``call_on_worker``),
the CLI building the executor before planning, and progress with several cells in flight.

Most tests use :class:`FakeCluster`, an executor that runs cells here but offers those methods, so
they need no Ray; the last ones use the real one (skipped without the ``ray`` extra).
"""
from __future__ import annotations

import io
import os

import pytest

from conftest import TESTS, run_dirs
from harness.cells import Cell
from harness.run.local import LocalExecutor
from harness.suite.expand import expand
from harness.store.results import load, load_meta
from harness.run.runner import run_suite
from harness.suite.schema import load_suites

SUITE = """
name: cluster
kind: fake
device: {device}
defaults: {{seq_len: 8}}
sweep:
  batch: [1, 2]
"""


class FakeCluster(LocalExecutor):
    """Runs cells in this process but looks like the Ray executor to the core; records every call."""

    name = "ray"

    def __init__(self, has_gpus: bool = False):
        self.has_gpus = has_gpus
        self.suite_gpus = None
        self.calls: list = []

    def connect(self) -> None:
        self.calls.append("connect")

    def use_suite(self, suite_data) -> None:
        self.suite_gpus = suite_data.get("gpus_per_cell")
        self.calls.append(("use_suite", self.suite_gpus))

    def cluster_summary(self) -> dict:
        self.calls.append("cluster_summary")
        return {"executor": "ray", "ray_version": "0.0", "address": "fake", "nodes": 3, "cpus": 48,
                "gpus": 24 if self.has_gpus else 0, "gpus_per_cell": self.suite_gpus or 1.0,
                "cpus_per_cell": 1.0, "retries": 0}

    def cluster_has_gpus(self) -> bool:
        return self.has_gpus

    def call_on_worker(self, fn, *args, device="cpu"):
        self.calls.append(("call_on_worker", args, device))
        return fn(*args)

    def run(self, cells, make_context, on_done, skip_reason) -> None:
        self.calls.append("run")
        super().run(cells, make_context, on_done, skip_reason)

    def close(self) -> None:
        self.calls.append("close")


def _run(write_suite, tmp_path, executor, device="cpu", extra=""):
    suite = load_suites(write_suite(SUITE.format(device=device) + extra))[0]
    return run_suite(suite.doc.data, expand(suite), out_root=tmp_path / "results", executor=executor)


# ---------------------------------------------------------------------- 1. the suite key

@pytest.mark.parametrize("value", ["0.25", "0.5", "1", "2"])
def test_gpus_per_cell_takes_a_fraction_or_whole_gpus(write_suite, cli, value):
    res = cli("validate", write_suite(SUITE.format(device="cpu") + f"gpus_per_cell: {value}\n"), "-q")
    assert res.code == 0, res.err


@pytest.mark.parametrize("value, words", [
    ("1.5", "must be a fraction below 1 (cells share a GPU) or a whole number of GPUs"),
    ("0", "must be > 0 (got 0)"), ("-1", "must be > 0"), ("true", "must be a number of GPUs"),
    ("two", "input should be a valid number"),
])
def test_bad_gpus_per_cell_names_file_and_line(write_suite, cli, tmp_path, value, words):
    path = write_suite(SUITE.format(device="cpu") + f"gpus_per_cell: {value}\n")
    for command in ("validate", "run"):
        res = cli(command, path)
        assert res.code == 2 and f"{path}:7: gpus_per_cell: {words}" in res.err, res.err
        assert "Traceback" not in res.err and not (tmp_path / "results").exists()


def test_gpus_per_cell_leaves_cell_ids_alone_and_can_be_set(write_suite):
    plain = load_suites(write_suite(SUITE.format(device="cpu")))[0]
    shared = load_suites(write_suite(SUITE.format(device="cpu") + "gpus_per_cell: 0.5\n", "b.yaml"))[0]
    assert shared.spec.gpus_per_cell == 0.5 and plain.spec.gpus_per_cell is None
    assert [c.cell_id for c in expand(plain)] == [c.cell_id for c in expand(shared)]
    # --set gpus_per_cell=... addresses the suite (like --set seeds=...), not every cell
    overridden = load_suites(write_suite(SUITE.format(device="cpu"), "c.yaml"), [("gpus_per_cell", 0.25)])[0]
    assert overridden.doc.data["gpus_per_cell"] == 0.25
    assert [c.cell_id for c in expand(overridden)] == [c.cell_id for c in expand(plain)]


# ---------------------------------------------------------------------- 2-4. the runner

def test_runner_gives_the_suite_to_the_executor_and_records_its_cluster(write_suite, tmp_path):
    executor = FakeCluster()
    result = _run(write_suite, tmp_path, executor, extra="gpus_per_cell: 0.5\n")
    assert result.counts == {"ok": 2}
    assert executor.calls.index(("use_suite", 0.5)) < executor.calls.index("run")
    executor_meta = load_meta(result.run_dir)["executor"]
    assert executor_meta["name"] == "ray"
    assert {k: executor_meta[k] for k in ("nodes", "cpus", "gpus_per_cell")} == {
        "nodes": 3, "cpus": 48, "gpus_per_cell": 0.5}
    # run_meta (the fake kind's {"fake_meta": device}) was measured in a "worker"
    assert ("call_on_worker", ("cpu",), "cpu") in executor.calls
    assert load_meta(result.run_dir)["fake_meta"] == "cpu"


def test_local_executor_meta_names_it(write_suite, tmp_path):
    result = _run(write_suite, tmp_path, LocalExecutor())
    assert load_meta(result.run_dir)["executor"] == {"name": "local"}


@pytest.mark.parametrize("has_gpus", [True, False])
def test_cuda_cells_are_left_to_the_cluster(write_suite, tmp_path, has_gpus):
    """No "CUDA not available" skip from the driver's torch; run_meta on the cluster's GPU, if any."""
    executor = FakeCluster(has_gpus=has_gpus)
    result = _run(write_suite, tmp_path, executor, device="cuda:1")
    assert result.counts == {"ok": 2}  # the fake kind ignores its device; real Ray places the cells
    meta = load_meta(result.run_dir)
    if has_gpus:  # the worker sees its one GPU as "cuda"; Ray is asked for a GPU
        assert ("call_on_worker", ("cuda",), "cuda:1") in executor.calls
        assert meta["fake_meta"] == "cuda"
    else:  # a GPU task would wait forever on a cluster without GPUs
        assert not any(c[0] == "call_on_worker" for c in executor.calls if isinstance(c, tuple))
        assert "fake_meta" not in meta


def test_cli_builds_the_executor_first_and_plans_with_its_gpus(write_suite, cli, tmp_path, monkeypatch):
    import harness.cli

    executor = FakeCluster(has_gpus=True)
    monkeypatch.setattr(harness.cli, "_ray_executor", lambda args: executor)
    res = cli("run", write_suite(SUITE.format(device="auto")), "--executor", "ray", "--no-report",
              "--quiet")
    assert res.code == 0, res.err
    assert executor.calls[0] == "connect" and executor.calls[-1] == "close"
    assert "ray 0.0 at fake: 3 nodes, 48 CPUs, 24 GPUs; per cell: 1 CPU, GPUs: each suite's" in res.out
    (run_dir,) = run_dirs(tmp_path / "results")
    assert set(load(run_dir)["device"]) == {"cuda"}  # device: auto = the cluster's GPUs, not this box's

    executor = FakeCluster(has_gpus=False)
    monkeypatch.setattr(harness.cli, "_ray_executor", lambda args: executor)
    res = cli("run", write_suite(SUITE.format(device="auto")), "--executor", "ray", "--dry-run")
    assert res.code == 0 and executor.calls == ["connect", "cluster_summary", "close"]


# ---------------------------------------------------------------------- 5. progress

def test_progress_bar_shows_several_cells_in_flight():
    from rich.console import Console

    from harness.run.progress import BarProgress

    bar = BarProgress(console=Console(file=io.StringIO(), force_terminal=True, width=150))
    cells = [Cell("s", "fake", f"{i:012d}", {"seq_len": i}, {"seq_len": i}) for i in range(3)]

    def current() -> str:
        return bar._bar.tasks[0].fields["current"]

    bar.start("s", total=3)
    bar.cell_started(cells[0])
    assert current() == "seq_len=0"
    bar.cell_started(cells[1])
    bar.cell_started(cells[2])
    assert current() == "3 running, latest: seq_len=2"
    bar.cell_done(cells[2], "ok", 0.1)  # cells end in any order
    assert current() == "2 running, latest: seq_len=1"
    bar.cell_done(cells[0], "ok", 0.1)
    assert current() == "seq_len=1"
    bar.cell_done(cells[1], "oom", 0.1)
    assert current() == "" and bar._bar.tasks[0].completed == 3
    bar.close()


# ---------------------------------------------------------------------- the real Ray executor

@pytest.mark.ray
def test_bad_address_exits_2_before_anything_is_written(write_suite, cli_subprocess, tmp_path):
    pytest.importorskip("ray")
    res = cli_subprocess("run", write_suite(SUITE.format(device="cpu")), "--executor", "ray",
                         "--address", "127.0.0.1:1")
    assert res.returncode == 2, res.stderr
    assert "could not reach a Ray cluster" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture
def local_ray():
    """A 2-CPU local Ray whose workers import ``fake_kind`` (tests/ on their PYTHONPATH)."""
    ray = pytest.importorskip("ray")
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
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_real_ray_run_records_the_cluster_and_the_suites_gpus(local_ray, write_suite, cli, tmp_path):
    path = write_suite(SUITE.format(device="cpu") + "gpus_per_cell: 0.5\n")
    res = cli("run", path, "--executor", "ray", "--no-report", "--quiet")
    assert res.code == 0, res.err
    assert f"ray {local_ray.__version__} at local: 1 node, 2 CPUs, 0 GPUs" in res.out
    (run_dir,) = run_dirs(tmp_path / "results")
    meta = load_meta(run_dir)
    assert meta["executor"]["name"] == "ray" and meta["executor"]["nodes"] == 1
    assert meta["executor"]["gpus_per_cell"] == 0.5  # the suite's, since no flag was given
    assert meta["fake_meta"] == "cpu"  # run_meta went through a worker
    rows = load(run_dir)
    assert set(rows.status) == {"ok"} and rows.ray_node.notna().all()
