"""Warnings for sweep axes and --set values that change no model (harness/suite/inert_axes.py)."""
from __future__ import annotations

from conftest import REPO

HEAD = """
name: pos-ablation
kind: task
device: cpu
defaults:
  task: {name: selective_copying, seq_len: 32, vocab: 8, n_tokens: 4}
  model: {n_layers: 1, d_model: 16, heads: 2}
  train: {steps: 2}
"""


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.lstrip("\n").splitlines(), 1) if needle in line)


def test_a_sweep_over_a_key_some_models_ignore_warns_with_file_line_and_count(cli, write_suite):
    text = HEAD + """
sweep:
  model.arch: [mamba, transformer]
  model.mixer: [s6, attention]
  model.pos: [abs, rope]
seeds: [0, 1]
"""
    path = write_suite(text)
    res = cli("validate", path, "--quiet")
    assert res.code == 0, res.err                       # a warning, not an error: the cells are valid
    assert "16 cells, valid" in res.out
    line = _line_of(text, "model.pos:")
    warning = f"{path}:{line}: warning: sweep axis 'model.pos' does not change the model of 8 cells"
    assert warning in res.err, res.err
    assert "arch mamba, mixer s6; arch transformer, mixer s6" in res.err
    assert "pos matters only with mixer: attention" in res.err and "4 distinct models, not 8" in res.err
    assert "arch transformer, mixer attention" not in res.err


def test_no_warning_when_the_key_matters_to_every_cell_or_moves_with_other_keys(cli, write_suite):
    only_attention = HEAD.replace("heads: 2}", "heads: 2, mixer: attention}") + """
sweep:
  model.arch: [mamba, transformer]
  model.pos: [abs, rope, xpos]
"""
    res = cli("validate", write_suite(only_attention, "a.yaml"), "--quiet")
    assert res.code == 0, res.err
    assert "warning" not in res.err
    zipped = HEAD + """
zip:
  - model.arch: [mamba, transformer]
    model.mixer: [s6, attention]
    model.pos: [rope, abs]
"""
    res = cli("validate", write_suite(zipped, "b.yaml"), "--quiet")
    assert res.code == 0 and "warning" not in res.err, res.err


def test_a_set_value_no_model_uses_warns(cli, write_suite):
    path = write_suite(HEAD + "sweep:\n  model.mixer: [s4, s6]\n")
    res = cli("validate", path, "--quiet", "--set", "model.heads=4")
    assert res.code == 0, res.err
    assert "command line: warning: --set model.heads=4 changes no model here" in res.err
    assert "heads matters only with mixer: attention" in res.err
    res = cli("validate", path, "--quiet", "--set", "model.d_state=8")
    assert res.code == 0 and "warning" not in res.err, res.err


def test_no_shipped_suite_sweeps_a_key_its_models_ignore(cli):
    res = cli("validate", REPO / "suites", "--quiet")
    assert res.code == 0, res.err
    assert "warning: sweep axis" not in res.err, res.err


def test_keys_ignored_together_are_grouped_and_zip_axes_are_named(cli, write_suite):
    text = HEAD + """
zip:
  - model.heads: [2, 4]
    model.max_len: [64, 128]
"""
    res = cli("validate", write_suite(text, "z.yaml"), "--quiet")
    assert res.code == 0, res.err
    assert "warning: zip axis 'model.heads' and zip axis 'model.max_len' do not change the model of 2 cells" in res.err
    assert "so they train 1 distinct model, not 2" in res.err


def test_set_on_operator_benchmarks_says_no_cell_builds_a_model(cli):
    res = cli("validate", REPO / "suites" / "quick" / "scan_scaling.yaml", "--quiet", "--set", "model.heads=4")
    assert res.code == 0, res.err
    assert "--set model.heads=4 changes no model here: no cell builds a model" in res.err
