"""Ablation study: what the meta term of SMPL adds, with paired seeds and 95% CIs.

    python benchmarks/accuracy.py [--datasets digits,moons] [--seeds 10]
                                  [--configs default,author] [--set key=value ...] [--quick]
                                  [--out results.jsonl]
    python benchmarks/accuracy.py --from results.jsonl [more.jsonl ...]   # tables only

For each dataset (digits with 50 labels, two moons with 6) and each config (the project's
defaults; configs/smpl-author.yaml), every seed trains five rows with the same labelled
split and initialisation (both come from the seed): supervised, uda (UDA alone), smpl with
mpl_weight=0 (first update kept, meta term dropped), smpl, and mpl (teacher + student).
Prints, per dataset and config, the test accuracy (mean +- std over seeds), each row's
paired difference to `uda` with a 95% confidence interval (paired t), the seconds per run,
the paired difference smpl minus smpl mpl_weight=0 (what the meta term adds), and the
feedback statistics of the smpl and mpl runs; a final JSON line holds everything.
`--quick` is a CI-sized run (2 seeds, a few steps) that checks the script, not the science.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy import stats

from smpl_core.config import SMPLConfig, load_yaml, parse_set
from smpl_core.loop import fit, test_accuracy

ROOT = Path(__file__).resolve().parents[1]

ROWS = {  # row name -> config changes
    "supervised": {"method": "supervised"},
    "uda": {"method": "uda"},
    "smpl mpl_weight=0": {"method": "smpl", "mpl_weight": 0.0},
    "smpl": {"method": "smpl"},
    "mpl": {"method": "mpl"},
}
# Budgets chosen so that the whole study (2 datasets x 2 configs x 5 rows x 10 seeds) fits
# in ~40 minutes of a shared 2-core machine: digits at a third of the default's 600 steps
# and half its batch of 32 (mu 7 kept); moons as the moons test of tests/smpl_core (6
# labels cannot fill the default batch of 32).
DATASETS = {
    "digits": {"dataset": "digits", "num_labeled": 50, "steps": 200, "batch_size": 16,
               "eval_every": 100},
    "moons": {"dataset": "moons", "num_labeled": 6, "val_size": 50, "batch_size": 8,
              "steps": 400, "eval_every": 100},
}
CONFIGS = {"default": {}, "author": load_yaml(ROOT / "configs" / "smpl-author.yaml")}
QUICK = {"steps": 10, "eval_every": 5, "batch_size": 8, "mu": 2, "val_size": 50}
DIAG = ("train/feedback_abs", "train/feedback_std", "train/feedback_pos_frac",
        "train/mpl_grad_ratio")


def paired_ci(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% paired-t confidence interval."""
    m = statistics.fmean(diffs)
    if len(diffs) < 2:
        return m, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return m, m - half, m + half


def run_one(cfg: SMPLConfig) -> dict:
    t0 = time.perf_counter()
    result = fit(cfg)
    row = {"test_accuracy": test_accuracy(result), "seconds": time.perf_counter() - t0,
           "diverged": bool(result.metrics.get("diverged", False))}
    hist = [m for m in result.history if "train/feedback_abs" in m]
    if hist:  # h statistics: run means over reports, plus the first and last report's |h|
        for k in DIAG:
            row[k] = statistics.fmean(m[k] for m in hist)
        row["feedback_abs_first"] = hist[0]["train/feedback_abs"]
        row["feedback_abs_last"] = hist[-1]["train/feedback_abs"]
    return row


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    base = [r["test_accuracy"] for r in runs["uda"]] if "uda" in runs else None
    for name, rs in runs.items():
        accs = [r["test_accuracy"] for r in rs]
        s = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs),
             "seconds": statistics.fmean(r["seconds"] for r in rs), "runs": accs}
        if base is not None and name != "uda":
            s["diff_vs_uda"] = paired_ci([a - b for a, b in zip(accs, base)])
        for k in (*DIAG, "feedback_abs_first", "feedback_abs_last"):
            if k in rs[0]:
                s[k] = statistics.fmean(r[k] for r in rs)
        out[name] = s
    if "smpl" in runs and "smpl mpl_weight=0" in runs:  # what the meta term itself adds
        out["smpl"]["meta_term"] = paired_ci(
            [a["test_accuracy"] - b["test_accuracy"]
             for a, b in zip(runs["smpl"], runs["smpl mpl_weight=0"])])
    return out


def print_tables(title: str, summary: dict) -> None:
    print(f"\n{title}")
    print("| row | test accuracy (mean +- std) | minus uda, 95% CI (paired t) | s per run |")
    print("|---|---|---|---|")
    for name, s in summary.items():
        d = s.get("diff_vs_uda")
        diff = (f"{100 * d[0]:+.2f} [{100 * d[1]:+.2f}, {100 * d[2]:+.2f}]" if d else "-")
        print(f"| {name} | {100 * s['mean']:.2f} +- {100 * s['std']:.2f} | {diff} | "
              f"{s['seconds']:.1f} |")
    if "meta_term" in summary.get("smpl", {}):
        m, lo, hi = summary["smpl"]["meta_term"]
        print(f"\nmeta term (smpl minus smpl mpl_weight=0, paired): {100 * m:+.2f} "
              f"[{100 * lo:+.2f}, {100 * hi:+.2f}] points")
    rows = [(n, s) for n, s in summary.items() if "train/feedback_abs" in s]
    if rows:
        print("\n| row | mean abs(h) | abs(h) first / last report | std(h) | h > 0 | "
              "mpl/uda grad norm |")
        print("|---|---|---|---|---|---|")
        for n, s in rows:
            print(f"| {n} | {s['train/feedback_abs']:.2e} | {s['feedback_abs_first']:.2e} / "
                  f"{s['feedback_abs_last']:.2e} | {s['train/feedback_std']:.2e} | "
                  f"{s['train/feedback_pos_frac']:.1%} | {s['train/mpl_grad_ratio']:.2e} |")


def from_files(paths: list[str]) -> dict:
    """The tables of runs saved with --out (one or several files, e.g. parallel parts)."""
    groups: dict[str, dict[str, dict[int, dict]]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            rows = groups.setdefault(f"{r['dataset']}/{r['config']}", {})
            rows.setdefault(r["row"], {})[r["seed"]] = r
    results = {}
    for key, rows in groups.items():
        seeds = sorted(set.intersection(*(set(v) for v in rows.values())))  # paired only
        runs = {name: [rows[name][s] for s in seeds] for name in ROWS if name in rows}
        results[key] = {"seeds": len(seeds), "rows": summarise(runs)}
        print_tables(f"{key}, {len(seeds)} paired seeds (test accuracy, %)",
                     results[key]["rows"])
    print(json.dumps(results))
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,moons")
    ap.add_argument("--configs", default="default,author")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--set", action="append", metavar="KEY=VALUE")
    ap.add_argument("--quick", action="store_true", help="CI-sized: 2 seeds, 10 steps")
    ap.add_argument("--out", help="append every run as one JSON line to this file")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--from", dest="from_files", nargs="+", metavar="JSONL",
                    help="print the tables of runs saved with --out, train nothing")
    args = ap.parse_args(argv)
    if args.from_files:
        return from_files(args.from_files)
    torch.set_num_threads(args.threads)
    seeds = 2 if args.quick else args.seeds
    extra = {**(QUICK if args.quick else {}), "device": "cpu", **parse_set(args.set)}
    results = {}
    for ds in args.datasets.split(","):
        for cname in args.configs.split(","):
            base = {**CONFIGS[cname], **DATASETS[ds], **extra}
            runs: dict[str, list[dict]] = {r: [] for r in args.rows.split(",")}
            for seed in range(seeds):  # paired: every row of a seed shares split and init
                for row in runs:
                    cfg = SMPLConfig.from_dict({**base, **ROWS[row], "seed": seed})
                    r = run_one(cfg)
                    runs[row].append(r)
                    print(f"{ds} {cname} {row:<20} seed {seed}: test {r['test_accuracy']:.4f} "
                          f"({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
                    if args.out:
                        with open(args.out, "a") as fh:
                            fh.write(json.dumps({"dataset": ds, "config": cname, "row": row,
                                                 "seed": seed, **r}) + "\n")
            key = f"{ds}/{cname}"
            cfg0 = SMPLConfig.from_dict(base)
            results[key] = {"steps": cfg0.steps, "batch_size": cfg0.batch_size, "mu": cfg0.mu,
                            "num_labeled": cfg0.num_labeled, "seeds": seeds,
                            "rows": summarise(runs)}
            print_tables(f"{ds}, {cfg0.num_labeled} labels, {cname} config, {cfg0.steps} steps, "
                         f"B={cfg0.batch_size}, mu={cfg0.mu}, {seeds} paired seeds "
                         "(test accuracy, %)", results[key]["rows"])
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
