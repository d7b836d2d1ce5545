"""Plant hand-written bugs one at a time in a copy of the checkout and run the tests named for each.

    python tests/mutation/plant.py tests/mutation/plants.json          # every plant in the file
    python tests/mutation/plant.py tests/mutation/plants.json -k hyena # those whose "why" contains "hyena"

A plant is ``{"file", "old", "new", "tests": [pytest args], "why"}``: ``old`` must occur exactly once in
``file``.  Each plant is applied to a fresh copy of the tracked files (the checkout is never touched), the tests
run there with ``-x``, and the file restored; a line per plant says CAUGHT (a test failed) or MISSED.  Exit 1 if
any plant was missed or could not be applied.  Mutation testing (``run.py``) makes small syntactic changes
everywhere; these are the bugs a person would write, kept so that they can be tried again after a change.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]


def planted(text: str, old: str, new: str) -> str:
    """``text`` with its one occurrence of ``old`` replaced; ValueError unless there is exactly one."""
    count = text.count(old)
    if count != 1:
        raise ValueError(f"the plant's old text occurs {count} times (must be once): {old[:60]!r}")
    return text.replace(old, new)


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def try_plant(copy: Path, plant: Dict[str, object]) -> str:
    """Apply one plant in ``copy``, run its tests, restore; 'CAUGHT ...', 'MISSED ...' or 'UNAPPLIED ...'."""
    path = copy / str(plant["file"])
    original = path.read_text()
    try:
        path.write_text(planted(original, str(plant["old"]), str(plant["new"])))
    except ValueError as exc:
        return f"UNAPPLIED {plant['why']}: {plant['file']}: {exc}"
    try:
        env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                              *map(str, plant["tests"])], cwd=copy, env=env, capture_output=True, text=True)
    finally:
        path.write_text(original)
    failed = next((line for line in run.stdout.splitlines() if line.startswith("FAILED")), "")
    return (f"CAUGHT {plant['why']}: {failed[7:140]}" if run.returncode else f"MISSED {plant['why']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plants", type=Path, help="JSON list of plants")
    ap.add_argument("-k", default="", help="only the plants whose 'why' contains this text")
    args = ap.parse_args(argv)
    plants = [p for p in json.loads(args.plants.read_text()) if args.k in p["why"]]
    if not plants:
        print(f"{args.plants}: no plant matches -k {args.k!r}", file=sys.stderr)
        return 2
    worst = 0
    with tempfile.TemporaryDirectory(prefix="ssmbench-plant-") as tmp:
        _copy_checkout(Path(tmp))
        for plant in plants:
            line = try_plant(Path(tmp), plant)
            print(line, flush=True)
            worst = max(worst, 0 if line.startswith("CAUGHT") else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
