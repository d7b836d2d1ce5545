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
"""
from __future__ import annotations

from copy import deepcopy as _deepcopy
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from pydantic import ValidationError

from harness.cells import Cell
from harness.errors import Issue, SuiteError, describe_error
from harness.kinds import KINDS
from harness.registry import closest
from harness.dotted import canonical_json, flatten, get_dotted, has_dotted, set_dotted
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
        return actual is wanted or str(actual).lower() == str(wanted).lower()
    return canonical_json(actual) == canonical_json(wanted) or str(actual) == str(wanted)


def matches(params: Dict[str, Any], where: Dict[str, Any]) -> bool:
    """True when every dotted key of ``where`` has that value in ``params`` (nested dicts allowed)."""
    for key, wanted in flatten(where).items():
        if not has_dotted(params, key) or not values_equal(get_dotted(params, key), wanted):
            return False
    return True


# --------------------------------------------------------------------------- building cells

@dataclass
class _Draft:
    """A cell under construction: its params and, per dotted key, where the value came from."""

    params: Dict[str, Any]
    origins: Dict[str, Origin]

    def put(self, key: str, value: Any, origin: Origin) -> None:
        set_dotted(self.params, key, value)
        # a new value hides what the old one said about its sub-keys
        for old in [k for k in self.origins if k.startswith(key + ".")]:
            del self.origins[old]
        self.origins[key] = origin
        if isinstance(value, dict) and not isinstance(origin, str):
            for sub in flatten(value):
                self.origins[f"{key}.{sub}"] = origin + tuple(sub.split("."))

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


def _origin_of(loc: Tuple[Any, ...], origins: Dict[str, Origin]) -> Optional[Origin]:
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

    # (draft, from the grid?): exclude drops grid cells only, so an include always adds its cell
    drafts: List[Tuple[_Draft, bool]] = []
    for point in itertools.product(*_axes(suite)):
        draft = base.copy()
        for entries in point:
            for key, value, origin in entries:
                draft.put(key, value, origin)
        drafts.append((draft, True))
    for i, entry in enumerate(spec.include):
        draft = base.copy()
        for key, value in entry.items():
            draft.put(str(key), value, ("include", i, key))
        drafts.append((draft, False))
    if spec.seeds is not None:
        seeded = []
        for draft, from_grid in drafts:
            for j, seed in enumerate(spec.seeds):
                d = draft.copy()
                d.put("seed", seed, ("seeds", j))
                seeded.append((d, from_grid))
        drafts = seeded
    excluded = [False] * len(spec.exclude)
    kept: List[_Draft] = []
    for draft, from_grid in drafts:
        hit = [i for i, where in enumerate(spec.exclude) if from_grid and matches(draft.params, where)]
        for i in hit:
            excluded[i] = True
        if not hit:
            kept.append(draft)
    drafts = kept
    for i, was_used in enumerate(excluded):
        if not was_used:
            issues.append(Issue(doc.source, doc.line_of(("exclude", i)),
                                f"exclude[{i}] {spec.exclude[i]} matches no cell of the sweep "
                                "(check its keys and values)"))
    for draft in drafts:
        if spec.repeats is not None:
            draft.put("repeats", spec.repeats, ("repeats",))
        for key, value in overrides:
            draft.put(key, value, f"--set {key}={value}")
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

    return [(c, o) for c, o in cells if keep(c)]


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
