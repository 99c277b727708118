"""What benchmarks/scale.py runs: a `tune-smpl tune` sweep with timers on the driver, the
plain Optuna loop over C worker processes, and the commands a user runs on a finished
sweep (`--resume` of an interrupted copy, `export`, `report`, `ui`), each in a fresh
process as a user starts it, each measured from outside and from its record.

    python benchmarks/scale_runs.py --child EVENTS tune ARGS...   # the timed command
    python benchmarks/scale_runs.py --plain JOB                   # the plain loop

Every process this module starts runs in its own process group, binds 127.0.0.1 only, and
is ended by that group (never by a name).
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks

import overhead  # noqa: E402 - the plain loop's worker, the MLflow store
import scale_figures as fig  # noqa: E402
from chaos_faults import CREDS, S3, command_env, kill_group  # noqa: E402
from overhead_profile import install_timers  # noqa: E402

SAMPLE_S = 0.2  # the driver's CPU and RSS, every this many seconds
# The driver's steps a timed command wraps: (module, attribute path, label). The labels are
# what scale_figures splits by; the steps nest (a ledger step holds the study's calls).
TIMED = [
    ("tune_smpl.launch", "prepare", "plan (the record read, the checks)"),
    ("tune_smpl.sweep.cluster", "connect", "Ray start"),
    ("tune_smpl.launch", "_recorder", "MLflow parent run"),
    ("tune_smpl.sweep.record", "SweepRecord.scan", "record read"),
    ("tune_smpl.sweep.run", "build_study", "study from the record"),
    ("tune_smpl.sweep.tracking", "Tracking.reconcile", "MLflow backfill queued"),
    ("ray.tune", "Tuner.fit", "Tuner.fit"),
    ("tune_smpl.sweep.ledger", "Ledger.new_trial", "ledger"),
    ("tune_smpl.sweep.ledger", "Ledger.started", "ledger"),
    ("tune_smpl.sweep.ledger", "Ledger.reported", "ledger"),
    ("tune_smpl.sweep.ledger", "Ledger.ended", "ledger"),
    ("tune_smpl.sweep.ledger", "proposer", "proposer"),
    ("optuna.study", "Study.ask", "ask"),
    ("optuna.study", "Study.tell", "tell"),
    ("tune_smpl.sweep.record", "SweepRecord.save_trial", "record put"),
    ("tune_smpl.sweep.tracking", "Tracking._call", "mlflow put"),
    ("tune_smpl.sweep.storage", "SweepStorage.write_text", "record write"),
    ("tune_smpl.sweep.writer", "Writer._write", "mlflow write"),
    ("tune_smpl.sweep.callbacks", "ProgressLine.on_step_end", "progress line"),
    ("tune_smpl.sweep.callbacks", "LedgerCallback.on_step_end", "notices"),
    ("tune_smpl.launch", "close", "end: summary, MLflow, report"),
    # inside it (and the best model, read on MLflow's writer thread)
    ("tune_smpl.sweep.summary", "print_finished", "end: summary"),
    ("tune_smpl.sweep.tracking", "Tracking.end_sweep", "end: MLflow parent run's end queued"),
    ("tune_smpl.launch", "_best_model", "end: best model read (MLflow's writer thread)"),
    ("tune_smpl.launch", "_publish", "end: report drawn and queued"),
    ("tune_smpl.launch", "finish", "end: MLflow's writes waited for"),
    ("ray", "shutdown", "Ray shutdown"),
]
STARTUP_STEPS = ("plan (the record read, the checks)", "Ray start", "MLflow parent run",
                 "record read", "study from the record", "MLflow backfill queued")
ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}


# --- the timed command (in its own process) ---------------------------------------------
def _wrap(events: list, label: str, fn):
    main = threading.main_thread().ident

    @functools.wraps(fn)  # keeps the signature (tracking.Tracking binds it)
    def timed(*args, **kwargs):
        t0, c0 = time.time(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            events.append((label, threading.get_ident() == main, t0, time.time(),
                           time.thread_time() - c0))
    return timed


def _rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(events_file: str, argv: list[str]) -> None:
    """`tune-smpl ARGV` with timers on the driver's steps and a thread that samples the
    process's CPU, the main thread's CPU and the RSS; all of it to `events_file` at the
    end (a Ctrl-C ends the command normally, so it is written then too). The command runs
    through the executable's own `console`, so that it ends as a user's does: by
    `os._exit` after the exit handlers, without the interpreter's teardown (2-3 s on this
    machine, which `main` alone would add to every measured end)."""
    events: list = []
    install_timers(TIMED, lambda label, fn: _wrap(events, label, fn))
    samples: list = []
    clock = time.pthread_getcpuclockid(threading.main_thread().ident)
    done = threading.Event()

    def sample():
        while True:
            t = os.times()
            samples.append((time.time(), t.user + t.system, time.clock_gettime(clock),
                            _rss_kb()))
            if done.wait(SAMPLE_S):
                return

    threading.Thread(target=sample, daemon=True).start()
    from tune_smpl.cli import console

    sys.argv = ["tune-smpl", *argv]
    main_at = time.time()
    try:
        console()  # ends by SystemExit; its exit handler then ends the process
    finally:
        done.set()
        Path(events_file).write_text(json.dumps({
            "main_at": main_at, "end_at": time.time(), "events": events, "samples": samples,
            "peak_rss_kb": _rss_kb("VmHWM")}))


# --- processes ------------------------------------------------------------------------
class Command:
    """One command in its own process group, its output in `log`; `wait` ends the group's
    stragglers (only processes this command started are in it)."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict):
        self.log = log
        self.t0 = time.time()
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=fh,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_default_sigint)

    def wait(self, timeout: float) -> tuple[int, float]:
        """(exit status, its wall seconds); 124 when it ran past `timeout`. The group is
        ended however the wait ends (a Ctrl-C of the benchmark too)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = 124
        finally:
            t1 = time.time()
            kill_group(self.proc.pid)
            self.proc.wait()
        return rc, t1 - self.t0

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _default_sigint() -> None:  # a background shell's children start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Work:
    """The benchmark's folder, a moto S3 server on 127.0.0.1 once an S3 arm needs one, and
    a short Ray temp root per command (Ray's socket paths must fit in 107 bytes)."""

    def __init__(self, root: Path):
        self.root, self.moto, self._n = root, None, 0
        root.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict:
        self._n += 1
        return {**command_env(f"/tmp/rt_{os.getpid()}_sc{self._n}"), **CREDS}

    def storage(self, kind: str, folder: Path, tag: str) -> str:
        if kind == "local":
            return str(folder / "runs")
        if self.moto is None:  # the record is read back in this process too
            self.moto = S3(self.root / "moto", proxied=False)
        return self.moto.uri(tag)

    def close(self) -> None:
        if self.moto is not None:
            self.moto.close()
            self.moto = None
        for n in range(1, self._n + 1):
            shutil.rmtree(f"/tmp/rt_{os.getpid()}_sc{n}", ignore_errors=True)


def timed(work: Work, folder: Path, log: str, argv: list[str], timeout: float,
          events: Path | None = None) -> tuple[int, float, float, Command]:
    """`tune-smpl ARGV` in `folder` (with timers when `events` is given); (exit status,
    start, wall seconds, the command)."""
    head = ([sys.executable, __file__, "--child", str(events)] if events else
            [sys.executable, "-m", "tune_smpl"])
    cmd = Command([*head, *argv], folder, folder / log, work.env())
    rc, wall = cmd.wait(timeout)
    return rc, cmd.t0, wall, cmd


# --- a sweep --------------------------------------------------------------------------
def tune_args(name: str, root: str, tracking: str, n: int, c: int, sets: list[str],
              seed: int = 0) -> list[str]:
    """The sweep as a user types it: TPE + ASHA (the defaults), MLflow on SQLite, 2 CPUs
    offered, C slots of 2/C CPUs each (fractional CPUs: each trial is a Ray worker)."""
    return ["tune", "--name", name, "--storage-path", root, "--tracking-uri", tracking,
            "--dataset", "moons", *sum((["--set", s] for s in sets), []),
            "--num-samples", str(n), "--num-cpus", "2", "--cpus-per-trial", f"{2 / c:g}",
            "--max-concurrent", str(c), "--seed", str(seed)]


def record_of(root: str, name: str):
    from tune_smpl.sweep.record import SweepRecord
    from tune_smpl.sweep.storage import SweepStorage

    return SweepRecord(SweepStorage(root), name)


def _bytes(storage, *parts: str, only=None) -> int:
    """Bytes of the files below `parts` (those `only(path)` keeps)."""
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(storage.path(*parts), recursive=True, allow_not_found=True)
    return sum(i.size or 0 for i in storage.fs.get_file_info(sel)
               if i.type == pafs.FileType.File and (only is None or only(i.path)))


def sizes(record, folder: Path) -> dict:
    """On disk (MB): the record (sweep.json, space.yaml, the trial.json files), the whole
    sweep folder (with Ray's files and the checkpoints), the study, MLflow's store and
    artifacts."""
    from tune_smpl.sweep.study import study_file

    def record_file(path: str) -> bool:
        return posixpath.basename(path) in ("sweep.json", "space.yaml", "prior.json",
                                            "trial.json")

    mb = 1 / 2**20
    study = Path(folder, "runs", record.name, "optuna.db")
    if record.storage.local:
        study = study_file(record.storage, record.name)
    artifacts = sum(f.stat().st_size for f in (folder / "mlartifacts").rglob("*")
                    if f.is_file())
    return {"record_mb": _bytes(record.storage, record.name, only=record_file) * mb,
            "sweep_folder_mb": _bytes(record.storage, record.name) * mb,
            "study_mb": (study.stat().st_size if study.exists() else 0) * mb,
            "mlflow_db_mb": (folder / "mlflow.db").stat().st_size * mb,
            "mlflow_artifacts_mb": artifacts * mb}


def run_sweep(work: Work, storage: str, n: int, c: int, sets: list[str], checkpoints: list[int],
              half: int) -> tuple[dict, dict | None]:
    """One measured sweep: (its figures, what the after-steps need, None if it failed)."""
    tag = f"{storage}-n{n}-c{c}"
    folder = work.root / tag
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tracking = overhead.mlflow_store(folder)  # made first: a user's store exists already
    root, name = work.storage(storage, folder, tag), f"scale-{tag}"
    events = folder / "events.json"
    rc, t0, wall, cmd = timed(work, folder, "tune.log",
                              tune_args(name, root, tracking, n, c, sets),
                              timeout=900 + 20 * n, events=events)
    if rc != 0:
        return {"rc": rc, "error": cmd.tail()}, None
    trials = record_of(root, name).trials()
    spans = fig.spans_of(trials)
    got = json.loads(events.read_text())
    starts = sorted(s for s, _ in spans)
    line = {"rc": rc, **fig.sweep_figures(t0, t0 + wall, spans, c),
            "gaps_around": fig.gaps_around(spans, checkpoints, c, half),
            "driver": fig.driver_windows(got["events"], got["samples"], starts, checkpoints, c,
                                         half),
            "end": fig.end_split(got["events"], max(e for _, e in spans)),
            "peak_rss_mb": got["peak_rss_kb"] / 1024,
            "sizes": sizes(record_of(root, name), folder),
            "outcomes": _count(t.outcome for t in trials), "events": len(got["events"])}
    at = [w["rss_mb"] for w in line["driver"].values()]  # by checkpoint, ascending
    line["rss_growth_mb"] = max(at) - at[0] if len(at) > 1 else None
    return line, {"root": root, "name": name, "folder": folder, "tracking": tracking, "n": n,
                  "c": c, "storage": storage, "tag": tag}


def _count(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[str(x)] = out.get(str(x), 0) + 1
    return out


# --- the plain Optuna loop ------------------------------------------------------------
def run_plain(work: Work, n: int, c: int, sets: list[str], checkpoints: list[int],
              half: int) -> dict:
    """The plain loop (`--plain`) in a fresh process: the same task, the same TPE settings
    (multivariate, constant liar, the start-up tune-smpl takes for n trials on c slots) on
    an in-memory study, c spawned worker processes of one torch thread; no pruning, no
    checkpoints, no tracking."""
    from smpl_core.config import SMPLConfig
    from tune_smpl.sweep.study import startup_trials

    folder = work.root / f"plain-n{n}-c{c}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = SMPLConfig.from_dict({"dataset": "moons", **{k: overhead._yaml(v) for k, v in (
        x.split("=", 1) for x in sets)}}).to_dict()
    job = folder / "plain.json"
    job.write_text(json.dumps({"base": base, "n": n, "c": c,
                               "startup": startup_trials(n, c)}))
    cmd = Command([sys.executable, __file__, "--plain", str(job)], folder,
                  folder / "plain.log", {**os.environ, **ENV})
    rc, wall = cmd.wait(900 + 20 * n)
    if rc != 0:
        return {"rc": rc, "error": cmd.tail()}
    got = json.loads(job.read_text())
    spans = [tuple(x) for x in got["spans"]]
    return {"rc": 0, **fig.sweep_figures(cmd.t0, cmd.t0 + wall, spans, c),
            "gaps_around": fig.gaps_around(spans, checkpoints, c, half),
            "driver": fig.plain_windows(got["asks"], checkpoints, half),
            "peak_rss_mb": got["peak_rss_kb"] / 1024}


def plain_loop(job_file: str) -> None:
    """Ask, run on a free worker, tell: the Optuna loop a user writes for C processes."""
    import concurrent.futures as cf
    import multiprocessing as mp

    import optuna

    from search_spaces import load_space, make_define_by_run

    job = json.loads(Path(job_file).read_text())
    base, n, c = job["base"], job["n"], job["c"]
    define = make_define_by_run(load_space("smpl", base))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
        seed=0, n_startup_trials=job["startup"], multivariate=True, constant_liar=True))
    spans, asks, running = [], [], {}
    with cf.ProcessPoolExecutor(c, mp.get_context("spawn"), overhead._worker_init) as pool:
        def submit():
            t = time.perf_counter()
            trial = study.ask()
            define(trial)
            cpu = os.times()
            asks.append([time.perf_counter() - t, 0.0, cpu.user + cpu.system])
            running[pool.submit(overhead._objective, {**base, **trial.params})] = (
                trial, len(asks) - 1)

        for _ in range(min(c, n)):
            submit()
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for f in done:
                trial, i = running.pop(f)
                start, end, values, diverged = f.result()
                spans.append((start, end))
                t = time.perf_counter()
                overhead.tell(study, trial, values, diverged)
                asks[i][1] = time.perf_counter() - t
                if len(asks) < n:
                    submit()
    Path(job_file).write_text(json.dumps({**job, "spans": spans, "asks": asks,
                                          "peak_rss_kb": _rss_kb("VmHWM")}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3:])
    if sys.argv[1:2] == ["--plain"]:
        plain_loop(sys.argv[2])
        sys.exit(0)
    sys.exit(f"usage: {__doc__.splitlines()[3].strip()}")
