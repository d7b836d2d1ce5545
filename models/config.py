"""The ``model:`` section of a task suite: one validated config builds every mixer, block and LM.

Combinations that cannot run are rejected here, with a message that names the key and the fix, so a
suite fails at ``ssmbench validate`` rather than minutes into a run.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from harness.config_types import NonNegativeInt, PositiveFloat, PositiveInt, StrictModel, registered
from models.registry import ARCHS, MIXERS

AInit = Literal["s4d_real", "s4d_lin", "s4d_inv", "legs", "real_half", "random"]
COMPLEX_A_INITS = ("s4d_lin", "s4d_inv", "legs")   # conjugate pairs: d_state / 2 complex modes
REAL_A_INITS = ("s4d_real", "real_half", "random")
DEFAULT_A_INIT = {"s6": "s4d_real", ("s4", "diag"): "s4d_lin", ("s4", "dplr"): "legs"}


class SelectiveConfig(StrictModel):
    """Which S6 parameters depend on the input (Mamba paper Table 7); a non-selective one is learned."""

    delta: bool = True
    """dt depends on the input (a low-rank projection of x); false: one learned dt per channel"""
    B: bool = True
    """B depends on the input; false: a learned (dim, N) B shared by all time steps"""
    C: bool = True
    """C depends on the input; false: a learned (dim, N) C shared by all time steps"""


class ModelConfig(StrictModel):
    """Every knob a suite may set under ``model:``; defaults follow mamba_simple / the papers."""

    arch: registered(ARCHS) = "mamba"
    """the block around the mixer: mamba (gated, conv, expand), h3, none (mixer + MLP-free residual), transformer"""
    mixer: registered(MIXERS) = "s6"
    """the sequence mixer: s6 (selective SSM), s4 (LTI SSM), hyena, attention"""
    n_layers: PositiveInt = 2
    """residual blocks"""
    d_model: PositiveInt = 64
    """model width D"""
    d_state: Optional[PositiveInt] = Field(
        None, description="state size N per channel (S4, S6) or per head (SSD); left out: 16, or 128 for arch "
                          "mamba2 (the official Mamba-2 default).  Always set after validation")
    expand: PositiveInt = 2
    """a Mamba block's inner width is expand * d_model"""
    d_conv: PositiveInt = 4
    """width of the Mamba block's causal depthwise convolution"""
    dt_rank: Union[Literal["auto"], PositiveInt] = "auto"
    """rank of S6's dt projection; auto: ceil(d_model / 16)"""
    dt_min: PositiveFloat = 0.001
    """smallest initial dt (log-uniform in [dt_min, dt_max])"""
    dt_max: PositiveFloat = 0.1
    """largest initial dt"""
    dt_init_floor: PositiveFloat = 1e-4
    """floor on S6's initial dt"""
    heads: PositiveInt = 8
    """attention heads"""
    pos: Literal["abs", "rope", "xpos"] = "rope"
    """attention's positions: abs (learned table), rope or xpos"""
    max_len: PositiveInt = Field(16384, description="size of the learned absolute-position table (pos: abs) "
                                                     "and the Hyena filter's time normaliser")
    s4_mode: Literal["dplr", "diag"] = "diag"
    """S4's parameterisation: dplr (HiPPO-LegS normal plus low rank) or diag (S4D)"""
    a_init: Optional[AInit] = None
    """initial A: s4d_real, s4d_lin, s4d_inv, legs (HiPPO), real_half, random; default by mixer (s6: s4d_real, s4 diag: s4d_lin, dplr: legs)"""
    selective: SelectiveConfig = Field(default_factory=SelectiveConfig)
    """which S6 parameters depend on the input (Mamba paper Table 7)"""
    backend: Literal["auto", "triton", "chunked", "reference"] = "auto"
    """selective-scan kernel: auto (triton on CUDA, chunked elsewhere), triton, chunked or reference"""
    attn_backend: Literal["sdpa", "naive"] = "sdpa"
    """attention kernel: sdpa (torch's fused attention) or naive (materialised scores)"""
    mlp_ratio: NonNegativeInt = 4
    """a Transformer block's MLP width is mlp_ratio * d_model"""
    bias: bool = Field(False, description="biases in the block's linear projections (mamba_simple: none)")
    conv_bias: bool = True
    """bias in the Mamba block's convolution"""
    hyena_filter_dim: PositiveInt = Field(64, description="width of the Hyena filter MLP")
    hyena_emb_dim: PositiveInt = Field(33, description="positional features: t, then cos/sin of (emb_dim-1)/2 bands")
    hyena_decay: tuple[PositiveFloat, PositiveFloat] = Field(
        (0.3, 1.5), description="exponential-window decay range over channels (safari's fast/slow decay pct)")
    norm_eps: PositiveFloat = 1e-5
    """epsilon of the RMS/LayerNorms"""
    checkpoint: bool = Field(False, description="activation checkpointing: keep only each residual block's input "
                                                "and recompute the block in the backward (less activation memory "
                                                "for about one more forward per step)")
    init_std: PositiveFloat = 0.02
    """standard deviation of the linear and embedding weights' normal init"""
    headdim: PositiveInt = Field(64, description="SSD (mixer ssd, arch mamba2): channels per head P; heads = "
                                                 "SSD width / headdim (Mamba-2 default 64)")
    ngroups: PositiveInt = Field(1, description="SSD: groups of heads sharing one B and C (1: all heads share, "
                                                "Mamba-2's multi-value pattern); must divide the number of heads")
    chunk_size: PositiveInt = Field(256, description="SSD: chunk length Q of the chunked algorithm (Mamba-2 "
                                                     "default 256); changes speed and rounding, not the model")

    # ----------------------------------------------------------------- derived values
    @property
    def d_inner(self) -> int:
        """Channels the mixer sees: expand * d_model inside a Mamba or Mamba-2 block, d_model elsewhere."""
        return self.expand * self.d_model if self.arch in ("mamba", "mamba2") else self.d_model

    @property
    def uses_ssd(self) -> bool:
        """Whether the model has an SSD layer (mixer ssd, which arch mamba2 always has)."""
        return self.mixer == "ssd" or self.arch == "mamba2"

    @property
    def ssd_heads(self) -> int:
        """SSD heads H = d_inner / headdim (validated to divide when the model uses SSD)."""
        return self.d_inner // self.headdim

    @property
    def resolved_dt_rank(self) -> int:
        """mamba_simple: ceil(d_model / 16) of the *block's* d_model."""
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def resolved_a_init(self) -> str:
        if self.a_init is not None:
            return self.a_init
        if self.mixer == "s6":
            return DEFAULT_A_INIT["s6"]
        return DEFAULT_A_INIT[("s4", self.s4_mode)]

    @property
    def complex_a(self) -> bool:
        return self.resolved_a_init in COMPLEX_A_INITS

    # ----------------------------------------------------------------- combinations
    @model_validator(mode="after")
    def _check_combinations(self) -> "ModelConfig":
        if self.arch == "mamba2":
            # the official Mamba-2 block has its SSD built in: mixer is ssd (filled in when left out)
            if "mixer" in self.model_fields_set and self.mixer != "ssd":
                raise ValueError(f"arch 'mamba2' is the Mamba-2 block with its SSD layer built in; mixer must be "
                                 f"'ssd' or left out, got {self.mixer!r} (to put {self.mixer} in a gated block "
                                 f"use arch: mamba; for the SSD in the Mamba-1 block use arch: mamba, mixer: ssd)")
            self.mixer = "ssd"
        if self.d_state is None:
            self.d_state = 128 if self.arch == "mamba2" else 16
        if self.uses_ssd:
            self._check_ssd()
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        if self.mixer in ("s4", "s6") and self.complex_a and self.d_state % 2:
            raise ValueError(f"a_init {self.resolved_a_init!r} is complex (conjugate pairs): d_state must be even, "
                             f"got {self.d_state}; use an even d_state or a real a_init ({', '.join(REAL_A_INITS)})")
        if self.mixer == "s6":
            if self.a_init == "legs":
                raise ValueError("a_init 'legs' is the HiPPO-LegS init of the S4 mixer; for mixer s6 use "
                                 "s4d_real (default), s4d_lin, s4d_inv, real_half or random")
            if self.complex_a and self.backend != "auto":
                raise ValueError(f"a_init {self.a_init!r} makes A complex, but the {self.backend} selective-scan "
                                 "kernel is real-only; set backend: auto (complex A then runs on the PyTorch "
                                 "complex scan in models.complex_scan) or use a real a_init (s4d_real, real_half, random)")
        if self.mixer == "s4" and self.s4_mode == "dplr" and self.resolved_a_init != "legs":
            raise ValueError(f"s4_mode 'dplr' is the HiPPO-LegS normal-plus-low-rank SSM and needs a_init 'legs' "
                             f"(got {self.a_init!r}); for s4d_lin/s4d_inv/s4d_real/... set s4_mode: diag")
        if self.mixer == "s4" and self.s4_mode == "dplr" and self.d_state % 2:
            raise ValueError(f"s4_mode 'dplr' keeps d_state/2 conjugate-pair modes: d_state must be even, got {self.d_state}")
        if self.arch == "h3" and self.mixer == "attention":
            raise ValueError("arch 'h3' wraps an SSM-like inner layer; set mixer to s4, s6 or hyena "
                             "(for attention use arch: transformer)")
        if self.mixer == "attention":
            width = self.d_inner
            if width % self.heads:
                raise ValueError(f"attention: the mixer width ({width} = "
                                 f"{'expand*d_model' if self.arch == 'mamba' else 'd_model'}) must be divisible by "
                                 f"heads ({self.heads}); change heads or d_model")
            if self.pos in ("rope", "xpos") and (width // self.heads) % 2:
                raise ValueError(f"pos {self.pos!r} rotates pairs of channels: the head size ({width // self.heads}) "
                                 f"must be even; change heads or d_model, or use pos: abs")
        if self.mixer == "hyena" and (self.hyena_emb_dim < 3 or self.hyena_emb_dim % 2 == 0):
            raise ValueError(f"hyena_emb_dim must be odd and >= 3 (t plus cos/sin pairs), got {self.hyena_emb_dim}")
        return self

    def _check_ssd(self) -> None:
        width = self.d_inner
        where = "expand*d_model" if self.arch in ("mamba", "mamba2") else "d_model"
        if width % self.headdim:
            divisors = [h for h in (64, 32, 16, 8, 4, 2, 1) if width % h == 0]
            raise ValueError(f"SSD: headdim ({self.headdim}) must divide the SSD width ({where} = {width}); "
                             f"set model.headdim to a divisor of {width}, e.g. {divisors[0]}")
        heads = width // self.headdim
        if heads % self.ngroups:
            raise ValueError(f"SSD: ngroups ({self.ngroups}) must divide the number of heads ({heads} = {where} "
                             f"{width} / headdim {self.headdim}); change ngroups or headdim")


def as_config(cfg: "dict | ModelConfig | None") -> ModelConfig:
    """Accept a plain dict (a suite's ``model:`` section) or an already validated config."""
    if cfg is None:
        return ModelConfig()
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict):
        return ModelConfig.model_validate(cfg)
    raise TypeError(f"model config must be a dict or ModelConfig, got {type(cfg).__name__}")
