"""Helpers for checking a selective-scan backend against the float64 oracle (used by the tests).

``random_inputs`` draws a fresh problem; ``compare`` runs a backend and the float64 reference on the
same values and returns relative errors ||x - ref|| / ||ref|| of y, the last state and every gradient.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import torch

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def random_inputs(batch, dim, L, N, groups: Optional[int] = None, *, z=True, D=True, bias=True, softplus=True,
                  dtype=torch.float32, device="cpu", seed=0, var_B=True, var_C=True) -> Dict[str, Optional[torch.Tensor]]:
    """A fresh random problem; A < 0 (S4D-Real-like, jittered).  Without ``softplus`` delta and bias
    are drawn positive, since dt = delta + bias must be > 0 for a stable recurrence.  ``var_B=False`` /
    ``var_C=False``: that matrix is constant, (dim, N) float32 (the official non-selective case)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift)

    bc = (batch, N, L) if groups is None else (batch, groups, N, L)
    ins = {
        "u": r(batch, dim, L).to(dtype),
        "delta": (r(batch, dim, L, scale=0.5, shift=-1.0) if softplus
                  else r(batch, dim, L, scale=0.3).abs() + 0.01).to(dtype),
        "A": (-(torch.arange(1, N + 1, dtype=torch.float64)[None, :].repeat(dim, 1))
              * torch.empty(dim, N, dtype=torch.float64).uniform_(0.5, 1.5, generator=g)).float(),
        "B": r(*bc).to(dtype) if var_B else r(dim, N).float(),
        "C": r(*bc).to(dtype) if var_C else r(dim, N).float(),
        "D": r(dim).float() if D else None,
        "z": r(batch, dim, L).to(dtype) if z else None,
        "delta_bias": (r(dim, scale=0.3) if softplus else r(dim, scale=0.1).abs()).float() if bias else None,
    }
    return {k: (v.to(device) if v is not None else None) for k, v in ins.items()}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref||; where ref is exactly zero (e.g. dA at L = 1), the absolute error."""
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(x).all():
        return float("inf")
    denom = ref.norm()
    return float((x - ref).norm() / (denom if denom > 0 else 1.0))


def expanded_oracle(u, delta, A, B, C, **kw):
    """The float64 reference with a constant (dim, N) B or C expanded to (batch, groups=dim, N, L): the
    time-varying, grouped path (tested on its own), so a constant-B/C test does not check a backend's
    constant path against the reference's own constant path.  Gradients flow back through the expand."""
    from kernels.selective_scan.reference import selective_scan_reference

    batch, dim, L = u.shape

    def grown(M):
        return M[None, :, :, None].expand(batch, dim, M.shape[1], L) if M.dim() == 2 else M
    return selective_scan_reference(u, delta, A, grown(B), grown(C), **kw)


def compare(fn, ins, softplus=True, last_state=True, grads=True, seed=0, oracle=None) -> Dict[str, float]:
    """Relative errors of ``fn`` (a selective_scan-like callable) against the float64 reference (or
    ``oracle``, a callable with the reference's signature, run on float64 copies)."""
    from kernels.selective_scan.reference import selective_scan_reference

    oracle = oracle or selective_scan_reference

    def call(f, t):
        return f(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"], delta_bias=t["delta_bias"],
                 delta_softplus=softplus, return_last_state=last_state)

    leaves = {k: v.detach().clone().requires_grad_(grads) for k, v in ins.items() if v is not None}
    ref_leaves = {k: v.detach().double().requires_grad_(grads) for k, v in ins.items() if v is not None}
    full = {k: leaves.get(k) for k in NAMES}
    ref_full = {k: ref_leaves.get(k) for k in NAMES}
    out, ref = call(fn, full), call(oracle, ref_full)
    y, yr = (out[0], ref[0]) if last_state else (out, ref)
    errs = {"y": rel_err(y, yr)}
    if last_state:
        errs["last_state"] = rel_err(out[1], ref[1])
        assert out[1].dtype == torch.float32, f"last_state must be float32, got {out[1].dtype}"
    assert y.dtype == ins["u"].dtype, f"y must come back in u.dtype {ins['u'].dtype}, got {y.dtype}"
    if grads:
        g = torch.Generator().manual_seed(seed + 1)
        dy = torch.randn(yr.shape, generator=g, dtype=torch.float64).to(y.device)
        loss, loss_ref = (y.double() * dy).sum(), (yr * dy).sum()
        if last_state:
            dl = torch.randn(ref[1].shape, generator=g, dtype=torch.float64).to(y.device)
            loss = loss + (out[1].double() * dl).sum()
            loss_ref = loss_ref + (ref[1] * dl).sum()
        loss.backward()
        loss_ref.backward()
        for k in leaves:
            assert leaves[k].grad is not None, f"no gradient reached {k}"
            errs["d" + k] = rel_err(leaves[k].grad, ref_leaves[k].grad)
    return errs


def over_fp32_tolerance(errs: Dict[str, float]) -> Dict[str, float]:
    """The errors of :func:`compare` over the float32 tolerances: 1e-5 for y and the last state, 1e-4 for the
    gradients (their sums are longer); a NaN error counts as over."""
    return {k: v for k, v in errs.items() if not v <= (1e-5 if k in ("y", "last_state") else 1e-4)}


@contextlib.contextmanager
def poisoned_outputs(backend=None):
    """Make a Triton backend module (default: the selective scan's) allocate its outputs NaN-filled through its
    ``_empty``, so an element a kernel forgets to write shows up in the comparison."""
    if backend is None:
        from kernels.selective_scan import triton_backend as backend

    def nan_empty(*shape, **kw):
        t = torch.empty(*shape, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    old = backend._empty
    backend._empty = nan_empty
    try:
        yield
    finally:
        backend._empty = old


def run_tests_in_triton_interpreter(test_file, shards=None) -> None:
    """Run a pytest file of Triton tests with TRITON_INTERPRET=1 (it must be set before triton is imported, so
    not in this process) and no visible GPU; assert that every shard passed.  How CI tests the kernels.

    The interpreter is single-threaded Python, so the file's tests are dealt round-robin to ``shards``
    subprocesses run side by side (default: one per CPU, at most 4): on CI's 2 cores this halves the wall time
    of the slowest test files."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    collected = subprocess.run([*pytest_cmd, "--collect-only", str(test_file)], cwd=root, env=env,
                               capture_output=True, text=True, timeout=300)
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert collected.returncode == 0 and ids, f"collecting {test_file} under the interpreter failed:\n" + \
        collected.stdout[-4000:] + collected.stderr[-2000:]
    shards = max(1, min(shards or min(os.cpu_count() or 1, 4), len(ids)))
    procs = [subprocess.Popen([*pytest_cmd, *ids[i::shards]], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(shards)]
    for i, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f"{test_file} shard {i + 1}/{shards} ran past 600 s under the interpreter")
        summary = out.strip().splitlines()[-1] if out.strip() else ""
        assert proc.returncode == 0 and " passed" in summary and "failed" not in summary and "error" not in summary, \
            f"{test_file} shard {i + 1}/{shards} (exit {proc.returncode}):\n" + out[-6000:]
