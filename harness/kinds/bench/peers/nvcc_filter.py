"""An nvcc that compiles for the chosen GPU architectures only (a standalone script; no package imports).

mamba_ssm's and causal_conv1d's setup.py pass a fixed ``-gencode`` list (sm_53 ... sm_90/100) that
``TORCH_CUDA_ARCH_LIST`` does not shorten; torch's extension builder calls ``$PYTORCH_NVCC`` when it is set, so
the peers build (build.py) points it at a wrapper that runs this file: every ``-gencode`` / ``--generate-code``
for another architecture is dropped (sm_90 only: minutes instead of most of an hour), then the real nvcc runs.

    python nvcc_filter.py --keep 90 --real /usr/local/cuda/bin/nvcc -- <nvcc arguments>
"""
from __future__ import annotations

import os
import re
import sys
from typing import List, Optional, Sequence


def _arch(spec: str) -> Optional[str]:
    """'arch=compute_90a,code=sm_90a' -> '90'; None if no compute arch is named."""
    m = re.search(r"compute_(\d+)", spec)
    return m.group(1) if m else None


def filter_arch_flags(args: Sequence[str], keep: Sequence[str]) -> List[str]:
    """``args`` without the -gencode pairs of architectures outside ``keep`` (e.g. ["90"]; 90a counts as 90).
    If every -gencode was dropped, one for ``keep[0]`` is added, so nvcc never falls back to its default."""
    out: List[str] = []
    dropped = kept = 0
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-gencode", "--generate-code") and i + 1 < len(args):
            spec, step = args[i + 1], 2
            pair = [a, spec]
        elif a.startswith(("-gencode=", "--generate-code=")):
            spec, step = a.split("=", 1)[1], 1
            pair = [a]
        else:
            out.append(a)
            i += 1
            continue
        if _arch(spec) in keep:
            out += pair
            kept += 1
        else:
            dropped += 1
        i += step
    if dropped and not kept:
        out += ["-gencode", f"arch=compute_{keep[0]},code=sm_{keep[0]}"]
    return out


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if "--" not in argv or "--keep" not in argv or "--real" not in argv:
        print("usage: nvcc_filter.py --keep 90[,89] --real PATH/TO/nvcc -- ARGS...", file=sys.stderr)
        return 2
    sep = argv.index("--")
    opts, rest = argv[:sep], argv[sep + 1:]
    keep = opts[opts.index("--keep") + 1].split(",")
    real = opts[opts.index("--real") + 1]
    os.execv(real, [real] + filter_arch_flags(rest, keep))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
