"""suites/KEYS.md, the reference of every suite key, is generated from the schemas and kept current."""
from __future__ import annotations

from pydantic import Field

from harness.suite import keys


def test_the_committed_reference_is_current():
    assert keys.KEYS_FILE.read_text(encoding="utf-8") == keys.render_markdown(), (
        "suites/KEYS.md is stale: a suite key was added or changed; run `ssmbench keys --write` and commit it")


def test_every_key_has_help_text():
    assert keys.undocumented() == [], "give these keys a docstring (a string under the field) or a description"


def test_every_kind_and_the_model_section_are_covered():
    text = keys.render_markdown()
    for kind in keys.kinds():
        assert f"## kind: {kind}" in text
    for path in ("`model.d_state`", "`train.lr`", "`task.seq_len`", "`seeds`", "`expect.metric`", "`pass`"):
        assert path in text, path


def test_a_new_key_changes_the_reference(monkeypatch):
    from models.config import ModelConfig

    before = keys.render_markdown()
    fields = dict(ModelConfig.model_fields)
    fields["planted_key"] = Field(3, description="a planted key")
    monkeypatch.setattr(ModelConfig, "model_fields", fields)
    after = keys.render_markdown()
    assert before != after and "`model.planted_key`" in after and "a planted key" in after


def test_model_keys_say_which_models_they_change():
    rows = {k.path: k for k in keys.model_keys()}
    assert rows["model.pos"].applies == "mixer: attention"
    assert rows["model.d_model"].applies == "every model"
    assert "attention" in rows["model.mixer"].allowed and "s6" in rows["model.mixer"].allowed
    assert rows["model.n_layers"].allowed == "> 0" and rows["model.n_layers"].default == "2"


def test_cli_prints_one_kind_and_refuses_an_unknown_one(cli):
    ok = cli("keys", "speed")
    assert ok.code == 0 and "## kind: speed" in ok.out and "## kind: task" not in ok.out
    assert "`model.d_state`" in ok.out   # speed cells can build a model: the model section follows
    bad = cli("keys", "sped")
    assert bad.code == 2 and "unknown kind 'sped'" in bad.err
