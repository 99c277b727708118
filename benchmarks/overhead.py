"""Sweep overhead on one machine: the same trials through `tune-smpl tune` and through a
plain Optuna loop without Ray, side by side.

    python benchmarks/overhead.py [--tasks moons,digits] [--repeats 3] [--trials N]
                                  [--set key=value ...] [--out DIR] [--quick]
    python benchmarks/overhead.py --report DIR/results.jsonl     # the table again

Each task's N configs are drawn once (the `smpl` space, Optuna's random sampler, seed 0)
and given explicitly to both arms, with the task's seed and steps; no trial is stopped
early (ASHA's grace period is the number of reports), so both arms train the same trials.

- **tune-smpl**: the configs are written as the unfinished trials of a new sweep's record
  (what a Ctrl-C leaves), and `tune-smpl tune --name ... --resume` runs them in a fresh
  process, re-asked in order, as it re-asks any unfinished trial: the TPE study, Ray with
  2 CPUs and 2 trial slots of 1 CPU, MLflow on SQLite, the checkpoints, the summary and
  the report, exactly as `make tune` runs a sweep.
- **plain**: a fresh process whose Optuna study (the same TPE settings, in memory) has
  the configs enqueued; the driver asks and tells, two worker processes (a process pool,
  one torch thread each, as a tune-smpl trial gets for its 1 CPU) run
  `smpl_core.fit` on what it asked.

Per run, from the trials' own clocks (a trial runs from the trainable's start, before its
data and model are set up, to its last report): wall time (process start to exit), slot
use (trial seconds / (2 slots x first start to last end)), the gap between a trial's end
and the next start on the freed slot (the median and the largest of the run), start-up
(process start to the first trial's start) and end (the last trial's end to the exit).
The arms alternate (tune-smpl first in even repeats); the table gives per task the median
of each arm and the median of the per-repeat ratios tune-smpl / plain. One JSON line per
run goes to DIR/results.jsonl. `--quick` is a CI-sized run that checks the script, not
the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SLOTS = 2  # trial slots of both arms: two processes of one CPU each
TUNE_SMPL = [sys.executable, "-m", "tune_smpl"]  # the command, in a fresh process
TASKS = {  # the trial config; trials per sweep
    # About 2 s a trial on the quiet dev CPU (6 reports, as the default config has).
    "moons": ({"dataset": "moons", "steps": 900, "eval_every": 150}, 16),
    "digits": ({"dataset": "digits"}, 8),  # `make tune`'s trials: the default config
}
QUICK_TRIAL = {"steps": 20, "eval_every": 10, "batch_size": 8, "mu": 2}
METRICS = (("wall_s", "wall time (s)"), ("slot_use", "slot use"),
           ("gap_s", "gap end -> next start, median (s)"), ("gap_max_s", "gap, largest (s)"),
           ("startup_s", "start-up (s)"), ("end_s", "end of sweep (s)"),
           ("trial_s", "trial, mean (s)"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="moons,digits")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, help="trials per sweep (default: the task's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every task's trial config")
    p.add_argument("--out", default=None, help="folder of results.jsonl (default: a temp dir)")
    p.add_argument("--report", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    p.add_argument("--plain", metavar="JSON", help=argparse.SUPPRESS)  # one plain-loop run
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.repeats, args.trials = "moons", 1, 4
        args.set = [f"{k}={v}" for k, v in QUICK_TRIAL.items()] + args.set
    args.tasks = args.tasks.split(",")
    for t in args.tasks:
        if t not in TASKS:
            p.error(f"`--tasks` must name tasks of {', '.join(TASKS)}, but got {t!r}.")
    return args


# --- the trials -----------------------------------------------------------------------
def task_trials(args, task: str) -> tuple[dict, list[dict]]:
    """(the base config, the N searched params): drawn once, the same for every run."""
    import optuna

    from search_spaces import load_space, make_define_by_run
    from smpl_core.config import SMPLConfig

    trial, n = TASKS[task]
    sets = {k: _yaml(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = SMPLConfig.from_dict({**trial, **sets}).to_dict()
    space = load_space("smpl", base)
    define = make_define_by_run(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = []
    for _ in range(args.trials or n):
        t = study.ask()
        define(t)
        params.append(dict(t.params))
        study.tell(t, 0.0)
    return base, params


def _yaml(text: str):
    import yaml

    return yaml.safe_load(text)


def startup_trials(n: int) -> int:
    from tune_smpl.sweep.study import startup_trials as count

    return count(n, SLOTS)


# --- the tune-smpl arm ----------------------------------------------------------------
def mlflow_store(out: Path) -> str:
    """The runs' MLflow store (its URI), made before the first: a user's second sweep finds
    runs/mlflow.db made, and only the first one pays for its tables."""
    from mlflow_tracking.store import open_client

    tracking = f"sqlite:///{out.resolve()}/mlflow.db"
    open_client(tracking)
    return tracking


def run_tune(base: dict, params: list[dict], work: Path, name: str, tracking: str,
             command: list[str] = TUNE_SMPL) -> tuple[float, float, list]:
    """The configs as a new sweep's unfinished trials, run by `tune-smpl tune --resume`
    (`command`); (process start, exit, each trial's (start, end)). `tracking`: the MLflow
    store, shared by the runs as a user's runs/mlflow.db is."""
    from search_spaces import load_space
    from smpl_core.config import SMPLConfig
    from trainables import evaluation_at
    from tune_smpl.sweep.record import TrialRecord
    from tune_smpl.sweep.run import new_record
    from tune_smpl.sweep.settings import SweepSettings

    storage = work / "runs"
    cfg = SMPLConfig.from_dict(base)
    settings = SweepSettings(
        name=name, storage_path=str(storage), num_samples=len(params),
        max_concurrent=SLOTS, num_cpus=SLOTS,
        grace_period=evaluation_at(cfg.steps, cfg.eval_every))  # no trial stopped early
    record = new_record(settings, cfg, load_space("smpl", base), tracking)
    for i, p in enumerate(params):
        record.save_trial(TrialRecord(key=f"{i:04d}", number=i, params=p, distributions={},
                                      config={**base, **p}, proposed_by="enqueued",
                                      interrupted=True))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               TUNE_SMPL_RAY_TMP=f"/tmp/rt_{os.getpid()}_overhead", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    proc = subprocess.run([*command, "tune", "--name", name, "--resume", "--storage-path",
                           str(storage)], cwd=work, env=env, capture_output=True, text=True)
    t1 = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"tune-smpl exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    spans = []
    for t in record.trials():
        reports = [r for r in t.reports if "reported_at" in r]
        spans.append((reports[0]["started_at"], reports[-1]["reported_at"]))
    return t0, t1, spans


# --- the plain arm --------------------------------------------------------------------
def run_plain(base: dict, params: list[dict], work: Path) -> tuple[float, float, list]:
    """The plain loop in a fresh process (`--plain`), as a user starts it; (process start,
    exit, each trial's (start, end))."""
    job = work / "plain.json"
    job.write_text(json.dumps({"base": base, "params": params}))
    t0 = time.time()
    subprocess.run([sys.executable, __file__, "--plain", str(job)], check=True, cwd=work)
    t1 = time.time()
    return t0, t1, [tuple(s) for s in json.loads(job.read_text())["spans"]]


def _worker_init() -> None:
    """A worker imports what its trials run, as a Ray worker imports the trainable."""
    import torch

    import smpl_core  # noqa: F401

    torch.set_num_threads(1)  # a tune-smpl trial's 1 CPU (trainables._placement)


def _objective(config: dict) -> tuple[float, float, list[float], bool]:
    """One trial in a worker: (start, end, val_accuracy per report, diverged)."""
    from smpl_core import fit

    start = time.time()
    history = fit(config).history
    values = [h["val_accuracy"] for h in history]
    return start, time.time(), values, bool(history and history[-1].get("diverged"))


def plain_loop(job_file: str) -> None:
    """Ask, run on a free worker, tell: the Optuna loop a user writes for two processes."""
    import concurrent.futures as cf
    import multiprocessing as mp

    import optuna

    from search_spaces import load_space, make_define_by_run

    job = json.loads(Path(job_file).read_text())
    base, params = job["base"], job["params"]
    define = make_define_by_run(load_space("smpl", base))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
        seed=0, n_startup_trials=startup_trials(len(params)), multivariate=True,
        constant_liar=True))
    for p in params:
        study.enqueue_trial(p)
    spans, running, asked = [], {}, []
    with cf.ProcessPoolExecutor(SLOTS, mp.get_context("spawn"), _worker_init) as pool:
        def submit():
            trial = study.ask()
            asked.append(trial.number)
            define(trial)
            running[pool.submit(_objective, {**base, **trial.params})] = trial

        for _ in range(min(SLOTS, len(params))):
            submit()
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for f in done:
                trial = running.pop(f)
                start, end, values, diverged = f.result()
                spans.append((start, end))
                tell(study, trial, values, diverged)
                if len(asked) < len(params):
                    submit()
    Path(job_file).write_text(json.dumps({**job, "spans": spans}))


def tell(study, trial, values: list[float], diverged: bool) -> None:
    """A finished trial's reports, then its end: FAIL when it diverged, otherwise COMPLETE
    with its best value."""
    from optuna.trial import TrialState

    for step, v in enumerate(values):
        trial.report(v, step)
    if diverged:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, max(values))


# --- the figures ----------------------------------------------------------------------
def figures(t0: float, t1: float, spans: list[tuple[float, float]]) -> dict:
    """A run's figures from its process start and exit and its trials' (start, end)."""
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    busy = sum(e - s for s, e in spans)
    # The k-th start on a full machine waits for the (k - SLOTS)-th end.
    gaps = [starts[k] - ends[k - SLOTS] for k in range(SLOTS, len(starts))] or [0.0]
    return {"wall_s": t1 - t0, "slot_use": busy / (SLOTS * (ends[-1] - starts[0])),
            "gap_s": statistics.median(gaps), "gap_max_s": max(gaps),
            "startup_s": starts[0] - t0, "end_s": t1 - ends[-1], "trial_s": busy / len(spans),
            "trials": len(spans)}


def table(rows: list[dict]) -> str:
    """Per task: the median of each arm, of the per-run ratio tune-smpl / plain and of the
    per-run difference (what tune-smpl adds, in seconds or points of slot use)."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        runs = [r for r in rows if r["task"] == task]
        pair = {(r["repeat"], r["arm"]): r for r in runs}
        done = sorted(k for k, a in pair if a == "tune" and (k, "plain") in pair)
        if not done:
            continue
        lines += [f"{task}: {runs[0]['trials']} trials, {len(done)} paired runs, load "
                  f"{min(r['load'] for r in runs):.2f}-{max(r['load'] for r in runs):.2f}", "",
                  "| figure | plain Optuna | tune-smpl | ratio | difference |",
                  "|---|---|---|---|---|"]
        for key, label in METRICS:
            tune, plain = ([pair[k, a][key] for k in done] for a in ("tune", "plain"))
            ratios = [t / p for t, p in zip(tune, plain) if p > 0]
            ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
            diff = statistics.median(t - p for t, p in zip(tune, plain))
            fmt = "{:.1%}" if key == "slot_use" else "{:.2f}"
            lines.append(f"| {label} | {fmt.format(statistics.median(plain))} | "
                         f"{fmt.format(statistics.median(tune))} | {ratio} | "
                         f"{'+' if diff >= 0 else ''}{fmt.format(diff)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plain:
        plain_loop(args.plain)
        return 0
    if args.report:
        rows = [json.loads(x) for x in Path(args.report).read_text().splitlines() if x.strip()]
        print(table(rows))
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="overhead_"))
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    tracking = mlflow_store(out)
    trials = {task: task_trials(args, task) for task in args.tasks}
    rows = []
    for repeat in range(args.repeats):
        for task, (base, params) in trials.items():
            arms = ("tune", "plain") if repeat % 2 == 0 else ("plain", "tune")
            for arm in arms:
                with tempfile.TemporaryDirectory(prefix="ovh_", dir=out) as d:
                    name = f"{task}-r{repeat}-{int(time.time())}"
                    row = figures(*(run_tune(base, params, Path(d), name, tracking)
                                    if arm == "tune" else run_plain(base, params, Path(d))))
                row.update(task=task, repeat=repeat, arm=arm, load=os.getloadavg()[0])
                rows.append(row)
                with results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{task} repeat {repeat} {arm}: wall {row['wall_s']:.1f} s, slot use "
                      f"{row['slot_use']:.1%}, gap {row['gap_s']:.2f} s", flush=True)
    print(table(rows))
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
