"""Suite errors: exit code 2, one paragraph on stderr naming file:line, key path and did-you-mean,
no traceback, nothing written under results/."""
from __future__ import annotations

import pytest

from harness.errors import SuiteError
from harness.suite.expand import expand
from harness.suite.schema import load_suites

GOOD = """
name: demo
kind: fake
defaults:
  model: {d_state: 4}
  seq_len: 16
sweep:
  model.mixer: [s4, s6]
  batch: [1, 2, 3]
"""


def errors_of(path, **kw):
    """The rendered SuiteError of loading + expanding every document of ``path``."""
    with pytest.raises(SuiteError) as info:
        for suite in load_suites(path, kw.pop("overrides", ())):
            expand(suite, **kw)
    return str(info.value)


def assert_rejected(cli, tmp_path, path, *needles):
    """The CLI refuses ``path`` with exit 2, every needle in stderr, no traceback, no results."""
    for command in (["validate", path], ["run", path]):
        res = cli(*command)
        assert res.code == 2, res
        for needle in needles:
            assert needle in res.err, (needle, res.err)
        assert "Traceback" not in res.err
        assert not (tmp_path / "results").exists()


def test_good_suite_is_valid(write_suite, cli):
    path = write_suite(GOOD)
    res = cli("validate", path)
    assert res.code == 0, res.err
    assert "6 cells, valid" in res.out


def test_bad_yaml_syntax(write_suite, cli, tmp_path):
    path = write_suite("name: demo\nkind: fake\nsweep:\n  seq_len: [1, 2\n  batch: [1]\n")
    assert_rejected(cli, tmp_path, path, f"{path}:", "invalid YAML")


def test_python_tag_is_rejected(write_suite, cli, tmp_path):
    path = write_suite("name: demo\nkind: fake\ndefaults:\n  seq_len: !!python/object/apply:os.system [echo hi]\n")
    assert_rejected(cli, tmp_path, path, f"{path}:4:", "!!python/object/apply:os.system is not allowed")


def test_unknown_key_in_defaults_points_at_its_line_with_did_you_mean(write_suite, cli, tmp_path):
    path = write_suite(GOOD.replace("model: {d_state: 4}", "model:\n    d_stat: 4"))
    assert_rejected(cli, tmp_path, path, f"{path}:5: unknown key 'd_stat' in model — did you mean 'd_state'?")


def test_unknown_top_level_key(write_suite, cli, tmp_path):
    path = write_suite(GOOD.replace("sweep:", "sweeps:"))
    assert_rejected(cli, tmp_path, path, f"{path}:6: unknown key 'sweeps' — did you mean 'sweep'")


def test_unknown_kind_and_unknown_mixer_suggest_names(write_suite, tmp_path):
    path = write_suite(GOOD.replace("kind: fake", "kind: speeed"))
    assert "unknown suite kind 'speeed' — did you mean 'speed'?" in errors_of(path)
    path = write_suite(GOOD.replace("[s4, s6]", "[s4, s7]"))
    msg = errors_of(path)
    assert f"{path}:7: model.mixer: unknown mixer 's7' — did you mean" in msg


def test_wrong_type_names_key_and_line(write_suite):
    path = write_suite(GOOD.replace("seq_len: 16", "seq_len: sixteen"))
    msg = errors_of(path)
    assert f"{path}:5: seq_len: input should be a valid integer" in msg
    assert "'sixteen'" in msg


def test_non_positive_size_in_a_sweep_points_at_the_sweep_entry(write_suite):
    path = write_suite(GOOD.replace("batch: [1, 2, 3]", "batch: [1,\n         0, 3]"))
    msg = errors_of(path)
    assert f"{path}:9: batch: input should be greater than 0 (got 0)" in msg


def test_empty_sweep_axis(write_suite, cli, tmp_path):
    path = write_suite(GOOD.replace("batch: [1, 2, 3]", "batch: []"))
    assert_rejected(cli, tmp_path, path, f"{path}:8: sweep.batch:", "at least 1 item")


def test_error_from_defaults_is_reported_once_for_all_cells(write_suite):
    path = write_suite(GOOD.replace("seq_len: 16", "seq_len: -5"))
    msg = errors_of(path)
    assert msg.count("seq_len: input should be greater than 0") == 1


def test_error_in_include_points_at_the_include_entry(write_suite):
    path = write_suite(GOOD + "include:\n  - {model.mixer: attention, seq_len: 8}\n  - {model.mixer: hyena, seq_len: -1}\n")
    msg = errors_of(path)
    assert f"{path}:11: seq_len: input should be greater than 0 (got -1)" in msg
    assert msg.count("\n") == 1  # headline + one issue


def test_zip_groups_need_equal_lengths(write_suite):
    path = write_suite(GOOD + "zip:\n  - {seq_len: [8, 16], model.d_state: [1]}\n")
    assert "zip[0]: the lists of one zip group must have equal lengths" in errors_of(path)


def test_axis_in_sweep_and_zip_is_an_error(write_suite):
    path = write_suite(GOOD + "zip:\n  - {batch: [8, 16], model.d_state: [1, 2]}\n")
    assert "'batch' is already an axis in sweep" in errors_of(path)


def test_duplicate_key_is_an_error(write_suite):
    path = write_suite(GOOD + "name: other\n")
    assert f"{path}:9: duplicate key 'name' (first at line 1)" in errors_of(path)


def test_missing_required_keys(write_suite):
    path = write_suite("description: no name, no kind\n")
    msg = errors_of(path)
    assert "name: required key is missing" in msg and "kind: required key is missing" in msg


def test_exclude_that_matches_nothing_is_an_error(write_suite):
    path = write_suite(GOOD + "exclude:\n  - {model.mixr: s4}\n")
    assert f"{path}:10: exclude[0]" in errors_of(path)


def test_expect_entries_are_validated(write_suite):
    path = write_suite(GOOD + "expect:\n  - {where: {model.mixer: s6}, metric: accuracy, value: 0.99}\n")
    assert "expect[0].source: required key is missing" in errors_of(path)
    ok = write_suite(GOOD + "expect:\n  - {where: {model.mixer: s6}, metric: accuracy, value: 0.99,"
                            " source: 'Mamba paper, Table 1', tolerance: 0.01}\n"
                            "  - {metric: time_ms, op: '<=', value: 3, source: x, tolerance: '10%'}\n", "ok.yaml")
    first, second = load_suites(ok)[0].spec.expect
    assert first.tolerance == 0.01 and first.op == "==" and second.tolerance == "10%"
    bad = write_suite(GOOD + "expect:\n  - {metric: m, op: '>', value: 1, source: x, tolerance: 'ten'}\n", "bad.yaml")
    msg = errors_of(bad)
    assert "expect[0].op: input should be '==', '>=' or '<='" in msg and "expect[0].tolerance" in msg


def test_bad_value_from_set_names_the_command_line(write_suite, cli, tmp_path):
    path = write_suite(GOOD)
    res = cli("validate", path, "--set", "model.d_state=-2")
    assert res.code == 2
    assert "model.d_state: input should be greater than 0" in res.err and "--set model.d_state=-2" in res.err
    res = cli("run", path, "--set", "novalue")
    assert res.code == 2 and "expected key=value" in res.err


def test_two_documents_with_one_name(write_suite):
    path = write_suite(GOOD + "---\n" + GOOD)
    assert "suite name 'demo' is used by two documents" in errors_of(path)


def test_every_problem_of_a_multi_document_file_is_reported(write_suite, cli, tmp_path):
    bad = GOOD.replace("seq_len: 16", "seq_len: 0")
    path = write_suite(bad + "---\n" + bad.replace("name: demo", "name: demo2").replace("kind: fake", "kind: fak"))
    res = cli("run", path)
    assert res.code == 2
    assert f"{path}:5: seq_len" in res.err and "unknown suite kind 'fak'" in res.err
    assert not (tmp_path / "results").exists()


def test_missing_file(cli, tmp_path):
    res = cli("validate", tmp_path / "nope.yaml")
    assert res.code == 2 and "no such file" in res.err
