"""tests/mutation/run.py's classification of message-text mutants (left out of its second score)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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
