"""Search efficiency: does TPE (+ ASHA) find better SMPL configs than random search for the
same compute?

    python benchmarks/search.py [--seeds 5] [--trials 12] [--val-sizes 50,200]
                                [--arms random,random+asha,tpe,tpe+asha] [--retrain-seeds 3]
                                [--set key=value ...] [--out DIR] [--quick]
    python benchmarks/search.py --report DIR/results.jsonl      # table + figure again

Every sweep is a real `tune-smpl tune` (called in-process, on one Ray started here) on
digits with 50 labels and a short trial. Arms: `random` and `tpe` samplers, each with ASHA
off (`--grace-period` = the number of reports: no trial is stopped) and on (grace period 1,
reduction factor 2). Sweep seed k seeds the sampler and the config (`seed=k`: the labelled
split and the initialisation), so the arms of one seed are paired on the same data.

For each sweep: the best `val_accuracy` found after each trial (in the order the trials
were asked) and against trial CPU-seconds (the sum of the trials' own run times, in the
order they ended: a stopped trial costs less), then its exported best config retrained over
`--retrain-seeds` seeds with `tune-smpl train --eval-test` (test accuracy: the sweep never
sees the test split). One JSON line per sweep goes to DIR/results.jsonl as it finishes; the
table is printed and the figure (best-so-far val_accuracy vs CPU-seconds, median over seeds,
interquartile spread shaded) written to DIR/search.png at the end.
`--quick` is a CI-sized run (one seed, 3 trials, 2 arms, tiny trials) that checks the
script, not the science. A study stopped part-way resumes with the same `--out`: finished
sweeps are skipped, a half-run one is started again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = {  # arm -> (sampler, ASHA on)
    "random": ("random", False),
    "random+asha": ("random", True),
    "tpe": ("tpe", False),
    "tpe+asha": ("tpe", True),
}
# One trial is a few seconds of one core: 100 steps of the digits CNN, 5 reports.
TRIAL = {"dataset": "digits", "num_labeled": 50, "steps": 100, "eval_every": 20,
         "batch_size": 16, "mu": 2}
QUICK_TRIAL = {"steps": 20, "eval_every": 10, "batch_size": 8, "mu": 2}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="sweep seeds 0..N-1 (default 5)")
    p.add_argument("--trials", type=int, default=12, help="trials per sweep (default 12)")
    p.add_argument("--val-sizes", default="50,200")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--retrain-seeds", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=2, help="trials in flight (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the trial config")
    p.add_argument("--out", default=None, help="folder of results.jsonl and search.png")
    p.add_argument("--report", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.retrain_seeds = 1, 3, 1
        args.val_sizes, args.arms = "50", "random,tpe+asha"
    args.val_sizes = [int(v) for v in args.val_sizes.split(",")]
    args.arms = args.arms.split(",")
    for a in args.arms:
        if a not in ARMS:
            p.error(f"`--arms` must name arms of {', '.join(ARMS)}, but got {a!r}.")
    return args


# --- one sweep ------------------------------------------------------------------------
def trial_config(args, val_size: int, seed: int) -> dict[str, str]:
    cfg = {**TRIAL, **(QUICK_TRIAL if args.quick else {}), "val_size": val_size, "seed": seed}
    cfg.update(s.split("=", 1) for s in args.set)
    return {k: str(v) for k, v in cfg.items()}


def reports_per_trial(cfg: dict) -> int:
    from trainables import evaluation_at

    return evaluation_at(int(cfg["steps"]), int(cfg["eval_every"]))


def cli(argv: list[str]) -> tuple[int, str]:
    """`tune-smpl ARGV` in this process; (exit code, stdout)."""
    from tune_smpl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def run_sweep(args, storage: Path, arm: str, val_size: int, seed: int) -> dict:
    sampler, asha = ARMS[arm]
    cfg = trial_config(args, val_size, seed)
    reports = reports_per_trial(cfg)
    name = f"v{val_size}-{arm.replace('+', '-')}-s{seed}"
    shutil.rmtree(storage / name, ignore_errors=True)  # a half-run sweep of a stopped study
    argv = ["tune", "--name", name, "--storage-path", str(storage),
            "--tracking-uri", f"sqlite:///{storage}/mlflow.db", "--num-samples",
            str(args.trials), "--sampler", sampler, "--seed", str(seed), "--max-concurrent",
            str(args.concurrent), "--grace-period", "1" if asha else str(reports),
            "--reduction-factor", "2", "--gpus-per-trial", "0"]
    for k, v in cfg.items():
        argv += ["--set", f"{k}={v}"]
    t0 = time.time()
    code, out = cli(argv)
    wall = time.time() - t0
    if code != 0:
        raise RuntimeError(f"sweep {name} exited {code}:\n{out[-3000:]}")
    row = {"name": name, "arm": arm, "val_size": val_size, "seed": seed,
           "wall_s": round(wall, 1), "proposals": next(
               (ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("proposals:")),
               "")}
    row.update(sweep_row(storage, name))
    row.update(retrain(args, storage, name))
    return row


def sweep_row(storage: Path, name: str) -> dict:
    """What a sweep's record says: per trial in ask order and in end order."""
    from tune_smpl.sweep import outcome as O
    from tune_smpl.sweep.record import open_sweep

    trials = open_sweep(str(storage), name).trials()
    by_number = sorted(trials, key=lambda t: t.number)
    by_end = sorted(trials, key=lambda t: t.ended_at or 0.0)
    return {"outcomes": [t.outcome for t in by_number],
            "proposed_by": [t.proposed_by for t in by_number],
            "val_by_trial": [_score(t, O) for t in by_number],
            "seconds_by_end": [round(t.seconds, 3) for t in by_end],
            # steps trained: the compute of a trial that no machine load changes
            "steps_by_end": [int(t.last.get("step", 0) or 0) for t in by_end],
            "val_by_end": [_score(t, O) for t in by_end]}


def _score(t, outcome) -> float | None:
    if t.outcome in outcome.SCORED and t.reports:
        return outcome.score(t.reports)[0]
    return None


def retrain(args, storage: Path, name: str) -> dict:
    best = storage / f"{name}-best.yaml"
    code, out = cli(["export", name, "--storage-path", str(storage), "-o", str(best)])
    if code != 0:
        return {"test_accuracy": None, "retrain_error": out[-500:]}
    code, out = cli(["train", "--config", str(best), "--eval-test", "--seeds",
                     str(args.retrain_seeds), "--json"])
    summary = json.loads(out.strip().splitlines()[-1])
    return {"test_accuracy": summary.get("test_accuracy_mean"),
            "test_accuracies": [r.get("test_accuracy") for r in summary["runs"]],
            "retrain_val_accuracy": summary.get("val_accuracy_mean")}


# --- what the sweeps found ------------------------------------------------------------
def best_so_far(values: list[float | None]) -> list[float]:
    out, top = [], 0.0
    for v in values:
        top = max(top, v if v is not None else 0.0)
        out.append(top)
    return out


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def _mean_sd(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.4f} +- {sd:.4f}"


def checkpoints(n: int) -> list[int]:
    return sorted({k for k in (2, 4, 8, 12, 16, 24, 32) if k <= n} | {n})


def table(rows: list[dict]) -> str:
    n = min(len(r["val_by_trial"]) for r in rows)
    ks = checkpoints(n)
    head = (["val_size", "arm", "sweeps"] + [f"best@{k}" for k in ks]
            + ["2nd-half mean", "CPU-s", "best@CPU-s", "steps", "best@steps", "stopped",
               "TPE-proposed", "test acc (retrained)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for vs in sorted({r["val_size"] for r in rows}):
        group = [r for r in rows if r["val_size"] == vs]
        # an equal compute budget: the least any arm of this val_size spent (median)
        spend = {a: _median([sum(r["seconds_by_end"]) for r in group if r["arm"] == a])
                 for a in {r["arm"] for r in group}}
        budget = min(spend.values())
        steps = {a: _median([sum(r.get("steps_by_end", [])) for r in group if r["arm"] == a])
                 for a in spend}
        step_budget = min(steps.values())
        for arm in [a for a in ARMS if a in spend]:
            rs = [r for r in group if r["arm"] == arm]
            cells = [str(vs), arm, str(len(rs))]
            cells += [f"{_median([best_so_far(r['val_by_trial'])[k - 1] for r in rs]):.4f}"
                      for k in ks]
            stopped = [sum(o == "early_stopped" for o in r["outcomes"]) for r in rs]
            by_model = [sum(p not in ("random", "enqueued") for p in r["proposed_by"])
                        for r in rs]
            at_steps = [value_at(r, step_budget, "steps_by_end") for r in rs
                        if "steps_by_end" in r]
            # the quality of the proposals themselves: at the default budget TPE proposes
            # the second half of a sweep (the first is its random start-up)
            late = [statistics.fmean(v or 0.0 for v in r["val_by_trial"][n // 2:n]) for r in rs]
            cells += [f"{_median(late):.4f}", f"{spend[arm]:.0f}",
                      f"{_median([value_at(r, budget) for r in rs]):.4f}",
                      f"{steps[arm]:.0f}", f"{_median(at_steps):.4f}", f"{_median(stopped):g}",
                      f"{_median(by_model):g}",
                      _mean_sd([r.get("test_accuracy") for r in rs])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nbest@k: median over sweep seeds of the best val_accuracy "
                               "after k trials; 2nd-half mean: median over seeds of the mean "
                               "val_accuracy of the second half of the trials (TPE's "
                               "proposals); best@CPU-s (best@steps): at the smallest arm's "
                               "median trial CPU-seconds (steps trained) of its val_size; stopped:"
                               " trials ASHA stopped early; test acc: mean +- sd over sweeps "
                               "of the exported best retrained over seeds.")


def value_at(row: dict, budget: float, cost: str = "seconds_by_end") -> float:
    """Best val_accuracy found once `budget` was spent (trials that ended by then), in trial
    CPU-seconds or (cost="steps_by_end") steps trained."""
    spent, top = 0.0, 0.0
    for s, v in zip(row[cost], row["val_by_end"], strict=True):
        spent += s
        if spent > budget + 1e-9:
            break
        top = max(top, v or 0.0)
    return top


def tpe_vs_random(rows: list[dict]) -> list[str]:
    """Per val_size: after how many trials TPE's median best-so-far beats random's for good,
    and in how many paired seeds TPE is ahead at the end."""
    out = []
    for vs in sorted({r["val_size"] for r in rows}):
        for tpe, rnd in (("tpe", "random"), ("tpe+asha", "random+asha")):
            ra = {r["seed"]: r["val_by_trial"] for r in rows
                  if r["val_size"] == vs and r["arm"] == tpe}
            rb = {r["seed"]: r["val_by_trial"] for r in rows
                  if r["val_size"] == vs and r["arm"] == rnd}
            a = {s: best_so_far(v) for s, v in ra.items()}
            b = {s: best_so_far(v) for s, v in rb.items()}
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            n = min(min(len(a[s]), len(b[s])) for s in seeds)
            ahead = [_median([a[s][k] for s in seeds]) > _median([b[s][k] for s in seeds])
                     for k in range(n)]
            first = next((k + 1 for k in range(n) if all(ahead[k:])), None)
            wins = sum(a[s][n - 1] > b[s][n - 1] for s in seeds)
            ties = sum(a[s][n - 1] == b[s][n - 1] for s in seeds)
            when = f"from trial {first} on" if first else f"not within {n} trials"
            late = [statistics.fmean(v or 0.0 for v in ra[s][n // 2:n]) - statistics.fmean(
                v or 0.0 for v in rb[s][n // 2:n]) for s in seeds]
            out.append(f"val_size {vs}: {tpe} median best ahead of {rnd} {when}; after {n} "
                       f"trials ahead in {wins}/{len(seeds)} paired seeds ({ties} tied); "
                       f"second-half trials' mean val_accuracy {tpe} minus {rnd}: "
                       f"{' '.join(f'{d:+.3f}' for d in late)} (per seed)")
    return out


def figure(rows: list[dict], path: Path) -> None:
    """Top: against trial CPU-seconds (what the issue asks; noisy on a shared machine).
    Bottom: against steps trained (the same compute, untouched by machine load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = sorted({r["val_size"] for r in rows})
    costs = [("seconds_by_end", "trial CPU-seconds")]
    if all("steps_by_end" in r for r in rows):
        costs.append(("steps_by_end", "steps trained (all trials)"))
    fig, axes = plt.subplots(len(costs), len(sizes), figsize=(6 * len(sizes), 4 * len(costs)),
                             squeeze=False)
    for i, (cost, label) in enumerate(costs):
        for ax, vs in zip(axes[i], sizes, strict=True):
            group = [r for r in rows if r["val_size"] == vs]
            grid = np.linspace(0, max(sum(r[cost]) for r in group), 200)
            for arm in [a for a in ARMS if any(r["arm"] == a for r in group)]:
                rs = [r for r in group if r["arm"] == arm]
                g = grid[grid <= statistics.median(sum(r[cost]) for r in rs)]
                curves = np.array([[value_at(r, x, cost) for x in g] for r in rs])
                line, = ax.plot(g, np.median(curves, axis=0), label=f"{arm} ({len(rs)} seeds)")
                ax.fill_between(g, np.percentile(curves, 25, axis=0),
                                np.percentile(curves, 75, axis=0), color=line.get_color(),
                                alpha=0.2)
            ax.set(title=f"digits, 50 labels, val_size={vs}", xlabel=label,
                   ylabel="best val_accuracy so far")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
    fig.suptitle("best val_accuracy so far: median over sweep seeds, IQR shaded", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def paired(rows: list[dict]) -> list[dict]:
    """The sweeps of the seeds that ran every arm of their val_size (a study stopped by its
    budget leaves a seed part-run: its arms would not be compared on the same data)."""
    arms = {vs: {r["arm"] for r in rows if r["val_size"] == vs} for vs in
            {r["val_size"] for r in rows}}
    done = {(r["val_size"], r["seed"]) for r in rows
            if {q["arm"] for q in rows if (q["val_size"], q["seed"]) == (r["val_size"], r["seed"])}
            == arms[r["val_size"]]}
    return [r for r in rows if (r["val_size"], r["seed"]) in done]


def report(rows: list[dict], out: Path | None) -> None:
    kept = paired(rows)
    if len(kept) < len(rows):
        print(f"left out {len(rows) - len(kept)} sweep(s) of seeds that did not run every "
              f"arm: {', '.join(r['name'] for r in rows if r not in kept)}\n")
    rows = kept
    print(table(rows))
    print()
    for line in tpe_vs_random(rows):
        print(line)
    if out is not None:
        figure(rows, out / "search.png")
        print(f"figure: {out / 'search.png'}")


# --- main -----------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        rows = [json.loads(ln) for ln in Path(args.report).read_text().splitlines() if ln]
        storage = Path(args.report).parent / "sweeps"
        for r in rows:  # rows of an older version of this script lack newer fields
            if (storage / r["name"] / "sweep.json").exists():
                r.update(sweep_row(storage, r["name"]))
        report(rows, Path(args.report).parent)
        return 0
    import optuna
    import ray

    from tune_smpl.sweep.cluster import connect

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="smpl_search_"))
    out.mkdir(parents=True, exist_ok=True)
    storage = out / "sweeps"
    results = out / "results.jsonl"
    done = {json.loads(ln)["name"] for ln in results.read_text().splitlines() if ln} if (
        results.exists()) else set()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # One Ray for every sweep: tune_smpl joins an initialised Ray instead of starting one.
    os.environ.setdefault("TUNE_SMPL_RAY_TMP", os.path.join(tempfile.gettempdir(),
                                                            f"ray_search_{os.getpid()}"))
    connect(None, num_cpus=args.concurrent, num_gpus=0)
    t0 = time.time()
    try:
        # Seeds outermost: a study cut short still has every arm for the seeds it reached.
        for seed in range(args.seeds):
            for vs in args.val_sizes:
                for arm in args.arms:
                    name = f"v{vs}-{arm.replace('+', '-')}-s{seed}"
                    if name in done:
                        continue
                    row = run_sweep(args, storage, arm, vs, seed)
                    with results.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    best = max(best_so_far(row["val_by_trial"]))
                    print(f"[{time.time() - t0:6.0f} s] {row['name']}: best val_accuracy "
                          f"{best:.4f}, {sum(row['seconds_by_end']):.0f} CPU-s, test "
                          f"{row['test_accuracy']}, proposals: {row['proposals']}",
                          file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    rows = [json.loads(ln) for ln in results.read_text().splitlines() if ln]
    print(f"\n{len(rows)} sweeps of {args.trials} trials in {time.time() - t0:.0f} s "
          f"(results: {results})\n")
    report(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
