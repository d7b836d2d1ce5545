"""Suite -> cells: grid of sweep axes and zip groups, exclude/include, seeds, overrides, cell ids.

Order of operations (each cell's params are *as the suite writes them*; a kind's defaults are never
added, so a new optional field does not change every cell id):

1. every point of the grid ``sweep axes x zip groups`` is merged into ``defaults`` (dotted keys,
   dict values merged into dict defaults);
2. each ``include`` entry (dotted keys) merged into ``defaults`` is added as a cell;
3. ``seeds: [..]`` multiplies the cells by a ``seed`` axis; grid cells (not included ones) that
   match an ``exclude`` entry are dropped (an entry may name ``seed``); ``repeats: N`` sets ``repeats``;
4. ``--set key=value`` overrides are applied; the device is resolved (``auto`` -> cuda if
   available, else cpu) and stored as ``device``;
5. ``cell_id`` = first 12 hex of sha1 of canonical JSON ``{"kind", "params"}`` (sorted keys), so it
   is independent of key order and of the suite's name; duplicates collapse;
6. ``--filter key=value`` keeps matching cells; every cell is validated by its kind's
   ``config_model`` and each error points at the line that produced the bad value.

``1``/``0`` for a true/false field become ``true``/``false`` before the id is taken, so ``--set x=1``
and ``x: true`` are one cell.  Nothing that selects is allowed to select nothing: an ``exclude`` that
matches no cell, an ``include`` that adds none, excludes that drop every cell, an ``expect`` that no
cell (or no metric of the kind) can answer, and a ``--filter`` that keeps no cell are errors, each
saying which key or value no cell has and the closest ones that some cell has
(:func:`why_nothing_matches`).
"""
from __future__ import annotations

from copy import deepcopy as _deepcopy
import hashlib
import itertools
import typing
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from pydantic import ValidationError

from harness.cells import Cell
from harness.errors import Issue, SuiteError, describe_error, model_at
from harness.kinds import KINDS
from harness.registry import closest
from harness.dotted import canonical_json, flatten, get_dotted, has_dotted, merge, set_dotted
from harness.suite.schema import LoadedSuite

# Where a value came from: a path inside the suite document (for its line), or a command-line label.
Origin = Union[Tuple[Any, ...], str]


def make_cell_id(kind: str, params: Dict[str, Any]) -> str:
    """Stable id of a cell: independent of key order and of the suite's name."""
    return hashlib.sha1(canonical_json({"kind": kind, "params": params}).encode()).hexdigest()[:12]


def values_equal(actual: Any, wanted: Any) -> bool:
    """Equality for include/exclude/filter matching; "64" on the command line matches 64."""
    if actual == wanted and type(actual) is not bool and type(wanted) is not bool:
        return True
    if isinstance(actual, bool) or isinstance(wanted, bool):
        if actual is wanted or str(actual).lower() == str(wanted).lower():
            return True
        flag, other = (actual, wanted) if isinstance(actual, bool) else (wanted, actual)
        return type(other) is int and other in (0, 1) and bool(other) is flag  # --filter x=1
    return canonical_json(actual) == canonical_json(wanted) or str(actual) == str(wanted)


def matches(params: Dict[str, Any], where: Dict[str, Any]) -> bool:
    """True when every dotted key of ``where`` has that value in ``params`` (nested dicts allowed)."""
    for key, wanted in flatten(where).items():
        if not has_dotted(params, key) or not values_equal(get_dotted(params, key), wanted):
            return False
    return True


class NothingSelected(SuiteError):
    """A ``--filter`` that keeps no cell of a suite (``plan`` may try the next suite of a file)."""


def why_nothing_matches(where: Sequence[Tuple[str, Any]], params_list: Sequence[Dict[str, Any]],
                        label: str = "") -> str:
    """Why no params match all of ``where`` (dotted key, value; a list value means any of them): the
    first key no cell has (with the closest keys), else the first value no cell has for its key (with
    the closest values the cells do have), else that the values never occur in one cell together."""
    flats = [flatten(p) for p in params_list]
    for key, wanted in where:
        seen: List[Any] = []
        for flat in flats:
            if key in flat and not any(canonical_json(flat[key]) == canonical_json(v) for v in seen):
                seen.append(flat[key])
        if not seen:
            hint = closest(key, sorted(known_keys(params_list)))
            tail = f" — did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
            return f"{label}{key}: no cell has this key{tail}"
        options = wanted if isinstance(wanted, list) and not any(isinstance(v, list) for v in seen) else [wanted]
        if not any(values_equal(v, w) for v in seen for w in options):
            hint = [h for w in options for h in closest(str(w), [str(v) for v in seen])]
            tail = f" — did you mean {' or '.join(repr(h) for h in dict.fromkeys(hint))}?" if hint else ""
            shown = ", ".join(str(v) for v in seen[:12]) + (", ..." if len(seen) > 12 else "")
            return f"{label}{key}={wanted!r}: no cell has this value{tail} (values in the cells: {shown})"
    together = ", ".join(f"{k}={v!r}" for k, v in where)
    return f"{label}no single cell has all of {together}"


# --------------------------------------------------------------------------- building cells

@dataclass
class _Draft:
    """A cell under construction: its params and, per dotted key, where the value came from (None: where
    its enclosing key came from)."""

    params: Dict[str, Any]
    origins: Dict[str, Optional[Origin]]

    def put(self, key: str, value: Any, origin: Optional[Origin]) -> None:
        merged = isinstance(value, dict) and isinstance(get_dotted(self.params, key), dict)
        set_dotted(self.params, key, value)
        if not merged:  # a replaced value takes its sub-keys, and what was said about them, with it
            for old in [k for k in self.origins if k.startswith(key + ".")]:
                del self.origins[old]
        # a merged mapping keeps the sub-keys it does not set, with their origins (a defaults line)
        self.origins[key] = origin
        if isinstance(value, dict):
            for sub in flatten(value):
                self.origins[f"{key}.{sub}"] = origin + tuple(sub.split(".")) if isinstance(origin, tuple) else origin

    def copy(self) -> "_Draft":
        return _Draft(_deepcopy(self.params), dict(self.origins))


def _defaults_draft(defaults: Dict[str, Any]) -> _Draft:
    draft = _Draft(_deepcopy(defaults), {})

    def walk(node: Dict[str, Any], prefix: Tuple[str, ...]) -> None:
        for key, value in node.items():
            path = prefix + (key,)
            draft.origins[".".join(path)] = ("defaults",) + path
            if isinstance(value, dict):
                walk(value, path)

    walk(defaults, ())
    return draft


def _axes(suite: LoadedSuite) -> List[List[List[Tuple[str, Any, Origin]]]]:
    """Each axis is a list of points; each point a list of (dotted key, value, origin)."""
    spec = suite.spec
    axes = [[[(key, v, ("sweep", key, i))] for i, v in enumerate(values)]
            for key, values in spec.sweep.items()]
    for g, group in enumerate(spec.zip):
        n = len(next(iter(group.values())))
        axes.append([[(key, group[key][i], ("zip", g, key, i)) for key in group] for i in range(n)])
    return axes


def resolve_device(requested: Optional[str], cuda_available: Optional[bool] = None) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    requested = requested or "auto"
    if requested != "auto":
        return requested
    if cuda_available is None:
        import torch
        cuda_available = torch.cuda.is_available()
    return "cuda" if cuda_available else "cpu"


def _origin_of(loc: Tuple[Any, ...], origins: Dict[str, Optional[Origin]]) -> Optional[Origin]:
    """The origin of the longest prefix of a pydantic ``loc`` that the suite (or command line) set."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    while parts:
        origin = origins.get(".".join(parts))
        if origin is not None:
            return origin
        parts.pop()
    return None


def _validate(cells: List[Tuple[Cell, Dict[str, Origin]]], suite: LoadedSuite, kind_model: type) -> List[Issue]:
    issues: List[Issue] = []
    doc = suite.doc
    for cell, origins in cells:
        try:
            kind_model.model_validate(cell.params)
        except ValidationError as exc:
            for err in exc.errors():
                loc, sentence = describe_error(err, kind_model)
                origin = _origin_of(loc, origins)
                if isinstance(origin, str):  # set on the command line
                    issues.append(Issue("command line", 0, f"{sentence} (from {origin})"))
                else:
                    issues.append(Issue(doc.source, doc.line_of(origin or ("defaults",)), sentence))
    return issues


def expand(suite: LoadedSuite, overrides: Sequence[Tuple[str, Any]] = (),
           filters: Sequence[Tuple[str, Any]] = (), device: Optional[str] = None,
           validate: bool = True, cuda_available: Optional[bool] = None) -> List[Cell]:
    """The suite's cells, in grid order (first sweep key outermost), then includes; see module doc."""
    spec, doc = suite.spec, suite.doc
    issues: List[Issue] = []
    base = _defaults_draft(spec.defaults)

    kind_model = _kind_model(spec.kind)
    # (draft, include index or None for a grid cell): exclude drops grid cells only, so an include
    # always adds its cell
    drafts: List[Tuple[_Draft, Optional[int]]] = []
    for point in itertools.product(*_axes(suite)):
        draft = base.copy()
        for entries in point:
            for key, value, origin in entries:
                draft.put(key, value, origin)
        drafts.append((draft, None))
    for i, entry in enumerate(spec.include):
        draft = base.copy()
        for key, value in entry.items():
            draft.put(str(key), value, ("include", i, key))
        drafts.append((draft, i))
    for draft, _ in drafts:
        _normalise_bools(draft, kind_model)
    if spec.seeds is not None:
        seeded = []
        for draft, include in drafts:
            for j, seed in enumerate(spec.seeds):
                d = draft.copy()
                d.put("seed", seed, ("seeds", j))
                seeded.append((d, include))
        drafts = seeded
    excluded = [False] * len(spec.exclude)
    kept: List[Tuple[_Draft, Optional[int]]] = []
    for draft, include in drafts:
        hit = [i for i, where in enumerate(spec.exclude) if include is None and matches(draft.params, where)]
        for i in hit:
            excluded[i] = True
        if not hit:
            kept.append((draft, include))
    grid = [d.params for d, include in drafts if include is None]
    for i, was_used in enumerate(excluded):
        if not was_used:
            reason = why_nothing_matches(list(flatten(spec.exclude[i]).items()), grid)
            issues.append(Issue(doc.source, doc.line_of(("exclude", i)),
                                f"exclude[{i}] {spec.exclude[i]} matches no cell of the sweep ({reason}); "
                                "correct the entry or remove it"))
    issues.extend(_includes_that_add_nothing(kept, suite))
    drafts = [d for d, _ in kept]
    if not drafts and not issues:
        issues.append(Issue(doc.source, doc.line_of(("exclude",)), f"suite {spec.name!r} has no cells: its "
                            "exclude entries drop every cell of the sweep; remove one or add an include"))
    if validate and not overrides and not suite.overridden:  # the suite as written, not a --set variant
        issues.extend(_expect_issues(suite, [d.params for d in drafts], kind_model))
    for draft in drafts:
        if spec.repeats is not None:
            draft.put("repeats", spec.repeats, ("repeats",))
        for key, value in overrides:
            draft.put(key, value, f"--set {key}={value}")
        if overrides:
            _normalise_bools(draft, kind_model)
        # --device > a device a sweep / include / --set gave this cell > the suite's > defaults' > auto
        origin = draft.origins.get("device")
        per_cell = draft.params.get("device") if origin and origin[0] != "defaults" else None
        requested = device or per_cell or spec.device or spec.defaults.get("device")
        if device:
            origin = f"--device {device}"
        elif not per_cell:
            origin = ("device",) if spec.device else (origin or ("device",))
        if requested is None or isinstance(requested, str):  # a wrong type is left for validation
            requested = resolve_device(requested, cuda_available)
        draft.put("device", requested, origin)

    if issues:
        raise SuiteError(issues, headline=f"{doc.source}: suite {spec.name!r} is not valid:")

    seen: Dict[str, Tuple[Cell, Dict[str, Origin]]] = {}
    for draft in drafts:
        cell_id = make_cell_id(spec.kind, draft.params)
        if cell_id not in seen:
            seen[cell_id] = (Cell(spec.name, spec.kind, cell_id, draft.params), draft.origins)
    cells = list(seen.values())

    if filters:
        cells = apply_filters(cells, filters)

    if validate:
        try:
            kind_model = KINDS.get(spec.kind).config_model
        except ImportError as exc:
            raise SuiteError([Issue(doc.source, doc.line_of(("kind",)),
                                    f"suite kind {spec.kind!r} cannot be loaded: "
                                    f"{type(exc).__name__}: {exc}")]) from None
        issues = _validate(cells, suite, kind_model)
        if issues:
            raise SuiteError(issues, headline=f"{doc.source}: suite {spec.name!r} has invalid cells:")

    axes = list(spec.sweep) + [k for group in spec.zip for k in group] + ["seed"]
    return with_varying([c for c, _ in cells], order=axes)


def _kind_model(kind: str) -> Optional[type]:
    """The kind's config model, or None when the kind cannot be loaded (validation says why)."""
    try:
        return KINDS.get(kind).config_model
    except Exception:  # noqa: BLE001
        return None


def _bool_leaves(annotation: Any) -> set:
    """The plain types an annotation allows (through Optional, Annotated, StrictBool ...)."""
    if isinstance(annotation, type):
        return {annotation}
    leaves: set = set()
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) or typing.get_args(arg):
            leaves |= _bool_leaves(arg)
    return leaves


def is_bool_key(model: Optional[type], key: str) -> bool:
    """Whether the dotted ``key`` is a true/false field of ``model`` (the kind's config)."""
    parts = key.split(".")
    sub = model_at(model, parts[:-1]) if model is not None else None
    fields = getattr(sub, "model_fields", None) or {}
    field = fields.get(parts[-1]) or next((f for f in fields.values() if f.alias == parts[-1]), None)
    return field is not None and _bool_leaves(field.annotation) - {type(None)} == {bool}


def _normalise_bools(draft: _Draft, kind_model: Optional[type]) -> None:
    """``1``/``0`` for a true/false field become ``true``/``false``: ``--set x=1`` and ``x: true`` are
    the same cell (and cell id), as pydantic would run them the same; other values are left for
    validation to reject.  The flag keeps the origin of the value it replaces (a key inside a ``--set``
    mapping: the mapping's), so an error on it still names what wrote it."""
    for key, value in flatten(draft.params).items():
        if type(value) is int and value in (0, 1) and is_bool_key(kind_model, key):
            draft.put(key, bool(value), draft.origins.get(key))


def _includes_that_add_nothing(kept: Sequence[Tuple[_Draft, Optional[int]]], suite: LoadedSuite) -> List[Issue]:
    """``include`` entries whose cells the sweep (or an earlier include) already has: they add nothing,
    which is never what their author meant (a value meant to differ, a key misspelt into a default)."""
    doc = suite.doc
    issues, seen = [], {}
    for draft, include in kept:
        key = canonical_json(draft.params)
        if include is not None and key in seen:
            first = "the sweep" if seen[key] is None else f"include[{seen[key]}]"
            issues.append(Issue(doc.source, doc.line_of(("include", include)),
                                f"include[{include}] {suite.spec.include[include]} adds no cell: {first} "
                                "already has it; remove the entry or change a value"))
        seen.setdefault(key, include)
    return issues


def _expect_issues(suite: LoadedSuite, params_list: Sequence[Dict[str, Any]],
                   kind_model: Optional[type]) -> List[Issue]:
    """``expect`` entries that can never be judged: a metric the kind does not write, or a ``where``
    that matches no cell of the suite (a reference value nobody sees is silently lost)."""
    spec, doc = suite.spec, suite.doc
    if not spec.expect:
        return []
    kind = KINDS.get(spec.kind) if kind_model is not None else None
    metrics = getattr(kind, "metrics", None)
    row_columns = set(getattr(kind, "row_columns", ()) or ())
    resolved = [_with_defaults(p, kind_model) for p in params_list]
    flats = [flatten(p) for p in resolved]
    keys = known_keys(resolved)
    short = {k.rsplit(".", 1)[-1] for k in keys}
    issues = []
    for i, entry in enumerate(spec.expect):
        where_line = doc.line_of(("expect", i))
        if metrics is not None and entry.metric not in metrics:
            hint = closest(entry.metric, metrics)
            tail = f" — did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
            issues.append(Issue(doc.source, doc.line_of(("expect", i, "metric")),
                                f"expect[{i}].metric {entry.metric!r}: kind {spec.kind!r} writes no such "
                                f"metric{tail} (its metrics: {', '.join(metrics)})"))
        where = []
        for key, value in flatten(entry.where).items():
            if key in keys:
                where.append((key, value))
            elif key.rsplit(".", 1)[-1] in short:  # a short column name (seq_len for task.seq_len)
                name = key.rsplit(".", 1)[-1]
                where.append((next(k for k in sorted(keys) if k.rsplit(".", 1)[-1] == name), value))
            elif key not in row_columns and key not in _SHORT_COLUMNS:
                hint = closest(key, sorted(keys | row_columns))
                tail = f" — did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
                issues.append(Issue(doc.source, where_line, f"expect[{i}].where: no cell or row has the key "
                                    f"{key!r}{tail}; correct the key or remove the entry"))
                where = None
                break
        if where and not any(all(k in flat and _value_matches(flat[k], v) for k, v in where) for flat in flats):
            reason = why_nothing_matches(where, resolved)
            issues.append(Issue(doc.source, where_line, f"expect[{i}] (metric {entry.metric}) matches no cell of "
                                f"the suite ({reason}); correct the where or remove the entry"))
    return issues


def _value_matches(value: Any, wanted: Any) -> bool:
    """An ``expect.where`` value: one value, or a list of them (any of them matches); for a list-valued
    key (``train.betas``) a list is that one value, as in ``--filter``."""
    if isinstance(wanted, list) and not isinstance(value, list):
        return any(values_equal(value, w) for w in wanted)
    return values_equal(value, wanted)


#: Columns the results table derives from a cell's params (harness.store.results.CANONICAL_COLUMNS,
#: e.g. ``model`` = "mamba/s6"), which an ``expect.where`` may name.
_SHORT_COLUMNS = ("model", "mixer", "backend", "task")


def _with_defaults(params: Dict[str, Any], kind_model: Optional[type]) -> Dict[str, Any]:
    """The params with the kind's defaults filled in (what the results columns hold)."""
    if kind_model is None:
        return params
    try:
        dumped = kind_model.model_validate(params).model_dump(mode="json", by_alias=True)
    except Exception:  # noqa: BLE001 - an invalid cell is reported by validation
        return params
    return merge(dumped, params)


def known_keys(params_list: Iterable[Dict[str, Any]]) -> set:
    """Every dotted key, and every key prefix (``model``, ``model.selective``), of any of the params."""
    known: set = set()
    for params in params_list:
        known.update(flatten(params))
        known.update(_prefixes(params))
    return known


def apply_filters(cells: List[Tuple[Cell, Dict[str, Origin]]], filters: Sequence[Tuple[str, Any]]):
    known = known_keys(cell.params for cell, _ in cells)
    for key, _ in filters:
        if key not in known:
            hint = closest(key, sorted(known))
            tail = f" — did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
            raise SuiteError([Issue("command line", 0, f"--filter {key!r}: no cell has this key{tail}")])

    def keep(cell: Cell) -> bool:
        for key, wanted in filters:
            actual = get_dotted(cell.params, key)
            options = wanted if isinstance(wanted, list) and not isinstance(actual, list) else [wanted]
            if not any(values_equal(actual, w) for w in options):
                return False
        return True

    kept = [(c, o) for c, o in cells if keep(c)]
    if cells and not kept:
        reason = why_nothing_matches(list(filters), [c.params for c, _ in cells], "--filter ")
        raise NothingSelected([Issue("command line", 0, f"{reason}; the filter keeps none of the suite's "
                                     f"{len(cells)} cells")])
    return kept


def _prefixes(params: Dict[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in params.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _prefixes(value, prefix + key + ".")


def with_varying(cells: List[Cell], order: Sequence[str] = ()) -> List[Cell]:
    """Fill each cell's ``varying``: the dotted keys whose value differs between the cells
    (the keys in ``order``, e.g. the suite's axes, first)."""
    flat = [flatten(c.params) for c in cells]
    keys: List[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    rank = {k: i for i, k in enumerate(order)}
    keys.sort(key=lambda k: rank.get(k, len(rank)))
    missing = object()
    varying = [k for k in keys
               if len({canonical_json(f.get(k, missing)) if k in f else "<missing>" for f in flat}) > 1]
    return [Cell(c.suite, c.kind, c.cell_id, c.params, {k: f.get(k) for k in varying})
            for c, f in zip(cells, flat)]


def parse_assignments(items: Sequence[str], flag: str) -> List[Tuple[str, Any]]:
    """["a.b=3", "c=[1,2]"] -> [("a.b", 3), ("c", [1, 2])]; bad syntax is a SuiteError naming the flag."""
    from harness.suite.yaml_loader import parse_scalar

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise SuiteError([Issue("command line", 0, f"{flag} {item!r}: expected key=value with a dotted key, "
                                    f"e.g. {flag} model.d_state=32")])
        out.append((key, parse_scalar(value)))
    return out
