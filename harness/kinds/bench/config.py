"""The flat cell config shared by the speed, memory and decode kinds.

One schema for the three kinds keeps the key names of DESIGN.md's ``kind: speed`` example
(``impl, seq_len, batch, d_model, expand, d_state, heads, dtype, pass, warmup, repeats, timeout_s``)
identical everywhere, so a suite can switch kind without renaming anything.  Shapes that cannot
work (heads not dividing the attention width, a model-level target without a ``model:`` section)
fail here, before anything runs, with a message that names the key and the fix.
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Optional

import torch
from pydantic import ConfigDict, Field, model_validator

from harness.kinds.bench import IMPLS
from harness.config_types import NonNegativeInt, PositiveFloat, PositiveInt, StrictModel, registered

from harness.cells import CellContext
from models.config import ModelConfig as ModelSection  # the `model:` section: the models' own schema

DTYPES: Dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: targets that build a layer or a whole language model from the ``model:`` section
MODEL_LEVEL_IMPLS = ("model", "layer")


class BenchConfig(StrictModel):
    """One speed / memory cell.  ``dim`` (the scan/attention width) defaults to ``expand * d_model``."""

    # ``pass`` is a Python keyword: the field is ``pass_``, written and dumped as ``pass``
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    impl: registered(IMPLS)  # type: ignore[valid-type]
    """the benchmark target (`ssmbench list` shows them): an operator (s6.triton, attention.sdpa, ...) or layer / model"""
    seq_len: PositiveInt
    """sequence length L"""
    batch: PositiveInt = 1
    """sequences per call"""
    d_model: PositiveInt = 1024
    """model width; the operator width is expand * d_model unless dim is set"""
    expand: PositiveInt = 2
    """inner expansion: the operator width is expand * d_model (Mamba's E = 2D)"""
    dim: Optional[PositiveInt] = None
    """operator width (channels of the scan, total attention width); default expand * d_model"""
    d_state: PositiveInt = 16
    """SSM state size N"""
    heads: PositiveInt = 16
    """attention heads (the attention impls)"""
    head_dim: Optional[PositiveInt] = None
    """attention head size; default width / heads"""
    dtype: Literal["fp32", "fp16", "bf16"] = "bf16"
    """input and parameter dtype of the timed call (SSM states stay fp32)"""
    pass_: Literal["fwd", "fwd+bwd"] = Field("fwd", alias="pass")
    """what is measured: fwd, or fwd+bwd (one forward and one backward)"""
    ssd_headdim: PositiveInt = 64
    """the SSD impls (ssd.*): channels per head P, heads = width / ssd_headdim (Mamba-2 default 64)"""
    ngroups: PositiveInt = 1
    """the SSD impls: groups of heads sharing one B and C (must divide the SSD heads; Mamba-2 default 1)"""
    chunk_size: PositiveInt = 256
    """the SSD impls: chunk length Q of the chunked algorithm (Mamba-2 default 256)"""
    warmup: NonNegativeInt = 3
    """untimed calls before timing (compilation, autotuning, caches)"""
    repeats: PositiveInt = 10
    """timed calls; rows report their median and spread"""
    timeout_s: PositiveFloat = 120.0
    """the cell's time budget: past it the cell ends as a timeout row"""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto; the suite's device and --device set it"""
    seed: NonNegativeInt = 0
    """seed of the random inputs and parameters"""
    l2_flush: bool = True
    """on CUDA, overwrite the L2 cache between timed calls so each call reads from HBM"""
    model: Optional[ModelSection] = None
    """the model to build for impl layer / model: every key in the `model:` section table"""
    vocab: PositiveInt = 256
    """vocabulary of impl model (embedding and LM head)"""
    loss_chunk: Optional[PositiveInt] = Field(
        None, description="impl model, passes with a backward: compute the LM head and loss this many tokens at "
                          "a time, recomputing each chunk's logits in the backward (models/lm_loss.py), instead "
                          "of holding all batch*seq_len*vocab logits; None: all at once")

    @property
    def width(self) -> int:
        """Channels of the scan / total attention width: ``dim`` if set, else ``expand * d_model``."""
        return self.dim if self.dim is not None else self.expand * self.d_model

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.width // self.heads

    @property
    def ssd_heads(self) -> int:
        """SSD heads of the ssd.* impls: width / ssd_headdim."""
        return self.width // self.ssd_headdim

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def model_dict(self) -> Dict[str, Any]:
        """The ``model:`` section as a plain dict (every field, defaults included)."""
        return self.model.model_dump() if self.model is not None else {}

    @model_validator(mode="after")
    def _check_shapes(self) -> "BenchConfig":
        if self.head_dim is None and self.width % self.heads and IMPLS.get(self.impl).uses_heads:
            raise ValueError(
                f"heads={self.heads} does not divide the attention width {self.width} "
                f"({'dim' if self.dim is not None else 'expand*d_model'}); choose heads that divide "
                f"it, or set head_dim explicitly")
        if self.impl.startswith("ssd.") and self.width % self.ssd_headdim:
            raise ValueError(f"ssd_headdim={self.ssd_headdim} does not divide the SSD width {self.width} "
                             f"({'dim' if self.dim is not None else 'expand*d_model'}); choose an ssd_headdim "
                             f"that divides it")
        if self.impl.startswith("ssd.") and self.ssd_heads % self.ngroups:
            raise ValueError(f"ngroups={self.ngroups} does not divide the {self.ssd_heads} SSD heads "
                             f"(width {self.width} / ssd_headdim {self.ssd_headdim}); choose ngroups dividing it")
        if self.impl in MODEL_LEVEL_IMPLS and self.model is None:
            raise ValueError(f"impl {self.impl!r} builds a model: add a `model:` section "
                             f"(e.g. model: {{arch: mamba, mixer: s6, n_layers: 2, d_model: 64}})")
        if self.loss_chunk is not None and self.impl != "model":
            raise ValueError(f"loss_chunk={self.loss_chunk} chunks the LM head's loss, which only impl 'model' has "
                             f"(impl is {self.impl!r}); remove loss_chunk")
        if not self.device or not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ValueError(f"device {self.device!r}: use cpu, cuda, cuda:N or auto")
        return self


class SpeedConfig(BenchConfig):
    """A ``kind: speed`` cell: time ``pass`` (fwd | fwd+bwd) of ``impl``."""

    gate: bool = Field(
        True, description="before timing, check the target's output (and gradients, for fwd+bwd) against its "
                          "reference on a reduced problem (harness/kinds/bench/gate.py); a target that fails is "
                          "recorded as an error and not timed; false: time without checking (pure timing sweeps)")


class MemoryConfig(BenchConfig):
    """A ``kind: memory`` cell: peak memory of ``pass`` (fwd | fwd+bwd | train_step)."""

    pass_: Literal["fwd", "fwd+bwd", "train_step"] = Field("fwd+bwd", alias="pass")
    """what is measured: fwd, fwd+bwd, or train_step (forward, backward and an optimizer step; model-level impls)"""
    warmup: NonNegativeInt = 1
    """untimed calls before measuring (allocator caches)"""
    repeats: PositiveInt = 1
    """measured calls; rows report the peak"""

    @model_validator(mode="after")
    def _train_step_needs_model(self) -> "MemoryConfig":
        if self.pass_ == "train_step" and self.impl not in MODEL_LEVEL_IMPLS:
            raise ValueError(f"pass 'train_step' needs a model-level impl ({' or '.join(MODEL_LEVEL_IMPLS)}), "
                             f"not {self.impl!r}: an operator has no optimizer step; use pass fwd+bwd")
        return self


class DecodeConfig(StrictModel):
    """A ``kind: decode`` cell: prefill ``prompt_len`` tokens, then generate ``gen_len`` with ``step``."""

    impl: Literal["model"] = "model"
    """what decodes: model (the language model of the model: section)"""
    model: ModelSection
    """the model to decode with: every key in the `model:` section table"""
    vocab: PositiveInt = 256
    """vocabulary of the model (embedding and LM head)"""
    batch: PositiveInt = 1
    """sequences decoded together"""
    prompt_len: NonNegativeInt = 2048
    """prompt tokens read before generation (see prefill)"""
    gen_len: PositiveInt = 128
    """tokens generated one step at a time; rows report the per-token latency"""
    dtype: Literal["fp32", "fp16", "bf16"] = "bf16"
    """parameter and activation dtype"""
    warmup: NonNegativeInt = 1
    """untimed generations before timing"""
    repeats: PositiveInt = 3
    """timed generations; rows report their median and spread"""
    timeout_s: PositiveFloat = 300.0
    """the cell's time budget: past it the cell ends as a timeout row"""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto; the suite's device and --device set it"""
    seed: NonNegativeInt = 0
    """seed of the parameters and the prompt"""
    prefill: Literal["parallel", "step"] = Field(
        "parallel", description="how the prompt is read: 'parallel' through LM.prefill (the parallel form where a "
                                "block has one: Mamba's conv and scan, attention filling its KV cache; the other "
                                "blocks step; as the paper's throughput and Hugging Face's generate do), or 'step', "
                                "one recurrent step per prompt token (exact for every block, launch-bound)")
    cuda_graph: bool = Field(
        False, description="on CUDA, replay each decoding step from one CUDA graph over static buffers "
                           "(harness/kinds/bench/static_step.py): eager decoding of a small model measures kernel-launch "
                           "overhead; attention then uses a static KV cache of prompt_len + gen_len slots (masked "
                           "attention over the whole capacity); a state that still grows (Hyena's history) decodes "
                           "eagerly, and a cuda_graph row says which")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def model_dict(self) -> Dict[str, Any]:
        return self.model.model_dump()


def model_state_rows(cfg: BenchConfig):
    """State-size rows of a model-level cell (impl model: the whole LM; layer: one block), none for operators."""
    from harness.kinds.state_rows import state_size_rows
    if cfg.impl not in MODEL_LEVEL_IMPLS:
        return iter(())
    return state_size_rows(cfg.model_dict(), cfg.seq_len, cfg.torch_dtype, n_layers=1 if cfg.impl == "layer" else None)


def cell_device(cfg: Any, ctx: CellContext) -> str:
    """The context's device (the runner resolved ``auto`` and may pin ``cuda:i``), else the cell's."""
    return str(ctx.device or cfg.device)
