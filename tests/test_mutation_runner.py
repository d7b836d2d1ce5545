"""tests/mutation/run.py, the mutation-testing driver: its mutmut config, result parsing and scoring, its
classification of message-text mutants (left out of the second score) and the merge of a ``--recheck``."""
from __future__ import annotations

import json
import re

import pytest

import mutation.run as run
from mutation.run import TARGETS, main, mutmut_config, parse_results, summarize

RESULTS = """
    kernels.selective_scan.reference.x_selective_scan_reference__mutmut_1: survived
    kernels.selective_scan.reference.x_selective_scan_reference__mutmut_2: killed
    kernels.selective_scan.reference.x_selective_scan_reference__mutmut_3: timeout
    kernels.selective_scan.reference.x_selective_scan_reference__mutmut_4: no tests
    kernels.selective_scan.reference.x_selective_scan_reference__mutmut_5: not checked
Running stats: done
"""


def test_results_are_parsed_and_scored_with_untested_mutants_as_survivors():
    statuses = parse_results(RESULTS)
    assert len(statuses) == 5 and statuses["kernels.selective_scan.reference.x_selective_scan_reference__mutmut_4"] \
        == "no tests"
    s = summarize(statuses)
    assert (s["mutants"], s["decided"], s["killed"]) == (5, 4, 2)
    assert s["score"] == 0.5
    assert [n[-1] for n in s["survivors"]] == ["1", "4"]
    assert summarize({})["score"] is None


def test_the_config_mutates_only_the_target_and_selects_its_tests():
    t = TARGETS["diff_statistics"]
    lines = mutmut_config(t).splitlines()
    assert "[tool.mutmut]" in lines
    cfg = {k.strip(): json.loads(v) for k, _, v in (ln.partition("=") for ln in lines if " = " in ln)}
    assert cfg["only_mutate"] == ["harness/analysis/diff.py"]
    assert cfg["pytest_add_cli_args_test_selection"] == ["tests/test_diff.py"]
    assert "kernels/" in cfg["source_paths"] and "harness/" in cfg["source_paths"]
    assert t.mutant_globs()[0] == "harness.analysis.diff.x_min_two_sided_p__mutmut_*"
    assert TARGETS["scan_chunked"].mutant_globs() == []          # the whole module


def test_every_target_names_an_existing_module_and_test_file():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for t in TARGETS.values():
        assert (root / t.path).is_file(), t.path
        assert all((root / a).is_file() for a in t.tests if a.startswith("tests/")), t.tests


def test_unknown_target_is_a_usage_error(capsys):
    assert main(["nope"]) == 2 and "unknown target" in capsys.readouterr().err
    assert main(["--list", "s4"]) == 0 and "models/s4.py" in capsys.readouterr().out


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


def test_a_plant_replaces_exactly_one_occurrence():
    from mutation.plant import planted
    assert planted("a = 1\nb = 2\n", "b = 2", "b = 3") == "a = 1\nb = 3\n"
    for text in ("a = 1\n", "b = 2\nb = 2\n"):
        with pytest.raises(ValueError, match="occurs [02] times"):
            planted(text, "b = 2", "b = 3")


def test_every_recorded_plant_still_applies_to_the_code_and_names_existing_tests():
    """tests/mutation/plants.json is kept runnable: each plant's old text is in its file exactly once (a plant whose
    code moved must be rewritten, not silently skipped), and its test files exist."""
    from pathlib import Path

    from mutation.plant import planted
    root = Path(__file__).resolve().parents[1]
    plants = json.loads((root / "tests" / "mutation" / "plants.json").read_text())
    assert len(plants) >= 20
    for p in plants:
        assert set(p) == {"why", "file", "old", "new", "tests"}, p["why"]
        planted((root / p["file"]).read_text(), p["old"], p["new"])
        assert all((root / a).is_file() for a in p["tests"] if a.startswith("tests/")), p["why"]


def test_the_plant_command_needs_a_matching_plant(tmp_path, capsys):
    from mutation.plant import main as plant_main
    plants = tmp_path / "plants.json"
    plants.write_text(json.dumps([{"why": "one", "file": "x.py", "old": "a", "new": "b", "tests": []}]))
    assert plant_main([str(plants), "-k", "nothing like it"]) == 2
    assert "no plant matches" in capsys.readouterr().err
