"""results/baselines/INDEX.yaml and the run folders it indexes stay in step, within the stated size budget."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "results" / "baselines"
INDEX = BASELINES / "INDEX.yaml"
LARGE_ROW_FILE = 512 * 1024   # a rows.jsonl above this is stored as results.parquet instead


def index():
    return yaml.safe_load(INDEX.read_text(encoding="utf-8"))


def run_folders():
    return sorted(str(m.parent.relative_to(BASELINES)) for m in BASELINES.rglob("meta.json"))


def test_every_run_folder_is_indexed_and_every_entry_exists():
    listed = [r["path"] for r in index()["runs"]]
    assert len(listed) == len(set(listed)), "an entry is listed twice"
    assert sorted(listed) == run_folders(), (
        "results/baselines/INDEX.yaml and the run folders differ: index a kept run (claim, cited_in, command, "
        "commit, device) or delete a run no claim needs")


def test_entries_say_what_they_support_and_match_their_meta():
    for run in index()["runs"]:
        for key in ("claim", "cited_in", "command", "commit", "device"):
            assert str(run.get(key, "")).strip(), f"{run['path']}: {key} is empty"
        meta = json.loads((BASELINES / run["path"] / "meta.json").read_text(encoding="utf-8"))
        assert str(meta.get("commit") or "unknown").startswith(str(run["commit"])), run["path"]
        device = meta.get("gpu_name") or "CPU"
        assert run["device"] == device, f"{run['path']}: device {run['device']!r}, meta.json says {device!r}"
        assert run["command"].startswith("ssmbench run "), run["path"]
        suite_file = run["command"].split()[2]
        assert (REPO / suite_file).is_file(), f"{run['path']}: {suite_file} does not exist"


def test_cited_files_exist():
    for run in index()["runs"]:
        paths = re.findall(r"\.ci/run|[\w./-]+\.(?:md|yaml|py|png)", run["cited_in"])
        assert paths, f"{run['path']}: cited_in names no file"
        for path in paths:
            assert (REPO / path).exists(), f"{run['path']}: cited in {path}, which does not exist"


def test_results_stay_within_the_size_budget_and_large_rows_are_compressed():
    tracked = subprocess.run(["git", "ls-files", "-z", "results"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    files = [REPO / f for f in tracked if f and (REPO / f).exists()]
    total = sum(f.stat().st_size for f in files)
    assert total <= index()["budget_mb"] * 1024 * 1024, f"results/ holds {total / 2**20:.1f} MB"
    big = [str(f.relative_to(REPO)) for f in files if f.name == "rows.jsonl" and f.stat().st_size > LARGE_ROW_FILE]
    assert not big, f"store these as results.parquet (harness.store.results.load(run).to_parquet): {big}"
