"""Figures chosen by suite kind (seaborn on matplotlib's Agg backend; PNG, plus SVG for line plots).

speed  -- log-log time vs sequence length per impl, median with IQR bars over repeats, the roofline
          floor dashed (a ``roofline_floor_ms`` metric, else ``roofline_fraction x time_ms_median``), and
          OOM / timeout / skipped cells marked at the top of the axes where their point would be.
memory -- peak memory vs sequence length (or batch) per impl, failures marked the same way.
decode -- per-token latency vs context length per impl.
task   -- learning curves (mean and sd over seeds), accuracy vs evaluation length with the training
          length marked (induction-heads extrapolation), and an accuracy heatmap when the grid has
          two or more axes (e.g. arch x mixer, as in the Mamba paper's Table 1).
Each builder returns :class:`Figure` objects; a kind it does not recognise gets no figures.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from harness.analysis.report.axes import (HEADLINE_METRICS, facet_column, final_accuracy,  # noqa: E402
                                 first_col, numeric, series_columns, series_label, train_len_column,
                                 x_column)
from harness.analysis.report.runs import varying_params  # noqa: E402
from harness.analysis.report.tables import shown_param  # noqa: E402

_first_col, _label, _numeric, _series_cols, _facet_col, _train_len_col = (
    first_col, series_label, numeric, series_columns, facet_column, train_len_column)

FAILED_MARKERS = {"oom": ("X", "OOM"), "timeout": ("v", "timeout"), "error": ("x", "error"),
                  "skipped": ("1", "skipped"), "diverged": ("d", "diverged")}


@dataclass
class Figure:
    name: str            # file stem, e.g. "speed_time_ms"
    title: str
    caption: str
    png: bytes
    svg: Optional[bytes] = None


def _render(fig, name: str, title: str, caption: str, svg: bool = True) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    svg_bytes = None
    if svg:
        sbuf = io.BytesIO()
        fig.savefig(sbuf, format="svg", bbox_inches="tight")
        svg_bytes = sbuf.getvalue()
    plt.close(fig)
    return Figure(name, title, caption, buf.getvalue(), svg_bytes)


def _legend_outside(ax, *handles_labels, fontsize: int = 8) -> None:
    """The legend to the right of the axes, never on top of the data (the figure is saved with
    ``bbox_inches="tight"``, so it grows to hold it)."""
    ax.legend(*handles_labels, fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0, frameon=False)


def _plain_log_axes(ax, xs: Sequence[float]) -> None:
    """Log axes labelled with plain numbers (256, 0.5) instead of mathtext powers: readable and fast."""
    plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ticks = sorted({float(x) for x in xs if np.isfinite(x) and x > 0})
    if 0 < len(ticks) <= 12:
        ax.xaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def _mark_failures(ax, failed: pd.DataFrame, x: str, colors: Dict[str, tuple]) -> bool:
    """Put a marker per failed cell at its x, at the top of the axes; True if any was drawn."""
    if not len(failed):
        return False
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    drawn = set()
    for _, r in failed.drop_duplicates("cell_id").iterrows():
        xv = pd.to_numeric(pd.Series([r[x]]), errors="coerce").iloc[0]
        if not np.isfinite(xv) or xv <= 0:
            continue
        marker, text = FAILED_MARKERS.get(r["status"], ("x", r["status"]))
        ax.scatter([xv], [0.96], marker=marker, s=70, color=colors.get(r["_series"], "k"),
                   transform=trans, clip_on=False, zorder=5,
                   label=f"{text} (marked at top)" if text not in drawn else None)
        drawn.add(text)
    return bool(drawn)


def _line_figure(df: pd.DataFrame, metric_names: Sequence[str], x: str, *, name: str, title: str,
                 ylabel: str, scale: float = 1.0, roofline: bool = False, caption: str = "") -> Optional[Figure]:
    """Median with IQR error bars of ``metric`` vs ``x`` per series, log-log, one panel per facet."""
    metric = next((m for m in metric_names if (df["metric"] == m).any()), None)
    if metric is None or x not in df.columns:
        return None
    ok = df[(df["status"] == "ok") & (df["metric"] == metric)].copy()
    if "step" in ok.columns:
        ok = ok[ok["step"].isna()]
    ok["_x"] = _numeric(ok[x])
    ok["_y"] = _numeric(ok["value"]) * scale
    ok = ok[np.isfinite(ok["_x"]) & np.isfinite(ok["_y"])]
    if not len(ok) or ok["_x"].nunique() < 2:
        return None
    facet = _facet_col(df)
    series = _series_cols(df, x, facet)
    failed = df[df["status"].isin(list(FAILED_MARKERS))].copy()
    for frame in (ok, failed):
        frame["_series"] = _label(frame, series) if len(frame) else []
    labels = sorted(set(ok["_series"]) | set(failed["_series"] if len(failed) else []))
    palette = dict(zip(labels, sns.color_palette("tab10", max(len(labels), 1))))
    facets = sorted(df[facet].dropna().astype(str).unique()) if facet else [None]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(facets), figsize=(6.2 * len(facets), 4.4), squeeze=False, sharey=True)
    floor_drawn = False
    for ax, fv in zip(axes[0], facets):
        part = ok if fv is None else ok[ok[facet].astype(str) == fv]
        for label, g in part.groupby("_series", sort=True):
            stats = g.groupby("_x")["_y"].agg(
                med="median", lo=lambda v: np.percentile(v, 25), hi=lambda v: np.percentile(v, 75))
            ax.errorbar(stats.index, stats["med"], yerr=[stats["med"] - stats["lo"], stats["hi"] - stats["med"]],
                        marker="o", ms=4, capsize=3, lw=1.5, color=palette[label], label=label)
            if roofline:
                floor = _roofline(df, g["cell_id"].unique(), x, fv, facet)
                if floor is not None and len(floor):
                    ax.plot(floor.index, floor.values * scale, ls="--", lw=1, color=palette[label],
                            label="roofline floor (dashed)" if not floor_drawn else None)
                    floor_drawn = True
        fpart = failed if fv is None or not len(failed) else failed[failed[facet].astype(str) == fv]
        _mark_failures(ax, fpart, x, palette)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_axes(ax, ok["_x"].unique())
        ax.set_xlabel(x)
        ax.set_title(f"{facet} = {fv}" if fv is not None else "")
    axes[0][0].set_ylabel(ylabel)
    handles, lbls = [], []
    for ax in axes[0]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in lbls:
                handles.append(h)
                lbls.append(l)
    _legend_outside(axes[0][-1], handles, lbls)
    fig.suptitle(title)
    return _render(fig, name, title, caption or f"{metric}: median over repeats, bars = interquartile range.")


def _roofline(df: pd.DataFrame, cell_ids, x: str, fv, facet) -> Optional[pd.Series]:
    rows = df[(df["cell_id"].isin(cell_ids)) & (df["status"] == "ok")]
    direct = rows[rows["metric"].isin(["roofline_floor_ms", "roofline_ms"])]
    if len(direct):
        return direct.assign(_x=_numeric(direct[x])).groupby("_x")["value"].median().sort_index()
    frac = rows[rows["metric"] == "roofline_fraction"].set_index("cell_id")["value"]
    med = rows[rows["metric"] == "time_ms_median"].set_index("cell_id")["value"]
    both = pd.concat([frac.rename("f"), med.rename("t")], axis=1).dropna()
    if not len(both):
        return None
    xs = rows.drop_duplicates("cell_id").set_index("cell_id")[x]
    both["_x"] = _numeric(xs.reindex(both.index))
    return (both["f"] * both["t"]).groupby(both["_x"]).median().sort_index()


def speed_figures(df: pd.DataFrame) -> List[Figure]:
    x = x_column("speed", df)
    if x is None:
        return []
    fig = _line_figure(df, HEADLINE_METRICS["speed"], x, name="speed_time_vs_seq_len",
                       title="Time vs sequence length", ylabel="time (ms)", roofline=True,
                       caption="Median time per call over repeats (bars: IQR); dashed: the roofline floor of "
                               "each impl; markers at the top: cells that ran out of memory, timed out or were skipped.")
    out = [fig] if fig else []
    mem = _line_figure(df, ("peak_mem_bytes", "peak_rss_bytes"), x, name="speed_peak_memory",
                       title="Peak memory vs sequence length", ylabel="peak memory (GiB)", scale=1 / 2**30)
    return out + ([mem] if mem else [])


def _bar_figure(df: pd.DataFrame, metric_names: Sequence[str], *, name: str, title: str, ylabel: str,
                scale: float = 1.0, caption: str = "") -> Optional[Figure]:
    """Median per configuration as bars (for suites with no numeric axis to plot against)."""
    metric = next((m for m in metric_names if (df["metric"] == m).any()), None)
    if metric is None:
        return None
    ok = df[(df["status"] == "ok") & (df["metric"] == metric)].copy()
    series = _series_cols(df, "", None)
    if not len(ok) or not series:
        return None
    ok["config"] = _label(ok, series)
    ok["_y"] = _numeric(ok["value"]) * scale
    stats = ok.groupby("config")["_y"].median().sort_values()
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(stats) + 2), 4.0))
    ax.bar(stats.index, stats.values, color=sns.color_palette("tab10", len(stats)))
    ax.set_ylabel(ylabel)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    failed = df[df["status"].isin(list(FAILED_MARKERS))]
    if len(failed):
        names = sorted(set(_label(failed, series)))
        ax.set_title("did not finish: " + "; ".join(names)[:120], fontsize=9)
    fig.suptitle(title)
    return _render(fig, name, title, caption or f"{metric}: median per configuration.", svg=False)


def memory_figures(df: pd.DataFrame) -> List[Figure]:
    metrics = HEADLINE_METRICS["memory"]
    caption = ("Peak memory per cell (GPU: max allocated; CPU: peak RSS); markers at the top: cells that ran "
               "out of memory or were skipped.")
    x = x_column("memory", df)
    if x is None:
        fig = _bar_figure(df, metrics, name="memory_peak", title="Peak memory", ylabel="peak memory (GiB)",
                          scale=1 / 2**30, caption=caption)
        return [fig] if fig else []
    fig = _line_figure(df, metrics, x, name="memory_peak", title=f"Peak memory vs {x}",
                       ylabel="peak memory (GiB)", scale=1 / 2**30, caption=caption)
    return [fig] if fig else []


def decode_figures(df: pd.DataFrame) -> List[Figure]:
    x = x_column("decode", df)
    if x is None:
        return []
    fig = _line_figure(df, HEADLINE_METRICS["decode"], x, name="decode_latency",
                       title=f"Decode latency vs {x}", ylabel="ms per token",
                       caption="Per-token latency of recurrent decoding (median over repeats, bars: IQR).")
    return [fig] if fig else []


def _curve_panel(metric: str) -> Optional[str]:
    m = metric.lower()
    if "loss" in m:
        return "loss"
    if "accuracy" in m and "seq_accuracy" not in m and "chance" not in m:
        return "accuracy"
    return None


def learning_curve_figure(df: pd.DataFrame) -> Optional[Figure]:
    """Loss (train/val) and accuracy against step: rows that carry a ``step``."""
    if "step" not in df.columns:
        return None
    curve = df[(df["status"] == "ok") & df["step"].notna()].copy()
    if "eval_seq_len" in curve.columns:  # curves at other lengths (train.curve_seq_lens) have their own figure
        curve = curve[curve["eval_seq_len"].isna()]
    curve["panel"] = curve["metric"].map(_curve_panel)
    curve = curve[curve["panel"].notna()]
    if not len(curve) or _numeric(curve["step"]).nunique() < 2:
        return None
    curve["step"] = _numeric(curve["step"])
    curve["value"] = _numeric(curve["value"])
    curve["series"] = _label(curve, _series_cols(df, "step", None))
    panels = [p for p in ("loss", "accuracy") if (curve["panel"] == p).any()]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = curve[curve["panel"] == panel]
        style = "metric" if part["metric"].nunique() > 1 else None
        sns.lineplot(data=part, x="step", y="value", hue="series", style=style, errorbar="sd", ax=ax,
                     marker="o", markersize=3)
        ax.set_ylabel(panel)
        if panel == "accuracy":
            ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    # one legend for all panels, right of the last one (a legend beside an inner panel covers its neighbour)
    handles, labels = [], []
    for ax in axes[0]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
        if ax.get_legend():
            ax.get_legend().remove()
    if handles:
        _legend_outside(axes[0][-1], handles, labels)
    fig.suptitle("Learning curves")
    return _render(fig, "task_learning_curves", "Learning curves",
                   "Loss and accuracy against training step; line = mean over seeds, band = sd.")


def length_curve_figure(df: pd.DataFrame) -> Optional[Figure]:
    """Validation accuracy against step at every evaluated length, one panel per length: whether
    extrapolation improves, stalls or swings while training goes on (``train.curve_seq_lens``)."""
    if "step" not in df.columns or "eval_seq_len" not in df.columns:
        return None
    curve = df[(df["status"] == "ok") & (df["metric"] == "val_accuracy") & df["step"].notna()].copy()
    if not curve["eval_seq_len"].notna().any():
        return None
    train_col = _train_len_col(df)
    if train_col is not None:  # the training-length points have no eval_seq_len: it is the cell's own
        curve["eval_seq_len"] = curve["eval_seq_len"].fillna(curve[train_col])
    curve = curve[curve["eval_seq_len"].notna()]
    curve["eval_seq_len"] = _numeric(curve["eval_seq_len"]).astype(int)
    curve["step"] = _numeric(curve["step"])
    curve["value"] = _numeric(curve["value"])
    curve["series"] = _label(curve, _series_cols(df, "step", None))
    lengths = sorted(curve["eval_seq_len"].unique())
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.8), squeeze=False, sharey=True)
    for ax, L in zip(axes[0], lengths):
        sns.lineplot(data=curve[curve["eval_seq_len"] == L], x="step", y="value", hue="series",
                     hue_order=sorted(curve["series"].unique()), errorbar="sd", ax=ax, marker="o", markersize=3,
                     legend=L == lengths[-1])
        ax.set_title(f"length {L}")
        ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("val accuracy")
    if axes[0][-1].get_legend():
        _legend_outside(axes[0][-1], fontsize=7)
    fig.suptitle("Accuracy at each length during training", y=1.03)
    return _render(fig, "task_length_curves", "Accuracy at each length during training",
                   "Validation accuracy against step, one panel per evaluated length (train.curve_seq_lens); "
                   "line = mean over seeds, band = sd.")


def extrapolation_figure(df: pd.DataFrame) -> Optional[Figure]:
    if "eval_seq_len" not in df.columns:
        return None
    final = df[(df["status"] == "ok") & (df["metric"] == "accuracy") & df["eval_seq_len"].notna()].copy()
    if "step" in final.columns:
        final = final[final["step"].isna()]
    final["eval_seq_len"] = _numeric(final["eval_seq_len"])
    if final["eval_seq_len"].nunique() < 2:
        return None
    final["value"] = _numeric(final["value"])
    series = _series_cols(df, "eval_seq_len", None)
    final["series"] = _label(final, series)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4.4))
    sns.lineplot(data=final, x="eval_seq_len", y="value", hue="series", errorbar="sd", marker="o", ax=ax,
                 err_style="bars")
    ax.set_xscale("log", base=2)
    _plain_log_axes(ax, final["eval_seq_len"].unique())
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("evaluation sequence length")
    ax.set_ylabel("accuracy")
    train_col = _train_len_col(df)
    if train_col is not None:
        for i, L in enumerate(sorted(_numeric(df[train_col]).dropna().unique())):
            ax.axvline(L, ls="--", color="grey", lw=1, label="training length" if i == 0 else None)
    _legend_outside(ax)
    fig.suptitle("Accuracy vs evaluation length")
    return _render(fig, "task_accuracy_vs_length", "Accuracy vs evaluation length",
                   "Final accuracy at each evaluation length (mean over seeds, bars = sd); dashed: the training length.")


def heatmap_figure(df: pd.DataFrame) -> Optional[Figure]:
    axes_ = varying_params(df)
    if len(axes_) < 2:
        return None
    acc = final_accuracy(df)
    if not len(acc):
        return None
    acc = acc.copy()
    acc["value"] = _numeric(acc["value"])
    rows_key, cols_keys = axes_[0], axes_[1:]
    acc["_row"] = shown_param(acc, rows_key)
    acc["_col"] = shown_param(acc, cols_keys[0]) if len(cols_keys) == 1 else _label(acc, cols_keys)
    grid = acc.groupby(["_row", "_col"])["value"].mean().unstack("_col")
    if grid.shape[0] < 1 or grid.shape[1] < 1 or grid.size < 2:
        return None
    sns.set_theme(style="white", context="notebook")
    fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    sns.heatmap(grid * 100, annot=True, fmt=".1f", cmap="viridis", vmin=0, vmax=100, ax=ax,
                cbar_kws={"label": "accuracy (%)"}, linewidths=0.5)
    ax.set_ylabel(rows_key)
    ax.set_xlabel(" / ".join(cols_keys))
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.suptitle("Final accuracy (%)")
    return _render(fig, "task_accuracy_heatmap", "Final accuracy by configuration",
                   "Final accuracy (at the training length), mean over seeds; blank: no finished cell.", svg=False)


def task_figures(df: pd.DataFrame) -> List[Figure]:
    out = [learning_curve_figure(df), length_curve_figure(df), extrapolation_figure(df), heatmap_figure(df)]
    return [f for f in out if f is not None]


BUILDERS: Dict[str, Callable[[pd.DataFrame], List[Figure]]] = {
    "speed": speed_figures, "memory": memory_figures, "decode": decode_figures, "task": task_figures}


def figures_for(kind: str, df: pd.DataFrame) -> List[Figure]:
    """All figures for a suite of ``kind`` (an unknown kind gets none)."""
    builder = BUILDERS.get(kind)
    if builder is None or not len(df):
        return []
    try:
        return builder(df)
    finally:
        plt.close("all")
