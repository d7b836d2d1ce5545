"""The results store: one run folder = rows.jsonl (append-only, flushed per cell) -> results.parquet/CSV,
plus meta.json (commit, versions, machine, command) and the resolved suite.yaml.

Owns: ``results`` (the tidy schema, the one reader and writer of row files) and ``meta`` (run metadata).

May import: the contracts only.  Everything above (run, analysis) reads and writes runs through it.
"""
