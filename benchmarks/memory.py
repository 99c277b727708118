"""Peak memory of one SMPL step against one MPL (teacher + student) step, same batch.

    python benchmarks/memory.py [--model wrn28_2] [--batch-size 64] [--mu 7] [--amp auto]

On CUDA: peak allocated memory over a training step (torch.cuda.max_memory_allocated),
after warm-up. Without CUDA: the same comparison in bytes that the step keeps alive on the
CPU, measured as parameters + gradients + optimiser state + the peak of tensors saved for
backward (autograd's saved-tensor hooks): the part of GPU memory that SMPL saves on.
Prints a table and a final JSON line with the ratio SMPL / MPL.
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import base_config, device_name, synthetic_splits

import smpl_core.loop as loop
from smpl_core.loop import _autocast, _Run, resolve_device


class SavedTensors:
    """Tracks the bytes held by autograd for backward (a CPU stand-in for activations)."""

    def __init__(self):
        self.live, self.peak = 0, 0

    def pack(self, t: torch.Tensor):
        n = t.numel() * t.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        return t, n

    def unpack(self, packed):
        return packed[0]


def _state_bytes(run: _Run) -> int:
    total = 0
    for m in run.models.values():
        total += sum(p.numel() * p.element_size() * 2 for p in m.parameters())  # + grads
    for o in run.optimizers.values():
        for s in o.state.values():
            total += sum(v.numel() * v.element_size() for v in s.values()
                         if isinstance(v, torch.Tensor))
    return total


def peak_bytes(method: str, args, device: torch.device) -> int:
    cfg = base_config(argparse.Namespace(**{**vars(args), "method": method}))
    run = _Run(cfg, device)
    autocast = _autocast(cfg, device)
    for _ in range(2):  # warm-up: optimiser state exists, allocator settled
        run.train_step(autocast)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run.train_step(autocast)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    saved = SavedTensors()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        run.train_step(autocast)
    return saved.peak + _state_bytes(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wrn28_2", choices=["wrn28_2", "cnn", "mlp"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mu", type=int, default=7)
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--compile", default="off", choices=["off", "on", "auto"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    n = max(4096, args.batch_size * (args.mu + 1) * 2)
    loop.load_splits = lambda c, d: synthetic_splits(args.model, n, d)
    torch.manual_seed(0)
    smpl, mpl = peak_bytes("smpl", args, device), peak_bytes("mpl", args, device)
    how = "cuda max_memory_allocated" if device.type == "cuda" else "saved tensors + state (CPU)"
    row = {"device": device_name(device), "measure": how, "model": args.model,
           "batch_size": args.batch_size, "mu": args.mu, "amp": args.amp,
           "smpl_mb": round(smpl / 2**20, 1), "mpl_mb": round(mpl / 2**20, 1),
           "ratio": round(smpl / mpl, 4)}
    print(f"device: {row['device']} ({how})")
    print("| model | B | mu | SMPL MiB | MPL MiB | SMPL / MPL |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.batch_size} | {args.mu} | {row['smpl_mb']} | {row['mpl_mb']} | "
          f"{row['ratio']:.3f} |")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
