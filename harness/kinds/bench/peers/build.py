"""Make the peer packages importable on a machine without network, from their published source.

    python -m harness.kinds.bench.peers build --src .peers/src --out .peers/site [--only mamba_ssm,fla]
                                              [--arch 9.0] [--jobs N] [--dry-run]

``--src`` holds the peers' source as published: PyPI source distributions (``mamba_ssm-2.2.4.tar.gz``,
``causal_conv1d-1.5.0.tar.gz``, ``flash_linear_attention-*.tar.gz`` / ``fla_core-*.tar.gz``), or snapshots of
their repositories (a folder or archive named after the repository: ``mamba``, ``causal-conv1d``,
``flash-linear-attention``), plus any wheels of pure-Python dependencies the target machine lacks (installed
first).  On a machine with network and torch (tried 2026-12-05: mamba_ssm 2.3.2.post1, causal_conv1d 1.7.0,
flash_linear_attention and fla_core 0.6.0, ~1.2 MB)::

    MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE python -m pip download --no-deps \
        --no-binary :all: --no-build-isolation mamba-ssm causal-conv1d flash-linear-attention fla-core -d .peers/src

(without ``--no-build-isolation`` pip first installs torch to read the sdists' metadata; the SKIP switches keep
that from compiling anything).  ``.peers/`` is git-ignored.

Each peer is installed with ``pip install --no-deps --no-index --no-build-isolation --target OUT`` (no
downloads).  The CUDA ones (mamba_ssm, causal_conv1d; flash_attn only when asked with ``--only``: its build is
long) compile their extension for ``--arch`` only: ``TORCH_CUDA_ARCH_LIST``, their FORCE_BUILD switches (no
attempt to fetch a prebuilt wheel) and ``PYTORCH_NVCC`` pointing at a wrapper that drops their hard-coded
``-gencode`` flags for other architectures (nvcc_filter.py).  After installing, each peer's operator module is
imported in a child process with ``PYTHONPATH=OUT``; the last line says what to export.

Exit status: 0 built and importable; 1 a build or import failed; 2 bad arguments, a missing source (the
message says how to get it) or no nvcc for a CUDA peer.  ``--dry-run`` prints the commands and builds nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ARCHIVES = (".tar.gz", ".tgz", ".zip")
REPO = Path(__file__).resolve().parents[4]   # the checkout, for the import check's PYTHONPATH


@dataclass(frozen=True)
class PeerSource:
    """How to find, build and check one peer package."""

    name: str                      # the import name (and the impl names' middle part)
    prefixes: Tuple[str, ...]      # normalised names a source may start with (sdist names, repository names)
    pip_names: Tuple[str, ...]     # what to `pip download` on a machine with network
    repo: str                      # the public repository
    check: Tuple[str, str]         # (module, attribute) whose import proves the install works
    cuda: bool = False
    env: Dict[str, str] = field(default_factory=dict)
    default: bool = True           # built without --only


PEERS: Dict[str, PeerSource] = {p.name: p for p in (
    PeerSource("mamba_ssm", ("mamba_ssm", "mamba"), ("mamba-ssm",), "state-spaces/mamba",
               ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"), cuda=True,
               env={"MAMBA_FORCE_BUILD": "TRUE", "MAMBA_SKIP_CUDA_BUILD": "FALSE"}),
    PeerSource("causal_conv1d", ("causal_conv1d",), ("causal-conv1d",), "Dao-AILab/causal-conv1d",
               ("causal_conv1d", "causal_conv1d_fn"),
               cuda=True, env={"CAUSAL_CONV1D_FORCE_BUILD": "TRUE", "CAUSAL_CONV1D_SKIP_CUDA_BUILD": "FALSE"}),
    PeerSource("fla", ("fla_core", "flash_linear_attention"), ("flash-linear-attention", "fla-core"),
               "fla-org/flash-linear-attention", ("fla.ops.gla", "chunk_gla")),
    PeerSource("flash_attn", ("flash_attn", "flash_attention"), ("flash-attn",), "Dao-AILab/flash-attention",
               ("flash_attn", "flash_attn_func"), cuda=True, default=False,
               env={"FLASH_ATTENTION_FORCE_BUILD": "TRUE", "FLASH_ATTENTION_SKIP_CUDA_BUILD": "FALSE",
                    "FLASH_ATTN_CUDA_ARCHS": "{sm}"}),
)}


ALL_PIP_NAMES = [n for p in PEERS.values() if p.default for n in p.pip_names]


class UsageError(Exception):
    """Bad arguments or a missing source: exit 2 with the message."""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _matches(entry: str, prefix: str) -> bool:
    """``mamba_ssm-2.2.4.tar.gz`` / ``mamba`` / ``mamba-main`` for prefix ``mamba_ssm`` / ``mamba``."""
    n = normalise(entry)
    if n == prefix:
        return True
    rest = n[len(prefix):] if n.startswith(prefix + "_") else None
    return rest is not None and (rest[1:2].isdigit() or rest[1:] in ("main", "master")
                                 or rest[1:].startswith(("main_", "master_")))


def find_sources(src: Path, peer: PeerSource) -> List[Path]:
    """The sources of ``peer`` in ``src``: one per prefix that matches (fla: fla-core and flash-linear-attention);
    two for the same prefix is ambiguous (UsageError)."""
    found: List[Path] = []
    entries = sorted(p for p in src.iterdir() if p.is_dir() or p.name.endswith(ARCHIVES))
    for prefix in peer.prefixes:
        hits = [p for p in entries if _matches(p.name, prefix) and p not in found]
        if len(hits) > 1:
            raise UsageError(f"several sources of {peer.name} in {src}: {', '.join(h.name for h in hits)}; "
                             f"keep one")
        found += hits
        if hits and peer.name != "fla":
            break   # mamba_ssm: the sdist or the repository snapshot, not both
    return found


def fetch_command(pip_names: Sequence[str], src: Path) -> str:
    """The pip command that fetches the sdists on a machine with network (no build, no torch download)."""
    return ("MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE python -m pip download --no-deps "
            f"--no-binary :all: --no-build-isolation {' '.join(pip_names)} -d {src}")


def how_to_get(peer: PeerSource, src: Path) -> str:
    return (f"no source of {peer.name} in {src}: on a machine with network run `{fetch_command(peer.pip_names, src)}`, "
            f"or put a snapshot of https://github.com/{peer.repo} there (folder or archive named after the repository)")


@dataclass
class Step:
    """One thing the build does: a command (argv, extra env), or unpacking an archive (argv None)."""

    what: str
    argv: Optional[List[str]] = None
    env: Dict[str, str] = field(default_factory=dict)
    unpack: Optional[Tuple[Path, Path]] = None

    def shell(self) -> str:
        if self.unpack is not None:
            return f"# unpack {self.unpack[0]} -> {self.unpack[1]}"
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (envs + " " if envs else "") + " ".join(shlex.quote(a) for a in self.argv)


def source_root(path: Path, work: Path) -> Tuple[Path, Optional[Step]]:
    """The folder pip builds from: ``path`` itself, or where its archive unpacks to (and the unpack step)."""
    if path.is_dir():
        return path, None
    stem = path.name
    for ext in ARCHIVES:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    dest = work / stem
    return dest, Step(f"unpack {path.name}", unpack=(path, dest))


def find_nvcc() -> Optional[str]:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc") or (str(Path("/usr/local/cuda/bin/nvcc"))
                                   if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def nvcc_wrapper(work: Path, nvcc: str, arch: str) -> Tuple[Path, str]:
    """(path, text) of the shell script PYTORCH_NVCC points at: nvcc_filter.py keeping ``arch`` only."""
    keep = arch.replace(".", "").replace("+PTX", "")
    script = Path(__file__).with_name("nvcc_filter.py")
    text = (f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} --keep {keep} "
            f"--real {shlex.quote(nvcc)} -- \"$@\"\n")
    return work / f"nvcc_sm{keep}", text


def plan(src: Path, out: Path, work: Path, names: Sequence[str], arch: str, jobs: int,
         nvcc: Optional[str]) -> List[Step]:
    """Every step of the build, in order (raises UsageError for a missing or ambiguous source)."""
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
           "--no-cache-dir", "--upgrade", "--target", str(out)]
    steps: List[Step] = []
    wheels = sorted(src.glob("*.whl"))
    if wheels:
        steps.append(Step(f"install {len(wheels)} dependency wheel(s)", pip + [str(w) for w in wheels]))
    missing = [PEERS[n] for n in names if not find_sources(src, PEERS[n])]
    if missing:
        raise UsageError("\n".join(how_to_get(p, src) for p in missing))
    for n in names:
        peer = PEERS[n]
        env: Dict[str, str] = {}
        if peer.cuda:
            wrapper, _ = nvcc_wrapper(work, nvcc or "nvcc", arch)
            sm = arch.replace(".", "").replace("+PTX", "")
            env = {**{k: v.format(sm=sm) for k, v in peer.env.items()}, "TORCH_CUDA_ARCH_LIST": arch,
                   "MAX_JOBS": str(jobs), "PYTORCH_NVCC": str(wrapper)}
        roots = []
        sources = find_sources(src, peer)
        for path in sources:
            root, unpack = source_root(path, work)
            if unpack:
                steps.append(unpack)
            roots.append(str(root))
        # one pip call per peer: a second `pip --target --upgrade` would replace the first's package folder
        # (fla-core and flash-linear-attention both install into fla/)
        steps.append(Step(f"build and install {peer.name} from {', '.join(p.name for p in sources)}", pip + roots, env))
        module, attr = peer.check
        steps.append(Step(f"check that {module}.{attr} imports", [
            sys.executable, "-c", "from harness.kinds.bench.peers import peer_attr; "
                                  f"peer_attr({json.dumps(peer.name)}, {json.dumps(module)}, {json.dumps(attr)})"],
            {"PYTHONPATH": f"{out.resolve()}{os.pathsep}{REPO}"}))
    return steps


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` so that ``dest`` is its single top folder (the package's setup.py / pyproject)."""
    tmp = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.mkdir(parents=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    tops = list(tmp.iterdir())
    (tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp).rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)


def run_steps(steps: Sequence[Step], log=print) -> int:
    for step in steps:
        log(f"== {step.what}")
        if step.unpack is not None:
            _unpack(*step.unpack)
            continue
        env = {**os.environ, **step.env}
        if "PYTHONPATH" in step.env and os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = step.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
        proc = subprocess.run(step.argv, env=env)
        if proc.returncode:
            log(f"FAILED ({proc.returncode}): {step.what}\n  command: {step.shell()}")
            return 1
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.kinds.bench.peers build",
                                 description="Build and install the peer packages from source, offline.")
    ap.add_argument("--src", type=Path, default=Path(".peers/src"), help="the peers' sdists / repository snapshots")
    ap.add_argument("--out", type=Path, default=Path(".peers/site"), help="install here (then PYTHONPATH=OUT)")
    ap.add_argument("--work", type=Path, default=None, help="unpack and build here (default: OUT/../build)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated peers (default {','.join(n for n, p in PEERS.items() if p.default)}; "
                         f"known: {','.join(PEERS)})")
    ap.add_argument("--arch", default="9.0", help="CUDA architecture to compile for (TORCH_CUDA_ARCH_LIST form)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4, help="parallel compile jobs (MAX_JOBS)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, build nothing")
    return ap.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    try:
        a = parse_args(argv)
    except SystemExit as e:   # argparse's own usage errors
        return 2 if e.code else 0
    try:
        names = [n.strip() for n in a.only.split(",") if n.strip()] if a.only else \
            [n for n, p in PEERS.items() if p.default]
        unknown = [n for n in names if n not in PEERS]
        if unknown or not names:
            raise UsageError(f"--only: unknown peer(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PEERS)}")
        if not re.fullmatch(r"\d+\.\d+(\+PTX)?", a.arch):
            raise UsageError(f"--arch {a.arch!r}: a compute capability such as 9.0")
        if not a.src.is_dir():
            raise UsageError(f"--src {a.src}: no such folder; create it and put the peers' source there (on a "
                             f"machine with network: `{fetch_command(ALL_PIP_NAMES, a.src)}`)")
        a.out = a.out.resolve()   # absolute: pip builds in the source folder, and PYTORCH_NVCC is read there
        work = (a.work or a.out.parent / "build").resolve()
        needs_nvcc = any(PEERS[n].cuda for n in names)
        nvcc = find_nvcc() if needs_nvcc else None
        if needs_nvcc and nvcc is None and not a.dry_run:
            raise UsageError("no nvcc found (CUDA_HOME/bin/nvcc or on PATH): the CUDA peers "
                             f"({', '.join(n for n in names if PEERS[n].cuda)}) compile an extension; run this on the "
                             "GPU machine, or build only the pure-Python ones with --only fla")
        steps = plan(a.src, a.out, work, names, a.arch, a.jobs, nvcc)
    except UsageError as e:
        print(f"peers build: {e}", file=sys.stderr)
        return 2
    if a.dry_run:
        print(f"# dry run: {len(steps)} steps for {', '.join(names)}; nothing is built")
        if needs_nvcc:
            path, text = nvcc_wrapper(work, nvcc or "nvcc", a.arch)
            print(f"# write {path} (PYTORCH_NVCC):\n# " + text.strip().replace("\n", "\n# "))
        for s in steps:
            print(s.shell())
        print(f"export PYTHONPATH={a.out.resolve()}${{PYTHONPATH:+:$PYTHONPATH}}")
        return 0
    work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    if needs_nvcc:
        path, text = nvcc_wrapper(work, nvcc, a.arch)
        path.write_text(text)
        path.chmod(0o755)
    code = run_steps(steps)
    if code == 0:
        print(f"peers build: {', '.join(names)} installed in {a.out}; use them with\n"
              f"export PYTHONPATH={a.out.resolve()}${{PYTHONPATH:+:$PYTHONPATH}}")
    return code
