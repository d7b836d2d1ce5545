"""Warnings for sweeps and ``--set`` values that change no model (models/applicability.py says which keys
matter to which model).

Why: ``sweep: {model.pos: [abs, rope]}`` over a grid that also holds Mamba cells trains each Mamba model
twice under two labels, and ``--set model.heads=4`` on a suite without attention does nothing; both look
like an ablation and measure nothing.  These are warnings, not errors: the cells are valid and run.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Sequence, Set, Tuple

from harness.cells import Cell
from harness.dotted import canonical_json, flatten, get_dotted
from harness.errors import Issue
from harness.schema import LoadedSuite
from models.applicability import applies, when_applies

MODEL = "model."


def _model_of(cell: Cell) -> Any:
    return cell.params.get("model")


def _without(params: Dict[str, Any], key: str) -> str:
    return canonical_json({k: v for k, v in flatten(params).items() if k != key and not k.startswith(key + ".")})


def _kinds(models: Sequence[Dict[str, Any]]) -> str:
    return "; ".join(sorted({f"arch {m.get('arch', 'mamba')}, mixer {m.get('mixer', 's6')}" for m in models}))


def inert_axis_issues(suite: LoadedSuite, cells: Sequence[Cell]) -> List[Issue]:
    """One warning per sweep or zip axis ``model.<key>`` whose values differ between cells that are otherwise
    identical and whose model ignores ``<key>``: those cells would train the same model more than once."""
    spec, doc = suite.spec, suite.doc
    axes: List[Tuple[str, Tuple[Any, ...]]] = [(key, ("sweep", key)) for key in spec.sweep]
    axes += [(key, ("zip", g, key)) for g, group in enumerate(spec.zip) for key in group]
    issues = []
    for key, where in axes:
        if not key.startswith(MODEL):
            continue
        sub = key[len(MODEL):]
        values: Dict[str, Set[str]] = defaultdict(set)
        models: Dict[str, Dict[str, Any]] = {}
        for cell in cells:
            model = _model_of(cell)
            if not isinstance(model, dict) or applies(sub, model):
                continue
            rest = _without(cell.params, key)
            values[rest].add(canonical_json(get_dotted(cell.params, key)))
            models[rest] = model
        repeated = [rest for rest, vals in values.items() if len(vals) > 1]
        if not repeated:
            continue
        n_cells = sum(len(values[r]) for r in repeated)
        issues.append(Issue(
            doc.source, doc.line_of(where),
            f"warning: sweep axis {key!r} does not change the model of {n_cells} cells "
            f"({_kinds([models[r] for r in repeated])}): {sub} matters only with {when_applies(sub)}, so they "
            f"train {len(repeated)} distinct models, not {n_cells}; exclude them, or give {key!r} only to the "
            f"cells it applies to (`include` entries)"))
    return issues


def inert_override_issues(cells: Sequence[Cell], overrides: Sequence[Tuple[str, Any]]) -> List[Issue]:
    """A warning for each ``--set model.<key>=...`` that no cell's model uses."""
    models = [m for m in (_model_of(c) for c in cells) if isinstance(m, dict)]
    issues = []
    for key, value in overrides:
        if not key.startswith(MODEL) or not models:
            continue
        sub = key[len(MODEL):]
        if not any(applies(sub, m) for m in models):
            issues.append(Issue("command line", 0,
                                f"warning: --set {key}={value} changes no model here ({_kinds(models)}): "
                                f"{sub} matters only with {when_applies(sub)}"))
    return issues
