"""Registries that YAML names: ``model.mixer`` -> MIXERS, ``model.arch`` -> ARCHS.

Entries are lazy ``"module:attr"`` strings, so the names are known (and validated by
:class:`models.config.ModelConfig`) as soon as this module is imported, while torch-heavy modules
load only when a model is built.

A MIXERS entry is a class ``Mixer(cfg: ModelConfig, d: int)``: a token mixer over ``d`` channels,
``forward(x (B, L, d)) -> (B, L, d)``, plus ``init_state`` / ``step`` when it has a recurrent form.
An ARCHS entry is a function ``(cfg) -> list[nn.Module]``: the sub-blocks of one layer, each wrapped
by the backbone in pre-norm + residual (a Transformer layer is [mixer, MLP]; the others are one block).
"""
from harness.registry import Registry

MIXERS = Registry("mixer")   # sequence mixers: s4, s6, ssd, hyena, attention
ARCHS = Registry("arch")     # blocks around a mixer: none, h3, mamba, mamba2, transformer

MIXERS.add("s6", "models.s6:S6", help="selective SSM (Mamba's S6): input-dependent dt, B, C")
MIXERS.add("s4", "models.s4:S4", help="LTI SSM: S4 (DPLR, HiPPO-LegS) or S4D (diagonal), FFT convolution")
MIXERS.add("hyena", "models.hyena:HyenaFilter", help="implicit long convolution (Hyena filter MLP + decay window)")
MIXERS.add("ssd", "models.ssd:SSD", help="Mamba-2's SSD: scalar A per head, multi-head x, B/C shared per group, chunked scan")
MIXERS.add("attention", "models.attention:MultiHeadAttention", help="causal multi-head attention (abs/rope/xpos)")

ARCHS.add("mamba", "models.mamba:mamba_layer", help="Mamba block: in_proj, causal conv, SiLU, mixer, SiLU(z) gate, out_proj")
ARCHS.add("mamba2", "models.mamba2:mamba2_layer",
          help="Mamba-2 block: one in_proj to z,x,B,C,dt; causal conv over x|B|C; SSD; gated RMSNorm; out_proj")
ARCHS.add("h3", "models.h3:h3_layer", help="H3 block: q,k,v, shift-SSM on k, gates, inner (diagonal) SSM")
ARCHS.add("none", "models.nogate:nogate_layer", help="the mixer alone (no gate): mixer, GELU, output linear")
ARCHS.add("transformer", "models.transformer:transformer_layer", help="mixer + MLP sub-layers (mlp_ratio 0 = mixer only)")
