"""Relative and per-seed expectations: "the S6 row is >= 90% and 15 points above every LTI row, in every seed"."""
from __future__ import annotations

import pandas as pd
import pytest

from harness.analysis.report.expect import evaluate


def _grid(acc):
    """acc[(arch, mixer)] = [accuracy per seed] -> tidy rows, one cell per (arch, mixer, seed)."""
    rows = []
    for (arch, mixer), values in acc.items():
        for seed, v in enumerate(values):
            rows.append({"run_id": "r", "cell_id": f"{arch}-{mixer}-{seed}", "status": "ok", "metric": "accuracy",
                         "value": v, "unit": "fraction", "repeat": 0, "model.arch": arch, "model.mixer": mixer,
                         "seed": seed})
            rows.append({**rows[-1], "metric": "val_accuracy", "value": 0.0, "step": 100})  # a curve point: ignored
    return pd.DataFrame(rows)


MARGIN = {"where": {"model.arch": "mamba", "model.mixer": "s6"}, "than": {"model.mixer": ["s4", "hyena"]},
          "metric": "accuracy", "op": ">=", "value": 0.15, "tolerance": 0.02, "per_seed": True, "source": "t"}
ABSOLUTE = {"where": {"model.arch": "mamba", "model.mixer": "s6"}, "metric": "accuracy", "op": ">=", "value": 0.9,
            "tolerance": 0.02, "per_seed": True, "source": "t"}


def test_margin_over_every_reference_row_in_every_seed():
    rows = _grid({("mamba", "s6"): [0.99, 0.98], ("mamba", "s4"): [0.70, 0.60], ("mamba", "hyena"): [0.80, 0.75],
                  ("h3", "s4"): [0.95, 0.95]})   # another arch's rows are no reference
    (res,) = evaluate([MARGIN], rows)
    assert res.verdict == "matches" and res.n == 2
    # the worst seed's margin over its best LTI row: seed 0, 0.99 - 0.80
    assert res.measured == pytest.approx(0.19)
    assert "2 of 2 seeds meet it" in res.note and "margin over every row" in res.rule


def test_one_seed_below_the_margin_fails_the_entry_though_the_means_pass():
    # means: S6 0.945, hyena 0.72 -> a 0.225 margin; but seed 1 stayed on its plateau (0.90 vs 0.84)
    rows = _grid({("mamba", "s6"): [0.99, 0.90], ("mamba", "s4"): [0.5, 0.5], ("mamba", "hyena"): [0.6, 0.84]})
    (res,) = evaluate([MARGIN], rows)
    assert res.verdict == "misses" and res.measured == pytest.approx(0.06)
    assert "1 of 2 seeds meet it (worst: seed 1)" in res.note
    pooled = evaluate([{**MARGIN, "per_seed": False}], rows)[0]
    assert pooled.verdict == "matches" and pooled.measured == pytest.approx(0.945 - 0.72)  # means over seeds
    (absolute,) = evaluate([ABSOLUTE], rows)
    assert absolute.verdict == "matches" and "2 of 2 seeds meet it" in absolute.note


def test_per_seed_absolute_bound_names_the_seed_that_missed():
    rows = _grid({("mamba", "s6"): [0.99, 0.13, 0.98]})
    (res,) = evaluate([ABSOLUTE], rows)
    assert res.verdict == "misses" and res.measured == pytest.approx(0.13) and "1 of 3" not in res.note
    assert "2 of 3 seeds meet it (worst: seed 1)" in res.note


def test_missing_reference_rows_say_so():
    rows = _grid({("mamba", "s6"): [0.99]})
    (res,) = evaluate([MARGIN], rows)
    assert res.verdict == "no data" and "no reference rows" in res.note


def test_list_values_in_where_match_any():
    rows = _grid({("mamba", "s4"): [0.2], ("mamba", "hyena"): [0.4], ("mamba", "s6"): [1.0]})
    (res,) = evaluate([{"where": {"model.mixer": ["s4", "hyena"]}, "metric": "accuracy", "value": 0.3,
                        "tolerance": 0.01, "source": "t"}], rows)
    assert res.n == 2 and res.measured == pytest.approx(0.3)


def test_suite_schema_accepts_the_keys_and_rejects_bad_ones():
    from pydantic import ValidationError

    from harness.suite.schema import Expect

    Expect.model_validate(MARGIN)
    with pytest.raises(ValidationError):
        Expect.model_validate({**MARGIN, "per_seed": "yes"})
    with pytest.raises(ValidationError):
        Expect.model_validate({**MARGIN, "than": {}})
