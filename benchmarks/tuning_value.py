"""What tuning buys on data it was not tuned on: the default config against a sweep's export
under four ranking rules, with and without finalists, across data splits.

    python benchmarks/tuning_value.py [--splits 8] [--trials 8] [--finalists 2]
                                      [--finalist-seeds 2] [--holdout-seeds 3]
                                      [--out benchmarks/tuning_value_splits_results.jsonl]
                                      [--quick]
    python benchmarks/tuning_value.py --report benchmarks/tuning_value_splits_results.jsonl

Every sweep is a real `tune-smpl tune` (in this process, on one Ray started here) with the
`make tune` settings: digits with 50 labels, the default config, the `smpl` space, TPE and
ASHA, 2 trials in flight, no time budget (compute is counted as steps trained, which no
machine load changes). Split k sets both the sampler seed (`tune --seed k`) and the data
seed (`--set seed=k`: the labelled examples and the validation split), so the arms of one
split are paired on it, and the splits are what a new user's data would be. Arms:

  a         the default config (no sweep)
  b         the export as today: the search trial with the highest report
            (`outcome.best`), of the sweep of `--trials` trials below (c's search)
  b_final   the same search's trial ranked by its final report (what retraining to the end
            is judged by; a stopped trial by its last report)
  b_smooth  the same search's trial ranked by the mean of its last two reports (one report:
            that one)
  c         the export of that sweep with its finalist stage (`--finalists K
            --finalist-seeds S`), promised: the finalists' mean
  d         the export of a sweep of `--trials` + K*S trials: the finalists' compute spent
            on search instead

Every picked config and the default are retrained with `tune-smpl train --eval-test` on the
same `--holdout-seeds` seeds (500, 501, ...: used by no sweep and no finalist run), the same
for every arm and split; the test split is never seen by a sweep. A config is retrained once:
results are kept by its content (less `seed`, which the retraining sets), since several arms
often pick the same trial. Resumable: one JSON line per finished unit (a retraining, a c
sweep, a d sweep) is appended to `--out`, in split order (the default, then split 0's sweeps
and retrainings, then split 1's, ...), so a partial run has complete paired splits; a rerun
skips what is there. The report: per arm test accuracy, paired differences to a and to b
(95% paired-t intervals over splits), splits below a, the worst split, the optimism (promised
validation value minus delivered test accuracy: mean and worst), steps trained, the goals of
issue 28; a figure beside the results file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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

HOLDOUT_SEED = 500  # retraining seeds 500, 501, ...: no sweep or finalist run uses them
QUICK = ["steps=20", "eval_every=10", "batch_size=8", "mu=2", "val_size=50"]
ARMS = ("a", "b", "b_final", "b_smooth", "c", "d")
NAMES = {"a": "default config", "b": "export as today (highest report)",
         "b_final": "ranked by final report", "b_smooth": "ranked by mean of last 2 reports",
         "c": "export with finalists", "d": "finalists' compute as search trials"}
# Issue 28's goals for the export with the default settings (points of test accuracy).
GOAL_GAIN, GOAL_WORST_SPLIT, GOAL_OPTIMISM, GOAL_WORST_OPTIMISM = 2.0, -0.5, 1.0, 2.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=8, help="data splits 0..N-1 (default 8)")
    p.add_argument("--trials", type=int, default=8, help="search trials (default 8)")
    p.add_argument("--finalists", type=int, default=2)
    p.add_argument("--finalist-seeds", type=int, default=2)
    p.add_argument("--holdout-seeds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of every config (the sweeps' base and the default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "tuning_value_splits_results.jsonl"))
    p.add_argument("--report", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--quick", action="store_true", help="CI-sized: checks the script only")
    args = p.parse_args(argv)
    if args.quick:
        args.splits, args.trials, args.finalists, args.finalist_seeds = 1, 2, 1, 1
        args.holdout_seeds, args.set = 1, QUICK + args.set
    return args


def cli(argv: list[str]) -> tuple[int, str]:
    """`tune-smpl ARGV` in this process; (exit code, stdout)."""
    from tune_smpl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def _sets(args) -> list[str]:
    return [a for s in ["dataset=digits", "num_labeled=50", *args.set] for a in ("--set", s)]


# --- retraining, once per config --------------------------------------------------------
def config_key(args, config: dict | None) -> str:
    """What a retraining depends on: the config less `seed` (the retraining sets it) and the
    retraining's settings; "default" for the default config."""
    if config is None:
        return "default"
    body = {k: v for k, v in config.items() if k != "seed"}
    blob = json.dumps([body, args.holdout_seeds, args.set], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def retrain(args, config: Path | None) -> dict:
    """Test accuracy of `config` (None: the default) on the hold-out seeds."""
    argv = ["train", "--eval-test", "--seeds", str(args.holdout_seeds), "--json",
            *_sets(args), "--set", f"seed={HOLDOUT_SEED}"]
    if config is not None:
        argv[1:1] = ["--config", str(config)]
    t0 = time.time()
    code, out = cli(argv)
    summary = json.loads(out.strip().splitlines()[-1])
    runs = summary["runs"]
    return {"test": [r["test_accuracy"] for r in runs], "val": [r["val_accuracy"] for r in runs],
            "steps": sum(int(r["final"].get("step", 0)) for r in runs),
            "wall_s": round(time.time() - t0, 1)}


class Study:
    """The results file: its rows, the retrainings by key, and appending a finished unit."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.rows = _read(self.out)
        self.retrained = {r["key"]: r for r in self.rows if r["name"] == "retrain"}

    def append(self, row: dict) -> dict:
        a = self.args
        row.update(when=time.strftime("%Y-%m-%d %H:%M"), quick=a.quick,
                   settings={"trials": a.trials, "finalists": a.finalists,
                             "finalist_seeds": a.finalist_seeds,
                             "holdout_seeds": a.holdout_seeds, "set": a.set})
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with self.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.rows.append(row)
        label = row["name"] if row["name"] != "retrain" else f"retrain {row['key']}"
        print(f"{label}: done ({row.get('wall_s', '-')} s)", file=sys.stderr, flush=True)
        return row

    def retrain(self, path: Path | None) -> str:
        """The key of `path`'s config (None: the default), retrained unless already done."""
        import yaml

        config = None if path is None else yaml.safe_load(path.read_text())
        key = config_key(self.args, config)
        if key not in self.retrained:
            self.retrained[key] = self.append({"name": "retrain", "key": key, "config": config,
                                               **retrain(self.args, path)})
        return key


# --- the picks --------------------------------------------------------------------------
def _values(trial) -> list[float]:
    from tune_smpl.sweep import outcome

    m = outcome.METRIC
    return [float(r[m]) for r in trial.reports
            if isinstance(r.get(m), (int, float)) and not isinstance(r[m], bool)
            and math.isfinite(r[m])]


def final_value(trial) -> float:
    vals = _values(trial)
    return vals[-1] if vals else math.nan


def smooth_value(trial) -> float:
    vals = _values(trial)[-2:]
    return statistics.fmean(vals) if vals else math.nan


def pick_by(trials, value):
    """(trial, its value) with the highest `value` among scored trials (ties: the earlier
    trial); (None, nan) when none has one."""
    from tune_smpl.sweep import outcome

    best, best_v = None, math.nan
    for t in sorted(trials, key=lambda t: t.number):
        v = value(t) if t.outcome in outcome.SCORED else math.nan
        if not math.isnan(v) and (best is None or v > best_v):
            best, best_v = t, v
    return best, best_v


def sweep_argv(args, storage: Path, name: str, split: int, trials: int,
               finalists: int) -> list[str]:
    """`tune` of split `split`: it seeds the sampler and the data."""
    return ["tune", "--name", name, "--storage-path", str(storage), "--tracking-uri",
            f"sqlite:///{storage}/mlflow.db", "--num-samples", str(trials), "--seed",
            str(split), "--gpus-per-trial", "0", "--finalists", str(finalists),
            "--finalist-seeds", str(args.finalist_seeds), *_sets(args), "--set",
            f"seed={split}"]


def sweep(study: Study, storage: Path, name: str, split: int, trials: int,
          finalists: int) -> dict:
    """One sweep and the retraining of its picks; the unit's row (arm -> key, promise)."""
    from smpl_core.config import SMPLConfig
    from tune_smpl.sweep import outcome
    from tune_smpl.sweep.record import open_sweep
    from tune_smpl.sweep.result import SweepResult

    args = study.args
    shutil.rmtree(storage / name, ignore_errors=True)  # a half-run sweep of a stopped study
    t0 = time.time()
    code, out = cli(sweep_argv(args, storage, name, split, trials, finalists))
    if code != 0:
        raise RuntimeError(f"sweep {name} exited {code}:\n{out[-3000:]}")
    record = open_sweep(str(storage), name)
    meta, search, runs = record.meta(), record.trials(), record.finalists()
    row = {"name": name, "split": split, "sampler_seed": meta["sampler"]["sampler_seed"],
           "data_seed": meta["base"]["seed"], "sweep_wall_s": round(time.time() - t0, 1),
           "search_steps": sum(int(t.last.get("step", 0) or 0) for t in search),
           "finalist_steps": sum(int(t.last.get("step", 0) or 0) for t in runs), "arms": {}}
    # What `tune-smpl export` writes: b (c's search best) or c, or d.
    exported = storage / f"{name}-export.yaml"
    code, out = cli(["export", name, "--storage-path", str(storage), "-o", str(exported)])
    if code != 0:
        raise RuntimeError(f"export of {name} exited {code}:\n{out[-2000:]}")
    pick = SweepResult.of_record(record, search, runs, meta).pick
    export_arm = "c" if finalists else "d"
    row["arms"][export_arm] = {"trial": pick.trial.key, "promised": pick.value,
                               "key": study.retrain(exported)}
    if finalists:
        row["finalists"] = [f.as_dict() for f in pick.ranked]
        top = outcome.best(search)
        for arm, (t, v) in (("b", (top, outcome.score(top.reports)[0])),
                            ("b_final", pick_by(search, final_value)),
                            ("b_smooth", pick_by(search, smooth_value))):
            path = storage / f"{name}-{arm}.yaml"
            path.write_text(SMPLConfig.from_dict(t.config).to_yaml(header=f"{name} {t.key}"))
            row["arms"][arm] = {"trial": t.key, "promised": v, "key": study.retrain(path)}
    row["wall_s"] = round(time.time() - t0, 1)
    return row


# --- the study --------------------------------------------------------------------------
def units(args) -> list[tuple[str, dict]]:
    """In the order they run: whole splits one after the other."""
    k, s = args.finalists, args.finalist_seeds
    out = [("default", {})]
    for split in range(args.splits):
        out += [(f"c-s{split}", {"split": split, "trials": args.trials, "finalists": k}),
                (f"d-s{split}", {"split": split, "trials": args.trials + k * s, "finalists": 0})]
    return out


def run_study(args) -> list[dict]:
    from tune_smpl.sweep.cluster import connect

    study = Study(args)
    done = {r["name"] for r in study.rows}
    storage = Path(tempfile.mkdtemp(prefix="tuning_value_"))
    os.environ.setdefault("TUNE_SMPL_RAY_TMP", os.path.join(tempfile.gettempdir(),
                                                            f"ray_tv_{os.getpid()}"))
    started = False
    try:
        for name, spec in units(args):
            if name in done:
                continue
            if name == "default":
                study.retrain(None)
                study.append({"name": "default", "key": "default"})
                continue
            if not started:  # one Ray for every sweep
                connect(None, num_cpus=2, num_gpus=0)
                started = True
            study.append(sweep(study, storage, name, spec["split"], spec["trials"],
                               spec["finalists"]))
    finally:
        if started:
            import ray

            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    return study.rows


def _read(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []


# --- the report -------------------------------------------------------------------------
def paired_ci(diffs: list[float]) -> tuple[float, float, float]:
    from tune_smpl.sweep.finalists import mean_ci

    mean, _, lo, hi = mean_ci(diffs)
    return mean, lo, hi


def arms(rows: list[dict]) -> dict:
    """Per split with both sweeps: arm -> (test accuracy: mean over the hold-out seeds,
    promised value or None, steps trained). Only splits whose every arm is retrained."""
    test = {r["key"]: statistics.fmean(r["test"]) for r in rows if r["name"] == "retrain"}
    c = {r["split"]: r for r in rows if r["name"].startswith("c-")}
    d = {r["split"]: r for r in rows if r["name"].startswith("d-")}
    out = {}
    if "default" not in test:
        return out
    for split in sorted(set(c) & set(d)):
        rc, rd = c[split], d[split]
        picks = {**rc["arms"], **rd["arms"]}
        if any(picks[a]["key"] not in test for a in ARMS[1:]):
            continue
        steps = {"b": rc["search_steps"], "b_final": rc["search_steps"],
                 "b_smooth": rc["search_steps"], "c": rc["search_steps"] + rc["finalist_steps"],
                 "d": rd["search_steps"]}
        out[split] = {"a": (test["default"], None, 0), **{
            a: (test[picks[a]["key"]], picks[a]["promised"], steps[a]) for a in ARMS[1:]}}
        out[split]["picks"] = {a: picks[a]["trial"] for a in ARMS[1:]}
    return out


def _ci(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return f"{diffs[0]:+.2f} (one split)"
    return "{:+.2f} [{:+.2f}, {:+.2f}]".format(*paired_ci(diffs))


def summarise(per: dict) -> dict:
    """Per arm, in points: test, vs_a, vs_b (paired diffs per split), below, worst split,
    optimism per split; the numbers of the table and of the goals."""
    splits = list(per)
    out = {}
    for arm in ARMS:
        acc = [100 * per[s][arm][0] for s in splits]
        vs_a = [100 * (per[s][arm][0] - per[s]["a"][0]) for s in splits]
        vs_b = [100 * (per[s][arm][0] - per[s]["b"][0]) for s in splits]
        opt = [100 * (per[s][arm][1] - per[s][arm][0]) for s in splits if per[s][arm][1]
               is not None]
        worst = min(range(len(splits)), key=lambda i: vs_a[i])
        out[arm] = {"test": acc, "vs_a": vs_a, "vs_b": vs_b, "optimism": opt,
                    "below": sum(v < 0 for v in vs_a), "worst": (splits[worst], vs_a[worst]),
                    "steps": statistics.fmean(per[s][arm][2] for s in splits)}
    return out


def goals(s: dict) -> list[str]:
    """Issue 28's goals for one arm's numbers: (met, text) lines."""
    mean, lo, _ = paired_ci(s["vs_a"]) if len(s["vs_a"]) > 1 else (s["vs_a"][0], math.nan, 0)
    opt_mean, opt_worst = statistics.fmean(s["optimism"]), max(s["optimism"])
    checks = [(mean >= GOAL_GAIN and lo > 0, f"gain {mean:+.2f} (CI low {lo:+.2f}) >= +2, > 0"),
              (s["worst"][1] >= GOAL_WORST_SPLIT,
               f"worst split {s['worst'][1]:+.2f} >= {GOAL_WORST_SPLIT:+.1f}"),
              (opt_mean <= GOAL_OPTIMISM and opt_worst <= GOAL_WORST_OPTIMISM,
               f"optimism mean {opt_mean:+.2f} <= +1, worst {opt_worst:+.2f} <= +2")]
    return [("met" if ok else "NOT met") + f": {text}" for ok, text in checks]


def report(rows: list[dict], figure: Path | None = None) -> str:
    per = arms(rows)
    if not per:
        return "no split has both its sweeps, their retrainings and the default's yet\n"
    splits = list(per)
    s = summarise(per)
    lines = [f"{len(splits)} paired data splits ({', '.join(map(str, splits))}); test accuracy "
             "= mean over the hold-out seeds; differences in points, 95% paired-t CI", "",
             "| arm | test acc (mean +- sd) | - a | - b | below a | worst split (- a) "
             "| optimism mean | optimism worst | steps trained |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        x = s[arm]
        sd = statistics.stdev(x["test"]) if len(x["test"]) > 1 else 0.0
        opt = (f"{statistics.fmean(x['optimism']):+.2f} | {max(x['optimism']):+.2f}"
               if x["optimism"] else "- | -")
        cells = [f"{arm}: {NAMES[arm]}", f"{statistics.fmean(x['test']):.2f} +- {sd:.2f}",
                 "-" if arm == "a" else _ci(x["vs_a"]),
                 "-" if arm in ("a", "b") else _ci(x["vs_b"]),
                 "-" if arm == "a" else f"{x['below']} of {len(splits)}",
                 "-" if arm == "a" else f"{x['worst'][1]:+.2f} (split {x['worst'][0]})", opt,
                 f"{x['steps']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Goals (issue 28; for the export of the default settings, b today):"]
    for arm in ARMS[1:]:
        lines.append(f"- {arm}: " + "; ".join(goals(s[arm])))
    same = {a: sum(per[x]["picks"][a] == per[x]["picks"]["b"] for x in splits)
            for a in ("b_final", "b_smooth", "c")}
    lines += ["", "Same trial as b: " + ", ".join(f"{a} {n} of {len(splits)}"
                                                  for a, n in same.items())]
    if figure is not None:
        _figure(per, splits, figure)
        lines.append(f"Figure: {figure.name}")
    return "\n".join(lines) + "\n"


def _figure(per: dict, splits: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    ax, bx = fig.subplots(1, 2)
    xs = range(len(ARMS))
    for s in splits:
        ax.plot(xs, [100 * per[s][a][0] for a in ARMS], "-o", color="#999", ms=3, lw=0.8)
    means = [100 * statistics.fmean(per[s][a][0] for s in splits) for a in ARMS]
    ax.plot(xs, means, "-D", color="#1f77b4", lw=2, label="mean over splits")
    ax.set_xticks(list(xs), list(ARMS))
    ax.set(ylabel="test accuracy (%)", title="each data split (grey) and the mean")
    ax.legend(fontsize=7)
    for i, arm in enumerate(ARMS[1:]):
        prom = [100 * per[s][arm][1] for s in splits]
        got = [100 * per[s][arm][0] for s in splits]
        bx.scatter([i - 0.1] * len(prom), prom, marker="D", facecolors="none",
                   edgecolors="#d62728", label="promised val" if i == 0 else None)
        bx.scatter([i + 0.1] * len(got), got, color="#1f77b4",
                   label="delivered test" if i == 0 else None)
    bx.set_xticks(range(len(ARMS) - 1), list(ARMS[1:]))
    bx.set(ylabel="accuracy (%)", title="what the rule promised, what retraining gave")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        rows = _read(Path(args.report))
        print(report(rows, Path(args.report).with_suffix(".png")), end="")
        return 0
    rows = run_study(args)
    print(report(rows, Path(args.out).with_suffix(".png")), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
