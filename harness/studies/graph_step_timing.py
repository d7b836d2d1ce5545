"""Wall ms per training step, eager vs replayed from a CUDA graph (harness/kinds/training/train_step.py), each cell alone.

Selective-copying cells of the quick suite at L 1024 (batch 64, bf16 autocast, AdamW, grad clip 1):
30 steps of warm-up (the graphed step captures at its 4th), then 50 timed steps, synchronised.

    python -m harness.studies.graph_step_timing [--device cpu --steps 3 --length 64]   (made reports/gpu, 2026-12-02)
"""
import argparse
import time

import torch

from harness.kinds.task import TaskCellConfig, build_model
from harness.kinds.training.train import answer_loss, autocast_for, logits_of, make_optimizer
from harness.kinds.training.train_step import EagerStep, GraphedStep, set_lr

def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        _sync(dev)


def ms_per_step(arch, mixer, graphed, dev, L=1024, n=50, warm=30):
    cfg = TaskCellConfig.model_validate(dict(
        task=dict(name="selective_copying", seq_len=L, vocab=16, n_tokens=16),
        model=dict(arch=arch, mixer=mixer, n_layers=2, d_model=64, d_state=16, expand=2, max_len=L),
        train=dict(batch=64, lr=1e-3, optimizer="adamw", grad_clip=1.0, cuda_graph=graphed)))
    task = cfg.task.build()
    torch.manual_seed(0)
    model = build_model(cfg.model, task.vocab_size).to(dev).train()
    opt = make_optimizer(model, cfg.train, capturable=graphed)

    def loss_of(batch):
        with autocast_for(dev, "auto", cache_enabled=not graphed):
            return answer_loss(logits_of(model, batch.inputs), batch)

    params = list(model.parameters())
    step = GraphedStep(loss_of, opt, params, 1.0, dev) if graphed else EagerStep(loss_of, opt, params, 1.0)
    gen = torch.Generator(device=dev).manual_seed(1)
    for i in range(warm):
        set_lr(opt, 1e-3)
        step(task.sample(64, L, gen))
    _sync(dev)
    t = time.perf_counter()
    for i in range(n):
        set_lr(opt, 1e-3)
        step(task.sample(64, L, gen))
    _sync(dev)
    return (time.perf_counter() - t) / n * 1e3, step.graphed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50, help="timed steps (after 30 of warm-up, fewer if --steps < 30)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    print(f"{'model':12s} {'eager ms':>9s} {'graph ms':>9s} {'speed-up':>8s}")
    for arch, mixer in [("none", "s6"), ("h3", "s4"), ("mamba", "s6")]:
        e, _ = ms_per_step(arch, mixer, False, dev, args.length, args.steps, min(30, args.steps))
        # a CUDA graph needs CUDA: on the CPU the graphed column is left empty
        g, ok = (ms_per_step(arch, mixer, True, dev, args.length, args.steps, min(30, args.steps))
                 if dev.type == "cuda" else (float("nan"), False))
        print(f"{arch + '/' + mixer:12s} {e:9.2f} {g:9.2f} {e / g:7.2f}x" + ("" if ok else "  (capture failed: eager)"), flush=True)


if __name__ == "__main__":
    main()
