"""GPU-only behaviour of the bench kinds: CUDA-event timing with L2 flush, max_memory_allocated, NVML."""
import pytest
import torch

from harness.kinds.bench.peak_memory import PeakMemory
from harness.kinds.bench.timing import L2_FLUSH_BYTES, CudaEventTimer
from harness.run.execute import execute_cell
from harness.kinds.bench.testing import TINY_MODEL, by_metric, cell, stepper_logits

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GPU_OP = dict(seq_len=2048, batch=2, d_model=256, expand=2, d_state=16, heads=8, dtype="bf16",
              warmup=2, repeats=5, device="cuda")


def cuda_ctx():
    from harness.cells import CellContext
    return CellContext(device="cuda")


def test_cuda_event_timer_flushes_l2_and_times_device_work():
    timer = CudaEventTimer("cuda", flush_l2=True)
    assert timer.flush.numel() == L2_FLUSH_BYTES
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    ms = [timer(lambda: a @ a) for _ in range(5)]
    assert all(0 < t < 1000 for t in ms)
    # a 4096^3 bf16 matmul is 137 GFLOP: at 5 PFLOP/s (no GPU is that fast) it would take 0.027 ms;
    # events that did not wait for the work would read a few microseconds
    assert min(ms) > 137e9 / 5e15 * 1e3


def test_peak_mem_counts_the_cells_allocation_only():
    keep = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")   # held before: the baseline
    with PeakMemory("cuda") as pm:
        tmp = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        del tmp
    row = pm.rows()[0]
    assert row["metric"] == "peak_mem_bytes"
    assert (256 << 20) <= row["value"] < (256 << 20) + (16 << 20)
    del keep


@pytest.mark.parametrize("impl", ["s6.triton", "s6.chunked", "attention.sdpa", "s4.fft"])
def test_speed_cell_on_cuda(impl):
    rows = execute_cell(cell("speed", **GPU_OP, impl=impl, **{"pass": "fwd+bwd"}), cuda_ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert len(m["time_ms"]) == 5 and "peak_mem_bytes" in m and "peak_rss_bytes" not in m
    # <= 1 unless the kernel beats a ceiling (the exp rate is derived, and a polynomial exp2 on
    # the FMA pipe could beat it): well above 1 means the cost model is wrong
    assert 0 < m["roofline_fraction"][0]["value"] <= 1.5
    assert "gpu_sm_clock_mhz" in m and "gpu_temperature_c" in m


def test_memory_cell_on_cuda_reports_gb():
    rows = execute_cell(cell("memory", **{**GPU_OP, "seq_len": 256}, impl="model", model=TINY_MODEL, vocab=64,
                             **{"pass": "train_step"}), cuda_ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert m["peak_mem_GB"][0]["value"] == pytest.approx(max(r["value"] for r in m["peak_mem_bytes"]) / 1e9)


def test_decode_cell_on_cuda():
    rows = execute_cell(cell("decode", model=TINY_MODEL, vocab=64, batch=4, prompt_len=16, gen_len=8, dtype="bf16",
                             warmup=1, repeats=2, device="cuda"), cuda_ctx())
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert m["tokens_per_s"][0]["value"] > 0 and "peak_mem_bytes" in m


def test_run_meta_on_cuda():
    from harness.kinds.speed import SPEC
    meta = SPEC.run_meta("cuda")["bench"]
    assert meta["ceilings"]["bytes_per_s"] > 1e11 and meta["ceilings"]["flops_per_s"] > 1e12
    assert meta["gpu_start"]["name"]


def test_decode_cuda_graph_replays_mamba_and_static_kv_cache_steps_and_falls_back_for_hyena():
    base = dict(vocab=64, batch=4, prompt_len=16, gen_len=8, dtype="bf16", warmup=1, repeats=2, device="cuda",
                cuda_graph=True)
    m = by_metric(execute_cell(cell("decode", model=TINY_MODEL, **base), cuda_ctx()))
    assert [r["value"] for r in m["cuda_graph"]] == [1], m["cuda_graph"]
    for pos in ("rope", "xpos", "abs"):   # the Transformer gets a static KV cache of prompt_len + gen_len slots
        attn = dict(arch="transformer", mixer="attention", n_layers=1, d_model=32, heads=2, pos=pos)
        rows = execute_cell(cell("decode", model=attn, **base), cuda_ctx())
        assert all(r["status"] == "ok" for r in rows), rows[-1]
        m = by_metric(rows)
        assert [r["value"] for r in m["cuda_graph"]] == [1], (pos, m["cuda_graph"])
        kv_bytes = 2 * 4 * 2 * (16 + 8) * 16 * 2                    # k and v, (B, H, capacity, d_head), bf16
        assert m["decode_state_bytes"][0]["value"] == kv_bytes + 2 * 8      # + the layer's len and the LM's pos (int64)
        eager = by_metric(execute_cell(cell("decode", model=attn, **{**base, "cuda_graph": False}), cuda_ctx()))
        assert "cuda_graph" not in eager and eager["decode_state_bytes"][0]["value"] != m["decode_state_bytes"][0]["value"]
    hyena = dict(arch="none", mixer="hyena", n_layers=1, d_model=32)
    m = by_metric(execute_cell(cell("decode", model=hyena, **base), cuda_ctx()))
    assert m["cuda_graph"][0]["value"] == 0 and "growing cache" in m["cuda_graph"][0]["message"]


def test_graphed_step_gives_the_eager_steppers_logits():
    """The captured step replayed over prefill and generation: the same logits as the static-buffer step
    run eagerly (same kernels, same order), for a Mamba and an H3/S4 model."""
    import models
    from harness.kinds.bench.static_step import StaticStepper

    for cfg in (dict(arch="mamba", mixer="s6", n_layers=2, d_model=32), dict(arch="h3", mixer="s4", n_layers=1, d_model=32)):
        torch.manual_seed(0)
        lm = models.build_lm(cfg, 64).to("cuda").eval()
        prompt = torch.randint(0, 64, (3, 6), device="cuda")
        outs = []
        with torch.inference_mode():
            for capture in (False, True):
                st = StaticStepper(lm, lambda: lm.init_state(3, "cuda", torch.float32), 3, "cuda", capture=capture)
                outs.append(torch.stack(stepper_logits(st, prompt, 5)))
        assert torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5), (cfg, (outs[0] - outs[1]).abs().max())


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
@pytest.mark.parametrize("pos", ["rope", "xpos", "abs"])
def test_graphed_static_kv_cache_gives_the_eager_logits(pos, backend):
    """A Transformer with a static KV cache, captured and replayed: the eager static-buffer stepper's logits, and
    (to float32 attention rounding) the growing cache's, through prefill, generation and a second round."""
    import models
    from harness.kinds.bench.static_step import StaticStepper, capture_problem

    cfg = dict(arch="transformer", mixer="attention", n_layers=2, d_model=32, heads=2, pos=pos, attn_backend=backend,
               mlp_ratio=2)
    torch.manual_seed(0)
    lm = models.build_lm(cfg, 64).to("cuda").eval()
    prompt = torch.randint(0, 64, (3, 6), device="cuda")
    with torch.inference_mode():
        init = lambda: lm.init_state(3, "cuda", torch.float32, capacity=11, static=True)   # noqa: E731
        before = init()
        _, after = lm.step(torch.zeros(3, dtype=torch.long, device="cuda"), init())
        assert capture_problem(lm, before, after) is None
        outs = []
        for capture in (False, True):
            st = StaticStepper(lm, init, 3, "cuda", capture=capture)
            assert (st.graph is not None) == capture
            outs.append(torch.stack(stepper_logits(st, prompt, 5)))
            again = torch.stack(stepper_logits(st, prompt, 5))            # after reset(): the same again
            assert torch.equal(again, outs[-1])
        state, plain = lm.init_state(3, "cuda", torch.float32), []
        token = None
        for t in range(11):
            logits, state = lm.step(prompt[:, t] if t < 6 else token, state)
            token = logits.argmax(-1)
            plain.append(logits)
        plain = torch.stack(plain)
    assert torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5), (outs[0] - outs[1]).abs().max()
    assert torch.allclose(plain, outs[1], rtol=1e-4, atol=1e-5), (plain - outs[1]).abs().max()
