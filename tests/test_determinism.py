"""harness/kinds/training/determinism.py: the context that turns deterministic algorithms on, turns an op without a
deterministic kernel into a clear error, and puts everything back.  (Bitwise repeatability itself needs a
GPU: tests/test_task_kind.py and tests/test_selective_scan_triton.py.)"""
from __future__ import annotations

import os

import pytest
import torch

from harness.kinds.training.determinism import NotDeterministicError, deterministic_algorithms
from harness.kinds.training.train import TrainConfig


def flags():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def test_turns_the_flags_on_strictly_and_restores_them():
    before = flags()
    with deterministic_algorithms():
        assert flags() == (True, False, True, False)
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    assert flags() == before


def test_an_op_without_a_deterministic_kernel_is_named_in_the_error():
    # the message ATen's Context::alertNotDeterministic raises in strict mode
    aten = ("cumsum_cuda_kernel does not have a deterministic implementation, but you set "
            "'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for this operation")
    with pytest.raises(NotDeterministicError, match=r"train.deterministic: cumsum_cuda_kernel has no "
                                                    r"deterministic kernel.*set train.deterministic: false"):
        with deterministic_algorithms():
            raise RuntimeError(aten)
    assert not torch.are_deterministic_algorithms_enabled()


def test_other_errors_pass_through_unchanged():
    with pytest.raises(RuntimeError, match="^boom$") as info:
        with deterministic_algorithms():
            raise RuntimeError("boom")
    assert type(info.value) is RuntimeError
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_deterministic_cell_repeats_and_leaves_the_flags_off():
    from harness.cells import Cell, CellContext
    from harness.kinds.task import run_cell

    p = {"task": {"name": "copying", "seq_len": 24, "vocab": 8, "n_tokens": 4},
         "model": {"arch": "mamba", "mixer": "s6", "n_layers": 1, "d_model": 16, "d_state": 4},
         "train": {"steps": 4, "batch": 4, "eval_every": 2, "eval_size": 8, "deterministic": True},
         "device": "cpu", "seed": 0}
    runs = [list(run_cell(Cell("t", "task", "cid", p), CellContext(device="cpu"))) for _ in range(2)]
    curve = lambda rows: [(r["metric"], r.get("step"), r["value"]) for r in rows if r["metric"] != "train_time_s"]  # noqa: E731
    assert all(r["status"] == "ok" for r in runs[0])
    assert len(curve(runs[0])) > 8 and curve(runs[0]) == curve(runs[1])
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_train_key_is_documented():
    assert "bitwise" in TrainConfig.model_fields["deterministic"].description
