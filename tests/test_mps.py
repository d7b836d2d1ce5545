"""CUDA MPS around the local executor's parallel cells (``ssmbench run --jobs N --mps``).

No GPU here: ``nvidia-cuda-mps-control`` is a shell script on PATH that records each call (its
arguments, stdin and the two CUDA_MPS_* variables), and the visible GPUs are monkeypatched.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

import ray_fake_kind  # noqa: F401  (registers kind "ray_fake")
from conftest import run_and_load, suite_file
from harness.run import mps
from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.run.local import LocalExecutor
from harness.suite.expand import expand
from harness.store.results import load_meta
from harness.suite.schema import load_suites

ONE_GPU = lambda: ["0"]  # noqa: E731

FAKE_CONTROL = """#!/bin/sh
stdin=$(cat)
printf '%s\\t%s\\t%s\\t%s\\n' "$*" "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" "$stdin" >> {record}
{fail}
exit 0
"""
FAIL_TO_START = 'if [ "$1" = "-d" ]; then echo "An MPS control daemon is already running" >&2; exit 1; fi'
FAIL_TO_QUIT = 'if [ "$stdin" = "quit" ]; then echo "cannot reach the daemon" >&2; exit 1; fi'


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """install(fail="") puts a fake nvidia-cuda-mps-control first on PATH; calls() -> its calls as
    dicts (argv, pipe, log, stdin).  No daemon is reachable to begin with."""
    record = tmp_path / "calls.tsv"
    monkeypatch.delenv(mps.PIPE_ENV, raising=False)
    monkeypatch.delenv(mps.LOG_ENV, raising=False)
    monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", str(tmp_path / "no-daemon-here"))

    class Control:
        @staticmethod
        def install(fail: str = "") -> None:
            bin_dir = tmp_path / "bin"
            bin_dir.mkdir(exist_ok=True)
            script = bin_dir / mps.CONTROL_BINARY
            script.write_text(FAKE_CONTROL.format(record=record, fail=fail))
            script.chmod(0o755)
            monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

        @staticmethod
        def calls() -> List[Dict[str, str]]:
            if not record.exists():
                return []
            lines = record.read_text().splitlines()
            return [dict(zip(("argv", "pipe", "log", "stdin"), line.split("\t"))) for line in lines]

    return Control


def test_not_requested_does_nothing(control):
    control.install()
    with mps.mps_for_children(False, gpus=ONE_GPU) as status:
        assert mps.PIPE_ENV not in os.environ
    assert status == {"requested": False} and control.calls() == []


def test_a_started_daemon_serves_the_block_and_quits_after_it(control, monkeypatch, tmp_path):
    control.install()
    stale = str(tmp_path / "stale-pipe-dir")  # set, but no daemon there: ours replaces it for the block
    monkeypatch.setenv(mps.PIPE_ENV, stale)
    with mps.mps_for_children(True, gpus=ONE_GPU) as status:
        pipe, log = os.environ[mps.PIPE_ENV], os.environ[mps.LOG_ENV]  # what a spawned child copies
        assert Path(pipe).is_dir() and Path(log).is_dir() and Path(pipe).parent == Path(log).parent
        assert control.calls() == [{"argv": "-d", "pipe": pipe, "log": log, "stdin": ""}]
    assert status == {"requested": True, "active": True, "how": "started by ssmbench",
                      "pipe_dir": pipe, "log_dir": log}
    assert control.calls()[1] == {"argv": "", "pipe": pipe, "log": log, "stdin": "quit"}
    assert os.environ[mps.PIPE_ENV] == stale and mps.LOG_ENV not in os.environ
    assert not Path(pipe).parent.exists()


def test_an_exception_in_the_block_still_stops_the_daemon(control):
    control.install()
    with pytest.raises(KeyboardInterrupt):
        with mps.mps_for_children(True, gpus=ONE_GPU):
            raise KeyboardInterrupt
    assert [c["argv"] for c in control.calls()] == ["-d", ""] and control.calls()[1]["stdin"] == "quit"
    assert mps.PIPE_ENV not in os.environ and mps.LOG_ENV not in os.environ
    assert not Path(control.calls()[0]["pipe"]).parent.exists()


@pytest.mark.parametrize("where", ["env", "default"])
def test_a_running_daemon_is_used_and_left_alone(control, monkeypatch, tmp_path, where):
    control.install()
    pipe_dir = tmp_path / "their-mps"
    pipe_dir.mkdir()
    (pipe_dir / "control").touch()
    if where == "env":
        monkeypatch.setenv(mps.PIPE_ENV, str(pipe_dir))
    else:
        monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", str(pipe_dir))
    with mps.mps_for_children(True, gpus=ONE_GPU) as status:
        pass
    assert status == {"requested": True, "active": True, "how": "already running", "pipe_dir": str(pipe_dir)}
    assert control.calls() == [] and (pipe_dir / "control").exists()


def test_no_gpu_means_no_daemon(control, capsys):
    control.install()
    with mps.mps_for_children(True, gpus=lambda: []) as status:
        assert mps.PIPE_ENV not in os.environ
    assert status["active"] is False and "no NVIDIA GPU" in status["reason"]
    assert control.calls() == [] and capsys.readouterr().err == ""


def test_a_missing_binary_is_one_warning(control, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with mps.mps_for_children(True, gpus=ONE_GPU) as status:
        assert mps.PIPE_ENV not in os.environ
    assert status["requested"] is True and status["active"] is False
    assert "nvidia-cuda-mps-control is not on PATH" in status["reason"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: CUDA MPS: nvidia-cuda-mps-control")


def test_a_daemon_that_fails_to_start_is_a_warning(control, capsys):
    control.install(fail=FAIL_TO_START)
    with mps.mps_for_children(True, gpus=ONE_GPU) as status:
        assert mps.PIPE_ENV not in os.environ
    assert status["active"] is False
    assert "exit code 1: An MPS control daemon is already running" in status["reason"]
    assert [c["argv"] for c in control.calls()] == ["-d"]  # nothing started, so no quit
    assert not Path(control.calls()[0]["pipe"]).parent.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already running; the cells run without MPS" in err


def test_a_daemon_that_will_not_quit_is_noted_not_raised(control, capsys):
    control.install(fail=FAIL_TO_QUIT)
    with mps.mps_for_children(True, gpus=ONE_GPU) as status:
        pass
    assert "cannot reach the daemon" in status["stop_error"] and status["active"] is True
    assert mps.PIPE_ENV not in os.environ
    kept = Path(status["pipe_dir"]).parent  # so the daemon can still be told to quit by hand
    assert kept.is_dir() and f"{mps.PIPE_ENV}={status['pipe_dir']}" in capsys.readouterr().err
    shutil.rmtree(kept)


# ---------------------------------------------------------------------- the suite key and the flag

SUITE = """
name: mps-cells
kind: ray_fake
sweep: {impl: [a, b], x: [1, 2]}
"""


def test_suite_key_is_a_strict_bool_and_leaves_cell_ids_alone(tmp_path):
    plain = load_suites(suite_file(tmp_path, SUITE, "a.yaml"))[0]
    shared = load_suites(suite_file(tmp_path, SUITE + "mps: true\n", "b.yaml"))[0]
    assert shared.spec.mps is True and plain.spec.mps is None
    assert [c.cell_id for c in expand(plain)] == [c.cell_id for c in expand(shared)]
    overridden = load_suites(suite_file(tmp_path, SUITE, "c.yaml"), [("mps", True)])[0]  # --set mps=true
    assert overridden.spec.mps is True
    assert [c.cell_id for c in expand(overridden)] == [c.cell_id for c in expand(plain)]


@pytest.mark.parametrize("value", ["1", "'yes'", "sometimes"])
def test_a_non_bool_mps_names_the_key_and_line(tmp_path, capsys, value):
    path = suite_file(tmp_path, SUITE + f"mps: {value}\n")
    assert main(["validate", str(path)]) == EXIT_USAGE
    assert f"{path}:4: mps: input should be a valid boolean" in capsys.readouterr().err


def test_the_flag_wins_over_the_suite_and_jobs_1_starts_nothing():
    flagged = LocalExecutor(mps=True)
    flagged.use_suite({"mps": False})
    assert flagged.mps_requested
    suite_asks = LocalExecutor()
    suite_asks.use_suite({"mps": True})
    assert suite_asks.mps_requested and suite_asks.cluster_summary() == {"mps": {"requested": True}}
    suite_asks.run([], lambda c: None, lambda c, r: None, lambda c: None)
    status = suite_asks.run_summary()["mps"]
    assert status["active"] is False and "jobs is 1" in status["reason"]
    assert LocalExecutor().cluster_summary() == {} and LocalExecutor().run_summary() == {}
    turned_off = LocalExecutor(mps=False)   # --no-mps
    turned_off.use_suite({"mps": True})
    assert not turned_off.mps_requested


def test_ctrl_c_in_the_parallel_run_stops_the_daemon(control, monkeypatch):
    from harness.run.process_executor import ProcessExecutor

    def interrupted(self, *args):
        assert mps.PIPE_ENV in os.environ
        raise KeyboardInterrupt

    control.install()
    monkeypatch.setattr(mps, "visible_gpus", ONE_GPU)
    monkeypatch.setattr(ProcessExecutor, "run", interrupted)
    executor = LocalExecutor(jobs=2, mps=True)
    with pytest.raises(KeyboardInterrupt):
        executor.run([], lambda c: None, lambda c, r: None, lambda c: None)
    assert [c["stdin"] for c in control.calls()] == ["", "quit"] and mps.PIPE_ENV not in os.environ
    assert executor.run_summary()["mps"]["how"] == "started by ssmbench"


def test_mps_flag_with_the_ray_executor_is_a_usage_error(tmp_path, capsys):
    path = suite_file(tmp_path, SUITE)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--executor", "ray", "--mps"]) == EXIT_USAGE
    assert "--mps is for the local executor" in capsys.readouterr().err
    assert not out.exists()


def test_the_ray_executor_notes_a_suite_mps_key_and_starts_nothing():
    pytest.importorskip("ray")
    from harness.run.ray_executor import RayExecutor

    executor = RayExecutor()
    assert executor._mps_summary() == {}
    executor.use_suite({"mps": True})
    status = executor._mps_summary()["mps"]
    assert status["active"] is False and "local executor" in status["reason"]


def test_run_with_jobs_and_mps_records_the_daemon_in_meta(control, monkeypatch, tmp_path):
    """End to end: the CLI starts the (fake) daemon around the run, every cell's process sees it,
    it is stopped after, and meta.json says so."""
    control.install()
    monkeypatch.setattr(mps, "visible_gpus", ONE_GPU)
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    path = suite_file(tmp_path, SUITE + f"defaults: {{env_dir: '{env_dir}'}}\n")
    code, rows = run_and_load(tmp_path / "out", path, "--jobs", "2", "--mps")
    assert code == EXIT_OK
    assert set(rows.status) == {"ok"} and rows.cell_id.nunique() == 4
    meta = load_meta(next((tmp_path / "out").rglob("meta.json")).parent)
    status = meta["executor"]["mps"]
    assert meta["executor"]["jobs"] == 2
    assert status["active"] is True and status["how"] == "started by ssmbench"
    pipe = status["pipe_dir"]
    assert [(c["argv"], c["pipe"]) for c in control.calls()] == [("-d", pipe), ("", pipe)]
    seen = [json.loads(p.read_text()) for p in sorted(env_dir.glob("*.env"))]
    assert len(seen) == 4 and all(s == {mps.PIPE_ENV: pipe, mps.LOG_ENV: status["log_dir"]} for s in seen)
    assert mps.PIPE_ENV not in os.environ
