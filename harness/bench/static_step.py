"""A recurrent decoding step over static buffers, replayed from a CUDA graph: decode ``cuda_graph: true``.

Why: one decoding step of a 24-layer model is hundreds of small kernels, so eager decoding measures launch
overhead, not the model: on the H100 a Mamba token took 12-16 ms at every batch size (reports/gpu/README.md,
quick-decode), which hides the paper's point that a recurrent state makes generation cheap.  mamba_ssm's
generation benchmark captures the step in a CUDA graph for this reason.

A graph replays fixed addresses, so the token and every tensor of the state live in static buffers: the
captured step reads them, writes the new state over them (``copy_`` inside the graph) and writes the next
token (the argmax) into the token buffer; prefill copies the prompt's next token over it before each replay.
Only a state whose tensors keep their shapes and whose Python values do not change can be captured: the
Transformer's KV cache grows and counts its length, and learned absolute positions need the step's position
as a number.  For those :func:`capture_problem` says why, and the caller decodes eagerly.  Without
``capture`` (the CPU) the stepper runs the same static-buffer logic eagerly, which is what the CPU tests check.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch

WARMUP_STEPS = 3   # eager steps on a side stream before capture (kernels compiled, allocator warmed)


def leaves(obj: Any) -> List[Any]:
    """The leaves of a nested state (dicts in key order, lists, tuples)."""
    if isinstance(obj, dict):
        return [x for k in sorted(obj) for x in leaves(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in leaves(v)]
    return [obj]


def copy_state_(dst: Any, src: Any) -> None:
    """Copy every tensor leaf of ``src`` into the same leaf of ``dst`` (same structure), in place."""
    for d, s in zip(leaves(dst), leaves(src)):
        if isinstance(d, torch.Tensor):
            d.copy_(s)


def capture_problem(lm: torch.nn.Module, before: Any, after: Any) -> Optional[str]:
    """Why a step from state ``before`` to ``after`` cannot be replayed from a graph, or None."""
    if getattr(lm, "pos_embedding", None) is not None:
        return "learned absolute positions (pos: abs) index a table by the step's position"
    old, new = leaves(_without_pos(before)), leaves(_without_pos(after))
    if len(old) != len(new):
        return "the decoding state changes structure from step to step"
    for a, b in zip(old, new):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return "the decoding state changes structure from step to step"
        if isinstance(a, torch.Tensor):
            if a.shape != b.shape or a.dtype != b.dtype:
                return f"a state tensor changes shape or dtype ({tuple(a.shape)} -> {tuple(b.shape)}): a growing cache"
        elif a != b:
            return f"the state holds a number that changes every step ({a!r} -> {b!r}), e.g. a KV-cache length"
    return None


def _without_pos(state: Any) -> Any:
    """The LM's step position is tracked by the stepper, not replayed."""
    return {k: v for k, v in state.items() if k != "pos"} if isinstance(state, dict) else state


class StaticStepper:
    """``lm.step`` over static token/state buffers; with ``capture`` (CUDA) replayed from one graph.

    ``step(token)`` feeds ``token`` (or, with None, the argmax of the previous step's logits) and leaves the
    logits in :attr:`logits`; ``reset()`` restores the fresh state in place.
    """

    def __init__(self, lm: torch.nn.Module, init_state: Callable[[], Any], batch: int, device: str,
                 capture: bool):
        self.lm, self.init_state = lm, init_state
        self.state = init_state()
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.logits: Optional[torch.Tensor] = None
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        if capture:
            self._capture()

    def _step_in_place(self) -> torch.Tensor:
        logits, new = self.lm.step(self.token, self.state)
        copy_state_(_without_pos(self.state), _without_pos(new))
        self.token.copy_(logits.argmax(-1))
        return logits

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._step_in_place()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step_in_place()
        self.reset()

    def reset(self) -> None:
        copy_state_(_without_pos(self.state), _without_pos(self.init_state()))
        if isinstance(self.state, dict) and "pos" in self.state:
            self.state["pos"] = 0
        self.token.zero_()

    def step(self, token: Optional[torch.Tensor] = None) -> None:
        if token is not None:
            self.token.copy_(token)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self._step_in_place()
        if isinstance(self.state, dict) and "pos" in self.state:
            self.state["pos"] += 1
