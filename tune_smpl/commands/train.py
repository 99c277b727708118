"""`tune-smpl train`: train one config (optionally over several seeds) and print its metrics."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smpl_core.config import SMPLConfig, load_yaml, parse_set
from smpl_core.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one config and print its accuracy")
    p.add_argument("--config", help="flat YAML of SMPLConfig fields (an exported best config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    p.add_argument("--eval-test", action="store_true", help="report accuracy on the test split")
    p.add_argument("--seeds", type=int, default=1, help="train seeds seed, seed+1, ... (default 1)")
    p.add_argument("--save", metavar="PATH", help="save the final model and config (torch.save)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON summary")
    p.set_defaults(func=run)


def build_config(config_path: str | None, sets: list[str] | Mapping[str, Any] | None
                 ) -> tuple[SMPLConfig, frozenset[str]]:
    """The config of `--config` and `--set` (KEY=VALUE texts, or a mapping of values), and
    the fields they give (a sweep does not search a field the user fixed)."""
    base = load_yaml(config_path) if config_path else {}
    base.pop("_export", None)  # metadata of `tune-smpl export --format json`
    given = {**base, **(dict(sets) if isinstance(sets, Mapping) else parse_set(sets))}
    return SMPLConfig.from_dict(given), frozenset(given)


def _progress(seed: int, steps: int):
    def report(m: dict, _state) -> None:
        if m.get("diverged"):
            print(f"[seed {seed}] diverged: non-finite loss at step {m['step']}", file=sys.stderr)
            return
        print(f"[seed {seed}] step {m['step']:>6}/{steps}  val_accuracy {m['val_accuracy']:.4f}  "
              f"val_loss {m['val_loss']:.4f}  mask {m.get('train/mask_ratio', 0):.2f}  "
              f"{m['images_per_s']:,.0f} img/s", file=sys.stderr, flush=True)
    return report


def run(args: argparse.Namespace) -> int:
    from smpl_core.loop import fit, test_accuracy

    cfg, _ = build_config(args.config, args.set)
    if args.seeds < 1:
        raise ConfigError(f"`--seeds` must be >= 1, but got --seeds={args.seeds}.")
    runs = []
    for i in range(args.seeds):
        c = cfg.replace(seed=cfg.seed + i)
        t0 = time.perf_counter()
        result = fit(c, report=_progress(c.seed, c.steps))
        row = {"seed": c.seed, "val_accuracy": result.metrics.get("val_accuracy"),
               "seconds": round(time.perf_counter() - t0, 2),
               "diverged": bool(result.metrics.get("diverged", False)),
               # every figure of the last report (losses, feedback diagnostics, speed)
               "final": {k: v for k, v in result.metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}}
        if args.eval_test:
            row["test_accuracy"] = test_accuracy(result)
        runs.append(row)
        if args.save:
            path = args.save if args.seeds == 1 else f"{args.save}.seed{c.seed}"
            _save(result.model, c, row, path)
    summary = _summary(runs, args.eval_test)
    for r in runs:
        line = f"seed {r['seed']}: val_accuracy {r['val_accuracy']:.4f}"
        if "test_accuracy" in r:
            line += f"  test_accuracy {r['test_accuracy']:.4f}"
        print(line + f"  ({r['seconds']:.1f} s{', DIVERGED' if r['diverged'] else ''})")
    if args.seeds > 1:
        print(f"mean val_accuracy {summary['val_accuracy_mean']:.4f}" + (
            f"  test_accuracy {summary['test_accuracy_mean']:.4f} +- "
            f"{summary['test_accuracy_std']:.4f}" if args.eval_test else ""))
    if args.json:
        print(json.dumps(summary))
    return 1 if any(r["diverged"] for r in runs) else 0


def _summary(runs: list[dict], eval_test: bool) -> dict:
    out: dict = {"runs": runs,
                 "val_accuracy_mean": statistics.fmean(r["val_accuracy"] for r in runs)}
    if eval_test:
        accs = [r["test_accuracy"] for r in runs]
        out["test_accuracy_mean"] = statistics.fmean(accs)
        out["test_accuracy_std"] = statistics.pstdev(accs) if len(accs) > 1 else 0.0
    return out


def _save(model, cfg: SMPLConfig, row: dict, path: str) -> None:
    import torch

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "metrics": row}, path)
    print(f"saved model to {path}", file=sys.stderr)
