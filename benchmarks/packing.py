"""Aggregate images/s of concurrent trials at 1 x 1.0, 2 x 0.5 and 4 x 0.25 GPUs per trial.

    python benchmarks/packing.py [--set key=value ...] [--cpus-per-trial C] [--steps N]

Each layout is one `tune-smpl tune` sweep of identical trials (only the seed differs) on a
local Ray. Aggregate images/s = all images the trials processed / wall time from the first
trial's start to the last one's end, both measured by the trials themselves. On a machine
without CUDA it declares one logical GPU: the trials run on the CPU, and the figure that
means something is the concurrency Ray achieved.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

from tune_smpl.cli import main as cli

LAYOUTS = [(1, 1.0), (2, 0.5), (4, 0.25)]


def measure(root: Path, trials: int, share: float, args) -> dict:
    name = f"pack{trials}"
    space = root / "space.yaml"
    space.write_text(f"seed: {{type: categorical, choices: {list(range(trials))}}}\n")
    sets = [f"steps={args.steps}", f"eval_every={args.steps}", *(args.set or [])]
    argv = ["tune", "--name", name, "--storage-path", str(root / "runs"), "--space", str(space),
            "--num-samples", str(trials), "--gpus-per-trial", str(share),
            "--cpus-per-trial", str(args.cpus_per_trial), "--grace-period", "1000",
            "--tracking-uri", f"sqlite:///{root}/mlflow.db"]
    if not torch.cuda.is_available():
        argv += ["--num-gpus", "1", "--num-cpus", str(max(2, int(trials * args.cpus_per_trial)))]
    for s in sets:
        argv += ["--set", s]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"sweep {name} failed with status {rc}")
    spans, images = [], 0.0
    for d in sorted((root / "runs" / name).glob("trial_*")):
        rows = json.loads((d / "trial.json").read_text())["reports"]  # the sweep's record
        spans.append((rows[0]["started_at"], rows[-1]["reported_at"]))
        run_s = rows[-1]["reported_at"] - rows[0]["started_at"]
        images += rows[-1]["images_per_s"] * run_s  # images of the last (only) window
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = overlap = 0
    for _, d in events:
        now += d
        overlap = max(overlap, now)
    return {"trials": trials, "gpus_per_trial": share, "aggregate_images_per_s": images / wall,
            "max_concurrent": overlap, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="trial config (default: digits CNN)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--cpus-per-trial", type=float, default=0.5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for trials, share in LAYOUTS:
            rows.append(measure(Path(tmp), trials, share, args))
            print(f"{trials} x {share:g}: {rows[-1]['aggregate_images_per_s']:,.0f} images/s, "
                  f"{rows[-1]['max_concurrent']} concurrent", file=sys.stderr, flush=True)
    base = rows[0]["aggregate_images_per_s"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU, logical GPU"
    print(f"device: {device}")
    print("| layout | concurrent trials | aggregate images/s | vs 1 x 1.0 |")
    print("|---|---|---|---|")
    for r in rows:
        r["speedup"] = r["aggregate_images_per_s"] / base
        print(f"| {r['trials']} x {r['gpus_per_trial']:g} GPU | {r['max_concurrent']} | "
              f"{r['aggregate_images_per_s']:,.0f} | {r['speedup']:.2f}x |")
    print(json.dumps({"device": device, "layouts": rows}))


if __name__ == "__main__":
    main()
