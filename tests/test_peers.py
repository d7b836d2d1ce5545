"""Peer targets (harness/kinds/bench/peers) against stand-in packages on the CPU, and the correctness gate.

Each adapter runs a whole speed cell against a stand-in module (tests/peer_standins.py: the official signature,
computed plainly) and the test checks what the adapter passed: shapes in the documented layout, dtypes,
the keywords that carry meaning (softplus, causal, activation).  The gate must pass a right stand-in and
stop a wrong one (a forgotten D; a wrong gradient only under fwd+bwd), recording its errors as rows."""
from __future__ import annotations

import sys
import types
from dataclasses import replace

import pytest
import torch

import peer_standins
from harness.kinds.bench import IMPLS
from harness.kinds.bench.testing import by_metric, cell, ctx
from harness.run.execute import execute_cell

# distinct sizes, so a transposed or misplaced axis shows: batch 3, L 24, dim 16, heads 2 x head_dim 8, N 6
CFG = dict(seq_len=24, batch=3, d_model=8, expand=2, d_state=6, heads=2, warmup=1, repeats=2, device="cpu")
PEERS = {"peer.mamba_ssm.selective_scan": "mamba_ssm", "peer.mamba_ssm.ssd": "mamba_ssm",
         "peer.mamba_ssm.state_update": "mamba_ssm", "peer.causal_conv1d": "causal_conv1d",
         "peer.flash_attn": "flash_attn", "peer.fla.gla": "fla", "peer.fla.gated_delta_rule": "fla"}


@pytest.fixture
def on_cpu(monkeypatch):
    """Let a peer target run on the CPU (they need CUDA: the stand-ins do not)."""
    def allow(name):
        monkeypatch.setitem(IMPLS._entries, name, replace(IMPLS.get(name), needs_cuda=False))
    return allow


def run(impl, pass_="fwd+bwd", dtype="fp32", **extra):
    return execute_cell(cell("speed", **{**CFG, "dtype": dtype, **extra}, impl=impl, **{"pass": pass_}), ctx())


def call_of(fn):
    calls = [c for c in peer_standins.CALLS if c["fn"] == fn]
    assert calls, f"{fn} was never called"
    return calls[-1]


def test_peers_are_registered_and_nothing_is_imported_at_start():
    for name in PEERS:
        assert name in IMPLS and IMPLS.help(name)
    for package in set(PEERS.values()):
        assert package not in sys.modules or isinstance(sys.modules[package], type(sys))


@pytest.mark.parametrize("impl", list(PEERS))
def test_missing_package_is_a_skipped_row_that_says_how_to_get_it(monkeypatch, impl):
    monkeypatch.setitem(sys.modules, PEERS[impl], None)   # `import <package>` fails, as when it is absent
    rows = run(impl, "fwd", dtype="bf16")
    assert [r["status"] for r in rows] == ["skipped"], rows
    msg = rows[0]["message"]
    assert repr(PEERS[impl]) in msg and ("pip install" in msg or "peers build" in msg), msg


def test_a_peer_without_cuda_is_skipped_even_when_installed(monkeypatch):
    peer_standins.install(monkeypatch, "mamba_ssm")
    rows = run("peer.mamba_ssm.selective_scan", "fwd")
    assert rows[-1]["status"] == "skipped" and "CUDA" in rows[-1]["message"]


def not_ok(rows):
    """(metric, status, message) of the rows that are not ok: an assertion's message that says why."""
    return [(r["metric"], r["status"], r.get("message")) for r in rows if r["status"] != "ok"]


def _ok(rows):
    m = by_metric(rows)
    assert not not_ok(rows), not_ok(rows)
    assert m["gate_passed"][0]["value"] == 1 and len(m["time_ms"]) == CFG["repeats"]
    return m


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_selective_scan_fn_adapter(monkeypatch, on_cpu, pass_):
    peer_standins.install(monkeypatch, "mamba_ssm")
    on_cpu("peer.mamba_ssm.selective_scan")
    m = _ok(run("peer.mamba_ssm.selective_scan", pass_, dtype="bf16"))
    c = call_of("selective_scan_fn")   # the timed call, at the cell's full size
    b, d, L, N = 3, 16, 24, 6
    assert c["u"] == ((b, d, L), torch.bfloat16) and c["delta"] == ((b, d, L), torch.bfloat16)
    assert c["A"] == ((d, N), torch.float32) and c["B"] == ((b, N, L), torch.bfloat16) == c["C"]
    assert c["D"] == ((d,), torch.float32) and c["delta_bias"] == ((d,), torch.float32)
    assert c["z"] is None and c["delta_softplus"] is True
    if pass_ == "fwd+bwd":
        assert {r["tensor"] for r in m["gate_max_rel_err"]} == {"y", "du", "ddelta", "dA", "dB", "dC", "dD",
                                                                "ddelta_bias"}


def test_ssd_adapter(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "mamba_ssm")
    on_cpu("peer.mamba_ssm.ssd")
    _ok(run("peer.mamba_ssm.ssd", "fwd+bwd", dtype="bf16"))
    c = call_of("mamba_chunk_scan_combined")
    b, L, h, p, N = 3, 24, 2, 8, 6
    assert c["x"] == ((b, L, h, p), torch.bfloat16) and c["dt"] == ((b, L, h), torch.bfloat16)
    assert c["A"] == ((h,), torch.float32) and c["B"] == ((b, L, 1, N), torch.bfloat16) == c["C"]
    assert c["D"] == ((h,), torch.float32) and c["dt_bias"] == ((h,), torch.float32)
    assert c["dt_softplus"] is True and c["chunk_size"] == 256


def test_state_update_adapter_updates_in_place_and_is_fwd_only(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "mamba_ssm")
    on_cpu("peer.mamba_ssm.state_update")
    m = _ok(run("peer.mamba_ssm.state_update", "fwd", dtype="bf16"))
    c = call_of("selective_state_update")
    assert c["state"] == ((3, 16, 6), torch.float32) and c["x"] == ((3, 16), torch.bfloat16)
    assert c["A"] == ((16, 6), torch.float32) and c["B"] == ((3, 6), torch.bfloat16) and c["dt_softplus"] is True
    assert m["tokens_per_s"][0]["value"] > 0   # tokens per call = batch (one step)
    rows = run("peer.mamba_ssm.state_update", "fwd+bwd")
    assert rows[-1]["status"] == "skipped" and "pass" in rows[-1]["message"]


def test_causal_conv1d_adapter(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "causal_conv1d")
    on_cpu("peer.causal_conv1d")
    _ok(run("peer.causal_conv1d", "fwd+bwd"))
    c = call_of("causal_conv1d_fn")
    assert c["x"] == ((3, 16, 24), torch.float32) and c["weight"] == ((16, 4), torch.float32)
    assert c["bias"] == ((16,), torch.float32) and c["activation"] == "silu"


def test_flash_attn_adapter_and_its_dtypes(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "flash_attn")
    on_cpu("peer.flash_attn")
    _ok(run("peer.flash_attn", "fwd+bwd", dtype="bf16"))
    c = call_of("flash_attn_func")
    assert c["q"] == ((3, 24, 2, 8), torch.bfloat16) == c["k"] == c["v"] and c["causal"] is True
    rows = run("peer.flash_attn", "fwd", dtype="fp32")
    assert rows[-1]["status"] == "skipped" and "dtype" in rows[-1]["message"]


@pytest.mark.parametrize("impl,fn", [("peer.fla.gla", "chunk_gla"),
                                     ("peer.fla.gated_delta_rule", "chunk_gated_delta_rule")])
def test_fla_adapters(monkeypatch, on_cpu, impl, fn):
    peer_standins.install(monkeypatch, "fla")
    on_cpu(impl)
    _ok(run(impl, "fwd+bwd", dtype="bf16"))
    c = call_of(fn)
    assert c["q"] == ((3, 24, 2, 8), torch.bfloat16) == c["k"] == c["v"]
    if fn == "chunk_gla":
        assert c["g"] == ((3, 24, 2, 8), torch.bfloat16)
    else:
        assert c["g"] == ((3, 24, 2), torch.bfloat16) == c["beta"]


@pytest.mark.parametrize("hopper,triton_3_7_1,tilelang,pass_,declined", [
    (True, False, False, "fwd+bwd", True),     # fla's guard applies: skipped with its reason
    (True, False, False, "fwd", False),        # the guard is on the backward only
    (True, False, True, "fwd+bwd", False),     # TileLang serves the kernel
    (True, True, False, "fwd+bwd", False),     # a fixed Triton
    (False, False, False, "fwd+bwd", False),   # not Hopper
], ids=["hopper-triton3.6", "fwd", "tilelang", "triton3.7.1", "not-hopper"])
def test_fla_gated_delta_rule_is_skipped_where_fla_refuses_its_backward(monkeypatch, on_cpu, hopper, triton_3_7_1,
                                                                         tilelang, pass_, declined):
    """fla raises in the gated backward with Triton >= 3.4.0, < 3.7.1 on Hopper (fla #640; seen on the H100,
    2026-12-05): the cell is skipped naming the fix, not an error row, and runs wherever fla's guard is off."""
    peer_standins.install(monkeypatch, "fla")
    monkeypatch.setattr(sys.modules["fla.utils"], "IS_NVIDIA_HOPPER", hopper)
    monkeypatch.setattr(sys.modules["fla.utils"], "TRITON_ABOVE_3_7_1", triton_3_7_1)
    monkeypatch.setitem(sys.modules, "tilelang", types.ModuleType("tilelang") if tilelang else None)
    on_cpu("peer.fla.gated_delta_rule")
    rows = run("peer.fla.gated_delta_rule", pass_, dtype="bf16")
    if declined:
        assert [r["status"] for r in rows] == ["skipped"], not_ok(rows)
        assert "#640" in rows[0]["message"] and "Triton >= 3.7.1" in rows[0]["message"], rows[0]["message"]
        assert not any(c["fn"] == "chunk_gated_delta_rule" for c in peer_standins.CALLS)
    else:
        _ok(rows)


def test_an_installed_peer_that_does_not_import_is_an_error(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "mamba_ssm")
    monkeypatch.delattr(sys.modules["mamba_ssm.ops.selective_scan_interface"], "selective_scan_fn")  # another version
    on_cpu("peer.mamba_ssm.selective_scan")
    rows = run("peer.mamba_ssm.selective_scan", "fwd")
    assert rows[-1]["status"] == "error" and "is installed but" in rows[-1]["message"], rows[-1]


# ---- the gate ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("broken,pass_,tensor", [("no_D", "fwd", "y"), ("bad_du", "fwd+bwd", "du")])
def test_the_gate_stops_a_wrong_kernel_before_timing(monkeypatch, on_cpu, broken, pass_, tensor):
    peer_standins.install(monkeypatch, "mamba_ssm", broken=broken)
    on_cpu("peer.mamba_ssm.selective_scan")
    rows = run("peer.mamba_ssm.selective_scan", pass_, dtype="bf16")
    m = by_metric(rows)
    assert rows[-1]["status"] == "error" and "failed the correctness gate" in rows[-1]["message"]
    assert f"{tensor} " in rows[-1]["message"] and "time_ms" not in m and "time_ms_median" not in m
    errs = {r["tensor"]: r["value"] for r in m["gate_max_rel_err"]}
    assert errs[tensor] > 0.05 and m["gate_passed"][0]["value"] == 0


def test_a_wrong_gradient_passes_a_forward_only_gate(monkeypatch, on_cpu):
    """The gate checks what the cell times: fwd cells compare the output only."""
    peer_standins.install(monkeypatch, "mamba_ssm", broken="bad_du")
    on_cpu("peer.mamba_ssm.selective_scan")
    _ok(run("peer.mamba_ssm.selective_scan", "fwd", dtype="bf16"))


def test_gate_false_times_without_checking(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "mamba_ssm", broken="no_D")
    on_cpu("peer.mamba_ssm.selective_scan")
    rows = run("peer.mamba_ssm.selective_scan", "fwd", gate=False)
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows) and "gate_passed" not in m and len(m["time_ms"]) == 2


def test_the_gate_runs_on_a_reduced_problem():
    rows = run("s6.chunked", "fwd", seq_len=300, batch=5, repeats=1)
    g = by_metric(rows)["gate_passed"][0]
    assert (g["gate_seq_len"], g["gate_batch"]) == (256, 2)


@pytest.mark.parametrize("impl", ["s6.reference", "s6.chunked", "s4.fft", "attention.sdpa", "attention.naive"])
def test_built_in_targets_pass_their_gate(impl):
    rows = run(impl, "fwd+bwd", dtype="bf16", repeats=1)
    m = by_metric(rows)
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert m["gate_passed"][0]["value"] == 1 and all(r["value"] < 0.05 for r in m["gate_max_rel_err"])


def test_model_level_targets_are_not_gated():
    rows = run("model", "fwd", model=dict(arch="mamba", mixer="s6", n_layers=1, d_model=16), vocab=32, repeats=1)
    assert all(r["status"] == "ok" for r in rows) and "gate_passed" not in by_metric(rows)


def test_memory_kind_runs_a_peer(monkeypatch, on_cpu):
    peer_standins.install(monkeypatch, "causal_conv1d")
    on_cpu("peer.causal_conv1d")
    rows = execute_cell(cell("memory", **CFG, dtype="fp32", impl="peer.causal_conv1d"), ctx())
    assert all(r["status"] == "ok" for r in rows), rows[-1]
    assert "saved_activation_bytes" in by_metric(rows)


def test_a_package_whose_init_fails_still_gives_its_operator(tmp_path, monkeypatch):
    """mamba_ssm's __init__ imports its model zoo (and transformers); the op module alone must still load."""
    from harness.kinds.bench.peers import peer_attr

    pkg = tmp_path / "fakepeer_pkg"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('cannot import name GreedySearchDecoderOnlyOutput')\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "scan.py").write_text("def selective_scan_fn():\n    return 'official'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = peer_attr("fakepeer_pkg", "fakepeer_pkg.ops.scan", "selective_scan_fn")
    assert fn() == "official"
    with pytest.raises(Exception, match="is installed but .*fakepeer_pkg.ops.missing"):
        peer_attr("fakepeer_pkg", "fakepeer_pkg.ops.missing", "x")
    for name in [m for m in sys.modules if m.startswith("fakepeer_pkg")]:
        monkeypatch.delitem(sys.modules, name)


# ---- on a GPU, with the real packages (reports/gpu/next/call_c.sh builds them) ------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", list(PEERS))
def test_real_peer_on_gpu_passes_the_gate(impl):
    from harness.kinds.bench.workload import package_installed

    if not package_installed(PEERS[impl]):
        pytest.skip(f"{PEERS[impl]} is not installed")
    pass_ = "fwd" if impl == "peer.mamba_ssm.state_update" else "fwd+bwd"
    params = {**CFG, "d_model": 256, "heads": 8, "head_dim": 64, "seq_len": 512, "device": "cuda"}
    if impl == "peer.mamba_ssm.ssd":
        params["d_state"] = 64
    rows = execute_cell(cell("speed", **params, dtype="bf16", impl=impl, **{"pass": pass_}),
                        type(ctx())(device="cuda", deadline=None))
    m = by_metric(rows)
    skipped = [r["message"] for r in rows if r["status"] == "skipped" and "refuses" in r["message"]]
    if skipped:   # the peer's own guard against its toolchain (an external condition), e.g. fla #640
        pytest.skip(f"the installed peer refuses this GPU's Triton toolchain: {skipped[0]}")
    assert not not_ok(rows), not_ok(rows)
    assert m["gate_passed"][0]["value"] == 1, m["gate_max_rel_err"]
