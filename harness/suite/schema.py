"""The top level of a suite file (name, kind, defaults, sweep, zip, include/exclude, seeds, expect, tune,
gpus_per_cell, jobs, mps).

Only the suite's *shape* is checked here; each expanded cell's parameters are checked by its
kind's ``config_model`` in :mod:`harness.suite.expand`.  :func:`load_suites` reads a file (several
``---`` documents allowed), applies suite-level ``--set`` overrides, validates, and raises one
:class:`~harness.errors.SuiteError` listing every problem with its file:line.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

from pydantic import Field, StrictBool, ValidationError, ValidationInfo, field_validator, model_validator
from typing_extensions import Annotated

from harness.config_types import NonNegativeInt, PositiveInt, StrictModel, registered
from harness.errors import Issue, SuiteError, issues_from_validation_error
from harness.kinds import KINDS
from harness.suite.yaml_loader import Document, YAMLLoadError, load_file

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DOTTED_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")

Axis = Annotated[List[Any], Field(min_length=1)]


class Expect(StrictModel):
    """A reference value shown beside the measured one in reports (e.g. a paper's table entry).

    ``op``: ``==`` (within ``tolerance``), ``>=`` or ``<=`` (a bound); ``tolerance`` is absolute
    (0.02) or relative ("10%"); ``than`` makes ``value`` a margin over other rows ("15 points above every
    LTI row"), ``per_seed`` judges each seed apart; how the report judges them is in
    :mod:`harness.analysis.report.expect`.
    """

    where: Dict[str, Any] = Field(default_factory=dict)
    """dotted key -> value: the cells this entry is about (all of them must match)"""
    metric: str
    """the metric judged (e.g. val_accuracy, time_ms)"""
    value: float
    """the reference value (a fraction for accuracies: 0.998, not 99.8)"""
    source: str
    """where the value comes from (paper, table, facts sheet): shown in the report"""
    op: Literal["==", ">=", "<="] = "=="
    """== (within tolerance), >= or <= (a bound the measured value must meet)"""
    tolerance: Optional[Union[float, str]] = None
    """for ==: absolute (0.02) or relative ('10%')"""
    unit: Optional[str] = None
    """the unit the value is in, if not the metric's own"""
    than: Optional[Annotated[Dict[str, Any], Field(min_length=1)]] = None
    """value is a margin over the rows matching where updated with these keys (list values: any of them)"""
    per_seed: StrictBool = False
    """judge every seed on its own; the entry matches only when every seed does"""

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, tol: Optional[Union[float, str]]) -> Optional[Union[float, str]]:
        if isinstance(tol, str) and not re.match(r"^\s*\d+(\.\d+)?\s*%\s*$", tol):
            raise ValueError(f"tolerance must be a number >= 0 (absolute) or a percentage like '10%' (got {tol!r})")
        if isinstance(tol, (int, float)) and tol < 0:
            raise ValueError(f"tolerance must be >= 0 (got {tol})")
        return tol


class Tune(StrictModel):
    """Tuned comparisons (:mod:`harness.analysis.report.tuning`): per setting of the other axes, keep the
    ``over`` values whose last ``by`` (a validation metric) is best; ``mode`` max or min (default: from the
    metric, e.g. max for val_accuracy, min for val_loss)."""

    over: Annotated[List[str], Field(min_length=1)]
    """the swept axes to choose among, e.g. [train.lr, train.weight_decay]"""
    by: str
    """the validation metric that chooses (its last curve point), e.g. val_accuracy"""
    mode: Optional[Literal["max", "min"]] = None
    """max or min; default from the metric (max for accuracies, min for losses)"""

    @field_validator("by")
    @classmethod
    def _validation_metric(cls, by: str) -> str:
        if not (by.startswith("val_") or by.startswith("valid_") or by.endswith("_val")):
            raise ValueError(f"{by!r} is not a validation metric: choose on one the training loop evaluates on "
                             f"held-out data, e.g. val_accuracy or val_loss (choosing on the reported {by!r} "
                             "would overstate it)")
        return by


def _check_dotted(key: str) -> str:
    if not isinstance(key, str) or not DOTTED_KEY.match(key):
        raise ValueError(f"{key!r} is not a dotted key (write e.g. 'model.d_state')")
    return key


class SuiteSpec(StrictModel):
    """One suite document."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """the suite's name: run folders are results/<name>/<run id>; letters, digits, _ . -"""
    description: str = ""
    """one paragraph for the report's header: what the suite reproduces and why its settings"""
    kind: registered(KINDS)
    """what every cell does: task (train and evaluate), speed, memory or decode"""
    defaults: Dict[str, Any] = Field(default_factory=dict)
    """nested keys merged into every cell (the kind's keys below)"""
    sweep: Dict[str, Axis] = Field(default_factory=dict)
    """dotted key -> list of values; the cells are the grid product of all axes"""
    zip: List[Annotated[Dict[str, Axis], Field(min_length=1)]] = Field(default_factory=list)
    """groups of axes that move together (each group: dotted key -> list, all of one length)"""
    exclude: List[Annotated[Dict[str, Any], Field(min_length=1)]] = Field(default_factory=list)
    """cells to drop: each entry is dotted key -> value, matching cells that have all of them"""
    include: List[Dict[str, Any]] = Field(default_factory=list)
    """extra cells (dotted key -> value, over the defaults) added after the sweep"""
    seeds: Optional[Annotated[List[NonNegativeInt], Field(min_length=1)]] = None
    """seeds to repeat every cell with (task kind: model init; data use seed + 1000)"""
    repeats: Optional[PositiveInt] = None
    """timed repeats of every cell (bench kinds); sets the repeats key of each cell"""
    device: Optional[str] = None
    """cpu, cuda, cuda:N or auto (CUDA when available); --device wins over it"""
    expect: List[Expect] = Field(default_factory=list)
    """reference values shown beside the measured ones in reports (a paper's table entry), judged there"""
    tune: Optional[Tune] = None
    """tuned comparisons: per setting of the other axes, the over values with the best validation metric"""
    #: GPUs each non-timing GPU cell asks a Ray cluster for (0.25: four cells share a GPU).  Checked
    #: here, so a typo is a file:line error before anything runs; only ``--executor ray`` reads it
    #: (``RayExecutor.use_suite``) and ``--gpus-per-cell`` wins over it.  Not a cell parameter: it
    #: changes where cells run, not what they compute, so it leaves cell ids alone.
    gpus_per_cell: Optional[float] = None
    """GPUs each non-timing GPU cell asks a Ray cluster for (0.25: four cells per GPU); leaves cell ids alone"""
    #: Cells the local executor may run at once, one process each (``harness.run.process_executor``):
    #: small training cells leave a GPU mostly idle, so 8 of them take about the time of one.
    #: ``--jobs`` wins over it; like ``gpus_per_cell`` it leaves cell ids alone.
    jobs: Optional[PositiveInt] = None
    """cells the local executor runs at once, one process each; --jobs wins; leaves cell ids alone"""
    #: Run those cells under CUDA MPS (``harness.run.mps``), so the kernels of cells sharing a GPU overlap
    #: instead of taking turns (1.57x the training steps/s of 8 quick cells on an H200).  Only with
    #: ``jobs`` > 1 on the local executor; ``--mps`` / ``--no-mps`` win over it; like ``jobs``
    #: it leaves cell ids alone.  Strictly true or false: 1 or a quoted "true" is an error, not a guess.
    mps: Optional[StrictBool] = None
    """run side-by-side cells under CUDA MPS so their kernels overlap (with jobs > 1); strictly true or false"""

    @field_validator("sweep")
    @classmethod
    def _sweep_keys(cls, sweep: Dict[str, Any]) -> Dict[str, Any]:
        for key in sweep:
            _check_dotted(key)
        return sweep

    @field_validator("tune")
    @classmethod
    def _tune_axes(cls, tune: Optional[Tune], info: ValidationInfo) -> Optional[Tune]:
        """``tune.over`` names swept axes (checked after sweep and zip, which come first)."""
        if tune is None:
            return tune
        axes = list(info.data.get("sweep") or {}) + [k for g in info.data.get("zip") or [] for k in g]
        for key in tune.over:
            if key not in axes:
                close = difflib.get_close_matches(key, axes, n=1)
                hint = f" -- did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"over: {key!r} is not a sweep or zip axis{hint} "
                                 f"(axes: {', '.join(axes) or 'none'}); tune picks among swept values")
        return tune

    @field_validator("device")
    @classmethod
    def _device(cls, device: Optional[str]) -> Optional[str]:
        if device is not None and not DEVICE.match(device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto (got {device!r})")
        return device

    @field_validator("gpus_per_cell", mode="before")
    @classmethod
    def _gpus_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # pydantic would read true as 1.0
            raise ValueError(f"must be a number of GPUs such as 0.25 or 1 (got {value!r})")
        return value

    @field_validator("gpus_per_cell")
    @classmethod
    def _gpus_per_cell(cls, value: Optional[float]) -> Optional[float]:
        """The values Ray accepts: a fraction in (0, 1) or a whole number of GPUs."""
        if value is None:
            return value
        if not value > 0:
            raise ValueError(f"must be > 0 (got {value:g}); e.g. 1, or 0.25 for four cells per GPU")
        if value > 1 and not value.is_integer():
            raise ValueError(f"must be a fraction below 1 (cells share a GPU) or a whole number of GPUs, "
                             f"e.g. 0.25, 0.5, 1 or 2 (got {value:g})")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: Optional[List[int]]) -> Optional[List[int]]:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat a value: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _axes_disjoint(self) -> "SuiteSpec":
        owner: Dict[str, str] = {k: "sweep" for k in self.sweep}
        for i, group in enumerate(self.zip):
            lengths = {k: len(v) for k, v in group.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip[{i}]: the lists of one zip group must have equal lengths "
                                 f"(got {', '.join(f'{k}: {n}' for k, n in lengths.items())})")
            for key in group:
                _check_dotted(key)
                if key in owner:
                    raise ValueError(f"zip[{i}]: {key!r} is already an axis in {owner[key]}")
                owner[key] = f"zip[{i}]"
        if self.seeds is not None and "seed" in owner:
            raise ValueError(f"'seeds' and an axis 'seed' in {owner['seed']} both set the seed; keep one")
        return self


SUITE_LEVEL_KEYS = ("name", "description", "device", "repeats", "seeds", "gpus_per_cell", "jobs", "mps")


@dataclass
class LoadedSuite:
    """A validated suite document and where it came from (for line numbers in later errors)."""

    spec: SuiteSpec
    doc: Document
    index: int  # position of the document in its file
    overridden: bool = False  # a --set changed the suite itself (device, repeats, sweep.<axis>, ...)

    @property
    def source(self) -> str:
        return self.doc.source


def apply_suite_overrides(data: Dict[str, Any], overrides: Sequence[Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    """Apply ``--set`` keys that address the suite itself (``device``, ``repeats``, ``sweep.<axis>`` ...);
    return the rest, which address cell parameters."""
    rest = []
    for key, value in overrides:
        if key in SUITE_LEVEL_KEYS:
            data[key] = value
        elif key.startswith("sweep."):
            axis = key[len("sweep."):]
            data.setdefault("sweep", {})
            if isinstance(data["sweep"], dict):
                data["sweep"][axis] = value if isinstance(value, list) else [value]
        else:
            rest.append((key, value))
    return rest


def validate_document(doc: Document, index: int = 0) -> LoadedSuite:
    """Check one document's top level; raises SuiteError with file:line issues."""
    where = f"{doc.source}" + (f" (document {index + 1})" if index else "")
    if not isinstance(doc.data, dict):
        raise SuiteError([Issue(doc.source, doc.start_line,
                                f"a suite is a mapping with keys name, kind, defaults, sweep, ... "
                                f"(got {type(doc.data).__name__})")])
    try:
        spec = SuiteSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise SuiteError(issues_from_validation_error(exc, SuiteSpec, doc.source, doc.line_of),
                         headline=f"{where} is not a valid suite:") from None
    return LoadedSuite(spec, doc, index)


def read_suites(path: Union[str, Path], overrides: Sequence[Tuple[str, Any]] = ()
                ) -> Tuple[List[LoadedSuite], List[Issue]]:
    """The valid suite documents of ``path`` and the problems of the others (to report every problem
    of a file at once); suite-level ``--set`` overrides are applied before validation."""
    try:
        docs = load_file(path)
    except YAMLLoadError as exc:
        return [], [Issue(exc.source, exc.line or 0, exc.message)]
    if not docs:
        return [], [Issue(str(path), 0, "the file holds no suite (it is empty)")]
    suites: List[LoadedSuite] = []
    issues: List[Issue] = []
    names: Dict[str, int] = {}
    for i, doc in enumerate(docs):
        overridden = False
        if isinstance(doc.data, dict):
            overridden = len(apply_suite_overrides(doc.data, overrides)) < len(overrides)
        try:
            loaded = validate_document(doc, i)
        except SuiteError as exc:
            issues.extend(exc.issues)
            continue
        loaded.overridden = overridden
        name, line = loaded.spec.name, doc.line_of(("name",))
        if name in names:
            issues.append(Issue(doc.source, line, f"suite name {name!r} is used by two documents (lines "
                                f"{names[name]} and {line}); each document needs its own name"))
            continue
        names[name] = line
        suites.append(loaded)
    return suites, issues


def load_suites(path: Union[str, Path], overrides: Sequence[Tuple[str, Any]] = ()) -> List[LoadedSuite]:
    """Every suite document in ``path``, validated (top level only); raises SuiteError on any problem."""
    suites, issues = read_suites(path, overrides)
    if issues:
        raise SuiteError(issues, headline=f"{path} is not a valid suite file:")
    return suites
