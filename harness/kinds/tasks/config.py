"""The ``task:`` section of a task cell."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from harness.config_types import PositiveInt, StrictModel, registered
from harness.kinds.tasks import TASKS, make_task


class TaskConfig(StrictModel):
    """name (registered), training length, vocabulary (special tokens included), tokens to recall.

    ``n_tokens`` is what the task recalls: data tokens for (selective) copying (default 16), answer
    tokens after the trigger for induction_heads (default 1), key-value pairs for mqar (default 8).
    """

    name: registered(TASKS)
    """the synthetic task (`ssmbench list` shows them)"""
    seq_len: PositiveInt
    """training sequence length"""
    vocab: PositiveInt = 16
    """vocabulary size, the task's special tokens included"""
    n_tokens: Optional[PositiveInt] = Field(None, description="default: the task's own (see above)")

    @model_validator(mode="after")
    def _buildable(self) -> "TaskConfig":
        make_task(self.name, self.seq_len, self.vocab, self.n_tokens)  # ValueError names the key and fix
        return self

    def build(self):
        return make_task(self.name, self.seq_len, self.vocab, self.n_tokens)
