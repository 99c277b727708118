"""Test accuracy of smpl, supervised and mpl with the same labels and budget, over seeds.

    python benchmarks/accuracy.py [--dataset digits] [--num-labeled 50] [--seeds 5]
                                  [--set key=value ...]

Prints a table (mean +- std of test accuracy, mean seconds per run) and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smpl_core.config import SMPLConfig, parse_set  # noqa: E402
from smpl_core.loop import fit, test_accuracy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--num-labeled", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default="smpl,supervised,mpl")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = ap.parse_args()
    base = SMPLConfig.from_dict({"dataset": args.dataset, "num_labeled": args.num_labeled,
                                 **parse_set(args.set)})
    rows = {}
    for method in args.methods.split(","):
        accs, secs = [], []
        for seed in range(base.seed, base.seed + args.seeds):
            t0 = time.perf_counter()
            result = fit(base.replace(method=method, seed=seed))
            secs.append(time.perf_counter() - t0)
            accs.append(test_accuracy(result))
            print(f"{method:<10} seed {seed}: test {accs[-1]:.4f} ({secs[-1]:.1f} s)",
                  file=sys.stderr, flush=True)
        rows[method] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs),
                        "seconds": statistics.fmean(secs), "runs": accs}
    print(f"\n{args.dataset}, {base.num_labeled} labels, {base.steps} steps, "
          f"{args.seeds} seeds (test accuracy)")
    print("| method | test accuracy (mean +- std) | seconds per run |")
    print("|---|---|---|")
    for m, r in rows.items():
        print(f"| {m} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} | {r['seconds']:.1f} |")
    print(json.dumps({"dataset": args.dataset, "num_labeled": base.num_labeled,
                      "steps": base.steps, "seeds": args.seeds, "results": rows}))


if __name__ == "__main__":
    main()
