"""What a benchmark target hands the timer: one callable per pass, plus its cost model.

A target (an entry of :data:`harness.kinds.bench.IMPLS`) builds its inputs once, outside the timed region,
and returns a :class:`Workload` whose ``fn`` runs exactly one pass (fwd, fwd+bwd, or a training
step).  The cost fields (minimal HBM bytes, flops, exponentials) are what the kinds turn into
``achieved_GBps`` and ``roofline_fraction``; ``None`` means "not declared", never zero.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

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
    ``gate(cfg, device) -> GateCase``: the target and its reference (named ``reference_name``) on a problem,
    for the correctness gate (harness/kinds/bench/gate.py); None: not gated.
    ``requires``: (import name, how to get it) of the packages a peer target needs: a missing one skips the
    cell with that hint; nothing is imported before the cell runs.
    ``dtypes``: the cell dtypes the target supports (others are skipped), None for all.
    ``declines(cfg, device) -> reason | None``: a peer's own refusal to run this cell here (its guard against a
    known bug of the toolchain under it), asked at the cell's start, after the package check: the reason skips the
    cell, where the peer's error would have made it an ``error`` row though nothing of ssmbench's is wrong.
    """

    name: str
    build: Callable[[Any, str], Workload]
    passes: Sequence[str] = ("fwd", "fwd+bwd")
    needs_cuda: bool = False
    level: str = "op"              # "op" | "model"
    uses_heads: bool = False
    gate: Optional[Callable[[Any, str], Any]] = None
    reference_name: str = ""
    requires: Tuple[Tuple[str, str], ...] = ()
    dtypes: Optional[Sequence[str]] = None
    declines: Optional[Callable[[Any, str], Optional[str]]] = None

    def check_runnable(self, cfg: Any, device: str) -> None:
        """Raise CellSkipped, saying why, when this cell cannot run here (package, device, pass, dtype, or the
        peer declines)."""
        for package, how in self.requires:
            if not package_installed(package):
                raise CellSkipped(f"impl {self.name!r} needs the package {package!r}, which is not installed here: "
                                  f"{how}")
        if self.needs_cuda and not str(device).startswith("cuda"):
            raise CellSkipped(f"impl {self.name!r} needs a CUDA device (this cell's device is {device!r})")
        if cfg.pass_ not in self.passes:
            raise CellSkipped(f"impl {self.name!r} does not support pass {cfg.pass_!r} "
                              f"(supports: {', '.join(self.passes)})")
        if self.dtypes is not None and getattr(cfg, "dtype", None) not in self.dtypes:
            raise CellSkipped(f"impl {self.name!r} does not support dtype {cfg.dtype!r} "
                              f"(supports: {', '.join(self.dtypes)})")
        reason = self.declines(cfg, device) if self.declines is not None else None
        if reason:
            raise CellSkipped(f"impl {self.name!r}: {reason}")

    def workload(self, cfg: Any, device: str) -> Workload:
        self.check_runnable(cfg, device)
        return self.build(cfg, device)


def package_installed(name: str) -> bool:
    """Whether ``import name`` would find a top-level package, without importing it."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


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
