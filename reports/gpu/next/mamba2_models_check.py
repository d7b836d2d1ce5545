"""Device script (not yet run: no GPU was lent on 2026-12-05): the Mamba-2 models on CUDA.

Run from the repository root: ``timeout 580 python reports/gpu/next/mamba2_models_check.py`` (~3-5 min), together
with ``python -m pytest -q -m gpu tests/test_mamba2.py tests/test_prefill.py``.  Prints (1) fp32 forward / step /
prefill+step errors of backend auto against the reference for mamba2 (groups 1, 2) and the ssd mixer, (2) the
official test_generation check (fp16, d_model 1024, 4 layers, rtol 1e-3 atol 1e-2), (3) a CUDA-graphed
StaticStepper against eager decoding, (4) decode cells (130m-size, bf16, prompt 1024, 64 tokens) of mamba2 and
mamba/s6, eager and graphed.  Where the Triton SSD backend is not there yet the scan falls back to 'chunked'
(said on the last line); the decoding step is the fused Triton kernel either way."""
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))   # this checkout

import torch
import kernels

_orig = kernels.ssd
FALLBACK = []


def ssd_fallback(*a, backend="auto", **k):
    try:
        return _orig(*a, backend=backend, **k)
    except ValueError as e:
        if "not available" not in str(e):
            raise
        FALLBACK.append(1)
        return _orig(*a, backend="chunked", **k)


kernels.ssd = ssd_fallback

import models
from harness.kinds.bench.static_step import StaticStepper
from harness.kinds.bench.testing import greedy_logits, stepper_logits, cell, ctx, by_metric
from harness.run.execute import execute_cell
from harness.cells import CellContext

dev = os.environ.get("DEV", "cuda")          # DEV=cpu: part 1 only, a smoke test of the script
print(torch.cuda.get_device_name() if dev == "cuda" else "cpu")


def step_all(lm, tokens, state):
    out = []
    for t in range(tokens.shape[1]):
        logits, state = lm.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1), state


def err(a, b):
    return (a.float() - b.float()).abs().max().item()


# 1. fp32, auto (fused step) vs reference
for name, kw in [("mamba2", dict(arch="mamba2")), ("mamba2-g2", dict(arch="mamba2", ngroups=2, headdim=8)),
                 ("mamba/ssd", dict(arch="mamba", mixer="ssd", headdim=16)), ("none/ssd", dict(arch="none", mixer="ssd", headdim=16))]:
    torch.manual_seed(0)
    cfg = {**dict(n_layers=2, d_model=64, d_state=16, headdim=16, chunk_size=16), **kw}
    ref = models.build_lm({**cfg, "backend": "reference"}, 50).to(dev).eval()
    fast = models.build_lm({**cfg, "backend": "auto"}, 50).to(dev).eval()
    fast.load_state_dict(ref.state_dict())
    tok = torch.randint(0, 50, (3, 40), device=dev)
    with torch.inference_mode():
        want = ref(tok)
        f = fast(tok)
        stepped, _ = step_all(fast, tok, fast.init_state(3))
        lg, st = fast.prefill(tok[:, :30], fast.init_state(3))
        rest, _ = step_all(fast, tok[:, 30:], st)
    print(f"{name}: forward {err(f, want):.2e} step {err(stepped, want):.2e} prefill+step {err(rest, want[:, 30:]):.2e}")

if dev != "cuda":
    sys.exit(0)

# 2. official test_generation: fp16, d_model 1024, 4 layers
torch.manual_seed(0)
lm = models.build_lm(dict(arch="mamba2", n_layers=4, d_model=1024), 1000).to(dev).half().eval()
tok = torch.randint(0, 1000, (2, 64), device=dev)
with torch.inference_mode():
    want = lm(tok).float()
    stepped, _ = step_all(lm, tok, lm.init_state(2))
    ok = torch.allclose(stepped.float(), want, rtol=1e-3, atol=1e-2)
print(f"fp16 test_generation: max err {err(stepped, want):.3e}, rel {((stepped.float()-want).abs()/(want.abs()+1e-2)).max().item():.3e}, allclose(1e-3,1e-2)={ok}")

# 3. graphed stepper vs eager
torch.manual_seed(0)
lm = models.build_lm(dict(arch="mamba2", n_layers=2, d_model=128, d_state=32, headdim=32), 64).to(dev).eval()
prompt = torch.randint(0, 64, (2, 6), device=dev)
with torch.inference_mode():
    plain = greedy_logits(lm, lm.init_state(2), prompt, 6)
    stepper = StaticStepper(lm, lambda: lm.init_state(2), 2, dev, capture=True)
    graphed = stepper_logits(stepper, prompt, 6)
print("graphed vs eager max err", max(err(a, b) for a, b in zip(plain, graphed)))

# 4. decode cells, graphed and not, mamba2 vs mamba (s6) at 130m-like width, 2 layers
for model in [dict(arch="mamba2", n_layers=24, d_model=768), dict(arch="mamba", mixer="s6", n_layers=24, d_model=768)]:
    for graph in (False, True):
        t = time.time()
        rows = execute_cell(cell("decode", model=model, vocab=50288, batch=1, prompt_len=1024, gen_len=64, dtype="bf16",
                                 warmup=1, repeats=2, device=dev, cuda_graph=graph), CellContext(device=dev))
        st = [r["status"] for r in rows]
        m = by_metric(rows)
        bad = [r.get("message") for r in rows if r["status"] != "ok"]
        print(model["arch"], "graph" if graph else "eager", set(st), bad[:1],
              {k: round(m[k][0]["value"], 3) for k in ("prefill_ms", "decode_ms_per_token_median", "tokens_per_s", "state_bytes", "cuda_graph") if k in m},
              f"{time.time()-t:.0f}s")
print("state_size mamba2-130m bf16:", models.state_size(dict(arch="mamba2", n_layers=24, d_model=768), 1024, "bf16"))
print("scan fell back to chunked:", bool(FALLBACK))
