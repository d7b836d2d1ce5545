"""models.applicability against the models themselves: a key called inert must change nothing, and the
structural keys called applying must change something."""
from __future__ import annotations

import itertools

import pytest
import torch

from models import ModelConfig, build_lm
from models.applicability import BUILTIN_ARCHS, BUILTIN_MIXERS, RULES, applies, inert_keys, when_applies

VOCAB = 11
SEED = 1234
BASE = {"n_layers": 1, "d_model": 16, "d_state": 4, "heads": 2, "max_len": 64, "backend": "reference", "headdim": 4}

# a valid value other than BASE / the default for each key of the table
OTHER = {
    "pos": "abs", "heads": 4, "attn_backend": "naive", "max_len": 128, "mlp_ratio": 2, "expand": 1, "d_conv": 3,
    "conv_bias": False, "d_state": 8, "s4_mode": "dplr", "a_init": "random", "dt_min": 0.01, "dt_max": 0.05,
    "dt_init_floor": 0.05, "dt_rank": 3, "selective": {"delta": False}, "backend": "chunked",
    "hyena_filter_dim": 8, "hyena_emb_dim": 5, "hyena_decay": (0.5, 1.0),
    "headdim": 8, "ngroups": 2, "chunk_size": 3,
}
# keys that pick an implementation, not a model: applying, they change speed (and rounding) only
IMPLEMENTATION = {"attn_backend", "backend", "chunk_size"}

# arch mamba2 has its SSD built in (mixer ssd only)
COMBOS = [(a, m, p) for a, m in itertools.product(BUILTIN_ARCHS, BUILTIN_MIXERS)
          if (a, m) != ("h3", "attention") and (a != "mamba2" or m == "ssd")
          for p in (("rope", "abs") if m == "attention" else ("rope",))]


def _outputs(cfg: dict, seed: int):
    torch.manual_seed(seed)
    model = build_lm(ModelConfig.model_validate(cfg), VOCAB).double()
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        logits = model(tokens)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, logits


def _config(arch: str, mixer: str, pos: str, key: str, value) -> dict:
    if key == "pos" and value == pos:
        value = "rope" if pos == "abs" else "abs"
    cfg = {**BASE, "arch": arch, "mixer": mixer, "pos": pos, key: value}
    if key == "s4_mode" and value == "dplr":
        cfg["a_init"] = "legs" if mixer == "s4" else None
    return cfg


def test_table_covers_real_config_fields():
    assert set(RULES) <= set(ModelConfig.model_fields)
    assert set(OTHER) == set(RULES)
    defaults = ModelConfig()
    assert applies("pos", {}) is (defaults.mixer == "attention")   # resolves like ModelConfig's defaults


def _same(a, b) -> bool:
    (pa, la), (pb, lb) = a, b
    return pa.keys() == pb.keys() and all(torch.equal(pa[n], pb[n]) for n in pa) and torch.equal(la, lb)


@pytest.mark.parametrize("arch,mixer,pos", COMBOS)
def test_inert_keys_change_no_parameter_and_no_output(arch, mixer, pos):
    model = {"arch": arch, "mixer": mixer, "pos": pos}
    inert = inert_keys(model, list(RULES))
    assert inert, f"every key applies to {arch}/{mixer}?"
    base = _outputs({**BASE, "arch": arch, "mixer": mixer, "pos": pos}, SEED)
    changed = {**BASE, "arch": arch, "mixer": mixer, "pos": pos, **{k: OTHER[k] for k in inert}}
    if not _same(_outputs(changed, SEED), base):   # all at once (fast); on a failure, find the key
        culprits = [k for k in inert if not _same(_outputs(_config(arch, mixer, pos, k, OTHER[k]), SEED), base)]
        pytest.fail(f"called inert for {arch}/{mixer} but change the model: {culprits or inert}")


@pytest.mark.parametrize("arch,mixer,pos", COMBOS)
def test_applying_structural_keys_change_the_model(arch, mixer, pos):
    model = {"arch": arch, "mixer": mixer, "pos": pos}
    base_params, base_logits = _outputs({**BASE, "arch": arch, "mixer": mixer, "pos": pos}, SEED + 1)
    for key in RULES:
        if key in IMPLEMENTATION or not applies(key, model):
            continue
        params, logits = _outputs(_config(arch, mixer, pos, key, OTHER[key]), SEED + 1)
        same_params = params.keys() == base_params.keys() and all(
            params[n].shape == base_params[n].shape and torch.equal(params[n], base_params[n]) for n in params)
        assert not (same_params and torch.allclose(logits, base_logits)), \
            f"{key} is said to apply to {arch}/{mixer} but changes nothing"


def test_max_len_applies_to_abs_attention_and_hyena_only():
    assert applies("max_len", {"mixer": "attention", "pos": "abs", "arch": "transformer"})
    assert not applies("max_len", {"mixer": "attention", "pos": "rope", "arch": "transformer"})
    assert applies("max_len", {"mixer": "hyena", "arch": "h3"})
    assert not applies("max_len", {"mixer": "s6"})


def test_mamba2_resolves_to_the_ssd_mixer():
    assert applies("headdim", {"arch": "mamba2"}) and applies("chunk_size", {"arch": "mamba2"})
    assert applies("d_conv", {"arch": "mamba2"}) and applies("expand", {"arch": "mamba2"})
    assert not applies("a_init", {"arch": "mamba2"}) and not applies("dt_rank", {"arch": "mamba2"})
    assert applies("headdim", {"arch": "none", "mixer": "ssd"}) and not applies("headdim", {"mixer": "s6"})
    assert not applies("d_conv", {"arch": "none", "mixer": "ssd"})
    assert set(inert_keys({"arch": "mamba2"}, list(RULES))) == {
        "pos", "heads", "attn_backend", "max_len", "mlp_ratio", "s4_mode", "a_init", "dt_rank", "selective",
        "hyena_filter_dim", "hyena_emb_dim", "hyena_decay"}


def test_dotted_and_unknown_keys_and_plugins():
    assert not applies("selective.delta", {"mixer": "s4"})
    assert applies("selective.B", {"mixer": "s6"})
    assert applies("n_layers", {"mixer": "s6"}) and when_applies("n_layers") == ""
    assert applies("pos", {"arch": "mamba", "mixer": "my_plugin_mixer"})   # unknown mixer: assume it matters
    assert when_applies("pos") == "mixer: attention"


@pytest.mark.parametrize("arch", ["mamba", "none", "h3"])
def test_dt_rank_is_inert_when_dt_is_not_selective(arch):
    """The one cross-key condition of the table: without a selective dt there is no low-rank dt projection."""
    fixed_dt = {"arch": arch, "mixer": "s6", "selective": {"delta": False}}
    assert "dt_rank" in inert_keys(fixed_dt, ["dt_rank"])
    assert not applies("dt_rank", {"arch": arch, "mixer": "s6", "selective": {"delta": False}, "pos": "rope"}) \
        and applies("dt_rank", {"arch": arch, "mixer": "s6", "selective.delta": True})
    assert applies("dt_rank", {"arch": arch, "mixer": "s6"})                      # the default: selective dt
    base = _outputs({**BASE, **fixed_dt}, SEED)
    assert _same(_outputs({**BASE, **fixed_dt, "dt_rank": OTHER["dt_rank"]}, SEED), base)
    selective = {**BASE, "arch": arch, "mixer": "s6"}
    assert not _same(_outputs({**selective, "dt_rank": OTHER["dt_rank"]}, SEED), _outputs(selective, SEED))
