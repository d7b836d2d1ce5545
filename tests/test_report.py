"""Reports: files written, HTML self-contained and escaped, figures decodable, measured vs expected."""
from __future__ import annotations

import base64
import os
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.report import build_report, default_out_dir
from harness.analysis.cli import main as cli_main
from harness.analysis.report.expect import evaluate, judge, parse_tolerance
from harness.analysis.report.runs import load_run
from harness.analysis.report.summary import task_milestones
from harness.analysis.report.synthetic import default_meta, speed_rows, task_rows, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script> & <b>bold</b> | pipe'


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Collector:
    p = _Collector()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def speed_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    suite = {"name": "speed-test", "kind": "speed", "description": EVIL,
             "expect": [{"where": {"impl": "s6.chunked", "seq_len": 512, "pass": "fwd"}, "metric": "time_ms", "value": 1.0,
                         "source": "synthetic <em>reference</em>", "tolerance": "10%"}]}
    run = write_run(root / "results" / "speed-test" / "20260101T000000Z-abc1234",
                    speed_rows(seq_lens=(256, 512, 1024), repeats=8, passes=("fwd", "fwd+bwd"),
                               failures={("attention.sdpa", 1024): "oom"}),
                    default_meta("speed-test/20260101T000000Z-abc1234", "speed-test", "speed"), suite)
    cwd = os.getcwd()
    os.chdir(root)  # the default report folder is reports/<suite>/<run> under the current directory
    try:
        return build_report([run]), run
    finally:
        os.chdir(cwd)


def test_report_files_and_default_location(speed_report):
    out, run = speed_report
    assert out == run.parents[2] / "reports" / "speed-test" / run.name
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"speed_time_vs_seq_len", "speed_peak_memory"}
    assert (out / "figures" / "speed_time_vs_seq_len.svg").read_bytes().lstrip().startswith(b"<?xml")
    md = (out / "report.md").read_text()
    for p in pngs:
        assert f"figures/{p.name}" in md


def test_html_is_self_contained_with_decodable_images(speed_report):
    out, _ = speed_report
    parsed = _parse(out / "report.html")
    pngs = list((out / "figures").glob("*.png"))
    assert len(parsed.imgs) == len(pngs) >= 2
    for img in parsed.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network


def test_strings_from_yaml_are_escaped(speed_report):
    out, _ = speed_report
    parsed = _parse(out / "report.html")
    assert "script" not in parsed.tags and "em" not in parsed.tags and "b" not in parsed.tags
    assert any(EVIL in t for t in parsed.text)  # shown literally, as text
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;" in html and "<script" not in html
    md = (out / "report.md").read_text()
    assert "<script" not in md and "&lt;script&gt;" in md and "\\| pipe" in md


def test_summary_table_lays_out_length_by_impl(speed_report):
    out, _ = speed_report
    md = (out / "report.md").read_text()
    summary = md.split("## Summary", 1)[1].split("## ", 1)[0]
    assert "time\\_ms (median)" in summary and "pass = fwd+bwd" in summary
    assert "| seq\\_len | attention.sdpa | s6.chunked |" in summary
    assert summary.count("| 1024 | oom |") == 2  # the OOM cell shows its status, in both passes


def test_report_sections(speed_report):
    out, _ = speed_report
    md = (out / "report.md").read_text()
    assert "## Measured vs expected" in md and "✅ matches" in md and "\\|Δ\\| ≤ 10%" in md
    assert "## Cells that did not finish ok" in md and "oom" in md
    assert "### time\\_ms (ms)" in md and "median" in md and "IQR" in md
    assert "torch" in md and "Test CPU" in md


def test_task_report_figures_and_expectations(tmp_path):
    suite = {"name": "task-test", "kind": "task",
             "expect": [{"where": {"model.arch": "mamba", "model.mixer": "s6"}, "metric": "accuracy",
                         "value": 0.998, "source": "Mamba paper, Table 1"}]}
    run = write_run(tmp_path / "results" / "task-test" / "r1", task_rows(failures={("h3", "s4"): "diverged"}),
                    default_meta("r1", "task-test", "task"), suite)
    out = build_report([run], out_dir=tmp_path / "rep")
    assert out == tmp_path / "rep"
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert names == {"task_learning_curves", "task_accuracy_vs_length", "task_accuracy_heatmap"}
    md = (out / "report.md").read_text()
    assert "Mamba paper, Table 1" in md and "diverged" in md
    summary = md.split("## Summary", 1)[1].split("## ", 1)[0]
    assert "| model.arch \\\\ model.mixer | s4 | s6 |" in summary.replace("\\_", "_")
    assert "| h3 | diverged |" in summary and "%" in summary and "±" in summary
    parsed = _parse(out / "report.html")
    assert len(parsed.imgs) == 3


def test_several_suites_make_one_report_with_sections(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to reports/<suite>/<run> under the current directory
    a = write_run(tmp_path / "results" / "smoke-speed" / "r1", speed_rows(seq_lens=(128, 256), repeats=3),
                  default_meta("r1", "smoke-speed", "speed"))
    b = write_run(tmp_path / "results" / "smoke-task" / "r2", task_rows(archs=("mamba",), steps=(0, 5)),
                  default_meta("r2", "smoke-task", "task"))
    runs = [load_run(a), load_run(b)]
    assert default_out_dir(runs).parent.name == "smoke"
    out = build_report([a, b])
    md = (out / "report.md").read_text()
    assert "## smoke-speed" in md and "## smoke-task" in md
    stems = {p.stem for p in (out / "figures").glob("*.png")}
    assert any(s.startswith("smoke_speed_") for s in stems) and any(s.startswith("smoke_task_") for s in stems)


def test_report_cli_bad_path_exits_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err


# --------------------------------------------------------------------------- expect rules


@pytest.mark.parametrize("measured,op,verdict", [
    (0.995, "==", "matches"), (0.985, "==", "close"), (0.95, "==", "misses"),
    (0.999, ">=", "matches"), (0.992, ">=", "close"), (0.90, ">=", "misses"),
    (1.005, "<=", "close"), (0.5, "<=", "matches"),
])
def test_judge_rules(measured, op, verdict):
    assert judge(measured, 0.998 if op != "<=" else 0.998, op, 0.01) == verdict


def test_tolerance_defaults_and_forms():
    assert parse_tolerance(None, 0.9, "accuracy") == (0.01, "0.01")
    assert parse_tolerance(None, 2.0, "time_ms")[0] == pytest.approx(0.2)
    assert parse_tolerance("5%", 4.0, "time_ms")[0] == pytest.approx(0.2)
    assert parse_tolerance(0.03, 1.0, "loss")[0] == pytest.approx(0.03)


def _rows(**cols):
    base = {"status": "ok", "unit": "", "cell_id": "c", "repeat": 0}
    n = len(next(iter(cols.values())))
    return pd.DataFrame([{**base, **{k: v[i] for k, v in cols.items()}} for i in range(n)])


def test_expect_uses_training_length_and_skips_curves():
    rows = _rows(metric=["accuracy"] * 4, value=[0.2, 0.99, 0.5, 0.1],
                 **{"task.seq_len": [256] * 4, "eval_seq_len": [None, 256, 1024, None],
                    "step": [10, None, None, None], "model.mixer": ["s6"] * 4})
    rows = rows.iloc[:3]
    (res,) = evaluate([{"where": {"model.mixer": "s6"}, "metric": "accuracy", "value": 0.99, "source": "s"}], rows)
    assert res.measured == pytest.approx(0.99) and res.verdict == "matches" and "training length" in res.note


def test_expect_reports_missing_data_plainly():
    rows = _rows(metric=["accuracy", "cell"], value=[0.9, None], status=["ok", "oom"],
                 mixer=["s6", "s4"], cell_id=["a", "b"])
    entries = [{"where": {"model.arch": "x"}, "metric": "accuracy", "value": 0.9, "source": "s"},
               {"where": {"mixer": "s4"}, "metric": "cell", "value": 1, "source": "s"},
               {"where": {"mixer": "s6"}, "metric": "accuracy", "value": 99.8, "source": "s"}]
    r_col, r_oom, r_pct = evaluate(entries, rows)
    assert r_col.verdict == "no data" and "no column 'model.arch'" in r_col.note
    assert r_oom.verdict == "no data" and "oom" in r_oom.note
    assert r_pct.verdict == "misses" and "fractions" in r_pct.note


def test_length_curves_get_their_own_figure_and_stay_out_of_the_learning_curves(tmp_path):
    """train.curve_seq_lens rows (val_accuracy with a step and an eval_seq_len) make a per-length
    figure; the training-length learning curve keeps only the unlabelled points."""
    from harness.analysis.report.figures import learning_curve_figure, length_curve_figure

    rows = task_rows()
    extra = []
    for r in rows:
        if r.get("metric") == "accuracy" and r.get("step") is not None:
            extra.append({**r, "metric": "val_accuracy"})
            extra.append({**r, "metric": "val_accuracy", "eval_seq_len": 256, "value": r["value"] / 2})
    df = pd.DataFrame(rows + extra).assign(run_id="task-test/r1")
    fig = length_curve_figure(df)
    assert fig is not None and fig.name == "task_length_curves"
    plain = length_curve_figure(pd.DataFrame(rows + [e for e in extra if "eval_seq_len" not in e]).assign(run_id="r"))
    assert plain is None  # nothing at other lengths: no figure
    assert learning_curve_figure(df) is not None


def test_milestones_give_the_first_step_at_each_accuracy_per_cell():
    """Take-off steps from the training-length curve only (rows at other lengths ignored), 'never' when
    a cell does not get there, seeds apart, steps from the cell's steps row."""
    rows = []

    def add(cell, mixer, seed, curve, steps, other_len=()):
        base = {"run_id": "s/r1", "cell_id": cell, "model.mixer": mixer, "seed": seed, "task.seq_len": 64,
                "status": "ok", "unit": "fraction", "repeat": 0, "message": None}
        for step, v in curve:
            rows.append({**base, "metric": "val_accuracy", "value": v, "step": step})
        for step, v in other_len:   # an extra curve length: must not count
            rows.append({**base, "metric": "val_accuracy", "value": v, "step": step, "eval_seq_len": 256})
        rows.append({**base, "metric": "steps", "value": steps, "unit": "steps"})

    add("a", "s6", 0, [(100, 0.1), (200, 0.55), (300, 0.95), (400, 0.93)], 400)
    add("b", "s6", 1, [(100, 0.1), (200, 0.2)], 250, other_len=[(100, 0.99)])
    add("c", "s4", 0, [(100, 0.5), (200, 0.6)], 200)
    add("d", "s4", 1, [(100, 0.4), (200, 0.89)], 200)
    [table] = task_milestones(pd.DataFrame(rows))
    assert table.columns == ["model.mixer", "seed", "steps", "step at >= 50%", "step at >= 90%", "last val accuracy",
                             "last 3 val, mean (range)"]
    assert [r[:6] for r in table.frame.values.tolist()] == [
        ["s4", "0", "200", "100", "never", "60.0%"],
        ["s4", "1", "200", "200", "never", "89.0%"],
        ["s6", "0", "400", "200", "300", "93.0%"],
        ["s6", "1", "250", "never", "never", "20.0%"],
    ]
    # the last 3 evaluations (fewer when the curve is shorter)
    assert [r[6] for r in table.frame.values.tolist()] == ["55.0% (50.0–60.0)", "64.5% (40.0–89.0)",
                                                           "81.0% (55.0–95.0)", "15.0% (10.0–20.0)"]
    assert task_milestones(pd.DataFrame([r for r in rows if r["metric"] == "steps"])) == []  # no curve, no table


def test_report_names_the_set_overrides_a_run_used(tmp_path):
    """A run made with --set shows them beside the suite's description, which is the suite as written."""
    suite = {"name": "task-test", "kind": "task", "description": "selective copying at length 512"}
    plain = write_run(tmp_path / "results" / "task-test" / "r1", task_rows(), default_meta("r1", "task-test", "task"), suite)
    changed = write_run(tmp_path / "results" / "task-test" / "r2", task_rows(), default_meta("r2", "task-test", "task"),
                        suite, overrides={"task.seq_len": 1024, "train.lr": 0.001})
    md = (build_report([changed], out_dir=tmp_path / "a") / "report.md").read_text()
    assert "selective copying at length 512" in md
    assert "Run with `--set` overrides (r2: task.seq\\_len=1024, train.lr=0.001)" in md
    assert "task.seq_len=1024" in (tmp_path / "a" / "report.html").read_text()
    assert "overrides" not in (build_report([plain], out_dir=tmp_path / "b") / "report.md").read_text()


def test_expect_judges_each_setting_of_a_varying_parameter_apart():
    """Two runs of one suite, at lr 1e-3 and 2e-3, seeds 0 and 1: the entry gets one verdict per lr (mean
    over that lr's seeds), not one for the mean of both runs."""
    acc = {(1e-3, 0): 0.96, (1e-3, 1): 0.94, (2e-3, 0): 0.10, (2e-3, 1): 0.20}
    rows = _rows(metric=["accuracy"] * 4, value=list(acc.values()),
                 **{"model.mixer": ["s6"] * 4, "train.lr": [k[0] for k in acc], "seed": [k[1] for k in acc],
                    "cell_id": [f"c{i}" for i in range(4)], "run_id": ["r1", "r1", "r2", "r2"]})
    entry = {"where": {"model.mixer": "s6"}, "metric": "accuracy", "op": ">=", "value": 0.9, "source": "s"}
    lo, hi = evaluate([entry], rows)
    assert (lo.where, lo.measured, lo.n, lo.verdict) == ({"model.mixer": "s6", "train.lr": 1e-3}, pytest.approx(0.95), 2, "matches")
    assert "2 of 2 cells meet it" in lo.note
    assert (hi.where, hi.measured, hi.n, hi.verdict) == ({"model.mixer": "s6", "train.lr": 2e-3}, pytest.approx(0.15), 2, "misses")
    # where naming the lr: one result; seeds alone never split
    (one,) = evaluate([{**entry, "where": {"model.mixer": "s6", "train.lr": 2e-3}}], rows)
    assert one.measured == pytest.approx(0.15)
    (pooled,) = evaluate([entry], rows[rows["train.lr"] == 1e-3])
    assert pooled.n == 2 and pooled.where == {"model.mixer": "s6"}


def test_expect_over_seeds_says_how_many_meet_it_alone():
    """Mamba at 16x over 8 seeds (H200, 2026-12-02): the mean misses 0.95 while 5 seeds meet it."""
    acc = [0.781, 0.969, 1.0, 0.957, 1.0, 1.0, 0.816, 0.637]
    rows = _rows(metric=["accuracy"] * 8, value=acc, seed=list(range(8)), **{"model.arch": ["mamba"] * 8},
                 cell_id=[f"c{i}" for i in range(8)], run_id=["r"] * 8)
    (res,) = evaluate([{"where": {"model.arch": "mamba"}, "metric": "accuracy", "op": ">=", "value": 0.95,
                        "tolerance": 0.02, "source": "s"}], rows)
    assert res.verdict == "misses" and res.n == 8 and "5 of 8 cells meet it on their own" in res.note


def test_series_labels_leave_out_model_keys_the_row_model_ignores():
    from harness.analysis.report.axes import series_label
    df = pd.DataFrame({"model.arch": ["mamba", "transformer", "transformer", "h3"],
                       "model.mixer": ["s6", "attention", "attention", "hyena"],
                       "model.pos": ["rope", "abs", "rope", "rope"],
                       "model.max_len": [4096, 4096, 4096, 256]})
    labels = series_label(df, ["model.arch", "model.mixer", "model.pos", "model.max_len"]).tolist()
    assert labels == ["arch=mamba, mixer=s6",
                      "arch=transformer, mixer=attention, pos=abs, max_len=4096",
                      "arch=transformer, mixer=attention, pos=rope",
                      "arch=h3, mixer=hyena, max_len=256"]
    # rows that do not say which model they are keep every key
    bare = pd.DataFrame({"impl": ["s6.triton"], "model.pos": ["rope"]})
    assert series_label(bare, ["impl", "model.pos"]).tolist() == ["impl=s6.triton, pos=rope"]


def test_series_labels_leave_out_keys_a_row_has_no_value_for():
    """An SSD operator beside a Mamba-2 layer in one speed suite: the operator's label has no "arch=—"."""
    from harness.analysis.report.axes import series_label
    df = pd.DataFrame({"impl": ["ssd.chunked", "layer"], "model.arch": [None, "mamba2"]})
    assert series_label(df, ["impl", "model.arch"]).tolist() == ["impl=ssd.chunked", "impl=layer, arch=mamba2"]


def test_task_reports_say_which_accuracy_each_table_counts():
    from harness.analysis.report.summary import task_summary
    from harness.analysis.report.tables import metric_tables
    rows = []
    for arch in ("mamba", "h3"):
        for metric, value in (("accuracy", 0.9), ("seq_accuracy", 0.5)):
            rows.append({"cell_id": arch, "status": "ok", "metric": metric, "value": value, "unit": "fraction",
                         "model.arch": arch, "model.mixer": "s6", "step": None})
    df = pd.DataFrame(rows)
    units = {t.metric: t.unit for t in metric_tables(df)}
    assert units == {"accuracy": "fraction; per answer token",
                     "seq_accuracy": "fraction; per sequence: every answer right"}
    assert "per answer token" in task_summary(df)[0].metric


def test_result_tables_show_a_dash_for_model_keys_the_row_model_ignores():
    from harness.analysis.report.tables import metric_tables
    rows = [{"cell_id": arch + pos, "run_id": "r", "repeat": 0, "status": "ok", "metric": "accuracy", "value": v,
             "unit": "fraction", "model.arch": arch, "model.mixer": mixer, "model.pos": pos, "step": None}
            for arch, mixer, pos, v in (("mamba", "s6", "rope", 1.0), ("transformer", "attention", "abs", 0.1),
                                        ("transformer", "attention", "rope", 0.2))]
    frame = metric_tables(pd.DataFrame(rows))[0].frame
    assert dict(zip(frame["model.arch"] + "/" + frame["model.pos"], frame["mean"])) == {
        "mamba/n/a": "1", "transformer/abs": "0.1", "transformer/rope": "0.2"}


def test_labels_never_go_empty_and_a_single_column_axis_says_n_a():
    from harness.analysis.report.axes import series_label
    from harness.analysis.report.summary import task_summary
    mamba_only = pd.DataFrame({"model.arch": ["mamba", "mamba"], "model.mixer": ["s6", "s6"],
                               "model.pos": ["rope", "abs"]})
    assert series_label(mamba_only, ["model.pos"]).tolist() == ["pos=rope", "pos=abs"]   # nothing else to show
    rows = [{"cell_id": mixer + pos, "run_id": "r", "repeat": 0, "status": "ok", "metric": "accuracy", "value": v,
             "unit": "fraction", "model.arch": "mamba", "model.mixer": mixer, "model.pos": pos, "step": None}
            for mixer, pos, v in (("s6", "rope", 1.0), ("s6", "abs", 1.0), ("attention", "rope", 0.5),
                                  ("attention", "abs", 0.25))]
    frame = task_summary(pd.DataFrame(rows))[0].frame
    assert list(frame.columns) == ["model.mixer \\ model.pos", "abs", "n/a", "rope"]
    s6 = frame[frame["model.mixer \\ model.pos"] == "s6"].iloc[0]
    assert (s6["n/a"], s6["abs"], s6["rope"]) == ("100.0% ± 0.0 (n=2)", "—", "—")



# --------------------------------------------------------------------------- incomplete data (issue 17)

FOUR_CELLS = """
name: fake-four
kind: fake
sweep: {seq_len: [8, 16, 32, 64]}
"""


def _four_cell_run(cli, write_suite, tmp_path):
    suite = write_suite(FOUR_CELLS)
    res = cli("run", suite, "--out", tmp_path / "results", "--quiet", "--no-report")
    assert res.code == 0, res.err
    (run_dir,) = [p.parent for p in (tmp_path / "results").rglob("rows.jsonl")]
    return run_dir


def _keep_cells(run_dir, n):
    """Cut rows.jsonl down to the rows of its first ``n`` cells (a run killed, or a file cut short)."""
    import json

    lines = (run_dir / "rows.jsonl").read_text().splitlines(keepends=True)
    cells = list(dict.fromkeys(json.loads(line)["cell_id"] for line in lines))[:n]
    (run_dir / "rows.jsonl").write_text("".join(l for l in lines if json.loads(l)["cell_id"] in cells))


def test_report_of_a_run_missing_planned_cells_says_so_and_exits_1(cli, write_suite, tmp_path):
    run_dir = _four_cell_run(cli, write_suite, tmp_path)
    (run_dir / "results.parquet").unlink(missing_ok=True)
    (run_dir / "results.csv").unlink(missing_ok=True)
    _keep_cells(run_dir, 2)
    res = cli("report", run_dir, "--out", tmp_path / "rep")
    assert res.code == 1
    assert "2 of 4 planned cells have rows in rows.jsonl" in res.err
    assert "seq_len=32" in res.err and "seq_len=64" in res.err and "seq_len=8;" not in res.err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**2 of 4 planned cells have rows**" in md and "warning:" in md
    assert "2 of 4 planned cells have rows" in (tmp_path / "rep" / "report.html").read_text()
    # the complete run reports cleanly
    full = _four_cell_run(cli, write_suite, tmp_path / "again")
    res = cli("report", full, "--out", tmp_path / "rep2")
    assert res.code == 0 and "warning" not in res.err
    assert "**4 cells**" in (tmp_path / "rep2" / "report.md").read_text()


def test_truncated_rows_jsonl_next_to_a_complete_table_is_noticed(cli, write_suite, tmp_path):
    run_dir = _four_cell_run(cli, write_suite, tmp_path)
    assert (run_dir / "results.parquet").is_file()
    _keep_cells(run_dir, 2)
    with open(run_dir / "rows.jsonl", "a") as fh:
        fh.write('{"cell_id": "torn')                       # and a last line cut mid-row
    run = load_run(run_dir)
    assert run.source == "results.parquet" and not run.missing_cells
    assert any("read results.parquet" in n and "rows.jsonl looks truncated" in n for n in run.notes)
    assert any("torn" in n for n in run.notes)
    res = cli("report", run_dir, "--out", tmp_path / "rep")
    assert res.code == 0 and "read results.parquet" in res.err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "rows read from" in md and "results.parquet" in md and "**4 cells**" in md


def test_report_shows_machine_noise_and_marks_noisy_timings(tmp_path):
    meta = default_meta("noisy", "speed-test", "speed")
    meta.update(load_avg_1m=1.5, load_avg_5m=0.75, load_avg_15m=0.5, cpu_freq_mhz=1800.0, cpu_freq_max_mhz=3000.0)
    run = write_run(tmp_path / "results" / "speed-test" / "noisy", speed_rows(seq_lens=(128,), noise=3.0, repeats=12),
                    meta)
    out = build_report([run], out_dir=tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert "| load average | 1.5 0.75 0.5 (1/5/15 min) |" in md and "| CPU frequency | 1800 MHz (max 3000) |" in md
    assert "load_avg_1m" not in md and "cpu_freq_mhz" not in md   # folded into the two rows above
    assert "noisy: IQR exceeds median" in md
    quiet = write_run(tmp_path / "results" / "speed-test" / "quiet", speed_rows(seq_lens=(128,), repeats=12),
                      default_meta("quiet", "speed-test", "speed"))
    md = (build_report([quiet], out_dir=tmp_path / "rep2") / "report.md").read_text()
    assert "noisy" not in md and "load average" not in md


def test_report_of_a_run_without_rows_or_to_an_unwritable_place_is_not_a_success(tmp_path, capsys):
    empty = write_run(tmp_path / "results" / "speed-test" / "empty", [], default_meta("empty", "speed-test", "speed"))
    assert cli_main(["report", str(empty), "--out", str(tmp_path / "rep")]) == 1
    assert "no rows at all" in capsys.readouterr().err
    run = write_run(tmp_path / "results" / "speed-test" / "r", speed_rows(seq_lens=(64,), repeats=3),
                    default_meta("r", "speed-test", "speed"))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cli_main(["report", str(run), "--out", str(blocker / "rep")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report" in err and "Traceback" not in err


def test_expect_summarises_timings_by_their_median_and_quality_by_its_mean():
    """A timing's repeats have a long right tail (one slow repeat is noise), so an expect entry on a timing is judged
    on the median; quality values (one per seed) on the mean."""
    times = [1.0, 1.1, 0.9, 1.05, 9.0]
    rows = _rows(metric=["time_ms"] * 5, value=times, unit=["ms"] * 5, repeat=list(range(5)),
                 **{"impl": ["s6.chunked"] * 5})
    (res,) = evaluate([{"where": {"impl": "s6.chunked"}, "metric": "time_ms", "op": "<=", "value": 1.2,
                        "source": "s"}], rows)
    assert res.measured == pytest.approx(1.05) and res.n == 5 and res.verdict == "matches"
    acc = [0.5, 0.9, 1.0]
    rows = _rows(metric=["accuracy"] * 3, value=acc, seed=[0, 1, 2], cell_id=["a", "b", "c"],
                 **{"model.arch": ["mamba"] * 3})
    (res,) = evaluate([{"where": {"model.arch": "mamba"}, "metric": "accuracy", "value": 0.8, "source": "s"}], rows)
    assert res.measured == pytest.approx(0.8) and res.verdict == "matches"
