"""Peers: the published kernels of other packages as benchmark targets, beside ssmbench's own.

Names are ``peer.<package>.<operator>`` (``impl:`` in a suite; ``ssmbench list`` shows them):

==================================  ==========================================================  ===========
impl                                the call (official signature and layout)                    shape keys
==================================  ==========================================================  ===========
peer.mamba_ssm.selective_scan       mamba_ssm ``selective_scan_fn`` (CUDA extension)            as s6.*
peer.mamba_ssm.ssd                  mamba_ssm ``mamba_chunk_scan_combined`` (Triton, Mamba-2)   dim/head_dim
peer.mamba_ssm.state_update         mamba_ssm ``selective_state_update``: one decoding step     as s6.*, fwd
peer.causal_conv1d                  causal_conv1d ``causal_conv1d_fn`` (width 4, SiLU)           dim
peer.flash_attn                     flash_attn ``flash_attn_func(causal=True)``                 as attention
peer.fla.gla                        fla ``chunk_gla`` (chunked gated linear attention)          heads/head_dim
peer.fla.gated_delta_rule           fla ``chunk_gated_delta_rule``                              heads/head_dim
==================================  ==========================================================  ===========

Shape keys: "as s6.*" batch, seq_len, dim (or expand * d_model), d_state; "dim/head_dim" the scan width in heads
of ``head_dim`` (Mamba-2: 64) with ``d_state`` per head; "heads/head_dim" and "as attention" ``heads`` heads of
``head_dim`` (default width / heads).

Each is an :class:`~harness.kinds.bench.op.Op` (inputs, the peer's call, a plain reference), so it is timed by
``kind: speed`` and measured by ``kind: memory`` like a built-in target, and gated first (gate.py).  Nothing
here imports a peer package at start-up: a cell checks that the package is installed (``Impl.requires``) and
is ``skipped`` with the package name and how to get it when it is not (:data:`HOW`); an installed package
that fails to import is an ``error`` row with the import error; a peer whose own guard refuses the toolchain under it
(fla's gated backward on Hopper with Triton >= 3.4, < 3.7.1) is ``skipped`` with that reason (``Impl.declines``).
Peers need CUDA (``needs_cuda``).

Getting the packages onto a machine without network: ``python -m harness.kinds.bench.peers build`` (build.py).
"""
from __future__ import annotations

from typing import Any

from harness.cells import CellFailure
from kernels.optional_import import import_attr

_BUILD = "offline: put its source in .peers/src and run `python -m harness.kinds.bench.peers build` (README, Peers)"

#: how to get each peer package (the text of a ``skipped`` row)
HOW = {
    "mamba_ssm": f"`pip install mamba-ssm --no-build-isolation` (compiles its CUDA extension), or {_BUILD}",
    "causal_conv1d": f"`pip install causal-conv1d --no-build-isolation` (compiles its CUDA extension), or {_BUILD}",
    "flash_attn": "`pip install flash-attn --no-build-isolation` (a long CUDA build; the build script skips it "
                  "unless asked with --only flash_attn)",
    "fla": f"`pip install flash-linear-attention` (pure Python and Triton), or {_BUILD}",
}


def requires(package: str):
    """The ``Impl.requires`` entry for ``package``."""
    return ((package, HOW[package]),)


def peer_attr(package: str, module: str, attr: str) -> Any:
    """``module.attr`` of an installed peer, imported now (at the cell's first call); an installed package that
    does not import (a CUDA extension built for another torch, a missing dependency) ends the cell ``error``
    with the import error.  When only the package's own ``__init__`` fails (mamba_ssm's imports transformers), the
    module is imported without it (``kernels.optional_import``)."""
    try:
        return import_attr(package, module, attr)
    except Exception as e:
        raise CellFailure(f"{package} is installed but `from {module} import {attr}` failed: "
                          f"{type(e).__name__}: {e}") from e
