"""Safe YAML loading that remembers where every key and list item came from.

Suite errors must point at a line ("suites/x.yaml:5: unknown key 'd_stat' in model"), but plain
``yaml.safe_load`` throws the line marks away.  :func:`load_documents` composes the node tree with
a :class:`yaml.SafeLoader` (so tags that would build Python objects are rejected), builds plain
dicts/lists from it and, walking the same nodes, records the start line of every mapping key and
list item under its path, e.g. ``("defaults", "model", "d_state") -> 7`` or
``("sweep", "seq_len", 2) -> 12``.  Duplicate keys, which YAML silently lets the last one win, are
errors here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

Path_ = Tuple[Any, ...]


class YAMLLoadError(ValueError):
    """A file that is not safe, well-formed YAML; ``line`` is 1-based (None when unknown)."""

    def __init__(self, source: str, line: Optional[int], message: str):
        self.source, self.line, self.message = source, line, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")


@dataclass
class Document:
    """One YAML document: its data, and the line of every key / item path inside it."""

    data: Any
    source: str
    start_line: int
    lines: Dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """Line of ``path``, or of its longest prefix that has one, or the document's first line."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.start_line


class _Loader(yaml.SafeLoader):
    """SafeLoader; a separate subclass so nothing we do leaks into yaml.SafeLoader itself."""


_PYTHON_TAG = re.compile(r"could not determine a constructor for the tag '?(tag:yaml.org,2002:python/[^'\s]*|![^'\s]*)")


def _walk(loader: _Loader, node: yaml.Node, path: Path_, lines: Dict[Path_, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: Dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                raise YAMLLoadError(source, line, "a mapping key must be a plain value, not a list or mapping")
            if key in seen:
                raise YAMLLoadError(source, line, f"duplicate key {key!r} (first at line {seen[key]}); "
                                    "remove one of them")
            seen[key] = line
            lines[path + (key,)] = line
            _walk(loader, value_node, path + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(loader, item, path + (i,), lines, source)


def _error_from_yaml(source: str, exc: yaml.YAMLError) -> YAMLLoadError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    text = str(getattr(exc, "problem", None) or exc).strip()
    m = _PYTHON_TAG.search(str(exc))
    if m:
        tag = m.group(1).replace("tag:yaml.org,2002:", "!!")
        return YAMLLoadError(source, line, f"YAML tag {tag} is not allowed: suites are plain data "
                             "(mappings, lists, strings, numbers), never code")
    context = getattr(exc, "context", None)
    if context:
        text = f"{context}, {text}"
    return YAMLLoadError(source, line, f"invalid YAML: {text}")


def load_documents(text: str, source: str = "<string>") -> List[Document]:
    """Every YAML document in ``text`` (``---`` separated), with line marks; empty documents are dropped."""
    loader = _Loader(text)
    docs: List[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)  # flattens merge keys (<<) in place first
            lines: Dict[Path_, int] = {}
            _walk(loader, node, (), lines, source)
            docs.append(Document(data, source, node.start_mark.line + 1, lines))
    except yaml.YAMLError as exc:
        raise _error_from_yaml(source, exc) from None
    finally:
        loader.dispose()
    return docs


def load_file(path: Union[str, Path]) -> List[Document]:
    """:func:`load_documents` of a file; a missing or unreadable file is a :class:`YAMLLoadError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YAMLLoadError(source, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise YAMLLoadError(source, None, f"cannot read: {exc}") from None
    return load_documents(text, source)


def parse_scalar(text: str) -> Any:
    """A command-line value (``--set k=v``) read as a YAML scalar or flow list: ``64`` -> 64, ``[1,2]`` -> [1, 2]."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
