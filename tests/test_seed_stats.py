"""Seed statistics: spread, n and seeds reaching the target in tables; seed distributions in diffs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis.diff import diff_runs, format_markdown, format_text
from harness.analysis.report.runs import load_run
from harness.analysis.report.summary import task_summary
from harness.analysis.report.synthetic import default_meta, task_rows, write_run
from harness.analysis.report.tables import metric_tables
from harness.analysis.seeds import compare_seeds, min_p, permutation_p


def _final(acc_by_seed, target=0.9):
    """Final accuracy rows of one model over seeds."""
    return pd.DataFrame([{"run_id": "r", "cell_id": f"{m}-{s}", "status": "ok", "metric": "accuracy", "value": v,
                          "unit": "fraction", "repeat": 0, "model.arch": "mamba", "model.mixer": m, "seed": s,
                          "train.target_accuracy": target}
                         for m in ("s6", "s4") for s, v in enumerate(acc_by_seed[m])])


def test_tables_show_spread_n_and_seeds_reaching_the_target():
    rows = _final({"s6": [0.99, 0.13, 0.98], "s4": [0.5, 0.6, 0.55]})
    (table,) = metric_tables(rows)
    f = table.frame.set_index("model.mixer")
    assert list(table.columns)[-3:] == ["n", "min–max", "seeds ≥ target"]
    assert f.loc["s6", "n"] == "3" and f.loc["s6", "min–max"] == "0.13–0.99"
    assert f.loc["s6", "seeds ≥ target"] == "2/3 ≥ 0.9" and f.loc["s4", "seeds ≥ target"] == "0/3 ≥ 0.9"
    (summary,) = task_summary(rows)
    assert "(n=3, 2/3 ≥ 90%)" in summary.frame.to_string()


def test_permutation_p_is_exact_for_few_seeds():
    assert min_p(3, 3) == pytest.approx(0.1)
    assert permutation_p([0, 1, 2], [10, 11, 12]) == pytest.approx(0.1)   # the most extreme split: 2 of 20
    assert permutation_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 12), rng.normal(0, 1, 12) + 3
    assert permutation_p(a, b) < 0.001   # random relabellings when there are too many


def _runs(tmp_path, name, shift, seeds):
    rows = task_rows(archs=("mamba",), mixers=("s6",), seeds=seeds, accuracy_shift=shift, seed=len(seeds))
    return load_run(write_run(tmp_path / name, rows, default_meta(name, "t", "task")))


def test_diff_pools_seeds_and_tests_their_distributions(tmp_path):
    seeds = tuple(range(6))
    base, worse = _runs(tmp_path, "base", 0.0, seeds), _runs(tmp_path, "new", -0.2, seeds)
    res = diff_runs([base], [worse])
    acc = [c for c in res.seed_comparisons if c.metric == "accuracy" and c.key.get("eval_seq_len") == 64]
    assert len(acc) == 1 and acc[0].base_n == 6 and acc[0].verdict == "differs"
    assert acc[0].delta == pytest.approx(-0.2, abs=0.02) and acc[0].p_value < 0.01
    assert "seed distributions" in format_text(res) and "Seed distributions" in format_markdown(res)
    same = diff_runs([base], [_runs(tmp_path, "same", 0.0, seeds)])
    assert all(c.verdict != "differs" for c in same.seed_comparisons)


def test_too_few_seeds_or_one_seed_say_what_they_can_support(tmp_path):
    two = diff_runs([_runs(tmp_path, "b2", 0.0, (0, 1))], [_runs(tmp_path, "n2", -0.3, (0, 1))])
    assert {c.verdict for c in two.seed_comparisons} == {"not enough seeds"}
    assert "smallest reachable p is 0.33" in two.seed_comparisons[0].note
    one = diff_runs([_runs(tmp_path, "b1", 0.0, (0,))], [_runs(tmp_path, "n1", -0.3, (0,))])
    assert not one.seed_comparisons and "one seed per setting" in one.seed_note
    assert "one seed per setting" in format_text(one)
    b = _final({"s6": [0.99, 0.97, 0.98], "s4": [0.5, 0.5, 0.5]})
    n = _final({"s6": [0.5], "s4": [0.5]})
    (s6,) = [c for c in compare_seeds(b, n) if c.label.endswith("s6")]
    assert s6.verdict == "one seed" and "beyond twice the base side's seed sd" in s6.note


def test_a_seed_comparison_reports_means_sample_sds_and_an_exact_permutation_p():
    """The numbers of one comparison against a hand computation: means, sample standard deviations (n - 1), the
    delta, and the permutation p enumerated here over all C(8, 4) = 70 relabellings."""
    import itertools

    base, new = [0.91, 0.83, 0.88, 0.95], [0.62, 0.70, 0.81, 0.66]
    (c,) = [c for c in compare_seeds(_final({"s6": base, "s4": [0.5] * 4}), _final({"s6": new, "s4": [0.5] * 4}),
                                     alpha=0.05) if c.label.endswith("s6")]
    assert (c.base_n, c.new_n) == (4, 4)
    assert c.base_mean == pytest.approx(np.mean(base)) and c.new_mean == pytest.approx(np.mean(new))
    sample_sd = lambda v: (sum((x - np.mean(v)) ** 2 for x in v) / (len(v) - 1)) ** 0.5  # noqa: E731
    assert c.base_sd == pytest.approx(sample_sd(base)) and c.new_sd == pytest.approx(sample_sd(new))
    assert c.delta == pytest.approx(np.mean(new) - np.mean(base))
    pooled, observed = base + new, abs(np.mean(new) - np.mean(base))
    splits = list(itertools.combinations(range(8), 4))
    extreme = sum(abs(np.mean([pooled[i] for i in range(8) if i not in s]) - np.mean([pooled[i] for i in s]))
                  >= observed - 1e-12 for s in splits)
    assert c.p_value == pytest.approx(extreme / len(splits)) and c.p_floor == pytest.approx(2 / 70)
    assert c.verdict == "differs"
