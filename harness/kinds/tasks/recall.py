"""Multi-query associative recall (MQAR, after HazyResearch/zoology): look values up by key.

Layout: token ``0`` is noise; keys are ``1 .. nk`` and values ``nk+1 .. vocab-1`` with
``nk = (vocab-1) // 2``.  The sequence opens with K = ``n_tokens`` key-value pairs ``k1 v1 .. kK vK``
(distinct keys, values drawn with replacement), followed by noise in which every key appears once
more as a query, at distinct random positions and in random order.  At each query the model must
output that key's value; only the K query positions are scored.  Unlike zoology we do not feed the
answer back after the query, so every query is a pure lookup.
"""
from __future__ import annotations

from typing import List

import torch

from harness.kinds.tasks.base import SyntheticTask, TaskBatch, answers_to_batch


class MultiQueryRecall(SyntheticTask):
    """K key-value pairs, then K queries among noise: output each queried key's value."""

    name = "mqar"
    default_n_tokens = 8

    @property
    def n_keys(self) -> int:
        return (self.vocab - 1) // 2

    @property
    def n_values(self) -> int:
        return self.vocab - 1 - self.n_keys

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / max(1, self.n_values)

    def problems(self, seq_len: int) -> List[str]:
        out, k = [], self.n_tokens
        if k < 1:
            out.append("task.n_tokens (key-value pairs) must be >= 1")
        if self.n_keys < k or self.n_values < 1:
            out.append(f"task.vocab={self.vocab} gives {self.n_keys} keys and {self.n_values} values but "
                       f"task.n_tokens={k} distinct keys are needed: set task.vocab >= {2 * k + 1}")
        if seq_len < 3 * k:
            out.append(f"seq_len={seq_len} is too short for task.n_tokens={k}: {k} pairs (2 tokens each) and "
                       f"{k} queries need seq_len >= {3 * k}")
        return out

    def sample(self, batch: int, seq_len: int, generator: torch.Generator) -> TaskBatch:
        dev, k, nk = generator.device, self.n_tokens, self.n_keys
        keys = torch.rand((batch, nk), generator=generator, device=dev).argsort(dim=1)[:, :k] + 1
        values = torch.randint(nk + 1, self.vocab, (batch, k), generator=generator, device=dev)
        inputs = torch.zeros((batch, seq_len), dtype=torch.long, device=dev)
        inputs[:, 0:2 * k:2] = keys
        inputs[:, 1:2 * k:2] = values
        tail = seq_len - 2 * k
        query_pos = torch.rand((batch, tail), generator=generator, device=dev).topk(k, dim=1).indices + 2 * k
        order = torch.rand((batch, k), generator=generator, device=dev).argsort(dim=1)
        inputs.scatter_(1, query_pos, keys.gather(1, order))
        return answers_to_batch(inputs, query_pos, values.gather(1, order))
