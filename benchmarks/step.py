"""Milliseconds per full training step (sampling + augmentation + updates) and images/s.

    python benchmarks/step.py [--model wrn28_2] [--batch-size 64] [--mu 7] [--amp auto]
                              [--method smpl] [--compile off] [--repeats 30] [--device auto]

Data is synthetic but shaped like the model's dataset and already on the device, as in a
trial. Prints a table and a final JSON line; medians over `--repeats` timed steps.
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import base_config, device_name, median, synthetic_splits, time_ms

from smpl_core.loop import _autocast, _Run, resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wrn28_2", choices=["wrn28_2", "cnn", "mlp"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mu", type=int, default=7)
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--method", default="smpl", choices=["smpl", "mpl", "supervised"])
    ap.add_argument("--compile", default="off", choices=["off", "on", "auto"])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    cfg = base_config(args)
    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    n = max(4096, cfg.batch_size * (cfg.mu + 1) * 2)
    import smpl_core.loop as loop

    loop.load_splits = lambda c, d: synthetic_splits(args.model, n, d)  # no dataset on disk
    run = _Run(cfg, device)
    autocast = _autocast(cfg, device)
    step_ms = time_ms(lambda: run.train_step(autocast), device, args.repeats, args.warmup)
    sample_ms = time_ms(run.sampler.next, device, args.repeats, args.warmup)
    step, sample = median(step_ms), median(sample_ms)
    images = run.images_per_step()
    row = {"device": device_name(device), "model": args.model, "method": args.method,
           "batch_size": cfg.batch_size, "mu": cfg.mu, "amp": cfg.amp, "compile": cfg.compile,
           "step_ms": round(step, 3), "images_per_s": round(images / step * 1000, 1),
           "sample_augment_ms": round(sample, 3), "augment_share": round(sample / step, 4),
           "repeats": args.repeats}
    print(f"device: {row['device']}")
    print("| model | method | B | mu | amp | step ms | images/s | sample+augment ms | share |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.method} | {cfg.batch_size} | {cfg.mu} | {cfg.amp} | "
          f"{step:.2f} | {row['images_per_s']:,.0f} | {sample:.2f} | {sample / step:.1%} |")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
