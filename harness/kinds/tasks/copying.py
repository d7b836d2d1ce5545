"""Copying and Selective Copying: remember M data tokens across a stretch of noise, then replay them.

Layout (the S4 repository's copying generator, state-spaces/s4 ``src/dataloaders/datasets/copying.py``;
PAPER_FACTS.md §1.1):

* token ``0`` is noise (the "white" token of the Mamba paper's Figure 2), data tokens are drawn
  uniformly from ``1 .. vocab-2``, and token ``vocab-1`` is the marker.  With ``vocab = 16`` that is
  14 data symbols (chance accuracy 1/14), matching the paper's "vocabulary 16, counting the noise token".
* ``seq_len`` is the **whole** input: ``seq_len - M`` positions holding the M data tokens and noise,
  then M markers.  At the i-th marker the model must output the i-th data token; only the markers are
  scored.  (The paper says "length 4096" without saying whether the answer positions count; we count
  them, so a 4096 cell is exactly 4096 tokens long.)
* ``copying``: the data tokens come first, then ``seq_len - 2M`` noise tokens (a fixed delay), so an
  LTI model solves it by tracking time.
* ``selective_copying``: the data tokens sit at sorted random positions among the ``seq_len - M``
  leading positions (the S4 code's ``variable=True``); solving it needs content-aware memory.
"""
from __future__ import annotations

from typing import List

import torch

from harness.kinds.tasks.base import ReservedEndsTask, TaskBatch, answers_to_batch

NOISE = 0


class Copying(ReservedEndsTask):
    """M data tokens, a delay of noise, M markers: output the data tokens in order at the markers."""

    name = "copying"
    default_n_tokens = 16
    variable = False

    @property
    def marker(self) -> int:
        return self.special

    def problems(self, seq_len: int) -> List[str]:
        out = []
        if self.vocab < 3:
            out.append(f"task.vocab={self.vocab} leaves no data symbols: it needs noise (0) and marker "
                       f"({self.vocab - 1}) plus at least one data token; set task.vocab >= 3")
        if self.n_tokens < 1:
            out.append("task.n_tokens must be >= 1")
        min_len = 2 * self.n_tokens
        if seq_len < min_len:
            out.append(f"seq_len={seq_len} is too short for task.n_tokens={self.n_tokens}: the layout is "
                       f"{self.n_tokens} data + noise + {self.n_tokens} markers, so seq_len must be >= "
                       f"{min_len}; raise task.seq_len (and every train.eval_seq_lens entry) or lower task.n_tokens")
        return out

    def sample(self, batch: int, seq_len: int, generator: torch.Generator) -> TaskBatch:
        dev = generator.device
        m, body = self.n_tokens, seq_len - self.n_tokens
        data = torch.randint(1, self.vocab - 1, (batch, m), generator=generator, device=dev)
        inputs = torch.full((batch, seq_len), NOISE, dtype=torch.long, device=dev)
        if self.variable:
            # M distinct positions among the body, uniformly, kept in order: the top-M of iid uniforms.
            scores = torch.rand((batch, body), generator=generator, device=dev)
            pos = scores.topk(m, dim=1).indices.sort(dim=1).values
        else:
            pos = torch.arange(m, device=dev).expand(batch, m)
        inputs.scatter_(1, pos, data)
        inputs[:, body:] = self.marker
        answer_pos = torch.arange(body, seq_len, device=dev).expand(batch, m)
        return answers_to_batch(inputs, answer_pos, data)


class SelectiveCopying(Copying):
    """Copying with the M data tokens scattered at random sorted positions among noise tokens."""

    name = "selective_copying"
    variable = True
