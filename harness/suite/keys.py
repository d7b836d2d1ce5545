"""The reference of every suite key, generated from the schemas themselves (``ssmbench keys [KIND]``).

Why generated: the keys live in pydantic models spread over the kinds (``harness.kinds``), the models
(``models.config``) and the suite top level (``harness.suite.schema``).  A hand-written list goes stale the day
a key is added; this one is rebuilt from the same classes that validate a suite, and
``tests/test_keys.py`` fails when ``suites/KEYS.md`` differs from what :func:`render_markdown` makes now.

Each key gets its type, default, allowed values (literals and registered names), its help text (the field's
``description`` or attribute docstring) and, for ``model.*`` keys, which models it changes
(:mod:`models.applicability`).
"""
from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

#: registered names from these packages are documented; a plugin's (or a test's) are not
PROJECT_PACKAGES = ("harness", "models", "kernels")

#: where the generated reference lives, beside the suites it describes
KEYS_FILE = Path(__file__).resolve().parents[2] / "suites" / "KEYS.md"


@dataclass(frozen=True)
class Key:
    """One documented key: ``path`` is dotted (``model.d_state``) or suite-level (``seeds``)."""

    path: str
    type: str
    default: str
    allowed: str
    help: str
    applies: str


def _registry_of(info: FieldInfo):
    """The registry a ``registered(...)`` field checks against (its validator closes over it), if any."""
    for meta in info.metadata:
        func = getattr(meta, "func", None)
        for cell in getattr(func, "__closure__", None) or ():
            names = getattr(cell.cell_contents, "names", None)
            if callable(names):
                return cell.cell_contents
    return None


def own_names(registry) -> List[str]:
    """The names the project itself registers (not a plugin's)."""
    return [n for n in registry.names() if registry.origin(n).split(".")[0] in PROJECT_PACKAGES]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is None or annotation is type(None):
        return "null"
    if origin is typing.Literal:
        kinds = sorted({type(a).__name__ for a in typing.get_args(annotation)})
        return " | ".join(kinds)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        names = [_type_name(a) for a in args]
        out = " | ".join(dict.fromkeys(names))
        return out + " | null" if len(args) < len(typing.get_args(annotation)) else out
    if origin in (list, List, typing.Sequence):
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, enum.Enum):
            return "str"
        return {"str": "str", "int": "int", "float": "float", "bool": "bool"}.get(annotation.__name__,
                                                                                  annotation.__name__)
    return str(annotation).replace("typing.", "")


def _literals(annotation: Any) -> List[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    out: List[Any] = []
    for arg in typing.get_args(annotation):
        out.extend(_literals(arg))
    return out


def _nested_model(annotation: Any) -> Optional[type]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _bounds(info: FieldInfo) -> str:
    words = []
    for meta in info.metadata:
        for attr, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                words.append(f"{word} {_fmt(bound)}")
    return ", ".join(words)


def _default(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        return _fmt(info.default)
    if info.default_factory is not None:
        made = info.default_factory()
        return "(section)" if isinstance(made, BaseModel) else _fmt(made)
    return "required"


def walk(model: type, prefix: str = "", applies_to: Optional[Callable[[str], str]] = None) -> Iterator[Key]:
    """Every leaf key of ``model`` (nested sections flattened to dotted paths), in declaration order."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}{key}"
        nested = _nested_model(info.annotation)
        help_text = " ".join((info.description or "").split())
        if nested is not None and nested.__name__ == "ModelConfig":
            # the model: section is the same for every kind: one table of its own (MODEL_SECTION)
            yield Key(path, "section", _default(info) if info.is_required() else "(defaults)", "",
                      help_text or "the model to build: every key in the `model:` section table", "")
            continue
        if nested is not None:
            yield from walk(nested, path + ".", applies_to)
            continue
        registry = _registry_of(info)
        allowed = ", ".join(_fmt(v) for v in _literals(info.annotation))
        if registry is not None:
            allowed = ", ".join(own_names(registry)) + f" (any registered {registry.what})"
        bounds = _bounds(info)
        if bounds:
            allowed = f"{allowed}; {bounds}" if allowed else bounds
        applies = applies_to(path) if applies_to else ""
        yield Key(path, _type_name(info.annotation), _default(info), allowed, help_text, applies)


def _model_applies(path: str) -> str:
    from models.applicability import when_applies

    if not path.startswith("model."):
        return ""
    return when_applies(path[len("model."):]) or "every model"


def model_keys() -> List[Key]:
    """The keys of the ``model:`` section (shared by every kind that builds a model)."""
    from models.config import ModelConfig

    return list(walk(ModelConfig, "model.", applies_to=_model_applies))


def kind_keys(kind: str) -> List[Key]:
    """The cell keys of one suite kind (what ``defaults``/``sweep``/``include`` may set)."""
    from harness.kinds import KINDS

    return list(walk(KINDS.get(kind).config_model))


def suite_keys() -> List[Key]:
    """The top-level keys of a suite document."""
    from harness.suite.schema import SuiteSpec

    return [k for k in walk(SuiteSpec) if "." not in k.path or k.path.startswith(("expect.", "tune."))]


def kinds() -> List[str]:
    from harness.kinds import KINDS

    return own_names(KINDS)


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _table(keys: Sequence[Key], with_applies: bool) -> List[str]:
    head = "| key | type | default | allowed | what it does |" + (" changes |" if with_applies else "")
    rule = "|---|---|---|---|---|" + ("---|" if with_applies else "")
    lines = [head, rule]
    for k in keys:
        row = f"| `{k.path}` | {_cell(k.type)} | `{_cell(k.default)}` | {_cell(k.allowed)} | {_cell(k.help)} |"
        if with_applies:
            row += f" {_cell(k.applies)} |"
        lines.append(row)
    return lines


def render_markdown(only: Optional[str] = None) -> str:
    """The whole reference (every kind), or one kind's section."""
    lines: List[str] = []
    if only is None:
        lines += ["# Suite keys", "",
                  "Generated by `ssmbench keys --write` from the schemas that validate suites; do not edit by hand "
                  "(tests/test_keys.py fails when this file is stale).  A cell key is set in `defaults`, swept in "
                  "`sweep` / `zip`, or given in `include`, as a dotted path (`model.d_state`).  `changes` says "
                  "which models a `model.*` key changes: a key a model ignores is *inert* for it (`ssmbench "
                  "validate` warns about a sweep over an inert key).", "",
                  "## Suite level (every kind)", ""]
        lines += _table(suite_keys(), with_applies=False)
        lines.append("")
    for kind in kinds() if only is None else [only]:
        lines += [f"## kind: {kind}", ""]
        lines += _table(kind_keys(kind), with_applies=False)
        lines.append("")
    if only is None or any(k.path == "model" for k in kind_keys(only)):
        lines += ["## The `model:` section (task, speed, memory, decode)", ""]
        lines += _table(model_keys(), with_applies=True)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def undocumented() -> List[str]:
    """Keys without help text (tests/test_keys.py requires none)."""
    out = [f"suite: {k.path}" for k in suite_keys() if not k.help]
    for kind in kinds():
        out += [f"{kind}: {k.path}" for k in kind_keys(kind) if not k.help]
    return out + [k.path for k in model_keys() if not k.help]
