"""Sweeps at the size users run them (issue 26): N = 10, 100, 1,000 trials on C = 2 and 16
slots, and how each cost of tune-smpl grows with N.

    python benchmarks/scale.py [--sizes 10,100,1000] [--slots 2,16] [--storages local,s3]
                               [--arms tune,plain] [--after all|largest|none]
                               [--out FILE] [--figure PNG] [--work DIR] [--quick]
    python benchmarks/scale.py --report FILE [--figure PNG]    # the tables (and figure) again

Each **tune** sweep is `tune-smpl tune` in a fresh process, as a user types it: moons (150
steps, a report every 50: 3 reports, 1-2 s a trial on the 2-core dev CPU), the
`smpl` space, TPE (multivariate, constant liar) + ASHA (the defaults: grace 2, factor 2),
a checkpoint at every report, MLflow on a SQLite store of its own (made before the sweep,
as a user's `runs/mlflow.db` is), 2 CPUs offered and C slots of 2/C CPUs (each trial a Ray
worker process; 16 on two cores share them), the record in a local folder or (`s3`) in a
bucket of a moto S3 server on 127.0.0.1. The process runs the command with timers on the
driver's steps and a thread sampling its CPU and RSS (scale_runs.TIMED; a few
microseconds a step). The **plain** arm is an Optuna ask/tell loop over C spawned worker
processes running the same task (overhead.py's worker), the same TPE settings on an
in-memory study, no pruning, no checkpoints, no tracking.

Per sweep: wall / ideal (the trials' own seconds, first to last report of each, over C);
start-up, end, slot use; the median and largest gap between one trial's end and the next
start on its slot, and the median gap around trial 10, 100, 1,000; the driver's CPU per
trial around trial 10, 100, 1,000 of the same sweep, split into the study's ask and tell,
the record's writes, MLflow's, Ray's loop and the rest (scale_figures.PARTS); the
driver's peak RSS and its growth from the first window to the last; the record's, the
sweep folder's, the study's and MLflow's size on disk. After a tune sweep (every N, or
with `--after largest` only the largest): `--resume` of an interrupted copy (a copy of its
record with 2C more trials to run; a first `--resume` stopped by a real SIGINT after the
first of them reported; then the measured `--resume`, from a fresh working directory:
seconds to its first trial's start), `export`, `report` (seconds, report.html's size),
`ui` (seconds until MLflow's `runs/search`, the experiment page's call, lists the runs).

One JSON line per measured sweep goes to `--out` (default benchmarks/scale_results.jsonl),
with the machine, the date, the commit and the load average before and after; a rerun
skips the sweeps that are there. The table marks each of the issue's goals met or not
(GOALS). `--quick` (4 and 8 trials, C=2, local, tiny trials) checks the script, not the
numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale_figures import PARTS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).with_name("scale_results.jsonl")
DEFAULT_FIGURE = Path(__file__).with_name("scale.png")
MODES = {  # the trial config (--set), the sweeps' sizes, the trials each sweep is looked at
    # around (with the sizes), the slots, the storages, the window's half width (trials)
    False: {"sets": ["steps=150", "eval_every=50"], "sizes": [10, 100, 1000],
            "checkpoints": [10, 100, 1000], "slots": [2, 16], "storages": ["local", "s3"],
            "half": 5, "after": "all"},
    # One sweep of each arm (every command of the full run once, in about 90 s).
    True: {"sets": ["steps=30", "eval_every=10", "batch_size=8", "mu=2"], "sizes": [8],
           "checkpoints": [4, 8], "slots": [2], "storages": ["local"], "half": 2,
           "after": "largest"},
}
# The goals: (label, the line's figure, the bound, which sweeps).
GOALS = [
    ("wall <= 1.2x ideal (N largest, C=2)", "wall_over_ideal", 1.2, {"c": 2}),
    ("driver CPU per trial at trial N <= 1.5x at trial 10", "driver_ratio", 1.5, {}),
    ("largest gap <= 2 s (N largest, C=2)", "gap_max_s", 2.0, {"c": 2}),
    ("median gap <= 1 s (C=16)", "gap_median_s", 1.0, {"c": 16}),
    ("no trial waits for the driver > 1 s (C=16)", "gap_max_s", 1.0, {"c": 16}),
    ("resume: first new trial <= 15 s (local)", "resume_s", 15.0, {"storage": "local"}),
    ("resume: first new trial <= 60 s (S3)", "resume_s", 60.0, {"storage": "s3"}),
    ("export <= 5 s", "export_s", 5.0, {}),
    ("report <= 30 s", "report_s", 30.0, {}),
    ("report.html <= 10 MB", "report_mb", 10.0, {}),
    ("driver peak RSS grows <= 300 MB (trial 10 to N)", "rss_growth_mb", 300.0, {}),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", help="trials per sweep (default 10,100,1000)")
    p.add_argument("--slots", help="trial slots (default 2,16)")
    p.add_argument("--storages", help="local,s3 (default both)")
    p.add_argument("--arms", default="tune,plain")
    p.add_argument("--after", choices=("all", "largest", "none"),
                   help="resume/export/report/ui after every tune sweep (default), the "
                        "largest N only, or none")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of every trial's config, after the mode's")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--figure", type=Path, default=None, help=f"default {DEFAULT_FIGURE}")
    p.add_argument("--work", type=Path, default=None, help="sweep folders (default a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep each sweep's folder")
    p.add_argument("--report", type=Path, metavar="FILE", help="print FILE's tables and exit")
    p.add_argument("--quick", action="store_true", help="a CI-sized run")
    args = p.parse_args(argv)
    mode = MODES[args.quick]
    args.sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else mode["sizes"]
    args.slots = [int(x) for x in args.slots.split(",")] if args.slots else mode["slots"]
    args.storages = args.storages.split(",") if args.storages else mode["storages"]
    args.arms = args.arms.split(",")
    args.after = args.after or mode["after"]
    args.sets = mode["sets"] + args.set
    args.half = mode["half"]
    args.checkpoints = sorted(set(mode["checkpoints"]) | set(args.sizes))
    for name, got, allowed in (("--storages", args.storages, ("local", "s3")),
                               ("--arms", args.arms, ("tune", "plain"))):
        if not got or set(got) - set(allowed):
            p.error(f"`{name}` must name some of {', '.join(allowed)}, but got {got}")
    if any(c < 1 or c > 64 for c in args.slots) or any(n < 1 for n in args.sizes):
        p.error("`--slots` must be in 1..64 and `--sizes` positive")
    return args


def plan(args) -> list[dict]:
    """The sweeps to measure, in order: per storage and slots, N ascending; a plain loop
    per (N, C), once."""
    out = []
    for c in args.slots:
        for n in sorted(args.sizes):
            if "plain" in args.arms:
                out.append({"arm": "plain", "storage": None, "n": n, "c": c})
            for s in args.storages if "tune" in args.arms else []:
                out.append({"arm": "tune", "storage": s, "n": n, "c": c})
    return out


def key(line: dict) -> tuple:
    return (line["quick"], line["arm"], line["storage"], line["n"], line["c"],
            tuple(line["sets"]))


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def machine() -> dict:
    """Where and when: the host, its CPUs and memory, the versions, the commit."""
    from importlib.metadata import version

    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal:")), "0")
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], text=True,
                            capture_output=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--",
                            "tune_smpl", "mlflow_tracking", "trainables", "smpl_core"],
                           text=True, capture_output=True).stdout.strip()
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "mem_gb": round(int(mem) / 2**20, 1),
            "python": platform.python_version(),
            **{lib: version(lib) for lib in ("ray", "optuna", "mlflow", "torch")},
            "commit": commit + ("+changes" if dirty else "")}


# --- the run ----------------------------------------------------------------------------
def measure(runner, after, work, spec: dict, args, largest: int) -> dict:
    load = os.getloadavg()
    t = time.time()
    if spec["arm"] == "plain":
        got = runner.run_plain(work, spec["n"], spec["c"], args.sets, args.checkpoints,
                               args.half)
    else:
        got, sweep = runner.run_sweep(work, spec["storage"], spec["n"], spec["c"],
                                      args.sets, args.checkpoints, args.half)
        if sweep and (args.after == "all" or args.after == "largest" and spec["n"] == largest):
            got["after"] = after(work, sweep, 2 * spec["c"])
        if sweep and not args.keep:
            shutil.rmtree(sweep["folder"], ignore_errors=True)
    return {**spec, "quick": args.quick, "sets": args.sets, **got,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "measured_s": time.time() - t,
            "load_before": [round(x, 2) for x in load],
            "load_after": [round(x, 2) for x in os.getloadavg()], "machine": machine()}


def main(argv=None) -> int:
    args = parse_args(argv)
    figure = args.figure or DEFAULT_FIGURE
    if args.report:
        lines = read_lines(args.report)
        print(tables(lines))
        if lines:
            draw(lines, figure)
        return 0
    done = {key(ln) for ln in read_lines(args.out) if ln["rc"] == 0}  # a failed one again
    todo = [s for s in plan(args)
            if key({**s, "quick": args.quick, "sets": args.sets}) not in done]
    print(f"scale: {len(todo)} sweep(s) to run, {len(plan(args)) - len(todo)} already in "
          f"{args.out}", flush=True)
    if todo:
        import scale_runs as runner  # the runs' imports only when sweeps run
        from scale_after import after

        folder = Path(args.work or tempfile.mkdtemp(prefix="scale_"))
        work = runner.Work(folder)
        try:
            for spec in todo:
                line = measure(runner, after, work, spec, args, max(args.sizes))
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(line, sort_keys=True) + "\n")
                print(f"{spec['arm']} {spec['storage'] or ''} N={spec['n']} C={spec['c']}: "
                      + (f"wall {line['wall_s']:.1f} s = {line['wall_over_ideal']:.2f}x "
                         f"ideal, gap median {line['gap_median_s']:.2f} s, largest "
                         f"{line['gap_max_s']:.2f} s at {line['gap_max_at_s']:.0f} s"
                         if line["rc"] == 0 else
                         f"failed (exit {line['rc']}): {line['error'][-500:]}"), flush=True)
        finally:
            work.close()
            if args.work is None and not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    lines = [ln for ln in read_lines(args.out) if ln["quick"] == args.quick]
    print(tables(lines))
    if lines:
        draw(lines, figure)
        print(f"figure: {figure}")
    return 0


# --- the tables -------------------------------------------------------------------------
def _f(v, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _get(line: dict | None, *path):
    for p in path:
        if not isinstance(line, dict) or line.get(p) is None:
            return None
        line = line[p]
    return line


def groups(lines: list[dict]) -> dict[tuple, dict[int, dict]]:
    """{(storage, c): {n: line}} of the tune sweeps that ran, and ("plain", c) likewise;
    the newest line of each wins."""
    out: dict = {}
    for ln in lines:
        if ln.get("rc") == 0:
            out.setdefault((ln["storage"] or "plain", ln["c"]), {})[ln["n"]] = ln
    return out


def _pair(ln: dict, a: tuple, b: tuple, fa: str = "{:.2f}", fb: str = "{:.2f}") -> str:
    return f"{_f(_get(ln, *a), fa)} / {_f(_get(ln, *b), fb)}"


def _resume(ln: dict) -> str:
    r = _get(ln, "after", "resume")
    return "-" if r is None else (f"{_f(r.get('first_trial_s'), '{:.1f}')} "
                                  f"({_f(r.get('first_new_trial_s'), '{:.1f}')}) / "
                                  f"{_f(r.get('command_s'), '{:.1f}')}")


def _resume_steps(ln: dict) -> str:
    steps = _get(ln, "after", "resume", "steps")
    if not steps:
        return "-"
    read, study = steps["record read"], steps["study from the record"]
    return f"{read['s']:.2f} ({read['n']}) / {study['s']:.2f}"


def _with(ln: dict, a: tuple, b: tuple, fa: str = "{:.2f}", fb: str = "{:.2f}") -> str:
    return f"{_f(_get(ln, *a), fa)} ({_f(_get(ln, *b), fb)})"


SWEEP_ROWS = [  # (label, the cell of a line)
    ("trials run (their mean s)", lambda ln: _with(ln, ("trials",), ("trial_s",), "{}")),
    ("wall / ideal", lambda ln: _f(ln.get("wall_over_ideal"), "{:.2f}x")),
    ("wall s (ideal s)", lambda ln: _with(ln, ("wall_s",), ("ideal_s",), "{:.1f}", "{:.1f}")),
    ("start-up s / end s", lambda ln: _pair(ln, ("startup_s",), ("end_s",), "{:.1f}",
                                            "{:.1f}")),
    ("slot use", lambda ln: _f(ln.get("slot_use"), "{:.1%}")),
    ("gap median s / largest s", lambda ln: _pair(ln, ("gap_median_s",), ("gap_max_s",))),
    ("driver CPU per trial at trial N, s", lambda ln: _f(
        _get(ln, "driver", str(ln["n"]), "cpu_s"), "{:.3f}")),
    ("driver peak RSS MB (growth)", lambda ln: _with(ln, ("peak_rss_mb",), (
        "rss_growth_mb",), "{:.0f}", "{:+.0f}")),
    ("record MB / sweep folder MB", lambda ln: _pair(ln, ("sizes", "record_mb"), (
        "sizes", "sweep_folder_mb"), fb="{:.1f}")),
    ("study MB / mlflow.db MB", lambda ln: _pair(ln, ("sizes", "study_mb"), (
        "sizes", "mlflow_db_mb"))),
    ("resume: first trial s (first new) / command s", _resume),
    ("resume start-up: record reads s (calls) / study built s", _resume_steps),
    ("export s", lambda ln: _f(_get(ln, "after", "export", "s"))),
    ("report s (report.html MB)", lambda ln: _with(ln, ("after", "report", "s"), (
        "after", "report", "html_mb"))),
    ("ui: runs listed s (children s)", lambda ln: _with(ln, ("after", "ui", "listed_s"), (
        "after", "ui", "children_s"), "{:.1f}")),
]
PLAIN_ROWS = [
    ("plain Optuna: wall / ideal", lambda p: _f(p.get("wall_over_ideal"), "{:.2f}x")),
    ("plain Optuna: gap median s / largest s", lambda p: _pair(p, ("gap_median_s",), (
        "gap_max_s",))),
    ("plain Optuna: ask + tell ms at trial N", lambda p: _f(
        _get(p, "driver", str(p["n"])) and 1000 * (p["driver"][str(p["n"])]["ask_s"]
                                                   + p["driver"][str(p["n"])]["tell_s"]),
        "{:.1f}")),
    ("plain Optuna: driver CPU per trial at trial N, s", lambda p: _f(
        _get(p, "driver", str(p["n"]), "cpu_s"), "{:.3f}")),
]


def sweep_table(tune: dict[int, dict], plain: dict[int, dict] | None) -> list[str]:
    ns = sorted(tune)
    out = ["| figure | " + " | ".join(f"N={n}" for n in ns) + " |",
           "|---" * (len(ns) + 1) + "|"]
    for label, cell in SWEEP_ROWS:
        out.append(f"| {label} | " + " | ".join(cell(tune[n]) for n in ns) + " |")
    for label, cell in PLAIN_ROWS if plain else []:
        out.append(f"| {label} | " + " | ".join(cell(plain[n]) if n in plain else "-"
                                               for n in ns) + " |")
    return out


def split_table(line: dict) -> list[str]:
    """The driver's CPU per trial (ms) around each checkpoint of one sweep, by part."""
    ws = line.get("driver") or {}
    ks = sorted(ws, key=int)
    if not ks:
        return []
    out = [f"driver CPU per trial (ms) around trial k of the N={line['n']} sweep:", "",
           "| part | " + " | ".join(f"k={k} (trials {ws[k]['first']}-{ws[k]['last']})"
                                    for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for part, label in PARTS:
        out.append(f"| {label} | " + " | ".join(f"{1000 * ws[k]['parts'][part]:.1f}"
                                                for k in ks) + " |")
    for label, f in (("**driver process CPU**", lambda w: f"{1000 * w['cpu_s']:.1f}"),
                     ("ledger steps, wall", lambda w: f"{1000 * w['ledger_wall_s']:.1f}"),
                     ("wall per trial started (slot s / C)", lambda w: f"{1000 * w['slot_s']:.0f}"),
                     ("gap median (ms)", None), ("driver RSS MB", lambda w: f"{w['rss_mb']:.0f}")):
        if f is None:
            cells = [_f(_get(line, "gaps_around", k) and 1000 * line["gaps_around"][k],
                        "{:.0f}") for k in ks]
        else:
            cells = [f(ws[k]) for k in ks]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def end_table(line: dict) -> list[str]:
    """The end of one sweep, from its last report: Ray's fit returning, then each step."""
    end = line.get("end")
    if not end:
        return []
    out = [f"the end of the N={line['n']} sweep ({_f(line.get('end_s'), '{:.1f}')} s from "
           f"its last report to the exit; nested steps count in the step around them too):",
           "", "| step | n | wall s | CPU s |", "|---|---|---|---|",
           f"| Ray's Tuner.fit returns | 1 | {_f(end['fit_s'], '{:.2f}')} | - |"]
    for label, a in sorted(end["steps"].items(), key=lambda kv: -kv[1]["s"]):
        out.append(f"| {label} | {a['n']} | {a['s']:.2f} | {a['cpu_s']:.2f} |")
    return out


def goal_values(line: dict) -> dict:
    ws = line.get("driver") or {}
    ks = sorted(ws, key=int)
    r = _get(line, "after", "resume")
    return {"wall_over_ideal": line.get("wall_over_ideal"), "gap_max_s": line.get("gap_max_s"),
            "gap_median_s": line.get("gap_median_s"), "rss_growth_mb": line.get("rss_growth_mb"),
            "driver_ratio": _ratio(ws, ks, lambda w: w["cpu_s"]),
            # Context, not a goal: the same without the study's part around TPE's proposal
            # (scale_figures' study_other), which Optuna computes over every finished trial
            # at each ask (random below 10 trials: about 0 at trial 10).
            "driver_ratio_no_tpe": _ratio(ws, ks, lambda w: w["cpu_s"]
                                          - w["parts"]["study_other"]),
            "resume_s": r and r.get("first_new_trial_s"),
            "export_s": _get(line, "after", "export", "s"),
            "report_s": _get(line, "after", "report", "s"),
            "report_mb": _get(line, "after", "report", "html_mb")}


def _ratio(ws: dict, ks: list[str], f) -> float | None:
    """f(window at the last checkpoint) / f(window at the first)."""
    return f(ws[ks[-1]]) / f(ws[ks[0]]) if len(ks) > 1 and f(ws[ks[0]]) > 0 else None


def goals_table(tune_groups: dict) -> list[str]:
    out = ["| goal | sweep | measured | |", "|---|---|---|---|"]
    for label, figure, bound, where in GOALS:
        for (storage, c), by_n in sorted(tune_groups.items()):
            if any({"c": c, "storage": storage}[k] != v for k, v in where.items()):
                continue
            n = max(by_n)
            values = goal_values(by_n[n])
            v = values.get(figure)
            met = "-" if v is None else ("met" if v <= bound else "**not met**")
            note = "" if n >= 1000 else f" (N={n}: the goal is for N=1000)"
            out.append(f"| {label} | {storage}, C={c}, N={n}{note} | {_f(v)} | {met} |")
            if figure == "driver_ratio":
                out.append(f"| (the same less TPE's proposal, params, attrs: context, not "
                           f"a goal) | {storage}, C={c}, N={n} | "
                           f"{_f(values.get('driver_ratio_no_tpe'))} | - |")
    return out


def tables(lines: list[dict]) -> str:
    if not lines:
        return "no results"
    gs = groups(lines)
    tune = {k: v for k, v in gs.items() if k[0] != "plain"}
    out = []
    for (storage, c), by_n in sorted(tune.items()):
        loads = [x for ln in by_n.values() for x in (ln["load_before"][0], ln["load_after"][0])]
        m = next(iter(by_n.values()))["machine"]
        out += [f"### {storage}, C={c} slots ({m['host']}, {m['cpus']} CPUs, commit "
                f"{m['commit']}, {min(ln['date'] for ln in by_n.values())[:10]}, 1-min load "
                f"{min(loads):.2f}-{max(loads):.2f})", ""]
        out += sweep_table(by_n, gs.get(("plain", c))) + [""]
        out += split_table(by_n[max(by_n)]) + [""]
        out += end_table(by_n[max(by_n)]) + [""]
    failed = [ln for ln in lines if ln.get("rc") != 0]
    out += ["### goals", ""] + goals_table(tune)
    out += [f"- failed: {ln['arm']} {ln['storage']} N={ln['n']} C={ln['c']} (exit {ln['rc']})"
            for ln in failed]
    return "\n".join(out)


# --- the figure -------------------------------------------------------------------------
FIGURE = [  # (title, value of a line)
    ("wall / ideal", lambda ln: ln.get("wall_over_ideal")),
    ("driver CPU per trial at trial N (s)", lambda ln: _get(ln, "driver", str(ln["n"]),
                                                               "cpu_s")),
    ("gap median (s)", lambda ln: ln.get("gap_median_s")),
    ("gap largest (s)", lambda ln: ln.get("gap_max_s")),
    ("driver peak RSS (MB)", lambda ln: ln.get("peak_rss_mb")),
    ("record (MB)", lambda ln: _get(ln, "sizes", "record_mb")),
    ("study optuna.db (MB)", lambda ln: _get(ln, "sizes", "study_mb")),
    ("mlflow.db (MB)", lambda ln: _get(ln, "sizes", "mlflow_db_mb")),
    ("resume: first trial (s)", lambda ln: _get(ln, "after", "resume", "first_trial_s")),
    ("export (s)", lambda ln: _get(ln, "after", "export", "s")),
    ("report (s)", lambda ln: _get(ln, "after", "report", "s")),
    ("report.html (MB)", lambda ln: _get(ln, "after", "report", "html_mb")),
    ("ui: runs listed (s)", lambda ln: _get(ln, "after", "ui", "listed_s")),
]


def draw(lines: list[dict], path: Path) -> None:
    """Each cost against N, log-log, one line per (storage, slots); the plain loop dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = groups(lines)
    cols = 4
    rows = -(-len(FIGURE) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows))
    for ax, (title, value) in zip(axes.flat, FIGURE):
        for (storage, c), by_n in sorted(gs.items()):
            pts = [(n, value(ln)) for n, ln in sorted(by_n.items())]
            pts = [(n, v) for n, v in pts if v is not None and v > 0]
            if pts:
                ax.plot(*zip(*pts), "--" if storage == "plain" else "-", marker="o",
                        label=f"{storage}, C={c}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("trials N", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(FIGURE):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.suptitle("tune-smpl at scale: each cost against the sweep's size (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
