"""Benchmark targets for the speed / memory / decode kinds, by name (``impl`` in YAML).

Each entry is a :class:`harness.kinds.bench.workload.Impl`; entries are lazy ("module:attr") so listing
the names imports no torch code.  A new target is one ``build(cfg, device) -> Workload`` function
plus one line here.  Peers (``peer.<package>.<operator>``: other packages' published kernels, imported
only when a cell runs) are described in :mod:`harness.kinds.bench.peers`.
"""
from harness.registry import Registry

IMPLS = Registry("impl")
IMPLS.add("s6.triton", "harness.kinds.bench.ops:S6_TRITON", help="selective scan, fused Triton kernel (CUDA)")
IMPLS.add("s6.chunked", "harness.kinds.bench.ops:S6_CHUNKED", help="selective scan, chunked parallel scan in PyTorch")
IMPLS.add("s6.reference", "harness.kinds.bench.ops:S6_REFERENCE", help="selective scan, sequential PyTorch loop")
IMPLS.add("ssd.triton", "harness.kinds.bench.ops:SSD_TRITON", help="Mamba-2 SSD scan, fused Triton kernels (CUDA)")
IMPLS.add("ssd.chunked", "harness.kinds.bench.ops:SSD_CHUNKED", help="Mamba-2 SSD scan, chunked algorithm in PyTorch")
IMPLS.add("ssd.reference", "harness.kinds.bench.ops:SSD_REFERENCE", help="Mamba-2 SSD scan, sequential PyTorch loop")
IMPLS.add("s4.fft", "harness.kinds.bench.ops:S4_FFT", help="S4/S4D long convolution via FFT at 2L")
IMPLS.add("attention.sdpa", "harness.kinds.bench.ops:ATTENTION_SDPA", help="causal attention, torch SDPA (flash)")
IMPLS.add("attention.naive", "harness.kinds.bench.ops:ATTENTION_NAIVE", help="causal attention, materialised scores")
IMPLS.add("layer", "harness.kinds.bench.model_level:LAYER", help="one block from the model: section (models.build_block)")
IMPLS.add("model", "harness.kinds.bench.model_level:MODEL", help="a language model from the model: section (models.build_lm)")

_PEERS = "harness.kinds.bench.peers"
IMPLS.add("peer.mamba_ssm.selective_scan", f"{_PEERS}.state_space:SELECTIVE_SCAN",
          help="mamba_ssm selective_scan_fn, the official CUDA scan (package mamba_ssm)")
IMPLS.add("peer.mamba_ssm.ssd", f"{_PEERS}.state_space:SSD",
          help="mamba_ssm mamba_chunk_scan_combined, Mamba-2's chunked SSD in Triton (package mamba_ssm)")
IMPLS.add("peer.mamba_ssm.state_update", f"{_PEERS}.state_space:STATE_UPDATE",
          help="mamba_ssm selective_state_update, one decoding step (package mamba_ssm; pass fwd)")
IMPLS.add("peer.causal_conv1d", f"{_PEERS}.state_space:CAUSAL_CONV1D",
          help="causal_conv1d_fn, width 4, SiLU (package causal_conv1d)")
IMPLS.add("peer.flash_attn", f"{_PEERS}.attention:FLASH_ATTN",
          help="flash_attn_func, causal (package flash_attn; fp16/bf16)")
IMPLS.add("peer.fla.gla", f"{_PEERS}.linear_attention:GLA", help="fla chunk_gla, chunked gated linear attention")
IMPLS.add("peer.fla.gated_delta_rule", f"{_PEERS}.linear_attention:GATED_DELTA_RULE",
          help="fla chunk_gated_delta_rule (fp16/bf16)")
