"""The studies behind README and reports/ claims (harness/studies/) still run: each at tiny sizes on the CPU, or,
where it needs a GPU, its set-up checked and its refusal clear.  A harness change that breaks one fails here."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import harness.studies
from conftest import REPO, subprocess_env

STUDIES = [m.name for m in pkgutil.iter_modules(harness.studies.__path__)]


def test_every_study_is_listed_in_the_package_docstring_and_has_a_main():
    assert len(STUDIES) >= 7
    for name in STUDIES:
        module = importlib.import_module(f"harness.studies.{name}")
        assert callable(getattr(module, "main", None)), f"harness.studies.{name} has no main(argv)"
        assert f"``{name}``" in harness.studies.__doc__, f"list {name} in harness/studies/__init__.py"


def test_importing_a_study_runs_nothing():
    """In a fresh process (a study may set TRITON_INTERPRET before kernels load): importing prints nothing."""
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module('harness.studies.' + n)"
    out = subprocess.run([sys.executable, "-c", code, *STUDIES], cwd=REPO, env=subprocess_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "", f"importing the studies printed: {out.stdout[:300]}"


def test_small_op_ab_checks_its_variants_on_the_cpu(capsys):
    from harness.studies import small_op_ab

    small_op_ab.main(["--device", "cpu"])
    out = capsys.readouterr().out
    assert "rmsnorm d=64" in out and "dwconv k=4 d=128" in out
    errs = [float(line.rsplit("err", 1)[1]) for line in out.splitlines() if " err " in line]
    assert errs and max(errs) < 1e-4


def test_decode_step_kernels_counts_ops_per_step(capsys):
    from harness.studies import decode_step_kernels

    decode_step_kernels.main(batches=(1,), prompt=2, vocab=64,
                             models=[("mamba", "s6", 1, 48), ("transformer", "attention", 2, 48)])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| mamba")
            or line.startswith("| transformer")]
    assert len(rows) == 2
    for row in rows:
        assert int(row[4]) > 0   # ops launched by one step


def test_induction_extrapolation_trains_and_breaks_accuracy_down(capsys):
    from harness.studies import induction_extrapolation

    induction_extrapolation.main(["--seeds", "0", "--steps", "2", "--lengths", "64", "--size", "4",
                                  "--eval-size", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "== seed 0: 2 steps" in out and "accuracy by gap" in out and "accuracy by first-trigger" in out


def test_determinism_check_compares_two_runs_of_one_seed(capsys):
    from harness.studies import determinism_check

    determinism_check.main(["--device", "cpu", "--steps", "2", "--length", "32", "none/s6"])
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("none/s6")]
    assert [line[1] for line in lines] == ["default", "deterministic"]
    assert all(float(line[2]) == 0.0 for line in lines)   # the CPU is bitwise repeatable for a seed


def test_graph_step_timing_runs_eager_and_graphed_steps(capsys):
    from harness.studies import graph_step_timing

    graph_step_timing.main(["--device", "cpu", "--steps", "2", "--length", "32"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("none/s6", "h3/s4", "mamba/s6"))]
    assert len(rows) == 3 and all(float(r[1]) > 0 for r in rows)   # eager ms; graphed needs CUDA (nan here)


def test_train_step_profile_cases_are_valid_cells_and_it_refuses_without_cuda(monkeypatch):
    from harness.kinds.task import TaskCellConfig
    from harness.studies import train_step_profile

    cases = train_step_profile.cases()
    assert len(cases) == 17
    for case in cases:
        TaskCellConfig.model_validate(case)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit, match="GPU machine"):
        train_step_profile.main([])


@pytest.mark.slow
def test_activation_memory_separates_layer_and_head_bytes():
    out = subprocess.run([sys.executable, "-m", "harness.studies.activation_memory", "--dims", "8", "16",
                          "--lengths", "4", "8"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| mamba")
            or line.startswith("| transformer")]
    assert len(rows) == 4
    for row in rows:
        assert float(row[3]) > 0 and float(row[4]) > float(row[3])   # per layer, growing with d_model
