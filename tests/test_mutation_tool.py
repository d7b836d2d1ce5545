"""tests/mutation/run.py: its classification of message-text mutants (left out of its second score) and the
merge of a ``--recheck`` (only the survivors run again) into a full run's record."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("mutation_run", Path(__file__).parent / "mutation" / "run.py")
run = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = run   # its dataclasses look their module up while the class is made
SPEC.loader.exec_module(run)

SOURCE = '''
def x_f__mutmut_orig(key, params):
    if key not in params:
        raise KeyError(f"no key {key!r}; known: {sorted(params)}")
    why = "it is " + "fine"
    out = {}
    out["note"] = "fine"
    return {"kind": key, "sep": ".".join(params)}
def x_f__mutmut_1(key, params):
    if key not in params:
        raise KeyError(f"XXno key XX{key!r}; known: {sorted(params)}")
    why = "it is " + "fine"
    out = {}
    out["note"] = "fine"
    return {"kind": key, "sep": ".".join(params)}
def x_f__mutmut_2(key, params):
    if key not in params:
        raise KeyError(f"no key {key!r}; known: {sorted(params)}")
    why = "IT IS " + "fine"
    out = {}
    out["note"] = "fine"
    return {"kind": key, "sep": ".".join(params)}
def x_f__mutmut_3(key, params):
    if key not in params:
        raise KeyError(f"no key {key!r}; known: {sorted(params)}")
    why = "it is " + "fine"
    out = {}
    out["note"] = "fine"
    return {"KIND": key, "sep": ".".join(params)}
def x_f__mutmut_4(key, params):
    if key not in params:
        raise KeyError(f"no key {key!r}; known: {sorted(params)}")
    why = "it is " + "fine"
    out = {}
    out["note"] = "fine"
    return {"kind": key, "sep": "XX.XX".join(params)}
def x_f__mutmut_5(key, params):
    if key in params:
        raise KeyError(f"XXno key XX{key!r}; known: {sorted(params)}")
    why = "it is " + "fine"
    out = {}
    out["note"] = "fine"
    return {"kind": key, "sep": ".".join(params)}
def x_f__mutmut_6(key, params):
    if key not in params:
        raise KeyError(f"no key {key!r}; known: {sorted(params)}")
    why = "it is " + "fine"
    out = {}
    out["note"] = "XXfineXX"
    return {"kind": key, "sep": ".".join(params)}
'''


def test_only_strings_in_messages_count_as_message_text():
    """A raise's text, a message variable and a ``note`` entry are messages; a dict key, a separator, or a string change that
    comes with a logic change (mutant 5 also flips the condition) are not."""
    got = run.message_text_mutants(SOURCE, "m")
    assert got == {"m.x_f__mutmut_1", "m.x_f__mutmut_2", "m.x_f__mutmut_6"}


EARLIER = {"mutants": 4, "decided": 4, "killed": 2, "score": 0.5, "date": "then",
           "survivors": ["m.x_f__mutmut_2", "m.x_f__mutmut_4"]}


def test_a_recheck_keeps_the_earlier_kills_and_takes_the_survivors_new_statuses():
    """Only the survivors were run again: they take their new status, every other mutant stays killed (the
    earlier run was complete), and 'not checked' (mutmut's word for a mutant it did not run now) is never kept."""
    now = {"m.x_f__mutmut_1": "not checked", "m.x_f__mutmut_2": "killed",
           "m.x_f__mutmut_3": "not checked", "m.x_f__mutmut_4": "survived"}
    merged = run.merge_recheck(EARLIER, now)
    assert merged == {"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "killed",
                      "m.x_f__mutmut_3": "killed", "m.x_f__mutmut_4": "survived"}
    summary = run.summarize(merged)
    assert (summary["killed"], summary["decided"], summary["score"]) == (3, 4, 0.75)
    assert summary["survivors"] == ["m.x_f__mutmut_4"]


@pytest.mark.parametrize("earlier, now, words", [
    ({**EARLIER, "decided": 3}, {f"m.x_f__mutmut_{i}": "not checked" for i in range(1, 5)}, "complete run"),
    (EARLIER, {f"m.x_f__mutmut_{i}": "not checked" for i in range(1, 6)}, "5 mutants now, 4 when recorded"),
    (EARLIER, {f"m.x_f__mutmut_{i}": "not checked" for i in (1, 2, 3, 5)}, "m.x_f__mutmut_4"),
], ids=["stopped run", "module grew", "survivor gone"])
def test_a_recheck_is_refused_unless_the_earlier_run_was_complete_and_the_module_is_the_same(earlier, now, words):
    with pytest.raises(run.RecheckRefused, match=re.escape(words)):
        run.merge_recheck(earlier, now)
