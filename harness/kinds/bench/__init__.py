"""Benchmark targets for the speed / memory / decode kinds, by name (``impl`` in YAML).

Each entry is a :class:`harness.kinds.bench.workload.Impl`; entries are lazy ("module:attr") so listing
the names imports no torch code.  A new target is one ``build(cfg, device) -> Workload`` function
plus one line here.
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
