"""Which columns a suite kind is plotted and tabulated against (shared by figures and tables).

A speed sweep is read against sequence length, one line per impl, one panel per pass; a memory
sweep against length or batch; decoding against context length; a task grid by its first axis
against the others.  Keeping these choices here means the summary tables and the figures of a
report always show the same breakdown.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import pandas as pd

from harness.analysis.report.runs import varying_params
from harness.analysis.report.tables import applicable, fmt_param

#: Per kind: the headline metrics (first present wins) -- what the summary table and main figure show.
HEADLINE_METRICS = {
    "speed": ("time_ms", "time_ms_median"),
    "memory": ("peak_mem_bytes", "peak_rss_bytes"),
    "decode": ("decode_ms_per_token", "decode_ms_per_token_median"),
}


def numeric(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def first_col(df: pd.DataFrame, names: Sequence[str]) -> Optional[str]:
    for n in names:
        if n in df.columns and df[n].notna().any():
            return n
    return None


def _varies(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and numeric(df.drop_duplicates("cell_id")[col]).nunique() > 1


def x_column(kind: str, df: pd.DataFrame) -> Optional[str]:
    """The numeric axis a kind's headline metric is read against, if the sweep varies one."""
    if kind == "speed":
        candidates = ("seq_len", "task.seq_len")
    elif kind == "memory":
        candidates = ("seq_len", "batch", "task.seq_len", "train.batch")
    elif kind == "decode":
        candidates = ("context_len", "ctx_len", "context", "prompt_len", "seq_len", "batch")
    else:
        return None
    return next((c for c in candidates if _varies(df, c)), None)


def facet_column(df: pd.DataFrame) -> Optional[str]:
    """One panel (or table) per value of this column: the pass (fwd / fwd+bwd), else the dtype."""
    for c in ("pass", "dtype"):
        if c in df.columns and df.drop_duplicates("cell_id")[c].nunique() > 1:
            return c
    return None


def series_columns(df: pd.DataFrame, x: Optional[str], facet: Optional[str]) -> List[str]:
    """Varying parameters other than the x axis, the facet and the seed: one line per combination."""
    same = {x, facet} | ({x.rsplit(".", 1)[-1]} if x else set())
    cols = [c for c in varying_params(df) if c not in same and c.rsplit(".", 1)[-1] not in same]
    primary = [c for c in ("impl", "model", "model.mixer", "mixer") if c in cols]
    return primary + [c for c in cols if c not in primary]


def series_label(df: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """"s6.chunked" for the impl alone, else "arch=mamba, mixer=s6" (model keys the row's model ignores, and
    keys the row has no value for -- an operator's model.arch beside model-level rows -- left out, unless that
    would leave nothing)."""
    if not cols:
        return pd.Series(["all"] * len(df), index=df.index, dtype=object)
    named = len(cols) > 1
    parts = {c: [(f"{c.rsplit('.', 1)[-1]}={fmt_param(v)}" if named or c not in ("impl", "model") else fmt_param(v))
                 for v in df[c]] for c in cols}
    keep = {c: (applicable(df, c) & df[c].map(lambda v: not _is_missing(v))).tolist() for c in cols}
    labels = []
    for i in range(len(df)):
        shown = [parts[c][i] for c in cols if keep[c][i]] or [parts[c][i] for c in cols]
        labels.append(", ".join(shown))
    return pd.Series(labels, index=df.index, dtype=object)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def train_len_column(df: pd.DataFrame) -> Optional[str]:
    return first_col(df, ("task.seq_len", "seq_len"))


def at_training_length(df: pd.DataFrame) -> pd.Series:
    """Mask of the rows measured at the training length: no ``eval_seq_len`` (learning-curve rows of the
    training length may lack one), or one equal to the cell's ``task.seq_len``."""
    if "eval_seq_len" not in df.columns:
        return pd.Series(True, index=df.index)
    mask = df["eval_seq_len"].isna()
    train_col = train_len_column(df)
    if train_col is not None:
        mask |= numeric(df["eval_seq_len"]) == numeric(df[train_col])
    return mask


def final_accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Final accuracy rows: at the training length when rows carry several evaluation lengths."""
    acc = df[(df["status"] == "ok") & (df["metric"] == "accuracy")].copy()
    if "step" in acc.columns:
        acc = acc[acc["step"].isna()]
    if "eval_seq_len" in acc.columns and acc["eval_seq_len"].nunique() > 1:
        train_col = train_len_column(acc)
        if train_col is not None:
            at = acc[numeric(acc["eval_seq_len"]) == numeric(acc[train_col])]
            if len(at):
                return at
    return acc
