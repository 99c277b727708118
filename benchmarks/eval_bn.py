"""Cost of one evaluation with precise BatchNorm statistics (`eval_bn=precise`) against
the running statistics (`eval_bn=running`), in milliseconds and in training steps.

    python benchmarks/eval_bn.py [--model wrn28_2] [--batch-size 64] [--mu 7]
                                 [--eval-bn-batches 10] [--val-size 200] [--repeats 5]

Synthetic data of the model's shape, already on the device, as in a trial. "prepare" is
loading the evaluated weights into the eval copy plus, for precise, the forward passes
over `eval_bn_batches` training-sized batches; "evaluate" is the validation pass. Prints a
table and a final JSON line; medians over `--repeats`.
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import base_config, device_name, median, synthetic_splits, time_ms

import smpl_core.loop as loop
from smpl_core.evaluation import evaluate
from smpl_core.loop import _autocast, _Run, resolve_device


def _time_eval(args, mode: str, device: torch.device):
    """(prepare ms, evaluate ms, the run, its autocast) for one `eval_bn` mode."""
    cfg = base_config(args).replace(eval_bn=mode, eval_bn_batches=args.eval_bn_batches)
    run = _Run(cfg, device)
    autocast = _autocast(cfg, device)
    x_val, y_val = run.splits.x_test[:args.val_size], run.splits.y_test[:args.val_size]
    prep = median(time_ms(lambda: run.prepare_eval(autocast), device, args.repeats, 1))
    ev = median(time_ms(lambda: evaluate(run.eval_model, run.splits, x_val, y_val),
                        device, args.repeats, 1))
    return prep, ev, run, autocast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wrn28_2", choices=["wrn28_2", "cnn"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mu", type=int, default=7)
    ap.add_argument("--eval-bn-batches", type=int, default=10)
    ap.add_argument("--val-size", type=int, default=200)
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    args.method, args.compile = "smpl", "off"

    device = resolve_device(args.device)
    torch.manual_seed(0)
    per_batch = args.batch_size * (1 + 2 * args.mu)
    n = max(4096, per_batch * args.eval_bn_batches)  # the pool holds every batch
    loop.load_splits = lambda c, d: synthetic_splits(args.model, n, d)  # no dataset on disk
    row = {"device": device_name(device), "model": args.model, "batch_size": args.batch_size,
           "mu": args.mu, "eval_bn_batches": args.eval_bn_batches, "val_size": args.val_size}
    for mode in ("running", "precise"):
        prep, ev, run, autocast = _time_eval(args, mode, device)
        row[f"{mode}_prepare_ms"], row[f"{mode}_evaluate_ms"] = round(prep, 2), round(ev, 2)
    step = median(time_ms(lambda: run.train_step(autocast), device, args.repeats, 2))
    extra = row["precise_prepare_ms"] - row["running_prepare_ms"]
    row.update({"step_ms": round(step, 2), "precise_extra_ms": round(extra, 2),
                "precise_extra_steps": round(extra / step, 2)})
    print(f"device: {row['device']}")
    print("| model | B | mu | batches | eval_bn | prepare ms | evaluate ms |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("running", "precise"):
        print(f"| {args.model} | {args.batch_size} | {args.mu} | {args.eval_bn_batches} | "
              f"{mode} | {row[f'{mode}_prepare_ms']:.1f} | {row[f'{mode}_evaluate_ms']:.1f} |")
    print(f"precise BN adds {extra:.1f} ms per evaluation = {extra / step:.2f} SMPL steps "
          f"({step:.1f} ms each)")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
