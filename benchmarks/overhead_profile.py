"""Where tune-smpl's overhead goes: overhead.py's tune-smpl arm once, with timers on the
driver's steps, split by the trials' own clocks.

    python benchmarks/overhead_profile.py [--task moons] [--trials N] [--set key=value ...]
                                          [--out DIR]

The run is the one overhead.py times (the same trials, the sweep's record, `tune-smpl tune
--resume` in a fresh process), except that the process wraps the driver's steps in timers
before it runs the command (so the imports those need come before the command starts). It
prints three splits: start-up (process start to the first trial's start), the gap between a
trial's end and the next start on its slot (the median over the run's gaps of each part),
and the end (the last trial's end to the exit). Driver time that no timer covers is
"other"; in a gap, the time the driver spends in none of the ledger's steps is Ray's
(the result's way to the driver, the end of the trial, the next trial's start in the
freed process: a reset when Ray reuses it, a new worker otherwise).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import overhead

MLFLOW_START = "MLflow parent run (its store opens during Ray's start)"
# The driver's steps: (module, attribute path, label). A step nested in another counts in
# both; the splits below subtract the nested ones.
TIMED = [
    ("tune_smpl.sweep.cluster", "connect", "Ray start (ray.init)"),
    ("tune_smpl.launch", "_recorder", MLFLOW_START),
    ("tune_smpl.sweep.run", "build_study", "study from the record"),
    ("ray.tune", "Tuner.fit", "Tuner.fit"),
    ("tune_smpl.sweep.ledger", "Ledger.new_trial", "ledger"),
    ("tune_smpl.sweep.ledger", "Ledger.started", "ledger"),
    ("tune_smpl.sweep.ledger", "Ledger.reported", "ledger"),
    ("tune_smpl.sweep.ledger", "Ledger.ended", "ledger"),
    ("tune_smpl.sweep.tracking", "Tracking._call", "MLflow"),
    ("tune_smpl.sweep.record", "SweepRecord.save_trial", "record"),
    ("tune_smpl.launch", "_best_model", "best model from its checkpoint"),
    ("tune_smpl.sweep.tracking", "Tracking.end_sweep", "MLflow: parent run's end + model"),
    ("tune_smpl.launch", "_publish", "report (HTML + PNGs) and its upload"),
    ("ray", "shutdown", "Ray shutdown"),
]


def _wrap(events: list, label: str, fn):
    def timed(*args, **kwargs):
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            events.append((label, t0, time.time()))
    return timed


def install_timers(timed: list, wrap) -> None:
    """Replaces each (module, attribute path, label) of `timed` with `wrap(label, it)`."""
    for module, path, label in timed:
        owner = importlib.import_module(module)
        *outer, name = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        setattr(owner, name, wrap(label, getattr(owner, name)))


def child(events_file: str, argv: list[str]) -> int:
    """The command with timers on its steps; the events go to `events_file`."""
    events: list = []
    install_timers(TIMED, lambda label, fn: _wrap(events, label, fn))
    from tune_smpl.cli import main

    main_at = time.time()
    try:
        return main(argv)
    finally:
        events.append(("command", main_at, time.time()))
        Path(events_file).write_text(json.dumps({"main_at": main_at, "events": events}))


def _total(events, label: str, lo: float, hi: float) -> float:
    """Seconds of `label`'s events that started in [lo, hi), cut at hi."""
    return sum(min(b, hi) - a for x, a, b in events if x == label and lo <= a < hi)


def _first(events, label: str) -> tuple[float, float]:
    return next((a, b) for x, a, b in sorted(events, key=lambda e: e[1]) if x == label)


def splits(t0: float, t1: float, spans: list, main_at: float, events: list) -> dict:
    """{section: [(part, seconds)]}: start-up, the median gap, the end."""
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    first = starts[0]
    ask = _first(events, "ledger")[0]  # the first ask of the study
    steps = ["Ray start (ray.init)", MLFLOW_START, "study from the record"]
    start = [("Python start, imports (the timers' too)", main_at - t0)]
    start += [(s, _total(events, s, main_at, first)) for s in steps]
    start.append(("other driver steps to the first ask", ask - main_at - sum(
        v for _, v in start[1:])))
    start.append(("first ask to the first trial's start (trial processes, torch import)",
                  first - ask))
    gaps = []
    for k in range(overhead.SLOTS, len(starts)):
        lo, hi = ends[k - overhead.SLOTS], starts[k]
        ledger, mlflow, record = (_total(events, x, lo, hi) for x in ("ledger", "MLflow",
                                                                       "record"))
        gaps.append({"ledger: study ask/tell and its SQLite writes": ledger - mlflow - record,
                     "ledger: MLflow writes": mlflow, "ledger: record writes": record,
                     "Ray: result to the driver, trial end, next trial in its process":
                         hi - lo - ledger})
    gap = [(part, statistics.median(g[part] for g in gaps)) for part in gaps[0]] if gaps else []
    fit_end = _first(events, "Tuner.fit")[1]
    end = [("Tune's wind-down after the last report", fit_end - ends[-1])]
    for s in ("best model from its checkpoint", "MLflow: parent run's end + model",
              "report (HTML + PNGs) and its upload", "Ray shutdown"):
        end.append((s, _total(events, s, fit_end, t1)))
    returned = _first(events, "command")[1]
    end.append(("other steps of the command (summary)", returned - ends[-1] - sum(
        v for _, v in end)))
    end.append(("process exit after the command returned", t1 - returned))
    return {f"start-up ({first - t0:.2f} s)": start,
            f"gap, median parts over {len(gaps)} gaps": gap,
            f"end of sweep ({t1 - ends[-1]:.2f} s)": end}


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=overhead.TASKS, default="moons")
    p.add_argument("--trials", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="overhead_profile_"))
    out.mkdir(parents=True, exist_ok=True)
    base, params = overhead.task_trials(argparse.Namespace(trials=args.trials, set=args.set),
                                        args.task)
    events_file = out / "events.json"
    with tempfile.TemporaryDirectory(prefix="ovh_", dir=out) as d:
        t0, t1, spans = overhead.run_tune(
            base, params, Path(d), f"profile-{int(time.time())}", overhead.mlflow_store(out),
            command=[sys.executable, __file__, "--child", str(events_file)])
    got = json.loads(events_file.read_text())
    for section, parts in splits(t0, t1, spans, got["main_at"], got["events"]).items():
        print(f"{args.task}, {len(params)} trials: {section}")
        for part, seconds in parts:
            print(f"  {seconds:7.3f} s  {part}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
