"""models/lm_loss.py: the chunked head + cross-entropy against the plain one (float64 oracle, random
shapes, gradients of hidden and weight), under bf16 autocast, and the memory it is for."""
from __future__ import annotations

import secrets

import pytest
import torch
import torch.nn.functional as F

from models.lm_loss import lm_cross_entropy


def oracle(h, w, t):
    return F.cross_entropy(h.double() @ w.double().t(), t)


@pytest.mark.parametrize("chunk", [1, 5, 37, 64])
def test_chunked_matches_float64_loss_and_gradients(chunk):
    seed = secrets.randbits(31)
    g = torch.Generator().manual_seed(seed)
    n, d, vocab = 37, 8, 11
    h = torch.randn(n, d, generator=g, requires_grad=True)
    w = torch.randn(vocab, d, generator=g, requires_grad=True)
    t = torch.randint(0, vocab, (n,), generator=g)
    loss = lm_cross_entropy(h, w, t, chunk=chunk)
    (loss * 3.0).backward()
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = oracle(h64, w64, t)
    (ref * 3.0).backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6), seed
    for name, got, want in (("hidden", h.grad, h64.grad), ("weight", w.grad, w64.grad)):
        err = float((got.double() - want).norm() / want.norm())
        assert err < 1e-6, f"seed={seed} d{name}: relative error {err:.2e}"


def test_batched_hidden_and_the_plain_path_agree():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 4, generator=g)
    w = torch.randn(6, 4, generator=g)
    t = torch.randint(0, 6, (2, 9), generator=g)
    plain = lm_cross_entropy(h, w, t)
    assert float(lm_cross_entropy(h, w, t, chunk=4)) == pytest.approx(float(plain), rel=1e-6)
    assert float(plain) == pytest.approx(float(oracle(h.reshape(-1, 4), w, t.reshape(-1))), rel=1e-6)


def test_under_bf16_autocast_it_matches_the_plain_path():
    """Same precision as the plain path (bf16 matmul, fp32 softmax): equal to bf16 rounding."""
    g = torch.Generator().manual_seed(2)
    h = torch.randn(64, 32, generator=g, requires_grad=True)
    w = (torch.randn(100, 32, generator=g) * 0.1).requires_grad_()
    t = torch.randint(0, 100, (64,), generator=g)
    grads = []
    for chunk in (None, 16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = lm_cross_entropy(h, w, t, chunk=chunk)
        grads.append((float(loss.detach()), *torch.autograd.grad(loss, [h, w])))
    (l0, dh0, dw0), (l1, dh1, dw1) = grads
    assert l1 == pytest.approx(l0, rel=1e-3)
    assert float((dh1 - dh0).norm() / dh0.norm()) < 2e-2
    assert float((dw1 - dw0).norm() / dw0.norm()) < 2e-2
    assert dh1.dtype == h.dtype and dw1.dtype == w.dtype


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_it_matches_the_plain_path_and_holds_one_chunk_of_logits():
    """The path the memory cells take on the GPU: bf16 autocast, equal to the plain path's loss and
    gradients, and a peak that grows by about one chunk of logits instead of all of them."""
    seed = secrets.randbits(31)
    g = torch.Generator(device="cuda").manual_seed(seed)
    n, d, vocab, chunk = 8192, 256, 50280, 256
    h = torch.randn(n, d, device="cuda", generator=g, requires_grad=True)
    w = (torch.randn(vocab, d, device="cuda", generator=g) * 0.05).requires_grad_()
    t = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    out = {}
    for c in (None, chunk):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_cross_entropy(h, w, t, chunk=c)
        dh, dw = torch.autograd.grad(loss, [h, w])
        torch.cuda.synchronize()
        out[c] = (float(loss.detach()), dh, dw, torch.cuda.max_memory_allocated() - base)
    (l0, dh0, dw0, peak0), (l1, dh1, dw1, peak1) = out[None], out[chunk]
    assert l1 == pytest.approx(l0, rel=1e-3), seed
    assert float((dh1 - dh0).norm() / dh0.norm()) < 2e-2, seed
    assert float((dw1 - dw0).norm() / dw0.norm()) < 2e-2, seed
    all_logits_fp32 = n * vocab * 4
    assert peak0 > all_logits_fp32, (peak0, all_logits_fp32)        # the plain path holds them all
    # chunked: grads (dh, dw) + a few chunk-sized fp32/bf16 temporaries, far below one full fp32 copy
    assert peak1 < 0.35 * all_logits_fp32, (peak1, all_logits_fp32)
