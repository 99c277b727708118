"""A tracking server down for 120 s mid-sweep: the sweep's wall time against the same sweep
with the server up, and whether MLflow ends complete without a resume (issue 25).

    python benchmarks/tracking_outage.py [--pairs 1] [--outage 120] [--after 10]
                                         [--out FILE] [--quick]
    python benchmarks/tracking_outage.py --report FILE        # the table again

Each pair runs one sweep twice with the same seed and settings, each time in a fresh
`tune-smpl tune` process (its own local Ray, 2 CPUs, 2 trial slots) against a fresh
`mlflow server` on 127.0.0.1 (sqlite store, --workers 1): **up** (the server up throughout)
and **outage** (the server SIGKILLed `--after` seconds after the sweep's first report and
started again on the same port and store `--outage` seconds later; the outage counted is
from the kill to its first answer, so its own start-up is in it). The arms alternate (up
first in even pairs). The sweep: 12 trials of the `make tune` digits config with a report
every 50 steps (12 reports a trial), the random sampler (the same 12 configs in both arms,
whatever the timing) and no early stop (the grace period is every report), so both arms
do the same work; about 3-4 minutes on the 2-core dev machine.

Per run: the command's wall time (process start to exit), its exit status, the lines it
printed about MLflow (`unreachable since`, `answers again`, `behind the record`, and
MLflow's own `View run`), and MLflow checked against the record once the command exited:
every trial's child run, every metric point at its step, every outcome and run status, the
parent run FINISHED. One JSON line per run is appended to FILE (default
benchmarks/tracking_outage_results.jsonl); the table gives per pair the two walls and
their ratio (the goal: outage / up <= 1.10, MLflow complete). `--quick` is a CI-sized run
(4 small moons trials, a 5 s outage) that checks the script, not the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "tracking_outage_results.jsonl"
TRIAL = {"dataset": "digits", "steps": 600, "eval_every": 50}  # the make tune config, 12 reports
TRIALS = 12
QUICK_TRIAL = {"dataset": "moons", "steps": 40, "eval_every": 10, "batch_size": 8, "mu": 2}
GOAL = 1.10


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--outage", type=float, default=120.0, help="seconds from kill to restart")
    p.add_argument("--after", type=float, default=10.0,
                   help="seconds after the first report that the server is killed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS), help="results file (JSON lines, appended)")
    p.add_argument("--report", metavar="JSONL", help="only print the table of a results file")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    args = p.parse_args(argv)
    args.trial, args.trials = dict(TRIAL), TRIALS
    args.started = dt.datetime.now().isoformat(timespec="seconds")  # this invocation
    if args.quick:
        args.trial, args.trials, args.outage, args.after = dict(QUICK_TRIAL), 4, 5.0, 0.0
    return args


def env(tag: str) -> dict:
    """A tune-smpl subprocess's environment: its own short Ray temp dir, the checkout on
    PYTHONPATH, no RAY_ADDRESS, and the user's MLflow http settings left to tune-smpl."""
    out = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0", TUNE_SMPL_RAY_TMP=f"/tmp/rt_{os.getpid()}_{tag}",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    out["PYTHONPATH"] = f"{ROOT}{os.pathsep}{out.get('PYTHONPATH', '')}"
    for key in ("RAY_ADDRESS", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        out.pop(key, None)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, tag: str) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port over root's store, once it answers."""
    from mlflow_tracking import check_store

    log = open(root / f"server-{tag}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "mlartifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env("server"), cwd=root,
        start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}: see {log.name}")
        try:
            check_store(f"http://127.0.0.1:{port}", timeout_s=1)
            return proc
        except ValueError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up in 180 s: see {log.name}") from None
            time.sleep(0.2)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def reports(sweep: Path) -> int:
    n = 0
    for f in sweep.glob("trial_*/trial.json"):
        try:
            n += len(json.loads(f.read_text())["reports"])
        except (OSError, ValueError, KeyError):
            pass  # being replaced
    return n


def check_mlflow(uri: str, sweep: Path) -> list[str]:
    """What MLflow lacks or shows otherwise than the record (empty: complete)."""
    from mlflow import MlflowClient

    from mlflow_tracking.values import TRIAL_STATUSES
    from tune_smpl.sweep.tracking import report_metrics

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-smpl")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep_name = '{sweep.name}'",
                              max_results=1000)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    children = {r.data.tags.get("trial_id"): r for r in runs
                if r.data.tags.get("run_kind") == "trial"}
    problems = []
    if len(parents) != 1:
        return [f"{len(parents)} parent runs"]
    if (parents[0].info.status, parents[0].data.tags.get("sweep_status")) != (
            "FINISHED", "finished"):
        problems.append(f"parent {parents[0].info.status}")
    if len(children) != len(runs) - 1:
        problems.append("a trial with two runs")
    for f in sorted(sweep.glob("trial_*/trial.json")):
        t = json.loads(f.read_text())
        c = children.get(t["key"])
        if c is None:
            problems.append(f"trial {t['key']}: no run")
            continue
        want = (t["outcome"], TRIAL_STATUSES.get(t["outcome"]))
        if (c.data.tags.get("trial_status"), c.info.status) != want:
            problems.append(f"trial {t['key']}: {c.data.tags.get('trial_status')}")
        points: dict[str, list] = {}
        for row in t["reports"]:
            for k, v in report_metrics(row).items():
                points.setdefault(k, []).append((row["step"], _plain(v)))
        for k, want_points in points.items():
            got = [(m.step, _plain(m.value)) for m in
                   client.get_metric_history(c.info.run_id, k)]
            if got != want_points:
                problems.append(f"trial {t['key']} {k}: {len(got)} of {len(want_points)}")
    return problems


def _plain(v) -> object:
    v = float(v)
    return "nan" if math.isnan(v) else v


def one_run(args, pair: int, arm: str, work: Path) -> dict:
    root = work / f"p{pair}-{arm}"
    root.mkdir(parents=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = {"proc": start_server(root, port, "first")}
    name = f"outage-p{pair}-{arm}"
    sweep = root / "runs" / name
    sets = sum((["--set", f"{k}={v}"] for k, v in args.trial.items()), [])
    reports_per_trial = math.ceil(args.trial["steps"] / args.trial["eval_every"])
    cmd = [sys.executable, "-m", "tune_smpl", "tune", "--name", name, "--storage-path",
           str(root / "runs"), "--tracking-uri", uri, "--num-samples", str(args.trials),
           "--sampler", "random", "--seed", str(args.seed), "--num-cpus", "2",
           "--gpus-per-trial", "0", "--grace-period", str(reports_per_trial), *sets]
    window: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env(f"{arm}{pair}"), cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def outage():
        while reports(sweep) < 1 and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(args.after)
        if proc.poll() is not None:
            return
        kill(server["proc"])
        window["down"] = time.monotonic()
        time.sleep(args.outage)
        server["proc"] = start_server(root, port, "second")
        window["up"] = time.monotonic()

    chaos = threading.Thread(target=outage, daemon=True)
    if arm == "outage":
        chaos.start()
    try:
        out, _ = proc.communicate(timeout=3600)
        wall = time.monotonic() - t0
        if arm == "outage":
            chaos.join(600)
        problems = check_mlflow(uri, sweep)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill(server["proc"])
    (root / "command.log").write_text(out)
    lines = out.splitlines()
    return {
        "date": dt.date.today().isoformat(), "started": args.started, "machine": machine(),
        "pair": pair, "arm": arm,
        "seed": args.seed, "trials": args.trials, "trial": args.trial, "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "outage_s": round(window["up"] - window["down"], 1) if "up" in window else 0.0,
        "down_at_s": round(window["down"] - t0, 1) if "down" in window else None,
        "unreachable_lines": sum("unreachable since" in x for x in lines),
        "caught_up_lines": sum("answers again" in x for x in lines),
        "behind_lines": sum("behind the record" in x for x in lines),
        "view_run_lines": sum("View run" in x or "View experiment" in x for x in lines),
        "mlflow_complete": not problems, "problems": problems[:20],
        "load_1min": round(os.getloadavg()[0], 2),
    }


def machine() -> str:
    name = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {os.cpu_count()}-core {name}"


def table(rows: list[dict]) -> str:
    pairs: dict[tuple, dict] = {}
    for r in rows:
        pairs.setdefault((r["started"], r["pair"]), {})[r["arm"]] = r
    out = ["| pair | up: wall (s) | outage: wall (s) | outage (s) | ratio | MLflow complete "
           "| lines: unreachable / caught up / View run |", "|---|---|---|---|---|---|---|"]
    for (started, pair), arms in sorted(pairs.items()):
        up, down = arms.get("up"), arms.get("outage")
        if not (up and down):
            continue
        ratio = down["wall_s"] / up["wall_s"]
        done = "yes" if up["mlflow_complete"] and down["mlflow_complete"] else "no"
        out.append(f"| {started} #{pair} | {up['wall_s']:.1f} | {down['wall_s']:.1f} | "
                   f"{down['outage_s']:.0f} | {ratio:.3f} ({'met' if ratio <= GOAL else 'not met'})"
                   f" | {done} | {down['unreachable_lines']} / {down['caught_up_lines']} / "
                   f"{down['view_run_lines'] + up['view_run_lines']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        rows = [json.loads(x) for x in Path(args.report).read_text().splitlines() if x]
        print(table(rows))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="tracking_outage_") as d:
        for pair in range(args.pairs):
            arms = ("up", "outage") if pair % 2 == 0 else ("outage", "up")
            for arm in arms:
                row = one_run(args, pair, arm, Path(d))
                rows.append(row)
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(table(rows))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
