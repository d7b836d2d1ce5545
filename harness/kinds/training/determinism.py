"""Bitwise-repeatable training: ``train.deterministic``.

Why: on a GPU the same seed does not give the same run.  Float atomics (the selective-scan backward's dB
and dC, several PyTorch backward kernels) add in whatever order the threads arrive, and on the synthetic
tasks the plateau escape hangs on small differences: on the H200 two runs of one seed and the same code
ended 200 steps of selective copying with parameters up to 0.19 apart, and the quick suite's Mamba/S6
cell (seed 0, lr 2e-3) reached 94.5% in one run and stayed at 13.3% in another a commit later
(reports/gpu/README.md, 2026-12-02).  A result that CI diffs, or a seed a user wants to look at again,
needs the run to repeat exactly.

:func:`deterministic_algorithms` turns on ``torch.use_deterministic_algorithms(True)`` (PyTorch's ops
consult it, and so does our scan backward, which then sums dB and dC per channel block in a fixed order),
cuDNN's deterministic algorithms, and cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when a
process first uses cuBLAS: a cell in a fresh process, as ``--jobs`` runs them, gets it).  Strict, not
``warn_only``: flash and cuDNN attention pick their deterministic backward only in strict mode, and an op
with no deterministic kernel at all stops the cell with :class:`NotDeterministicError` naming it, rather
than letting a run that is not repeatable pass for one.  It cannot make a time budget repeatable: with
``train.timeout_s`` the number of steps depends on the clock, though every curve point both runs reach
is the same.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

import torch

#: cuBLAS workspace setting that makes its kernels repeatable (PyTorch's reproducibility notes).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_NO_KERNEL = re.compile(r"^(.*?) does not have a deterministic implementation")


class NotDeterministicError(RuntimeError):
    """An op the cell needs has no deterministic kernel on this device."""


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the block with deterministic algorithms only; restores the previous settings."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as e:
        m = _NO_KERNEL.match(str(e))
        if m is None:
            raise
        raise NotDeterministicError(
            f"train.deterministic: {m.group(1)} has no deterministic kernel on this device, so this cell "
            f"cannot repeat bitwise; set train.deterministic: false for it (its runs will then vary in "
            f"their last bits)") from e
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
