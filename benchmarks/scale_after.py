"""The commands a user runs on a finished sweep, for benchmarks/scale.py, each in a fresh
process and measured: `tune --resume` of an interrupted copy of the sweep, `export`,
`report` and `ui` (scale_runs has the processes and the timed command)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import scale_figures as fig
from chaos_faults import free_port
from scale_runs import STARTUP_STEPS, Command, Work, record_of, timed


def copy_record(src, dst, num_samples: int, tracking: str) -> None:
    """The record's files (not Ray's, not the checkpoints: a resume of finished trials reads
    neither) into `dst`, `num_samples` raised so that the copy has trials to run, and its
    MLflow store `tracking` (a copy of the sweep's: the same runs, under another URI)."""
    from tune_smpl.sweep.storage import json_text

    files = [(f,) for f in ("sweep.json", "space.yaml", "prior.json")
             if src.storage.exists(src.name, f)]
    files += [(d, "trial.json") for d in src.storage.list_dirs(src.name)
              if d.startswith(("trial_", "finalist_"))]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: dst.storage.write_text(src.storage.read_text(src.name, *p),
                                                       dst.name, *p), files))
    meta = json.loads(dst.storage.read_text(dst.name, "sweep.json"))
    meta["settings"]["num_samples"] = num_samples
    if "mlflow_complete" in meta:  # the copy of the store is as complete as the store
        meta["mlflow_complete"]["uri"] = tracking
    dst.storage.write_text(json_text(meta), dst.name, "sweep.json")


def _started(record, key: str) -> bool:
    try:
        return bool(json.loads(record.storage.read_text(record.name, f"trial_{key}",
                                                        "trial.json")).get("started"))
    except (OSError, ValueError):  # not written yet, or written as we read
        return False


def resume(work: Work, s: dict, extra: int) -> dict:
    """`--resume` of an interrupted copy of the sweep: the copy's record gets `extra` more
    trials to run; a first `--resume` is stopped by a real SIGINT once the first of them
    started (a first report would let quick trials end and more start before the stop; its
    C trials then stand interrupted, as a Ctrl-C leaves them, the rest never
    started); the measured `--resume` runs from there to the end, in a fresh working
    directory (another machine: an S3 sweep's study is rebuilt there). Measured: seconds
    from the command's start to its first trial's start (and to its first never-started
    trial's), the start-up split, the command's wall time."""
    folder = s["folder"] / "resume"
    shutil.rmtree(folder, ignore_errors=True)
    first_cwd, cwd = folder / "first", folder / "second"
    first_cwd.mkdir(parents=True)
    cwd.mkdir()
    shutil.copy(s["folder"] / "mlflow.db", folder / "mlflow.db")
    tracking = f"sqlite:///{folder}/mlflow.db"
    root = (str(folder / "runs") if s["storage"] == "local" else
            work.storage(s["storage"], folder, s["tag"] + "-copy"))
    src, dst = record_of(s["root"], s["name"]), record_of(root, s["name"])
    copy_record(src, dst, s["n"] + extra, tracking)
    argv = ["tune", "--name", s["name"], "--resume", "--storage-path", root,
            "--tracking-uri", tracking]
    cmd = Command([sys.executable, "-m", "tune_smpl", *argv], first_cwd, folder / "first.log",
                  work.env())
    deadline, key = time.monotonic() + 600, f"{s['n']:04d}"
    while cmd.proc.poll() is None and time.monotonic() < deadline:
        if _started(dst, key):
            cmd.proc.send_signal(signal.SIGINT)  # Ctrl-C, taken at the driver's safe point
            break
        time.sleep(0.3)
    first_rc, _ = cmd.wait(300)
    before = {t.key for t in dst.trials() if t.started}
    events = cwd / "events.json"
    rc, t0, wall, second = timed(work, cwd, "resume.log", argv, timeout=900 + 60 * extra,
                                 events=events)
    out = {"interrupt_rc": first_rc, "interrupted": len(before) - s["n"], "rc": rc,
           "command_s": wall}
    if rc != 0:
        return {**out, "error": second.tail()}
    trials = dst.trials()
    got = json.loads(events.read_text())
    new = {t.key for t in trials} - before
    return {**out, "trials": len(trials), "finished": sum(t.finished for t in trials),
            "first_trial_s": fig.first_start_after(trials, t0),
            "first_new_trial_s": fig.first_start_after(trials, t0, new),
            "python_start_s": got["main_at"] - t0,
            "steps": fig.step_totals(got["events"], STARTUP_STEPS)}


def command_timed(work: Work, s: dict, log: str, argv: list[str]) -> dict:
    folder = s["folder"] / log.split(".")[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rc, _, wall, cmd = timed(work, folder, log, argv, timeout=1800)
    return {"rc": rc, "s": wall, **({"error": cmd.tail()} if rc else {})}


def export(work: Work, s: dict) -> dict:
    """`tune-smpl export NAME`: the best config into a file, from the record."""
    return command_timed(work, s, "export.log", [
        "export", s["name"], "--storage-path", s["root"], "--tracking-uri", s["tracking"],
        "-o", "best.yaml"])


def report(work: Work, s: dict) -> dict:
    """`tune-smpl report NAME -o DIR`: seconds, and the size of report.html (and of DIR)."""
    out = s["folder"] / "report_out"
    shutil.rmtree(out, ignore_errors=True)
    got = command_timed(work, s, "report.log", ["report", s["name"], "--storage-path",
                                                s["root"], "-o", str(out)])
    html = out / "report.html"
    mb = 1 / 2**20
    return {**got, "html_mb": html.stat().st_size * mb if html.exists() else None,
            "folder_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) * mb
            if out.exists() else None}


def _http(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def ui(work: Work, s: dict) -> dict:
    """`tune-smpl ui` on the sweep's store: seconds from the command's start until the
    experiment page's runs listing answers with runs (MLflow's REST `runs/search`, the call
    the browser's runs page makes: 100 runs, newest first), then that call once more on the
    warm server, and the parent run's child runs (the page's nested rows)."""
    folder = s["folder"] / "ui"
    folder.mkdir(exist_ok=True)
    port = free_port()
    cmd = Command([sys.executable, "-m", "tune_smpl", "ui", "--tracking-uri", s["tracking"],
                   "--host", "127.0.0.1", "--port", str(port)], folder, folder / "ui.log",
                  work.env())
    base = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow"
    out: dict = {"listed_s": None}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and cmd.proc.poll() is None:
            try:
                exp = _http(f"{base}/experiments/get-by-name?experiment_name=tune-smpl")
                body = {"experiment_ids": [exp["experiment"]["experiment_id"]], "filter": "",
                        "run_view_type": "ACTIVE_ONLY", "max_results": 100,
                        "order_by": ["attributes.start_time DESC"]}
                runs = _http(f"{base}/runs/search", body).get("runs", [])
            except OSError:  # not up yet
                time.sleep(0.2)
                continue
            if runs:
                out["listed_s"] = time.time() - cmd.t0
                break
            time.sleep(0.2)
        if out["listed_s"] is None:
            return {**out, "error": cmd.tail()}
        t = time.time()
        _http(f"{base}/runs/search", body)
        out["search_again_s"] = time.time() - t
        parent = next((r for r in runs if r["data"].get("tags") and any(
            g["key"] == "run_kind" and g["value"] == "sweep" for g in r["data"]["tags"])), None)
        if parent is not None:
            t = time.time()
            kids = _http(f"{base}/runs/search", {**body, "filter": (
                f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'")})
            out["children_s"] = time.time() - t
            out["children_listed"] = len(kids.get("runs", []))
        return out
    finally:
        try:
            os.killpg(cmd.proc.pid, signal.SIGINT)  # Ctrl-C: the UI stops its server
            cmd.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        cmd.wait(1)


def after(work: Work, s: dict, extra: int) -> dict:
    """The commands a user runs on the finished sweep, each measured; `took_s`: the step's
    wall time with its preparation and teardown (a copy, the interrupted first resume, a
    server's stop)."""
    out = {}
    for step, run in (("resume", lambda: resume(work, s, extra)), ("export", lambda: export(
            work, s)), ("report", lambda: report(work, s)), ("ui", lambda: ui(work, s))):
        t = time.time()
        out[step] = {**run(), "took_s": time.time() - t}
    return out
