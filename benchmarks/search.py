"""Search efficiency: which sampler (+ ASHA, + a warm start) finds better SMPL configs than
random search for the same compute?

    python benchmarks/search.py [--task digits50|spread] [--seeds N] [--trials N]
                                [--val-sizes 50,200] [--arms ARM,...] [--retrain-seeds N]
                                [--set key=value ...] [--out DIR] [--quick]
    python benchmarks/search.py --report DIR/results.jsonl      # table + figure again

Every sweep is a real `tune-smpl tune` (called in-process, on one Ray started here) on
digits. Two tasks (TASKS): `digits50` (50 labels, 100 steps, space `smpl`: most configs
score alike) and `spread` (20 labels, 80 steps, space `smpl-extended`: random configs
spread from chance to the best). Arms (ARMS): a sampler (random, tpe, gp), ASHA off
(`--grace-period` = the number of reports: no trial is stopped) or on (grace period 1,
reduction factor 2), and `+warm`: warm-started (`--warm-start`) from the seed's prior
sweep. Sweep seed k seeds the sampler and the config (`seed=k`: the labelled split and the
initialisation), so the arms of one seed are paired on the same data; its prior sweep is
random search with ASHA off on another labelled split (`seed=k+100`), run first, and is the
earlier sweep a user would warm-start from (its steps are not counted in the warm arms').

For each sweep: the best `val_accuracy` found after each trial (in the order the trials
were asked) and against trial CPU-seconds and steps trained (in the order they ended: a
stopped trial costs less), then (`--retrain-seeds` > 0) its exported best config retrained
with `tune-smpl train --eval-test` (test accuracy: the sweep never sees the test split).
One JSON line per sweep goes to DIR/results.jsonl as it finishes; the table is printed and
the figure written to DIR/search.png (task spread: DIR/search_spread.png, with a histogram
of the random configs) at the end. `--quick` is a CI-sized run (one seed, 3 trials, 2 arms,
tiny trials) that checks the script, not the science. A study stopped part-way resumes with
the same `--out`: finished sweeps are skipped, a half-run one is started again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARMS = {  # arm -> (sampler, ASHA on, warm-started from the seed's prior sweep)
    "random": ("random", False, False),
    "random+asha": ("random", True, False),
    "tpe": ("tpe", False, False),
    "tpe+asha": ("tpe", True, False),
    "gp": ("gp", False, False),
    "gp+asha": ("gp", True, False),
    "tpe+asha+warm": ("tpe", True, True),
    "gp+asha+warm": ("gp", True, True),
}
PRIOR_SEED = 100  # the prior of sweep seed k: seed k + 100 (another labelled split)
# A task: the trial config, the space and the study's defaults.
TASKS = {
    # One trial is a few seconds of one core: 100 steps of the digits CNN, 5 reports.
    "digits50": {"trial": {"dataset": "digits", "num_labeled": 50, "steps": 100,
                           "eval_every": 20, "batch_size": 16, "mu": 2},
                 "space": "smpl", "seeds": 5, "trials": 12, "val_sizes": "50,200",
                 "arms": "random,random+asha,tpe,tpe+asha", "retrain_seeds": 3},
    # Where configs differ (issue 18): 2 labels a class, 80 steps (4 reports), and the wide
    # space (`mu` fixed by the trial config, so steps trained measure compute).
    "spread": {"trial": {"dataset": "digits", "num_labeled": 20, "steps": 80,
                         "eval_every": 20, "batch_size": 16, "mu": 2},
               "space": "smpl-extended", "seeds": 8, "trials": 16, "val_sizes": "200",
               "arms": "random+asha,tpe+asha,gp+asha,tpe+asha+warm,gp+asha+warm,random,gp",
               "retrain_seeds": 0},
}
QUICK_TRIAL = {"steps": 20, "eval_every": 10, "batch_size": 8, "mu": 2}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=TASKS, default="digits50",
                   help="trial config, space and defaults (default digits50)")
    p.add_argument("--seeds", type=int, help="sweep seeds 0..N-1 (default: the task's)")
    p.add_argument("--trials", type=int, help="trials per sweep (default: the task's)")
    p.add_argument("--val-sizes")
    p.add_argument("--arms")
    p.add_argument("--retrain-seeds", type=int, help="0: no retraining")
    p.add_argument("--concurrent", type=int, default=2, help="trials in flight (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the trial config")
    p.add_argument("--out", default=None, help="folder of results.jsonl and search.png")
    p.add_argument("--report", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    args = p.parse_args(argv)
    task = TASKS[args.task]
    for key in ("seeds", "trials", "val_sizes", "arms", "retrain_seeds"):
        if getattr(args, key) is None:
            setattr(args, key, task[key])
    args.trial, args.space = dict(task["trial"]), task["space"]
    if args.quick:
        args.seeds, args.trials, args.retrain_seeds = 1, 3, min(1, args.retrain_seeds)
        args.val_sizes = "50"
        args.arms = "random,tpe+asha" if args.task == "digits50" else "random+asha,tpe+asha+warm"
        args.trial.update(QUICK_TRIAL)
    args.val_sizes = [int(v) for v in str(args.val_sizes).split(",")]
    args.arms = args.arms.split(",")
    for a in args.arms:
        if a not in ARMS:
            p.error(f"`--arms` must name arms of {', '.join(ARMS)}, but got {a!r}.")
    return args


# --- one sweep ------------------------------------------------------------------------
def trial_config(args, val_size: int, seed: int) -> dict[str, str]:
    cfg = {**args.trial, "val_size": val_size, "seed": seed}
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


def sweep_name(arm: str, val_size: int, seed: int) -> str:
    return f"v{val_size}-{arm.replace('+', '-')}-s{seed}"


def run_sweep(args, storage: Path, arm: str, val_size: int, seed: int) -> dict:
    """One sweep of `arm`; arm "prior" is the earlier sweep a warm arm of `seed` starts from:
    random search, ASHA off (every config measured to the end), on another labelled split
    and sampler seed (seed + PRIOR_SEED), of the same space and trial budget."""
    sampler, asha, warm = ARMS.get(arm, ("random", False, False))
    data_seed = seed + PRIOR_SEED if arm == "prior" else seed
    cfg = trial_config(args, val_size, data_seed)
    reports = reports_per_trial(cfg)
    name = sweep_name(arm, val_size, seed)
    shutil.rmtree(storage / name, ignore_errors=True)  # a half-run sweep of a stopped study
    argv = ["tune", "--name", name, "--storage-path", str(storage),
            "--tracking-uri", f"sqlite:///{storage}/mlflow.db", "--num-samples",
            str(args.trials), "--sampler", sampler, "--seed", str(data_seed), "--space",
            args.space, "--max-concurrent", str(args.concurrent), "--grace-period",
            "1" if asha else str(reports), "--reduction-factor", "2", "--gpus-per-trial", "0"]
    if warm:
        argv += ["--warm-start", sweep_name("prior", val_size, seed)]
    for k, v in cfg.items():
        argv += ["--set", f"{k}={v}"]
    t0 = time.time()
    code, out = cli(argv)
    wall = time.time() - t0
    if code != 0:
        raise RuntimeError(f"sweep {name} exited {code}:\n{out[-3000:]}")
    row = {"name": name, "task": args.task, "arm": arm, "val_size": val_size, "seed": seed,
           "data_seed": data_seed, "wall_s": round(wall, 1), "proposals": next(
               (ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("proposals:")),
               "")}
    row.update(sweep_row(storage, name))
    if args.retrain_seeds > 0 and arm != "prior":
        row.update(retrain(args, storage, name))
    return row


def sweep_row(storage: Path, name: str) -> dict:
    """What a sweep's record says: per trial in ask order and in end order."""
    from tune_smpl.sweep.record import open_sweep

    trials = open_sweep(str(storage), name).trials()
    by_number = sorted(trials, key=lambda t: t.number)
    by_end = sorted(trials, key=lambda t: t.ended_at or 0.0)
    return {"outcomes": [t.outcome for t in by_number],
            "proposed_by": [t.proposed_by for t in by_number],
            "val_by_trial": [_score(t) for t in by_number],
            "seconds_by_end": [round(t.seconds, 3) for t in by_end],
            # steps trained: the compute of a trial that no machine load changes
            "steps_by_end": [int(t.last.get("step", 0) or 0) for t in by_end],
            "val_by_end": [_score(t) for t in by_end]}


def _score(t) -> float | None:
    from tune_smpl.sweep.outcome import SCORED, score

    if t.outcome in SCORED and t.reports:
        return score(t.reports)[0]
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
NOT_MODEL = ("random", "enqueued", "prior")  # proposals no sampler model made


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
            by_model = [sum(p not in NOT_MODEL for p in r["proposed_by"]) for r in rs]
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


# --- the samplers study (task spread) ---------------------------------------------------
REFERENCE = "random+asha"  # what every arm is compared with: random search, ASHA on (the default)


def steps_to_reach(row: dict, target: float) -> float:
    """Steps trained (trials in the order they ended) until a trial scored >= target;
    inf if none did."""
    spent = 0
    for s, v in zip(row["steps_by_end"], row["val_by_end"], strict=True):
        spent += s
        if v is not None and v >= target - 1e-9:
            return spent
    return math.inf


def _iqr(xs: list[float]) -> str:
    import numpy as np

    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return f"{q2:.3f} [{q1:.3f}, {q3:.3f}]"


def _ci(diffs: list[float]) -> str:
    from tune_smpl.sweep.finalists import mean_ci  # the Student-t interval of the mean

    m, _, lo, hi = mean_ci([100 * d for d in diffs])
    return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _ratio(xs: list[float]) -> str:
    med = statistics.median(xs)
    return "> 1 (never)" if math.isinf(med) else f"{med:.2f}"


def sampler_table(rows: list[dict], n: int) -> str:
    """Per arm: median best after 2, 4, n/2 and n trials [IQR] over paired seeds; paired
    differences to REFERENCE there (points, mean [95% t-CI]); the steps trained
    to reach REFERENCE's best after n trials, as a ratio to the steps REFERENCE took to reach
    it (and to REFERENCE's steps for all n trials), and the seeds that reached it within n/2
    trials."""
    ref = {r["seed"]: r for r in rows if r["arm"] == REFERENCE}
    target = {s: best_so_far(r["val_by_trial"])[n - 1] for s, r in ref.items()}
    ks = sorted({k for k in (2, 4, n // 2, n) if k <= n})
    head = (["arm", "sweeps"] + [f"best@{k} median [IQR]" for k in ks]
            + [f"minus {REFERENCE} @{k} (points)" for k in ks]
            + ["steps (median)", f"steps to {REFERENCE}'s best@{n} / its", "/ its steps@all",
               f"reached within {n // 2} trials", "stopped", "model-proposed"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in [a for a in ARMS if any(r["arm"] == a for r in rows)]:
        by = {r["seed"]: r for r in rows if r["arm"] == arm and r["seed"] in ref}
        seeds = sorted(by)  # paired: the seeds both this arm and REFERENCE ran
        best = {s: best_so_far(by[s]["val_by_trial"]) for s in seeds}
        ref_best = {s: best_so_far(ref[s]["val_by_trial"]) for s in seeds}
        cells = [arm, str(len(seeds))]
        cells += [_iqr([best[s][k - 1] for s in seeds]) for k in ks]
        cells += ["0" if arm == REFERENCE else _ci([best[s][k - 1] - ref_best[s][k - 1]
                                                    for s in seeds]) for k in ks]
        reach = [steps_to_reach(by[s], target[s]) for s in seeds]
        own = [steps_to_reach(ref[s], target[s]) for s in seeds]
        total = [sum(ref[s]["steps_by_end"]) for s in seeds]
        within = sum(best[s][n // 2 - 1] >= target[s] - 1e-9 for s in seeds)
        stopped = [sum(o == "early_stopped" for o in by[s]["outcomes"]) for s in seeds]
        model = [sum(p not in NOT_MODEL for p in by[s]["proposed_by"]) for s in seeds]
        cells += [f"{statistics.median(sum(by[s]['steps_by_end']) for s in seeds):.0f}",
                  _ratio([x / o for x, o in zip(reach, own, strict=True)]),
                  _ratio([x / t for x, t in zip(reach, total, strict=True)]),
                  f"{within}/{len(seeds)}", f"{statistics.median(stopped):g}",
                  f"{statistics.median(model):g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def random_configs(rows: list[dict]) -> list[float]:
    """The val_accuracy of every random config measured to the end: the prior sweeps'
    trials (random search, ASHA off)."""
    return [v for r in rows if r["arm"] == "prior" for v in r["val_by_trial"] if v is not None]


def histogram_line(values: list[float]) -> str:
    import numpy as np

    q = np.percentile(values, [10, 25, 50, 75, 90])
    return (f"random configs (the prior sweeps' {len(values)} trials, full budget): "
            f"val_accuracy min {min(values):.3f}, 10/25/50/75/90th percentiles "
            + " / ".join(f"{x:.3f}" for x in q) + f", max {max(values):.3f}; "
            f"{sum(v >= 0.5 for v in values)} of {len(values)} at or above 0.5")


def sampler_figure(rows: list[dict], n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    axes[0].hist(random_configs(rows), bins=np.linspace(0, 1, 41), color="grey")
    axes[0].set(title="random configs, full budget (prior sweeps)", xlabel="val_accuracy",
                ylabel="trials")
    trials = np.arange(1, n + 1)
    top = max(sum(r["steps_by_end"]) for r in rows if r["arm"] != "prior")
    grid = np.linspace(0, top, 200)
    for arm in [a for a in ARMS if any(r["arm"] == a for r in rows)]:
        rs = [r for r in rows if r["arm"] == arm]
        curves = np.array([best_so_far(r["val_by_trial"])[:n] for r in rs])
        line, = axes[1].plot(trials, np.median(curves, axis=0), label=f"{arm} ({len(rs)})")
        axes[1].fill_between(trials, *np.percentile(curves, [25, 75], axis=0),
                             color=line.get_color(), alpha=0.12)
        g = grid[grid <= statistics.median(sum(r["steps_by_end"]) for r in rs)]
        by_steps = np.array([[value_at(r, x, "steps_by_end") for x in g] for r in rs])
        axes[2].plot(g, np.median(by_steps, axis=0), color=line.get_color(), label=arm)
        axes[2].fill_between(g, *np.percentile(by_steps, [25, 75], axis=0),
                             color=line.get_color(), alpha=0.12)
    axes[1].set(title="best so far vs trials (sweeps per arm)", xlabel="trials asked",
                ylabel="best val_accuracy so far")
    axes[2].set(title="best so far vs steps trained", xlabel="steps trained (this sweep's trials)",
                ylabel="best val_accuracy so far")
    for ax in axes[1:]:
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("digits, 20 labels, 80 steps, space smpl-extended: median over seeds, IQR "
                 "shaded", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sampler_report(rows: list[dict], out: Path | None) -> None:
    n = min(len(r["val_by_trial"]) for r in rows)
    print(histogram_line(random_configs(rows)))
    print()
    print(sampler_table([r for r in rows if r["arm"] != "prior"], n))
    if out is not None:
        sampler_figure(rows, n, out / "search_spread.png")
        print(f"\nfigure: {out / 'search_spread.png'}")


def report(rows: list[dict], out: Path | None) -> None:
    if any(r.get("task") == "spread" for r in rows):
        sampler_report(rows, out)  # pairs each arm with random+asha on the seeds both ran
        return
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
                warm = any(ARMS[a][2] for a in args.arms)
                for arm in (["prior"] if warm else []) + args.arms:
                    name = sweep_name(arm, vs, seed)
                    if name in done:
                        continue
                    row = run_sweep(args, storage, arm, vs, seed)
                    with results.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    best = max(best_so_far(row["val_by_trial"]))
                    print(f"[{time.time() - t0:6.0f} s] {row['name']}: best val_accuracy "
                          f"{best:.4f}, {sum(row['steps_by_end'])} steps, "
                          f"{row['wall_s']:.0f} s, test {row.get('test_accuracy')}, "
                          f"proposals: {row['proposals']}", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    rows = [json.loads(ln) for ln in results.read_text().splitlines() if ln]
    print(f"\n{len(rows)} sweeps of {args.trials} trials in {time.time() - t0:.0f} s "
          f"(results: {results})\n")
    report(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
