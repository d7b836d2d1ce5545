"""The tidy results store: append-only ``rows.jsonl`` per run, tables derived from it, ``load()``.

One JSON object per line, one line per observation; a cell's rows are appended in one write and
fsync'ed when the cell ends, so killing a run loses at most the cell in flight.  A torn last line
(killed mid-write) is dropped on read, and :meth:`RowStore.repair` also drops the rows of the cell
it belonged to before a resumed run appends.  ``results.parquet`` / ``results.csv`` are rebuilt
from the JSONL at the end of a run; :func:`load` reads any mix of run directories.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import pandas as pd

from harness.dotted import flatten, merge

RUN_COLUMNS = ("run_id", "suite", "cell_id", "commit", "dirty", "kind")
ROW_COLUMNS = ("status", "metric", "value", "unit", "repeat", "message")
CANONICAL_COLUMNS = ("model", "mixer", "backend", "task", "seq_len", "batch", "d_model", "d_state",
                     "n_layers", "dtype", "device", "seed")
ROWS_FILE, PARQUET_FILE, CSV_FILE, META_FILE, SUITE_FILE = (
    "rows.jsonl", "results.parquet", "results.csv", "meta.json", "suite.yaml")
# a cell's failure ends it, so the status of a cell is that of its non-ok row, if any
_STATUS_RANK = {"ok": 0, "skipped": 1, "diverged": 2, "timeout": 3, "oom": 4, "error": 5}
_CELL_ID = re.compile(r'"cell_id":\s*"([0-9a-f]+)"')

PathLike = Union[str, Path]


# --------------------------------------------------------------------------- columns

def canonical_columns(params: Dict[str, Any]) -> Dict[str, Any]:
    """DESIGN's short columns (model, mixer, backend, task, seq_len, ...) from nested or flat params.

    ``model`` is "arch/mixer" for task cells ("mamba/s6"; just the mixer when arch is none) and the
    ``impl`` for benchmark cells ("s6.triton", whose mixer/backend are "s6"/"triton").
    """
    def first(*keys: str) -> Any:
        for key in keys:
            node: Any = params
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                return node
        return None

    out: Dict[str, Any] = {}
    impl = first("impl")
    mixer, arch = first("model.mixer", "mixer"), first("model.arch", "arch")
    if impl is not None:
        out["model"] = impl
        head, _, tail = str(impl).partition(".")
        out["mixer"] = mixer or head
        out["backend"] = first("model.backend", "backend") or (tail or None)
    elif mixer is not None:
        out["model"] = f"{arch}/{mixer}" if arch and arch != "none" else mixer
        out["mixer"] = mixer
        out["backend"] = first("model.backend", "backend")
    out["task"] = first("task.name", "task")
    out["seq_len"] = first("seq_len", "task.seq_len")
    out["batch"] = first("batch", "train.batch")
    for key in ("d_model", "d_state", "n_layers"):
        out[key] = first(key, f"model.{key}")
    out["dtype"] = first("dtype", "train.dtype", "model.dtype")
    out["device"] = first("device")
    out["seed"] = first("seed")
    return {k: v for k, v in out.items() if v is not None}


def param_columns(params: Dict[str, Any], resolved: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One column per parameter (dotted names) plus the canonical short ones.

    ``resolved`` (the kind's validated config, defaults filled in) adds the values the suite left
    to defaults, so every row says e.g. which ``d_state`` it ran with; values written in the suite win.
    """
    full = merge(copy.deepcopy(resolved), params) if resolved else params
    cols = flatten(full)
    for key, value in canonical_columns(full).items():
        cols.setdefault(key, value)
    return cols


def tidy_row(row: Dict[str, Any], run: Dict[str, Any], params_cols: Dict[str, Any]) -> Dict[str, Any]:
    """cell_id first (so a torn line still names its cell), run columns, row columns, params, extras."""
    out: Dict[str, Any] = {"cell_id": run["cell_id"]}
    for key in RUN_COLUMNS:
        out[key] = run[key]
    for key in ROW_COLUMNS:
        out[key] = row.get(key)
    for key, value in params_cols.items():
        if key not in out:
            out[key] = value
    for key, value in row.items():  # the row's own columns (step, eval_seq_len, host, wall_s ...)
        if key not in RUN_COLUMNS:
            out[key] = value
    return out


def cell_status(rows: Iterable[Dict[str, Any]]) -> str:
    """The worst status of a cell's rows; a status this module does not know ranks as an error."""
    status = "ok"
    for row in rows:
        s = row.get("status") or "ok"
        if _STATUS_RANK.get(s, 5) > _STATUS_RANK.get(status, 5):
            status = s
    return status


# --------------------------------------------------------------------------- the JSONL store

class RowStore:
    """Append-only ``rows.jsonl`` of one run directory."""

    def __init__(self, run_dir: PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ROWS_FILE

    def append(self, rows: Sequence[Dict[str, Any]]) -> None:
        """Write all of a cell's rows in one write, then flush + fsync."""
        data = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> List[Dict[str, Any]]:
        return read_rows(self.path)

    def repair(self) -> Optional[str]:
        """Drop a torn last line and the rows of the cell it belonged to; returns that cell id."""
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        torn = data[cut:].decode("utf-8", "replace")
        m = _CELL_ID.search(torn)
        cell_id = m.group(1) if m else None
        kept = data[:cut].decode("utf-8").splitlines(keepends=True)
        if cell_id:
            while kept and _CELL_ID.search(kept[-1]) and _CELL_ID.search(kept[-1]).group(1) == cell_id:
                kept.pop()
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)
        return cell_id or "?"

    def finished(self) -> Dict[str, str]:
        """cell_id -> status of every cell with rows, in the order they finished."""
        by_cell: Dict[str, List[Dict[str, Any]]] = {}
        for row in self.read():
            by_cell.setdefault(row.get("cell_id"), []).append(row)
        return {cid: cell_status(rows) for cid, rows in by_cell.items()}


def read_rows(path: PathLike) -> List[Dict[str, Any]]:
    """Rows of a ``rows.jsonl``; a torn (unparseable) last line is ignored, a torn middle one is an error."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON row (the file is damaged)") from None
    return rows


# --------------------------------------------------------------------------- tables

def read_frame(path: PathLike) -> pd.DataFrame:
    """``rows.jsonl`` -> DataFrame; pyarrow's JSON reader when the rows allow it (many times faster
    on large runs), else row by row.  Both give the same frame (list cells as Python lists)."""
    path = Path(path)
    if not path.exists():
        return rows_to_frame([])
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]  # a torn last line is ignored, as in read_rows
    if len(data) > 1 << 20:
        try:
            import pyarrow as pa
            import pyarrow.json as pj

            table = pj.read_json(pa.BufferReader(data))
        except Exception:  # noqa: BLE001 - mixed types in a column etc.: the exact reader below
            pass
        else:
            frame = table.to_pandas()
            for name, field in zip(table.column_names, table.schema):
                if pa.types.is_list(field.type) or pa.types.is_struct(field.type):
                    frame[name] = table.column(name).to_pylist()
            return _ordered(frame)
    return rows_to_frame(read_rows(path))


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    for col in list(RUN_COLUMNS) + list(ROW_COLUMNS):
        if col not in frame.columns:
            frame[col] = float("nan")   # as the exact reader's from_records leaves a column no row has
    lead = list(RUN_COLUMNS) + list(ROW_COLUMNS)
    frame = frame[lead + [c for c in frame.columns if c not in lead]]
    if len(frame) and frame["value"].dtype != "float64":
        numeric = pd.to_numeric(frame["value"], errors="coerce")
        if numeric.notna().sum() == frame["value"].notna().sum():
            frame["value"] = numeric.astype("float64")
    return frame


def rows_to_frame(rows: Sequence[Dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the tidy columns first, whatever the rows hold."""
    cols: List[str] = list(RUN_COLUMNS) + list(ROW_COLUMNS)
    seen = set(cols)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                cols.append(key)
    frame = pd.DataFrame.from_records(list(rows), columns=cols)
    if len(frame):
        numeric = pd.to_numeric(frame["value"], errors="coerce")
        if numeric.notna().sum() == frame["value"].notna().sum():
            frame["value"] = numeric.astype("float64")
    return frame


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns pyarrow cannot store as they are (mixed types, lists of mixed types) become JSON text."""
    import pyarrow as pa

    out = frame.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        try:
            pa.array(out[col].tolist(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            out[col] = [None if v is None or (isinstance(v, float) and v != v)
                        else (v if isinstance(v, str) else json.dumps(v, default=str)) for v in out[col]]
    return out


def write_tables(run_dir: PathLike) -> pd.DataFrame:
    """Rebuild ``results.parquet`` and ``results.csv`` from ``rows.jsonl``; returns the frame."""
    run_dir = Path(run_dir)
    frame = read_frame(run_dir / ROWS_FILE)
    _parquet_safe(frame).to_parquet(run_dir / PARQUET_FILE, index=False)
    frame.to_csv(run_dir / CSV_FILE, index=False)
    return frame


def _run_sources(path: Path) -> List[Path]:
    if path.is_file():
        return [path]
    if (path / ROWS_FILE).exists():
        return [path / ROWS_FILE]
    if (path / PARQUET_FILE).exists():
        return [path / PARQUET_FILE]
    if path.is_dir():
        found = sorted({p.parent for p in path.rglob(ROWS_FILE)} | {p.parent for p in path.rglob(PARQUET_FILE)})
        return [d / ROWS_FILE if (d / ROWS_FILE).exists() else d / PARQUET_FILE for d in found]
    raise FileNotFoundError(f"{path}: no such run directory or rows file")


def load(paths: Union[PathLike, Iterable[PathLike]]) -> pd.DataFrame:
    """Tidy rows of any mix of run dirs, dirs holding run dirs, rows.jsonl / parquet / csv files.

    ``run_id`` tells the runs apart; each run is read once even if named twice.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sources: List[Path] = []
    for p in paths:
        for src in _run_sources(Path(p)):
            if src.resolve() not in {s.resolve() for s in sources}:
                sources.append(src)
    frames = []
    for src in sources:
        if src.suffix == ".parquet":
            frames.append(pd.read_parquet(src))
        elif src.suffix == ".csv":
            frames.append(pd.read_csv(src))
        else:
            frames.append(read_frame(src))
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return rows_to_frame([])
    frame = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
    lead = [c for c in list(RUN_COLUMNS) + list(ROW_COLUMNS) if c in frame.columns]
    return frame[lead + [c for c in frame.columns if c not in lead]]


def load_meta(run_dir: PathLike) -> Dict[str, Any]:
    """The run's ``meta.json`` (machine, versions, commit, command, times)."""
    path = Path(run_dir)
    path = path if path.name == META_FILE else path / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no meta.json (is {path.parent} a run directory?)")
    return json.loads(path.read_text(encoding="utf-8"))
