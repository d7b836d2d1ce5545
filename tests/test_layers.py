"""The import graph follows the data flow: no module imports from a stage above its own, and there are no
import circles (lazy imports inside functions count too: they are circles that merely happen later).

The stages, bottom to top, are listed in ``harness/__init__.py``; each package's ``__init__`` docstring
says what it owns and what it may import.  A new top-level module or package must be placed in LAYERS.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "kernels", "models")

#: bottom to top: a module may import from its own stage and the stages below it.
LAYERS: List[List[str]] = [
    ["harness.cells", "harness.registry", "harness.config_types", "harness.errors", "harness.dotted"],
    ["kernels"],
    ["models"],
    ["harness.kinds"],
    ["harness.studies"],
    ["harness.suite"],
    ["harness.store"],
    ["harness.run"],
    ["harness.analysis"],
    ["harness.cli", "harness.__main__", "harness"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(path: Path, name: str, modules: Dict[str, Path]) -> Set[str]:
    """Project modules that ``path`` imports anywhere (top level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{name} is in no stage of tests/test_layers.py LAYERS: place it there"
    return best


def graph() -> Dict[str, Set[str]]:
    modules = all_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def test_no_module_imports_from_a_stage_above_its_own():
    upward = [f"{src} (stage {layer_of(src)}) imports {dst} (stage {layer_of(dst)})"
              for src, targets in graph().items() for dst in sorted(targets) if layer_of(dst) > layer_of(src)]
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def find_cycle(edges: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_circles():
    cycle = find_cycle(graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_checks_see_a_planted_upward_import_and_a_planted_circle():
    edges = {"harness.suite.schema": {"harness.run.runner"}, "harness.run.runner": {"harness.suite.schema"}}
    assert layer_of("harness.run.runner") > layer_of("harness.suite.schema")
    assert find_cycle(edges) == ["harness.run.runner", "harness.suite.schema", "harness.run.runner"]
    # lazy imports inside functions are seen
    modules = all_modules()
    assert "harness.kinds" in imports_of(REPO / "harness/run/executors.py", "harness.run.executors", modules)
