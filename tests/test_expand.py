"""Suite expansion: grid, zip, exclude/include, seeds/repeats, --set/--filter, device, cell ids."""
from __future__ import annotations

import pytest

from harness.errors import SuiteError
from harness.suite.expand import expand, make_cell_id, parse_assignments
from harness.suite.schema import load_suites

BASE = """
name: grid
kind: fake
device: cpu
defaults:
  model: {d_state: 4}
  seq_len: 16
"""


def cells_of(write_suite, text, **kw):
    return expand(load_suites(write_suite(BASE + text), kw.pop("suite_overrides", ()))[0], **kw)


def column(cells, key):
    return [c.get(key) for c in cells]


def test_no_sweep_is_one_cell_of_the_defaults(write_suite):
    (cell,) = cells_of(write_suite, "")
    assert cell.params == {"model": {"d_state": 4}, "seq_len": 16, "device": "cpu"}
    assert cell.varying == {}


def test_sweep_is_a_grid_first_key_outermost(write_suite):
    cells = cells_of(write_suite, "sweep:\n  model.mixer: [s4, s6]\n  batch: [1, 2, 3]\n")
    assert [(c.get("model.mixer"), c.get("batch")) for c in cells] == [
        ("s4", 1), ("s4", 2), ("s4", 3), ("s6", 1), ("s6", 2), ("s6", 3)]
    assert all(c.get("model.d_state") == 4 for c in cells)  # dotted sweep key merged into defaults
    assert cells[0].varying == {"model.mixer": "s4", "batch": 1}


def test_zip_group_is_one_axis(write_suite):
    cells = cells_of(write_suite, "sweep: {model.mixer: [s4, s6]}\n"
                                  "zip:\n  - {seq_len: [8, 16, 32], batch: [4, 2, 1]}\n")
    assert len(cells) == 6
    assert {(c.get("seq_len"), c.get("batch")) for c in cells} == {(8, 4), (16, 2), (32, 1)}


def test_exclude_drops_and_include_adds(write_suite):
    cells = cells_of(write_suite, "sweep: {model.mixer: [s4, s6], batch: [1, 2]}\n"
                                  "exclude:\n  - {model.mixer: s4, batch: 2}\n"
                                  "include:\n  - {model.mixer: attention, model.d_state: 8, batch: 5}\n")
    pairs = [(c.get("model.mixer"), c.get("batch")) for c in cells]
    assert pairs == [("s4", 1), ("s6", 1), ("s6", 2), ("attention", 5)]
    assert cells[-1].get("model.d_state") == 8 and cells[-1].get("seq_len") == 16


def test_exclude_with_nested_mapping(write_suite):
    cells = cells_of(write_suite, "sweep: {model.mixer: [s4, s6]}\nexclude:\n  - {model: {mixer: s4}}\n")
    assert column(cells, "model.mixer") == ["s6"]


def test_seeds_axis_and_repeats(write_suite):
    cells = cells_of(write_suite, "sweep: {batch: [1, 2]}\nseeds: [0, 1, 2]\nrepeats: 5\n")
    assert len(cells) == 6
    assert column(cells, "seed") == [0, 1, 2, 0, 1, 2]
    assert set(column(cells, "repeats")) == {5}


def test_sweep_of_mappings_merges_into_defaults(write_suite):
    cells = cells_of(write_suite, "sweep:\n  model: [{mixer: s4}, {mixer: s6, d_model: 16}]\n")
    assert cells[0].params["model"] == {"d_state": 4, "mixer": "s4"}
    assert cells[1].params["model"] == {"d_state": 4, "mixer": "s6", "d_model": 16}


def test_set_overrides_and_collapses_a_swept_axis(write_suite):
    text = "sweep: {model.mixer: [s4, s6], batch: [1, 2]}\n"
    cells = cells_of(write_suite, text, overrides=parse_assignments(["batch=7", "model.d_model=32"], "--set"))
    assert column(cells, "batch") == [7, 7] and column(cells, "model.mixer") == ["s4", "s6"]
    assert set(column(cells, "model.d_model")) == {32}


def test_suite_level_set_replaces_a_sweep_axis_and_seeds(write_suite):
    text = "sweep: {batch: [1, 2]}\n"
    cells = cells_of(write_suite, text, suite_overrides=parse_assignments(["sweep.batch=[3,4,5]", "seeds=[9]"],
                                                                           "--set"))
    assert column(cells, "batch") == [3, 4, 5] and set(column(cells, "seed")) == {9}


def test_filter_keeps_matching_cells(write_suite):
    text = "sweep: {model.mixer: [s4, s6], batch: [1, 2]}\n"
    cells = cells_of(write_suite, text, filters=parse_assignments(["model.mixer=s6", "batch=[2, 3]"], "--filter"))
    assert [(c.get("model.mixer"), c.get("batch")) for c in cells] == [("s6", 2)]
    with pytest.raises(SuiteError, match="did you mean 'batch'"):
        cells_of(write_suite, text, filters=parse_assignments(["bach=1"], "--filter"))


def test_cell_id_ignores_key_order_and_suite_name(write_suite):
    a = cells_of(write_suite, "sweep: {model.mixer: [s4, s6], batch: [1, 2]}\n")
    reordered = """
name: another-name
defaults:
  seq_len: 16
  model: {d_state: 4}
kind: fake
sweep: {batch: [2, 1], model.mixer: [s6, s4]}
device: cpu
"""
    b = expand(load_suites(write_suite(reordered, "b.yaml"))[0])
    assert sorted(c.cell_id for c in a) == sorted(c.cell_id for c in b)
    assert len({c.cell_id for c in a}) == 4 and all(len(c.cell_id) == 12 for c in a)


def test_cell_id_depends_on_values_kind_and_device_not_on_defaults_of_the_model(write_suite):
    params = {"seq_len": 16, "device": "cpu"}
    assert make_cell_id("fake", params) != make_cell_id("fake", {**params, "seq_len": 17})
    assert make_cell_id("fake", params) != make_cell_id("speed", params)
    assert make_cell_id("fake", params) != make_cell_id("fake", {**params, "device": "cuda"})
    # params are as written: the kind's defaults (batch=2, d_model=8 ...) are not filled in
    (cell,) = cells_of(write_suite, "")
    assert "batch" not in cell.params and "d_model" not in cell.params["model"]
    assert cell.cell_id == make_cell_id("fake", cell.params)


def test_device_resolution(write_suite):
    path = write_suite(BASE.replace("device: cpu", "device: auto"))
    suite = load_suites(path)[0]
    assert expand(suite, cuda_available=False)[0].get("device") == "cpu"
    assert expand(suite, cuda_available=True)[0].get("device") == "cuda"
    assert expand(suite, device="cuda")[0].get("device") == "cuda"  # --device wins, even without CUDA


def test_duplicate_points_collapse(write_suite):
    cells = cells_of(write_suite, "sweep: {batch: [1, 1, 2]}\n")
    assert column(cells, "batch") == [1, 2]


def test_large_grid_expands_quickly(write_suite):
    import time
    text = "sweep:\n  batch: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  seq_len: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" \
           "  model.d_state: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
    t0 = time.perf_counter()
    cells = cells_of(write_suite, text)
    assert len(cells) == 1000 and len({c.cell_id for c in cells}) == 1000
    assert time.perf_counter() - t0 < 10


def test_a_device_axis_is_kept_and_resolved_per_cell(write_suite):
    path = write_suite(BASE.replace("device: cpu\n", "") + "sweep: {device: [cpu, auto]}\n")
    cells = expand(load_suites(path)[0], cuda_available=True)
    assert [c.get("device") for c in cells] == ["cpu", "cuda"]
    assert [c.get("device") for c in expand(load_suites(path)[0], device="cpu")] == ["cpu"]  # collapsed


def test_exclude_may_name_a_seed_and_never_drops_an_include(write_suite):
    cells = cells_of(write_suite, "sweep: {model.mixer: [s4, s6, attention]}\nseeds: [0, 1]\n"
                                  "exclude:\n  - {model.mixer: s4, seed: 1}\n  - {model.mixer: attention}\n"
                                  "include:\n  - {model.mixer: attention}\n")
    assert [(c.get("model.mixer"), c.get("seed")) for c in cells] == [
        ("s4", 0), ("s6", 0), ("s6", 1), ("attention", 0), ("attention", 1)]


# --------------------------------------------------------------------------- selections that select nothing

SWEEP = "sweep:\n  model.mixer: [s4, s6]\n  batch: [1, 2]\n"


def test_a_filter_value_no_cell_has_is_an_error_with_the_closest_values(write_suite):
    """A typo in a --filter *value* ran 0 cells and exited 0; keys were already checked."""
    with pytest.raises(SuiteError) as info:
        cells_of(write_suite, SWEEP, filters=[("model.mixer", "s7")])
    text = str(info.value)
    assert "--filter model.mixer='s7': no cell has this value" in text
    assert "did you mean" in text and "'s6'" in text and "values in the cells: s4, s6" in text
    with pytest.raises(SuiteError, match="no single cell has all of"):  # each value exists, never together
        cells_of(write_suite, SWEEP + "exclude:\n  - {model.mixer: s4, batch: 1}\n",
                 filters=[("model.mixer", "s4"), ("batch", 1)])
    assert len(cells_of(write_suite, SWEEP, filters=[("model.mixer", ["s4", "hyena"])])) == 2  # one of them


def test_an_include_that_adds_no_cell_is_an_error(write_suite):
    with pytest.raises(SuiteError) as info:
        cells_of(write_suite, SWEEP + "include:\n  - {model.mixer: s6, batch: 2}\n")
    assert "include[0] {'model.mixer': 's6', 'batch': 2} adds no cell: the sweep already has it" in str(info.value)
    with pytest.raises(SuiteError, match=r"include\[1\] .* adds no cell: include\[0\] already has it"):
        cells_of(write_suite, "include:\n  - {batch: 5}\n  - {batch: 5}\n")
    # an include may bring back a cell that exclude dropped: that adds a cell
    cells = cells_of(write_suite, SWEEP + "exclude:\n  - {batch: 2}\ninclude:\n  - {model.mixer: s6, batch: 2}\n")
    assert len(cells) == 3


def test_an_exclude_that_matches_nothing_says_which_key_or_value(write_suite):
    with pytest.raises(SuiteError) as info:
        cells_of(write_suite, SWEEP + "exclude:\n  - {model.mixer: s5}\n")
    text = str(info.value)
    assert "exclude[0]" in text and "model.mixer='s5': no cell has this value" in text
    assert "correct the entry or remove it" in text


def test_excluding_every_cell_is_an_error(write_suite):
    with pytest.raises(SuiteError, match="has no cells: its exclude entries drop every cell"):
        cells_of(write_suite, SWEEP + "exclude:\n  - {model.mixer: s4}\n  - {model.mixer: s6}\n")


def test_expect_entries_must_match_a_cell(write_suite):
    expect = "expect:\n  - {where: {model.mixer: s6, batch: 3}, metric: accuracy, value: 0.9, source: x}\n"
    with pytest.raises(SuiteError) as info:
        cells_of(write_suite, SWEEP + expect)
    assert "expect[0] (metric accuracy) matches no cell of the suite (batch=3: no cell has this value" in str(
        info.value)
    typo = expect.replace("batch: 3", "btach: 2")
    with pytest.raises(SuiteError, match="expect\\[0\\].where: no cell or row has the key 'btach' — did you mean"):
        cells_of(write_suite, SWEEP + typo)
    # keys the kind's defaults fill (d_model: 8) and short column names (mixer) match too
    ok = expect.replace("batch: 3", "batch: 2, d_model: 8")
    assert len(cells_of(write_suite, SWEEP + ok)) == 4
    # checked on the suite as written, not on a --set variant of it
    assert len(cells_of(write_suite, SWEEP + expect, overrides=[("seq_len", 8)])) == 4


def test_expect_where_lists_match_any_of_their_values(write_suite):
    listed = "expect:\n  - {where: {model.mixer: [s4, s7]}, metric: accuracy, value: 0.9, source: x}\n"
    assert len(cells_of(write_suite, SWEEP + listed)) == 4
    with pytest.raises(SuiteError, match="matches no cell of the suite"):
        cells_of(write_suite, SWEEP + listed.replace("s4, s7", "s5, s7"))


def test_expect_names_a_metric_the_kind_writes(write_suite):
    speed = """
name: sp
kind: speed
device: cpu
defaults: {impl: s6.reference, seq_len: 64, d_model: 16}
expect:
  - {where: {seq_len: 64}, metric: time_ms_medain, value: 1.0, source: x}
"""
    with pytest.raises(SuiteError) as info:
        expand(load_suites(write_suite(speed))[0])
    assert "expect[0].metric 'time_ms_medain': kind 'speed' writes no such metric — did you mean 'time_ms_median'" \
        in str(info.value)
    assert len(expand(load_suites(write_suite(speed.replace("medain", "median")))[0])) == 1


def test_kinds_declare_every_metric_they_write():
    """KindSpec.metrics is what expect entries are checked against: every literal make_row("...") of a
    kind's code must be in it (a new metric left out would make a valid expect entry an error)."""
    import re
    from pathlib import Path
    from harness.kinds import KINDS
    root = Path(__file__).resolve().parents[1] / "harness" / "kinds"
    sources = {"task": ["task.py", "training/train.py"],
               "speed": ["speed.py", "bench/summary.py", "bench/peak_memory.py", "bench/device_info.py"],
               "memory": ["memory.py", "bench/peak_memory.py", "bench/device_info.py"],
               "decode": ["decode.py", "bench/peak_memory.py", "bench/device_info.py"]}
    for kind, files in sources.items():
        written = {m for f in files for m in re.findall(r'make_row\("([A-Za-z_]+)"', (root / f).read_text())}
        assert written <= set(KINDS.get(kind).metrics), (kind, written - set(KINDS.get(kind).metrics))


def test_one_and_zero_for_a_flag_are_true_and_false(write_suite):
    """``--set skip_after_oom=1`` and ``skip_after_oom: true`` are one cell, not two ids for one run."""
    (written,) = cells_of(write_suite, "sweep: {skip_after_oom: [true]}\n")
    (from_set,) = cells_of(write_suite, "", overrides=[("skip_after_oom", 1)])
    (in_yaml,) = cells_of(write_suite, "sweep: {skip_after_oom: [1]}\n")
    assert written.cell_id == from_set.cell_id == in_yaml.cell_id
    assert from_set.params["skip_after_oom"] is True
    (off,) = cells_of(write_suite, "", overrides=[("skip_after_oom", 0)])
    assert off.params["skip_after_oom"] is False
    # a --filter 1 selects the true cells; a number field keeps its 1
    cells = cells_of(write_suite, "sweep: {skip_after_oom: [true, false]}\n", filters=[("skip_after_oom", 1)])
    assert [c.params["skip_after_oom"] for c in cells] == [True]
    (batch,) = cells_of(write_suite, "", overrides=[("batch", 1)])
    assert batch.params["batch"] == 1 and type(batch.params["batch"]) is int
    with pytest.raises(SuiteError, match="skip_after_oom"):  # any other number is not a flag
        cells_of(write_suite, "", overrides=[("skip_after_oom", 2)])
