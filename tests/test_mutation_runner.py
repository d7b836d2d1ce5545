"""tests/mutation/run.py, the mutation-testing driver: its mutmut config, result parsing and scoring."""
from __future__ import annotations

import json

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
