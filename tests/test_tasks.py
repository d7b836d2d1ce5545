"""Synthetic task generators: layout, answers determined by the input, seeding, validation sets."""
from __future__ import annotations

import pytest
import torch

from harness.kinds.tasks import TASKS, make_task
from harness.kinds.tasks.base import IGNORE, TaskBatch
from harness.kinds.tasks.config import TaskConfig

ALL = ["copying", "selective_copying", "induction_heads", "mqar"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def answers(b: TaskBatch) -> torch.Tensor:
    """(batch, k) targets at the masked positions, in position order."""
    return b.targets[b.mask].view(b.batch_size, -1)


@pytest.mark.parametrize("name", ALL)
def test_shapes_mask_and_ignore(name):
    task = make_task(name, seq_len=48, vocab=12, n_tokens=4)
    b = task.sample(7, 48, gen())
    assert b.inputs.shape == b.targets.shape == b.mask.shape == (7, 48)
    assert b.inputs.dtype == b.targets.dtype == torch.long and b.mask.dtype == torch.bool
    assert (b.mask.sum(1) == 4).all()  # exactly the n_tokens answers are scored
    assert (b.targets[~b.mask] == IGNORE).all()
    assert ((b.inputs >= 0) & (b.inputs < task.vocab_size)).all()
    assert ((answers(b) >= 0) & (answers(b) < task.vocab_size)).all()


@pytest.mark.parametrize("name", ALL)
def test_seeding_reproducible_and_fresh_each_draw(name):
    task = make_task(name, seq_len=64, vocab=16, n_tokens=3)
    a, b = task.sample(16, 64, gen(5)), task.sample(16, 64, gen(5))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    g = gen(5)
    first, second = task.sample(16, 64, g), task.sample(16, 64, g)
    assert not torch.equal(first.inputs, second.inputs)  # fresh data every step
    assert not torch.equal(task.sample(16, 64, gen(6)).inputs, a.inputs)


def test_copying_layout():
    task = make_task("copying", seq_len=30, vocab=10, n_tokens=5)
    b = task.sample(64, 30, gen())
    data = b.inputs[:, :5]
    assert ((data >= 1) & (data <= 8)).all()
    assert (b.inputs[:, 5:25] == 0).all()  # the delay is noise
    assert (b.inputs[:, 25:] == 9).all()  # markers
    assert b.mask[:, 25:].all() and not b.mask[:, :25].any()
    assert torch.equal(answers(b), data)  # the data tokens, in order
    assert task.chance_accuracy == pytest.approx(1 / 8)


def test_selective_copying_answers_are_the_scattered_tokens_in_order():
    task = make_task("selective_copying", seq_len=40, vocab=16, n_tokens=6)
    b = task.sample(200, 40, gen(1))
    body = b.inputs[:, :34]
    assert (b.inputs[:, 34:] == 15).all() and b.mask[:, 34:].all()
    is_data = body != 0
    assert (is_data.sum(1) == 6).all()
    got = body[is_data].view(200, 6)  # row-major: left to right
    assert ((got >= 1) & (got <= 14)).all()
    assert torch.equal(answers(b), got)
    # positions really vary (not the plain copying layout), and cover the whole body
    positions = is_data.nonzero()[:, 1]
    assert positions.min() == 0 and positions.max() == 33
    assert not torch.equal(is_data[0], is_data[1])


def test_selective_copying_positions_roughly_uniform():
    task = make_task("selective_copying", seq_len=20, vocab=16, n_tokens=2)
    b = task.sample(20000, 20, gen(2))
    freq = (b.inputs[:, :18] != 0).float().mean(0)  # each of 18 slots holds data w.p. 2/18
    assert torch.allclose(freq, torch.full_like(freq, 2 / 18), atol=0.015)


@pytest.mark.parametrize("k", [1, 3])
def test_induction_target_is_token_after_first_trigger(k):
    L, V = 50, 10
    task = make_task("induction_heads", seq_len=L, vocab=V, n_tokens=k)
    b = task.sample(300, L, gen(3))
    trig = V - 1
    for row, tgt in zip(b.inputs, answers(b)):
        where = (row == trig).nonzero().flatten().tolist()
        assert len(where) == 2, "the trigger occurs exactly twice"
        first, second = where
        assert second == L - k  # final trigger, then k-1 teacher-forced answers
        assert torch.equal(tgt, row[first + 1:first + 1 + k])  # what followed the first trigger
        assert first + k < second
        assert torch.equal(row[second + 1:], tgt[:-1])
        assert 0 not in row.tolist()  # 0 is reserved
    assert b.mask[:, L - k:].all() and not b.mask[:, :L - k].any()
    # the first trigger's position varies over the whole haystack
    firsts = (b.inputs[:, :L - k] == trig).float().argmax(1)
    assert firsts.min() == 0 and firsts.max() == L - 2 * k - 1


def test_induction_minimal_length():
    task = make_task("induction_heads", seq_len=3, vocab=4, n_tokens=1)
    b = task.sample(5, 3, gen())
    assert (b.inputs[:, 0] == 3).all() and (b.inputs[:, 2] == 3).all()
    assert torch.equal(answers(b)[:, 0], b.inputs[:, 1])


def test_mqar_answer_is_value_of_queried_key():
    task = make_task("mqar", seq_len=40, vocab=21, n_tokens=5)
    b = task.sample(100, 40, gen(4))
    for row, tgt, m in zip(b.inputs, b.targets, b.mask):
        kv = {int(row[2 * i]): int(row[2 * i + 1]) for i in range(5)}
        assert len(kv) == 5 and all(1 <= k <= 10 for k in kv) and all(11 <= v <= 20 for v in kv.values())
        q = m.nonzero().flatten()
        assert (q >= 10).all()
        assert sorted(int(row[p]) for p in q) == sorted(kv)  # every key queried once
        for p in q:
            assert int(tgt[p]) == kv[int(row[p])]
        tail = row[10:].clone()
        tail[q - 10] = 0
        assert (tail == 0).all()  # the rest is noise


def test_validation_set_fixed_and_chunk_independent():
    task = make_task("induction_heads", seq_len=32, vocab=16)
    v1, v2 = task.validation_set(64, 10, seed=7), task.validation_set(64, 10, seed=7)
    whole = TaskBatch.cat(list(v1.chunks(10)))
    assert whole.inputs.shape == (10, 64)
    for chunk in (1, 3, 4):
        again = TaskBatch.cat(list(v2.chunks(chunk)))
        assert torch.equal(whole.inputs, again.inputs) and torch.equal(whole.targets, again.targets)
    other_seed = TaskBatch.cat(list(task.validation_set(64, 10, seed=8).chunks(10)))
    assert not torch.equal(other_seed.inputs, whole.inputs)
    # one set per length: the 128-long set is not the 64-long one stretched
    longer = TaskBatch.cat(list(task.validation_set(128, 10, seed=7).chunks(10)))
    assert not torch.equal(longer.inputs[:, :64], whole.inputs)
    # sequences within a set differ from each other
    assert len({tuple(r.tolist()) for r in whole.inputs}) == 10


@pytest.mark.parametrize("name,kwargs,needle", [
    ("selective_copying", dict(seq_len=20, vocab=16, n_tokens=16), "seq_len must be >= 32"),
    ("copying", dict(seq_len=20, vocab=2, n_tokens=2), "task.vocab >= 3"),
    ("induction_heads", dict(seq_len=4, vocab=16, n_tokens=2), "seq_len must be >= 5"),
    ("mqar", dict(seq_len=64, vocab=9, n_tokens=8), "task.vocab >= 17"),
    ("mqar", dict(seq_len=20, vocab=40, n_tokens=8), "seq_len >= 24"),
])
def test_impossible_setups_are_clear_errors(name, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        make_task(name, **kwargs)


def test_eval_length_too_short_is_a_clear_error():
    task = make_task("selective_copying", seq_len=64, vocab=16, n_tokens=16)
    with pytest.raises(ValueError, match="cannot be evaluated at length 20"):
        task.validation_set(20, 4, seed=0)


def test_task_config_did_you_mean_and_defaults():
    with pytest.raises(ValueError, match="did you mean 'induction_heads'"):
        TaskConfig(name="induction_head", seq_len=64)
    with pytest.raises(ValueError, match="extra"):
        TaskConfig(name="copying", seq_len=64, delay=3)
    cfg = TaskConfig(name="selective_copying", seq_len=4096)
    task = cfg.build()
    assert (task.vocab, task.n_tokens, task.chance_accuracy) == (16, 16, pytest.approx(1 / 14))
    assert TaskConfig(name="induction_heads", seq_len=256).build().n_tokens == 1
    assert set(ALL) <= set(TASKS.names())


def test_generation_on_long_sequences_is_cheap():
    task = make_task("induction_heads", seq_len=256, vocab=16)
    b = task.validation_set(1 << 20, 1, seed=0).sequence(0)
    assert b.inputs.shape == (1, 1 << 20)
    assert int((b.inputs == 15).sum()) == 2
