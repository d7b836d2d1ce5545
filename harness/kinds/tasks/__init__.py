"""Synthetic tasks, by name (``task.name`` in YAML).

Each entry is a :class:`harness.kinds.tasks.base.SyntheticTask` subclass; build one with
:func:`make_task`.  A new task is one module plus one line here.
"""
from __future__ import annotations

from typing import Optional

from harness.registry import Registry

TASKS = Registry("task")
TASKS.add("copying", "harness.kinds.tasks.copying:Copying",
          help="M data tokens, a fixed delay of noise, M markers: replay the data (LTI-solvable)")
TASKS.add("selective_copying", "harness.kinds.tasks.copying:SelectiveCopying",
          help="M data tokens at random positions among noise, then M markers: replay the data (Mamba §4.1.1)")
TASKS.add("induction_heads", "harness.kinds.tasks.induction:InductionHeads",
          help="random tokens with a trigger; at its second occurrence output its first successor (Mamba §4.1.2)")
TASKS.add("mqar", "harness.kinds.tasks.recall:MultiQueryRecall",
          help="multi-query associative recall: K key-value pairs, then K queries (Zoology)")


def make_task(name: str, seq_len: int, vocab: int, n_tokens: Optional[int] = None):
    """The task ``name`` at training length ``seq_len``; a ValueError names any impossible setting."""
    return TASKS.get(name)(seq_len=seq_len, vocab=vocab, n_tokens=n_tokens)
