"""Building blocks shared by every config schema (suite top level, model, task, train, bench).

Every section is a :class:`StrictModel` (unknown keys are errors), and every field that names a
registered thing uses :func:`registered`, so the suite validator can report "unknown mixer 's7' —
did you mean 's6'?" the same way everywhere.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from harness.registry import Registry, UnknownNameError


class StrictModel(BaseModel):
    """A config section: unknown keys and wrong types are errors; no silent coercion of str->int."""

    # use_attribute_docstrings: a string under a field is its help text (``ssmbench keys``, suites/KEYS.md)
    model_config = ConfigDict(extra="forbid", strict=False, validate_default=True,
                              protected_namespaces=(), use_attribute_docstrings=True)


def registered(registry: Registry) -> Any:
    """A str field whose value must be a name in ``registry`` (checked at validation time)."""

    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(str(UnknownNameError(registry.what, name, registry.names())))
        return name

    return Annotated[str, AfterValidator(check)]


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
