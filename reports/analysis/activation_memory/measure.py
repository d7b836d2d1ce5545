"""Activation bytes per token that a Mamba / Transformer layer and the LM head keep for the backward.

Exact counts (harness/kinds/bench/saved_activations.py) of the code path the GPU runs -- the Triton scan, here under
TRITON_INTERPRET=1 on the CPU; bf16 autocast -- separated by differencing: two lengths remove what does not
grow with L (weights and their bf16 copies), two depths separate one layer from the head.  Measured at
d_model 64 and 128 and fitted per_layer(d) = a*d + c, to extrapolate to Table 15's d_model 768.

    python reports/analysis/activation_memory/measure.py            (~10 min on 2 CPU cores)
"""
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"
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


rows = []
for arch, mixer in (("mamba", "s6"), ("transformer", "attention")):
    for checkpoint in (False, True):
        t = time.time()
        (l64, r64), (l128, r128) = per_token(arch, mixer, 64, checkpoint), per_token(arch, mixer, 128, checkpoint)
        a = (l128 - l64) / 64
        c = l64 - 64 * a
        rows.append((arch, checkpoint, l64, l128, a * 768 + c, r64, r128))
        print(f"{arch} checkpoint={checkpoint}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)

print(f"bytes kept for the backward per token (bf16 autocast, d_state 16, expand 2, mlp_ratio 4; vocab {VOCAB})\n")
print("| model | checkpoint | per layer, d 64 | per layer, d 128 | per layer, d 768 (fit) | head + loss, d 64 | d 128 |")
print("|---|---|---|---|---|---|---|")
for arch, ck, l64, l128, l768, r64, r128 in rows:
    print(f"| {arch} | {ck} | {l64:.0f} | {l128:.0f} | {l768 / 1024:.1f} KiB | {r64:.0f} | {r128:.0f} |")
