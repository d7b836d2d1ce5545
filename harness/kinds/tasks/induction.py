"""Induction Heads: after a trigger token recurs, output what followed its first occurrence.

Layout (after ``generate_induction_head`` in HazyResearch/safari ``src/dataloaders/synthetics.py``,
the generator the Mamba paper calls "comparable to prior work"; PAPER_FACTS.md §1.2), with
k = ``n_tokens`` answer tokens (safari's ``induction_len``, 1 in the paper):

* token ``0`` is reserved (safari's unused "noop"), token ``vocab-1`` is the trigger (safari's
  "copy prefix"), ordinary tokens are uniform on ``1 .. vocab-2``: with ``vocab = 16`` chance is 1/14,
  in line with the 5-10 % floor of the failing models in the paper's Table 11.
* The first ``seq_len - k`` positions are ordinary tokens, except one trigger at a uniform random
  position ``p`` followed by the k answer tokens (themselves ordinary random tokens).
* Then the trigger again and the first k-1 answers (teacher forcing), so the sequence is exactly
  ``seq_len`` long.  The model must output answer j at the position of the trigger's second occurrence
  + j; only those k positions are scored (safari's test labels; we score only them in training too,
  since the rest of the sequence is unpredictable noise).
"""
from __future__ import annotations

from typing import List

import torch

from harness.kinds.tasks.base import ReservedEndsTask, TaskBatch, answers_to_batch


class InductionHeads(ReservedEndsTask):
    """Random tokens with one trigger; at the trigger's second occurrence, output its first successor."""

    name = "induction_heads"
    default_n_tokens = 1

    @property
    def trigger(self) -> int:
        return self.special

    def problems(self, seq_len: int) -> List[str]:
        out = []
        if self.vocab < 3:
            out.append(f"task.vocab={self.vocab} leaves no ordinary tokens: it needs the reserved 0 and the "
                       f"trigger {self.vocab - 1} plus at least one more; set task.vocab >= 3")
        k = self.n_tokens
        if k < 1:
            out.append("task.n_tokens (answer tokens after the trigger) must be >= 1")
        elif seq_len < 2 * k + 1:
            out.append(f"seq_len={seq_len} is too short for task.n_tokens={k}: trigger + {k} answers must fit "
                       f"before the final trigger, so seq_len must be >= {2 * k + 1}")
        return out

    def sample(self, batch: int, seq_len: int, generator: torch.Generator) -> TaskBatch:
        dev, k = generator.device, self.n_tokens
        body = seq_len - k  # positions before the final trigger
        inputs = torch.randint(1, self.vocab - 1, (batch, seq_len), generator=generator, device=dev)
        # first trigger at p in [0, body - k - 1], so the k answers p+1..p+k stay before position body
        p = torch.randint(0, body - k, (batch, 1), generator=generator, device=dev)
        inputs.scatter_(1, p, self.trigger)
        answers = inputs.gather(1, p + 1 + torch.arange(k, device=dev))
        inputs[:, body] = self.trigger
        if k > 1:
            inputs[:, body + 1:] = answers[:, :-1]
        answer_pos = torch.arange(body, seq_len, device=dev).expand(batch, k)
        return answers_to_batch(inputs, answer_pos, answers)
