"""The noise-aware diff: timing statistics, quality tolerance, status changes, machines, exit codes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.analysis.diff import (DiffOptions, compare_quality, compare_timing, diff_runs, format_markdown,
                          format_text, min_two_sided_p)
from harness.analysis.cli import main as cli_main
from harness.analysis.report.runs import load_run, load_runs
from harness.analysis.report.synthetic import default_meta, speed_rows, task_rows, write_run


def _lognormal(rng, n, scale=1.0, sigma=0.03):
    return scale * np.exp(rng.normal(0.0, sigma, n))


# --------------------------------------------------------------------------- timing statistics


def test_real_ten_percent_slowdown_with_30_repeats_is_flagged():
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        base, new = _lognormal(rng, 30), _lognormal(rng, 30, scale=1.10)
        res = compare_timing(base, new, threshold=0.05, alpha=0.01, n_boot=500, rng=rng)
        if res["verdict"] == "regression":
            flagged += 1
            assert 1.05 < res["ratio"] < 1.16
            assert res["ci_low"] > 1.0 and res["p_value"] < 0.01
    assert flagged >= 19, f"a real 10% slowdown was flagged in only {flagged}/20 trials"


def test_same_distribution_false_alarm_rate_is_at_most_alpha():
    # threshold 0 leaves the decision to the test alone: its false-alarm rate must be <= alpha
    alpha, trials = 0.05, 400
    rng = np.random.default_rng(1234)
    alarms = 0
    for _ in range(trials):
        base, new = _lognormal(rng, 30, sigma=0.1), _lognormal(rng, 30, sigma=0.1)
        res = compare_timing(base, new, threshold=0.0, alpha=alpha, n_boot=100, rng=rng)
        assert res["verdict"] in ("unchanged", "inconclusive", "regression", "improvement")
        alarms += res["verdict"] in ("regression", "improvement")
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert alarms / trials <= bound, f"{alarms}/{trials} false alarms (bound {bound:.3f})"


def test_same_distribution_with_default_threshold_never_alarms():
    rng = np.random.default_rng(7)
    verdicts = [compare_timing(_lognormal(rng, 30), _lognormal(rng, 30), n_boot=100, rng=rng)["verdict"]
                for _ in range(200)]
    assert verdicts.count("unchanged") == 200


def test_too_few_repeats_is_never_an_alarm_and_a_large_change_is_inconclusive():
    res = compare_timing([1.0, 1.01, 0.99], [2.0, 2.02, 1.98], alpha=0.01)
    assert res["verdict"] == "inconclusive"  # a x2 change the test cannot confirm is shown, not hidden
    assert "add repeats" in res["note"]
    assert res["ratio"] == pytest.approx(2.0, rel=1e-6)
    assert min_two_sided_p(4, 4) > 0.01 > min_two_sided_p(5, 5)
    assert compare_timing([1.0], [5.0])["verdict"] == "inconclusive"
    assert compare_timing([1.0], [1.01])["verdict"] == "not enough data"


def test_timing_direction_throughput_down_is_a_regression_time_down_an_improvement():
    rng = np.random.default_rng(3)
    base = _lognormal(rng, 30)
    faster = _lognormal(rng, 30, scale=0.8)
    assert compare_timing(base, faster, direction=-1, rng=rng)["verdict"] == "improvement"
    assert compare_timing(base, faster, direction=+1, rng=rng)["verdict"] == "regression"


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("base,new,direction,verdict", [
    (0.90, 0.90, +1, "unchanged"),
    (0.90, 0.895, +1, "within tolerance"),
    (0.90, 0.88, +1, "regression"),
    (0.90, 0.92, +1, "improvement"),
    (1.00, 1.02, -1, "regression"),          # loss up
    (1.00, 0.98, -1, "improvement"),         # loss down
    (0.90, float("nan"), +1, "regression"),  # became NaN
])
def test_quality_tolerance_and_direction(base, new, direction, verdict):
    assert compare_quality([base], [new], tol=0.01, direction=direction)["verdict"] == verdict


# --------------------------------------------------------------------------- whole runs


def _speed_run(tmp_path, name, *, seed, slowdown=None, failures=None, gpu="NVIDIA H100 80GB HBM3", torch="2.13.0"):
    meta = default_meta(name, "speed-test", "speed", gpu=gpu, torch=torch)
    rows = speed_rows(seed=seed, slowdown=slowdown, failures=failures, seq_lens=(256, 512))
    return write_run(tmp_path / "results" / "speed-test" / name, rows, meta)


def _task_run(tmp_path, name, **kw):
    meta = default_meta(name, "task-test", "task")
    return write_run(tmp_path / "results" / "task-test" / name, task_rows(**kw), meta)


def test_diff_flags_only_the_slowed_impl_and_status_changes(tmp_path):
    base = _speed_run(tmp_path, "base", seed=1)
    new = _speed_run(tmp_path, "new", seed=2, slowdown={"s6.chunked": 1.10},
                     failures={("attention.sdpa", 512): "oom"})
    res = diff_runs([load_run(base)], [load_run(new)], DiffOptions(n_boot=200))
    regressions = [c for c in res.comparisons if c.verdict == "regression"]
    assert regressions and all(c.metric == "time_ms" and "s6.chunked" in c.label for c in regressions)
    assert not [c for c in res.comparisons if "attention" in c.label and c.verdict == "regression"]
    # summaries derived from the per-repeat rows are not judged twice
    assert not [c for c in res.comparisons if c.metric in ("time_ms_median", "time_ms_iqr", "tokens_per_s")]
    asked = diff_runs([load_run(base)], [load_run(new)], DiffOptions(metrics=["tokens_*"]))
    assert {c.metric for c in asked.comparisons} == {"tokens_per_s"}
    # one value per side cannot be tested: the slowed impl's x0.9 is shown as inconclusive, never as a verdict
    assert {c.verdict for c in asked.comparisons} == {"not enough data", "inconclusive"}
    assert all("s6.chunked" in c.label for c in asked.comparisons if c.verdict == "inconclusive")
    assert [(s.base, s.new) for s in res.status_changes] == [("ok", "oom")]
    assert res.exit_code("regression") == 1
    assert res.exit_code("never") == 0
    text = format_text(res)
    assert "ok -> oom" in text and "regression" in text


def test_status_change_fails_even_when_gating_on_quality_only(tmp_path):
    base = _speed_run(tmp_path, "base", seed=1)
    new = _speed_run(tmp_path, "new", seed=1, failures={("s6.chunked", 256): "error"})
    res = diff_runs([load_run(base)], [load_run(new)])
    assert res.exit_code("regression", gate=["quality"]) == 1
    fixed = diff_runs([load_run(new)], [load_run(base)])
    assert [s.verdict for s in fixed.status_changes] == ["fixed"]
    assert fixed.exit_code("regression") == 0 and fixed.exit_code("change") == 1


def test_cells_on_one_side_are_listed_not_compared(tmp_path):
    meta = default_meta("b", "speed-test", "speed")
    base = write_run(tmp_path / "b", speed_rows(seq_lens=(256, 512)), meta)
    new = write_run(tmp_path / "n", speed_rows(seq_lens=(512, 1024)), default_meta("n", "speed-test", "speed"))
    res = diff_runs([load_run(base)], [load_run(new)])
    assert {l for _, l in res.only_base} == {"impl=s6.chunked, seq_len=256", "impl=attention.sdpa, seq_len=256"}
    assert len(res.only_new) == 2
    assert all("512" in c.label for c in res.comparisons)


def test_cross_machine_refuses_timing_verdicts_unless_asked(tmp_path):
    base = _speed_run(tmp_path, "base", seed=1, gpu="NVIDIA H100 80GB HBM3")
    new = _speed_run(tmp_path, "new", seed=2, gpu="NVIDIA A100-SXM4-40GB", slowdown={"s6.chunked": 1.5})
    res = diff_runs([load_run(base)], [load_run(new)], DiffOptions(n_boot=200))
    assert res.timing_withheld and any("gpu" in d for d in res.machine_differences)
    timing = [c for c in res.comparisons if c.family == "timing"]
    assert timing and all(c.verdict == "no verdict" for c in timing)
    assert res.exit_code("regression") == 0
    md = format_markdown(res)
    assert "different machines" in md and "--cross-machine" in md
    judged = diff_runs([load_run(base)], [load_run(new)], DiffOptions(cross_machine=True, n_boot=200))
    assert judged.exit_code("regression") == 1


def test_version_difference_counts_as_another_machine(tmp_path):
    base = _speed_run(tmp_path, "base", seed=1, torch="2.13.0")
    new = _speed_run(tmp_path, "new", seed=1, torch="2.14.0")
    res = diff_runs([load_run(base)], [load_run(new)])
    assert any(d.startswith("torch") for d in res.machine_differences)


def test_quality_shift_is_a_regression_identical_runs_are_unchanged(tmp_path):
    base = _task_run(tmp_path, "base", seed=0)
    same = _task_run(tmp_path, "same", seed=0)
    worse = _task_run(tmp_path, "worse", seed=0, accuracy_shift=-0.05)
    res = diff_runs([load_run(base)], [load_run(same)])
    quality = [c for c in res.comparisons if c.family == "quality"]
    assert quality and all(c.verdict == "unchanged" for c in quality)
    assert res.exit_code("change", gate=["quality"]) == 0
    res = diff_runs([load_run(base)], [load_run(worse)])
    acc = [c for c in res.comparisons if c.metric == "accuracy"]
    assert acc and all(c.verdict == "regression" for c in acc if c.base is not None and c.base > 0.06)
    assert all("eval_seq_len" in c.key for c in acc)
    assert res.exit_code("regression", gate=["quality"]) == 1
    # learning-curve points are only compared when asked
    assert not [c for c in res.comparisons if "step" in c.key]
    curves = diff_runs([load_run(base)], [load_run(worse)], DiffOptions(include_curves=True))
    assert [c for c in curves.comparisons if "step" in c.key]


def test_quality_changes_of_unrepeatable_gpu_task_cells_are_inconclusive(tmp_path):
    """A task cell trained on CUDA without train.deterministic does not repeat for a seed: one seed per
    side cannot confirm a quality change, so it is "inconclusive" (shown, with the reason) and does not fail
    the gate; deterministic or CPU cells keep "regression" and get no note."""
    from harness.analysis.diff import UNREPEATABLE_NOTE

    def verdicts(params):
        base = _task_run(tmp_path / str(len(list(tmp_path.iterdir()))), "base", seed=0, extra_params=params)
        worse = _task_run(tmp_path / str(len(list(tmp_path.iterdir()))), "worse", seed=0, accuracy_shift=-0.05,
                          extra_params=params)
        res = diff_runs([load_run(base)], [load_run(worse)])
        acc = [c for c in res.comparisons if c.metric == "accuracy" and c.verdict in ("regression", "inconclusive")]
        assert acc
        return {(c.verdict, UNREPEATABLE_NOTE in c.note) for c in acc}, res.exit_code("regression")

    assert verdicts({"device": "cuda"}) == ({("inconclusive", True)}, 0)
    assert verdicts({"device": "cuda", "train.deterministic": True}) == ({("regression", False)}, 1)
    assert verdicts({}) == ({("regression", False)}, 1)
    assert verdicts({"train.deterministic": False}) == ({("regression", False)}, 1)  # CPU: repeatable


def test_fail_on_change_counts_changes_within_tolerance(tmp_path):
    base = _task_run(tmp_path, "base", seed=0)
    nudged = _task_run(tmp_path, "nudged", seed=0, accuracy_shift=-0.002)
    res = diff_runs([load_run(base)], [load_run(nudged)])
    assert any(c.verdict == "within tolerance" for c in res.comparisons)
    assert res.exit_code("regression") == 0
    assert res.exit_code("change") == 1


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_formats(tmp_path, capsys):
    base = _speed_run(tmp_path, "base", seed=1)
    new = _speed_run(tmp_path, "new", seed=2, slowdown={"s6.chunked": 1.10})
    assert cli_main(["diff", str(base), str(new)]) == 1
    assert cli_main(["diff", str(base), str(new), "--fail-on", "never"]) == 0
    assert cli_main(["diff", str(base), str(new), "--gate", "memory"]) == 0
    assert cli_main(["diff", str(base), str(new), "--threshold", "50%"]) == 0
    capsys.readouterr()
    assert cli_main(["diff", str(base), str(new), "--format", "json", "--metric", "time_ms"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {c["metric"] for c in data["comparisons"]} == {"time_ms"}
    assert data["counts"]["regression"] >= 1
    out_file = tmp_path / "diff.md"
    cli_main(["diff", f"{base},{base}", str(new), "--format", "md", "-o", str(out_file)])
    md = out_file.read_text()
    assert md.startswith("### ssmbench diff") and "<details>" in md


def test_cli_bad_path_exits_2_with_one_line(tmp_path, capsys):
    assert cli_main(["diff", str(tmp_path / "nope"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert cli_main(["diff", str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_cli_rejects_bad_gate(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["diff", "a", "b", "--gate", "speed"])
    assert exc.value.code == 2


def test_results_roots_compare_every_suite_newest_run(tmp_path):
    """``diff results/baselines results``: each side is the newest run of every suite in the root."""
    for root, seed in (("base", 1), ("new", 1)):
        for name in ("old", "z-newest"):
            write_run(tmp_path / root / "smoke-speed" / name, speed_rows(seq_lens=(128,), repeats=6, seed=seed),
                      default_meta(name, "smoke-speed", "speed"))
        write_run(tmp_path / root / "smoke-task" / "r", task_rows(archs=("mamba",), steps=(0, 5)),
                  default_meta("r", "smoke-task", "task"))
    res = diff_runs(load_runs([tmp_path / "base"]), load_runs([tmp_path / "new"]))
    assert sorted(r["run_id"] for r in res.base_runs) == ["r", "z-newest"]
    assert {c.family for c in res.comparisons} >= {"timing", "quality"}
    assert all(c.verdict in ("unchanged", "not enough data") for c in res.comparisons)
    assert not res.status_changes and res.exit_code("change") == 0
    assert cli_main(["diff", str(tmp_path / "base"), str(tmp_path / "new"), "--gate", "quality"]) == 0
