"""Activation bytes per token that a Mamba / Transformer layer and the LM head keep for the backward.

Exact counts (harness/kinds/bench/saved_activations.py) of the code path the GPU runs -- the Triton scan, here under
TRITON_INTERPRET=1 on the CPU; bf16 autocast -- separated by differencing: two lengths remove what does not
grow with L (weights and their bf16 copies), two depths separate one layer from the head.  Measured at
d_model 64 and 128 and fitted per_layer(d) = a*d + c, to extrapolate to Table 15's d_model 768.

    python -m harness.studies.activation_memory > reports/analysis/activation_memory/measured.txt   (~10 min, 2 CPU cores)
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")   # count the Triton scan's path on the CPU (read when kernels load)
import torch  # noqa: E402

import models  # noqa: E402
from harness.kinds.bench.saved_activations import SavedActivations  # noqa: E402
from models.config import ModelConfig  # noqa: E402

VOCAB = 1000


def kept(arch, mixer, d, L, n_layers, checkpoint):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, mixer=mixer, n_layers=n_layers, d_model=d, d_state=16, expand=2, heads=4,
                      pos="rope", mlp_ratio=4, backend="triton" if mixer == "s6" else "auto", attn_backend="sdpa",
                      checkpoint=checkpoint)
    lm = models.build_lm(cfg, VOCAB)
    x = torch.randint(0, VOCAB, (1, L))
    with torch.autocast("cpu", dtype=torch.bfloat16), SavedActivations() as saved:
        logits = lm(x)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.flatten())  # as the memory kind does
    return saved.bytes


def per_token(arch, mixer, d, checkpoint, L1=32, L2=64):
    s = {(n, L): kept(arch, mixer, d, L, n, checkpoint) for n in (1, 2) for L in (L1, L2)}
    layer = ((s[2, L2] - s[1, L2]) - (s[2, L1] - s[1, L1])) / (L2 - L1)
    rest = (s[1, L2] - s[1, L1]) / (L2 - L1) - layer       # embedding, final norm, head, loss
    return layer, rest


def measure(d1=64, d2=128, L1=32, L2=64):
    """Rows (arch, checkpoint, per layer at d1, at d2, fitted at 768, head+loss at d1, at d2), in bytes per token."""
    rows = []
    for arch, mixer in (("mamba", "s6"), ("transformer", "attention")):
        for checkpoint in (False, True):
            t = time.time()
            (l1, r1), (l2, r2) = (per_token(arch, mixer, d, checkpoint, L1, L2) for d in (d1, d2))
            a = (l2 - l1) / (d2 - d1)
            c = l1 - d1 * a
            rows.append((arch, checkpoint, l1, l2, a * 768 + c, r1, r2))
            print(f"{arch} checkpoint={checkpoint}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs=2, default=[64, 128], help="the two d_model of the fit")
    ap.add_argument("--lengths", type=int, nargs=2, default=[32, 64], help="the two lengths of the difference")
    args = ap.parse_args(argv)
    (d1, d2), (L1, L2) = args.dims, args.lengths
    rows = measure(d1, d2, L1, L2)
    print(f"bytes kept for the backward per token (bf16 autocast, d_state 16, expand 2, mlp_ratio 4; vocab {VOCAB})\n")
    print(f"| model | checkpoint | per layer, d {d1} | per layer, d {d2} | per layer, d 768 (fit) | head + loss, d {d1} "
          f"| d {d2} |")
    print("|---|---|---|---|---|---|---|")
    for arch, ck, l1, l2, l768, r1, r2 in rows:
        print(f"| {arch} | {ck} | {l1:.0f} | {l2:.0f} | {l768 / 1024:.1f} KiB | {r1:.0f} | {r2:.0f} |")


if __name__ == "__main__":
    main()
