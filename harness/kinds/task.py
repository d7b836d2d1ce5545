"""The ``task`` suite kind: build a model, train it on a synthetic task, evaluate at several lengths.

A cell's params are nested: ``{task: {...}, model: {...}, train: {...}, device: ..., seed: ...}``
(see :class:`TaskCellConfig`).  ``seed`` seeds the model's initialisation; the data are seeded with
``seed + 1000`` (:data:`harness.kinds.training.train.DATA_SEED_OFFSET`), so changing one does not move the other.
The rows are those of :func:`harness.kinds.training.train.train_and_evaluate`.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator

import torch
from pydantic import Field, ValidationInfo, field_validator

from harness.cells import Cell, CellContext
from harness.config_types import NonNegativeInt, StrictModel
from harness.kinds import KindSpec
from harness.kinds.footprint import task_bytes
from harness.kinds.tasks.config import TaskConfig
from harness.kinds.training.train import TrainConfig, train_and_evaluate
from models.config import ModelConfig


class TaskCellConfig(StrictModel):
    """One resolved task cell.  Sections are checked in order (task, train, model), so the checks that
    span sections can point their errors at the section that must change."""

    task: TaskConfig
    """the synthetic task"""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """the training loop"""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """the model to train: every key in the `model:` section table"""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto; the suite's device and --device set it"""
    seed: NonNegativeInt = 0
    """seed of the model's initialisation (the data use seed + 1000)"""

    @field_validator("train")
    @classmethod
    def _eval_lengths_fit_the_task(cls, train: TrainConfig, info: ValidationInfo) -> TrainConfig:
        task_cfg = info.data.get("task")
        if task_cfg is None:  # the task section failed; its own error says why
            return train
        task = task_cfg.build()
        for key in ("eval_seq_lens", "curve_seq_lens"):
            bad = [f"{n} ({'; '.join(task.problems(n))})" for n in (getattr(train, key) or []) if task.problems(n)]
            if bad:
                raise ValueError(f"train.{key}: task {task.name!r} cannot be built at " + ", ".join(bad)
                                 + "; drop those lengths")
        return train

    @field_validator("model")
    @classmethod
    def _positions_fit_the_lengths(cls, model: ModelConfig, info: ValidationInfo) -> ModelConfig:
        task_cfg, train = info.data.get("task"), info.data.get("train")
        if task_cfg is None or train is None or not (model.mixer == "attention" and model.pos == "abs"):
            return model
        longest = max([task_cfg.seq_len, *(train.eval_seq_lens or []), *(train.curve_seq_lens or [])])
        if longest > model.max_len:
            raise ValueError(f"model.pos 'abs' has a table of model.max_len={model.max_len} positions but the "
                             f"cell runs sequences of length {longest}; raise model.max_len to >= {longest}")
        return model


def build_model(model_cfg: ModelConfig, vocab_size: int) -> torch.nn.Module:
    """The language model for a cell (a seam: tests swap in a tiny model here)."""
    import models  # imported late: building the kind's schema must not import every mixer

    return models.build_lm(model_cfg, vocab_size)


def resolve_device(ctx_device: str, cfg_device: str) -> torch.device:
    """The runner's resolved device wins; ``auto`` left unresolved means CUDA when there is one."""
    name = ctx_device or cfg_device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def run_cell(cell: Cell, ctx: CellContext) -> Iterator[Dict[str, Any]]:
    cfg = TaskCellConfig.model_validate(cell.params)
    device = resolve_device(ctx.device, cfg.device)
    task = cfg.task.build()
    torch.manual_seed(cfg.seed)  # the model's initialisation
    model = build_model(cfg.model, task.vocab_size).to(device)
    yield from train_and_evaluate(model, task, cfg.train, seed=cfg.seed, device=device, ctx=ctx)


#: the metrics of :func:`harness.kinds.training.train.train_and_evaluate`
METRICS = ("accuracy", "seq_accuracy", "loss", "chance_accuracy", "val_accuracy", "val_seq_accuracy", "val_loss",
           "train_loss", "lr", "steps", "train_time_s", "n_params", "cuda_graph")

SPEC = KindSpec("task", TaskCellConfig, run_cell, metrics=METRICS, row_columns=("eval_seq_len", "step", "repeat"),
                estimate_bytes=lambda cell: task_bytes(TaskCellConfig.model_validate(cell.params)))
