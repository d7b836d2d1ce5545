"""Per-step cost of the quick task suites' cells on one GPU, each cell alone.

For every selective-copying cell at L 512 and 1024 (batch 64) and the induction-heads Mamba cell: wall ms
per training step (eager, bf16 autocast, 60 steps after 10 of warm-up, synchronised), the summed CUDA kernel
time per step and the kernels launched per step (torch.profiler over 5 steps).  With ``--top`` it prints
the profiler's top kernels for h3/s6, mamba/s4 and mamba/s6 at L 1024 instead.

    python -m harness.studies.train_step_profile [--top] [arch/mixer ...]   (CUDA only; made reports/gpu, 2026-12-02)
"""
import sys
import time
import torch
from harness.kinds.task import TaskCellConfig, build_model
from harness.kinds.training.train import answer_loss, logits_of, make_optimizer

dev = torch.device("cuda")  # profiles CUDA kernels: the functions below need a GPU; importing does not


def cases():
    """The quick task suites' cells this profile covers (selective copying at L 512 / 1024, induction heads)."""
    out = []
    for L in (512, 1024):
        for arch, mixer in [("none", "s4"), ("none", "s6"), ("h3", "s4"), ("h3", "hyena"), ("h3", "s6"),
                            ("mamba", "s4"), ("mamba", "hyena"), ("mamba", "s6")]:
            out.append(dict(task=dict(name="selective_copying", seq_len=L, vocab=16, n_tokens=16),
                            model=dict(arch=arch, mixer=mixer, n_layers=2, d_model=64, d_state=16, expand=2,
                                       max_len=L),
                            train=dict(batch=64, lr=2e-3, optimizer="adamw", grad_clip=1.0)))
    out.append(dict(task=dict(name="induction_heads", seq_len=256, vocab=16, n_tokens=1),
                    model=dict(arch="mamba", mixer="s6", n_layers=2, d_model=64, d_state=16, expand=2),
                    train=dict(batch=32, lr=1e-3, optimizer="adam")))
    return out


def build(c):
    cfg = TaskCellConfig.model_validate(c)
    task = cfg.task.build()
    torch.manual_seed(0)
    model = build_model(cfg.model, task.vocab_size).to(dev).train()
    return cfg, task, model

def eager_rate(cfg, task, model, n=60):
    opt = make_optimizer(model, cfg.train)
    gen = torch.Generator(device=dev).manual_seed(1)
    def step():
        b = task.sample(cfg.train.batch, task.seq_len, gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = logits_of(model, b.inputs)
        loss = answer_loss(logits, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        return loss
    for _ in range(10): step()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): step()
    torch.cuda.synchronize(); wall = (time.perf_counter() - t) / n
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5): step()
        torch.cuda.synchronize()
    evs = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ktime = sum(e.device_time for e in evs) / 5 / 1e3  # ms
    nk = len(evs) / 5
    return wall * 1e3, ktime, nk


def top_kernels():
    from torch.profiler import profile, ProfilerActivity
    for c in cases():
        name = f"{c['model']['arch']}/{c['model']['mixer']}"
        if c["task"]["seq_len"] != 1024 or name not in ("h3/s6", "mamba/s4", "mamba/s6"): continue
        cfg, task, model = build(c)
        eager_rate(cfg, task, model, n=5)
        opt = make_optimizer(model, cfg.train); gen = torch.Generator(device="cuda").manual_seed(1)
        def step():
            b = task.sample(64, task.seq_len, gen)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = answer_loss(logits_of(model, b.inputs), b)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        for _ in range(3): step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5): step()
            torch.cuda.synchronize()
        print("==", name, "L1024 (5 steps)")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


def table(only=()):
    print(f"{'task':18s} {'L':>5s} {'model':12s} {'eager ms':>9s} {'kernel ms':>9s} {'kernels':>8s} ", flush=True)
    for c in cases():
        name = f"{c['model']['arch']}/{c['model']['mixer']}"
        if only and name not in only: continue
        try:
            cfg, task, model = build(c)
            w, k, nk = eager_rate(cfg, task, model)
        except Exception as e:
            print(name, "eager failed:", repr(e)[:200]); continue
        print(f"{c['task']['name']:18s} {c['task']['seq_len']:5d} {name:12s} {w:9.2f} {k:9.2f} {nk:8.0f}", flush=True)


def main(argv=None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        raise SystemExit("train_step_profile profiles CUDA kernels: run it on a GPU machine")
    if "--top" in args:
        top_kernels()
    else:
        table([a for a in args if a != "--top"])


if __name__ == "__main__":
    main()
