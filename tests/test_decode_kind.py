"""kind: decode on CPU: rows for Mamba and attention; Mamba's state is constant, the KV cache grows."""
import pytest

from harness.run.execute import execute_cell
from harness.kinds.decode import tensor_bytes
from harness.kinds.bench.testing import by_metric, cell, ctx, greedy_logits, stepper_logits

MODELS = {"mamba": dict(arch="mamba", mixer="s6", n_layers=1, d_model=16),
          "attention": dict(arch="transformer", mixer="attention", n_layers=1, d_model=16, heads=2)}


def decode(model, prompt_len, **kw):
    params = dict(model=MODELS[model], vocab=32, batch=2, prompt_len=prompt_len, gen_len=3, dtype="fp32",
                  warmup=1, repeats=2, device="cpu")
    params.update(kw)
    rows = execute_cell(cell("decode", **params), ctx())
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    return by_metric(rows)


@pytest.mark.parametrize("model", ["mamba", "attention"])
def test_decode_rows(model):
    m = decode(model, prompt_len=4)
    assert [r["repeat"] for r in m["prefill_ms"]] == [0, 1]
    assert [r["repeat"] for r in m["decode_ms_per_token"]] == [0, 1]
    assert all(r["unit"] == "ms" and r["value"] > 0 for r in m["prefill_ms"] + m["decode_ms_per_token"])
    per_token = m["decode_ms_per_token_median"][0]["value"]
    assert m["tokens_per_s"][0]["value"] == pytest.approx(2 * 3 / (per_token * 3 / 1e3))
    assert m["end_to_end_tokens_per_s"][0]["value"] < m["tokens_per_s"][0]["value"]
    assert "peak_rss_bytes" in m and m["n_params"][0]["value"] > 0


def test_mamba_state_is_constant_and_kv_cache_grows():
    # 70 + 3 tokens overflow the KV cache's first 64 slots, so it must have grown
    mamba = [decode("mamba", p, warmup=0, repeats=1)["decode_state_bytes"][0]["value"] for p in (2, 70)]
    attn = [decode("attention", p, warmup=0, repeats=1)["decode_state_bytes"][0]["value"] for p in (2, 70)]
    assert mamba[0] == mamba[1] > 0
    assert attn[1] > attn[0] > 0


def test_zero_length_prompt_decodes_from_a_start_token():
    m = decode("mamba", prompt_len=0, warmup=0)
    assert m["prefill_ms"][0]["value"] >= 0 and m["decode_ms_per_token"][0]["value"] > 0


def test_tensor_bytes_walks_nested_states():
    import torch
    state = {"pos": 3, "layers": [torch.zeros(2, 4), (torch.zeros(3, dtype=torch.float16), None)]}
    assert tensor_bytes(state) == 2 * 4 * 4 + 3 * 2


# ---- static-buffer stepping (decode cuda_graph: true); the graph itself: tests/test_bench_gpu.py

STEPPERS = {"mamba": dict(arch="mamba", mixer="s6", n_layers=2, d_model=16),
            "h3-s4": dict(arch="h3", mixer="s4", n_layers=1, d_model=16),
            "none-s6": dict(arch="none", mixer="s6", n_layers=1, d_model=16)}


@pytest.mark.parametrize("name", list(STEPPERS))
def test_static_stepper_decodes_exactly_as_the_plain_step(name):
    """The stepper's in-place state and token buffers (what the graph replays) give the plain step's logits,
    step for step, through prefill, greedy generation and a reset."""
    import torch

    import models
    from harness.kinds.bench.static_step import StaticStepper

    torch.manual_seed(0)
    lm = models.build_lm(STEPPERS[name], 32).eval()
    prompt = torch.randint(0, 32, (2, 5))
    with torch.inference_mode():
        stepper = StaticStepper(lm, lambda: lm.init_state(2, "cpu", torch.float32), 2, "cpu", capture=False)
        for _ in range(2):                       # the second round after reset() must repeat the first
            plain = greedy_logits(lm, lm.init_state(2, "cpu", torch.float32), prompt, 4)
            static = stepper_logits(stepper, prompt, 4)
            assert len(static) == 9 and all(torch.equal(a, b) for a, b in zip(plain, static))
            assert stepper.state["pos"] == 9


def test_capture_problem_names_growing_and_positional_states():
    import torch

    import models
    from harness.kinds.bench.static_step import capture_problem

    def problem(cfg):
        lm = models.build_lm(cfg, 32).eval()
        with torch.inference_mode():
            before = lm.init_state(2, "cpu", torch.float32)
            _, after = lm.step(torch.zeros(2, dtype=torch.long), lm.init_state(2, "cpu", torch.float32))
        return capture_problem(lm, before, after)

    assert problem(STEPPERS["mamba"]) is None and problem(STEPPERS["h3-s4"]) is None
    assert "KV-cache length" in problem(MODELS["attention"])
    assert "absolute positions" in problem({**MODELS["attention"], "pos": "abs"})


def test_cuda_graph_is_ignored_on_the_cpu_and_says_so():
    m = decode("mamba", prompt_len=3, cuda_graph=True)
    assert [(r["value"], r["message"]) for r in m["cuda_graph"]] == [(0, "cuda_graph is ignored on the CPU")]
    assert "cuda_graph" not in decode("mamba", prompt_len=3)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("model", ["mamba", "attention"])
def test_parallel_prefill_decodes_as_the_stepped_prompt(model, static):
    """``prefill: parallel`` (LM.prefill, loaded into the static stepper's buffers when there is one) leaves the
    logits and the state that ``prefill: step`` does, and the greedy generation after it goes the same way."""
    import torch

    import models
    from harness.kinds.bench.config import DecodeConfig
    from harness.kinds.bench.static_step import StaticStepper, leaves
    from harness.kinds.decode import Decoder, static_init_state

    torch.manual_seed(1)
    lm = models.build_lm(MODELS[model], 32).eval()
    out = {}
    for mode in ("step", "parallel"):
        cfg = DecodeConfig.model_validate(dict(model=MODELS[model], vocab=32, batch=2, prompt_len=6, gen_len=4,
                                               dtype="fp32", device="cpu", prefill=mode))
        stepper = (StaticStepper(lm, static_init_state(lm, cfg, "cpu"), cfg.batch, "cpu", capture=False)
                   if static else None)
        with torch.inference_mode():
            dec = Decoder(lm, cfg, "cpu", ctx(), stepper)
            dec.prefill()
            prefilled = dec.logits.clone()
            dec.generate()
            state = stepper.state if static else dec.state
            out[mode] = (prefilled, dec.logits.clone(), [t.clone() if isinstance(t, torch.Tensor) else t
                                                         for t in leaves(state)])
    (p_step, g_step, s_step), (p_par, g_par, s_par) = out["step"], out["parallel"]
    # float32: the scan and the step sum in different orders (~1e-7 relative)
    torch.testing.assert_close(p_par, p_step, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_par, g_step, rtol=1e-4, atol=1e-5)
    assert len(s_par) == len(s_step)
    for a, b in zip(s_par, s_step):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        else:
            assert a == b
