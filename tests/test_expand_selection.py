"""How cells are selected and identified: ``--filter`` matching (:func:`values_equal`) and the
why-nothing-matches / did-you-mean explanations, ``--set`` parsing, 1/0 -> true/false for flag fields
(:func:`is_bool_key`), the stability of cell ids, and ``device: auto``."""
from __future__ import annotations

import hashlib
from typing import Optional, Union

import pytest
from pydantic import Field, StrictBool, ValidationInfo, field_validator

from harness.cells import Cell
from harness.config_types import StrictModel
from harness.errors import Issue, SuiteError
from harness.kinds import KINDS, KindSpec
from harness.suite.expand import (NothingSelected, apply_filters, expand, is_bool_key, known_keys,
                                  make_cell_id, parse_assignments, resolve_device, values_equal,
                                  why_nothing_matches)
from harness.suite.schema import load_suites

# --------------------------------------------------------------------------- values_equal

#: (cell value, --filter value, match?): numbers across int/float/str, flags across true/1/"true",
#: strings by case, lists and mappings by their canonical JSON (what the cell id is taken from)
VALUES_EQUAL_TABLE = [
    (64, 64, True),
    (64, "64", True),           # "64" on the command line matches 64
    ("64", 64, True),
    (1, 1.0, True),             # equal numbers of two types
    (64, 65, False),
    ("s6", "s6", True),
    ("s6", "S6", False),        # strings are compared as written
    (True, True, True),
    (False, False, True),
    (True, False, False),
    (True, "true", True),       # a flag matches its name in any case
    (True, "TRUE", True),
    ("True", True, True),
    (False, "false", True),
    (True, "false", False),
    (True, 1, True),            # --filter x=1 on a flag
    (1, True, True),
    (False, 0, True),
    (0, False, True),
    (True, 0, False),
    (False, 1, False),
    (True, 2, False),           # only 0 and 1 stand for a flag
    (True, 1.0, False),         # ... as ints
    (1.0, True, False),
    (None, False, False),
    ([1, 2], [1, 2], True),
    ([1, 2], [2, 1], False),
    ([1, 2], (1, 2), True),     # one canonical JSON, one cell value
    ({1: 0.5}, {"1": 0.5}, True),
    ({"a": 1}, {"a": 2}, False),
    (None, None, True),
    (None, "None", True),
]


@pytest.mark.parametrize("actual, wanted, expected", VALUES_EQUAL_TABLE)
def test_values_equal_truth_table(actual, wanted, expected):
    assert values_equal(actual, wanted) is expected


# --------------------------------------------------------------------------- why_nothing_matches

GRID = [{"model": {"mixer": "s4"}, "batch": 1}, {"model": {"mixer": "s6"}, "batch": 2}]


def test_a_key_no_cell_has_names_the_closest_keys():
    assert why_nothing_matches([("bach", 1)], GRID, "--filter ") == (
        "--filter bach: no cell has this key — did you mean 'batch'?")
    # a key prefix (a section) is a known key too
    assert why_nothing_matches([("modle", 1)], GRID) == (
        "modle: no cell has this key — did you mean 'model' or 'model.mixer'?")
    assert why_nothing_matches([("zzz", 1)], GRID) == "zzz: no cell has this key"  # nothing close: no hint


def test_a_value_no_cell_has_names_the_closest_values_and_lists_them():
    assert why_nothing_matches([("model.mixer", "s7")], GRID) == (
        "model.mixer='s7': no cell has this value — did you mean 's6' or 's4'? (values in the cells: s4, s6)")
    assert why_nothing_matches([("model.mixer", "mamba")], GRID) == (
        "model.mixer='mamba': no cell has this value (values in the cells: s4, s6)")


@pytest.mark.parametrize("n, shown", [(12, ", ".join(map(str, range(12)))),
                                      (13, ", ".join(map(str, range(12))) + ", ..."),
                                      (14, ", ".join(map(str, range(12))) + ", ...")])
def test_the_values_in_the_cells_are_listed_up_to_twelve(n, shown):
    params = [{"batch": i} for i in range(n)]
    assert why_nothing_matches([("batch", 99)], params).endswith(f"(values in the cells: {shown})")


def test_values_that_never_meet_in_one_cell_are_named_together():
    assert why_nothing_matches([("model.mixer", "s4"), ("batch", 2)], GRID, "--filter ") == (
        "--filter no single cell has all of model.mixer='s4', batch=2")
    # a list value means any of its values (s4 exists), unless the key itself holds lists
    assert why_nothing_matches([("model.mixer", ["s4", "hyena"]), ("batch", 2)], GRID) == (
        "no single cell has all of model.mixer=['s4', 'hyena'], batch=2")
    listed = [{"dims": [1, 2], "batch": 1}, {"dims": [3], "batch": 2}]
    assert why_nothing_matches([("dims", [1, 2]), ("batch", 2)], listed) == (
        "no single cell has all of dims=[1, 2], batch=2")


# --------------------------------------------------------------------------- apply_filters

def _cells(*params):
    return [(Cell("s", "fake", make_cell_id("fake", p), p), {}) for p in params]


def test_filter_keys_are_dotted_leaves_or_sections_at_any_depth():
    deep = {"model": {"selective": {"dt_rank": 4}}, "batch": 1}
    other = {"model": {"selective": {"dt_rank": 8}}, "batch": 1}
    assert {"model", "model.selective", "model.selective.dt_rank", "batch"} <= known_keys([deep])
    kept = apply_filters(_cells(deep, other), [("model.selective", {"dt_rank": 8})])
    assert [c.params for c, _ in kept] == [other]


def test_a_filter_key_no_cell_has_is_a_command_line_issue_with_a_hint_only_when_one_is_close():
    cells = _cells(*GRID)
    with pytest.raises(SuiteError) as info:
        apply_filters(cells, [("bach", 1)])
    assert info.value.issues == [Issue("command line", 0, "--filter 'bach': no cell has this key — did you mean "
                                                          "'batch'?")]
    with pytest.raises(SuiteError) as info:
        apply_filters(cells, [("zzz", 1)])
    assert info.value.issues == [Issue("command line", 0, "--filter 'zzz': no cell has this key")]
    assert str(info.value) == "command line: --filter 'zzz': no cell has this key"


def test_a_filter_that_keeps_no_cell_is_a_command_line_issue_plan_can_merge():
    """``plan`` merges these issues with other command-line ones (line 0) and sorts them: the line must be
    the int 0, not None (which cannot be compared with 0)."""
    with pytest.raises(NothingSelected) as info:
        apply_filters(_cells(*GRID), [("model.mixer", "s4"), ("batch", 2)])
    (issue,) = info.value.issues
    assert (issue.source, issue.line) == ("command line", 0)
    assert issue.message == ("--filter no single cell has all of model.mixer='s4', batch=2; the filter keeps "
                             "none of the suite's 2 cells")
    assert str(info.value).startswith("command line: --filter no single cell")
    merged = SuiteError([issue, Issue("command line", 0, "--set 'x': no suite given has this key")])
    assert len(merged.issues) == 2


# --------------------------------------------------------------------------- parse_assignments

def test_set_and_filter_values_are_yaml_scalars_split_at_the_first_equals_sign():
    assert parse_assignments(["model.d_state=32", " batch = [1, 2]", "name=a=b", "flag=true", "empty="],
                             "--set") == [("model.d_state", 32), ("batch", [1, 2]), ("name", "a=b"),
                                          ("flag", True), ("empty", "")]


@pytest.mark.parametrize("item", ["batch", "=3", " =3", "a..b=1", ".a=1", "a.=1"])
def test_an_assignment_without_a_dotted_key_is_a_command_line_issue_with_an_example(item):
    with pytest.raises(SuiteError) as info:
        parse_assignments(["seq_len=8", item], "--filter")
    (issue,) = info.value.issues
    assert (issue.source, issue.line) == ("command line", 0)
    assert issue.message.startswith(f"--filter {item!r}: ")
    assert "e.g. --filter model.d_state=32" in issue.message
    assert str(info.value).startswith(f"command line: --filter {item!r}")


# --------------------------------------------------------------------------- flags: 1/0 -> true/false

class _Inner(StrictModel):
    on: bool = False
    size: int = 1


class _FlagModel(StrictModel):
    first: bool = False             # the first field: a lookup that takes "any field" would find it
    plain: int = 0
    maybe: Optional[bool] = None
    strict: Optional[StrictBool] = None
    either: Union[bool, int] = 0
    count: Optional[int] = None
    pass_: bool = Field(False, alias="pass")
    inner: _Inner = Field(default_factory=_Inner)


@pytest.mark.parametrize("key, expected", [
    ("first", True), ("maybe", True), ("strict", True), ("pass", True), ("inner.on", True),
    ("plain", False), ("either", False), ("count", False), ("inner.size", False),
    ("on", False),              # a nested field is not a top-level one
    ("inner", False), ("nope", False), ("inner.nope", False), ("nope.on", False), ("first.on", False)])
def test_is_bool_key_finds_true_false_fields_through_optional_aliases_and_sections(key, expected):
    assert is_bool_key(_FlagModel, key) is expected


def test_without_a_kind_model_no_key_is_a_flag():
    assert is_bool_key(None, "first") is False


class _Section(StrictModel):
    level: int = 0
    flag: bool = False

    @field_validator("flag")
    @classmethod
    def _flag_needs_a_level(cls, flag: bool, info: ValidationInfo) -> bool:
        if flag and not info.data.get("level"):
            raise ValueError("flag needs level > 0")
        return flag


class _CheckedConfig(StrictModel):
    """A kind whose flags are checked against other fields, so an error can land on a normalised flag."""

    x: int = 0
    strict: bool = False
    sub: _Section = Field(default_factory=_Section)
    device: str = "cpu"

    @field_validator("strict")
    @classmethod
    def _strict_needs_x(cls, strict: bool, info: ValidationInfo) -> bool:
        if strict and not info.data.get("x"):
            raise ValueError("strict needs x > 0")
        return strict


if "checked_flags" not in KINDS:
    KINDS.add("checked_flags", KindSpec("checked_flags", _CheckedConfig, lambda cell, ctx: iter(())),
              help="test-only kind (tests/test_expand_selection.py)")

CHECKED = """\
name: flags
kind: checked_flags
defaults:
  x: 0
sweep:
  strict: [1]
"""


def test_an_error_on_a_flag_written_as_1_points_at_the_line_that_wrote_it(write_suite):
    suite = load_suites(write_suite(CHECKED))[0]
    with pytest.raises(SuiteError) as info:
        expand(suite)
    (issue,) = info.value.issues
    assert issue.line == 6 and issue.message == "strict: strict needs x > 0"  # the sweep's line, not defaults'
    with pytest.raises(SuiteError) as info:
        expand(suite, overrides=[("strict", 1)])
    assert info.value.issues == [Issue("command line", 0, "strict: strict needs x > 0 (from --set strict=1)")]


def test_an_error_on_a_flag_inside_a_set_mapping_names_that_set(write_suite):
    suite = load_suites(write_suite(CHECKED.replace("  strict: [1]", "  x: [1]")))[0]
    with pytest.raises(SuiteError) as info:
        expand(suite, overrides=[("sub", {"flag": 1})])
    assert info.value.issues == [Issue("command line", 0, "sub.flag: flag needs level > 0 "
                                                          "(from --set sub={'flag': 1})")]


# --------------------------------------------------------------------------- cell ids

def test_cell_ids_are_a_stable_contract():
    """Runs are resumed and diffed across commits by cell id: the id of a fixed (kind, params) must never
    change.  It is the first 12 hex digits of the sha1 of ``{"kind", "params"}`` as sorted, compact JSON."""
    params = {"seq_len": 16, "model": {"mixer": "s6", "d_state": 4}, "device": "cpu"}
    written = b'{"kind":"fake","params":{"device":"cpu","model":{"d_state":4,"mixer":"s6"},"seq_len":16}}'
    assert make_cell_id("fake", params) == hashlib.sha1(written).hexdigest()[:12] == "6b4a8b3c0be0"


# --------------------------------------------------------------------------- device

def test_no_device_or_auto_is_cuda_when_available_else_cpu():
    for requested in (None, "", "auto"):
        assert resolve_device(requested, cuda_available=False) == "cpu"
        assert resolve_device(requested, cuda_available=True) == "cuda"
    assert resolve_device("cuda:1", cuda_available=False) == "cuda:1"  # an explicit device is kept
    assert resolve_device("cpu", cuda_available=True) == "cpu"


@pytest.mark.parametrize("available", [False, True])
def test_auto_asks_torch_when_not_told(monkeypatch, available):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device("auto") == ("cuda" if available else "cpu")
    assert resolve_device(None) == ("cuda" if available else "cpu")
