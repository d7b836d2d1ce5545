"""Config validation of the speed / memory / decode cells: clear errors naming the key and the fix."""
import pytest
from pydantic import ValidationError

from harness.kinds.bench.config import DecodeConfig, MemoryConfig, SpeedConfig
from harness.kinds import KINDS
from harness.kinds.bench.testing import TINY_MODEL, TINY_OP


def test_design_example_keys_validate():
    # DESIGN.md's kind: speed example, verbatim keys
    cfg = SpeedConfig.model_validate(dict(batch=4, d_model=1024, expand=2, d_state=16, heads=16, dtype="bf16",
                                          warmup=10, repeats=30, timeout_s=120, seq_len=512,
                                          impl="s6.chunked", **{"pass": "fwd+bwd"}))
    assert cfg.pass_ == "fwd+bwd" and cfg.width == 2048 and cfg.attn_head_dim == 128


def test_kinds_registered_with_their_config_models():
    assert KINDS.get("speed").config_model is SpeedConfig
    assert KINDS.get("memory").config_model is MemoryConfig
    assert KINDS.get("decode").config_model is DecodeConfig
    for kind in ("speed", "memory", "decode"):
        assert KINDS.get(kind).skip_reason is not None and KINDS.get(kind).run_meta is not None


def test_unknown_impl_says_did_you_mean():
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "s6.trition"})
    text = str(err.value)
    assert "impl" in text and "did you mean 's6.triton'" in text


def test_heads_not_dividing_width_is_rejected():
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "attention.sdpa", "heads": 3})
    assert "heads=3 does not divide the attention width 16" in str(err.value)
    assert "head_dim" in str(err.value)
    # an explicit head_dim makes any head count valid
    cfg = SpeedConfig.model_validate({**TINY_OP, "impl": "attention.sdpa", "heads": 3, "head_dim": 8})
    assert cfg.attn_head_dim == 8
    # targets that do not split the width into heads ignore the key
    SpeedConfig.model_validate({**TINY_OP, "impl": "s6.chunked", "heads": 3})
    SpeedConfig.model_validate({**TINY_OP, "impl": "model", "model": TINY_MODEL, "heads": 3})


def test_dim_overrides_expand_times_d_model():
    cfg = SpeedConfig.model_validate({**TINY_OP, "impl": "s6.chunked", "dim": 1024})
    assert cfg.width == 1024


@pytest.mark.parametrize("key,value", [("seq_len", 0), ("batch", -1), ("d_state", 0), ("repeats", 0),
                                       ("dtype", "fp8"), ("pass", "bwd"), ("timeout_s", 0)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "s6.chunked", key: value})
    assert key in str(err.value)


def test_unknown_key_is_an_error():
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "s6.chunked", "d_stat": 4})
    assert "d_stat" in str(err.value)


def test_model_level_impl_needs_model_section():
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "model"})
    assert "model:" in str(err.value)
    cfg = SpeedConfig.model_validate({**TINY_OP, "impl": "model", "model": TINY_MODEL})
    assert cfg.model_dict()["d_model"] == 16


def test_model_section_is_validated_by_models_schema():
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "model", "model": {**TINY_MODEL, "mixer": "s7"}})
    assert "s7" in str(err.value)


def test_train_step_only_for_memory_and_model_level():
    with pytest.raises(ValidationError):
        SpeedConfig.model_validate({**TINY_OP, "impl": "model", "model": TINY_MODEL, "pass": "train_step"})
    with pytest.raises(ValidationError) as err:
        MemoryConfig.model_validate({**TINY_OP, "impl": "s6.chunked", "pass": "train_step"})
    assert "train_step" in str(err.value) and "fwd+bwd" in str(err.value)
    MemoryConfig.model_validate({**TINY_OP, "impl": "model", "model": TINY_MODEL, "pass": "train_step"})


def test_decode_config():
    cfg = DecodeConfig.model_validate(dict(model=TINY_MODEL, batch=2, prompt_len=8, gen_len=4, dtype="fp32"))
    assert cfg.impl == "model" and cfg.gen_len == 4
    with pytest.raises(ValidationError) as err:
        DecodeConfig.model_validate(dict(batch=2))
    assert "model" in str(err.value)
    with pytest.raises(ValidationError):
        DecodeConfig.model_validate(dict(model=TINY_MODEL, gen_len=0))


def test_bad_device():
    with pytest.raises(ValidationError) as err:
        SpeedConfig.model_validate({**TINY_OP, "impl": "s6.chunked", "device": "tpu"})
    assert "device" in str(err.value)
