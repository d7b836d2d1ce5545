"""``kind: decode``: per-token latency and throughput of recurrent ``step`` decoding.

Per repeat: a fresh state (``lm.init_state(batch, device, dtype)``; under a CUDA graph the stepper's static
state, reset in place), the prefill of the ``prompt_len`` prompt tokens, then ``gen_len`` greedy tokens.
``prefill: parallel`` (the default) reads the prompt through ``lm.prefill`` (models/prefill.py): Mamba's conv and
scan and attention's KV-cache fill run once over the whole prompt, as in the paper's throughput and Hugging
Face's ``generate``; blocks with no parallel prefill (H3, S4, Hyena) step through it.  ``prefill: step`` feeds
the prompt one token at a time through ``lm.step`` for every block (every decode row
committed up to 2026-12-02 was measured so).  Either way the generation is the same, up to rounding.  Mamba carries a constant-size state; the
Transformer's ``step`` appends to a KV cache, so its per-token cost grows with the context.

KV cache: eager cells (``cuda_graph`` false, or a graph refused) use the default growing cache, attending over
the tokens so far.  ``cuda_graph: true`` builds every state static (``lm.init_state(..., capacity, static=True)``,
capacity ``prompt_len + gen_len``, at least the stepper's warm-up steps): the Transformer's KV cache is then
preallocated and each step attends over the whole capacity under a mask (HF transformers' StaticCache,
gpt-fast), so it is replayed from a CUDA graph like Mamba's step.  A parallel prefill runs eagerly and is loaded
into the stepper's buffers; a stepped one's early steps cost as much as the last ones (masked attention over the
whole capacity).  ``state_bytes`` is then the full preallocated cache.

Rows: ``prefill_ms`` and ``decode_ms_per_token`` (one per repeat), then their medians and IQR,
``tokens_per_s`` (batch * gen_len / generation time), ``end_to_end_tokens_per_s`` (batch * gen_len /
(prefill + generation): the Mamba paper's throughput, PAPER_FACTS.md 4.3), ``state_bytes`` (the
decoding state after the last token), peak memory and ``n_params``.  The model is cast to ``dtype``
(inference weights, like mamba_ssm's generation benchmark).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional

import torch

from harness.kinds.bench.config import DecodeConfig, cell_device
from harness.kinds.bench.device_info import GPU_STATE_METRICS, gpu_meta, gpu_state_rows
from harness.kinds.bench.skips import skip_reason
from harness.kinds.bench.static_step import StaticStepper, leaves, static_capacity
from harness.kinds.bench.model_level import on_device
from harness.kinds.bench.peak_memory import PEAK_METRICS, PeakMemory
from harness.kinds.bench.timing import iqr, make_timer, median, synchronize
from harness.cells import Cell, CellContext, make_row
from harness.kinds import KindSpec
from harness.kinds.footprint import decode_bytes


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor inside a nested state (dicts, lists, tuples)."""
    return sum(x.numel() * x.element_size() for x in leaves(obj) if isinstance(x, torch.Tensor))


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module.to(dtype)`` for floating parameters and buffers, done tensor by tensor so that a
    submodule overriding ``nn.Module._apply`` cannot break it."""
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None and p.is_floating_point():
                p.data = p.data.to(dtype)
        for name, b in m._buffers.items():
            if b is not None and b.is_floating_point():
                m._buffers[name] = b.to(dtype)
    return module


class Decoder:
    """Greedy recurrent decoding of one batch; ``prefill`` and ``generate`` are the timed parts.  With a
    :class:`StaticStepper` every step goes through it (replayed from a CUDA graph when it captured one)."""

    def __init__(self, lm: torch.nn.Module, cfg: DecodeConfig, device: str, ctx: CellContext,
                 stepper: Optional[StaticStepper] = None):
        self.lm, self.cfg, self.device, self.ctx, self.stepper = lm, cfg, device, ctx, stepper
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        self.prompt = torch.randint(0, cfg.vocab, (cfg.batch, max(cfg.prompt_len, 1)), generator=g, device=device)
        self.reset()

    def reset(self) -> None:
        if self.stepper is not None:
            self.stepper.reset()
            self.state = self.stepper.state
        else:
            self.state = self.lm.init_state(self.cfg.batch, self.device, self.cfg.torch_dtype)
        self.logits = None

    def prefill(self) -> None:
        if self.cfg.prompt_len == 0:
            return
        if self.cfg.prefill == "parallel":
            self.ctx.check_deadline()
            logits, state = self.lm.prefill(self.prompt[:, : self.cfg.prompt_len], self.state)
            if self.stepper is not None:
                self.stepper.load(state, logits)
            else:
                self.state = state
            self.logits = logits
            return
        for t in range(self.cfg.prompt_len):
            self.ctx.check_deadline()
            if self.stepper is not None:
                self.stepper.step(self.prompt[:, t])
                self.logits = self.stepper.logits
            else:
                self.logits, self.state = self.lm.step(self.prompt[:, t], self.state)

    def generate(self) -> None:
        token = self.prompt[:, 0] if self.logits is None else self.logits.argmax(-1)
        for i in range(self.cfg.gen_len):
            self.ctx.check_deadline()
            if self.stepper is not None:   # after a step the stepper's token buffer holds its argmax already
                self.stepper.step(token if i == 0 and self.logits is None else None)
                self.logits = self.stepper.logits
                continue
            self.logits, self.state = self.lm.step(token, self.state)
            token = self.logits.argmax(-1)


def run_cell(cell: Cell, ctx: CellContext) -> Iterator[Dict[str, Any]]:
    import models
    cfg = DecodeConfig.model_validate(cell.params)
    device = cell_device(cfg, ctx)
    torch.manual_seed(cfg.seed)
    synchronize(device)
    baseline = PeakMemory.current_bytes(device)
    lm = cast_floating(on_device(lambda: models.build_lm(cfg.model_dict(), cfg.vocab), device), cfg.torch_dtype)
    lm.eval()
    timer = make_timer(device, flush_l2=False)
    prefill_ms, token_ms = [], []
    with torch.inference_mode(), PeakMemory(device, baseline_bytes=baseline) as peak:
        stepper, graph_note = _stepper(lm, cfg, device)
        dec = Decoder(lm, cfg, device, ctx, stepper)
        for _ in range(cfg.warmup):
            dec.reset()
            dec.prefill()
            dec.generate()
        for i in range(cfg.repeats):
            dec.reset()
            prefill_ms.append(timer(dec.prefill))
            token_ms.append(timer(dec.generate) / cfg.gen_len)
            yield make_row("prefill_ms", prefill_ms[-1], "ms", repeat=i)
            yield make_row("decode_ms_per_token", token_ms[-1], "ms", repeat=i)
        state_bytes = tensor_bytes(dec.state)
    gen_s = median(token_ms) * cfg.gen_len / 1e3
    total_s = gen_s + median(prefill_ms) / 1e3
    yield make_row("prefill_ms_median", median(prefill_ms), "ms")
    yield make_row("decode_ms_per_token_median", median(token_ms), "ms")
    yield make_row("decode_ms_per_token_iqr", iqr(token_ms), "ms")
    if gen_s > 0:
        yield make_row("tokens_per_s", cfg.batch * cfg.gen_len / gen_s, "tokens/s")
        yield make_row("end_to_end_tokens_per_s", cfg.batch * cfg.gen_len / total_s, "tokens/s")
    yield make_row("state_bytes", state_bytes, "bytes", context_len=cfg.prompt_len + cfg.gen_len)
    if cfg.cuda_graph:   # 1: every step replayed from one CUDA graph; 0: eager (message: why)
        yield make_row("cuda_graph", int(stepper is not None), "", message=graph_note)
    yield make_row("n_params", models.count_params(lm), "")
    yield from peak.rows()
    yield from gpu_state_rows(device)


def static_init_state(lm: torch.nn.Module, cfg: DecodeConfig, device: str) -> Callable[[], Any]:
    """A fresh static decoding state for this cell: KV caches of capacity ``prompt_len + gen_len`` (at least the
    stepper's warm-up steps, which run from a reset state), the position a device tensor."""
    capacity = static_capacity(cfg.prompt_len + cfg.gen_len)
    return lambda: lm.init_state(cfg.batch, device, cfg.torch_dtype, capacity=capacity, static=True)


def _stepper(lm: torch.nn.Module, cfg: DecodeConfig, device: str):
    """(a capturing StaticStepper, None) when ``cuda_graph`` is asked for and possible, else (None, why not).

    The stepper's state is static (see the module docstring): fixed-capacity KV caches for attention, with room
    for the prefill, the generation and the warm-up steps run before capture."""
    if not cfg.cuda_graph:
        return None, None
    if torch.device(device).type != "cuda":
        return None, "cuda_graph is ignored on the CPU"
    stepper = StaticStepper(lm, static_init_state(lm, cfg, device), cfg.batch, device, capture=False)
    problem = stepper.problem()
    if problem is not None:
        return None, f"eager: {problem}"
    try:
        stepper.capture()
        return stepper, None
    except RuntimeError as e:   # a capture the driver refuses: decode eagerly, say why
        return None, f"eager: capture failed ({str(e).splitlines()[0][:200]})"


SPEC = KindSpec(name="decode", config_model=DecodeConfig, run_cell=run_cell,
                skip_reason=skip_reason, run_meta=gpu_meta,
                metrics=("prefill_ms", "prefill_ms_median", "decode_ms_per_token", "decode_ms_per_token_median",
                         "decode_ms_per_token_iqr", "tokens_per_s", "end_to_end_tokens_per_s", "state_bytes",
                         "n_params", "cuda_graph", *PEAK_METRICS, *GPU_STATE_METRICS),
                estimate_bytes=lambda cell: decode_bytes(DecodeConfig.model_validate(cell.params)))
