"""The static KV cache (init_state(capacity, static=True)): what decode ``cuda_graph: true`` captures.

Its steps give the growing cache's logits and the parallel forward's (teacher forcing); through the
StaticStepper (the graph's static-buffer logic, run eagerly on the CPU) too; a reset restores a fresh state;
overflow is a clear error; capture_problem accepts it.  The graph itself: tests/test_bench_gpu.py.
"""
import pytest
import torch

import models
from harness.kinds.bench.config import DecodeConfig
from harness.kinds.bench.static_step import WARMUP_STEPS, StaticStepper, capture_problem, leaves, static_capacity
from harness.kinds.bench.testing import greedy_logits, stepper_logits
from harness.kinds.decode import static_init_state
from models.attention import RotaryPositions, causal_attention, masked_attention

VOCAB = 32


def attention_lm(pos="rope", backend="sdpa", seed=0, dtype=torch.float64, **kw):
    cfg = dict(arch="transformer", mixer="attention", n_layers=2, d_model=16, heads=2, pos=pos,
               attn_backend=backend, mlp_ratio=2)
    cfg.update(kw)
    torch.manual_seed(seed)
    return models.build_lm(cfg, VOCAB).to(dtype).eval()


def same_state(a, b) -> bool:
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
                                      for x, y in zip(la, lb))


def step_all(lm, tokens, state):
    out = []
    for t in range(tokens.shape[1]):
        logits, state = lm.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1), state


LMS = {"transformer": {}, "mamba-block": dict(arch="mamba", expand=2, n_layers=1),
       "no-gate": dict(arch="none", n_layers=1)}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("backend", ["sdpa", "naive"])
@pytest.mark.parametrize("pos", ["rope", "xpos", "abs"])
@pytest.mark.parametrize("arch", list(LMS))
def test_static_cache_steps_match_the_growing_cache_and_the_parallel_forward(arch, pos, backend, seed):
    """float64; the capacity is exactly the steps taken, so the last step writes the last slot.  Seed 0 of the
    Transformer also runs 70 steps, past the growing cache's first 64 slots (the static cache is made for 70)."""
    lm = attention_lm(pos, backend, seed, **LMS[arch])
    g = torch.Generator().manual_seed(100 + seed)
    for batch, steps in ((3, 12), (1, 70)) if seed == 0 and arch == "transformer" else ((3, 12),):
        tokens = torch.randint(0, VOCAB, (batch, steps), generator=g)
        with torch.no_grad():
            parallel = lm(tokens)
            dynamic, _ = step_all(lm, tokens, lm.init_state(batch))
            static, state = step_all(lm, tokens, lm.init_state(batch, capacity=steps, static=True))
        assert torch.allclose(static, dynamic, rtol=0, atol=1e-12), (static - dynamic).abs().max()
        # the parallel forward rotates all positions in one float32 call: allow float32 rounding there
        assert torch.allclose(static, parallel, rtol=0, atol=1e-7), (static - parallel).abs().max()
        assert state["pos"].dtype == torch.long and int(state["pos"]) == steps
        kv = [s for layer in state["layers"] for s in leaves(layer) if isinstance(s, torch.Tensor)]
        lens = [int(t) for t in kv if t.dim() == 0]
        assert lens == [steps] * lm.cfg.n_layers                     # one len per attention layer
        assert all(t.shape[2] == steps for t in kv if t.dim() == 4)  # never grown


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_static_cache_in_float32_is_close_to_the_growing_cache(backend):
    lm = attention_lm("xpos", backend, 3, dtype=torch.float32)
    tokens = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        dynamic, _ = step_all(lm, tokens, lm.init_state(2))
        static, _ = step_all(lm, tokens, lm.init_state(2, capacity=32, static=True))   # 12 slots stay empty
    assert torch.allclose(static, dynamic, rtol=1e-5, atol=1e-6), (static - dynamic).abs().max()


def test_static_state_layout():
    lm = attention_lm(dtype=torch.float32)
    state = lm.init_state(2, "cpu", torch.bfloat16, capacity=10, static=True)
    for layer in state["layers"]:
        attn = layer[0]
        assert attn["k"].shape == attn["v"].shape == (2, 2, 10, 8) and attn["k"].dtype == torch.bfloat16
        assert isinstance(attn["len"], torch.Tensor) and attn["len"].shape == () and attn["len"].dtype == torch.long
    assert state["pos"].shape == () and state["pos"].dtype == torch.long
    dynamic = lm.init_state(2)                                       # the default is unchanged
    assert dynamic["pos"] == 0 and dynamic["layers"][0][0]["len"] == 0 and dynamic["layers"][0][0]["k"].shape[2] == 64


@pytest.mark.parametrize("pos", ["rope", "xpos", "abs"])
@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_static_stepper_with_a_static_cache_decodes_as_the_plain_growing_cache(pos, backend):
    """The stepper's in-place buffers (what the graph replays) over a static state: the growing cache's logits
    through prefill, greedy generation and a reset; after a reset the state equals a fresh one."""
    lm = attention_lm(pos, backend, 5)
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        stepper = StaticStepper(lm, lambda: lm.init_state(2, capacity=9, static=True), 2, "cpu", capture=False)
        assert stepper.problem() is None
        for _ in range(2):
            plain = greedy_logits(lm, lm.init_state(2), prompt, 4)
            static = stepper_logits(stepper, prompt, 4)
            assert len(static) == 9
            assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(plain, static))
            assert int(stepper.state["pos"]) == 9 and int(stepper.state["layers"][0][0]["len"]) == 9
        buffers = [id(t) for t in leaves(stepper.state)]
        stepper.reset()
        assert [id(t) for t in leaves(stepper.state)] == buffers     # in place: the graph's addresses stay
        assert same_state(stepper.state, lm.init_state(2, capacity=9, static=True))
        with pytest.raises(RuntimeError, match="static KV cache overflow"):
            for _ in range(10):
                stepper.step()


def test_reset_restores_non_zero_start_tensors():
    """A state tensor that does not start at zero (S4's discretised matrices) comes back from the snapshot."""
    torch.manual_seed(0)
    lm = models.build_lm(dict(arch="h3", mixer="s4", n_layers=1, d_model=16), VOCAB).eval()
    with torch.inference_mode():
        stepper = StaticStepper(lm, lambda: lm.init_state(2, "cpu", torch.float32), 2, "cpu", capture=False)
        for t in leaves(stepper.state):
            if isinstance(t, torch.Tensor):
                t.add_(1)                                            # every buffer disturbed
        stepper.reset()
        assert same_state(stepper.state, lm.init_state(2, "cpu", torch.float32))


def test_overflow_and_bad_capacities_are_clear_errors():
    lm = attention_lm()
    mha = lm.layers[0].sublayers[0].block.mixer
    with torch.no_grad():
        state = mha.init_state(2, capacity=3, static=True)
        for _ in range(3):
            _, state = mha.step(torch.randn(2, 16, dtype=torch.float64), state)
        with pytest.raises(RuntimeError, match="static KV cache overflow: all 3 slots"):
            mha.step(torch.randn(2, 16, dtype=torch.float64), state)
        lm_state = lm.init_state(2, capacity=2, static=True)
        for _ in range(2):
            _, lm_state = lm.step(torch.zeros(2, dtype=torch.long), lm_state)
        with pytest.raises(RuntimeError, match="static KV cache overflow"):
            lm.step(torch.zeros(2, dtype=torch.long), lm_state)
    for capacity in (None, 0, -1, 2.5):
        with pytest.raises(ValueError, match="static KV cache needs a positive integer capacity"):
            lm.init_state(2, capacity=capacity, static=True)
    with pytest.raises(ValueError, match="exceeds model.max_len=8"):
        attention_lm("abs", max_len=8).init_state(1, capacity=9, static=True)
    attention_lm("abs", max_len=8).init_state(1, capacity=8, static=True)   # exactly the table fits


def test_abs_positions_past_max_len_are_a_clear_error_with_a_static_cache():
    """An abs table smaller than the capacity cannot be built; if a state is stepped past the table anyway
    (a cache made for a bigger model), the CPU step says so before indexing."""
    small, big = attention_lm("abs", max_len=4), attention_lm("abs", max_len=16)
    with torch.no_grad():
        state = big.init_state(1, capacity=8, static=True)
        for _ in range(4):
            _, state = small.step(torch.zeros(1, dtype=torch.long), state)
        with pytest.raises(ValueError, match="exceeds model.max_len=4"):
            small.step(torch.zeros(1, dtype=torch.long), state)


@pytest.mark.parametrize("cfg", [dict(pos="rope"), dict(pos="xpos"), dict(pos="abs"),
                                 dict(pos="rope", arch="mamba", expand=2), dict(pos="abs", arch="none")])
def test_capture_problem_accepts_a_static_attention_state(cfg):
    lm = attention_lm(dtype=torch.float32, **cfg)
    with torch.inference_mode():
        before = lm.init_state(2, capacity=8, static=True)
        _, after = lm.step(torch.zeros(2, dtype=torch.long), lm.init_state(2, capacity=8, static=True))
        assert capture_problem(lm, before, after) is None
        dynamic = lm.init_state(2)
        _, after = lm.step(torch.zeros(2, dtype=torch.long), lm.init_state(2))
        problem = capture_problem(lm, dynamic, after)
        assert problem is not None and ("KV-cache length" in problem or "absolute positions" in problem)


def test_capture_problem_still_names_a_growing_hyena_history_in_a_static_state():
    torch.manual_seed(0)
    lm = models.build_lm(dict(arch="none", mixer="hyena", n_layers=1, d_model=16), VOCAB).eval()
    with torch.inference_mode():
        stepper = StaticStepper(lm, lambda: lm.init_state(2, capacity=8, static=True), 2, "cpu", capture=False)
        assert "growing cache" in stepper.problem()


@pytest.mark.parametrize("prompt_len, gen_len", [(0, 1), (1, 1), (2, 5), (16, 8)])
def test_the_decode_cells_static_state_holds_the_warm_up_and_every_step(prompt_len, gen_len):
    """decode cuda_graph: capacity prompt_len + gen_len, at least WARMUP_STEPS: the warm-up before capture and
    then prefill + generation fit from a reset state; one step more overflows."""
    cfg = DecodeConfig.model_validate(dict(model=dict(arch="transformer", mixer="attention", n_layers=1, d_model=16,
                                                      heads=2), vocab=VOCAB, batch=2, prompt_len=prompt_len,
                                           gen_len=gen_len, dtype="fp32"))
    torch.manual_seed(0)
    lm = models.build_lm(cfg.model_dict(), VOCAB).eval()
    init = static_init_state(lm, cfg, "cpu")
    assert init()["layers"][0][0]["k"].shape[2] == static_capacity(prompt_len + gen_len) \
        == max(prompt_len + gen_len, WARMUP_STEPS)
    with torch.inference_mode():
        stepper = StaticStepper(lm, init, cfg.batch, "cpu", capture=False)
        assert stepper.problem() is None
        stepper.warm_up()                                            # what capture() runs before capturing
        assert int(stepper.state["layers"][0][0]["len"]) == 0 and int(stepper.state["pos"]) == 0
        for _ in range(static_capacity(prompt_len + gen_len)):
            stepper.step()
        with pytest.raises(RuntimeError, match="static KV cache overflow"):
            stepper.step()


def test_static_step_keeps_gradients_like_the_growing_cache():
    """With autograd on, the static step writes out of place (the previous cache stays intact for backward)."""
    lm = attention_lm("xpos", seed=7)
    tokens = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(7))
    grads = []
    for static in (False, True):
        lm.zero_grad()
        state = lm.init_state(2, capacity=6, static=True) if static else lm.init_state(2)
        logits, _ = step_all(lm, tokens, state)
        logits.square().sum().backward()
        grads.append([p.grad.clone() for p in lm.parameters()])
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(*grads))


@pytest.mark.parametrize("xpos", [False, True])
def test_rotary_takes_a_tensor_start_position(xpos):
    torch.manual_seed(0)
    rot = RotaryPositions(8, xpos=xpos)
    q, k = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8, dtype=torch.bfloat16)
    for start in (0, 7, 300, 20000):
        as_int = rot(q, k, start, start)
        as_tensor = rot(q, k, torch.tensor(start), torch.tensor(start))
        assert all(torch.equal(a, b) for a, b in zip(as_int, as_tensor))


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_masked_attention_with_a_causal_mask_is_causal_attention(backend):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, dtype=torch.float64) for _ in range(3))
    keep = torch.ones(9, 9, dtype=torch.bool).tril()
    assert torch.allclose(masked_attention(q, k, v, keep, backend), causal_attention(q, k, v, backend),
                          rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="valid: sdpa, naive"):
        masked_attention(q, k, v, keep, "flash3")


@pytest.mark.parametrize("pos", ["rope", "abs"])
def test_decode_cell_over_a_static_stepper(monkeypatch, pos):
    """The decode kind's stepper path with the cell's static state (what cuda_graph replays on CUDA), run
    eagerly on the CPU: rows as usual, decode_state_bytes the preallocated cache, cuda_graph 1."""
    import harness.kinds.decode as decode_kind
    from harness.kinds.bench.testing import by_metric, cell, ctx
    from harness.run.execute import execute_cell

    def eager_static_stepper(lm, cfg, device):
        stepper = StaticStepper(lm, static_init_state(lm, cfg, device), cfg.batch, device, capture=False)
        assert stepper.problem() is None
        return stepper, None

    monkeypatch.setattr(decode_kind, "_stepper", eager_static_stepper)
    model = dict(arch="transformer", mixer="attention", n_layers=1, d_model=16, heads=2, pos=pos)
    rows = execute_cell(cell("decode", model=model, vocab=VOCAB, batch=2, prompt_len=5, gen_len=3, dtype="fp32",
                             warmup=1, repeats=2, device="cpu", cuda_graph=True), ctx())
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    m = by_metric(rows)
    assert [r["value"] for r in m["cuda_graph"]] == [1]
    assert m["decode_state_bytes"][0]["value"] == 2 * 2 * 2 * 8 * 8 * 4 + 2 * 8   # k, v (B, H, 5 + 3, d_head) fp32; len, pos
    assert m["decode_ms_per_token_median"][0]["value"] > 0


def test_lm_init_state_inherits_an_enclosing_kv_cache_options():
    from models.attention import kv_cache_options
    lm = attention_lm("rope", "sdpa", 0)
    with kv_cache_options(capacity=8, static=True):
        state = lm.init_state(1)
        explicit = lm.init_state(1, static=False)
    assert isinstance(state["pos"], torch.Tensor) and state["layers"][0][0]["k"].shape[2] == 8
    assert explicit["pos"] == 0 and isinstance(explicit["layers"][0][0]["len"], int)
    assert lm.init_state(1)["pos"] == 0        # outside: the growing default
