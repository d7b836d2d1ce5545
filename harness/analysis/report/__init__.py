"""Reports of finished runs: ``report.md``, a self-contained ``report.html`` and the figures.

``build_report(run_dirs, out_dir=None)`` is what ``ssmbench report`` and the end of ``ssmbench
run`` call.  By default it writes to ``reports/<suite>/<run id>/`` under the current directory,
wherever the run directory lives and whatever its folders are named (``--out``/``--report-dir``
choose another place).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

from harness.analysis.report.runs import Run, RunDirError, load_run, load_runs

PathLike = Union[str, Path]

__all__ = ["build_report", "default_out_dir", "RunDirError", "load_run", "load_runs", "Run"]


def _safe(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in name)
    return keep.strip("._") or "run"


def _common_name(names: Sequence[str]) -> str:
    """"smoke" for smoke-task + smoke-speed; "combined" when the names share no useful prefix."""
    prefix = os.path.commonprefix(list(names)).rstrip("-_.+ ")
    return prefix if len(prefix) >= 3 else "combined"


def default_out_dir(runs: Sequence[Run]) -> Path:
    """``reports/<suite>/<run dir name>`` under the current directory (never dependent on where the
    run directory is or what its folders are called, so a user can tell in advance where it goes).

    Runs of several suites (a multi-document suite file) share one report named after their
    common prefix (``smoke`` for smoke-task, smoke-speed, ...).
    """
    first = runs[0]
    root = Path.cwd()
    suites = sorted({r.suite_name for r in runs})
    suite = suites[0] if len(suites) == 1 else _common_name(suites)
    name = first.path.name
    if len(runs) > 1 and len(suites) == 1:
        name = f"{name}+{len(runs) - 1}"
    return root / "reports" / _safe(suite) / _safe(name)


def use_suite_file(runs: Sequence[Run], suite_file: PathLike) -> None:
    """Judge ``runs`` by the ``expect`` (and ``tune``) of ``suite_file`` instead of the copies their run
    directories keep: a criterion changed after the runs were made (``ssmbench report --suite FILE``).
    The documents are matched by suite name; a file with none of the runs' suites is an error."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(Path(suite_file).read_text(encoding="utf-8")) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise RunDirError(f"{suite_file}: cannot read the suite ({str(exc).splitlines()[0]})") from None
    by_name = {str(d.get("name")): d for d in docs}
    matched = [r for r in runs if r.suite_name in by_name]
    if not matched:
        raise RunDirError(f"{suite_file}: holds no suite named {', '.join(sorted({r.suite_name for r in runs}))}")
    for r in matched:
        doc = by_name[r.suite_name]
        r.suite = {**r.suite, "expect": doc.get("expect") or [], "tune": doc.get("tune")}


def build_report(run_dirs: Sequence[PathLike], out_dir: Optional[PathLike] = None,
                 suite_file: Optional[PathLike] = None) -> Path:
    """Write the report of ``run_dirs`` (one or more run directories) and return its directory;
    ``suite_file`` replaces the runs' own expectations (see :func:`use_suite_file`)."""
    from harness.analysis.report.html import render_html
    from harness.analysis.report.markdown import render_markdown
    from harness.analysis.report.model import assemble

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    runs = load_runs(run_dirs)
    if suite_file is not None:
        use_suite_file(runs, suite_file)
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    data = assemble(runs)
    paths = {}
    for fig in (f for sec in data.sections for f in sec.figures):
        (fig_dir / f"{fig.name}.png").write_bytes(fig.png)
        if fig.svg is not None:
            (fig_dir / f"{fig.name}.svg").write_bytes(fig.svg)
        paths[fig.name] = f"figures/{fig.name}.png"
    (out / "report.md").write_text(render_markdown(data, paths), encoding="utf-8")
    (out / "report.html").write_text(render_html(data), encoding="utf-8")
    return out
