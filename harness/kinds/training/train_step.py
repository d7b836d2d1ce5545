"""One optimizer step of the training loop, run eagerly or replayed from a CUDA graph.

Why a graph: a synthetic-task model is tiny (2 layers, d_model 64), so alone on a GPU its step is
host-bound: on the H200 a selective-copying step took 9-16 ms of wall time for 1.2-5.4 ms of kernels
(220-400 launches; reports/gpu/README.md, 2026-12-02).  Capturing the whole step once -- forward under
autocast, loss, backward, gradient clipping, optimizer update -- and replaying it leaves the host only
the batch copy and the lr update.  It does not help when many cells already keep the GPU busy together
(the quick suites' ``jobs: 8``); it helps a cell that runs alone.

The graph needs: fixed shapes (the training batch is the same shape every step), no host
synchronisation inside the step (the answer loss is sync-free for that reason), an optimizer built with
``capturable=True`` and tensor learning rates (``make_optimizer(..., capturable=True)``), and every
kernel compiled before capture, so the first ``WARMUP_STEPS`` steps run eagerly on a side stream (they
are real steps, with their own batches), as torch's whole-network capture recipe asks.  If capture
fails, the step says why (:attr:`GraphedStep.fallback_reason`) and goes on eagerly: nothing is lost.

Status: opt-in (``train.cuda_graph``).  On the H200 (2026-12-02) its GPU test
(``tests/test_task_kind.py::test_cuda_graph_step_trains_like_the_eager_step``, 5 mixers) passed, and a
quick-suite cell alone went from 6.92 to 2.83 ms per step (none/S6), 8.42 to 3.97 (H3/S4), 6.40 to 4.68
(Mamba/S6) (harness/studies/graph_step_timing.py).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from harness.kinds.tasks.base import TaskBatch

LossFn = Callable[[TaskBatch], torch.Tensor]  # batch -> scalar loss, with autograd


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Each group's lr = ``lr`` x its ``lr_scale``; a tensor lr (a graphed optimizer) is filled in place."""
    for group in optimizer.param_groups:
        value = lr * group.get("lr_scale", 1.0)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


class EagerStep:
    """zero_grad, backward, clip, update; returns the detached loss (no host synchronisation)."""

    graphed = False

    def __init__(self, loss_fn: LossFn, optimizer: torch.optim.Optimizer, params: List[torch.nn.Parameter],
                 grad_clip: Optional[float]):
        self.loss_fn, self.optimizer, self.params, self.grad_clip = loss_fn, optimizer, params, grad_clip

    def _loss_backward_update(self, batch: TaskBatch) -> torch.Tensor:
        """Everything but zero_grad: the part a graph holds (its backward rewrites the .grad it allocated)."""
        loss = self.loss_fn(batch)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def _update(self, batch: TaskBatch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self._loss_backward_update(batch)

    def __call__(self, batch: TaskBatch) -> torch.Tensor:
        return self._update(batch)


class GraphedStep(EagerStep):
    """The same step, captured as a CUDA graph after ``WARMUP_STEPS`` eager steps and replayed after that.

    ``loss_fn`` must be capturable (autocast with ``cache_enabled=False``, no host syncs) and the optimizer
    built with ``capturable=True`` and tensor learning rates.
    """

    WARMUP_STEPS = 3

    def __init__(self, loss_fn: LossFn, optimizer: torch.optim.Optimizer, params: List[torch.nn.Parameter],
                 grad_clip: Optional[float], device: torch.device):
        super().__init__(loss_fn, optimizer, params, grad_clip)
        self.device = device
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_batch: Optional[TaskBatch] = None
        self.static_loss: Optional[torch.Tensor] = None
        self.fallback_reason: Optional[str] = None
        self.steps_done = 0
        self._side_stream = torch.cuda.Stream(device=device)

    @property
    def graphed(self) -> bool:  # replaying a captured graph (not warming up, not fallen back)
        return self.graph is not None

    def __call__(self, batch: TaskBatch) -> torch.Tensor:
        with torch.cuda.device(self.device):  # streams and the capture belong to the training device
            return self._step(batch)

    def _step(self, batch: TaskBatch) -> torch.Tensor:
        self.steps_done += 1
        if self.graph is not None:
            return self._replay(batch)
        if self.fallback_reason is not None:
            return self._update(batch)
        if self.steps_done <= self.WARMUP_STEPS:
            return self._warmup_step(batch)
        try:
            self._capture(batch)
        except Exception as err:  # noqa: BLE001 - any capture failure means: run eagerly, and say why
            self.graph, self.static_batch, self.static_loss = None, None, None
            first_line = (str(err).splitlines() or [""])[0]
            self.fallback_reason = f"CUDA graph capture failed ({type(err).__name__}: {first_line}); ran eagerly"
            torch.cuda.synchronize()
            return self._update(batch)
        return self._replay(batch, copy=False)

    def _warmup_step(self, batch: TaskBatch) -> torch.Tensor:
        main = torch.cuda.current_stream()
        self._side_stream.wait_stream(main)
        with torch.cuda.stream(self._side_stream):
            loss = self._update(batch)
        main.wait_stream(self._side_stream)
        return loss

    def _capture(self, batch: TaskBatch) -> None:
        self.static_batch = TaskBatch(batch.inputs.clone(), batch.targets.clone(), batch.mask.clone())
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)  # backward inside the graph allocates (then rewrites) .grad
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss = self._loss_backward_update(self.static_batch)
        self.graph = graph

    def _replay(self, batch: TaskBatch, copy: bool = True) -> torch.Tensor:
        if copy:
            self.static_batch.inputs.copy_(batch.inputs)
            self.static_batch.targets.copy_(batch.targets)
            self.static_batch.mask.copy_(batch.mask)
        self.graph.replay()
        return self.static_loss
