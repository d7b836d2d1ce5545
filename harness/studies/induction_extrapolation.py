"""Where does a Mamba that solved induction heads at length 256 fail at other lengths?

On the H200 (2026-12-02, run P) 3 of 8 seeds of the quick suite's Mamba missed at 16x (63.7-81.6% at 4096) and
two of them missed at length 64 too, though every seed was at 100% at 256.  This trains the quick suite's Mamba
cell (its `defaults`, read from suites/quick/induction_heads.yaml; `--steps` to shorten) for each seed, then
evaluates the trained model on the fixed validation sets at several lengths and breaks the accuracy down by
where the first trigger sat: its distance to the query (the gap the state must bridge) and its position from
the start of the sequence.  A decaying memory fails at long gaps whatever the length; a solution tied to the
training length fails by length, at any gap.

    python -m harness.studies.induction_extrapolation --seeds 0 1 2 --device cpu \
        > reports/analysis/induction_extrapolation/measured.txt
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from harness.kinds.task import TaskCellConfig, build_model
from harness.kinds.training.train import DATA_SEED_OFFSET, autocast_for, logits_of, train_and_evaluate

SUITE = Path(__file__).resolve().parents[2] / "suites" / "quick" / "induction_heads.yaml"


def cell_config(seed: int, steps: int, device: str, eval_size=None) -> TaskCellConfig:
    defaults = yaml.safe_load(open(SUITE))["defaults"]
    train = {**defaults["train"], "steps": steps, "timeout_s": None, "curve_seq_lens": None,
             "eval_seq_lens": [defaults["task"]["seq_len"]]}
    if eval_size is not None:
        train["eval_size"] = eval_size
    return TaskCellConfig.model_validate({"task": defaults["task"], "model": defaults["model"], "train": train,
                                          "device": device, "seed": seed})


def per_sequence(model, task, seq_len: int, size: int, data_seed: int, device, amp: str) -> pd.DataFrame:
    """One row per validation sequence: first-trigger position, gap to the query, answered right?"""
    vset = task.validation_set(seq_len, size, data_seed)
    out = []
    model.eval()
    with torch.no_grad():
        for part in vset.chunks(max(1, min(size, (1 << 17) // seq_len))):
            part = part.to(device)
            with autocast_for(device, amp):
                logits = logits_of(model, part.inputs)
            hit = (logits.float().argmax(-1) == part.targets) | ~part.mask
            first = (part.inputs == task.trigger).int().argmax(dim=1)       # first occurrence
            query = part.mask.int().argmax(dim=1)                          # the scored position
            for p, q, h in zip(first.tolist(), query.tolist(), hit.all(dim=1).tolist()):
                out.append({"seq_len": seq_len, "trigger_pos": p, "gap": q - p, "right": h})
    return pd.DataFrame(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None, help="default: the suite's train.steps")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--size", type=int, default=512, help="validation sequences per length")
    ap.add_argument("--eval-size", type=int, default=None, help="validation sequences of training's own "
                                                                  "evaluation (default: the suite's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    steps = args.steps or yaml.safe_load(open(SUITE))["defaults"]["train"]["steps"]
    for seed in args.seeds:
        cfg = cell_config(seed, steps, args.device, args.eval_size)
        task = cfg.task.build()
        torch.manual_seed(seed)
        model = build_model(cfg.model, task.vocab_size).to(device)
        t0 = time.time()
        rows = list(train_and_evaluate(model, task, cfg.train, seed=seed, device=device))
        curve = [(r["step"], r["value"]) for r in rows if r["metric"] == "val_accuracy"]
        took = next((s for s, v in curve if v >= 0.5), None)
        print(f"== seed {seed}: {steps} steps in {time.time() - t0:.0f} s on {device}; first >= 50% at step {took}; "
              f"final {curve[-1][1]:.3f} at {task.seq_len}", flush=True)
        df = pd.concat([per_sequence(model, task, L, args.size, seed + DATA_SEED_OFFSET, device, cfg.train.amp)
                        for L in args.lengths])
        print(df.groupby("seq_len").right.mean().round(3).to_frame("accuracy").T.to_string())
        gap_bins = [0, 16, 64, 256, 1024, 4096]
        df["gap_bin"] = pd.cut(df.gap, gap_bins, right=True)
        print("accuracy by gap (query - first trigger), rows = eval length:")
        print(df.pivot_table(index="seq_len", columns="gap_bin", values="right", aggfunc="mean", observed=True)
              .round(3).to_string())
        df["pos_bin"] = pd.cut(df.trigger_pos, [-1, 3, 16, 64, 256, 1024, 4096], right=True)
        print("accuracy by first-trigger position from the start, rows = eval length:")
        print(df.pivot_table(index="seq_len", columns="pos_bin", values="right", aggfunc="mean", observed=True)
              .round(3).to_string(), flush=True)


if __name__ == "__main__":
    main()
