"""A recurrent decoding step over static buffers, replayed from a CUDA graph: decode ``cuda_graph: true``.

Why: one decoding step of a 24-layer model is hundreds of small kernels, so eager decoding measures launch
overhead, not the model: on the H100 a Mamba token took 12-16 ms at every batch size (reports/gpu/README.md,
quick-decode), which hides the paper's point that a recurrent state makes generation cheap.  mamba_ssm's
generation benchmark captures the step in a CUDA graph for this reason.

A graph replays fixed addresses, so the token and every tensor of the state live in static buffers: the
captured step reads them, writes the new state over them (``copy_`` inside the graph; a tensor the step
updated in place, as a static KV cache's keys and values, is not copied onto itself) and writes the next
token (the argmax) into the token buffer; prefill copies the prompt's next token over it before each replay.
Only a state whose tensors keep their shapes and whose Python values do not change can be captured.  Mamba's
(and the other SSMs') state is fixed-size; the Transformer's is too when it is built static
(``lm.init_state(..., capacity, static=True)``: KV caches of a fixed capacity whose length, like the LM's
position, is a device tensor; models/attention.py), which is what the decode kind asks for under
``cuda_graph``, with pos rope, xpos or abs alike.  The default growing KV cache (its length a Python int), a
growing Hyena history, or learned absolute positions read at a Python position cannot: for those
:func:`capture_problem` says why, and the caller decodes eagerly.  A Python-int ``pos`` of the LM state is
not part of the graph: the stepper counts it outside (nothing in the graphed step reads it).  Without
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
    """Copy every tensor leaf of ``src`` into the same leaf of ``dst`` (same structure), in place; a leaf that
    is already the same tensor (a step that wrote its buffer in place) is left alone."""
    for d, s in zip(leaves(dst), leaves(src)):
        if isinstance(d, torch.Tensor) and d is not s:
            d.copy_(s)


def static_capacity(steps: int) -> int:
    """KV-cache capacity for a static state that runs ``steps`` steps between resets and may be captured:
    at least the :data:`WARMUP_STEPS` eager steps :meth:`StaticStepper.capture` runs from a reset state."""
    return max(int(steps), WARMUP_STEPS)


def capture_problem(lm: torch.nn.Module, before: Any, after: Any) -> Optional[str]:
    """Why a step from state ``before`` to ``after`` cannot be replayed from a graph, or None."""
    if getattr(lm, "pos_embedding", None) is not None and not _tensor_pos(before):
        return ("learned absolute positions (pos: abs) index a table by the step's position (a Python int; "
                "a static state, init_state(static=True), carries it as a tensor)")
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


def _tensor_pos(state: Any) -> bool:
    return isinstance(state, dict) and isinstance(state.get("pos"), torch.Tensor)


def _int_pos(state: Any) -> bool:
    """Whether the state carries the LM's step position as a Python int (a static state's is a tensor)."""
    return isinstance(state, dict) and "pos" in state and not isinstance(state["pos"], torch.Tensor)


def _without_pos(state: Any) -> Any:
    """The LM's step position when it is a Python int: tracked by the stepper, not replayed (a tensor position,
    a static state's, is a state buffer like any other)."""
    return {k: v for k, v in state.items() if k != "pos"} if _int_pos(state) else state


class StaticStepper:
    """``lm.step`` over static token/state buffers; with ``capture`` (CUDA) replayed from one graph.

    ``step(token)`` feeds ``token`` (or, with None, the argmax of the previous step's logits) and leaves the
    logits in :attr:`logits`; ``reset()`` restores the fresh state in place, without allocating a second
    state (a static KV cache is large): a tensor that ``init_state`` makes all zeros is zeroed, any other is
    copied back from a snapshot taken at construction (S4's discretised matrices, say).
    """

    def __init__(self, lm: torch.nn.Module, init_state: Callable[[], Any], batch: int, device: str,
                 capture: bool):
        self.lm, self.init_state = lm, init_state
        self.state = init_state()
        # what reset() restores: None for a tensor that starts all zeros (zeroed), else a copy of its start
        self._fresh = [t.clone() if isinstance(t, torch.Tensor) and not bool((t == 0).all()) else None
                       for t in leaves(_without_pos(self.state))]
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.logits: Optional[torch.Tensor] = None
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        if capture:
            self.capture()

    def problem(self) -> Optional[str]:
        """:func:`capture_problem` for this stepper's state, from one probe step on its own buffers (then reset)."""
        try:
            _, after = self.lm.step(self.token, self.state)
            return capture_problem(self.lm, self.state, after)
        finally:
            self.reset()

    def _step_in_place(self) -> torch.Tensor:
        logits, new = self.lm.step(self.token, self.state)
        copy_state_(_without_pos(self.state), _without_pos(new))
        self.token.copy_(logits.argmax(-1))
        return logits

    def warm_up(self) -> None:
        """:data:`WARMUP_STEPS` eager steps from a reset state (a static cache needs that many slots), then reset."""
        self.reset()
        for _ in range(WARMUP_STEPS):
            self._step_in_place()
        self.reset()

    def capture(self) -> None:
        """Warm up on a side stream, capture one step into :attr:`graph` and reset (CUDA only)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.warm_up()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step_in_place()
        self.reset()

    def reset(self) -> None:
        for buf, fresh in zip(leaves(_without_pos(self.state)), self._fresh):
            if isinstance(buf, torch.Tensor):
                buf.zero_() if fresh is None else buf.copy_(fresh)
        if _int_pos(self.state):
            self.state["pos"] = 0
        self.token.zero_()

    def load(self, state: Any, logits: torch.Tensor) -> None:
        """Go on from ``state`` (a prefill's, same structure as this stepper's): copied into the static buffers,
        the next token the argmax of ``logits``."""
        copy_state_(_without_pos(self.state), _without_pos(state))
        if _int_pos(self.state):
            self.state["pos"] = int(state["pos"])
        self.token.copy_(logits.argmax(-1))

    def step(self, token: Optional[torch.Tensor] = None) -> None:
        if token is not None:
            self.token.copy_(token)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self._step_in_place()
        if _int_pos(self.state):
            self.state["pos"] += 1
