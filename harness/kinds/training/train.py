"""Train a sequence model on a synthetic task and evaluate it at several lengths, yielding result rows.

:func:`train_and_evaluate` is a generator of rows (see :func:`harness.cells.make_row`), so every row
reaches the runner as soon as it exists: if training diverges (:class:`CellDiverged`), times out
(:class:`CellTimeout`, from the cell's deadline) or fails, the learning curve so far is kept.

Rows it yields
* learning curve, every ``eval_every`` steps and at the last step, each with a ``step`` column:
  ``train_loss`` (mean over the steps since the last point), ``val_loss``, ``val_accuracy``,
  ``val_seq_accuracy`` (on the fixed validation set at the training length), ``lr``.  Curve metrics
  have their own names so that ``metric == "accuracy"`` always means a final number.  With
  ``curve_seq_lens``, the same three ``val_*`` rows again per extra length, with an ``eval_seq_len``
  column (the training-length rows have none); a length that runs out of memory gives one ``oom``
  ``val_accuracy`` row and is left out of later points.
* final metrics, after training, one set per ``eval_seq_len`` (a column; the validation sequences, or with
  ``train.test_set: held_out`` others drawn apart from them): ``accuracy`` (per answer token), ``seq_accuracy`` (fraction of sequences with every answer right), ``loss`` (mean
  cross-entropy per answer, nats).  A length that runs out of memory, even one sequence at a time,
  gives those three metrics as ``oom`` rows and the other lengths are still evaluated.
* ``train_time_s`` (training only, evaluation excluded), ``steps`` (steps actually taken; its
  ``message`` says why training stopped early), ``n_params``, ``chance_accuracy``.

Seeds: the caller seeds the model's initialisation with ``seed``; training batches come from a
generator seeded ``seed + DATA_SEED_OFFSET`` on the training device (fresh data every step), and
validation sets from per-sequence seeds derived from that data seed and the length (drawn on the
CPU, so they are the same on every device).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any, Dict, Iterable, Iterator, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from harness.cells import CellContext, CellDiverged, is_oom, make_row
from harness.config_types import NonNegativeInt, PositiveFloat, PositiveInt, StrictModel
from harness.kinds.training.determinism import deterministic_algorithms
from harness.kinds.tasks.base import SyntheticTask, TaskBatch, ValidationSet
from harness.kinds.training.train_step import EagerStep, GraphedStep, set_lr

DATA_SEED_OFFSET = 1000  # data seed = init seed + 1000: init and data vary independently of each other
#: ``train.test_set: held_out``: the final sets are drawn from data seed + this, apart from the validation sets
HELD_OUT_SEED_OFFSET = 7919
IGNORE_INDEX = -100  # target of the positions that are not scored (torch's default ignore_index)
DIVERGED_LOSS_FACTOR = 100.0  # a loss above 100 x ln(vocab) (the uniform guess) has blown up


class TrainConfig(StrictModel):
    """The ``train:`` section of a task cell."""

    steps: PositiveInt = 1000
    """optimizer steps (training may stop earlier at target_accuracy or timeout_s)"""
    batch: PositiveInt = 64
    """sequences per training step"""
    lr: PositiveFloat = 1e-3
    """peak learning rate"""
    ssm_lr: Optional[PositiveFloat] = Field(
        None, description="learning rate of the parameters a model marks as SSM parameters (_no_weight_decay: "
                          "S6's A and D, S4's A, B and dt), capped at train.lr as S4/safari do (lr=min(0.001, lr)); "
                          "it follows the same schedule. Default: train.lr")
    optimizer: Literal["adam", "adamw"] = "adamw"
    """adam or adamw (decoupled weight decay)"""
    weight_decay: float = Field(0.0, ge=0.0)
    """weight decay of the parameters that take it (not SSM parameters, norms or biases)"""
    betas: Tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2)"""
    schedule: Literal["constant", "cosine"] = "constant"
    """learning-rate schedule after warm-up: constant, or cosine down to min_lr"""
    warmup_steps: NonNegativeInt = 0
    """linear warm-up steps from 0 to lr"""
    min_lr: float = Field(0.0, ge=0.0, description="where the cosine schedule ends")
    grad_clip: Optional[PositiveFloat] = None
    """clip the global gradient norm to this; null: no clipping"""
    eval_every: PositiveInt = 1000
    """steps between validation points of the learning curve"""
    eval_seq_lens: Optional[List[PositiveInt]] = Field(
        None, description="lengths of the final evaluation; default [task.seq_len]")
    curve_seq_lens: Optional[List[PositiveInt]] = Field(
        None, description="extra lengths also evaluated at every eval_every point: the learning curve of "
                          "extrapolation (rows carry eval_seq_len)")
    eval_size: PositiveInt = Field(256, description="validation sequences per length")
    test_set: Literal["validation", "held_out"] = "validation"
    """data of the final metrics: the validation set of the learning curve, or held_out (other sequences, so
    a choice made on val_accuracy -- a suite's tune: -- is not judged on the data it was chosen on)"""
    eval_batch: Optional[PositiveInt] = Field(None, description="sequences per eval chunk; default train.batch")
    eval_max_tokens: PositiveInt = Field(
        1 << 18, description="cap on tokens per eval chunk (chunk >= 1 sequence), to bound memory at long lengths")
    target_accuracy: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="stop once val_accuracy at the training length reaches this")
    timeout_s: Optional[PositiveFloat] = Field(
        None, description="training-time budget: training stops there and the final evaluation still runs")
    amp: Literal["auto", "bf16", "none"] = "auto"
    """mixed precision: auto (bf16 autocast on CUDA, none on the CPU), bf16, or none"""
    cuda_graph: bool = Field(
        False, description="on CUDA, capture the whole training step as a CUDA graph after 3 eager steps and "
                           "replay it (harness/kinds/training/train_step.py): a small model alone on a GPU is host-bound; "
                           "ignored on the CPU; a failed capture falls back to eager and says so")
    deterministic: bool = Field(
        False, description="bitwise-repeatable runs for a seed (harness/kinds/training/determinism.py): deterministic "
                           "PyTorch, cuDNN and cuBLAS algorithms and a fixed-order scan backward; an op with "
                           "no deterministic kernel stops the cell with an error naming it.  A GPU run "
                           "of the same seed otherwise varies in its last bits, and a task's plateau escape "
                           "with it.  With train.timeout_s the step count still depends on the clock")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.warmup_steps > self.steps:
            raise ValueError(f"train.warmup_steps={self.warmup_steps} exceeds train.steps={self.steps}; "
                             f"lower train.warmup_steps")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr={self.min_lr} exceeds train.lr={self.lr}; lower train.min_lr")
        for name, b in zip(("first", "second"), self.betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"train.betas: the {name} beta is {b}; each must be in [0, 1)")
        return self


# --------------------------------------------------------------------------------------------
# pieces


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam or AdamW.  Weight decay touches matrices only: not biases, norms, or parameters flagged
    ``_no_weight_decay`` (the SSM parameters: mamba's A_log and D, as in state-spaces/mamba; S4's A, B,
    dt).  The flagged group runs at ``train.ssm_lr`` (capped at ``train.lr``) when set.  Each group's
    ``lr_scale`` is its lr as a fraction of ``train.lr``, which the schedule multiplies.  ``capturable``
    (for a CUDA-graphed step) keeps each group's lr in a device tensor that :func:`set_lr` fills in place."""
    decay, plain, ssm = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if getattr(p, "_no_weight_decay", False):
            ssm.append(p)
        else:
            (plain if p.ndim < 2 else decay).append(p)
    ssm_scale = 1.0 if cfg.ssm_lr is None else min(cfg.ssm_lr, cfg.lr) / cfg.lr
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": plain, "weight_decay": 0.0, "lr_scale": 1.0},
              {"params": ssm, "weight_decay": 0.0, "lr_scale": ssm_scale}]
    groups = [{**g, "lr": cfg.lr * g["lr_scale"]} for g in groups if g["params"]]
    # (with ``adam`` a non-zero weight_decay is the classic L2 term added to the gradient)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    if not capturable:
        return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    device = groups[0]["params"][0].device
    groups = [{**g, "lr": torch.tensor(g["lr"], dtype=torch.float32, device=device)} for g in groups]
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), capturable=True, foreach=True)


def autocast_for(device: torch.device, amp: str, cache_enabled: bool = True):
    """bf16 autocast on CUDA when ``amp`` is auto, anywhere when bf16, never when none.  A CUDA-graph
    capture needs ``cache_enabled=False`` (cached weight casts would outlive the capture)."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)


def logits_of(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(batch, L, vocab) logits from a model that returns them bare, in a tuple, or as ``.logits``."""
    out = model(inputs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return getattr(out, "logits", out)


def answer_loss(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Mean cross-entropy over the answer positions.

    Non-answer targets are set to ``ignore_index`` rather than gathered with ``logits[mask]``: a
    boolean gather has a data-dependent size, so it makes the host wait for the device every step,
    which for the small models of the synthetic tasks costs as much as the step itself.
    """
    targets = batch.targets.masked_fill(~batch.mask, IGNORE_INDEX)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _elapsed_since(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.no_grad()
def evaluate(model: torch.nn.Module, chunks: Iterable[TaskBatch], device: torch.device,
             amp: str = "auto") -> Dict[str, float]:
    """accuracy (per answer), seq_accuracy (all answers right) and loss over the chunks of a validation set."""
    was_training = model.training
    model.eval()
    correct = answers = seqs_right = seqs = 0
    loss_sum = 0.0
    try:
        for part in chunks:
            part = part.to(device)
            seqs += part.batch_size
            with autocast_for(device, amp):
                logits = logits_of(model, part.inputs)
            picked = logits[part.mask].float()
            truth = part.targets[part.mask]
            loss_sum += float(F.cross_entropy(picked, truth, reduction="sum"))
            hit = torch.zeros_like(part.mask)
            hit[part.mask] = picked.argmax(-1) == truth
            correct += int(hit.sum())
            answers += int(part.mask.sum())
            seqs_right += int(((hit | ~part.mask).all(dim=1)).sum())
    finally:
        model.train(was_training)
    if not answers:
        raise ValueError("evaluate: the validation set is empty")
    return {"accuracy": correct / answers, "seq_accuracy": seqs_right / seqs, "loss": loss_sum / answers}


def eval_chunk_size(cfg: TrainConfig, seq_len: int) -> int:
    return max(1, min(cfg.eval_batch or cfg.batch, cfg.eval_max_tokens // seq_len))


def evaluate_unless_oom(model, chunks: Iterable[TaskBatch], device: torch.device, amp: str
                        ) -> Tuple[Optional[Dict[str, float]], str]:
    """(metrics, "") or, when the device runs out of memory, (None, the error's first line) with the
    memory released; any other error is raised."""
    try:
        return evaluate(model, chunks, device, amp), ""
    except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
        if not is_oom(err):
            raise
        oom_text = (str(err).splitlines() or [type(err).__name__])[0]
    release_memory(device)  # outside the except block: the traceback's tensors are gone by now
    return None, oom_text


def evaluate_or_oom(model, vset: ValidationSet, cfg: TrainConfig, device: torch.device) -> Iterator[Dict[str, Any]]:
    """Final rows at one length; on OOM, halve the chunk down to one sequence, then give ``oom`` rows."""
    chunk = eval_chunk_size(cfg, vset.seq_len)
    while True:
        m, oom_text = evaluate_unless_oom(model, vset.chunks(chunk), device, cfg.amp)
        if m is not None:
            break
        if chunk > 1:
            chunk //= 2
            continue
        msg = f"out of memory evaluating one sequence of length {vset.seq_len}: {oom_text}"
        for metric in ("accuracy", "seq_accuracy", "loss"):
            yield make_row(metric, None, "nats" if metric == "loss" else "fraction", status="oom",
                           message=msg, eval_seq_len=vset.seq_len)
        return
    yield make_row("accuracy", m["accuracy"], "fraction", eval_seq_len=vset.seq_len)
    yield make_row("seq_accuracy", m["seq_accuracy"], "fraction", eval_seq_len=vset.seq_len)
    yield make_row("loss", m["loss"], "nats", eval_seq_len=vset.seq_len)


def extra_curve_rows(model, sets: Dict[int, ValidationSet], cfg: TrainConfig, device: torch.device,
                     step: int) -> Iterator[Dict[str, Any]]:
    """``val_*`` rows at each extra curve length (``train.curve_seq_lens``) for this step; a length that
    runs out of memory gets one ``oom`` row and is dropped from ``sets`` for the rest of training."""
    for seq_len in list(sets):
        chunks = sets[seq_len].chunks(eval_chunk_size(cfg, seq_len))
        m, oom_text = evaluate_unless_oom(model, chunks, device, cfg.amp)
        if m is None:
            del sets[seq_len]
            yield make_row("val_accuracy", None, "fraction", status="oom", step=step, eval_seq_len=seq_len,
                           message=f"out of memory evaluating the curve at length {seq_len}: {oom_text}; "
                                   f"not evaluated again")
            continue
        yield make_row("val_loss", m["loss"], "nats", step=step, eval_seq_len=seq_len)
        yield make_row("val_accuracy", m["accuracy"], "fraction", step=step, eval_seq_len=seq_len)
        yield make_row("val_seq_accuracy", m["seq_accuracy"], "fraction", step=step, eval_seq_len=seq_len)


# --------------------------------------------------------------------------------------------
# the loop


def train_and_evaluate(model: torch.nn.Module, task: SyntheticTask, cfg: TrainConfig, *, seed: int = 0,
                       device: str | torch.device = "cpu", ctx: Optional[CellContext] = None,
                       ) -> Iterator[Dict[str, Any]]:
    """Train ``model`` on ``task`` for ``cfg.steps`` steps, then evaluate; yields rows as they come."""
    with deterministic_algorithms() if cfg.deterministic else nullcontext():
        yield from _train_and_evaluate(model, task, cfg, seed, device, ctx)


def _train_and_evaluate(model, task, cfg, seed, device, ctx) -> Iterator[Dict[str, Any]]:
    device = torch.device(device)
    ctx = ctx or CellContext(device=str(device))
    model.to(device).train()
    graphed = cfg.cuda_graph and device.type == "cuda"
    opt = make_optimizer(model, cfg, capturable=graphed)

    def loss_of(batch: TaskBatch) -> torch.Tensor:
        with autocast_for(device, cfg.amp, cache_enabled=not graphed):
            logits = logits_of(model, batch.inputs)
        return answer_loss(logits, batch)

    params = [p for p in model.parameters() if p.requires_grad]
    train_step = (GraphedStep(loss_of, opt, params, cfg.grad_clip, device) if graphed
                  else EagerStep(loss_of, opt, params, cfg.grad_clip))
    data_seed = seed + DATA_SEED_OFFSET
    gen = torch.Generator(device=device).manual_seed(data_seed)
    # the training-length set is evaluated every eval_every steps: draw it once, keep it on the device
    curve_set = task.validation_set(task.seq_len, cfg.eval_size, data_seed)
    curve_chunks = [c.to(device) for c in curve_set.chunks(eval_chunk_size(cfg, task.seq_len))]
    # extra lengths of the curve: drawn once like the training-length set, kept on the CPU (they can
    # be long) and moved per chunk
    extra_curves = {L: task.validation_set(L, cfg.eval_size, data_seed)
                    for L in dict.fromkeys(cfg.curve_seq_lens or []) if L != task.seq_len}
    blown_up = DIVERGED_LOSS_FACTOR * math.log(max(2, task.vocab_size))
    budget_end = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s

    yield make_row("n_params", count_params(model), "params")
    yield make_row("chance_accuracy", task.chance_accuracy, "fraction")

    stop_reason = None
    loss_sum = torch.zeros((), device=device)
    since_point = 0
    # Training time is measured per stretch between evaluations (synchronising only there), so the
    # host can queue the next step while the device runs this one.
    train_time = 0.0
    stretch_start = time.perf_counter()
    step = 0
    for step in range(1, cfg.steps + 1):
        ctx.check_deadline()
        lr = lr_at(cfg, step - 1)
        set_lr(opt, lr)
        loss_sum += train_step(task.sample(cfg.batch, task.seq_len, gen))
        since_point += 1

        # The loss is read back only here, every eval_every steps (or every 100 if sooner), so the
        # host does not wait on the device each step.
        at_point = step % cfg.eval_every == 0 or step == cfg.steps
        if at_point or step % min(cfg.eval_every, 100) == 0:
            mean_loss = float(loss_sum) / since_point
            if not math.isfinite(mean_loss) or mean_loss > blown_up:
                yield make_row("train_loss", mean_loss if math.isfinite(mean_loss) else None, "nats",
                               status="diverged", step=step)
                raise CellDiverged(f"training loss {mean_loss:.4g} at step {step} (lr {lr:.3g}): "
                                   f"diverged; lower train.lr or set train.grad_clip")
        if at_point:
            train_time += _elapsed_since(stretch_start, device)
            m = evaluate(model, curve_chunks, device, cfg.amp)
            yield make_row("train_loss", float(loss_sum) / since_point, "nats", step=step)
            yield make_row("val_loss", m["loss"], "nats", step=step)
            yield make_row("val_accuracy", m["accuracy"], "fraction", step=step)
            yield make_row("val_seq_accuracy", m["seq_accuracy"], "fraction", step=step)
            yield make_row("lr", lr, "", step=step)
            yield from extra_curve_rows(model, extra_curves, cfg, device, step)
            loss_sum.zero_()
            since_point = 0
            if cfg.target_accuracy is not None and m["accuracy"] >= cfg.target_accuracy:
                stop_reason = f"reached train.target_accuracy={cfg.target_accuracy} at step {step}"
                break
            stretch_start = time.perf_counter()
        if budget_end is not None and time.monotonic() > budget_end:
            stop_reason = f"stopped by train.timeout_s={cfg.timeout_s} at step {step} of {cfg.steps}"
            train_time += _elapsed_since(stretch_start, device)
            break

    yield make_row("train_time_s", train_time, "s")
    if graphed:  # 1: the steps after the warm-up were replayed from one CUDA graph; 0: eager (message: why)
        yield make_row("cuda_graph", int(train_step.graphed), "", message=getattr(train_step, "fallback_reason", None))
    yield make_row("steps", step, "steps", **({"message": stop_reason} if stop_reason else {}))
    for seq_len in (cfg.eval_seq_lens or [task.seq_len]):
        ctx.check_deadline()
        test_seed = data_seed + (HELD_OUT_SEED_OFFSET if cfg.test_set == "held_out" else 0)
        vset = task.validation_set(seq_len, cfg.eval_size, test_seed)
        yield from evaluate_or_oom(model, vset, cfg, device)
