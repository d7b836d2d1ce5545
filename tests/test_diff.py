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


def test_quality_result_shape_missing_values_and_no_warnings():
    """Every result has exactly verdict/delta/note (consumers index them); a failure row's None value counts as
    missing (NaN), not as an error; empty sides give their verdict without numpy's empty-mean warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for base, new in (([], []), ([float("nan")], [float("nan")]), ([0.5], [0.5]), ([0.5], [0.9]), ([], [0.5])):
            res = compare_quality(base, new)
            assert set(res) == {"verdict", "delta", "note"}, (base, new, res)
    assert compare_quality([float("nan")], [float("nan")])["delta"] is None
    assert (compare_quality([None], [0.5])["verdict"], compare_quality([None], [0.5])["note"]) == \
        ("improvement", "value was NaN")
    assert (compare_quality([0.5], [None])["verdict"], compare_quality([0.5], [None])["note"]) == \
        ("regression", "value became NaN")


def test_ratio_result_shape_and_missing_values():
    """compare_ratio's result has exactly verdict/ratio/note on every path, and a failure row's None is a
    missing value (dropped with the NaNs), not an error."""
    from harness.analysis.diff import compare_ratio

    for base, new in (([100], [100]), ([100], [120]), ([0], [0]), ([0], [3]), ([], [3])):
        assert set(compare_ratio(base, new)) == {"verdict", "ratio", "note"}, (base, new)
    res = compare_ratio([None, 100, 100], [100, None])
    assert (res["verdict"], res["ratio"]) == ("unchanged", 1.0)
    assert compare_ratio([100], [None])["verdict"] == "not enough data"


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
    assert noisy["verdict"] == "inconclusive"
    assert noisy["note"] == f"ratio {noisy['ratio']:.3f} outside ±5% but not significant (p={noisy['p_value']:.2g})"
    few = compare_timing([1.0, 1.1], [1.0, 1.2, 1.3], alpha=0.01)
    assert few["note"].endswith("2 vs 3 samples: the smallest reachable p is 0.2 >= alpha 0.01; add repeats")
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
    ([0.5], [0.75], {"tol": 0.25}, "within tolerance", "changed by +0.25, within tolerance 0.25"),  # exactly tol
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


# --------------------------------------------------------------------------- no silent success (issue 17)


def _speed(tmp_path, name, suite="speed-test", **kw):
    kw.setdefault("seq_lens", (256, 512))
    return write_run(tmp_path / "results" / suite / name, speed_rows(**kw), default_meta(name, suite, "speed"))


def test_nothing_in_common_is_an_error_with_a_reason(tmp_path, capsys):
    """A NEW of another suite, or with no rows, compared nothing: exit 2 and one paragraph, never 'ok'."""
    from harness.analysis.diff import DiffError

    base = _speed(tmp_path, "base", seed=1)
    other = write_run(tmp_path / "results" / "task-test" / "t", task_rows(), default_meta("t", "task-test", "task"))
    empty = write_run(tmp_path / "results" / "speed-test" / "empty", [], default_meta("empty", "speed-test", "speed"))
    for new, why in ((other, "another suite"), (empty, "no rows")):
        with pytest.raises(DiffError, match="nothing to compare"):
            diff_runs([load_run(base)], [load_run(new)])
        for fail_on in ("regression", "change", "never"):
            assert cli_main(["diff", str(base), str(new), "--fail-on", fail_on]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err and len(err.strip().splitlines()) == 3


def test_cells_missing_from_new_are_regressions_unless_allowed(tmp_path, capsys):
    """A benchmark that stopped running is a regression, under --fail-on regression and change alike."""
    base = _speed(tmp_path, "base", seed=1, seq_lens=(256, 512))
    half = _speed(tmp_path, "half", seed=1, seq_lens=(512,))
    res = diff_runs([load_run(base)], [load_run(half)])
    assert len(res.only_base) == 2 and res.missing_count == 2
    assert res.exit_code("regression") == 1 and res.exit_code("change") == 1
    assert cli_main(["diff", str(base), str(half)]) == 1
    out = capsys.readouterr().out
    assert "compared 2 of 4 cells" in out and "missing in new (2 cells, counted as regressions)" in out
    assert cli_main(["diff", str(base), str(half), "--allow-missing"]) == 0
    assert "--allow-missing" in capsys.readouterr().out
    assert cli_main(["diff", str(base), str(half), "--allow-missing", "--format", "md"]) == 0
    # new cells are a change, not a regression
    assert cli_main(["diff", str(half), str(base), "--fail-on", "regression"]) == 0
    assert cli_main(["diff", str(half), str(base), "--fail-on", "change"]) == 1


def test_a_metric_that_vanished_from_a_cell_is_missing(tmp_path):
    base = _task_run(tmp_path, "base", seed=0)
    rows = [r for r in task_rows(seed=0) if not (r["metric"] == "accuracy" and r.get("eval_seq_len") == 256)]
    new = write_run(tmp_path / "results" / "task-test" / "new", rows, default_meta("new", "task-test", "task"))
    res = diff_runs([load_run(base)], [load_run(new)])
    assert res.missing_metrics and all("eval_seq_len=256" in where for _, where in res.missing_metrics)
    assert res.exit_code("regression", gate=["quality"]) == 1
    assert diff_runs([load_run(base)], [load_run(new)], DiffOptions(allow_missing=True)).exit_code("regression") == 0


def test_metric_pattern_that_matches_nothing_is_an_error_with_did_you_mean(tmp_path, capsys):
    base = _speed(tmp_path, "base", seed=1)
    new = _speed(tmp_path, "new", seed=2)
    assert cli_main(["diff", str(base), str(new), "--metric", "time_sm"]) == 2
    err = capsys.readouterr().err
    assert "--metric 'time_sm' matches no metric" in err and "Did you mean 'time_ms'" in err
    # one good pattern does not excuse a typo beside it
    assert cli_main(["diff", str(base), str(new), "--metric", "time_ms", "--metric", "acuracy"]) == 2


def test_summary_line_says_how_much_was_compared(tmp_path, capsys):
    base = _speed(tmp_path, "base", seed=1)
    new = _speed(tmp_path, "new", seed=2)
    assert cli_main(["diff", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "result: compared 4 cells, 8 metric values (2 metrics): " in out
    md = format_markdown(diff_runs([load_run(base)], [load_run(new)]))
    assert "compared 4 cells" in md and "Holm over the 4 timing tests" in md


def test_a_gate_that_could_not_fail_is_an_error(tmp_path, capsys):
    """--gate on families the runs do not measure, or whose comparisons all lack data, has no teeth."""
    base = _speed(tmp_path, "base", seed=1, repeats=3)
    new = _speed(tmp_path, "new", seed=2, repeats=3, slowdown={"s6.chunked": 2.0})
    assert cli_main(["diff", str(base), str(new), "--gate", "quality"]) == 2
    assert "no metric of these families was compared" in capsys.readouterr().err
    # 3 repeats can never reach p < 0.01: every timing comparison is untestable
    assert cli_main(["diff", str(base), str(new), "--gate", "timing"]) == 2
    assert "add repeats" in capsys.readouterr().err
    assert cli_main(["diff", str(base), str(new), "--gate", "timing", "--fail-on", "never"]) == 0


def test_separated_samples_reach_the_exact_smallest_p():
    """10 vs 10 fully separated: the exact Mann-Whitney p is 2 / C(20, 10) = 1.1e-5 (the floor the
    'not enough data' rule assumes); the normal approximation would say 1.8e-4, 17 times weaker under Holm."""
    res = compare_timing(np.linspace(1.0, 1.1, 10), np.linspace(1.6, 1.7, 10), n_boot=100)
    assert res["p_value"] == pytest.approx(min_two_sided_p(10, 10), rel=1e-6)


def test_holm_adjusted_p_values():
    from harness.analysis.diff import holm_adjust

    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5]) == [0.5]
    assert holm_adjust([]) == []


def test_holm_keeps_the_family_wise_false_alarm_rate_at_alpha():
    """Forty same-distribution tests per diff at alpha 0.05: uncorrected, most diffs raise a false alarm
    somewhere; with Holm at most ~alpha of them do."""
    from scipy.stats import mannwhitneyu

    from harness.analysis.diff import holm_adjust

    rng = np.random.default_rng(17)
    alpha, diffs, m = 0.05, 200, 40
    raw_alarms = holm_alarms = 0
    for _ in range(diffs):
        ps = [mannwhitneyu(_lognormal(rng, 12, sigma=0.1), _lognormal(rng, 12, sigma=0.1)).pvalue for _ in range(m)]
        raw_alarms += min(ps) < alpha
        holm_alarms += min(holm_adjust(ps)) < alpha
    assert raw_alarms / diffs > 0.6
    assert holm_alarms / diffs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / diffs)


def test_diff_judges_timing_with_holm_and_says_so(tmp_path):
    """A p below alpha on its own is not enough when many cells are tested: the verdict uses Holm's p."""
    base = _speed(tmp_path, "base", seed=1, seq_lens=tuple(range(64, 64 * 21, 64)), repeats=6)
    new = _speed(tmp_path, "new", seed=2, seq_lens=tuple(range(64, 64 * 21, 64)), repeats=6,
                 slowdown={"s6.chunked": 1.5})
    res = diff_runs([load_run(base)], [load_run(new)], DiffOptions(n_boot=100))
    assert res.timing_tests == 40
    slowed = [c for c in res.comparisons if c.family == "timing" and "s6.chunked" in c.label]
    # 6 vs 6 fully separated: raw p = 0.0022 < 0.01, but Holm over 40 tests cannot confirm it
    assert all(c.p_value < 0.01 <= c.p_adjusted for c in slowed)
    assert {c.verdict for c in slowed} == {"inconclusive"} and res.exit_code("regression") == 0
    assert "Holm over the 40 timing tests" in format_text(res)


def test_one_sample_rss_change_is_inconclusive_not_a_regression(tmp_path):
    """The issue's case: peak RSS x1.053 on one sample judged a regression (exit 1) in a self-compare."""
    rows_b = speed_rows(seed=1, seq_lens=(256,), repeats=2)
    rows_n = speed_rows(seed=1, seq_lens=(256,), repeats=2)
    for r in rows_n:
        if r["metric"] == "peak_rss_bytes":
            r["value"] *= 1.053
    base = write_run(tmp_path / "b", rows_b, default_meta("b", "speed-test", "speed"))
    new = write_run(tmp_path / "n", rows_n, default_meta("n", "speed-test", "speed"))
    res = diff_runs([load_run(base)], [load_run(new)])
    rss = [c for c in res.comparisons if c.metric == "peak_rss_bytes"]
    assert rss and {c.verdict for c in rss} == {"inconclusive"}   # shown, never "unchanged"
    assert "inconclusive" in format_text(res)
    assert res.exit_code("regression") == 0 and res.exit_code("change") == 0
    # an exact byte count (saved activations) still regresses on one sample
    for r in rows_n:
        if r["metric"] == "peak_rss_bytes":
            r["metric"] = "saved_activation_bytes"
    for r in rows_b:
        if r["metric"] == "peak_rss_bytes":
            r["metric"] = "saved_activation_bytes"
    base = write_run(tmp_path / "b2", rows_b, default_meta("b2", "speed-test", "speed"))
    new = write_run(tmp_path / "n2", rows_n, default_meta("n2", "speed-test", "speed"))
    assert diff_runs([load_run(base)], [load_run(new)]).exit_code("regression") == 1


def test_noisy_timing_cells_are_marked(tmp_path):
    base = _speed(tmp_path, "base", seed=1, noise=3.0, repeats=12)
    new = _speed(tmp_path, "new", seed=2, noise=0.01, repeats=12)
    res = diff_runs([load_run(base)], [load_run(new)], DiffOptions(n_boot=100))
    timing = [c for c in res.comparisons if c.metric == "time_ms"]
    assert timing and all(c.noisy and "noisy: IQR exceeds median" in c.note for c in timing)
    quiet = diff_runs([load_run(new)], [load_run(new)], DiffOptions(n_boot=100))
    assert not any(c.noisy for c in quiet.comparisons)
    assert "noisy" in format_text(res, verbose=True)


def test_diff_warns_about_incomplete_and_truncated_runs(tmp_path, capsys):
    from harness.store.results import write_tables

    base = _speed(tmp_path, "base", seed=1)
    new = _speed(tmp_path, "new", seed=1)
    write_tables(new)
    lines = (new / "rows.jsonl").read_text().splitlines(keepends=True)
    (new / "rows.jsonl").write_text("".join(lines[: len(lines) // 2]))      # cut short after the run
    res = diff_runs([load_run(base)], [load_run(new)])
    assert any("read results.parquet" in w and "truncated" in w for w in res.warnings)
    assert not res.only_base   # the complete table was used
    assert cli_main(["diff", str(base), str(new)]) == 0
    assert "warning: new:" in capsys.readouterr().out
    assert any("compared with themselves" in w for w in diff_runs([load_run(base)], [load_run(base)]).warnings)


@pytest.mark.parametrize("side", ["base", "new"])
def test_the_bootstrap_resamples_every_sample_of_each_side_per_row(side):
    """One sample of three stands out: a resample's median takes it when two or more of the three draws hit it
    (7/27 of resamples), so the 90% interval's low end is the ratio it gives; a bootstrap that never draws the first
    sample, or takes one median over all the resamples, gives the point interval 1..1 instead."""
    from harness.analysis.diff import bootstrap_ratio_ci
    odd = np.array([2.0, 1.0, 1.0]) if side == "base" else np.array([0.5, 1.0, 1.0])
    flat = np.ones(3)
    base, new = (odd, flat) if side == "base" else (flat, odd)
    lo, hi = bootstrap_ratio_ci(base, new, 0.9, 4000, np.random.default_rng(fresh := np.random.SeedSequence().entropy))
    assert (lo, hi) == (0.5, 1.0), fresh


def test_the_bootstrap_of_zero_medians_is_quiet():
    """A few resamples whose base median is 0 give inf (x / 0) or nan (0 / 0) ratios: nanquantile leaves the nans out
    and the infs sit beyond the 95th percentile, without numpy warnings (the CLI would print them).  About 0.8% of
    10000 base resamples have median 0, and 68% of the new ones: dozens of each kind of ratio."""
    import warnings

    from harness.analysis.diff import bootstrap_ratio_ci
    base, new = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = bootstrap_ratio_ci(base, new, 0.9, 10000, np.random.default_rng(0))
    assert (lo, hi) == (0.0, 1.0)


def test_an_interval_end_among_infinite_ratios_is_inf_without_warnings():
    """base [0, 0, 1, 1, 1] has median 1, but 32% of its resamples (3 or more zeros of 5 draws) have median 0: the
    upper 5% of the ratios are all inf, so the interval's upper end is inf; interpolating between two infs gave nan
    and a numpy warning (which the CLI would print)."""
    import warnings

    from harness.analysis.diff import bootstrap_ratio_ci
    seed = np.random.SeedSequence().entropy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = bootstrap_ratio_ci(np.array([0.0, 0.0, 1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.1, 0.9, 1.0]), 0.9,
                                    4000, np.random.default_rng(seed))
    assert hi == math.inf and 0.9 <= lo <= 1.0, (seed, lo, hi)
    # both ends: base [0 x6, 1] gives median 0 in 98% of resamples (4 or more zeros of 7 draws), so even the 5% cut
    # falls among the infs (a direct call: compare_timing stops earlier, at a zero base median)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ends = bootstrap_ratio_ci(np.array([0.0] * 6 + [1.0]), np.ones(5), 0.9, 4000, np.random.default_rng(seed))
    assert ends == (math.inf, math.inf), (seed, ends)


@pytest.mark.parametrize("new, direction, verdict", [
    ([5.0], -1, "unchanged"), ([3.0], -1, "unchanged"),       # exactly at the threshold (1.25, 0.75): not beyond
    ([5.5], -1, "regression"), ([5.5], +1, "improvement"), ([2.5], +1, "regression"),
])
def test_a_ratio_exactly_at_the_threshold_is_unchanged(new, direction, verdict):
    from harness.analysis.diff import compare_ratio
    assert compare_ratio([4.0], new, threshold=0.25, direction=direction)["verdict"] == verdict


def test_the_bootstrap_interval_cuts_half_of_the_excluded_mass_from_each_tail():
    """Medians of three draws from [1, 2, 3]: 1 and 3 each with probability 7/27 (0.26), 2 otherwise.  A 40%
    interval cuts 30% from each tail, which lands inside the block of 2s at both ends: exactly (2, 2).  Cutting a
    third instead of a half from a tail (20%) would land in the block of 1s or 3s."""
    from harness.analysis.diff import bootstrap_ratio_ci
    seed = np.random.SeedSequence().entropy
    lo, hi = bootstrap_ratio_ci(np.ones(3), np.array([1.0, 2.0, 3.0]), 0.4, 4000, np.random.default_rng(seed))
    assert (lo, hi) == (2.0, 2.0), seed


def test_timing_result_has_the_same_keys_on_every_path_and_failure_rows_count_as_missing():
    cases = [([1.0], [5.0]), ([1.0], [1.01]), ([0.0] * 6, [1.0] * 6), ([1.0] * 6, [1.0] * 6),
             ([None, 1.0, 1.1, 0.9, 1.05, 0.95, 1.02], [2.0, 2.1, 1.9, 2.05, None, 1.95, 2.02])]
    for base, new in cases:
        res = compare_timing(base, new, n_boot=50)
        assert set(res) == {"verdict", "ratio", "ci_low", "ci_high", "p_value", "note"}, (base, new)
    res = compare_timing(*cases[-1], n_boot=50)
    assert res["verdict"] == "regression" and res["ratio"] == pytest.approx(2.0, rel=0.03)
    untestable = compare_timing([1.0], [5.0])
    assert untestable["verdict"] == "inconclusive" and untestable["note"].startswith("ratio 5.000 outside ±5%, untestable")


@pytest.mark.parametrize("n_base, n_new", [(2, 40), (40, 2)])
def test_two_samples_on_one_side_are_tested_when_the_other_side_makes_p_small_enough(n_base, n_new):
    """What decides is the smallest reachable p (2 vs 40 samples: 2/861 < 0.01), not a minimum per side."""
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    base, new = 1.0 + 0.01 * rng.random(n_base), 2.0 + 0.01 * rng.random(n_new)
    res = compare_timing(base, new, n_boot=200)
    assert res["p_value"] is not None and res["p_value"] < 0.01 and res["verdict"] == "regression"


def test_one_sample_on_a_side_is_never_tested_however_many_the_other_has():
    res = compare_timing([1.0], 2.0 + np.arange(300) * 1e-3)
    assert res["p_value"] is None and res["verdict"] == "inconclusive"


def test_a_floor_exactly_at_alpha_is_untestable_and_a_ratio_exactly_at_the_threshold_is_not_inconclusive():
    """3 vs 3 samples reach p = 2/20 = 0.1 at best: at alpha 0.1 that cannot be below alpha, so no test is run; and
    an untestable ratio exactly at the threshold (1.25 at 25%) is not called outside it."""
    res = compare_timing([1.0, 1.1, 1.2], [2.0, 2.1, 2.2], alpha=0.1)
    assert res["p_value"] is None and res["note"].endswith("add repeats")
    assert compare_timing([4.0], [5.0], threshold=0.25)["verdict"] == "not enough data"


def test_min_two_sided_p_with_one_sample_on_a_side():
    assert min_two_sided_p(1, 9) == pytest.approx(0.2) and min_two_sided_p(9, 1) == pytest.approx(0.2)
    assert min_two_sided_p(1, 199) == pytest.approx(0.01)


def test_timing_uses_the_generator_it_is_given_and_a_fixed_one_otherwise():
    """Two diffs of the same samples agree (the default generator is seeded), and a caller's generator is used."""
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    base, new = 1.0 + 0.1 * rng.random(12), 1.3 + 0.1 * rng.random(12)
    first, again = compare_timing(base, new), compare_timing(base, new)
    assert (first["ci_low"], first["ci_high"]) == (again["ci_low"], again["ci_high"])
    other = [compare_timing(base, new, rng=np.random.default_rng(s)) for s in (11, 12)]
    assert (other[0]["ci_low"], other[0]["ci_high"]) != (other[1]["ci_low"], other[1]["ci_high"])
