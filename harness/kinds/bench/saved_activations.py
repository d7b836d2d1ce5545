"""Bytes autograd keeps for the backward: a device-independent measure of activation memory.

Peak memory (``peak_memory.py``) says how much a step needed at its worst, on one device and allocator.
This counts what the forward *saves* for the backward -- each tensor storage once, leaves (parameters,
inputs) left out, autocast's weight copies included -- through ``torch.autograd.graph.saved_tensors_hooks``.
It is exact and the same on every machine for the same code path (a backend that saves different
tensors gives a different number: the CPU's chunked scan is not the GPU's Triton scan), so CI can watch
it where CPU RSS is too noisy, and a block's activation footprint can be compared with a paper's.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch


class SavedActivations:
    """``with SavedActivations() as saved: loss = model(x)...`` then ``saved.bytes``."""

    def __init__(self) -> None:
        self._storages: Dict[Tuple[str, int], int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if not (t.is_leaf and t.requires_grad):  # a parameter or an input: held anyway, not an activation
            storage = t.untyped_storage()
            self._storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> "SavedActivations":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())
