"""Tuned comparisons: each row at its best lr, chosen on validation numbers only."""
from __future__ import annotations

import pandas as pd
import pytest

from harness.analysis.report.tuning import tune
from harness.errors import SuiteError
from harness.suite.schema import load_suites

MODELS = [("mamba", "s6"), ("mamba", "s4"), ("h3", "s6"), ("h3", "hyena")]
LRS = [1e-4, 3e-4, 1e-3]
SPEC = {"over": ["train.lr"], "by": "val_accuracy", "mode": "max"}


def _rows(val, test, seeds=(0, 1), wd=(0.0,)):
    """val/test[(arch, mixer, lr)] -> the last val_accuracy / the final accuracy of those cells (every seed)."""
    rows = []
    for arch, mixer in MODELS:
        for lr in LRS:
            for w in wd:
                for seed in seeds:
                    params = {"model.arch": arch, "model.mixer": mixer, "train.lr": lr, "train.weight_decay": w,
                              "seed": seed, "train.target_accuracy": 0.9, "task.seq_len": 64}
                    cid = f"{arch}-{mixer}-{lr}-{w}-{seed}"
                    base = {"run_id": "r", "cell_id": cid, "status": "ok", "unit": "fraction", "repeat": 0, **params}
                    v = val[(arch, mixer, lr)] + 0.001 * seed - 0.01 * w
                    for step in (100, 200):   # only the last point counts
                        rows.append({**base, "metric": "val_accuracy", "step": step,
                                     "value": v if step == 200 else 1.0 - v})
                    rows.append({**base, "metric": "accuracy", "eval_seq_len": 64,
                                 "value": test[(arch, mixer, lr)] + 0.001 * seed})
                    rows.append({**base, "metric": "loss", "eval_seq_len": 64, "value": 1 - test[(arch, mixer, lr)]})
    return pd.DataFrame(rows)


def _grid(best_lr):
    """Scores peaking at best_lr[model] (0.95 there, lower elsewhere)."""
    return {(a, m, lr): (0.95 if lr == best_lr[(a, m)] else 0.5 + 0.1 * LRS.index(lr))
            for a, m in MODELS for lr in LRS}


VAL_BEST = {("mamba", "s6"): 3e-4, ("mamba", "s4"): 1e-3, ("h3", "s6"): 3e-4, ("h3", "hyena"): 1e-4}
TEST_BEST = {("mamba", "s6"): 1e-3, ("mamba", "s4"): 1e-4, ("h3", "s6"): 1e-4, ("h3", "hyena"): 3e-4}


def _chosen(result):
    f = result.table.frame
    return {(a, m): float(lr) for a, m, lr in zip(f["model.arch"], f["model.mixer"], f["best train.lr"])}


def test_each_model_gets_its_best_lr_by_validation_and_reports_its_test_numbers():
    res = tune(_rows(_grid(VAL_BEST), _grid(TEST_BEST)), SPEC)
    assert _chosen(res) == VAL_BEST
    f = res.table.frame.set_index(["model.arch", "model.mixer"])
    row = f.loc[("mamba", "s6")]
    assert row["n"] == "2" and float(row["val_accuracy mean"]) == pytest.approx(0.9505)
    # the reported accuracy is the chosen lr's test number: 3e-4 is not mamba/s6's test best (0.5 + 0.1)
    assert float(row["accuracy mean"]) == pytest.approx(0.6005)
    assert row["accuracy n"] == "2" and row["seeds ≥ target"] == "0/2"
    assert f.loc[("h3", "hyena")]["seeds ≥ target"] == "0/2"


def test_report_has_a_tuned_table(tmp_path):
    from harness.analysis.report import build_report
    from harness.analysis.report.synthetic import default_meta, write_run

    rows = _rows(_grid(VAL_BEST), _grid(TEST_BEST)).drop(columns=["run_id"]).to_dict("records")
    run = write_run(tmp_path / "results" / "t" / "run1", rows, default_meta("run1", "t", "task"),
                    suite={"name": "t", "kind": "task", "tune": SPEC})
    out = build_report([run], out_dir=tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert "## Tuned" in md and "best train.lr" in md and "largest value swept" in md
    assert "Tuned</h2>" in (out / "report.html").read_text()


def test_changing_test_numbers_never_changes_the_choice_but_changing_validation_does():
    base = _chosen(tune(_rows(_grid(VAL_BEST), _grid(TEST_BEST)), SPEC))
    for other_test in (VAL_BEST, {k: 1e-4 for k in VAL_BEST}, {k: 1e-3 for k in VAL_BEST}):
        assert _chosen(tune(_rows(_grid(VAL_BEST), _grid(other_test)), SPEC)) == base
    moved = {**VAL_BEST, ("mamba", "s6"): 1e-3}
    assert _chosen(tune(_rows(_grid(moved), _grid(TEST_BEST)), SPEC)) == moved


def test_final_numbers_on_the_validation_data_are_flagged():
    rows = _rows(_grid(VAL_BEST), _grid(TEST_BEST))
    assert any("train.test_set" in w for w in tune(rows, SPEC).warnings)
    held_out = tune(rows.assign(**{"train.test_set": "held_out"}), SPEC)
    assert not any("train.test_set" in w for w in held_out.warnings)


def test_edge_of_the_swept_range_is_flagged():
    res = tune(_rows(_grid(VAL_BEST), _grid(TEST_BEST)), SPEC)
    edges = "\n".join(res.warnings)
    assert "model.mixer=s4: train.lr=0.001 is the largest value swept" in edges
    assert "model.mixer=hyena: train.lr=0.0001 is the smallest value swept" in edges
    assert "model.mixer=s6: train.lr" not in edges   # 3e-4: inside the range


def test_two_axes_and_min_mode():
    rows = _rows(_grid(VAL_BEST), _grid(TEST_BEST), wd=(0.0, 0.1))
    res = tune(rows, {"over": ["train.lr", "train.weight_decay"], "by": "val_accuracy"})
    assert _chosen(res) == VAL_BEST and set(res.table.frame["best train.weight_decay"]) == {"0"}
    worst = tune(rows, {"over": ["train.lr"], "by": "val_accuracy", "mode": "min"})
    assert set(worst.table.frame.columns) >= {"train.weight_decay", "best train.lr"}


def test_a_test_metric_is_refused():
    res = tune(_rows(_grid(VAL_BEST), _grid(TEST_BEST)), {"over": ["train.lr"], "by": "accuracy"})
    assert res.table is None and "not a validation metric" in res.warnings[0]


def _suite(tmp_path, tune_line):
    p = tmp_path / "s.yaml"
    p.write_text("name: t\nkind: task\ndefaults:\n  task: {name: selective_copying, seq_len: 64}\n"
                 "sweep:\n  train.lr: [1.0e-4, 1.0e-3]\n  model.mixer: [s4, s6]\n" + tune_line + "\n")
    return p


def test_suite_schema_checks_the_tune_key(tmp_path):
    (loaded,) = load_suites(_suite(tmp_path, "tune: {over: [train.lr], by: val_accuracy, mode: max}"))
    assert loaded.spec.tune.over == ["train.lr"]
    with pytest.raises(SuiteError, match=r"s.yaml:8: .*'train.lrr' is not a sweep or zip axis -- did you mean 'train.lr'"):
        load_suites(_suite(tmp_path, "tune: {over: [train.lrr], by: val_accuracy}"))
    with pytest.raises(SuiteError, match="'accuracy' is not a validation metric"):
        load_suites(_suite(tmp_path, "tune: {over: [train.lr], by: accuracy}"))
    with pytest.raises(SuiteError, match="mode"):
        load_suites(_suite(tmp_path, "tune: {over: [train.lr], by: val_loss, mode: best}"))
