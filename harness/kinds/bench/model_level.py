"""Layer- and model-level benchmark targets built from a cell's ``model:`` section.

``layer``: one backbone layer (``models.build_block``) on (batch, seq_len, d_model) activations.
``model``: a whole language model (``models.build_lm``) on (batch, seq_len) tokens, loss = cross
entropy.  Parameters stay in fp32 and ``dtype`` bf16/fp16 runs the pass under autocast: mixed
precision, the set-up of the Mamba paper's training-memory table (PAPER_FACTS.md 4.4).  The flat
keys ``d_model, expand, d_state, heads`` of the cell do not apply here; the ``model:`` section does.
Passes: ``fwd``, ``fwd+bwd`` and ``train_step`` (fwd+bwd, then an AdamW step).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, List

import torch

from harness.kinds.bench.costs import model_flops
from harness.kinds.bench.workload import Impl, Workload, forward_or_backward

PASSES = ("fwd", "fwd+bwd", "train_step")


def autocast_for(cfg: Any, device: str):
    """Mixed precision for bf16/fp16 cells, nothing for fp32."""
    if cfg.dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=cfg.torch_dtype)


def _train_step(loss_fn: Callable[[], torch.Tensor], params: List[torch.nn.Parameter]) -> Callable[[], Any]:
    """One optimizer step: the optimizer's state (2 fp32 moments) exists after the first call,
    so warm-up calls bring memory to its steady state before anything is measured."""
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> Any:
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def _models():
    import models  # the models package registers every mixer/arch on import
    return models


def on_device(build: Callable[[], torch.nn.Module], device: str) -> torch.nn.Module:
    """Build the module with its tensors created on ``device`` (no host copy of a large model
    first); move it only if something was still created elsewhere."""
    with torch.device(device):
        module = build()
    target = torch.device(device)
    if any(t.device.type != target.type for t in (*module.parameters(), *module.buffers())):
        module = module.to(device)
    return module


def _build_layer(cfg: Any, device: str) -> Workload:
    models = _models()
    mcfg = models.as_config(cfg.model_dict())
    block = on_device(lambda: models.build_block(mcfg), device)
    params = [p for p in block.parameters() if p.requires_grad]
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, cfg.seq_len, mcfg.d_model, generator=g, device=device)
    x.requires_grad_(cfg.pass_ != "fwd")

    def forward() -> torch.Tensor:
        with autocast_for(cfg, device):
            return block(x)
    if cfg.pass_ == "train_step":
        dy = torch.randn(x.shape, generator=g, device=device)
        fn = _train_step(lambda: (forward().float() * dy).sum(), params)
    else:
        fn = forward_or_backward(forward, [x, *params], cfg.pass_)
    n_params = models.count_params(block)
    tokens = cfg.batch * cfg.seq_len
    return Workload(fn, tokens=tokens, flops=model_flops(n_params, tokens, cfg.pass_), info={"n_params": n_params})


def _build_model(cfg: Any, device: str) -> Workload:
    models = _models()
    from models.lm_loss import lm_cross_entropy
    lm = on_device(lambda: models.build_lm(cfg.model_dict(), cfg.vocab), device)
    params = [p for p in lm.parameters() if p.requires_grad]
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    tokens = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len), generator=g, device=device)
    targets = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len), generator=g, device=device)

    def loss() -> torch.Tensor:
        with autocast_for(cfg, device):
            return lm_cross_entropy(lm.hidden(tokens), lm.embedding.weight, targets, chunk=cfg.loss_chunk)

    if cfg.pass_ == "fwd":
        def fn() -> Any:
            with torch.no_grad(), autocast_for(cfg, device):
                return lm(tokens)
    elif cfg.pass_ == "fwd+bwd":
        def fn() -> Any:
            return torch.autograd.grad(loss(), params)
    else:
        fn = _train_step(loss, params)
    n_params = models.count_params(lm)
    n_tokens = cfg.batch * cfg.seq_len
    return Workload(fn, tokens=n_tokens, flops=model_flops(n_params, n_tokens, cfg.pass_),
                    info={"n_params": n_params})


LAYER = Impl("layer", _build_layer, passes=PASSES, level="model")
MODEL = Impl("model", _build_model, passes=PASSES, level="model")
