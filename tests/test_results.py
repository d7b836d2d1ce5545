"""The tidy results store: columns, JSONL reading, parquet/CSV tables, load() and load_meta()."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import run_dirs
from harness.store.results import (RUN_COLUMNS, RowStore, canonical_columns, cell_status, load, load_meta,
                                  param_columns, read_rows, rows_to_frame, tidy_row, write_tables)

REQUIRED = list(RUN_COLUMNS) + ["status", "metric", "value", "unit", "repeat", "message"]


def test_canonical_columns_of_a_task_cell():
    params = {"task": {"name": "selective_copying", "seq_len": 4096},
              "model": {"arch": "mamba", "mixer": "s6", "d_model": 64, "d_state": 16, "n_layers": 2,
                        "backend": "chunked"},
              "train": {"batch": 64}, "device": "cpu", "seed": 1}
    assert canonical_columns(params) == {
        "model": "mamba/s6", "mixer": "s6", "backend": "chunked", "task": "selective_copying", "seq_len": 4096,
        "batch": 64, "d_model": 64, "d_state": 16, "n_layers": 2, "device": "cpu", "seed": 1}
    assert canonical_columns({"model": {"arch": "none", "mixer": "s4"}})["model"] == "s4"


def test_canonical_columns_of_a_bench_cell():
    params = {"impl": "s6.triton", "seq_len": 1024, "batch": 4, "d_model": 1024, "d_state": 16,
              "dtype": "bf16", "device": "cuda"}
    cols = canonical_columns(params)
    assert cols["model"] == "s6.triton" and cols["mixer"] == "s6" and cols["backend"] == "triton"
    assert cols["seq_len"] == 1024 and cols["dtype"] == "bf16"


def test_param_columns_flatten_and_fill_defaults_without_overriding_written_values():
    cols = param_columns({"model": {"mixer": "s6", "d_state": 4}, "seq_len": 8},
                         resolved={"model": {"mixer": "s6", "d_state": 999, "d_model": 8}, "seq_len": 8})
    assert cols["model.d_state"] == 4 and cols["model.d_model"] == 8
    assert cols["d_state"] == 4 and cols["model"] == "s6"


def test_rows_have_the_tidy_columns(write_suite, cli, tmp_path):
    path = write_suite("""
        name: cols
        kind: fake
        device: cpu
        defaults: {model: {arch: mamba, d_state: 4}}
        sweep: {model.mixer: [s4, s6]}
        seeds: [3]
        """)
    assert cli("run", path, "--no-report", "--quiet").code == 0
    frame = load(tmp_path / "results")
    for col in REQUIRED + ["model.mixer", "model.d_state", "model.d_model", "model", "mixer", "d_state",
                           "seq_len", "batch", "device", "seed", "host", "device_name", "wall_s"]:
        assert col in frame.columns, col
    assert list(frame.columns[:len(REQUIRED)]) == REQUIRED
    assert set(frame["model"]) == {"mamba/s4", "mamba/s6"}
    assert set(frame["seed"]) == {3} and set(frame["status"]) == {"ok"}
    assert frame["value"].dtype == "float64"
    csv = pd.read_csv(next(tmp_path.rglob("results.csv")))
    assert len(csv) == len(frame)


def test_read_rows_ignores_a_torn_last_line_but_not_a_torn_middle_one(tmp_path):
    good = json.dumps({"cell_id": "a", "metric": "m", "value": 1.0})
    path = tmp_path / "rows.jsonl"
    path.write_text(good + "\n" + good[:10])
    assert len(read_rows(path)) == 1
    path.write_text(good[:10] + "\n" + good + "\n")
    with pytest.raises(ValueError, match="damaged"):
        read_rows(path)


def test_tables_survive_mixed_value_types_and_list_params(tmp_path):
    rows = [{"run_id": "r", "cell_id": "a", "metric": "m", "value": 1.5, "eval_seq_lens": [64, 128]},
            {"run_id": "r", "cell_id": "a", "metric": "label", "value": "fast", "odd": [1, "x"]},
            {"run_id": "r", "cell_id": "b", "metric": "cell", "value": None, "status": "error", "message": "boom"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = write_tables(tmp_path)
    assert len(frame) == 3
    back = pd.read_parquet(tmp_path / "results.parquet")
    assert list(back["metric"]) == ["m", "label", "cell"]
    assert back["message"].iloc[2] == "boom"


def test_load_many_runs_and_paths_of_every_form(write_suite, cli, tmp_path):
    path = write_suite("""
        name: many
        kind: fake
        device: cpu
        sweep: {batch: [1, 2]}
        """)
    cli("run", path, "--no-report", "--quiet")
    cli("run", path, "--no-report", "--quiet")
    a, b = run_dirs(tmp_path / "results")
    both = load([a, b])
    assert both["run_id"].nunique() == 2 and len(both) == 8
    assert len(load(tmp_path / "results")) == 8                   # a dir of run dirs
    assert len(load([a, a / "rows.jsonl"])) == 4                  # same run named twice: read once
    assert len(load(a / "results.parquet")) == 4
    assert load_meta(a)["suite"] == "many"
    with pytest.raises(FileNotFoundError):
        load_meta(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")


def test_empty_frame_has_the_tidy_columns():
    assert list(rows_to_frame([]).columns) == REQUIRED


def _large_rows_file(tmp_path, values="float"):
    """A rows.jsonl of 6000 rows (1.2-1.5 MiB: above read_frame's 1 MiB threshold, below 2 MiB) and a torn last line."""
    rows = []
    for i in range(6000):
        row = {"cell_id": f"{i % 50:012x}", "run_id": "s/r", "suite": "s", "commit": "c" * 40, "dirty": False,
               "kind": "task", "status": "ok" if i % 7 else "error", "metric": "m",
               "value": i if values == "int" else f"v{i}" if values == "strings" else i * 0.5,
               "unit": "ms", "repeat": i % 3, "message": None if i % 7 else "boom",
               "train.eval_seq_lens": [64, 128], "step": None if i % 2 else i}
        if values == "mixed" and i == 17:
            row["value"] = "fast"
        if values == "no_message_column":
            del row["message"]
        rows.append(row)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cell_id": "torn')
    assert 1 << 20 < path.stat().st_size < 2 << 20
    return path


@pytest.mark.parametrize("values", ["float", "mixed", "int", "strings", "no_message_column"])
def test_fast_and_exact_readers_give_the_same_frame(tmp_path, values):
    """The pyarrow reader (files > 1 MiB) and the exact one agree on every value and on the value column's dtype:
    integer values become float64 on both paths, a string among them (or all strings) keeps the column as objects,
    and a tidy column no row has is added (empty) by both."""
    from harness.store.results import read_frame
    path = _large_rows_file(tmp_path, values)
    fast, exact = read_frame(path), rows_to_frame(read_rows(path))
    pd.testing.assert_frame_equal(fast, exact, check_dtype=False)
    assert len(fast) == 6000
    numeric = values not in ("mixed", "strings")      # else object, or pandas' string dtype for all-string values
    assert (fast["value"].dtype == "float64") == (exact["value"].dtype == "float64") == numeric
    assert fast["message"].isna().all() == exact["message"].isna().all() == (values == "no_message_column")
    assert fast["train.eval_seq_lens"].iloc[0] == [64, 128]


def test_load_meta_takes_the_run_directory_or_its_meta_json(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"commit": "abc", "host": "caf\u00e9"}), encoding="utf-8")
    assert load_meta(tmp_path) == load_meta(tmp_path / "meta.json") == {"commit": "abc", "host": "caf\u00e9"}
    with pytest.raises(FileNotFoundError, match=r"no meta.json \(is .*empty a run directory\?\)"):
        (tmp_path / "empty").mkdir()
        load_meta(tmp_path / "empty")


def _tidy(run_id: str, n: int):
    return [{"run_id": run_id, "suite": "s", "cell_id": f"{i:012x}", "commit": "c", "dirty": False, "kind": "fake",
             "status": "ok", "metric": "m", "value": float(i), "unit": "", "repeat": 0} for i in range(n)]


def test_load_finds_runs_stored_either_way_below_a_folder(tmp_path):
    """A folder of runs: one with rows.jsonl only, one with results.parquet only (rows.jsonl deleted to save
    space), one with both (rows.jsonl is read: it is the complete record).  Also a CSV export, an empty
    folder, and the error for a missing path; the loaded frame has a fresh 0..n-1 index."""
    from harness.store.results import PARQUET_FILE, ROWS_FILE

    for name in ("jsonl_only", "parquet_only", "both"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    (tmp_path / "runs" / "jsonl_only" / ROWS_FILE).write_text("".join(json.dumps(r) + "\n" for r in _tidy("a", 3)))
    rows_to_frame(_tidy("b", 4)).to_parquet(tmp_path / "runs" / "parquet_only" / PARQUET_FILE)
    (tmp_path / "runs" / "both" / ROWS_FILE).write_text("".join(json.dumps(r) + "\n" for r in _tidy("c", 5)))
    rows_to_frame(_tidy("c", 2)).to_parquet(tmp_path / "runs" / "both" / PARQUET_FILE)   # an older, shorter table
    frame = load(tmp_path / "runs")
    assert frame.groupby("run_id").size().to_dict() == {"a": 3, "b": 4, "c": 5}
    assert list(frame.index) == list(range(12))
    assert len(load(tmp_path / "runs" / "parquet_only")) == 4
    rows_to_frame(_tidy("d", 2)).to_csv(tmp_path / "export.csv", index=False)
    assert load(tmp_path / "export.csv")["run_id"].tolist() == ["d", "d"]
    (tmp_path / "empty").mkdir()
    assert list(load(tmp_path / "empty").columns) == list(rows_to_frame([]).columns) and len(load(tmp_path / "empty")) == 0
    with pytest.raises(FileNotFoundError, match="no such run directory or rows file"):
        load(tmp_path / "missing")


# --------------------------------------------------------------------------- columns, rows and the store, directly

@pytest.mark.parametrize("params, want", [
    ({"mixer": "s4", "arch": "h3", "backend": "fft", "task": "copying", "seq_len": 64, "batch": 8, "d_model": 16,
      "d_state": 4, "n_layers": 2, "dtype": "fp32", "device": "cpu", "seed": 3},
     {"model": "h3/s4", "mixer": "s4", "backend": "fft", "task": "copying", "seq_len": 64, "batch": 8,
      "d_model": 16, "d_state": 4, "n_layers": 2, "dtype": "fp32", "device": "cpu", "seed": 3}),
    # nested keys, each where the kinds put it (task.seq_len, train.batch, train.dtype)
    ({"task": {"name": "mqar", "seq_len": 32}, "train": {"batch": 2, "dtype": "bf16"},
      "model": {"mixer": "s6", "d_model": 8, "d_state": 2, "n_layers": 1, "dtype": "fp32"}},
     {"model": "s6", "mixer": "s6", "task": "mqar", "seq_len": 32, "batch": 2, "d_model": 8, "d_state": 2,
      "n_layers": 1, "dtype": "bf16"}),
    # the first key that has a value wins: model.* over flat, flat seq_len/batch/d_model over nested
    ({"model": {"mixer": "s6", "arch": "mamba", "backend": "chunked", "d_model": 1, "dtype": "fp16"},
      "mixer": "s4", "arch": "h3", "backend": "fft", "seq_len": 5, "task": {"name": "t", "seq_len": 6},
      "batch": 7, "train": {"batch": 8}, "d_model": 9},
     {"model": "mamba/s6", "mixer": "s6", "backend": "chunked", "task": "t", "seq_len": 5, "batch": 7,
      "d_model": 9, "dtype": "fp16"}),
    ({"impl": "attention"}, {"model": "attention", "mixer": "attention"}),           # no backend: not None
    ({"impl": "s6.triton", "mixer": "mine", "backend": "b"}, {"model": "s6.triton", "mixer": "mine", "backend": "b"}),
    ({"impl": "s6.triton", "model": {"backend": "b2"}}, {"model": "s6.triton", "mixer": "s6", "backend": "b2"}),
    ({"model": {"mixer": "s4", "arch": "none"}, "seed": 0, "n_layers": 0}, {"model": "s4", "mixer": "s4", "seed": 0,
                                                                           "n_layers": 0}),  # 0 is a value
    ({"task": {"seq_len": 4}, "device": {"kind": "cuda"}}, {"seq_len": 4}),          # a mapping is not a value
    ({}, {}),
], ids=["flat", "nested", "precedence", "impl without backend", "impl with its own mixer", "impl, model.backend",
        "zeros and arch none", "mappings", "empty"])
def test_canonical_columns_take_each_column_from_the_first_key_that_has_a_value(params, want):
    got = canonical_columns(params)
    assert got == want
    assert "backend" not in got or got["backend"] is not None


def test_tidy_row_orders_the_columns_and_lets_the_row_but_not_the_params_override():
    run = {"run_id": "s/r1", "suite": "s", "cell_id": "c1", "commit": "abc", "dirty": False, "kind": "speed"}
    row = {"status": "ok", "metric": "time_ms", "value": 1.5, "step": 3, "kind": "not-the-kind", "wall_s": 0.1}
    params = {"seq_len": 8, "metric": "param-metric", "step": 99, "suite": "other"}
    out = tidy_row(row, run, params)
    assert list(out) == ["cell_id", "run_id", "suite", "commit", "dirty", "kind", "status", "metric", "value",
                         "unit", "repeat", "message", "seq_len", "step", "wall_s"]
    assert out["kind"] == "speed" and out["suite"] == "s" and out["metric"] == "time_ms"
    assert out["unit"] is None and out["repeat"] is None and out["message"] is None
    assert out["seq_len"] == 8 and out["step"] == 3 and out["wall_s"] == 0.1


@pytest.mark.parametrize("statuses, want", [
    ([], "ok"), ([None, ""], "ok"), (["ok", "skipped"], "skipped"), (["diverged", "skipped"], "diverged"),
    (["ok", "timeout", "diverged"], "timeout"), (["oom", "timeout"], "oom"), (["error", "oom"], "error"),
    (["ok", "odd"], "odd"), (["odd", "ok", "oom"], "odd"), (["error", "odd"], "error"), (["odd", "error"], "odd"),
])
def test_a_cells_status_is_its_worst_row_and_an_unknown_status_counts_as_an_error(statuses, want):
    """Of two statuses of the same rank (error, or one this module does not know) the first stays."""
    assert cell_status([{"status": s} for s in statuses]) == want


def test_the_row_store_appends_whole_cells_and_reads_them_back(tmp_path):
    store = RowStore(tmp_path)
    assert store.path == tmp_path / "rows.jsonl" and store.read() == [] and store.finished() == {}
    store.append([{"cell_id": "a1", "status": "ok", "path": tmp_path, "name": "é"},
                  {"cell_id": "a1", "status": "oom"}])
    store.append([{"cell_id": "b2"}])
    text = store.path.read_bytes().decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 3
    assert store.read()[0] == {"cell_id": "a1", "status": "ok", "path": str(tmp_path), "name": "é"}
    assert list(store.finished().items()) == [("a1", "oom"), ("b2", "ok")]
    mode = store.path.stat().st_mode & 0o777
    assert mode & 0o600 == 0o600 and not mode & 0o111     # readable, writable, not executable


def test_repair_drops_a_torn_last_line_and_the_rows_of_its_cell(tmp_path):
    store = RowStore(tmp_path)
    assert store.repair() is None                        # no file yet
    store.path.write_bytes(b"")
    assert store.repair() is None
    whole = [json.dumps({"cell_id": c, "metric": "m"}) + "\n" for c in ("0a", "1b", "1b")]
    store.path.write_text("".join(whole))
    assert store.repair() is None and store.path.read_text() == "".join(whole)
    store.path.write_text("".join(whole) + '{"cell_id": "1b", "met')      # killed mid-write of cell 1b
    assert store.repair() == "1b"
    assert store.path.read_text() == whole[0] and not list(tmp_path.glob("*.tmp"))
    store.path.write_text("".join(whole) + '{"cel')                      # no cell id in the torn part
    assert store.repair() == "?"
    assert store.path.read_text() == "".join(whole)
    store.path.write_text(whole[1] + whole[0] + '{"cell_id": "1b", "m')   # only the trailing rows of the cell
    assert store.repair() == "1b" and store.path.read_text() == whole[1] + whole[0]


def test_read_rows_skips_blank_lines_and_names_the_damaged_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert read_rows(path) == []
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n')
    assert read_rows(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a"\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: not a JSON row"):
        read_rows(path)


@pytest.mark.parametrize("values", ["float", "int", "strings"])
def test_a_large_file_is_read_by_pyarrow_not_row_by_row(tmp_path, monkeypatch, values):
    """The fast path falls back to the exact reader on any error, so a broken fast path would still give the right
    frame, only many times slower: with the exact reader made to fail, a large file must still be read."""
    import harness.store.results as results
    path = _large_rows_file(tmp_path, values)
    monkeypatch.setattr(results, "read_rows", lambda p: pytest.fail("the row-by-row reader ran on a large file"))
    frame = results.read_frame(path)
    assert len(frame) == 6000 and frame["cell_id"].iloc[-1] == f"{5999 % 50:012x}"   # the torn line dropped


def test_read_frame_of_a_missing_file_is_the_empty_tidy_frame(tmp_path):
    from harness.store.results import read_frame
    assert list(read_frame(tmp_path / "rows.jsonl").columns) == REQUIRED


def test_param_columns_without_resolved_values_and_without_touching_them():
    assert param_columns({"model": {"mixer": "s6"}, "seq_len": 8}) == {"model.mixer": "s6", "seq_len": 8,
                                                                      "model": "s6", "mixer": "s6"}
    resolved = {"model": {"mixer": "s6", "d_state": 999}}
    param_columns({"model": {"d_state": 4}}, resolved)
    assert resolved == {"model": {"mixer": "s6", "d_state": 999}}     # the caller's (cached) defaults stay


def test_tables_store_what_parquet_can_natively_and_the_rest_as_json_text(tmp_path):
    """results.parquet keeps arrow-storable columns as they are (lists, a bool column with a missing value) and
    turns only unstorable ones (mixed types) into JSON text, strings as they are and missing values as null; no
    index column in either table."""
    import pyarrow.parquet as pq
    rows = [{"run_id": "r", "cell_id": "a", "metric": "m", "value": 1.0, "lens": [64, 128], "flag": True,
             "mixed": 1, "mixed_lists": [1, "x"]},
            {"run_id": "r", "cell_id": "b", "metric": "m", "value": 2.0, "lens": [32], "mixed": "fast",
             "mixed_lists": [2]},
            {"run_id": "r", "cell_id": "c", "metric": "m", "value": 3.0, "lens": [], "flag": False,
             "mixed": {"k": 1}},
            {"run_id": "r", "cell_id": "d", "metric": "m", "value": 4.0, "lens": [1], "flag": True, "mixed": 2.5,
             "mixed_lists": [3]}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_tables(tmp_path)
    schema = pq.read_schema(tmp_path / "results.parquet")
    assert not [n for n in schema.names if n.startswith("__index")]
    back = pd.read_parquet(tmp_path / "results.parquet")
    assert [list(v) for v in back["lens"]] == [[64, 128], [32], [], [1]]
    assert list(back["flag"]) == [True, None, False, True]
    assert list(back["mixed"]) == ["1", "fast", '{"k": 1}', "2.5"]
    assert list(back["mixed_lists"][[0, 1, 3]]) == ['[1, "x"]', "[2]", "[3]"]
    assert pd.isna(back["mixed_lists"].iloc[2])                                    # null, not the text "NaN"
    with open(tmp_path / "results.csv") as f:
        assert f.readline().startswith("run_id,suite,cell_id")


def test_load_puts_the_tidy_columns_first_and_keeps_the_others_in_the_order_met(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    pd.DataFrame({"zeta": [1], "value": [1.0], "run_id": ["a"], "metric": ["m"], "alpha": [2]}).to_csv(
        a / "results.csv", index=False)
    pd.DataFrame({"run_id": ["b"], "metric": ["m"], "value": [2.0], "beta": [3], "zeta": [4]}).to_csv(
        b / "results.csv", index=False)
    one = load(a / "results.csv")
    assert list(one.columns) == ["run_id", "metric", "value", "zeta", "alpha"]
    both = load([a / "results.csv", b / "results.csv"])
    assert list(both.columns) == ["run_id", "metric", "value", "zeta", "alpha", "beta"]
    assert list(both["zeta"]) == [1, 4]


def test_append_writes_everything_when_the_system_writes_a_little_at_a_time(tmp_path, monkeypatch):
    import os as os_module
    real_write = os_module.write
    monkeypatch.setattr(os_module, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    rows = [{"cell_id": "a1", "metric": "m", "value": i} for i in range(5)]
    RowStore(tmp_path).append(rows)
    assert read_rows(tmp_path / "rows.jsonl") == rows


def test_repair_survives_a_line_torn_inside_a_multibyte_character(tmp_path):
    store = RowStore(tmp_path)
    whole = json.dumps({"cell_id": "0a", "message": "ok"}) + "\n"
    torn = '{"cell_id": "1b", "message": "café'.encode("utf-8")[:-1]       # half of the é
    store.path.write_bytes(whole.encode("utf-8") + torn)
    assert store.repair() == "1b" and store.path.read_text() == whole
