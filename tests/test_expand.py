"""Suite expansion: grid, zip, exclude/include, seeds/repeats, --set/--filter, device, cell ids."""
from __future__ import annotations

import textwrap
from typing import Literal, Tuple

import pytest
from pydantic import Field

from harness.config_types import PositiveInt, StrictModel
from harness.errors import SuiteError
from harness.kinds import KINDS, KindSpec
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


@pytest.mark.parametrize("host_has_cuda", [False, True])
def test_the_device_flag_overrides_every_cell_device_whatever_the_host(write_suite, monkeypatch, host_has_cuda):
    """--device beats a device from the suite, a sweep axis, an include and --set, on a host with or without
    CUDA (both simulated: through the cuda_available argument and through torch.cuda.is_available)."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: host_has_cuda)
    text = (BASE.replace("device: cpu\n", "device: auto\n") + "sweep: {device: [cpu, cuda, auto], batch: [1]}\n"
            "include:\n  - {device: cuda, batch: 3}\n")
    suite = load_suites(write_suite(text))[0]
    for flag in ("cpu", "cuda"):
        for cuda_available in (None, host_has_cuda, not host_has_cuda):
            cells = expand(suite, device=flag, cuda_available=cuda_available,
                           overrides=[("device", "cuda" if flag == "cpu" else "cpu")])
            assert {c.get("device") for c in cells} == {flag}, (flag, cuda_available, cells)
    # without --device, each cell keeps its own (auto follows the host; equal cells collapse)
    cells = expand(suite)
    assert {(c.get("batch"), c.get("device")) for c in cells} == {(1, "cpu"), (1, "cuda"), (3, "cuda")}
    assert len(cells) == 3


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


# --------------------------------------------------------------------------- where an error points

class _Inner(StrictModel):
    depth: PositiveInt = 1


class _Outer(StrictModel):
    inner: _Inner = Field(default_factory=_Inner)


class _CpuOnlyConfig(StrictModel):
    """Unlike fake: a required key, a three-level key, an alias, a tuple default, only the CPU, no seed and no
    repeats keys (so ``seeds:`` and ``repeats:`` are errors that must point at their lines)."""
    need: int
    outer: _Outer = Field(default_factory=_Outer)
    pass_: str = Field("fwd", alias="pass")
    pair: Tuple[int, int] = (1, 2)
    x: int = 0
    device: Literal["cpu"] = "cpu"


_CPU_ONLY = KindSpec("cpu_only", _CpuOnlyConfig, lambda cell, ctx: iter(()), metrics=("accuracy", "loss"))


@pytest.fixture
def extra_kinds(monkeypatch):
    """Registers ``kind: cpu_only`` and ``kind: broken`` (a module that does not exist) for one test."""
    monkeypatch.setitem(KINDS._entries, "cpu_only", _CPU_ONLY)
    monkeypatch.setitem(KINDS._entries, "broken", "no_such_module_for_ssmbench_tests:SPEC")


def _line_marked(text: str) -> int:
    """The 1-based line of the suite text that ends with ``# here``."""
    (line,) = [i for i, s in enumerate(textwrap.dedent(text).lstrip("\n").splitlines(), 1) if s.endswith("# here")]
    return line


FAKE = "name: grid\nkind: fake\ndevice: cpu\n"
CPU_ONLY = "name: grid\nkind: cpu_only\n"
EXPECT = "    metric: accuracy\n    value: 0.9\n    source: x\n"
NOT_VALID, INVALID_CELLS = "is not valid:", "has invalid cells:"

#: (suite text with the line the error must name marked "# here" (none: the command line), expand()'s
#: keyword arguments, a fragment of the message, the headline's end (None: no headline))
WHERE_ERRORS = {
    "defaults, nested": (FAKE + "defaults:\n  seq_len: 8\n  model:\n    d_state: 0  # here\n", {},
                         "model.d_state: input should be greater than 0", INVALID_CELLS),
    "defaults, kept by a merged sweep mapping": (
        FAKE + "defaults:\n  model:\n    d_state: 0  # here\nsweep:\n  model:\n    - {mixer: s4}\n", {},
        "model.d_state: input should be greater than 0", INVALID_CELLS),
    "a sweep item": (FAKE + "sweep:\n  batch:\n    - 1\n    - 0  # here\n", {}, "batch: input should be greater",
                     INVALID_CELLS),
    "a sub-key of a swept mapping": (FAKE + "sweep:\n  model:\n    - mixer: s4\n      d_model: 0  # here\n", {},
                                     "model.d_model: input should be greater", INVALID_CELLS),
    "a zip item": (FAKE + "zip:\n  - seq_len:\n      - 8\n      - 0  # here\n    batch: [1, 2]\n", {},
                   "seq_len: input should be greater", INVALID_CELLS),
    "an include": (FAKE + "include:\n  - seq_len: 8\n    batch: 0  # here\n", {}, "batch: input should be greater",
                   INVALID_CELLS),
    "an unknown key, with the closest": (FAKE + "include:\n  - model.d_stat: 3  # here\n", {},
                                         "unknown key 'd_stat' in model — did you mean 'd_state'?", INVALID_CELLS),
    "a device of a sweep, not the suite's": (FAKE + "sweep:\n  device:\n    - 3  # here\n", {},
                                              "device: input should be a valid string", INVALID_CELLS),
    "a device of the defaults": ("name: grid\nkind: fake\ndefaults:\n  seq_len: 8\n  device: 3  # here\n", {},
                                 "device: input should be a valid string", INVALID_CELLS),
    "--set": (FAKE, {"overrides": [("batch", 0)]}, "batch: input should be greater than 0 (got 0) (from --set batch=0)",
              INVALID_CELLS),
    "--set of a mapping over a defaults mapping": (
        FAKE + "defaults:\n  model:\n    d_state: 4\n", {"overrides": [("model", {"d_state": 0})]},
        "model.d_state: input should be greater than 0 (got 0) (from --set model={'d_state': 0})", INVALID_CELLS),
    "an exclude that matches nothing": (FAKE + "sweep:\n  batch: [1, 2]\nexclude:\n  - batch: 9  # here\n", {},
                                        "exclude[0] {'batch': 9} matches no cell of the sweep", NOT_VALID),
    "excludes that drop every cell": (FAKE + "sweep:\n  batch: [1]\nexclude:  # here\n  - batch: 1\n", {},
                                      "suite 'grid' has no cells", NOT_VALID),
    "an include that adds nothing": (FAKE + "sweep:\n  batch: [1]\ninclude:\n  - seq_len: 8\n  - batch: 1  # here\n",
                                     {}, "include[1] {'batch': 1} adds no cell: the sweep already has it", NOT_VALID),
    "an expect.where key no cell has": (
        FAKE + "sweep:\n  batch: [1, 2]\nexpect:\n  - where: {bach: 2}  # here\n" + EXPECT, {},
        "expect[0].where: no cell or row has the key 'bach' — did you mean 'batch'?", NOT_VALID),
    "an expect.where value no cell has": (
        FAKE + "sweep:\n  batch: [1, 2]\nexpect:\n  - where: {batch: 3}  # here\n" + EXPECT, {},
        "expect[0] (metric accuracy) matches no cell of the suite (batch=3", NOT_VALID),
    # kind: cpu_only
    "a required key no line set": (CPU_ONLY + "defaults:  # here\n  x: 1\n", {}, "need: required key is missing",
                                   INVALID_CELLS),
    "the suite's device, not the defaults'": (CPU_ONLY + "device: cuda  # here\ndefaults:\n  need: 1\n  device: cpu\n",
                                              {}, "device: input should be 'cpu'", INVALID_CELLS),
    "a device of a sweep beats the suite's": (
        CPU_ONLY + "device: cpu\ndefaults: {need: 1}\nsweep:\n  device:\n    - cuda  # here\n", {},
        "device: input should be 'cpu'", INVALID_CELLS),
    "device: null is auto; its line is named": (CPU_ONLY + "defaults: {need: 1}\ndevice: null  # here\n",
                                                {"cuda_available": True}, "device: input should be 'cpu' (got 'cuda')",
                                                INVALID_CELLS),
    "--device": (CPU_ONLY + "device: cpu\ndefaults: {need: 1}\n", {"device": "cuda"},
                 "device: input should be 'cpu' (got 'cuda') (from --device cuda)", INVALID_CELLS),
    "seeds": (CPU_ONLY + "defaults: {need: 1}\nseeds:\n  - 0  # here\n", {}, "unknown key 'seed'", INVALID_CELLS),
    "repeats": (CPU_ONLY + "defaults: {need: 1}\nrepeats: 3  # here\n", {}, "unknown key 'repeats'", INVALID_CELLS),
    "a sub-sub-key of a swept mapping": (
        CPU_ONLY + "defaults: {need: 1}\nsweep:\n  outer:\n    - inner:\n        depth: 0  # here\n", {},
        "outer.inner.depth: input should be greater than 0", INVALID_CELLS),
    "an expect.metric the kind does not write": (
        CPU_ONLY + "defaults: {need: 1}\nexpect:\n  - where: {x: 0}\n    metric: acuracy  # here\n"
                   "    value: 0.9\n    source: x\n", {},
        "expect[0].metric 'acuracy': kind 'cpu_only' writes no such metric — did you mean 'accuracy'? "
        "(its metrics: accuracy, loss)", NOT_VALID),
    "a kind that cannot be loaded": ("name: grid\nkind: broken  # here\ndefaults: {x: 1}\n"
                                     "expect:\n  - where: {x: 1}\n" + EXPECT, {},
                                     "suite kind 'broken' cannot be loaded: ModuleNotFoundError: No module named "
                                     "'no_such_module_for_ssmbench_tests'", None),
}


@pytest.mark.parametrize("case", list(WHERE_ERRORS))
def test_each_error_names_the_file_and_line_that_set_the_value(write_suite, extra_kinds, case):
    """A suite error points at the line that wrote the bad value (a sweep item, a zip item, an include, the
    defaults, seeds, repeats, the suite's device ...), or at the command line for --set / --device: one issue,
    under a headline naming the file and suite."""
    text, kwargs, message, headline = WHERE_ERRORS[case]
    path = write_suite(text)
    with pytest.raises(SuiteError) as info:
        expand(load_suites(path)[0], **kwargs)
    (issue,) = info.value.issues
    if "# here" in text:
        assert (issue.source, issue.line) == (str(path), _line_marked(text)), str(info.value)
    else:
        assert (issue.source, issue.line) == ("command line", 0), str(info.value)
    assert message in issue.message, str(info.value)
    first = str(info.value).splitlines()[0]
    assert first == (f"{path}: suite 'grid' {headline}" if headline else str(issue))


def test_a_hint_is_given_only_when_a_close_name_exists(write_suite, extra_kinds):
    where = FAKE + "expect:\n  - where: {zzzzzz: 2}\n" + EXPECT
    with pytest.raises(SuiteError) as info:
        expand(load_suites(write_suite(where))[0])
    assert "no cell or row has the key 'zzzzzz'; correct the key" in str(info.value)
    metric = CPU_ONLY + "defaults: {need: 1}\nexpect:\n  - {where: {x: 0}, metric: zzzzzz, value: 1, source: x}\n"
    with pytest.raises(SuiteError) as info:
        expand(load_suites(write_suite(metric))[0])
    assert "writes no such metric (its metrics: accuracy, loss)" in str(info.value)


@pytest.mark.parametrize("where, ok", [
    ("{repeat: 0}", True),            # a row column of the kind (fake: repeat), not a param
    ("{backend: chunked}", True),     # a results column derived from the params (model -> backend)
    ("{mixer: s6}", True),            # a short name of a param (model.mixer)
    ("{task.seq_len: 16}", True),     # a dotted key no cell has, matched by its last part
    ("{a.task.seq_len: 16}", True),
    ("{task.seq_len: 17}", False),    # ... and then its value must be there
    ("{a.task.seq_len: 17}", False),
])
def test_expect_where_names_params_row_columns_and_short_names(write_suite, where, ok):
    text = FAKE + "defaults: {model: {mixer: s6}, seq_len: 16}\nexpect:\n  - where: " + where + "\n" + EXPECT
    suite = load_suites(write_suite(text))[0]
    if ok:
        assert len(expand(suite)) == 1
    else:
        with pytest.raises(SuiteError, match=r"seq_len=17: no cell has this value"):
            expand(suite)


@pytest.mark.parametrize("where, ok", [
    ("{depth: 1}", True),               # the short name of a three-level key (outer.inner.depth)
    ("{outer.inner.depth: 1}", True),
    ("{depth: 2}", False),
    ("{pass: fwd}", True),              # an alias is the key a suite and the results use (pass, not pass_)
    ("{pair: [1, 2]}", True),           # a list-valued key's default: the list is the one value
    ("{pair: [[1, 2], [3, 4]]}", False),  # (a list of lists is not "any of")
    ("{pair: [3, 4]}", False),
])
def test_expect_where_sees_the_kinds_defaults_as_the_results_hold_them(write_suite, extra_kinds, where, ok):
    text = CPU_ONLY + "defaults: {need: 1}\nexpect:\n  - where: " + where + "\n" + EXPECT
    suite = load_suites(write_suite(text))[0]
    if ok:
        assert len(expand(suite)) == 1
    else:
        with pytest.raises(SuiteError, match=r"expect\[0\] \(metric accuracy\) matches no cell"):
            expand(suite)


@pytest.mark.parametrize("suite_device, defaults_device, cuda_available, expected", [
    ("cpu", "cuda", True, "cpu"),       # the suite's device beats the defaults'
    ("cuda", "cpu", False, "cuda"),
    (None, "cpu", True, "cpu"),         # the defaults' device beats auto
    (None, "cuda", False, "cuda"),
    (None, None, False, "cpu"),         # nothing said: auto, resolved per host
    (None, None, True, "cuda"),
    ("auto", "cpu", True, "cuda"),
])
def test_the_suite_device_beats_the_defaults_device_which_beats_auto(write_suite, suite_device, defaults_device,
                                                                     cuda_available, expected):
    text = "name: grid\nkind: fake\n" + (f"device: {suite_device}\n" if suite_device else "")
    text += "defaults:\n  seq_len: 8\n" + (f"  device: {defaults_device}\n" if defaults_device else "")
    (cell,) = expand(load_suites(write_suite(text))[0], cuda_available=cuda_available)
    assert cell.params["device"] == expected


def test_cells_carry_the_suite_name_and_kind(write_suite):
    cells = cells_of(write_suite, "sweep: {batch: [1, 2]}\n")
    assert [(c.suite, c.kind) for c in cells] == [("grid", "fake"), ("grid", "fake")]


def test_varying_lists_sweep_axes_then_zip_axes_then_seed_then_the_rest(write_suite):
    """The report's columns: the suite's axes in the order written, then seed, then other keys that differ
    (here batch, from an include), whatever the order the keys first appear in the params."""
    text = """
name: grid
kind: fake
device: cpu
defaults: {model: {d_state: 4}, batch: 1, seq_len: 16}
sweep: {seq_len: [8, 16], model.d_state: [4, 8]}
zip:
  - {sleep_s: [0.0, 0.5]}
seeds: [0, 1]
include:
  - {batch: 5}
"""
    cells = expand(load_suites(write_suite(text))[0])
    assert list(cells[0].varying) == ["seq_len", "model.d_state", "sleep_s", "seed", "batch"]
    assert cells[0].varying == {"seq_len": 8, "model.d_state": 4, "sleep_s": 0.0, "seed": 0, "batch": 1}


def test_a_replaced_value_forgets_where_its_sub_keys_came_from_and_a_merged_one_keeps_them():
    """Origins describe the params that exist: a scalar replacing a mapping takes the mapping's sub-keys'
    origins with it; a mapping merged into a mapping keeps those of the sub-keys it does not set."""
    from harness.suite.expand import _defaults_draft
    draft = _defaults_draft({"model": {"d_state": 4, "mixer": "s6"}})
    draft.put("model", {"mixer": "s4", "block": {"norm": "rms"}}, ("sweep", "model", 0))
    assert draft.origins == {"model": ("sweep", "model", 0), "model.d_state": ("defaults", "model", "d_state"),
                             "model.mixer": ("sweep", "model", 0, "mixer"),
                             "model.block.norm": ("sweep", "model", 0, "block", "norm")}
    draft.put("model", {"mixer": "s6"}, "--set model={'mixer': 's6'}")
    assert draft.origins["model.mixer"] == "--set model={'mixer': 's6'}"
    draft.put("model", 3, ("include", 0, "model"))
    assert draft.params == {"model": 3} and draft.origins == {"model": ("include", 0, "model")}
