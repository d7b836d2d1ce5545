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


def test_bootstrap_interval_covers_the_true_ratio_at_its_level_with_the_expected_width():
    """Samples with a known ratio of medians (1.1): the 1 - alpha interval must contain it in about
    1 - alpha of the trials, and be as wide as the normal theory says (a sample median's sd is
    sqrt(pi/2) sigma/sqrt(n); a log ratio of two has sqrt(2) times that).  An interval at level alpha
    instead of 1 - alpha covers ~10% and is ~15x narrower."""
    import secrets
    seed = secrets.randbits(31)
    rng = np.random.default_rng(seed)
    alpha, n, sigma, ratio, trials = 0.1, 30, 0.1, 1.1, 200
    covered, log_widths = 0, []
    for _ in range(trials):
        base, new = _lognormal(rng, n, sigma=sigma), _lognormal(rng, n, scale=ratio, sigma=sigma)
        res = compare_timing(base, new, threshold=0.05, alpha=alpha, n_boot=400, rng=rng)
        covered += res["ci_low"] <= ratio <= res["ci_high"]
        log_widths.append(math.log(res["ci_high"] / res["ci_low"]))
    coverage = covered / trials
    expected_width = 2 * 1.645 * math.sqrt(2 * math.pi / 2) * sigma / math.sqrt(n)  # z_{0.95} = 1.645
    width = float(np.median(log_widths))
    assert 0.8 <= coverage <= 0.99, f"seed={seed}: 90% interval covered the true ratio in {coverage:.0%}"
    assert 0.6 < width / expected_width < 1.6, f"seed={seed}: log width {width:.4f}, theory {expected_width:.4f}"


def test_same_distribution_false_alarm_rate_is_at_most_alpha():
    # threshold 0 leaves the decision to the test alone: its false-alarm rate must be <= alpha
    alpha, trials = 0.05, 400
    rng = np.random.default_rng(1234)
    alarms = 0
    for _ in range(trials):
        base, new = _lognormal(rng, 30, sigma=0.1), _lognormal(rng, 30, sigma=0.1)
        res = compare_timing(base, new, threshold=0.0, alpha=alpha, n_boot=100, rng=rng)
        assert res["verdict"] in ("unchanged", "regression", "improvement")
        alarms += res["verdict"] != "unchanged"
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert alarms / trials <= bound, f"{alarms}/{trials} false alarms (bound {bound:.3f})"


def test_same_distribution_with_default_threshold_never_alarms():
    rng = np.random.default_rng(7)
    verdicts = [compare_timing(_lognormal(rng, 30), _lognormal(rng, 30), n_boot=100, rng=rng)["verdict"]
                for _ in range(200)]
    assert verdicts.count("unchanged") == 200


def test_too_few_repeats_is_not_enough_data_never_an_alarm():
    res = compare_timing([1.0, 1.01, 0.99], [2.0, 2.02, 1.98], alpha=0.01)
    assert res["verdict"] == "not enough data"
    assert "add repeats" in res["note"]
    assert res["ratio"] == pytest.approx(2.0, rel=1e-6)
    assert min_two_sided_p(4, 4) > 0.01 > min_two_sided_p(5, 5)
    assert compare_timing([1.0], [5.0])["verdict"] == "not enough data"


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


def test_min_two_sided_p_is_two_over_the_number_of_orderings():
    assert min_two_sided_p(5, 5) == pytest.approx(2 / 252)
    assert min_two_sided_p(3, 2) == pytest.approx(2 / 10)
    assert min_two_sided_p(1, 1) == 1.0                     # 2/2, capped at 1
    assert min_two_sided_p(0, 5) == min_two_sided_p(5, 0) == 1.0


def test_bootstrap_interval_brackets_the_ratio_of_medians_and_narrows_with_level():
    from harness.analysis.diff import bootstrap_ratio_ci
    base = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98])
    new = 2 * base
    lo, hi = bootstrap_ratio_ci(base, new, 0.99, 300, np.random.default_rng(0))
    assert lo <= 2.0 <= hi and isinstance(lo, float) and isinstance(hi, float)
    lo50, hi50 = bootstrap_ratio_ci(base, new, 0.5, 300, np.random.default_rng(0))
    assert lo <= lo50 <= hi50 <= hi and (hi50 - lo50) < (hi - lo)
    # resampling draws len(base) from base and len(new) from new: constant samples give a point
    assert bootstrap_ratio_ci(np.full(3, 2.0), np.full(5, 3.0), 0.9, 50, np.random.default_rng(0)) == (1.5, 1.5)


def test_timing_result_fields_and_notes():
    rng = np.random.default_rng(5)
    base, new = _lognormal(rng, 20), _lognormal(rng, 20, scale=1.5)
    res = compare_timing(base, new, threshold=0.05, alpha=0.01, n_boot=200, rng=rng)
    assert res["verdict"] == "regression" and res["p_value"] < 0.01
    assert res["ratio"] == pytest.approx(float(np.median(new) / np.median(base)))
    assert res["ci_low"] < res["ratio"] < res["ci_high"]
    assert res["note"] == f"ratio {res['ratio']:.3f} outside ±5%, p={res['p_value']:.2g} < 0.01"
    same = compare_timing(base, base * 1.01, threshold=0.05, alpha=0.01, n_boot=50, rng=rng)
    assert same["verdict"] == "unchanged" and same["note"].startswith("within ±5%")
    noisy = compare_timing([1, 2, 3, 4, 5, 6], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5], alpha=0.01, n_boot=50, rng=rng)
    assert noisy["verdict"] == "unchanged" and noisy["note"] == f"not significant (p={noisy['p_value']:.2g})"
    few = compare_timing([1.0, 1.1], [1.0, 1.2, 1.3], alpha=0.01)
    assert few["note"] == "2 vs 3 samples: the smallest reachable p is 0.2 >= alpha 0.01; add repeats"
    assert few["p_value"] is None and few["ci_low"] is None
    zero = compare_timing([0.0] * 6, [1.0] * 6, alpha=0.01)
    assert (zero["verdict"], zero["ratio"], zero["note"]) == ("not enough data", None, "base median is zero")
    nonfinite = compare_timing([1.0, float("nan"), float("inf")] + [1.0] * 6, [1.0] * 6, alpha=0.01, n_boot=20)
    assert nonfinite["verdict"] == "unchanged"               # NaN and inf dropped, 7 vs 6 finite values remain


def test_timing_defaults():
    rng = np.random.default_rng(11)
    base = _lognormal(rng, 30)
    assert compare_timing(base, base * 1.04, rng=rng)["verdict"] == "unchanged"     # threshold 5%
    assert compare_timing(base, base * 1.06, rng=rng)["verdict"] == "regression"    # lower is better
    assert compare_timing(list(base[:4]), list(base[4:8]))["note"].endswith("alpha 0.01; add repeats")


@pytest.mark.parametrize("base,new,kw,verdict,note", [
    ([1.0], [1.0], {}, "unchanged", "identical"),
    ([0.5, 0.7], [0.6, 0.6], {}, "unchanged", "identical"),              # means compared
    ([1.0], [1.004], {}, "within tolerance", "changed by +0.004, within tolerance 0.01"),
    ([1.0], [1.02], {"direction": 0}, "changed", "changed by +0.02 (beyond 0.01)"),
    ([1.0], [1.02], {}, "improvement", "+0.02 beyond tolerance 0.01"),
    ([1.0], [0.98], {}, "regression", "-0.02 beyond tolerance 0.01"),
    ([1.0], [1.2], {"tol": 0.5}, "within tolerance", "changed by +0.2, within tolerance 0.5"),
    ([float("nan")], [1.0], {}, "improvement", "value was NaN"),
    ([], [], {}, "unchanged", "no finite value on either side"),
])
def test_quality_verdicts_and_notes(base, new, kw, verdict, note):
    res = compare_quality(base, new, **kw)
    assert (res["verdict"], res["note"]) == (verdict, note)
    if verdict not in ("unchanged",) and "NaN" not in note:
        assert res["delta"] == pytest.approx(np.mean(new) - np.mean(base))


@pytest.mark.parametrize("base,new,kw,verdict,ratio,note", [
    ([100, 110, 90], [100, 100, 104], {}, "unchanged", 1.0, "within ±5%"),
    ([100], [106], {}, "regression", 1.06, "ratio 1.060 outside ±5%"),
    ([100], [94], {}, "improvement", 0.94, "ratio 0.940 outside ±5%"),
    ([100], [106], {"direction": +1}, "improvement", 1.06, "ratio 1.060 outside ±5%"),
    ([100], [94], {"direction": +1}, "regression", 0.94, "ratio 0.940 outside ±5%"),
    ([100], [108], {"threshold": 0.1}, "unchanged", 1.08, "within ±10%"),
    ([100], [104.9], {}, "unchanged", 1.049, "within ±5%"),
    ([0], [0], {}, "unchanged", None, "zero on both sides"),
    ([0], [3], {}, "changed", None, "was zero"),
    ([float("nan")], [3], {}, "not enough data", None, "no finite value on one side"),
    ([3], [float("inf")], {}, "not enough data", None, "no finite value on one side"),
])
def test_ratio_verdicts_and_notes(base, new, kw, verdict, ratio, note):
    from harness.analysis.diff import compare_ratio
    res = compare_ratio(base, new, **kw)
    assert (res["verdict"], res["note"]) == (verdict, note)
    assert res["ratio"] == (None if ratio is None else pytest.approx(ratio))


def test_info_values_compare_as_multisets():
    from harness.analysis.diff import compare_info
    assert compare_info([1, 2], [2, 1]) == {"verdict": "unchanged", "note": ""}
    assert compare_info([1, 2], [1, 3]) == {"verdict": "changed", "note": "value changed"}
    assert compare_info([1], [1, 1])["verdict"] == "changed"
    assert compare_info([float("nan")], [float("nan")])["verdict"] == "unchanged"
    assert compare_info([1.0], [1.0 + 1e-12])["verdict"] == "changed"          # exact, no tolerance
    assert compare_info([None, 2], [2, None])["verdict"] == "unchanged"        # a failure row's value: NaN


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
    assert {c.verdict for c in asked.comparisons} == {"not enough data"}
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


def test_quality_changes_of_unrepeatable_gpu_task_cells_say_they_may_be_noise(tmp_path):
    """A task cell trained on CUDA without train.deterministic does not repeat for a seed: its quality
    changes keep their verdict but say so; deterministic or CPU cells do not get the note."""
    from harness.analysis.diff import UNREPEATABLE_NOTE

    def notes(params):
        base = _task_run(tmp_path / str(len(list(tmp_path.iterdir()))), "base", seed=0, extra_params=params)
        worse = _task_run(tmp_path / str(len(list(tmp_path.iterdir()))), "worse", seed=0, accuracy_shift=-0.05,
                          extra_params=params)
        acc = [c for c in diff_runs([load_run(base)], [load_run(worse)]).comparisons
               if c.metric == "accuracy" and c.verdict == "regression"]
        assert acc
        return {UNREPEATABLE_NOTE in c.note for c in acc}

    assert notes({"device": "cuda"}) == {True}
    assert notes({"device": "cuda", "train.deterministic": True}) == {False}
    assert notes({}) == {False}
    assert notes({"train.deterministic": False}) == {False}          # CPU cells: repeatable whatever the flag


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
    assert cli_main(["diff", str(base), str(new), "--gate", "quality"]) == 0
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
