"""The bookkeeping and fallbacks around CUDA graphs, events and the allocator, run on the CPU with stand-ins
(tests/cuda_standins.py): the training step's graph and its capture-failure fallback, decode's graph
capture and its fallback, the CUDA peak-memory rows (``peak_mem_bytes``, ``peak_mem_GB``) and the CUDA-event
timer.  The real GPU runs: tests/test_task_kind.py, tests/test_bench_gpu.py (``@pytest.mark.gpu``)."""
from __future__ import annotations

import copy

import pytest
import torch

from cuda_standins import FakeCuda
from harness.kinds.tasks.base import TaskBatch
from harness.kinds.training.train_step import EagerStep, GraphedStep


@pytest.fixture
def fake_cuda(monkeypatch):
    return FakeCuda().install(monkeypatch)


# --------------------------------------------------------------------------- the training step's graph


def _model_and_batches(n_steps=7):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(8, 6), torch.nn.Linear(6, 8))
    g = torch.Generator().manual_seed(1)
    batches = [TaskBatch(torch.randint(0, 8, (4, 5), generator=g), torch.randint(0, 8, (4, 5), generator=g),
                         torch.rand(4, 5, generator=g) > 0.3) for _ in range(n_steps)]
    return model, batches


def _loss_fn(model, fake=None, fail_inside_capture=False):
    def loss(batch):
        if fake is not None and fake.capturing and fail_inside_capture:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
        logits = model(batch.inputs)
        per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
        return (per * batch.mask).sum() / batch.mask.sum().clamp(min=1)
    return loss


def _train(step_cls, model, batches, fake=None, fail_inside_capture=False, **kw):
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    step = step_cls(_loss_fn(model, fake, fail_inside_capture), opt, params, 1.0, **kw)
    if fake is not None:   # a replay computes the captured step again into the same loss tensor
        fake.on_replay = lambda g: step.static_loss.copy_(step._loss_backward_update(step.static_batch))
    losses = [float(step(b)) for b in batches]
    return step, losses, [p.detach().clone() for p in params]


@pytest.mark.parametrize("where", ["at entry", "inside the captured step"])
def test_a_failed_capture_falls_back_to_the_eager_step_and_says_why(fake_cuda, where):
    model, batches = _model_and_batches()
    eager_model = copy.deepcopy(model)
    if where == "at entry":
        fake_cuda.capture_error = RuntimeError("CUDA error: capture not supported\nsecond line")
    step, losses, params = _train(GraphedStep, model, batches, fake_cuda, fail_inside_capture=where != "at entry",
                                  device=torch.device("cpu"))
    _, eager_losses, eager_params = _train(EagerStep, eager_model, batches)
    first = "capture not supported" if where == "at entry" else "operation not permitted when stream is capturing"
    assert step.fallback_reason == f"CUDA graph capture failed (RuntimeError: CUDA error: {first}); ran eagerly"
    assert not step.graphed and step.graph is None and step.static_batch is None
    assert fake_cuda.log.count("capture") == 1                   # tried once, then eager for good
    assert losses == eager_losses                                # nothing lost, nothing run twice
    for p, q in zip(params, eager_params):
        assert torch.equal(p, q)


def test_the_step_warms_up_eagerly_then_captures_once_and_replays_with_each_new_batch(fake_cuda):
    model, batches = _model_and_batches()
    step, losses, _ = _train(GraphedStep, model, batches, fake_cuda, device=torch.device("cpu"))
    assert step.fallback_reason is None and step.graphed
    assert len(fake_cuda.graphs) == 1 and fake_cuda.log.count("capture") == 1
    # warm-up steps 1-3 eager, step 4 captures and replays its own (already copied) batch, 5-7 replay
    assert fake_cuda.graphs[0].replays == len(batches) - GraphedStep.WARMUP_STEPS
    assert torch.equal(step.static_batch.inputs, batches[-1].inputs)
    assert torch.equal(step.static_batch.mask, batches[-1].mask)
    assert step.static_batch.inputs is not batches[-1].inputs       # a static buffer, copied into
    assert all(torch.isfinite(torch.tensor(losses)))


def test_set_lr_fills_a_graphed_optimizers_tensor_lr_in_place():
    from harness.kinds.training.train_step import set_lr
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([{"params": [p], "lr": torch.tensor(0.1), "lr_scale": 0.5}])
    lr = opt.param_groups[0]["lr"]
    set_lr(opt, 0.01)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.005)
    opt2 = torch.optim.Adam([p], lr=0.1)
    set_lr(opt2, 0.02)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.02)


# --------------------------------------------------------------------------- decode's graph


def _decode_cfg(**kw):
    from harness.kinds.decode import DecodeConfig
    params = dict(model=dict(arch="mamba", mixer="s6", n_layers=1, d_model=16), vocab=32, batch=2, prompt_len=3,
                  gen_len=4, dtype="fp32", warmup=0, repeats=1, device="cuda", cuda_graph=True)
    params.update(kw)
    return DecodeConfig.model_validate(params)


@pytest.fixture
def cpu_buffers(monkeypatch):
    """The decode kind asked for "cuda" builds its static buffers on the CPU (the graph is the stand-in's)."""
    from harness.kinds import decode
    from harness.kinds.bench.static_step import StaticStepper
    real_init = decode.static_init_state
    monkeypatch.setattr(decode, "static_init_state", lambda lm, cfg, device: real_init(lm, cfg, "cpu"))
    monkeypatch.setattr(decode, "StaticStepper",
                        lambda lm, init, batch, device, capture: StaticStepper(lm, init, batch, "cpu", capture))


def _lm(cfg):
    import models
    torch.manual_seed(0)
    return models.build_lm(cfg.model_dict(), cfg.vocab).eval()


def test_decode_capture_failure_decodes_eagerly_and_says_why(fake_cuda, cpu_buffers):
    from harness.kinds.decode import _stepper
    fake_cuda.capture_error = RuntimeError("CUDA error: operation failed due to a previous error during capture\nx")
    cfg = _decode_cfg()
    with torch.inference_mode():
        stepper, note = _stepper(_lm(cfg), cfg, "cuda")
    assert stepper is None
    assert note == "eager: capture failed (CUDA error: operation failed due to a previous error during capture)"


def test_decode_refuses_a_state_that_cannot_be_replayed_before_capturing(fake_cuda, cpu_buffers):
    from harness.kinds.decode import _stepper
    cfg = _decode_cfg(model=dict(arch="transformer", mixer="attention", n_layers=1, d_model=16, heads=2,
                                 pos="abs"))
    lm = _lm(cfg)
    monkey_state = lambda *a, **k: lm.__class__.init_state(lm, cfg.batch, "cpu", torch.float32)  # noqa: E731
    lm.init_state = monkey_state   # the growing (non-static) cache: cannot be captured
    with torch.inference_mode():
        stepper, note = _stepper(lm, cfg, "cuda")
    assert stepper is None and note.startswith("eager: ") and "capture" not in fake_cuda.log


def test_decode_graph_replays_give_the_eager_steps_logits(fake_cuda, cpu_buffers):
    """Capture (warm-up on a side stream, one captured step, reset), then every step a replay: the logits are
    the plain step's (the stand-in replay runs the captured step again into the same buffers)."""
    from harness.kinds.bench.testing import greedy_logits, stepper_logits
    from harness.kinds.decode import _stepper
    cfg = _decode_cfg()
    lm = _lm(cfg)
    with torch.inference_mode():
        stepper, note = _stepper(lm, cfg, "cuda")
        assert note is None and stepper.graph is fake_cuda.graphs[0]
        captured_logits = stepper.logits
        fake_cuda.on_replay = lambda g: stepper.logits.copy_(stepper._step_in_place())
        prompt = torch.tensor([[5, 1], [7, 2]])
        got = stepper_logits(stepper, prompt, cfg.gen_len)
        assert stepper.logits is captured_logits and fake_cuda.graphs[0].replays == prompt.shape[1] + cfg.gen_len
        want = greedy_logits(lm, lm.init_state(cfg.batch, "cpu", torch.float32), prompt, cfg.gen_len)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- CUDA peak memory and the event timer


def test_cuda_peak_memory_is_the_high_water_mark_of_the_region_over_the_baseline(fake_cuda):
    from harness.kinds.bench.peak_memory import PeakMemory
    fake_cuda.allocate(1000)          # held before: the model, say
    fake_cuda.allocate(5000)
    fake_cuda.free(5000)              # an earlier cell's peak, which the reset must forget
    with PeakMemory("cuda") as pm:
        fake_cuda.allocate(300)
        fake_cuda.free(300)
        fake_cuda.allocate(100)
    assert "reset_peak_memory_stats" in fake_cuda.log
    assert pm.start_bytes == 1000 and pm.peak_bytes == 1300 and pm.cell_peak_bytes == 300
    (row,) = pm.rows(repeat=2)
    assert (row["metric"], row["value"], row["unit"], row["repeat"]) == ("peak_mem_bytes", 300, "bytes", 2)
    assert row["method"] == "torch.cuda.max_memory_allocated" and row["baseline_bytes"] == 1000
    with PeakMemory("cuda", baseline_bytes=0) as pm:   # the memory kind's baseline: before the model existed
        fake_cuda.allocate(50)
    assert pm.cell_peak_bytes == 1150


def test_memory_kind_reports_peak_mem_GB_on_cuda(fake_cuda, monkeypatch):
    """The CUDA rows of kind: memory: peak_mem_bytes per repeat over the pre-build baseline, peak_mem_GB the
    largest repeat in 1e9 bytes."""
    from harness.kinds import memory
    from harness.kinds.bench import IMPLS
    from harness.cells import CellContext
    from harness.kinds.bench.testing import TINY_OP, by_metric, cell
    from harness.kinds.bench.workload import Impl, Workload
    from harness.run.execute import execute_cell
    sizes = iter([2_000_000_000, 3_000_000_000, 1_000_000_000])

    def build(cfg, device):
        fake_cuda.allocate(500_000_000)            # the workload's own inputs, after the baseline

        def fn():
            n = next(sizes, 1)
            fake_cuda.allocate(n)
            fake_cuda.free(n)
        return Workload(fn, tokens=cfg.batch * cfg.seq_len)
    monkeypatch.setitem(IMPLS._entries, "test.fake_cuda", Impl("test.fake_cuda", build))
    monkeypatch.setattr(memory, "gpu_state_rows", lambda device: [])
    rows = execute_cell(cell("memory", **{**TINY_OP, "repeats": 2, "warmup": 1, "device": "cuda"},
                             impl="test.fake_cuda"), CellContext(device="cuda"))
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    m = by_metric(rows)
    assert [r["value"] for r in m["peak_mem_bytes"]] == [3_500_000_000, 1_500_000_000]   # warm-up's 2e9 forgotten
    assert m["peak_mem_GB"][0]["value"] == pytest.approx(3.5) and m["peak_mem_GB"][0]["unit"] == "GB"
    assert "peak_rss_bytes" not in m


def test_cuda_event_timer_times_between_its_events_after_the_l2_flush(fake_cuda, monkeypatch):
    from harness.kinds.bench import timing
    monkeypatch.setattr(timing, "L2_FLUSH_BYTES", 16)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: real_empty(*a, **k))  # the flush buffer
    timer = timing.make_timer("cuda", flush_l2=True)
    assert isinstance(timer, timing.CudaEventTimer)
    timer.flush.fill_(7)
    calls = []

    def work():
        assert not timer.flush.any(), "the L2 flush must come before the timed call"
        fake_cuda.clock_ms += 2.5
        calls.append(fake_cuda.log[-1])

    assert timer(work) == pytest.approx(2.5)
    assert calls == ["event.record"]                            # the start event is recorded before the call
    assert fake_cuda.log[-2:] == ["event.record", "event.synchronize"]   # end recorded, then waited for
    fake_cuda.clock_ms += 100.0                                 # time outside the call is not counted
    assert timer(lambda: setattr(fake_cuda, "clock_ms", fake_cuda.clock_ms + 0.25)) == pytest.approx(0.25)
    assert timing.make_timer("cuda", flush_l2=False).flush is None
    assert isinstance(timing.make_timer("cpu"), timing.CpuTimer)


def test_synchronize_waits_only_on_cuda(fake_cuda):
    from harness.kinds.bench.timing import synchronize
    synchronize("cpu")
    assert "synchronize" not in fake_cuda.log
    synchronize("cuda:0")
    assert fake_cuda.log == ["synchronize"]
