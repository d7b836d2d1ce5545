"""``LM.prefill``: a prompt through the parallel form leaves the state (and last logits) that stepping it does.

Every arch is checked in float64 against the step loop: the ones with a parallel prefill (Mamba's conv and
S6, SSD and the Mamba-2 block, attention with a growing or a static KV cache, the MLP) and the ones that fall
back to stepping (H3, S4, Hyena).  Then a few decoding steps from both states must agree too, which is what decode relies on.
"""
import pytest
import torch

import models
from harness.kinds.bench.static_step import leaves
from models.conv import CausalDepthwiseConv
from models.prefill import prefill_by_step

VOCAB = 32
ARCHS = {
    "mamba/s6": dict(arch="mamba", mixer="s6", expand=2, d_state=4),
    "mamba/s6-complex": dict(arch="mamba", mixer="s6", expand=2, d_state=4, a_init="s4d_lin", backend="auto"),
    "mamba/s6-nonselective": dict(arch="mamba", mixer="s6", expand=2, d_state=4,
                                  selective={"delta": False, "B": False, "C": False}),
    "none/s6": dict(arch="none", mixer="s6", d_state=4),
    "mamba2": dict(arch="mamba2", d_state=4, headdim=8, ngroups=2, chunk_size=4),
    "mamba/ssd": dict(arch="mamba", mixer="ssd", d_state=4, headdim=8, chunk_size=4),
    "transformer/rope": dict(arch="transformer", mixer="attention", heads=2, pos="rope", mlp_ratio=2),
    "transformer/xpos": dict(arch="transformer", mixer="attention", heads=2, pos="xpos", mlp_ratio=2),
    "transformer/abs": dict(arch="transformer", mixer="attention", heads=2, pos="abs", mlp_ratio=2, max_len=64),
    "h3/s4": dict(arch="h3", mixer="s4", d_state=4),
    "mamba/hyena": dict(arch="mamba", mixer="hyena", expand=2),
}


def build(name, seed):
    torch.manual_seed(seed)
    cfg = dict(dict(n_layers=2, d_model=16, backend="reference"), **ARCHS[name])
    return models.build_lm(cfg, VOCAB).to(torch.float64).eval()


def step_all(lm, tokens, state):
    logits = None
    for t in range(tokens.shape[1]):
        logits, state = lm.step(tokens[:, t], state)
    return logits, state


def tol(name):
    """float64 everywhere except S6, which computes in float32 whatever the model dtype (its state is float32,
    as the reference scan's): there the step and the scan differ in summation order at float32's ~1e-7."""
    return dict(rtol=2e-5, atol=2e-6) if "s6" in name else dict(rtol=1e-9, atol=1e-10)


def assert_states_close(a, b, name):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor):
            assert x.shape == y.shape and x.dtype == y.dtype
            torch.testing.assert_close(x, y, **tol(name))
        else:
            assert x == y


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("name", list(ARCHS))
def test_prefill_matches_stepping_the_prompt(name, static):
    seed = sum(map(ord, name)) + static
    lm = build(name, seed)
    g = torch.Generator().manual_seed(seed)
    batch, prompt_len, gen = 3, 11, 4
    tokens = torch.randint(0, VOCAB, (batch, prompt_len + gen), generator=g)
    # capacity 4: the growing cache doubles twice during the prompt (4 -> 8 -> 16), in both paths
    make = (lambda: lm.init_state(batch, capacity=prompt_len + gen, static=True)) if static else \
           (lambda: lm.init_state(batch, capacity=4))
    with torch.no_grad():
        stepped_logits, stepped = step_all(lm, tokens[:, :prompt_len], make())
        logits, state = lm.prefill(tokens[:, :prompt_len], make())
        torch.testing.assert_close(logits, stepped_logits, **tol(name))
        assert_states_close(state, stepped, name)
        for t in range(prompt_len, prompt_len + gen):    # decoding goes on the same from either state
            logits, state = lm.step(tokens[:, t], state)
            stepped_logits, stepped = lm.step(tokens[:, t], stepped)
            torch.testing.assert_close(logits, stepped_logits, **tol(name))


@pytest.mark.parametrize("name", ["mamba/s6", "transformer/rope", "mamba2"])
def test_prefill_after_stepping_continues_from_the_state(name):
    """A prompt prefilled in two pieces (the second onto a non-empty state) equals stepping it all."""
    lm = build(name, 7)
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want_logits, want = step_all(lm, tokens, lm.init_state(2))
        _, state = lm.prefill(tokens[:, :5], lm.init_state(2))
        logits, state = lm.prefill(tokens[:, 5:], state)
    torch.testing.assert_close(logits, want_logits, **tol(name))
    assert_states_close(state, want, name)


def test_prefill_matches_the_parallel_forward_on_the_last_position():
    lm = build("mamba/s6", 3)
    tokens = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, _ = lm.prefill(tokens, lm.init_state(2))
        torch.testing.assert_close(logits, lm(tokens)[:, -1], **tol("s6"))


@pytest.mark.parametrize("kernel_size,length", [(4, 1), (4, 2), (4, 9), (1, 5)])
def test_conv_prefill_matches_its_step(kernel_size, length):
    torch.manual_seed(kernel_size * 10 + length)
    conv = CausalDepthwiseConv(6, kernel_size).double()
    state = torch.randn(2, 6, kernel_size, dtype=torch.float64)    # a state that already holds inputs
    x = torch.randn(2, length, 6, dtype=torch.float64)
    y, new = conv.prefill(x, state)
    y_ref, new_ref = prefill_by_step(conv, x, state)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new, new_ref, rtol=0, atol=0)


def test_static_cache_too_small_for_the_prompt_is_a_clear_error():
    lm = build("transformer/rope", 0)
    with torch.no_grad(), pytest.raises(RuntimeError, match="does not fit its 4 slots"):
        lm.prefill(torch.zeros(1, 6, dtype=torch.long), lm.init_state(1, capacity=4, static=True))


def test_empty_prompt_is_refused():
    lm = build("mamba/s6", 0)
    with pytest.raises(ValueError, match="length >= 1"):
        lm.prefill(torch.zeros(1, 0, dtype=torch.long), lm.init_state(1))


# ---- on a GPU: the Triton scan's last state and the fused step, a graphed stepper loaded from a prefill

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("name", ["mamba/s6", "mamba/s6-nonselective", "transformer/rope", "mamba2"])
def test_prefill_on_cuda_matches_stepping(name, static):
    """float32 on CUDA (backend auto: the Triton scan for the prompt, the fused kernel for the steps)."""
    torch.manual_seed(5)
    cfg = dict(dict(n_layers=2, d_model=32), **ARCHS[name])
    lm = models.build_lm(cfg, VOCAB).to("cuda").eval()
    tokens = torch.randint(0, VOCAB, (3, 40), device="cuda")
    make = (lambda: lm.init_state(3, "cuda", torch.float32, capacity=48, static=True)) if static else \
           (lambda: lm.init_state(3, "cuda", torch.float32))
    with torch.inference_mode():
        want_logits, want = step_all(lm, tokens, make())
        logits, state = lm.prefill(tokens, make())
    # float32 through different kernels (scan vs step, SDPA over 40 tokens vs one at a time): ~1e-6 relative
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(leaves(state), leaves(want)):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        else:
            assert a == b


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", ["mamba", "transformer"])
def test_decode_cell_with_parallel_prefill_and_graph_runs_on_cuda(model):
    from harness.kinds.bench.testing import by_metric, cell
    from harness.cells import CellContext
    from harness.run.execute import execute_cell

    cfg = (dict(arch="mamba", mixer="s6", n_layers=2, d_model=32) if model == "mamba" else
           dict(arch="transformer", mixer="attention", n_layers=2, d_model=32, heads=2))
    for graph in (False, True):
        rows = execute_cell(cell("decode", model=cfg, vocab=64, batch=4, prompt_len=64, gen_len=8, dtype="bf16",
                                 warmup=1, repeats=2, device="cuda", cuda_graph=graph), CellContext(device="cuda"))
        assert all(r["status"] == "ok" for r in rows), rows[-1]
        m = by_metric(rows)
        assert m["prefill_ms"][0]["value"] > 0 and m["tokens_per_s"][0]["value"] > 0
        if graph:
            assert [r["value"] for r in m["cuda_graph"]] == [1]
