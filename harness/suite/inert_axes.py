"""Warnings for sweeps and ``--set`` values that change no model (models/applicability.py says which keys
matter to which model).

Why: ``sweep: {model.pos: [abs, rope]}`` over a grid that also holds Mamba cells trains each Mamba model
twice under two labels, and ``--set model.heads=4`` on a suite without attention does nothing; both look
like an ablation and measure nothing.  These are warnings, not errors: the cells are valid and run.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from harness.kinds.bench.config import MODEL_LEVEL_IMPLS
from harness.cells import Cell
from harness.dotted import canonical_json, flatten, has_dotted
from harness.errors import Issue
from harness.suite.schema import LoadedSuite
from models.applicability import applies, when_applies

MODEL = "model."


def _model_of(cell: Cell) -> Optional[Dict[str, Any]]:
    """The cell's ``model:`` section when the cell builds a model (a speed cell of an operator does not)."""
    model, impl = cell.params.get("model"), cell.params.get("impl")
    return model if isinstance(model, dict) and (impl is None or impl in MODEL_LEVEL_IMPLS) else None


def _kinds(models: Sequence[Dict[str, Any]]) -> str:
    return "; ".join(sorted({f"arch {m.get('arch', 'mamba')}, mixer {m.get('mixer', 's6')}" for m in models}))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def inert_axis_issues(suite: LoadedSuite, cells: Sequence[Cell]) -> List[Issue]:
    """One warning when cells differ only in the values of ``model.*`` sweep or zip axes that their models
    ignore: such cells would train the same model more than once."""
    spec, doc = suite.spec, suite.doc
    axes: Dict[str, Tuple[str, Tuple[Any, ...]]] = {}      # dotted key -> (what it is, where in the file)
    for key in spec.sweep:
        axes[key] = ("sweep axis", ("sweep", key))
    for g, group in enumerate(spec.zip):
        for key in group:
            axes.setdefault(key, ("zip axis", ("zip", g, key)))
    model_axes = [k for k in axes if k.startswith(MODEL)]
    if not model_axes:
        return []
    variants: Dict[str, Set[str]] = defaultdict(set)        # params without ignored axes -> full params seen
    culprits: Dict[str, Set[str]] = defaultdict(set)        # ... -> the ignored axes of those cells
    models: Dict[str, Dict[str, Any]] = {}
    for cell in cells:
        model = _model_of(cell)
        if model is None:
            continue
        ignored = [k for k in model_axes if has_dotted(cell.params, k) and not applies(k[len(MODEL):], model)]
        if not ignored:
            continue
        flat = flatten(cell.params)
        rest = canonical_json({k: v for k, v in flat.items()
                               if not any(k == i or k.startswith(i + ".") for i in ignored)})
        variants[rest].add(canonical_json(flat))
        culprits[rest].update(ignored)
        models[rest] = model
    repeated = [rest for rest, seen in variants.items() if len(seen) > 1]
    if not repeated:
        return []
    n_cells = sum(len(variants[r]) for r in repeated)
    keys = sorted(set().union(*(culprits[r] for r in repeated)), key=model_axes.index)
    what = " and ".join(f"{axes[k][0]} {k!r}" for k in keys)
    why = "; ".join(f"{k[len(MODEL):]} matters only with {when_applies(k[len(MODEL):])}" for k in keys)
    return [Issue(doc.source, doc.line_of(axes[keys[0]][1]),
                  f"warning: {what} {'does' if len(keys) == 1 else 'do'} not change the model of {n_cells} cells "
                  f"({_kinds([models[r] for r in repeated])}): {why}; so they train "
                  f"{_plural(len(repeated), 'distinct model')}, not {n_cells}; exclude them, or give "
                  f"{'it' if len(keys) == 1 else 'those keys'} only to the cells "
                  f"{'it applies' if len(keys) == 1 else 'they apply'} to (`include` entries)")]


def inert_override_issues(cells: Sequence[Cell], overrides: Sequence[Tuple[str, Any]]) -> List[Issue]:
    """A warning for each ``--set model.<key>=...`` that no cell's model uses."""
    model_overrides = [(k, v) for k, v in overrides if k.startswith(MODEL)]
    if not model_overrides:
        return []
    models = [m for m in (_model_of(c) for c in cells) if m is not None]
    issues = []
    for key, value in model_overrides:
        sub = key[len(MODEL):]
        if not models:
            issues.append(Issue("command line", 0, f"warning: --set {key}={value} changes no model here: "
                                                   f"no cell builds a model (operator benchmarks only)"))
        elif not any(applies(sub, m) for m in models):
            issues.append(Issue("command line", 0,
                                f"warning: --set {key}={value} changes no model here ({_kinds(models)}): "
                                f"{sub} matters only with {when_applies(sub)}"))
    return issues
