"""Is a GPU training run repeatable for a seed, with and without train.deterministic?  What does it cost?

Selective-copying cells of the quick suite (L 1024, batch 64, d_model 64, bf16 autocast, AdamW lr 2e-3,
grad clip 1): each model is trained twice from the same seed for 200 steps, in each mode; the table gives
the largest parameter difference between the two runs (0 = bitwise repeatable) and the wall ms per step of
the last 100 steps (each cell alone; the step synchronised only at the ends).  determinism_check.log was
made (H200, 2026-12-02) with the first version of harness/kinds/training/determinism.py, which ran the same settings in
PyTorch's warn_only mode and named the ops that warned: none did for these five models.

    python -m harness.studies.determinism_check [--device cpu --steps 4 --length 64]   (made reports/gpu, 2026-12-02b)
"""
import argparse
import contextlib
import time

import torch

from harness.kinds.training.determinism import deterministic_algorithms
from harness.kinds.task import TaskCellConfig, build_model
from harness.kinds.training.train import answer_loss, autocast_for, logits_of, make_optimizer
from harness.kinds.training.train_step import EagerStep, set_lr

BATCH = 64


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        _sync(dev)


def train(arch, mixer, deterministic, dev, L=1024, steps=200):
    timed = max(1, steps // 2)
    cfg = TaskCellConfig.model_validate(dict(
        task=dict(name="selective_copying", seq_len=L, vocab=16, n_tokens=16),
        model=dict(arch=arch, mixer=mixer, n_layers=2, d_model=64, d_state=16, expand=2, max_len=L),
        train=dict(batch=BATCH, lr=2e-3, optimizer="adamw", grad_clip=1.0)))
    task = cfg.task.build()
    with deterministic_algorithms() if deterministic else contextlib.nullcontext():
        torch.manual_seed(0)
        model = build_model(cfg.model, task.vocab_size).to(dev).train()
        opt = make_optimizer(model, cfg.train)

        def loss_of(batch):
            with autocast_for(dev, "auto"):
                return answer_loss(logits_of(model, batch.inputs), batch)

        step = EagerStep(loss_of, opt, [p for p in model.parameters()], 1.0)
        gen = torch.Generator(device=dev).manual_seed(1)
        for i in range(steps):
            if i == steps - timed:
                _sync(dev)
                t = time.perf_counter()
            set_lr(opt, 2e-3)
            step(task.sample(BATCH, L, gen))
        _sync(dev)
        ms = (time.perf_counter() - t) / timed * 1e3
    return [p.detach().float().clone() for p in model.parameters()], ms


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("models", nargs="*", default=["mamba/s6", "none/s6", "h3/s6", "h3/hyena", "h3/s4"])
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    print(f"{'model':12s} {'mode':14s} {'max |dparam|':>13s} {'ms/step':>8s}")
    for arch, mixer in (m.split("/") for m in args.models):
        for det in (False, True):
            (p1, ms1), (p2, ms2) = (train(arch, mixer, det, dev, args.length, args.steps) for _ in range(2))
            diff = max(float((a - b).abs().max()) for a, b in zip(p1, p2))
            print(f"{arch + '/' + mixer:12s} {'deterministic' if det else 'default':14s} {diff:13.3g} "
                  f"{min(ms1, ms2):8.2f}", flush=True)


if __name__ == "__main__":
    main()
