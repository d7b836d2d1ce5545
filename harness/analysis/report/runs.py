"""Load run directories (rows + meta.json + suite.yaml) for reports and diffs.

A *run directory* is what ``ssmbench run`` writes: ``rows.jsonl`` (or ``results.parquet``),
``meta.json`` and ``suite.yaml``.  A path may also be a directory of runs (``results/smoke-task/``:
its newest run) or a results root (``results/baselines/``: the newest run of each suite), so
``ssmbench diff results/baselines results`` compares every suite of a multi-document run.  Bad paths raise :class:`RunDirError`, a one-line message
the CLI prints before exiting with code 2.

Rows come from ``harness.store.results.load`` (the harness core's reader of the tidy schema); this module
adds the run's metadata and the helpers reports and diffs share (parameter columns, row keys,
cell status).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import yaml

PathLike = Union[str, Path]

#: Columns every tidy row has (DESIGN.md "Contract: results"); everything else is a parameter or a
#: row-level extra such as ``step`` or ``eval_seq_len``.
CORE_COLUMNS = ("run_id", "suite", "cell_id", "commit", "dirty", "kind", "status", "metric", "value",
                "unit", "repeat", "message")
#: Columns the runner adds that are neither parameters nor observations.
BOOKKEEPING_COLUMNS = ("host", "device_name", "wall_s")


class RunDirError(ValueError):
    """A path that is not a readable run directory (the message says which and why)."""


@dataclass
class Run:
    """One run directory: its rows (tidy DataFrame), ``meta.json`` and resolved ``suite.yaml``."""

    path: Path
    rows: pd.DataFrame
    meta: Dict[str, Any] = field(default_factory=dict)
    suite: Dict[str, Any] = field(default_factory=dict)
    overrides: Dict[str, Any] = field(default_factory=dict)  # ``--set`` keys the run used over the suite
    _planned: Dict[str, Dict[str, Any]] = field(default_factory=dict, repr=False)
    source: str = ""               # the file the rows were read from (rows.jsonl or results.parquet)
    notes: List[str] = field(default_factory=list)  # what a reader must know about the data (truncation)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def suite_name(self) -> str:
        name = self.meta.get("suite") or self.suite.get("name")
        if not name and "suite" in self.rows and len(self.rows):
            name = self.rows["suite"].iloc[0]
        return str(name or self.path.parent.name)

    @property
    def planned_cells(self) -> Dict[str, Dict[str, Any]]:
        """cell_id -> params of the cells the run planned (suite.yaml's ``cells``); {} when not recorded."""
        return dict(self._planned)

    @property
    def missing_cells(self) -> List[str]:
        """Planned cell ids without a single row: the run did less than it planned."""
        have = set(self.rows["cell_id"].astype(str)) if len(self.rows) else set()
        return [cid for cid in self._planned if cid not in have]

    def completeness(self) -> Optional[str]:
        """One line when planned cells have no rows ("2 of 4 planned cells have rows ..."), else None."""
        missing = self.missing_cells
        if not missing:
            return None
        planned = len(self._planned)
        return (f"{self.run_id}: {planned - len(missing)} of {planned} planned cells have rows in {self.source} "
                f"(no rows: {describe_cells([self._planned[c] for c in missing], missing)})")

    @property
    def kind(self) -> str:
        kind = self.meta.get("kind") or self.suite.get("kind")
        if not kind and "kind" in self.rows and len(self.rows):
            kind = self.rows["kind"].iloc[0]
        return str(kind or "unknown")


def _is_run_dir(path: Path) -> bool:
    return (path / "rows.jsonl").is_file() or (path / "results.parquet").is_file()


def resolve_run_dirs(path: PathLike) -> List[Path]:
    """The run directories a path names.

    * a run directory (or its ``rows.jsonl``) -> itself;
    * a directory of runs of one suite (``results/smoke-task/``) -> its newest run;
    * a results root (``results/``, ``results/baselines/``) -> the newest run of each suite in it.
    """
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: no such file or directory")
    if p.is_file() and p.name == "rows.jsonl":
        return [p.parent]
    if not p.is_dir():
        raise RunDirError(f"{p}: not a run directory (expected a directory with rows.jsonl)")
    if _is_run_dir(p):
        return [p]
    newest = _newest_run(p)
    if newest is not None:
        return [newest]
    per_suite = [n for n in (_newest_run(c) for c in sorted(p.iterdir()) if c.is_dir()) if n is not None]
    if per_suite:
        return per_suite
    raise RunDirError(f"{p}: not a run directory (no rows.jsonl or results.parquet in it or in its "
                      "subdirectories); pass results/<suite>/<run id>/")


def _newest_run(parent: Path) -> Optional[Path]:
    """Run ids start with a UTC timestamp, so the newest run sorts last."""
    runs = sorted(c for c in parent.iterdir() if c.is_dir() and _is_run_dir(c))
    return runs[-1] if runs else None


def resolve_run_dir(path: PathLike) -> Path:
    """The single run directory ``path`` names (see :func:`resolve_run_dirs`)."""
    dirs = resolve_run_dirs(path)
    if len(dirs) > 1:
        raise RunDirError(f"{path}: holds runs of {len(dirs)} suites; name one run directory")
    return dirs[0]


def _load_rows(run_dir: Path) -> Tuple[pd.DataFrame, str, List[str]]:
    """(rows, the file they came from, notes).

    ``rows.jsonl`` is the runner's append log and ``results.parquet`` the table it rebuilds from it at
    the end; when both exist and disagree (a rows.jsonl cut short after the run, a table left from
    before a ``--resume``), the one holding more rows is used and a note says so, and a torn last
    line of rows.jsonl (which the reader drops) is noted too.
    """
    from harness.store.results import PARQUET_FILE, ROWS_FILE
    from harness.store.results import load as results_load  # the one reader of the tidy schema

    candidates = [run_dir / name for name in (ROWS_FILE, PARQUET_FILE) if (run_dir / name).is_file()]
    frames: Dict[str, pd.DataFrame] = {}
    for path in candidates:
        try:
            frames[path.name] = results_load([path])
        except Exception as exc:  # noqa: BLE001 - a damaged file: say which, no traceback
            if len(candidates) == 1:
                raise RunDirError(f"{path}: cannot load rows: {exc}") from None
            frames[path.name] = None
    notes: List[str] = []
    jsonl = run_dir / ROWS_FILE
    if jsonl.is_file() and jsonl.stat().st_size and not jsonl.read_bytes().endswith(b"\n"):
        notes.append(f"{jsonl}: the last line is torn (cut mid-row) and was ignored")
    usable = {name: f for name, f in frames.items() if f is not None}
    if not usable:
        raise RunDirError(f"{run_dir}: cannot load rows from {' or '.join(frames)}")
    for name, f in frames.items():
        if f is None:
            notes.append(f"{run_dir / name}: unreadable, ignored")
    chosen = max(usable, key=lambda name: (len(usable[name]), name == ROWS_FILE))
    if len(usable) == 2:
        other = next(n for n in usable if n != chosen)
        if len(usable[other]) != len(usable[chosen]):
            notes.append(f"{run_dir}: {other} has {len(usable[other])} rows but {chosen} has "
                         f"{len(usable[chosen])}; read {chosen} ({other} looks "
                         f"{'truncated' if len(usable[other]) < len(usable[chosen]) else 'stale'})")
    return usable[chosen], chosen, notes


def _planned_cells(plan_doc: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    cells = plan_doc.get("cells")
    out: Dict[str, Dict[str, Any]] = {}
    if isinstance(cells, list):
        for c in cells:
            if isinstance(c, dict) and c.get("cell_id"):
                params = c.get("params")
                out[str(c["cell_id"])] = params if isinstance(params, dict) else {}
    return out


def describe_cells(params: Sequence[Dict[str, Any]], ids: Sequence[str], limit: int = 8) -> str:
    """Short labels of cells from their params: the flattened keys whose values differ between them
    (the ids when they do not differ or there is one cell)."""
    from harness.dotted import flatten

    flat = [flatten(p) if p else {} for p in params]
    keys = sorted({k for f in flat for k in f})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    labels = []
    for cid, f in zip(ids, flat):
        parts = [f"{k}={f[k]}" for k in varying if k in f]
        labels.append(", ".join(parts) if parts else cid)
    more = len(labels) - limit
    return "; ".join(labels[:limit]) + (f"; ... {more} more" if more > 0 else "")


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable meta.json ({exc})") from None
    return data if isinstance(data, dict) else {}


def _read_suite(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(the suite as written, the run's ``--set`` overrides, its planned cells) from a run's suite.yaml."""
    if not path.is_file():
        return {}, {}, {}
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise RunDirError(f"{path}: unreadable suite.yaml ({str(exc).splitlines()[0]})") from None
    doc = docs[0] if docs and isinstance(docs[0], dict) else {}
    # the runner writes {suite: <the suite as written>, source, overrides, filters, cells: [...]}
    if isinstance(doc.get("suite"), dict) and ("cells" in doc or "source" in doc):
        overrides = doc.get("overrides")
        return doc["suite"], (overrides if isinstance(overrides, dict) else {}), _planned_cells(doc)
    return doc, {}, {}


def normalise_rows(df: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """Make sure the core columns exist with usable dtypes (old or hand-written runs may lack some)."""
    df = df.copy()
    defaults = {"run_id": run_id, "suite": "", "cell_id": "", "commit": "", "dirty": False, "kind": "",
                "status": "ok", "metric": "", "value": float("nan"), "unit": "", "repeat": 0,
                "message": None}
    for col, default in defaults.items():
        if col not in df.columns:
            df[col] = default
    df["run_id"] = df["run_id"].fillna(run_id)
    df["status"] = df["status"].fillna("ok").astype(str)
    df["unit"] = df["unit"].fillna("").astype(str)
    df["metric"] = df["metric"].fillna("").astype(str)
    df["cell_id"] = df["cell_id"].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["repeat"] = pd.to_numeric(df["repeat"], errors="coerce").fillna(0).astype(int)
    return df


def load_run(path: PathLike) -> Run:
    """Load one run directory (or the newest run of the one suite inside ``path``)."""
    run_dir = resolve_run_dir(path)
    meta = _read_json(run_dir / "meta.json")
    suite, overrides, planned = _read_suite(run_dir / "suite.yaml")
    rows, source, notes = _load_rows(run_dir)
    run_id = str(meta.get("run_id") or run_dir.name)
    run = Run(path=run_dir, rows=normalise_rows(rows, run_id), meta=meta, suite=suite, overrides=overrides,
              _planned=planned, source=source, notes=notes)
    incomplete = run.completeness()
    if incomplete:
        run.notes.append(incomplete)
    return run


def load_runs(paths: Sequence[PathLike]) -> List[Run]:
    """Every run the paths name (see :func:`resolve_run_dirs`), each once, in order."""
    if not paths:
        raise RunDirError("no run directory given")
    dirs: List[Path] = []
    for p in paths:
        for d in resolve_run_dirs(p):
            if d.resolve() not in {x.resolve() for x in dirs}:
                dirs.append(d)
    return [load_run(d) for d in dirs]


def combined_rows(runs: Sequence[Run]) -> pd.DataFrame:
    frames = [r.rows for r in runs if len(r.rows)]
    if not frames:
        return normalise_rows(pd.DataFrame(), "")
    return pd.concat(frames, ignore_index=True, sort=False)


def param_columns(df: pd.DataFrame) -> List[str]:
    """Columns that describe the cell (parameters), not the observation.

    A parameter is constant within a cell; a column that varies inside one (cell, metric) group
    (``step``, ``eval_seq_len``, a context length) is a row-level extra instead, see
    :func:`row_key_columns`.  Short canonical duplicates (``mixer`` beside ``model.mixer``) are
    dropped so each axis appears once.
    """
    skip = set(CORE_COLUMNS) | set(BOOKKEEPING_COLUMNS) | set(row_key_columns(df))
    cols = [c for c in df.columns if c not in skip]
    dotted = [c for c in cols if "." in c]
    keep: List[str] = []
    for c in cols:
        if "." not in c:
            twin = [d for d in dotted if d.rsplit(".", 1)[-1] == c]
            if twin and any(_same_values(df[c], df[d]) for d in twin):
                continue
        keep.append(c)
    return keep


#: DESIGN.md's short canonical columns: copies of (or labels built from) the real parameters.
CANONICAL_COLUMNS = ("model", "mixer", "backend", "task", "seq_len", "batch", "d_model", "d_state",
                     "n_layers", "dtype", "device", "seed")


def varying_params(df: pd.DataFrame, exclude: Sequence[str] = ("seed",)) -> List[str]:
    """The parameters that tell this table's cells apart, each piece of information once.

    Candidates are taken dotted names first, then other flat parameters, then the canonical short
    columns; one is kept only if it splits the cells further than those kept before it, so
    ``model`` ("mamba/s6", a label of arch and mixer) or ``mixer`` beside ``impl`` drop out.
    """
    if not len(df) or "cell_id" not in df.columns:
        return []
    per_cell = df.drop_duplicates("cell_id")
    cols = [c for c in param_columns(df) if c not in exclude and c.rsplit(".", 1)[-1] not in exclude]
    ordered = ([c for c in cols if "." in c] + [c for c in cols if "." not in c and c not in CANONICAL_COLUMNS]
               + [c for c in cols if "." not in c and c in CANONICAL_COLUMNS])
    kept: List[str] = []
    groups = 1
    for c in ordered:
        try:
            text = per_cell[c].map(str)  # NaN -> "nan": missing is a value of its own here
        except TypeError:
            continue
        if text.nunique(dropna=False) < 2:
            continue
        joint = per_cell[kept].map(str).agg("\x1f".join, axis=1) + "\x1f" + text if kept else text
        n = joint.nunique()
        if n > groups:
            kept.append(c)
            groups = n
    return kept


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    return a.astype(str).equals(b.astype(str))


#: Row-level columns that distinguish observations of one metric inside a cell.
KNOWN_ROW_KEYS = ("step", "eval_seq_len", "context_len", "ctx_len", "context", "position", "token")


def row_key_columns(df: pd.DataFrame) -> List[str]:
    """Row-level extras present in ``df``: known names plus any column varying within a cell+metric."""
    keys = [c for c in KNOWN_ROW_KEYS if c in df.columns and df[c].notna().any()]
    if not len(df) or "cell_id" not in df.columns:
        return keys
    fixed = set(CORE_COLUMNS) | set(BOOKKEEPING_COLUMNS) | set(keys)
    groups = df.groupby(["run_id", "cell_id", "metric", "repeat"], dropna=False, sort=False)
    for col in df.columns:
        if col in fixed:
            continue
        try:
            varies = (groups[col].nunique(dropna=True) > 1).any()
        except TypeError:  # unhashable values (lists): never a row key
            continue
        if varies:
            keys.append(col)
    return keys


def cell_status(df: pd.DataFrame) -> pd.Series:
    """cell_id -> the cell's status: the first non-ok status among its rows, else ``ok``."""
    if not len(df):
        return pd.Series(dtype=str)

    def pick(s: pd.Series) -> str:
        bad = [x for x in s if x != "ok"]
        return bad[0] if bad else "ok"

    return df.groupby("cell_id", sort=False)["status"].agg(pick)


def _first(meta: Dict[str, Any], *paths: str) -> Any:
    for path in paths:
        node: Any = meta
        for part in path.split("."):
            if isinstance(node, list):
                node = node[0] if node else None
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, (dict, list)):
            return node
    return None


def meta_facts(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The machine and version facts of a ``meta.json``, whichever of its layouts it uses.

    Reads both the nested layout (``versions: {torch, ...}``, ``gpu: {name, driver}``,
    ``cpu: {model}``) and the flat one the runner writes (``torch``, ``gpu_name``, ``gpus: [..]``,
    ``cpu``), so reports and diffs work across harness versions.
    """
    return {
        "gpu": _first(meta, "gpu.name", "gpu_name", "gpus.name"),
        "driver": _first(meta, "gpu.driver", "driver", "gpus.driver"),
        "cpu": _first(meta, "cpu.model", "cpu"),
        "python": _first(meta, "versions.python", "python"),
        "torch": _first(meta, "versions.torch", "torch"),
        "triton": _first(meta, "versions.triton", "triton"),
        "cuda": _first(meta, "versions.cuda", "cuda"),
        "device": _first(meta, "device"),
        "started": _first(meta, "started", "start_time"),
        "ended": _first(meta, "ended", "end_time"),
        "load": _load_average(meta),
        "cpu_freq": _cpu_freq(meta),
    }


#: meta.json keys (harness.store.meta.machine_load) that meta_facts folds into "load" and "cpu_freq".
NOISE_KEYS = ("load_avg_1m", "load_avg_5m", "load_avg_15m", "load_avg", "cpu_freq_mhz", "cpu_freq_max_mhz")


def _load_average(meta: Dict[str, Any]) -> Optional[str]:
    """"1.52 0.8 0.41 (1/5/15 min)" from the runner's ``load_avg_1m/5m/15m`` (or a ``load_avg`` list)."""
    parts = [meta.get(f"load_avg_{m}") for m in ("1m", "5m", "15m")]
    if any(p is not None for p in parts):
        return " ".join("?" if p is None else _spell(p) for p in parts) + " (1/5/15 min)"
    return _noise(meta, ("load_avg", "loadavg", "load_average"))


def _cpu_freq(meta: Dict[str, Any]) -> Optional[str]:
    """"1800 MHz (max 3000)" from ``cpu_freq_mhz`` / ``cpu_freq_max_mhz``: a throttled CPU times slower."""
    now = _noise(meta, ("cpu_freq_mhz",))
    if now is None:
        return None
    top = meta.get("cpu_freq_max_mhz")
    return f"{now} MHz" + (f" (max {_spell(top)})" if top is not None else "")


def _noise(meta: Dict[str, Any], names: Sequence[str]) -> Optional[str]:
    """A machine-noise fact (load average, CPU frequency) as text, wherever meta.json keeps it: at the
    top level or under ``noise``/``machine``/``cpu``; lists and {start, end} dicts are spelled out."""
    for holder in (meta, meta.get("noise"), meta.get("machine"), meta.get("cpu")):
        if not isinstance(holder, dict):
            continue
        for name in names:
            if holder.get(name) is not None:
                return _spell(holder[name])
    return None


def _spell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return " ".join(_spell(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {_spell(x)}" for k, x in v.items())
    return str(v)
