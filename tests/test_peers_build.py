"""The offline peers build (harness/kinds/bench/peers/build.py) on the CPU: the commands it would run (dry run),
refusals with a message that says what to do (exit 2), the nvcc architecture filter, and a real offline build
and import of a pure-Python peer from two stand-in source distributions."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from harness.kinds.bench.peers import build
from harness.kinds.bench.peers.nvcc_filter import filter_arch_flags

ROOT = Path(__file__).resolve().parents[1]


def sdist(src: Path, name: str, files: dict) -> Path:
    """A source distribution ``name``.tar.gz with one top folder holding ``files`` (relative path -> text)."""
    top = src / name
    for rel, text in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    archive = src / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(top, arcname=name)
    import shutil
    shutil.rmtree(top)
    return archive


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    s.mkdir()
    sdist(s, "mamba_ssm-2.2.4", {"setup.py": ""})
    (s / "causal-conv1d").mkdir()                 # a repository snapshot, as a folder
    (s / "causal-conv1d" / "setup.py").write_text("")
    sdist(s, "fla_core-0.3.0", {"pyproject.toml": ""})
    (s / "einops-0.8.1-py3-none-any.whl").write_bytes(b"")
    return s


def test_dry_run_prints_every_command_and_builds_nothing(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(build, "find_nvcc", lambda: "/opt/cuda/bin/nvcc")
    out = tmp_path / "site"
    assert build.main(["--src", str(src), "--out", str(out), "--dry-run", "--jobs", "8"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    lines = text.splitlines()
    mamba = next(x for x in lines if "pip install" in x and "mamba_ssm-2.2.4" in x)
    for needle in ("MAMBA_FORCE_BUILD=TRUE", "TORCH_CUDA_ARCH_LIST=9.0", "MAX_JOBS=8", "PYTORCH_NVCC=",
                   "--no-index", "--no-build-isolation", "--no-deps", f"--target {out}"):
        assert needle in mamba, needle
    conv = next(x for x in lines if "pip install" in x and "causal-conv1d" in x)
    assert "CAUSAL_CONV1D_FORCE_BUILD=TRUE" in conv and "FLASH_ATTN" not in conv
    fla = next(x for x in lines if "pip install" in x and "fla_core" in x)
    assert "TORCH_CUDA_ARCH_LIST" not in fla                       # pure Python: no CUDA build
    assert lines.index(next(x for x in lines if "einops" in x)) < lines.index(mamba)   # dependency wheels first
    assert "--keep 90 --real /opt/cuda/bin/nvcc" in text
    assert any("unpack" in x and "mamba_ssm-2.2.4.tar.gz" in x for x in lines)
    assert lines[-1].startswith(f"export PYTHONPATH={out.resolve()}")
    assert f"PYTORCH_NVCC={(tmp_path / 'build').resolve()}/nvcc_sm90" in mamba   # absolute: pip builds elsewhere


@pytest.mark.parametrize("args, needle", [
    (["--only", "flash_attn"], "pip download --no-deps --no-binary :all: --no-build-isolation flash-attn"),
    (["--only", "nope"], "unknown peer(s) nope"),
    (["--arch", "sm90"], "--arch 'sm90'"),
])
def test_refusals_say_what_to_do(src, tmp_path, capsys, args, needle):
    assert build.main(["--src", str(src), "--out", str(tmp_path / "o"), "--dry-run", *args]) == 2
    assert needle in capsys.readouterr().err


def test_missing_source_folder_and_missing_nvcc(tmp_path, src, capsys, monkeypatch):
    assert build.main(["--src", str(tmp_path / "absent"), "--dry-run"]) == 2
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    assert build.main(["--src", str(src), "--out", str(tmp_path / "o"), "--only", "mamba_ssm"]) == 2
    assert "no nvcc found" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_missing_peer_names_its_pip_name_and_repository(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build.main(["--src", str(empty), "--only", "fla", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "flash-linear-attention fla-core" in err and "github.com/fla-org/flash-linear-attention" in err


def test_two_versions_of_one_source_are_refused(src, capsys):
    sdist(src, "mamba_ssm-2.2.5", {"setup.py": ""})
    assert build.main(["--src", str(src), "--only", "mamba_ssm", "--dry-run"]) == 2
    assert "several sources of mamba_ssm" in capsys.readouterr().err


def test_source_names():
    assert build._matches("mamba_ssm-2.2.4.tar.gz", "mamba_ssm") and build._matches("mamba", "mamba")
    assert build._matches("mamba-main", "mamba") and build._matches("causal-conv1d", "causal_conv1d")
    assert not build._matches("mamba_ssm-2.2.4.tar.gz", "mamba")    # the sdist is mamba_ssm's, not a snapshot
    assert not build._matches("flash_linear_attention-0.3.tar.gz", "flash_attn")


def test_nvcc_filter_keeps_only_the_chosen_architecture():
    args = ["-O3", "-gencode", "arch=compute_70,code=sm_70", "-gencode", "arch=compute_90,code=sm_90",
            "--generate-code=arch=compute_80,code=[compute_80,sm_80]", "-gencode=arch=compute_90a,code=sm_90a",
            "-c", "x.cu", "-o", "x.o"]
    assert filter_arch_flags(args, ["90"]) == ["-O3", "-gencode", "arch=compute_90,code=sm_90",
                                               "-gencode=arch=compute_90a,code=sm_90a", "-c", "x.cu", "-o", "x.o"]
    # nothing left for 90: one is added, so nvcc does not fall back to its default architecture
    assert filter_arch_flags(["-gencode", "arch=compute_80,code=sm_80", "-c", "y.cu"], ["90"]) == [
        "-c", "y.cu", "-gencode", "arch=compute_90,code=sm_90"]
    assert filter_arch_flags(["-c", "z.cu"], ["90"]) == ["-c", "z.cu"]


PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"
[project]
name = "{name}"
version = "0.0.1"
[tool.setuptools]
packages = [{packages}]
"""


@pytest.mark.slow
def test_a_real_offline_build_of_a_pure_python_peer(tmp_path):
    """Two stand-in sdists that both install into fla/ (fla-core: fla.ops; flash-linear-attention: fla.layers),
    built with pip offline into --out: both halves survive, and the import check passes."""
    src = tmp_path / "src"
    src.mkdir()
    sdist(src, "fla_core-0.0.1", {
        "pyproject.toml": PYPROJECT.format(name="fla-core", packages='"fla", "fla.ops", "fla.ops.gla"'),
        "fla/__init__.py": "", "fla/ops/__init__.py": "",
        "fla/ops/gla/__init__.py": "def chunk_gla(q, k, v, g):\n    return 'stand-in'\n"})
    sdist(src, "flash_linear_attention-0.0.1", {
        "pyproject.toml": PYPROJECT.format(name="flash-linear-attention", packages='"fla.layers"'),
        "fla/layers/__init__.py": "LAYERS = 1\n"})
    out = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "harness.kinds.bench.peers", "build", "--src", str(src),
                           "--out", str(out), "--only", "fla"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "fla" / "ops" / "gla" / "__init__.py").exists() and (out / "fla" / "layers" / "__init__.py").exists()
    assert f"export PYTHONPATH={out.resolve()}" in proc.stdout


def test_module_entry_point_usage(capsys):
    proc = subprocess.run([sys.executable, "-m", "harness.kinds.bench.peers"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "usage" in proc.stderr
