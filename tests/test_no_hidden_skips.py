"""No skip hides a failure: a test is skipped only for a condition outside the project.

Allowed: no CUDA (or the Triton interpreter already on / off), an optional package missing
(``pytest.importorskip`` of a third-party package the project does not require everywhere).
Not allowed: a helper that turns any exception into a skip (a broken backend or kind then shows up
as "skipped", not failed), an ``importorskip`` of the project's own modules, a skip "until written".
The test sources are read as syntax trees, so a new test file is checked as soon as it exists.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

TESTS = Path(__file__).resolve().parent

#: third-party packages a test may skip without: an optional extra (ray) or a Linux-only requirement (triton)
OPTIONAL_PACKAGES = {"ray", "triton"}
#: what a skip reason may name: the host's devices, the Triton interpreter, an optional package, a host tool
EXTERNAL_CONDITION = re.compile(r"CUDA|GPU|TRITON_INTERPRET|interpret|pip install|\bray\b|\btriton\b|"
                                r"\bbash\b|\bgit\b|POSIX|Windows|is not installed", re.I)
BROAD = {"Exception", "BaseException"}


def _sources() -> List[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)


def _is_pytest_call(node: ast.AST, *names: str) -> bool:
    """``pytest.<name>(...)`` or ``pytest.mark.<name>(...)``."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return isinstance(f, ast.Attribute) and f.attr in names and (
        (isinstance(f.value, ast.Name) and f.value.id == "pytest")
        or (isinstance(f.value, ast.Attribute) and f.value.attr == "mark"))


def _reason(call: ast.Call) -> str:
    """The reason text (constant parts of an f-string), or "" when it is computed."""
    node = next((k.value for k in call.keywords if k.arg in ("reason", "msg")), None)
    if node is None and call.args and call.func.attr == "skip":
        node = call.args[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    return ""


def _catches_broadly(handler: ast.ExceptHandler) -> bool:
    t = handler.type
    names = [t] if not isinstance(t, ast.Tuple) else list(t.elts)
    return t is None or any(isinstance(n, ast.Name) and n.id in BROAD for n in names)


def problems(tree: ast.AST, where: str) -> Iterator[str]:
    """Every forbidden skip in one module's syntax tree, as 'file:line: why'."""
    for node in ast.walk(tree):
        if _is_pytest_call(node, "importorskip"):
            arg = node.args[0] if node.args else None
            name = arg.value if isinstance(arg, ast.Constant) else None
            if name not in OPTIONAL_PACKAGES:
                yield (f"{where}:{node.lineno}: importorskip({name!r}) - only optional third-party packages "
                       f"{sorted(OPTIONAL_PACKAGES)} may be missing; import the project's modules directly")
        elif _is_pytest_call(node, "skip", "skipif"):
            reason = _reason(node)
            if not EXTERNAL_CONDITION.search(reason):
                yield (f"{where}:{node.lineno}: skip reason {reason!r} names no external condition "
                       "(no CUDA, the Triton interpreter, an optional package)")
        elif isinstance(node, ast.ExceptHandler):
            for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
                if _is_pytest_call(inner, "skip", "importorskip", "xfail"):
                    yield f"{where}:{inner.lineno}: a skip inside an except handler turns an error into a skip"
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("test"):
            # a helper that swallows every exception and whose result decides a skip
            swallows = any(isinstance(h, ast.ExceptHandler) and _catches_broadly(h) for h in ast.walk(node))
            if swallows and _used_in_a_skip(tree, node.name):
                yield f"{where}:{node.lineno}: {node.name}() swallows every exception and decides a skip"


def _used_in_a_skip(tree: ast.AST, name: str) -> bool:
    """Whether ``name`` is called in a skipif condition, or in a function body that calls pytest.skip."""
    for node in ast.walk(tree):
        if _is_pytest_call(node, "skipif") and any(
                isinstance(n, ast.Name) and n.id == name for a in node.args for n in ast.walk(a)):
            return True
        if isinstance(node, ast.FunctionDef) and any(_is_pytest_call(n, "skip") for n in ast.walk(node)) and any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name for n in ast.walk(node)):
            return True
    # a module-level constant computed from it, used as a skipif condition
    consts = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)
              and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
                      for n in ast.walk(node.value))}
    return any(_is_pytest_call(node, "skipif") and any(isinstance(n, ast.Name) and n.id in consts
                                                         for a in node.args for n in ast.walk(a))
               for node in ast.walk(tree))


def test_no_test_file_hides_a_failure_behind_a_skip():
    found = [p for path in _sources() for p in problems(ast.parse(path.read_text()), str(path.relative_to(TESTS)))]
    assert not found, "skips that can hide a failure:\n" + "\n".join(found)


BAD_EXAMPLES: List[Tuple[str, str]] = [
    ("pytest.importorskip('harness.cli')\n", "importorskip('harness.cli')"),
    ("pytest.importorskip('models.lm')\n", "importorskip('models.lm')"),
    ("def t(p):\n    if not p.exists():\n        pytest.skip(f'{p} not written yet')\n", "names no external"),
    ("try:\n    import kernels\nexcept Exception:\n    pytest.skip('needs CUDA')\n", "inside an except"),
    ("def ok(name):\n    try:\n        get(name)\n    except Exception:\n        return False\n    return True\n\n"
     "@pytest.mark.skipif(not ok('speed'), reason='needs CUDA')\ndef test_x():\n    pass\n", "swallows"),
    ("def ok(name):\n    try:\n        get(name)\n    except Exception as e:\n        return str(e)\n\nWHY = ok('a')\n"
     "@pytest.mark.skipif(WHY is not None, reason='needs CUDA')\ndef test_x():\n    pass\n", "swallows"),
    ("def test_x():\n    if not ok('auto'):\n        pytest.skip('backend not available yet')\n", "names no external"),
]


@pytest.mark.parametrize("source, needle", BAD_EXAMPLES)
def test_each_forbidden_pattern_is_found(source, needle):
    found = list(problems(ast.parse(source), "example.py"))
    assert any(needle in p for p in found), found


@pytest.mark.parametrize("source", [
    "pytest.importorskip('ray')\n",
    "@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')\ndef test_x():\n    pass\n",
    "if os.environ.get('TRITON_INTERPRET'):\n    pytest.skip('interpreter is on in this process')\n",
])
def test_skips_for_external_conditions_are_allowed(source):
    assert list(problems(ast.parse(source), "example.py")) == []
