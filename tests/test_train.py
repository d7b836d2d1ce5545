"""The training loop: learning, schedules, divergence guard, OOM per eval length, early stop, budgets."""
from __future__ import annotations

import math
import time

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from harness.cells import CellContext, CellDiverged, CellTimeout
from harness.kinds.tasks import make_task
from harness.kinds.tasks.base import TaskBatch
from harness.kinds.training.train import (TrainConfig, evaluate, lr_at, make_optimizer, train_and_evaluate)
from harness.kinds.training.train_step import set_lr


class TinyLM(nn.Module):
    """A one-layer GRU language model: enough to learn short copying / induction on a CPU."""

    def __init__(self, vocab: int, d: int = 64):
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(vocab, d), nn.GRU(d, d, batch_first=True), nn.Linear(d, vocab)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[0])


class ConstantLM(nn.Module):
    """Always predicts ``token`` (a plain reference for the metric arithmetic)."""

    def __init__(self, vocab: int, token: int):
        super().__init__()
        self.vocab, self.token = vocab, token
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = torch.zeros(*x.shape, self.vocab) + self.bias
        logits[..., self.token] = 1.0
        return logits


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the 2 CI cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def collect(gen):
    """All rows of a run, plus the exception that ended it (or None)."""
    rows = []
    try:
        for r in gen:
            rows.append(r)
    except Exception as err:  # noqa: BLE001
        return rows, err
    return rows, None


def final(rows, metric, eval_seq_len=None):
    out = [r for r in rows if r["metric"] == metric and "step" not in r
           and (eval_seq_len is None or r.get("eval_seq_len") == eval_seq_len)]
    assert len(out) == 1, (metric, eval_seq_len, out)
    return out[0]


# ----------------------------------------------------------------------------- schedules, optimizer


def test_lr_schedule_values():
    const = TrainConfig(steps=100, lr=1e-3)
    assert [lr_at(const, s) for s in (0, 50, 99)] == [1e-3] * 3
    warm = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    assert lr_at(warm, 0) == pytest.approx(1e-4) and lr_at(warm, 9) == pytest.approx(1e-3)
    assert lr_at(warm, 10) == pytest.approx(1e-3) and lr_at(warm, 99) == pytest.approx(1e-3)
    cos = TrainConfig(steps=110, lr=1e-3, warmup_steps=10, schedule="cosine", min_lr=1e-5)
    assert lr_at(cos, 4) == pytest.approx(5e-4)
    assert lr_at(cos, 10) == pytest.approx(1e-3)
    assert lr_at(cos, 60) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # half way: the mean
    assert lr_at(cos, 110) == pytest.approx(1e-5)
    values = [lr_at(cos, s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warm-up


def test_train_config_errors_name_the_key():
    with pytest.raises(ValidationError, match="warmup_steps=20 exceeds train.steps=10"):
        TrainConfig(steps=10, warmup_steps=20)
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(step=10)
    with pytest.raises(ValidationError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValidationError, match="target_accuracy"):
        TrainConfig(target_accuracy=1.5)


def test_weight_decay_skips_vectors_and_flagged_params():
    model = TinyLM(8)
    flagged = nn.Parameter(torch.ones(4, 4))
    flagged._no_weight_decay = True
    model.register_parameter("A_log", flagged)
    opt = make_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(flagged) not in decay and id(model.head.bias) not in decay and id(model.head.weight) in decay
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert isinstance(make_optimizer(model, TrainConfig(optimizer="adam")), torch.optim.Adam)


@pytest.mark.parametrize("optimizer, after_one_step", [("adamw", 0.99), ("adam", 0.9)])
def test_adamw_decays_the_weights_apart_and_adam_adds_the_decay_to_the_gradient(optimizer, after_one_step):
    """One step from w = 1 with a zero loss gradient, lr 0.1, weight_decay 0.1: AdamW shrinks w by lr * wd (its
    Adam step of a zero gradient is zero), Adam's L2 term makes the gradient 0.1 and its first step is lr
    (m / sqrt(v) = 1).  AdamW subclasses Adam, so an isinstance check cannot tell them apart: this can."""
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(1.0)
    opt = make_optimizer(model, TrainConfig(optimizer=optimizer, lr=0.1, weight_decay=0.1, betas=(0.9, 0.999)))
    model.weight.grad = torch.zeros_like(model.weight)
    opt.step()
    assert model.weight.item() == pytest.approx(after_one_step, rel=1e-5)


def test_ssm_lr_scales_the_flagged_group_through_the_schedule():
    """train.ssm_lr gives the SSM parameters their own lr (capped at train.lr, as S4/safari), and the
    schedule keeps the ratio; the other parameters and the default are untouched."""
    model = TinyLM(8)
    flagged = nn.Parameter(torch.ones(4, 4))
    flagged._no_weight_decay = True
    model.register_parameter("A_log", flagged)

    def lr_of(opt, param):
        return next(g["lr"] for g in opt.param_groups if any(p is param for p in g["params"]))

    cfg = TrainConfig(steps=10, lr=4e-3, ssm_lr=1e-3, warmup_steps=2, schedule="cosine")
    opt = make_optimizer(model, cfg)
    assert lr_of(opt, flagged) == pytest.approx(1e-3) and lr_of(opt, model.head.weight) == pytest.approx(4e-3)
    capped = make_optimizer(model, TrainConfig(lr=5e-4, ssm_lr=1e-3))
    assert lr_of(capped, flagged) == pytest.approx(5e-4)  # min(ssm_lr, lr)
    plain = make_optimizer(model, TrainConfig(lr=4e-3))
    assert lr_of(plain, flagged) == lr_of(plain, model.head.weight) == pytest.approx(4e-3)

    # through the training loop: after a step at schedule value s, the flagged group is at s/4
    task = make_task("copying", seq_len=12, vocab=8, n_tokens=2)
    seen = []
    orig_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append((lr_of(self, flagged), lr_of(self, model.head.weight)))
        return orig_step(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        rows, err = collect(train_and_evaluate(model, task, cfg))
    finally:
        torch.optim.AdamW.step = orig_step
    assert err is None and len(seen) == 10
    for i, (ssm, other) in enumerate(seen):
        assert other == pytest.approx(lr_at(cfg, i)) and ssm == pytest.approx(other / 4)


def test_capturable_optimizer_keeps_lrs_in_tensors_that_set_lr_fills_in_place():
    """A CUDA-graphed step bakes tensors, not floats, into the graph: the lr must change in place,
    with each group's ssm_lr ratio kept (built on the CPU here: only construction and set_lr)."""
    model = TinyLM(8)
    flagged = nn.Parameter(torch.ones(4, 4))
    flagged._no_weight_decay = True
    model.register_parameter("A_log", flagged)
    opt = make_optimizer(model, TrainConfig(lr=4e-3, ssm_lr=1e-3), capturable=True)
    tensors = [g["lr"] for g in opt.param_groups]
    assert all(isinstance(t, torch.Tensor) for t in tensors) and opt.defaults["capturable"]
    set_lr(opt, 2e-3)
    assert [g["lr"] for g in opt.param_groups] == tensors  # same tensor objects, new values
    by_scale = {g["lr_scale"]: float(g["lr"]) for g in opt.param_groups}
    assert by_scale[1.0] == pytest.approx(2e-3) and by_scale[0.25] == pytest.approx(5e-4)
    plain = make_optimizer(model, TrainConfig(lr=4e-3))
    set_lr(plain, 2e-3)
    assert all(isinstance(g["lr"], float) for g in plain.param_groups)


def test_cuda_graph_is_ignored_on_the_cpu():
    """train.cuda_graph asks for a graph on CUDA only: a CPU run is the eager run, row for row."""
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)

    def run(**kw):
        torch.manual_seed(3)
        cfg = TrainConfig(steps=12, batch=8, lr=1e-3, eval_every=6, eval_size=16, grad_clip=1.0, **kw)
        rows, err = collect(train_and_evaluate(TinyLM(6, d=16), task, cfg, seed=3))
        assert err is None
        return [(r["metric"], r.get("step"), r["value"]) for r in rows if r["metric"] != "train_time_s"]

    assert run(cuda_graph=True) == run()


# ----------------------------------------------------------------------------- metrics


def test_evaluate_matches_a_plain_count():
    task = make_task("copying", seq_len=12, vocab=5, n_tokens=2)  # 3 data symbols: 1, 2, 3
    vset = task.validation_set(12, 50, seed=3)
    everything = TaskBatch.cat(list(vset.chunks(50)))
    truth = everything.targets[everything.mask].view(50, 2)
    m = evaluate(ConstantLM(5, token=2), vset.chunks(7), device=torch.device("cpu"))
    assert m["accuracy"] == pytest.approx((truth == 2).float().mean().item())
    assert m["seq_accuracy"] == pytest.approx((truth == 2).all(1).float().mean().item())
    p_right = math.e / (math.e + 4)  # softmax of a one-hot logit 1 among 5
    expected_loss = -(math.log(p_right) * (truth == 2).sum() + math.log((1 - p_right) / 4) * (truth != 2).sum()) / 100
    assert m["loss"] == pytest.approx(float(expected_loss), rel=1e-5)


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name,steps", [("copying", 150), ("induction_heads", 150)])
def test_tiny_model_learns_above_chance(name, steps):
    torch.manual_seed(0)
    task = make_task(name, seq_len=16, vocab=6, n_tokens=3 if name == "copying" else 1)  # chance 1/4
    cfg = TrainConfig(steps=steps, batch=32, lr=3e-3, eval_every=50, eval_size=128, eval_seq_lens=[16, 24])
    rows, err = collect(train_and_evaluate(TinyLM(6), task, cfg, seed=0))
    assert err is None
    acc = final(rows, "accuracy", 16)["value"]
    assert acc >= 0.6, f"{name}: accuracy {acc} after {steps} steps (chance 0.25)"
    assert final(rows, "accuracy", 24)["status"] == "ok"  # other length, same model
    curve = [r for r in rows if r["metric"] == "val_accuracy"]
    assert [r["step"] for r in curve] == [50, 100, 150]
    losses = [r["value"] for r in rows if r["metric"] == "train_loss"]
    assert losses[-1] < losses[0]
    for metric, unit in [("seq_accuracy", "fraction"), ("loss", "nats"), ("train_time_s", "s"),
                         ("steps", "steps"), ("n_params", "params")]:
        assert final(rows, metric, 16 if metric in ("seq_accuracy", "loss") else None)["unit"] == unit
    assert final(rows, "steps")["value"] == steps
    assert final(rows, "n_params")["value"] == sum(p.numel() for p in TinyLM(6).parameters())


def test_same_seed_same_run():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=20, batch=8, lr=1e-3, eval_every=10, eval_size=16)

    def run():
        torch.manual_seed(1)
        rows, _ = collect(train_and_evaluate(TinyLM(6, d=16), task, cfg, seed=1))
        return [(r["metric"], r.get("step"), r["value"]) for r in rows if r["metric"] != "train_time_s"]

    assert run() == run()


# ----------------------------------------------------------------------------- failure handling


def test_divergence_raises_after_keeping_curve_rows():
    torch.manual_seed(0)
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=200, batch=8, lr=1e9, eval_every=1, eval_size=8)
    rows, err = collect(train_and_evaluate(TinyLM(6, d=16), task, cfg))
    assert isinstance(err, CellDiverged), err
    assert "lower train.lr" in str(err)
    assert any(r["metric"] == "val_accuracy" and r["step"] == 1 for r in rows)  # the curve so far is kept
    assert rows[-1]["status"] == "diverged" and rows[-1]["step"] < 200
    assert not any(r["metric"] == "accuracy" for r in rows)


class OOMAtLength(nn.Module):
    """Wraps a model; raises CUDA's OOM error for inputs of length ``bad_len``, or any chunk over ``max_batch``."""

    def __init__(self, inner, bad_len=None, max_batch=None):
        super().__init__()
        self.inner, self.bad_len, self.max_batch = inner, bad_len, max_batch
        self.batches_seen = []

    def forward(self, x):
        if not self.training:
            self.batches_seen.append(tuple(x.shape))
            if x.shape[1] == self.bad_len or (self.max_batch and x.shape[0] > self.max_batch and x.shape[1] > 12):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.inner(x)


def test_oom_at_one_length_gives_oom_rows_and_other_lengths_still_run():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=5, batch=8, eval_every=5, eval_size=8, eval_seq_lens=[12, 48, 24])
    model = OOMAtLength(TinyLM(6, d=16), bad_len=48)
    rows, err = collect(train_and_evaluate(model, task, cfg))
    assert err is None
    for metric in ("accuracy", "seq_accuracy", "loss"):
        bad = final(rows, metric, 48)
        assert bad["status"] == "oom" and bad["value"] is None and "length 48" in bad["message"]
        assert final(rows, metric, 12)["status"] == "ok" and final(rows, metric, 24)["status"] == "ok"
    # it retried with smaller chunks down to one sequence before giving up
    assert (1, 48) in model.batches_seen and (8, 48) in model.batches_seen


def test_oom_with_big_chunks_retries_smaller_and_succeeds():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=5, batch=8, eval_every=5, eval_size=8, eval_seq_lens=[24])
    model = OOMAtLength(TinyLM(6, d=16), max_batch=2)
    rows, err = collect(train_and_evaluate(model, task, cfg))
    assert err is None and final(rows, "accuracy", 24)["status"] == "ok"
    assert {(8, 24), (4, 24), (2, 24)} <= set(model.batches_seen)


def test_eval_chunks_bounded_by_eval_max_tokens():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=2, batch=8, eval_every=2, eval_size=8, eval_seq_lens=[100], eval_max_tokens=250)
    model = OOMAtLength(TinyLM(6, d=16))
    collect(train_and_evaluate(model, task, cfg))
    assert {s for s in model.batches_seen if s[1] == 100} == {(2, 100)}


def test_early_stop_at_target_accuracy():
    torch.manual_seed(0)
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=3000, batch=32, lr=3e-3, eval_every=25, eval_size=64, target_accuracy=0.5)
    rows, err = collect(train_and_evaluate(TinyLM(6, d=32), task, cfg))
    assert err is None
    steps = final(rows, "steps")
    assert steps["value"] < 3000 and "target_accuracy" in steps["message"]
    last_curve = [r for r in rows if r["metric"] == "val_accuracy"][-1]
    assert last_curve["value"] >= 0.5 and last_curve["step"] == steps["value"]
    assert final(rows, "accuracy", 12)["value"] >= 0.5


def test_training_budget_stops_training_but_still_evaluates():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=10**6, batch=4, eval_every=10**6, eval_size=8, timeout_s=0.3)
    t0 = time.monotonic()
    rows, err = collect(train_and_evaluate(TinyLM(6, d=8), task, cfg))
    assert err is None and time.monotonic() - t0 < 30
    steps = final(rows, "steps")
    assert 0 < steps["value"] < 10**6 and "timeout_s" in steps["message"]
    assert final(rows, "accuracy", 12)["status"] == "ok"


class DeadlineAfter(CellContext):
    """A cell context whose deadline passes at the ``calls``-th check (deterministic, unlike a clock)."""

    def __init__(self, calls: int):
        super().__init__(device="cpu")
        self.calls = calls

    def check_deadline(self) -> None:
        self.calls -= 1
        if self.calls < 0:
            raise CellTimeout("cell exceeded its time limit (timeout_s)")


def test_cell_deadline_is_checked_every_step_and_keeps_the_curve():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=10**6, batch=4, eval_every=10, eval_size=8)
    rows, err = collect(train_and_evaluate(TinyLM(6, d=8), task, cfg, ctx=DeadlineAfter(25)))
    assert isinstance(err, CellTimeout)
    assert [r["step"] for r in rows if r["metric"] == "val_accuracy"] == [10, 20]  # curve kept


def test_bf16_autocast_on_cpu_runs():
    task = make_task("induction_heads", seq_len=12, vocab=6)
    cfg = TrainConfig(steps=3, batch=4, eval_every=3, eval_size=4, amp="bf16")
    lin = nn.Sequential(nn.Embedding(6, 8), nn.Linear(8, 6))
    rows, err = collect(train_and_evaluate(lin, task, cfg))
    assert err is None and math.isfinite(final(rows, "loss", 12)["value"])


@pytest.mark.parametrize("seed", [0, 1])
def test_answer_loss_is_the_mean_over_answer_positions_only(seed):
    """The sync-free loss equals cross-entropy over the gathered answers, whatever the other targets
    hold, and its gradient reaches answer positions only."""
    from harness.kinds.training.train import answer_loss

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 17, 11, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (3, 17), generator=g)
    mask = torch.rand(3, 17, generator=g) < 0.3
    mask[0, 0] = True
    loss = answer_loss(logits, TaskBatch(targets, targets, mask))
    expected = torch.nn.functional.cross_entropy(logits[mask].double(), targets[mask])
    assert torch.allclose(loss.double(), expected, rtol=1e-6)
    loss.backward()
    assert logits.grad[~mask].abs().max() == 0 and logits.grad[mask].abs().max() > 0


def test_curve_seq_lens_give_val_rows_per_length_at_every_point():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=6, batch=8, eval_every=3, eval_size=8, curve_seq_lens=[24, 12, 48])
    rows, err = collect(train_and_evaluate(TinyLM(6, d=16), task, cfg))
    assert err is None
    curve = [r for r in rows if r["metric"] == "val_accuracy"]
    # the training length keeps its unlabelled rows; 12 in curve_seq_lens adds nothing; 24 and 48 each point
    assert sorted((r["step"], r.get("eval_seq_len") or 0) for r in curve) == [
        (3, 0), (3, 24), (3, 48), (6, 0), (6, 24), (6, 48)]
    for L in (24, 48):
        at = [r for r in rows if r.get("eval_seq_len") == L and "step" in r]
        assert {r["metric"] for r in at} == {"val_loss", "val_accuracy", "val_seq_accuracy"}
        assert all(r["status"] == "ok" and 0.0 <= r["value"] for r in at)
    # the final evaluation is unchanged: only eval_seq_lens (default: the training length)
    assert final(rows, "accuracy", 12)["status"] == "ok"


def test_curve_length_that_ooms_is_recorded_once_and_dropped():
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=6, batch=8, eval_every=2, eval_size=8, curve_seq_lens=[24, 48])
    rows, err = collect(train_and_evaluate(OOMAtLength(TinyLM(6, d=16), bad_len=48), task, cfg))
    assert err is None
    bad = [r for r in rows if r.get("eval_seq_len") == 48]
    assert len(bad) == 1 and bad[0]["status"] == "oom" and bad[0]["step"] == 2
    assert "length 48" in bad[0]["message"] and "not evaluated again" in bad[0]["message"]
    assert sorted(r["step"] for r in rows if r.get("eval_seq_len") == 24 and r["metric"] == "val_accuracy") == [2, 4, 6]


def test_curve_seq_lens_are_checked_against_the_task():
    from pydantic import ValidationError as PydanticError

    from harness.kinds.task import TaskCellConfig

    with pytest.raises(PydanticError, match="train.curve_seq_lens"):
        TaskCellConfig.model_validate({"task": {"name": "copying", "seq_len": 12, "vocab": 6, "n_tokens": 4},
                                       "train": {"curve_seq_lens": [6]}})


@pytest.mark.parametrize("test_set", ["validation", "held_out"])
def test_final_metrics_on_the_validation_set_or_held_out_sequences(test_set):
    """The final loss equals the last val_loss only when both come from the same sequences (tune: chooses on
    val_* numbers; held_out keeps the reported ones apart from them)."""
    task = make_task("copying", seq_len=12, vocab=6, n_tokens=2)
    cfg = TrainConfig(steps=4, batch=8, lr=1e-3, eval_every=4, eval_size=32, test_set=test_set)
    torch.manual_seed(0)
    rows, err = collect(train_and_evaluate(TinyLM(6, d=16), task, cfg, seed=0))
    assert err is None
    last_val = [r for r in rows if r["metric"] == "val_loss" and r.get("step") == 4][0]["value"]
    same = final(rows, "loss")["value"] == pytest.approx(last_val, rel=1e-6)
    assert same == (test_set == "validation")
