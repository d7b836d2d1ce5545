"""Which ``model:`` keys shape which models.

Why: a ``ModelConfig`` holds every knob of every block and mixer, and most models ignore most of them --
``pos`` matters only to attention, ``expand`` only inside a Mamba or Mamba-2 block.  A sweep over a key that a cell's
model ignores trains the same model several times under different labels, and a report that labels a
Mamba row "pos=rope" says something false.  :func:`applies` answers "does this key change this model?";
the suite planner warns about such sweep axes and the report leaves such keys out of its labels.

The table is checked against the models themselves (tests/test_applicability.py): for every built-in
block and mixer, changing a key the table calls inert changes no parameter and no output.  A block or
mixer registered by a plugin is unknown here, so every key counts as applying to it.  Of the conditions on
other keys one is modelled: ``dt_rank`` sizes the low-rank dt projection, which ``selective: {delta: false}``
removes.  Others are not: the table then calls a key applying where it is not, so a warning is missed, never
given falsely (a caller that passes only arch/mixer/pos, as the report does, gets the same answers).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, NamedTuple

BUILTIN_ARCHS = ("mamba", "mamba2", "h3", "none", "transformer")
BUILTIN_MIXERS = ("s6", "s4", "ssd", "hyena", "attention")


class Rule(NamedTuple):
    """When a key matters (``test`` on the model's resolved arch/mixer/pos), and that condition in words."""

    when: str
    test: Callable[[Mapping[str, Any]], bool]


def _mixer_in(*names: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda m: m["mixer"] in names


def _arch_is(*names: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda m: m["arch"] in names


_ATTENTION = Rule("mixer: attention", _mixer_in("attention"))
_S6 = Rule("mixer: s6", _mixer_in("s6"))
_SSM = Rule("mixer: s4 or s6", _mixer_in("s4", "s6"))
_SSD = Rule("mixer: ssd or arch: mamba2", _mixer_in("ssd"))          # arch mamba2 resolves to mixer ssd
_DT = Rule("mixer: s4, s6 or ssd (arch: mamba2)", _mixer_in("s4", "s6", "ssd"))
_HYENA = Rule("mixer: hyena", _mixer_in("hyena"))
_MAMBA_BLOCK = Rule("arch: mamba or mamba2", _arch_is("mamba", "mamba2"))

#: top-level ``model:`` key -> when it changes the model; keys not listed change every model.
RULES: Dict[str, Rule] = {
    "pos": _ATTENTION,
    "heads": _ATTENTION,
    "attn_backend": _ATTENTION,
    "max_len": Rule("mixer: attention with pos: abs (the position table), or mixer: hyena (the filter's time scale)",
                    lambda m: (m["mixer"] == "attention" and m["pos"] == "abs") or m["mixer"] == "hyena"),
    "mlp_ratio": Rule("arch: transformer", _arch_is("transformer")),
    "expand": _MAMBA_BLOCK,
    "d_conv": _MAMBA_BLOCK,
    "conv_bias": _MAMBA_BLOCK,
    "d_state": Rule("mixer: s4, s6 or ssd (arch: mamba2), or arch: h3 (its shift SSM)",
                    lambda m: m["mixer"] in ("s4", "s6", "ssd") or m["arch"] == "h3"),
    "s4_mode": Rule("mixer: s4", _mixer_in("s4")),
    "a_init": _SSM,
    "dt_min": _DT,
    "dt_max": _DT,
    "dt_init_floor": Rule("mixer: s6 or ssd (arch: mamba2)", _mixer_in("s6", "ssd")),
    "dt_rank": Rule("mixer: s6 with selective.delta true (the low-rank dt projection)",
                    lambda m: m["mixer"] == "s6" and m["delta_selective"]),
    "selective": _S6,
    "backend": Rule("mixer: s6 or ssd (arch: mamba2)", _mixer_in("s6", "ssd")),
    "headdim": _SSD,
    "ngroups": _SSD,
    "chunk_size": _SSD,
    "hyena_filter_dim": _HYENA,
    "hyena_emb_dim": _HYENA,
    "hyena_decay": _HYENA,
}

# what a model section that leaves these out resolves to (models.config.ModelConfig's defaults)
_DEFAULTS = {"arch": "mamba", "mixer": "s6", "pos": "rope"}


def _resolved(model: Mapping[str, Any]) -> Dict[str, Any]:
    m = {k: model.get(k, default) for k, default in _DEFAULTS.items()}
    if m["arch"] == "mamba2":
        m["mixer"] = "ssd"                             # ModelConfig: the Mamba-2 block's mixer is its SSD
    selective = model.get("selective")
    delta = selective.get("delta", True) if isinstance(selective, Mapping) else model.get("selective.delta", True)
    m["delta_selective"] = delta is not False          # ModelConfig's default: dt is selective
    return m


def applies(key: str, model: Mapping[str, Any]) -> bool:
    """Whether ``model.<key>`` (``key`` may be dotted: ``selective.delta``) changes the model that the
    ``model:`` section ``model`` builds.  Unknown keys, blocks and mixers: True."""
    rule = RULES.get(key.split(".", 1)[0])
    m = _resolved(model)
    if rule is None or m["arch"] not in BUILTIN_ARCHS or m["mixer"] not in BUILTIN_MIXERS:
        return True
    return bool(rule.test(m))


def when_applies(key: str) -> str:
    """The condition under which ``key`` matters, in words ("mixer: attention"); "" if always."""
    rule = RULES.get(key.split(".", 1)[0])
    return rule.when if rule else ""


def inert_keys(model: Mapping[str, Any], keys: List[str]) -> List[str]:
    """The ``keys`` (dotted, relative to ``model:``) that the model built from ``model`` ignores."""
    return [k for k in keys if not applies(k, model)]
