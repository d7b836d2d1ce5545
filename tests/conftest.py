"""Shared fixtures: the test-only suite kind "fake", suite files in tmp dirs, running the CLI.

Importing :mod:`fake_kind` registers ``kind: fake`` (see that module for the behaviours it can be
told to have).  ``cli`` runs ``ssmbench`` in-process (fast); ``cli_subprocess`` runs
``python -m harness`` in a child process with the fake kind loaded through SSMBENCH_PLUGINS, for
the tests that need real exit codes or a real kill.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, List, NamedTuple

import pytest

import fake_kind  # noqa: F401  (registers the "fake" kind)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["SSMBENCH_PLUGINS"] = "fake_kind"
    return env


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """write_suite(text, name="suite.yaml") -> path of a dedented YAML file in tmp_path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., CliResult]:
    """cli("run", "suite.yaml", ...) -> (exit code, stdout, stderr), run in-process with cwd=tmp_path."""
    from harness.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli_subprocess(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """cli_subprocess("run", ...) -> CompletedProcess of ``python -m harness ...`` in tmp_path."""

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=tmp_path,
                              env=subprocess_env(), capture_output=True, text=True, timeout=timeout)

    return run


def suite_file(directory: Path, body: str, name: str = "suite.yaml") -> Path:
    """A dedented YAML suite file in ``directory`` (for tests that are not fixtures-friendly)."""
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def run_and_load(out: Path, suite: Path, *flags: str):
    """``ssmbench run SUITE FLAGS --out OUT`` in-process -> (exit code, the one run's rows, tidy)."""
    from harness.cli import main
    from harness.store.results import load

    code = main(["run", str(suite), "--out", str(out), "--quiet", "--no-report", *flags])
    dirs = sorted(p.parent for p in Path(out).rglob("rows.jsonl"))
    assert len(dirs) == 1, dirs
    return code, load(dirs[0])


#: A sweep of the ray_fake kind (tests/ray_fake_kind.py) whose x=3 cells run out of memory, so x=4 is
#: skipped; any executor must give OOM_SWEEP_STATUSES for it.
OOM_SWEEP = """
    name: fake-oom
    kind: ray_fake
    defaults: {oom_at: 3}
    sweep: {impl: [a, b], x: [1, 2, 3, 4]}
"""
OOM_SWEEP_STATUSES = {(impl, x): status for impl in "ab"
                      for x, status in ((1, "ok"), (2, "ok"), (3, "oom"), (4, "skipped"))}

#: Columns two runs of the same cells must agree on, whatever executor ran them.
COMPARED = ["cell_id", "metric", "repeat", "status", "value", "message", "impl", "x"]


def comparable(frame):
    """The rows of a run as a table to compare across executors (sorted, COMPARED columns)."""
    cols = [c for c in COMPARED if c in frame.columns]
    return frame[cols].sort_values(["cell_id", "metric", "repeat"]).reset_index(drop=True)


def run_dirs(root: Path) -> List[Path]:
    """Every run directory (holding suite.yaml) under ``root``."""
    return sorted(p.parent for p in Path(root).rglob("suite.yaml") if (p.parent / "meta.json").exists())
