"""Will a cell fit?  A lower bound on the memory a cell must hold, checked before it allocates.

A task cell with ``seq_len: 1e9`` used to grow to ~12 GB of host memory before the allocator gave up
(or the OS killed the run): the estimate here lets :func:`too_large` skip such a cell at once, its
``skipped`` row saying what was estimated and what was free.

The estimates are *lower bounds* (inputs, and the activations a pass cannot avoid holding, in the
smallest dtype a cell may use), so a cell skipped by them could not have run; a cell that passes may
still run out of memory, and then ends ``oom`` as before.  Each kind wires its estimate into
``KindSpec.estimate_bytes``; free memory is ``psutil``'s available memory on the CPU and
``torch.cuda.mem_get_info`` on a GPU.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

GiB = 2**30
TOKEN_BYTES = 8         # int64 token ids
MIN_ACT_BYTES = 2       # bf16: the smallest activation dtype a cell may train or run in


def _size(cfg: Any, name: str, default: int) -> int:
    value = getattr(cfg, name, None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def task_bytes(cfg: Any) -> int:
    """A training step: input and target ids, one activation per layer (and the embedding) kept for
    the backward, and the logits."""
    tokens = cfg.train.batch * cfg.task.seq_len
    model = cfg.model
    per_token = (2 * TOKEN_BYTES + (model.n_layers + 1) * model.d_model * MIN_ACT_BYTES
                 + cfg.task.vocab * MIN_ACT_BYTES)
    return tokens * per_token


def bench_bytes(cfg: Any) -> int:
    """One pass of a benchmark target: its input and output (``batch x seq_len x width`` each in the
    cell's dtype); a whole model (``impl: model | layer``) holds the token ids and one activation per layer."""
    elem = cfg.torch_dtype.itemsize
    tokens = cfg.batch * cfg.seq_len
    model = getattr(cfg, "model", None)
    if model is not None:
        d_model, layers = _size(model, "d_model", cfg.d_model), _size(model, "n_layers", 1)
        return tokens * (TOKEN_BYTES + (layers + 1) * d_model * elem)
    return 2 * tokens * cfg.width * elem


def decode_bytes(cfg: Any) -> int:
    """Recurrent decoding: the prompt and generated ids, and the prefill's activations of the prompt."""
    d_model = _size(cfg.model, "d_model", 1) if getattr(cfg, "model", None) is not None else 1
    return (cfg.batch * (cfg.prompt_len + cfg.gen_len) * TOKEN_BYTES
            + cfg.batch * cfg.prompt_len * d_model * cfg.torch_dtype.itemsize)


def free_bytes(device: str) -> Optional[int]:
    """Memory a cell may still allocate on ``device`` (None when it cannot be told)."""
    try:
        if str(device).startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                return None
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        import psutil
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no estimate is better than a failed cell
        return None


def too_large(estimate: Callable[[Any], Optional[int]], cell: Any, device: str) -> Optional[str]:
    """Why ``cell`` cannot fit on ``device`` (its estimate exceeds the free memory), else None."""
    try:
        need = estimate(cell)
    except Exception:  # noqa: BLE001 - an invalid cell fails in run_cell, with its own message
        return None
    if not need:
        return None
    free = free_bytes(device)
    if free is None or need <= free:
        return None
    return (f"estimated to need at least {need / GiB:,.1f} GiB (inputs and activations) but {device} has "
            f"{free / GiB:,.1f} GiB free: skipped before allocating; lower the sizes (seq_len, batch)")
