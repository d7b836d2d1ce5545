"""What a benchmark target hands the timer: one callable per pass, plus its cost model.

A target (an entry of :data:`harness.kinds.bench.IMPLS`) builds its inputs once, outside the timed region,
and returns a :class:`Workload` whose ``fn`` runs exactly one pass (fwd, fwd+bwd, or a training
step).  The cost fields (minimal HBM bytes, flops, exponentials) are what the kinds turn into
``achieved_GBps`` and ``roofline_fraction``; ``None`` means "not declared", never zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from harness.cells import CellSkipped


@dataclass
class Workload:
    fn: Callable[[], Any]          # one pass; inputs already built and on the device
    tokens: int                    # tokens processed per call (batch * seq_len), for tokens_per_s
    bytes: Optional[float] = None  # minimal bytes that must cross device memory per call
    flops: Optional[float] = None  # matmul-class flops per call
    exps: Optional[float] = None   # special-function (exp) evaluations per call
    info: Dict[str, Any] = field(default_factory=dict)  # extra facts for rows (e.g. n_params)


@dataclass(frozen=True)
class Impl:
    """A registered benchmark target: ``build(cfg, device) -> Workload`` for a pass in ``passes``.

    ``uses_heads``: the target splits the width into ``heads`` (so the config checks they divide it).
    """

    name: str
    build: Callable[[Any, str], Workload]
    passes: Sequence[str] = ("fwd", "fwd+bwd")
    needs_cuda: bool = False
    level: str = "op"              # "op" | "model"
    uses_heads: bool = False

    def workload(self, cfg: Any, device: str) -> Workload:
        if self.needs_cuda and not str(device).startswith("cuda"):
            raise CellSkipped(f"impl {self.name!r} needs a CUDA device (this cell's device is {device!r})")
        if cfg.pass_ not in self.passes:
            raise CellSkipped(f"impl {self.name!r} does not support pass {cfg.pass_!r} "
                              f"(supports: {', '.join(self.passes)})")
        return self.build(cfg, device)


def forward_or_backward(forward: Callable[[], torch.Tensor], leaves: Sequence[torch.Tensor],
                        pass_: str) -> Callable[[], Any]:
    """The timed callable for ``pass_``: forward under no_grad, or forward + backward.

    The backward uses ``torch.autograd.grad`` with a fixed random output gradient built once here,
    so repeated calls neither accumulate into ``.grad`` nor time the creation of ``dy``.
    """
    if pass_ == "fwd":
        def fwd() -> Any:
            with torch.no_grad():
                return forward()
        return fwd
    if pass_ != "fwd+bwd":
        raise ValueError(f"pass {pass_!r}: expected fwd or fwd+bwd")
    leaves = [t for t in leaves if t.requires_grad]
    with torch.no_grad():
        probe = forward()
    dy = torch.randn_like(probe)
    del probe

    def fwd_bwd() -> Any:
        y = forward()
        return torch.autograd.grad(y, leaves, dy)
    return fwd_bwd
