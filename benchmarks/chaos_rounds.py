"""One round of the chaos benchmark: the sweep, its fault, what a user does next, the checks.

A round runs `tune-smpl tune` as a subprocess in its own session, injects its fault from
this process while watching the record (its instant: seconds after the command started, or
just after the sweep's R-th report), then runs `--resume` until the sweep finished (the first
command again where the fault came before the record existed; `tune-smpl sync` where
MLflow was still away when the sweep ended), and checks the invariants on the views.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import chaos_faults as faults
import chaos_invariants as invariants
from chaos import MODES, SETUP

TUNE = [sys.executable, "-m", "tune_smpl"]
# A command that leaves MLflow behind although the server was back this long before it
# ended did not catch up when it could (its wait takes a server back within a second; Ray's
# shutdown and the interpreter's exit come after it).
BACK_FOR_S = 15.0


def _default_sigint() -> None:  # a background shell's children start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """A `tune-smpl` subprocess in its own session; its output collected by a thread."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.argv, self.t0 = argv, time.time()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_default_sigint)
        self.chunks: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.rc: int | None = None
        self.end: float | None = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.chunks.append(line)

    @property
    def out(self) -> str:
        return "".join(self.chunks)

    def finish(self, timeout: float) -> None:
        """Wait for the exit (None after `timeout`: killed), then clean its group up."""
        try:
            self.rc = self.proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.rc = None
        self.end = time.time()
        faults.kill_group(self.proc.pid)  # what the command left (its Ray, when killed)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)

    def line(self, role: str, allowed: tuple) -> dict:
        what = self.argv[3] + (" --resume" if "--resume" in self.argv else "")
        return {"role": role, "command": what, "rc": self.rc,
                "allowed": list(allowed), "wall_s": round((self.end or time.time()) - self.t0, 2)}


class Runner:
    """Rounds, one after the other, and the services they share."""

    def __init__(self, work: Path | None, quick: bool, keep: bool):
        self.tmp = None if work else tempfile.mkdtemp(prefix="chaos_")
        self.work = Path(work or self.tmp)
        self.work.mkdir(parents=True, exist_ok=True)
        self.quick, self.keep, self.m = quick, keep, MODES[quick]
        self.mlflow = self.s3 = self.cluster = None
        self.count, self._sync = 0, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in (self.cluster, self.s3, self.mlflow):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def has_sync(self) -> bool:
        if self._sync is None:
            done = subprocess.run([*TUNE, "sync", "--help"], capture_output=True,
                                  env=faults.command_env(None), timeout=120)
            self._sync = done.returncode == 0
        return self._sync

    # --- a setup: where the record, the study and MLflow are -----------------------
    def _setup(self, setup: str, d: Path, name: str) -> dict:
        runs, sqlite = d / "runs", f"sqlite:///{d}/mlflow.db"
        ctx = {"storage": str(runs), "tracking": sqlite, "extra": ["--num-cpus", "2"],
               "resume_extra": [], "study": runs / name / "optuna.db",
               "read": lambda: invariants.read_local(runs / name)}
        if setup == "http":
            if self.mlflow is None:
                self.mlflow = faults.MlflowServer(self.work / "mlflow_server")
                self.mlflow.start()
            ctx["tracking"] = self.mlflow.uri
        elif setup == "s3":
            if self.s3 is None:
                self.s3 = faults.S3(self.work / "moto")
            folder = d.name
            ctx["storage"] = self.s3.uri(folder)
            ctx["read"] = lambda: invariants.read_bucket(self.s3.client, faults.S3.BUCKET,
                                                         f"{folder}/{name}")
        elif setup == "cluster":
            if self.cluster is None:
                self.cluster = faults.Cluster(self.work / "cluster", f"cc{os.getpid()}")
            more = ["--address", self.cluster.address, "--shared-storage"]
            ctx["extra"] = [*more, "--cpus-per-trial", "1"]
            ctx["resume_extra"] = more
        return ctx

    def _env(self, setup: str) -> dict:
        if setup == "cluster":
            return self.cluster.env
        self.count += 1
        return faults.command_env(f"/tmp/rt_c{os.getpid()}_{self.count}")

    # --- a round ----------------------------------------------------------------------
    def run(self, spec: dict) -> dict:
        kind, seed = spec["kind"], spec["seed"]
        setup = spec.get("setup") or SETUP[kind]
        d = self.work / f"{kind}-{setup}-{seed}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        name, t0, m = f"c{seed}", time.time(), self.m
        ctx = self._setup(setup, d, name)
        first_argv = [*TUNE, "tune", "--name", name, "--storage-path", ctx["storage"],
                      "--tracking-uri", ctx["tracking"], "--dataset", "moons",
                      "--num-samples", str(m["trials"]), "--max-concurrent", "2",
                      "--seed", str(seed % 100_000), "--grace-period", "2",
                      *sum((["--set", s] for s in m["sets"]), []), *ctx["extra"]]
        resume_argv = [*TUNE, "tune", "--name", name, "--storage-path", ctx["storage"],
                       "--resume", *ctx["resume_extra"]]
        fault = Fault(spec, self, ctx) if kind != "none" else None
        cmd = Command(first_argv, d, self._env(setup))
        if fault is not None:
            fault.watch(cmd, m["timeout"])
        cmd.finish(m["timeout"] - (time.time() - cmd.t0))
        if fault is not None:
            fault.restore()
        runs = [(cmd, "first", fault.allowed(_read(ctx)) if fault else (0,))]
        snapshots, violations = [], []
        for _ in range(3):  # what a user does next, until the sweep finished
            last, views = runs[-1][0], _read(ctx)
            if views["meta"] is not None and views["meta"].get("status") == "finished" \
                    and last.rc == 0:
                break
            fresh = views["meta"] is None
            if not fresh:
                snapshots.append(views["record"])
            nxt = Command(first_argv if fresh else resume_argv, d, self._env(setup))
            nxt.finish(m["timeout"])
            runs.append((nxt, "again" if fresh else "resume", (0,)))
        if fault is not None and fault.needs_sync(runs[-1][0]):
            if self.has_sync():
                sync = Command([*TUNE, "sync", name, "--storage-path", ctx["storage"],
                                "--tracking-uri", ctx["tracking"]], d, self._env(setup))
                sync.finish(m["timeout"])
                runs.append((sync, "sync", (0,)))
            else:
                violations.append(invariants.violation(
                    "mlflow_agrees", "MLflow was away when the sweep ended and there is no "
                                     "`tune-smpl sync`"))
        for c, role, allowed in runs:
            violations += invariants.check_exit(c.rc, allowed, f"{role} command")
            violations += invariants.check_output(c.out, f"{role} command")
        views = _read(ctx)
        # the study (on the driver for a bucket) and MLflow: a store that cannot be opened
        # is the round's violation, not the end of the run (a store left half-made by a
        # driver killed while it made it did that once)
        for key, invariant, read, where in (
                ("study", "study_agrees", invariants.read_study, ctx["study"]),
                ("mlflow", "mlflow_agrees", invariants.read_mlflow, ctx["tracking"])):
            try:
                views[key] = read(where, name)
            except Exception as e:  # noqa: BLE001 - any failure to read is the finding
                views[key] = None
                first = (str(e).splitlines() or [""])[0]
                violations.append(invariants.violation(
                    invariant, f"{key} unreadable: {type(e).__name__}: {first}"))
        rec = views["record"]
        violations += invariants.check_views(views, m["trials"])
        for snap in snapshots:
            violations += invariants.check_history(snap, rec)
        last_tune = [c for c, role, _ in runs if role != "sync"][-1]
        summary = last_tune.out if f"sweep {name} finished:" in last_tune.out else None
        export = _in_process(["export", name, "--storage-path", ctx["storage"]], violations)
        _in_process(["report", name, "--storage-path", ctx["storage"], "-o", str(d / "rep")],
                    violations)
        violations += invariants.check_best_text(rec, summary, export)
        if fault is not None:
            violations += fault.check([c for c, _, _ in runs], rec, summary)
        if setup == "cluster" and self.cluster.worker is None:
            self.cluster.restart_worker()  # a lost node, replaced for the next round
        if self.keep:  # each command's whole output beside its sweep
            for n, (c, role, _) in enumerate(runs):
                (d / f"command{n}_{role}.log").write_text(c.out)
        else:
            shutil.rmtree(d, ignore_errors=True)
        return {"quick": self.quick, "seed": seed, "round": spec["round"], "kind": kind,
                "setup": setup, "spec": {k: v for k, v in spec.items() if k not in (
                    "round", "seed", "kind", "setup")},
                "injected": fault.injected if fault else False,
                "fault_at": fault.what if fault else None,
                "outage_s": (round(fault.up_at - fault.down_at, 1)
                             if fault and fault.up_at else None),
                "commands": [{**c.line(role, allowed), **({"tail": c.out[-2000:]}
                                                          if violations else {})}
                             for c, role, allowed in runs],
                "sweep_s": round(sum(c.end - c.t0 for c, role, _ in runs if role != "sync"), 2),
                "round_s": round(time.time() - t0, 1),
                "outcomes": {k: t.get("outcome") for k, t in rec.items()},
                "violations": violations, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "load": round(os.getloadavg()[0], 2), "host": os.uname().nodename,
                "code": _code_state()}  # per round: the tree can change under a run


def _code_state() -> str:
    """The commit the rounds ran on, `+changes` when the product code had uncommitted
    edits (the tree is shared with the engineers building the fault handling)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=faults.REPO, capture_output=True, text=True,
                              timeout=30).stdout.strip()

    dirty = git("status", "--porcelain", "--", "tune_smpl", "mlflow_tracking", "trainables",
                "smpl_core", "search_spaces")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def _read(ctx: dict) -> dict:
    try:
        return ctx["read"]()
    except (OSError, ValueError) as e:  # a record file that does not read: a damaged record
        return {"meta": None, "record": {}, "folders": [], "error": str(e)}


def _in_process(argv: list[str], violations: list) -> str | None:
    """`tune-smpl export|report ...` in this process (one import of the tool for all
    rounds); its stdout, or None with a violation when it fails."""
    from tune_smpl.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException as e:  # noqa: BLE001 - counted, not raised
        rc = f"{type(e).__name__}: {e}"
    if rc != 0:
        violations.append(invariants.violation("export_report", f"`{argv[0]}` gave {rc}: "
                                               f"{err.getvalue()[-300:]}"))
        return None
    return out.getvalue()


class Fault:
    """One fault, injected from this process at its instant (`watch`), undone when its
    outage ends (`restore`), and the checks only this fault has (`check`)."""

    def __init__(self, spec: dict, runner: Runner, ctx: dict):
        self.spec, self.runner, self.ctx, self.kind = spec, runner, ctx, spec["kind"]
        self.injected, self.what = False, None
        self.signals: list[float] = []
        self.finished_at_signal = False
        self.down_at = self.up_at = None
        self.outage: threading.Thread | None = None
        self.victim = None
        self._ended: set[str] | None = None  # kill_node at a start: trials ended on the node
        self._kill_at: float | None = None

    def _views(self) -> dict:
        return _read(self.ctx)

    def watch(self, cmd: Command, timeout: float) -> None:
        spec, at = self.spec, None  # when the fault is due
        poll = 1.0 if SETUP[self.kind] == "s3" else 0.1
        if spec["anchor"] == "start":
            at = cmd.t0 + spec["offset_s"]
        while cmd.proc.poll() is None and time.time() - cmd.t0 < timeout:
            now = time.time()
            if at is None:
                rec = self._views()["record"]
                if rec and sum(len(t.get("reports", [])) for t in rec.values()) >= spec[
                        "reports"]:
                    at = now + spec["jitter_s"]
            elif now >= at and self._inject(cmd, now - cmd.t0):
                rec = self._views()["record"]
                self.what += f" ({sum(len(t.get('reports', [])) for t in rec.values())} reports)"
                break
            time.sleep(poll)
        if self.kind == "sigint2" and self.injected:
            time.sleep(spec["gap_s"])
            if cmd.proc.poll() is None:
                cmd.proc.send_signal(signal.SIGINT)
                self.signals.append(time.time())
                self.what += f", again {spec['gap_s']} s later"

    def _inject(self, cmd: Command, at: float) -> bool:
        """The fault now, if it can land; False to try again at the next poll."""
        k, pid = self.kind, cmd.proc.pid
        if k in ("sigint", "sigint2"):
            cmd.proc.send_signal(signal.SIGINT)
            self.signals.append(time.time())
            meta = self._views()["meta"]  # Ctrl-C in the sweep's close: it finishes
            self.finished_at_signal = bool(meta and meta.get("status") == "finished")
            self.what = f"SIGINT at {at:.1f} s"
        elif k == "kill_driver":
            faults.kill_group(pid)
            self.what = f"SIGKILL of the driver's group at {at:.1f} s"
        elif k == "kill_node" and self.spec.get("at_start"):
            return self._kill_node_at_start(at)
        elif k in ("kill_worker", "kill_node"):
            steps, every = (int(s.split("=")[1]) for s in self.runner.m["sets"])
            rec = self._views()["record"]
            worker = self.runner.cluster.worker_id if k == "kill_node" else None
            cands = sorted(key for key, t in rec.items() if not t.get("outcome")
                           and t.get("reports") and t["reports"][-1]["step"] <= steps - 2 * every
                           and (worker is None or t["reports"][-1].get("ray_node_id") == worker))
            if not cands:
                return False
            self.victim = cands[int(self.spec["pick"] * len(cands))]
            last = rec[self.victim]["reports"][-1]
            if k == "kill_worker":
                os.kill(last["pid"], signal.SIGKILL)
                self.what = f"SIGKILL of trial {self.victim}'s worker at {at:.1f} s"
            else:
                self.runner.cluster.kill_worker()
                self.what = f"SIGKILL of the worker node (trial {self.victim}) at {at:.1f} s"
            self.what += f", after its step {last['step']}"
        elif k == "tracking_down":
            self.runner.mlflow.kill()
            self.down_at = time.time()
            self.what = f"MLflow server killed at {at:.1f} s for {self.spec['outage_s']} s"
        elif k == "storage_down":
            self.runner.s3.proxy.down(self.spec["mode"])
            self.down_at = time.time()
            self.what = (f"S3 {self.spec['mode']} at {at:.1f} s for "
                         f"{self.spec['outage_s']} s")
        if self.down_at is not None:
            self.outage = threading.Thread(target=self._end_outage, daemon=True)
            self.outage.start()
        self.injected = True
        return True

    def _kill_node_at_start(self, at: float) -> bool:
        """The worker node killed `gap_s / 2` after a trial that ran on it ended (one that
        ended after the instant came), as the next trial starts there: before its first
        report, so the driver knows no node of that trial's own."""
        rec, worker = self._views()["record"], self.runner.cluster.worker_id
        ended = {key for key, t in rec.items() if t.get("outcome") and t.get("reports")
                 and t["reports"][-1].get("ray_node_id") == worker}
        if self._ended is None:
            self._ended = ended
        fresh = sorted(ended - self._ended)
        if not fresh:
            return False
        if self._kill_at is None:
            self._kill_at = time.time() + self.spec["gap_s"] / 2
        if time.time() < self._kill_at:
            return False
        self.runner.cluster.kill_worker()
        self.what = (f"SIGKILL of the worker node {self.spec['gap_s'] / 2:.2f} s after trial "
                     f"{fresh[0]} ended there, at {at:.1f} s")
        self.injected = True
        return True

    def _end_outage(self) -> None:
        """In a thread from the fault on: the server restarted (the proxy forwarding
        again) when the outage's time is up, while the command runs on."""
        time.sleep(max(0.0, self.down_at + self.spec["outage_s"] - time.time()))
        try:
            if self.kind == "tracking_down":
                for attempt in range(3):  # a server that fails to start: once more
                    try:
                        self.runner.mlflow.start()
                        break
                    except RuntimeError:
                        self.runner.mlflow.kill()
                        if attempt == 2:
                            raise
            else:
                self.runner.s3.proxy.up()
        finally:
            self.up_at = time.time()

    def restore(self) -> None:
        """Wait for the outage to end (the command may have ended before it)."""
        if self.outage is not None:
            self.outage.join()

    def allowed(self, views: dict) -> tuple:
        """The first command's exit statuses for this fault, given the views it left."""
        if not self.injected:
            return (0,)
        late = self.signals and self.nothing_ran_after(views, self.signals[0])
        return {"sigint": (0, 130) if late else (130,),
                "sigint2": (0, 130) if late else (130,),
                "kill_driver": (-signal.SIGKILL,), "storage_down": (0, 75)}.get(self.kind, (0,))

    def nothing_ran_after(self, views: dict, at: float) -> bool:
        """A Ctrl-C with nothing left to stop: the sweep was in its close (sweep.json said
        finished), or it finished and no trial reported after the signal (Ray's loop had
        taken its last step, its last safe point; a finished sweep exits 0)."""
        if self.finished_at_signal:
            return True
        meta, rec = views["meta"], views["record"] or {}
        return (bool(meta) and meta.get("status") == "finished"
                and all(r.get("reported_at", at) < at
                        for t in rec.values() for r in t.get("reports", [])))

    def needs_sync(self, last: Command) -> bool:
        """The sweep's last command left MLflow behind (its line says so, and names
        `tune-smpl sync`): the server was still away when it gave up waiting. Leaving it
        behind with the server back well before the end is a violation (`check`)."""
        return (self.kind == "tracking_down" and self.injected
                and invariants.BEHIND in last.out)

    def check(self, cmds: list[Command], rec: dict, summary: str | None) -> list[dict]:
        out, first = [], cmds[0]
        if not self.injected:
            return out
        if self.signals and first.rc is not None:
            took, limit = first.end - self.signals[-1], 30 if self.kind == "sigint2" else 120
            if took > limit:
                out.append(invariants.violation(
                    "exit_status", f"exited {took:.0f} s after the last Ctrl-C (limit {limit} s)"))
        if self.kind in ("kill_worker", "kill_node"):
            text = "".join(c.out for c in cmds)
            restarted = sorted(k for k, t in rec.items() if t.get("restarts", 0) >= 1)
            if not restarted and not self.spec.get("at_start"):  # (at a start, the next
                # trial may not have been placed on the node yet: Ray then places it elsewhere)
                out.append(invariants.violation("restart_told", f"no trial counts a restart "
                                                                f"after {self.what}"))
            pattern = invariants.NODE_RE if self.kind == "kill_node" else invariants.RESTART_RE
            for k in restarted:
                if not re.search(pattern.format(key=k), text):
                    out.append(invariants.violation("restart_told",
                                                    f"no line `{pattern.format(key=k)}`"))
            if summary is not None and restarted and not re.search(r"\d+ restart", summary):
                out.append(invariants.violation("restart_told",
                                                "the summary does not count restarts"))
        if self.kind == "tracking_down":
            during = [r for t in rec.values() for r in t.get("reports", [])
                      if self.down_at + 1 < r.get("reported_at", 0) < self.up_at]
            n = len(re.findall(invariants.UNREACHABLE_RE, first.out))
            last = [c for c in cmds if invariants.BEHIND in c.out]
            if last and self.up_at < last[-1].end - BACK_FOR_S:
                out.append(invariants.violation(
                    "mlflow_agrees", f"MLflow left behind the record, though the server was "
                                     f"back {last[-1].end - self.up_at:.0f} s before the end"))
            if during and n != 1 or n > 1:
                out.append(invariants.violation(
                    "output", f"{n} 'MLflow ... unreachable since' lines "
                              f"({len(during)} reports while it was down)"))
        if self.kind == "storage_down" and first.rc == 75:
            root = self.ctx["storage"].split("?")[0]
            if not any(root in ln for ln in first.out.splitlines()):
                out.append(invariants.violation("output", f"exit 75 without a line naming {root}"))
        return out
