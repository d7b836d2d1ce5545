"""State size as a first-class number (issue 18): every model cell (task; speed and memory with impl model /
layer; decode) writes ``state_elements`` and ``state_bytes`` per sequence from ``models.state_size``, which
the decode kind checks against the tensors it actually decodes with; the diff and report treat them as facts
of the configuration (info metrics), and operator cells write none."""
import pytest
import torch

from harness.analysis.report.metrics import classify
from harness.cells import Cell, CellContext
from harness.kinds import decode, memory, speed, task
from harness.kinds.bench.testing import TINY_OP, by_metric, cell, ctx
from models.state_size import state_size

MAMBA2 = dict(arch="mamba2", n_layers=2, d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=8)
ATTENTION = dict(arch="transformer", mixer="attention", n_layers=1, d_model=16, heads=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def state_of(rows):
    m = by_metric(rows)
    return {k: (m[k][0]["value"], m[k][0]["unit"], m[k][0]["context_len"]) for k in ("state_elements", "state_bytes")}


@pytest.mark.parametrize("kind", [speed, memory])
@pytest.mark.parametrize("impl", ["model", "layer"])
def test_bench_model_cells_write_the_state_size(kind, impl):
    params = {**TINY_OP, "impl": impl, "model": MAMBA2, "vocab": 32, "pass": "fwd", "repeats": 1, "dtype": "bf16"}
    got = state_of(list(kind.run_cell(cell(kind.SPEC.name, **params), ctx())))
    want = state_size({**MAMBA2, "n_layers": 1 if impl == "layer" else 2}, 16, torch.bfloat16)
    # E = 32, G N = 16: conv (32 + 2*16) * 4 bf16 and the SSD state 32 * 8 fp32, per layer
    per_layer = (64 * 4, 64 * 4 * 2 + 32 * 8 * 4)
    n = 1 if impl == "layer" else 2
    assert got == {"state_elements": (want["elements"], "elements", 16), "state_bytes": (want["bytes"], "bytes", 16)}
    assert (want["elements"], want["bytes"]) == (n * (per_layer[0] + 256), n * per_layer[1])


def test_operator_cells_write_no_state_size():
    rows = by_metric(speed.run_cell(cell("speed", impl="s6.chunked", **{**TINY_OP, "repeats": 1}), ctx()))
    assert "state_bytes" not in rows and "state_elements" not in rows


@pytest.mark.parametrize("model,grows", [(MAMBA2, False), (ATTENTION, True)])
def test_decode_state_size_is_per_sequence_at_the_context_length(model, grows):
    def run(prompt_len):
        params = dict(model=model, vocab=32, batch=2, prompt_len=prompt_len, gen_len=3, dtype="fp32", warmup=0,
                      repeats=1, device="cpu", cuda_graph=True)
        rows = list(decode.run_cell(cell("decode", **params), ctx()))
        assert all(r["status"] == "ok" for r in rows), rows[-1]
        return by_metric(rows)
    short, long_ = run(2), run(9)
    s, l = (m["state_bytes"][0]["value"] for m in (short, long_))
    assert (l > s) == grows and short["state_bytes"][0]["context_len"] == 5
    assert s == state_size(model, 5, torch.float32)["bytes"]
    if not grows:   # the fixed state: the batch's decoding tensors are exactly batch x the formula
        assert short["decode_state_bytes"][0]["value"] == 2 * s


def test_task_cells_write_the_state_size_at_the_training_length():
    p = {"task": {"name": "mqar", "seq_len": 32, "vocab": 16, "n_tokens": 4}, "model": MAMBA2,
         "train": {"steps": 1, "batch": 2, "eval_every": 1, "eval_size": 2}, "device": "cpu"}
    rows = list(task.run_cell(Cell("t", "task", "cid", p), CellContext(device="cpu")))
    want = state_size(MAMBA2, 32, torch.float32)
    assert state_of(rows) == {"state_elements": (want["elements"], "elements", 32),
                              "state_bytes": (want["bytes"], "bytes", 32)}


def test_a_plugin_mixer_gets_a_skipped_row_not_a_crash(monkeypatch):
    from harness.kinds import state_rows
    import sys
    ss = sys.modules["models.state_size"]
    monkeypatch.setattr(ss, "state_size", lambda *a, **k: (_ for _ in ()).throw(ValueError("no formula for mixer 'x'")))
    rows = list(state_rows.state_size_rows(MAMBA2, 8))
    assert [(r["metric"], r["status"]) for r in rows] == [("state_bytes", "skipped")] and "no formula" in rows[0]["message"]


def test_state_size_metrics_are_facts_not_regressions():
    for metric, unit in (("state_bytes", "bytes"), ("state_elements", "elements")):
        info = classify(metric, unit)
        assert (info.family, info.direction) == ("info", 0)
    assert classify("decode_state_bytes", "bytes").family == "memory"


def test_task_reports_plot_accuracy_against_state_size():
    import pandas as pd
    from harness.analysis.report.figures import state_size_figure
    rows = []
    for i, (arch, n, acc) in enumerate([("mamba", 16, 0.3), ("mamba2", 16, 0.6), ("mamba2", 64, 0.9)]):
        base = {"cell_id": f"c{i}", "status": "ok", "model.arch": arch, "model.d_state": n, "task.seq_len": 64}
        rows += [{**base, "metric": "accuracy", "value": acc, "eval_seq_len": 64},
                 {**base, "metric": "state_bytes", "value": 1024.0 * n * (2 if arch == "mamba2" else 1)}]
    df = pd.DataFrame(rows)
    fig = state_size_figure(df)
    assert fig is not None and fig.name == "task_accuracy_vs_state" and fig.png[:4] == b"\x89PNG"
    same = df.assign(value=[0.3, 1.0, 0.6, 1.0, 0.9, 1.0])   # one state size: nothing to plot against
    assert state_size_figure(same) is None
