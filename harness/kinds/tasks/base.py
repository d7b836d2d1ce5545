"""What every synthetic task provides: seeded batches of (inputs, targets, loss mask).

A task is a *generator*, not a data set: training draws a fresh batch every step from one seeded
``torch.Generator`` (so no model ever sees the same training sequence twice), while validation uses
fixed sets, one per evaluation length, in which sequence ``i`` is drawn from its own seed.  Seeding
per sequence makes a validation set independent of the chunk size it is evaluated in (chunks shrink
after an OOM) and of the device (validation sequences are always drawn on the CPU).

All tasks share one output convention, that of a causal language model: ``inputs`` and ``targets``
are (batch, seq_len) int64 and the model's output at position ``t`` is scored against
``targets[:, t]`` wherever ``mask[:, t]`` is true.  Positions outside the mask hold ``IGNORE`` in
``targets`` so that a stray unmasked use shows up at once.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch

IGNORE = -100  # target value at unscored positions (torch's cross_entropy ignore_index)


@dataclass(frozen=True)
class TaskBatch:
    """inputs, targets: (batch, seq_len) int64; mask: (batch, seq_len) bool, true at the answers."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> "TaskBatch":
        return TaskBatch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                         self.mask.to(device, non_blocking=True))

    @property
    def batch_size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.inputs.shape[1])

    @staticmethod
    def cat(parts: List["TaskBatch"]) -> "TaskBatch":
        return TaskBatch(torch.cat([p.inputs for p in parts]), torch.cat([p.targets for p in parts]),
                         torch.cat([p.mask for p in parts]))


def answers_to_batch(inputs: torch.Tensor, answer_pos: torch.Tensor, answers: torch.Tensor) -> TaskBatch:
    """Build targets and mask from the positions (batch, k) that must output ``answers`` (batch, k)."""
    targets = torch.full_like(inputs, IGNORE)
    targets.scatter_(1, answer_pos, answers)
    mask = torch.zeros(inputs.shape, dtype=torch.bool, device=inputs.device)
    mask.scatter_(1, answer_pos, True)
    return TaskBatch(inputs, targets, mask)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SyntheticTask(ABC):
    """A task configured by ``vocab`` (tokens 0..vocab-1, special tokens included) and ``n_tokens``.

    Subclasses set ``name`` and ``default_n_tokens``, and implement :meth:`sample` and
    :meth:`problems` (the set-ups that cannot be built, as messages naming the key and the fix).
    """

    name: str = "base"
    default_n_tokens: int = 1

    def __init__(self, seq_len: int, vocab: int, n_tokens: Optional[int] = None):
        self.seq_len = int(seq_len)
        self.vocab = int(vocab)
        self.n_tokens = int(n_tokens if n_tokens is not None else self.default_n_tokens)
        problems = self.problems(self.seq_len)
        if problems:
            raise ValueError(f"task {self.name!r}: " + "; ".join(problems))

    # -- what a subclass defines ------------------------------------------------------------
    @abstractmethod
    def problems(self, seq_len: int) -> List[str]:
        """Why this task cannot be built at ``seq_len`` with this vocab/n_tokens ([] if it can)."""

    @abstractmethod
    def sample(self, batch: int, seq_len: int, generator: torch.Generator) -> TaskBatch:
        """``batch`` fresh sequences of length ``seq_len``, drawn on ``generator.device``."""

    @property
    @abstractmethod
    def chance_accuracy(self) -> float:
        """Per-answer accuracy of a model that guesses uniformly among the possible answers."""

    # -- shared machinery ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the model's embedding and output layer."""
        return self.vocab

    def describe(self) -> str:
        return f"{self.name}(seq_len={self.seq_len}, vocab={self.vocab}, n_tokens={self.n_tokens})"

    def validation_set(self, seq_len: int, size: int, seed: int) -> "ValidationSet":
        problems = self.problems(seq_len)
        if problems:
            raise ValueError(f"task {self.name!r} cannot be evaluated at length {seq_len}: " + "; ".join(problems))
        return ValidationSet(self, seq_len, size, seed)


class ReservedEndsTask(SyntheticTask):
    """A task whose token 0 is noise/reserved and token ``vocab-1`` is its one special token (the
    copying marker, the induction trigger): answers are drawn from the ``vocab-2`` tokens between."""

    @property
    def special(self) -> int:
        return self.vocab - 1

    @property
    def n_symbols(self) -> int:
        return self.vocab - 2

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / self.n_symbols


class ValidationSet:
    """A fixed set of ``size`` sequences of length ``seq_len``; sequence ``i`` comes from its own seed.

    Iterate it in chunks (:meth:`chunks`) to bound memory at long lengths; the same ``seed`` always
    gives the same sequences, whatever the chunk size.
    """

    def __init__(self, task: SyntheticTask, seq_len: int, size: int, seed: int):
        self.task, self.seq_len, self.size, self.seed = task, int(seq_len), int(size), int(seed)
        self._base = stable_seed("validation", task.name, task.vocab, task.n_tokens, seq_len, seed)

    def __len__(self) -> int:
        return self.size

    def sequence(self, i: int) -> TaskBatch:
        gen = torch.Generator().manual_seed((self._base + i) & ((1 << 63) - 1))
        return self.task.sample(1, self.seq_len, gen)

    def chunks(self, chunk_size: int) -> Iterator[TaskBatch]:
        for start in range(0, self.size, chunk_size):
            stop = min(self.size, start + chunk_size)
            yield TaskBatch.cat([self.sequence(i) for i in range(start, stop)])
