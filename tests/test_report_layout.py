"""Reports read top-down like a paper's results section: findings first, the run's provenance folded at the end,
and no figure legend drawn on top of a plot's data (seen in a real browser before this was tested)."""
from __future__ import annotations

from harness.analysis.report import build_report, figures
from harness.analysis.report.synthetic import default_meta, speed_rows, task_rows, write_run


def _task_run(tmp_path):
    return write_run(tmp_path / "results" / "t" / "r1", task_rows(), default_meta("r1", "t", "task"),
                     {"name": "t", "kind": "task"})


def test_metadata_comes_last_and_folded(tmp_path):
    out = build_report([_task_run(tmp_path)], out_dir=tmp_path / "rep")
    md = (out / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[-1] == "## Run metadata" and "## Summary" in headings
    assert md.index("## Run metadata") > md.index("## Figures")
    assert "<details>" in md.split("## Run metadata", 1)[1]
    html = (out / "report.html").read_text()
    assert html.index('<details class="meta">') > html.rindex("<figure>")
    assert html.index("commit") > html.index('<details class="meta">')   # the metadata table sits inside it


def test_wide_tables_scroll_inside_the_page(tmp_path):
    out = build_report([_task_run(tmp_path)], out_dir=tmp_path / "rep")
    html = (out / "report.html").read_text()
    assert html.count('<div class="wide"><table>') == html.count("<table>")
    assert ".wide{max-width:100%;overflow-x:auto}" in html


def test_no_legend_covers_an_axes(tmp_path, monkeypatch):
    seen = []
    render = figures._render

    def inspect(fig, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible() and ax.has_data()]
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                lbox = legend.get_window_extent(renderer)
                seen.append((args[0], [b for b in boxes if b.overlaps(lbox)]))
        return render(fig, *args, **kwargs)

    monkeypatch.setattr(figures, "_render", inspect)
    build_report([_task_run(tmp_path)], out_dir=tmp_path / "rep_task")
    speed = write_run(tmp_path / "results" / "s" / "r1", speed_rows(seq_lens=(128, 256), repeats=3),
                      default_meta("r1", "s", "speed"), {"name": "s", "kind": "speed"})
    build_report([speed], out_dir=tmp_path / "rep_speed")
    assert seen, "no figure had a legend: the check saw nothing"
    covering = [(name, len(boxes)) for name, boxes in seen if boxes]
    assert not covering, f"legends drawn over axes: {covering}"
