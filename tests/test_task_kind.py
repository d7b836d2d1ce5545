"""The ``task`` suite kind: cell validation, run_cell rows, the real model path, and our suite files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from harness.cells import Cell, CellContext, CellDiverged
from harness.kinds import KINDS
from harness.kinds import task as task_kind
from harness.kinds.task import SPEC, TaskCellConfig, run_cell

ROOT = Path(__file__).resolve().parents[1]
OUR_SUITES = ["suites/paper/selective_copying.yaml", "suites/paper/induction_heads.yaml",
              "suites/quick/selective_copying.yaml", "suites/quick/induction_heads.yaml"]


class TinyLM(nn.Module):
    def __init__(self, vocab: int, d: int = 32):
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(vocab, d), nn.GRU(d, d, batch_first=True), nn.Linear(d, vocab)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[0])


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params(**over):
    p = {"task": {"name": "copying", "seq_len": 12, "vocab": 6, "n_tokens": 2},
         "model": {"arch": "mamba", "mixer": "s6", "n_layers": 1, "d_model": 16, "d_state": 4},
         "train": {"steps": 6, "batch": 4, "lr": 1e-3, "eval_every": 3, "eval_size": 8, "eval_seq_lens": [12, 20]},
         "device": "cpu", "seed": 0}
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            p[section][field] = value
        else:
            p[section] = value
    return p


def run(p, monkeypatch=None, model_cls=TinyLM):
    if monkeypatch is not None:
        monkeypatch.setattr(task_kind, "build_model", lambda cfg, vocab: model_cls(vocab))
    rows, err = [], None
    try:
        for r in run_cell(Cell("t", "task", "cid", p), CellContext(device="cpu")):
            rows.append(r)
    except Exception as e:  # noqa: BLE001
        err = e
    return rows, err


def test_spec_is_registered():
    assert KINDS.get("task") is SPEC and SPEC.config_model is TaskCellConfig and SPEC.run_cell is run_cell


def test_config_defaults_and_sections():
    cfg = TaskCellConfig.model_validate({"task": {"name": "induction_heads", "seq_len": 256}})
    assert cfg.model.arch == "mamba" and cfg.train.optimizer == "adamw" and cfg.seed == 0
    assert cfg.train.eval_seq_lens is None  # -> [task.seq_len] in the loop


@pytest.mark.parametrize("over,needle", [
    ({"task__name": "selectve_copying"}, "did you mean 'selective_copying'"),
    ({"task__n_tokens": 9}, "seq_len must be >= 18"),
    ({"task__vocab": 2}, "task.vocab >= 3"),
    ({"train__eval_seq_lens": [12, 3]}, "train.eval_seq_lens"),
    ({"train__optimiser": "adam"}, "optimiser"),
    ({"train__warmup_steps": 100}, "warmup_steps=100 exceeds train.steps=6"),
    ({"model__mixer": "s7"}, "did you mean 's6'"),
    ({"model": {"arch": "transformer", "mixer": "attention", "pos": "abs", "max_len": 16, "d_model": 16,
                "heads": 2}}, "raise model.max_len"),
])
def test_bad_cells_get_clear_messages(over, needle):
    with pytest.raises(ValidationError, match=needle):
        TaskCellConfig.model_validate(params(**over))


def test_run_cell_rows(monkeypatch):
    rows, err = run(params(), monkeypatch)
    assert err is None
    finals = [r for r in rows if "step" not in r]
    by = {(r["metric"], r.get("eval_seq_len")) for r in finals}
    for n in (12, 20):
        assert {("accuracy", n), ("seq_accuracy", n), ("loss", n)} <= by
    assert {("train_time_s", None), ("steps", None), ("n_params", None), ("chance_accuracy", None)} <= by
    curve = [r for r in rows if "step" in r]
    assert {r["metric"] for r in curve} >= {"train_loss", "val_loss", "val_accuracy", "val_seq_accuracy", "lr"}
    assert sorted({r["step"] for r in curve}) == [3, 6]
    assert all(r["status"] == "ok" for r in rows)
    assert all(set(r) >= {"metric", "value", "unit", "repeat", "status"} for r in rows)


def test_run_cell_seeds_init_and_data(monkeypatch):
    def accs(seed):
        rows, _ = run(params(seed=seed), monkeypatch)
        return [(r["metric"], r.get("step"), r.get("eval_seq_len"), r["value"]) for r in rows
                if r["metric"] not in ("train_time_s",)]

    assert accs(3) == accs(3)
    assert accs(3) != accs(4)


def test_run_cell_divergence_keeps_rows(monkeypatch):
    rows, err = run(params(train__lr=1e9, train__steps=200, train__eval_every=1), monkeypatch)
    assert isinstance(err, CellDiverged)
    assert any(r["metric"] == "val_accuracy" for r in rows) and rows[-1]["status"] == "diverged"


def test_real_model_path_smoke():
    """models.build_lm + run_cell end to end (tiny Mamba/S6, a few steps; not a learning test)."""
    rows, err = run(params(task={"name": "induction_heads", "seq_len": 12, "vocab": 6},
                           train__steps=2, train__eval_every=2, train__eval_size=4, train__eval_seq_lens=[12, 24]))
    assert err is None, err
    n_params = [r for r in rows if r["metric"] == "n_params"][0]["value"]
    assert n_params > 0
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert [r["eval_seq_len"] for r in acc] == [12, 24] and all(0 <= r["value"] <= 1 for r in acc)


@pytest.mark.parametrize("path", OUR_SUITES)
def test_our_suites_expand_and_validate(path):
    from harness.suite.expand import expand
    from harness.suite.schema import load_suites
    suites = load_suites(ROOT / path)
    for suite in suites:
        cells = expand(suite, cuda_available=True)
        assert cells and all(c.kind == "task" for c in cells)
        for c in cells:
            cfg = TaskCellConfig.model_validate(c.params)
            if "quick" in path:
                assert cfg.train.timeout_s is not None, f"{path}: quick cells need train.timeout_s"
        assert suite.spec.expect, f"{path} has no expect entries"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", [
    {"arch": "mamba", "mixer": "s6", "n_layers": 2, "d_model": 32, "backend": "auto"},   # triton scan, bf16 autocast
    {"arch": "transformer", "mixer": "attention", "pos": "rope", "n_layers": 2, "d_model": 32, "heads": 4, "mlp_ratio": 0},
])
def test_gpu_cell_trains_with_bf16_and_evaluates_long(model):
    p = params(task={"name": "induction_heads", "seq_len": 64, "vocab": 16}, model=model,
               train={"steps": 50, "batch": 16, "lr": 1e-3, "eval_every": 25, "eval_size": 32,
                      "eval_seq_lens": [64, 1024], "amp": "auto"}, device="cuda")
    rows = list(run_cell(Cell("t", "task", "cid", p), CellContext(device="cuda")))
    assert all(r["status"] == "ok" for r in rows)
    acc = {r["eval_seq_len"]: r["value"] for r in rows if r["metric"] == "accuracy"}
    assert set(acc) == {64, 1024} and all(0.0 <= v <= 1.0 for v in acc.values())
    assert [r for r in rows if r["metric"] == "train_time_s"][0]["value"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", [
    {"arch": "mamba", "mixer": "s6", "backend": "auto"},        # the triton scan inside the graph
    {"arch": "none", "mixer": "s6", "backend": "auto"},
    {"arch": "h3", "mixer": "s4"},                              # FFT convolution
    {"arch": "mamba", "mixer": "hyena", "max_len": 64},
    {"arch": "transformer", "mixer": "attention", "pos": "rope", "heads": 4, "mlp_ratio": 0},
])
def test_cuda_graph_step_trains_like_the_eager_step(model):
    """The graphed step (3 eager warm-up steps, then one captured graph replayed) follows the eager run:
    same learning curve and final accuracy (fp32, so only reduction order can differ)."""
    def run(cuda_graph):
        torch.manual_seed(0)
        p = params(task={"name": "selective_copying", "seq_len": 64, "vocab": 16, "n_tokens": 4},
                   model={"n_layers": 2, "d_model": 32, "d_state": 16, **model},
                   train={"steps": 40, "batch": 16, "lr": 2e-3, "eval_every": 10, "eval_size": 64,
                          "grad_clip": 1.0, "warmup_steps": 5, "schedule": "cosine", "amp": "none",
                          "cuda_graph": cuda_graph}, device="cuda")
        return list(run_cell(Cell("t", "task", "cid", p), CellContext(device="cuda")))

    eager, graphed = run(False), run(True)
    assert all(r["status"] == "ok" for r in eager + graphed)
    assert [r["value"] for r in graphed if r["metric"] == "cuda_graph"] == [1]
    assert not [r for r in eager if r["metric"] == "cuda_graph"]
    curve = lambda rows: [r["value"] for r in rows if r["metric"] in ("train_loss", "val_loss")]  # noqa: E731
    assert len(curve(eager)) == 8
    assert curve(graphed) == pytest.approx(curve(eager), rel=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", [
    {"arch": "mamba", "mixer": "s6", "backend": "auto"},        # the triton scan backward (dB, dC slices)
    {"arch": "none", "mixer": "s6", "backend": "auto"},
    {"arch": "h3", "mixer": "s4"},                              # FFT convolution
    {"arch": "h3", "mixer": "hyena", "max_len": 128},
    {"arch": "transformer", "mixer": "attention", "pos": "rope", "heads": 4, "mlp_ratio": 0},
])
def test_deterministic_training_repeats_bitwise(model):
    """train.deterministic: two runs of one seed (bf16 autocast, as the suites train) give the same
    learning curve and final numbers to the last bit (the same seeds without it do not: the H200 check
    in reports/gpu/h200-2026-12-02b)."""
    def run():
        p = params(task={"name": "selective_copying", "seq_len": 128, "vocab": 16, "n_tokens": 8},
                   model={"n_layers": 2, "d_model": 64, "d_state": 16, **model},
                   train={"steps": 60, "batch": 32, "lr": 2e-3, "eval_every": 20, "eval_size": 64,
                          "grad_clip": 1.0, "amp": "auto", "deterministic": True}, device="cuda")
        return list(run_cell(Cell("t", "task", "cid", p), CellContext(device="cuda")))

    first, second = run(), run()
    assert all(r["status"] == "ok" for r in first + second), [r.get("message") for r in first + second]
    numbers = lambda rows: [(r["metric"], r.get("step"), r["value"]) for r in rows  # noqa: E731
                            if r["metric"] in ("train_loss", "val_loss", "val_accuracy", "accuracy", "loss")]
    assert len(numbers(first)) >= 10
    assert numbers(first) == numbers(second)
