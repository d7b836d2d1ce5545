"""The ssmbench command line: list, validate, run --dry-run, exit codes, progress lines, smoke suite."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO, run_dirs

SUITE = """
name: clidemo
kind: fake
device: cpu
defaults: {seq_len: 8}
sweep:
  model.mixer: [s4, s6]
  batch: [1, 2]
"""


def test_list_shows_registries_kinds_and_suites(cli, tmp_path, write_suite):
    (tmp_path / "suites" / "sub").mkdir(parents=True)
    write_suite(SUITE, "suites/sub/mine.yaml")
    res = cli("list")
    assert res.code == 0, res.err
    for heading in ("mixers (model.mixer)", "archs (model.arch)", "tasks (task.name)",
                    "benchmark targets (impl)", "suite kinds (kind)", "suites:"):
        assert heading in res.out
    assert "fake" in res.out and "clidemo" in res.out and "sub/mine.yaml" in res.out


def test_list_params_prints_counts_or_says_why_not(cli):
    res = cli("list", "--params")
    try:
        from models import paper_param_counts  # noqa: F401
    except ImportError:
        assert res.code == 1 and "paper_param_counts() is missing" in res.err
    else:
        assert res.code == 0 and "params" in res.out.splitlines()[0]


def test_dry_run_prints_the_cells_and_writes_nothing(cli, write_suite, tmp_path):
    path = write_suite(SUITE)
    res = cli("run", path, "--dry-run")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert "4 cells" in lines[0]
    assert lines[1].split() == ["cell_id", "model.mixer", "batch"]
    assert len([line for line in lines if line[:12].isalnum() and len(line.split()) == 3]) == 4
    assert not (tmp_path / "results").exists()


def test_validate_and_dry_run_take_set_filter_and_device(cli, write_suite):
    path = write_suite(SUITE)
    res = cli("run", path, "--dry-run", "--filter", "model.mixer=s6", "--set", "seq_len=4", "--device", "cuda")
    assert res.code == 0, res.err
    assert "2 cells" in res.out
    res = cli("validate", path, "--set", "batch=3")
    assert res.code == 0 and "2 cells, valid" in res.out


def test_run_prints_one_line_per_cell_without_a_terminal(cli, write_suite, tmp_path):
    path = write_suite(SUITE)
    res = cli("run", path, "--no-report")
    assert res.code == 0, res.err
    done = [line for line in res.out.splitlines() if line.startswith("[")]
    assert len(done) == 4 and done[-1].startswith("[4/4] ok")
    assert "clidemo/" in res.out.splitlines()[-1] and "4 ok" in res.out
    quiet = cli("run", path, "--no-report", "--quiet")
    assert not [line for line in quiet.out.splitlines() if line.startswith("[")]
    assert len(run_dirs(tmp_path / "results")) == 2


def test_real_process_exit_codes_and_no_traceback(cli_subprocess, write_suite, tmp_path):
    bad = write_suite(SUITE.replace("seq_len: 8", "seq_len: -8"), "bad.yaml")
    res = cli_subprocess("run", bad)
    assert res.returncode == 2
    assert "bad.yaml:4: seq_len: input should be greater than 0 (got -8)" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "results").exists()
    failing = write_suite(SUITE.replace("seq_len: 8", "seq_len: 8, behavior: error"), "fail.yaml")
    res = cli_subprocess("run", failing, "--no-report", "--quiet")
    assert res.returncode == 1, res.stderr


def test_ray_executor_without_ray_is_a_usage_error(cli, write_suite, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    res = cli("run", write_suite(SUITE), "--executor", "ray")
    assert res.code == 2 and "ray is not installed: pip install -e '.[ray]'" in res.err
    assert not (tmp_path / "results").exists()


def test_unknown_subcommand_and_missing_suite_are_usage_errors(cli):
    with pytest.raises(SystemExit) as info:
        cli("frobnicate")
    assert info.value.code == 2
    assert cli("run").code == 2


SMOKE = REPO / "suites" / "smoke.yaml"


def test_smoke_suite_is_valid(cli):
    res = cli("validate", SMOKE, "--quiet")
    assert res.code == 0, res.err
    names = [line.split("'")[1] for line in res.out.splitlines()]
    assert names == ["smoke-task", "smoke-induction", "smoke-speed", "smoke-memory", "smoke-decode"]


def test_readme_quick_start_matches_ci():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_command = "python -m pytest -q"
    assert test_command in readme and test_command in ci
    assert "pip install torch==2.13.0" in readme and "ssmbench run suites/smoke.yaml" in readme
    assert Path(REPO / ".ci" / "run").stat().st_mode & 0o111


def test_every_suite_in_the_repo_is_valid(cli):
    res = cli("validate", REPO / "suites", "--quiet")
    assert res.code == 0, res.err


def test_readme_example_suite_is_valid(cli, tmp_path):
    import re
    block = re.search(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    (tmp_path / "example.yaml").write_text(block)
    res = cli("validate", tmp_path / "example.yaml")
    assert res.code == 0, res.err
    assert res.out.splitlines()[1].split()[:4] == ["cell_id", "model.mixer", "model.arch", "task.seq_len"]


def test_real_kinds_reject_unknown_impls_tasks_and_mixers_with_suggestions(cli, tmp_path):
    smoke = SMOKE.read_text()
    bad = (smoke.replace("impl: [s6.reference,", "impl: [s6.referenc,")
                .replace("name: selective_copying,", "name: selective_copy,")
                .replace("sweep:\n  model.mixer: [s6, s4]", "sweep:\n  model.mixer: [s6, s5]"))
    (tmp_path / "bad.yaml").write_text(bad)
    res = cli("run", tmp_path / "bad.yaml")
    assert res.code == 2
    assert "unknown impl 's6.referenc' — did you mean 's6.reference'" in res.err
    assert "unknown task 'selective_copy' — did you mean 'selective_copying'" in res.err
    assert "unknown mixer 's5'" in res.err
    assert not (tmp_path / "results").exists()


def test_set_and_filter_across_several_suites_go_where_they_fit(cli):
    """smoke.yaml mixes task and bench kinds: --set train.* reaches the task suites only, --filter
    model.mixer keeps the suites whose cells have that key, and a key that fits no suite is an error."""
    smoke = str(REPO / "suites" / "smoke.yaml")
    res = cli("run", smoke, "--dry-run", "--set", "train.steps=2", "--filter", "model.mixer=s6")
    assert res.code == 0, res.err
    assert "smoke-task" in res.out and "smoke-speed" not in res.out  # speed cells have no model.mixer
    res = cli("run", smoke, "--dry-run", "--filter", "impl=s6.chunked")
    assert res.code == 0, res.err
    assert "smoke-speed" in res.out and "smoke-task" not in res.out
    assert ("note: --filter impl=s6.chunked keeps no cell of suites smoke-task, smoke-induction, smoke-decode; "
            "they do not run (2 of 5 suites do)") in res.err   # the suites left out are named, not dropped silently
    res = cli("run", smoke, "--dry-run", "--filter", "seq_len=64")   # smoke-memory has seq_len, but only 128
    assert res.code == 0 and "smoke-memory" in res.err.split("note:")[1] and "(1 of 5 suites do)" in res.err
    res = cli("run", smoke, "--dry-run", "--set", "train.stepz=2")
    assert res.code == 2 and "did you mean 'steps'" in res.err
    res = cli("run", smoke, "--dry-run", "--filter", "modle.mixer=s6")
    assert res.code == 2 and "no cell of any suite given has this key" in res.err


def test_version_names_the_release_and_commit(cli, capsys):
    with pytest.raises(SystemExit) as info:
        cli("--version")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("ssmbench ") and len(out.split()) >= 2


def test_a_closed_pipe_ends_a_listing_quietly(tmp_path):
    """``ssmbench list | head``: the reader stopped, which is not an error (it said
    ``error: [Errno 32] Broken pipe`` and exited 1)."""
    import subprocess
    from conftest import subprocess_env
    proc = subprocess.Popen([sys.executable, "-m", "harness", "list"], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err


def test_an_unwritable_out_is_a_usage_error_naming_the_path(cli, write_suite, tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    res = cli("run", write_suite(SUITE), "--out", tmp_path / "afile" / "results", "--no-report", "--quiet")
    assert res.code == 2, res
    assert "afile" in res.err and "--out" in res.err and "Traceback" not in res.err


def test_progress_lines_leave_out_keys_a_cell_does_not_have(cli, write_suite):
    """Only the ``include`` cell has ``sleep_s``: the grid cells' lines said ``sleep_s=None``."""
    path = write_suite(SUITE + "include:\n  - {model.mixer: attention, batch: 3, sleep_s: 0.0}\n")
    res = cli("run", path, "--no-report")
    assert res.code == 0, res.err
    assert "=None" not in res.out and "sleep_s=0.0" in res.out


def test_a_filter_value_no_cell_has_exits_2_and_writes_nothing(cli, write_suite, tmp_path):
    res = cli("run", write_suite(SUITE), "--filter", "model.mixer=s7")
    assert res.code == 2, res
    assert "--filter model.mixer='s7': no cell has this value — did you mean" in res.err
    assert not (tmp_path / "results").exists() and not (tmp_path / "reports").exists()
    assert cli("validate", write_suite(SUITE), "--filter", "batch=3").code == 2


def test_a_filter_value_of_one_suite_of_several_is_fine_of_none_is_an_error(cli, write_suite):
    two = SUITE + "---\n" + SUITE.replace("clidemo", "other").replace("[s4, s6]", "[attention]")
    path = write_suite(two)
    res = cli("validate", path, "--filter", "model.mixer=attention")
    assert res.code == 0, res.err
    assert "'other'" in res.out and "'clidemo'" not in res.out
    res = cli("validate", path, "--filter", "model.mixer=atention")
    assert res.code == 2 and "did you mean 'attention'" in res.err


def test_a_directory_without_suites_is_an_error(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no suites here")
    for command in ("run", "validate"):
        res = cli(command, tmp_path / "empty")
        assert res.code == 2, (command, res)
        assert "no suite files" in res.err and "empty" in res.err


def test_the_report_folder_does_not_depend_on_the_out_folders_name(cli, write_suite, tmp_path):
    """It went beside --out when that was named ``results`` and under the current directory otherwise."""
    path = write_suite(SUITE)
    for out in ("elsewhere/results", "results_f"):
        res = cli("run", path, "--out", out, "--quiet", "--filter", "batch=1", "--filter", "model.mixer=s4")
        assert res.code == 0, res.err
        (run_dir,) = run_dirs(tmp_path / out)
        report = tmp_path / "reports" / "clidemo" / run_dir.name
        assert (report / "report.md").is_file(), res.out
        assert f"report: {Path('reports') / 'clidemo' / run_dir.name}" in res.out or str(report) in res.out
    res = cli("run", path, "--quiet", "--filter", "batch=1", "--filter", "model.mixer=s4", "--report-dir", "mine")
    assert res.code == 0 and (tmp_path / "mine" / "report.md").is_file()
    (tmp_path / "afile").write_text("")
    res = cli("run", path, "--quiet", "--filter", "batch=1", "--report-dir", tmp_path / "afile" / "rep")
    assert res.code == 2 and "afile" in res.err
    assert len(run_dirs(tmp_path / "results")) == 1  # refused before any cell ran


def test_list_of_a_suites_dir_that_does_not_exist_is_an_error(cli, tmp_path):
    res = cli("list", "--suites-dir", tmp_path / "nope")
    assert res.code == 2 and "--suites-dir" in res.err and "no such directory" in res.err
    assert cli("list").code == 0  # the default folder may be absent (run from elsewhere): it says so


def test_ray_flags_with_the_local_executor_are_refused_not_ignored(cli, write_suite, tmp_path):
    res = cli("run", write_suite(SUITE), "--gpus-per-cell", "0.5", "--retries", "2")
    assert res.code == 2 and "--gpus-per-cell, --retries: for --executor ray only" in res.err
    assert not (tmp_path / "results").exists()


def test_a_filter_list_with_a_value_no_cell_has_is_an_error(cli, write_suite):
    path = write_suite(SUITE)
    res = cli("validate", path, "--filter", "model.mixer=[s6, s7]")
    assert res.code == 2 and "no cell has the value 's7'" in res.err and "did you mean" in res.err
    assert cli("validate", path, "--filter", "model.mixer=[s6, s4]").code == 0


def test_a_report_that_cannot_be_written_makes_the_run_exit_1(cli, write_suite, tmp_path, monkeypatch):
    """The results are safe, but the run did less than asked: it says so and exits 1 (it exited 0)."""
    import harness.analysis.report as report

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report, "build_report", broken)
    res = cli("run", write_suite(SUITE), "--quiet", "--filter", "batch=1")
    assert res.code == 1 and "report: failed (RuntimeError: no fonts); the results are written" in res.err
    assert len(run_dirs(tmp_path / "results")) == 1


def test_a_run_whose_output_is_closed_stops_with_exit_1_and_can_be_resumed(write_suite, tmp_path):
    """Unlike a listing, a run that cannot print did less than asked: not 0, and its directory resumes."""
    import subprocess
    from conftest import subprocess_env
    path = write_suite(SUITE)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--no-report"], cwd=tmp_path,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1, err
    assert "broken pipe" in err and "--resume" in err and "Traceback" not in err
    assert len(run_dirs(tmp_path / "results")) == 1
