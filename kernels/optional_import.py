"""Importing one module of an installed package whose own ``__init__`` does not import.

mamba_ssm's ``__init__`` imports its model zoo, and through it ``transformers.generation`` names that
transformers 5 removed, so ``import mamba_ssm.ops.selective_scan_interface`` fails on a machine with a newer
transformers although the operator's module itself would load.  :func:`import_module_bare` imports such a module
under a bare package: the package's folder on ``__path__`` without running its ``__init__``.  Used by the peer
targets (harness/kinds/bench/peers) and ``kernels.bench``'s ``official`` scan.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from types import ModuleType


def import_module_bare(package: str, module: str) -> ModuleType:
    """``importlib.import_module(module)`` with ``package`` (its top-level package) set up without its ``__init__``.
    Raises ImportError when the package is absent (or blocked) or the module itself does not import."""
    if module == package:
        raise ImportError(f"{module} is the package itself")
    if package in sys.modules and sys.modules[package] is None:
        raise ImportError(f"{package} is blocked")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not a package on the path")
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]   # what the failed import left half-initialised
    bare = types.ModuleType(package)
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    sys.modules[package] = bare
    return importlib.import_module(module)


def import_attr(package: str, module: str, attr: str):
    """``module.attr``, importing it normally, else under a bare ``package`` (raising the first error if both fail)."""
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as first:   # ImportError, OSError of a bad .so, AttributeError of another version
        try:
            return getattr(import_module_bare(package, module), attr)
        except Exception:
            raise first from None
