"""harness/analysis/report/expect_curve.py: expectations judged at every step budget of the learning curves."""
from __future__ import annotations

from typing import Dict, List, Optional

import pandas as pd

from harness.analysis.report import build_report
from harness.analysis.report.expect_curve import curve_expectations
from harness.analysis.report.synthetic import default_meta, write_run


def cell_rows(mixer: str, curve: Dict[int, float], seed: int = 0, stop: Optional[str] = None,
              final: Optional[float] = None, train_len: int = 64) -> List[dict]:
    """A task cell's tidy rows: its validation curve at the training length, steps (with the stop
    reason), the final accuracy, and an extra-length curve point that must be ignored."""
    params = {"task.name": "selective_copying", "task.seq_len": train_len, "model.arch": "none",
              "model.mixer": mixer, "seed": seed}
    cid = f"{mixer}-{seed}"
    row = dict(cell_id=cid, run_id="r", status="ok", unit="", repeat=0, **params)
    rows = [{**row, "metric": "val_accuracy", "value": v, "step": s, "eval_seq_len": None} for s, v in curve.items()]
    rows += [{**row, "metric": "val_accuracy", "value": 0.0, "step": s, "eval_seq_len": 4 * train_len}
             for s in curve]
    last = max(curve)
    rows.append({**row, "metric": "steps", "value": last, "step": None, "eval_seq_len": None, "message": stop})
    rows.append({**row, "metric": "accuracy", "value": final if final is not None else curve[last], "step": None,
                 "eval_seq_len": train_len})
    return rows


ENTRIES = [
    {"where": {"model.mixer": "s6"}, "metric": "accuracy", "op": ">=", "value": 0.9, "tolerance": 0.02},
    {"where": {"model.mixer": "s4"}, "metric": "accuracy", "op": "<=", "value": 0.7, "tolerance": 0.02},
]


def table(rows: List[dict], entries=ENTRIES) -> pd.DataFrame:
    tables = curve_expectations(entries, pd.DataFrame(rows))
    assert len(tables) == 1
    return tables[0]


def test_no_budget_meets_both_when_the_slow_row_passes_after_the_fast_one_fails():
    s6 = cell_rows("s6", {1000: 0.30, 2000: 0.60, 3000: 0.85, 4000: 0.95})
    s4 = cell_rows("s4", {1000: 0.40, 2000: 0.65, 3000: 0.80, 4000: 0.85})
    t = table(s6 + s4)
    f = t.frame.set_index("steps")
    assert list(f["entries met"]) == ["1 of 2", "1 of 2", "0 of 2", "1 of 2"]
    assert f.loc["3000", "missed (value)"] == "s6 85.0%; s4 80.0%"
    assert f.loc["4000", "missed (value)"] == "s4 85.0%"
    assert "most met: 1 of 2, at 1000, 2000, 4000" in t.metric


def test_a_window_of_budgets_shows_up_and_close_is_not_met():
    s6 = cell_rows("s6", {1000: 0.50, 2000: 0.91, 3000: 0.95, 4000: 0.89})
    s4 = cell_rows("s4", {1000: 0.40, 2000: 0.50, 3000: 0.60, 4000: 0.75})
    f = table(s6 + s4).frame.set_index("steps")
    assert list(f["entries met"]) == ["1 of 2", "2 of 2", "2 of 2", "0 of 2"]
    assert f.loc["4000", "missed (value)"] == "s6 89.0% (close); s4 75.0%"


def test_a_cell_stopped_at_its_target_keeps_its_value_and_a_timed_out_one_is_not_reached():
    s6 = cell_rows("s6", {1000: 0.5, 2000: 0.99}, stop="reached train.target_accuracy=0.99 at step 2000")
    s4 = cell_rows("s4", {1000: 0.4, 2000: 0.5, 3000: 0.6}, stop="stopped by train.timeout_s=10 at step 3000 of 9000")
    late = cell_rows("s6", {1000: 0.2, 2000: 0.3, 3000: 0.4, 4000: 0.5}, seed=1)
    f = table(s6 + s4 + late).frame.set_index("steps")
    # s6 over two seeds: the mean; seed 0's 0.99 carries to steps 3000 and 4000
    assert f.loc["3000", "missed (value)"] == "s6 69.5%"
    assert f.loc["4000", "not reached (training ended before)"] == "s4"
    assert f.loc["4000", "missed (value)"] == "s6 74.5%"


def test_entries_off_the_training_length_or_other_metrics_are_left_out():
    rows = cell_rows("s6", {1000: 0.95}) + cell_rows("s4", {1000: 0.5})
    entries = [{"where": {"model.mixer": "s6", "eval_seq_len": 256}, "metric": "accuracy", "op": ">=", "value": 0.9},
               {"where": {"model.mixer": "s4"}, "metric": "train_time_s", "value": 1.0}]
    assert curve_expectations(entries, pd.DataFrame(rows)) == []
    no_curve = pd.DataFrame(rows)[lambda d: ~d.metric.isin(["val_accuracy", "steps"])]
    assert curve_expectations(ENTRIES, no_curve) == []


def test_the_final_evaluation_is_the_last_point_and_budgets_use_the_latest_evaluation():
    """Cells cut by a time budget end between evaluations; their final accuracy is a budget of its own,
    and at any budget a cell counts with its latest evaluation at or before it."""
    stop = "stopped by train.timeout_s=10 at step {} of 9000"
    s6 = cell_rows("s6", {1000: 0.5, 2000: 0.8, 3000: 0.92}, stop=stop.format(3400), final=0.95)
    s4 = cell_rows("s4", {1000: 0.4, 2000: 0.6}, stop=stop.format(2300), final=0.65)
    for rows, last in ((s6, 3400), (s4, 2300)):
        next(r for r in rows if r["metric"] == "steps")["value"] = last
    f = table(s6 + s4).frame.set_index("steps")
    assert list(f.index) == ["1000", "2000", "2300", "3000", "3400"]
    assert f.loc["2300", "missed (value)"] == "s6 80.0%"          # s6's evaluation at 2000; s4's final 0.65
    assert f.loc["2300", "entries met"] == "1 of 2"
    assert f.loc["3000", "not reached (training ended before)"] == "s4"
    assert f.loc["3400", "missed (value)"] == "—" and f.loc["3400", "entries met"] == "1 of 2"


def test_one_table_per_setting_of_a_parameter_the_runs_differ_in():
    rows = []
    for lr, shift in ((0.001, 0.0), (0.002, 0.15)):
        for r in cell_rows("s6", {1000: 0.8 + shift}) + cell_rows("s4", {1000: 0.6 + shift}):
            rows.append({**r, "train.lr": lr, "cell_id": r["cell_id"] + str(lr), "run_id": str(lr)})
    tables = curve_expectations(ENTRIES, pd.DataFrame(rows))
    assert [t.metric.split(":")[0] for t in tables] == ["expectations along the training curve (train.lr=0.001)",
                                                         "expectations along the training curve (train.lr=0.002)"]
    assert [t.frame["entries met"].tolist() for t in tables] == [["1 of 2"], ["1 of 2"]]
    assert tables[0].frame["missed (value)"].tolist() == ["s6 80.0%"]
    assert tables[1].frame["missed (value)"].tolist() == ["s4 75.0%"]


def test_the_task_report_shows_the_table(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "run_id"}
            for r in cell_rows("s6", {1000: 0.5, 2000: 0.95}) + cell_rows("s4", {1000: 0.4, 2000: 0.6})]
    run = write_run(tmp_path / "run", rows, default_meta("t/r", "t", "task"),
                    suite={"name": "t", "kind": "task", "expect": ENTRIES})
    md = (build_report([run], tmp_path / "out") / "report.md").read_text()
    assert "expectations along the training curve" in md and "most met: 2 of 2, at 2000" in md
    assert "| 1000 | 1 of 2 | s6 50.0% | — |" in md


def test_an_entry_at_another_length_is_judged_on_the_curve_at_that_length():
    rows = cell_rows("s6", {1000: 0.95, 2000: 0.97})          # its 4x curve (length 256) is 0.0 throughout
    final_4x = dict(rows[-1], eval_seq_len=256, value=0.96)   # ... but it ends at 96% there
    entries = [{"where": {"model.mixer": "s6", "eval_seq_len": 256}, "metric": "accuracy", "op": ">=", "value": 0.9}]
    t = table(rows + [final_4x], entries)
    f = t.frame.set_index("steps")
    assert list(f["entries met"]) == ["0 of 1", "1 of 1"]   # 2000: the final evaluation, at the cell's last step
    assert f.loc["1000", "missed (value)"] == "s6/256 0.0%"
    assert "at an entry's eval_seq_len" in t.metric
