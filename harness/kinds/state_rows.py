"""The recurrent state a model cell's model carries per sequence at inference: rows ``state_elements`` and
``state_bytes`` (issue 18; DESIGN.md "State size").

Why: the Mamba-2 paper and zoology compare recall against state size, so every model cell (task, speed and
memory with impl model / layer, decode) reports it beside its other numbers and a suite can plot accuracy
against it.  The numbers are ``models.state_size``: the SSMs' fixed state, the KV cache at the cell's length
for attention (Hyena's history likewise), all layers (one for impl layer), one sequence, the model in the
cell's dtype (SSM states stay float32).  Both are facts of the configuration, like ``n_params``
(``info`` metrics: the diff reports a change, never a regression).  A plugin block or mixer has no formula:
its cells write a ``state_bytes`` row with status ``skipped`` that says so, rather than nothing.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Union

import torch

from harness.cells import make_row

METRICS = ("state_elements", "state_bytes")


def state_size_rows(model: Union[Mapping[str, Any], Any], seq_len: int, dtype: Union[str, torch.dtype] = "fp32",
                    n_layers: int = None) -> Iterator[Dict[str, Any]]:
    """``state_elements`` and ``state_bytes`` rows for ``model`` (a ``model:`` section or ModelConfig) after
    ``seq_len`` tokens (column ``context_len``); ``n_layers`` overrides the section's (1 for impl layer)."""
    from models.state_size import state_size
    section = dict(model) if isinstance(model, Mapping) else model.model_dump()
    if n_layers is not None:
        section["n_layers"] = n_layers
    try:
        size = state_size(section, seq_len, dtype)
    except ValueError as e:             # a plugin arch / mixer: no formula
        yield make_row("state_bytes", None, "bytes", status="skipped", message=str(e), context_len=int(seq_len))
        return
    yield make_row("state_elements", size["elements"], "elements", context_len=int(seq_len))
    yield make_row("state_bytes", size["bytes"], "bytes", context_len=int(seq_len))
