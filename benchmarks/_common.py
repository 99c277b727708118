"""Shared set-up for the speed and memory benchmarks: a run on synthetic data of the right
shape, on the current device, and timing with device synchronisation."""

from __future__ import annotations

import statistics
import time

import torch

from smpl_core.config import SMPLConfig
from smpl_core.data import Splits

SHAPES = {"wrn28_2": (3, 32, 32), "cnn": (1, 8, 8), "mlp": (2,)}


def synthetic_splits(model: str, n: int, device: torch.device, classes: int = 10) -> Splits:
    """Random uint8 images (vectors for mlp) standing in for a dataset already on the device."""
    shape = SHAPES[model]
    g = torch.Generator().manual_seed(0)
    if len(shape) == 3:
        x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
        mean = torch.full((1, shape[0], 1, 1), 0.5)
        std = torch.full((1, shape[0], 1, 1), 0.25)
    else:
        x = torch.randn(n, *shape, generator=g)
        mean = std = torch.zeros(1)
    y = torch.randint(0, classes, (n,), generator=g)
    t = [v.to(device) for v in (x, y, mean, std)]
    x, y, mean, std = t
    return Splits(x, y, x, y, x[:256], y[:256], x[:256], y[:256], classes, len(shape) == 3,
                  mean, std)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def base_config(args) -> SMPLConfig:
    return SMPLConfig(method=args.method, model=args.model, batch_size=args.batch_size,
                      mu=args.mu, amp=args.amp, compile=args.compile, steps=10**6,
                      eval_every=10**6, device=args.device, dataset="moons"
                      if args.model == "mlp" else "cifar10")
