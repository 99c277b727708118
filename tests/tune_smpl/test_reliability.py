"""Issue 7: what goes wrong in a trial, a process or the command loses nothing.

Each test checks the three records together: Ray's trial folders (result.json, error.txt,
checkpoints), the Optuna study (runs/<name>/optuna.db) and the MLflow runs (one parent per
sweep, one child per trial): nothing lost, nothing duplicated, nothing left RUNNING.

One in-process sweep (module Ray: 2 CPUs, 1 logical GPU) holds healthy, diverging and
out-of-memory trials and has a worker SIGKILLed under it; the tests of the command itself
(a killed driver, two sweeps at once, Ctrl-C) run `tune-smpl tune` in subprocesses, each
with its own Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.tune_smpl.conftest import cli_env
from tune_smpl.cli import main

GOOD_LR, BAD_LR = 0.03, 1.0e6
SMALL_MU, HUGE_MU = 2, 50000  # 50000: a first step that asks for ~1.6 GB, over a 1 GB cap
STEPS, EVERY = 120, 20  # six reports: time to kill a worker between two of them
# Seed 44 draws good, out of memory, diverging (Optuna's seeded TPE starts with independent
# random draws): the first two run side by side, the third while the first restarts.
SPACE = f"lr: {{type: categorical, choices: [{GOOD_LR}, {BAD_LR:.1e}]}}\n" \
        f"mu: {{type: categorical, choices: [{SMALL_MU}, {HUGE_MU}]}}\n"
SETS = [f"steps={STEPS}", f"eval_every={EVERY}", "batch_size=16", "val_size=100", "device=cpu"]


# --- reading the three records ---------------------------------------------------------
def _read_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return rows


def _trials(sweep: Path) -> dict[str, list[dict]]:
    """trial_id -> result.json rows, for every trial folder of the sweep."""
    return {d.name.removeprefix("trial_"): _read_rows(d / "result.json")
            for d in sorted(sweep.glob("trial_*"))}


def _config(sweep: Path, tid: str) -> dict:
    return json.loads((sweep / f"trial_{tid}" / "params.json").read_text())


def _kind(cfg: dict) -> str:
    if cfg["mu"] == HUGE_MU:
        return "oom"
    return "diverged" if cfg["lr"] == BAD_LR else "good"


def _study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep}/optuna.db")


def _runs(uri: str, sweep_name: str) -> tuple:
    """(parent, {trial_id: child}) of a sweep; checks there is one parent and no child twice."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-smpl")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep_name = '{sweep_name}'",
                              max_results=1000)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    by_trial = {c.data.tags["trial_id"]: c for c in children}
    assert len(by_trial) == len(children), "a trial has two child runs"
    assert len(children) == len(runs) - 1
    return parents[0], by_trial


def _steps(uri: str, run, key: str = "val_accuracy") -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, key)]


def _assert_nothing_open(uri: str, sweep: Path) -> None:
    parent, children = _runs(uri, sweep.name)
    assert parent.info.status == "FINISHED"
    assert [t for t, c in children.items() if c.info.status == "RUNNING"] == []
    assert [t.number for t in _study(sweep).trials if t.state == TrialState.RUNNING] == []


# --- one sweep: healthy, diverging and out-of-memory trials, a worker killed -------------
class _WorkerKiller(threading.Thread):
    """SIGKILLs the worker of the first healthy trial once it has two reports (two
    checkpoints) and fewer than its last."""

    def __init__(self, sweep: Path):
        super().__init__(daemon=True)
        self.sweep, self.stop = sweep, threading.Event()
        self.victim: str | None = None
        self.rows_before: list[dict] = []

    def run(self):
        while not self.stop.wait(0.05) and self.victim is None:
            for tid, rows in _trials(self.sweep).items() if self.sweep.is_dir() else ():
                try:
                    good = _kind(_config(self.sweep, tid)) == "good"
                except (OSError, ValueError):
                    continue
                if good and 2 <= len(rows) and rows[-1]["step"] <= STEPS - 2 * EVERY:
                    os.kill(rows[-1]["pid"], signal.SIGKILL)
                    self.victim, self.rows_before = tid, rows
                    return


@pytest.fixture(scope="module")
def mixed(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    space = root / "space.yaml"
    space.write_text(SPACE)
    uri = f"sqlite:///{root}/mlflow.db"
    sweep = root / "runs" / "mixed"
    killer = _WorkerKiller(sweep)
    killer.start()
    try:
        rc = main(["tune", "--name", "mixed", "--storage-path", str(root / "runs"),
                   "--tracking-uri", uri, "--space", str(space), "--seed", "44",
                   "--num-samples", "3", "--gpus-per-trial", "0", "--memory-per-trial", "1",
                   "--grace-period", "10", *sum((["--set", s] for s in SETS), [])])
    finally:
        killer.stop.set()
        killer.join()
    trials = _trials(sweep)
    kinds = {tid: _kind(_config(sweep, tid)) for tid in trials}
    assert sorted(set(kinds.values())) == ["diverged", "good", "oom"], (
        f"seed 44 no longer draws every kind of trial: {kinds}")
    assert killer.victim is not None, "no healthy trial was caught between two reports"
    return {"rc": rc, "sweep": sweep, "uri": uri, "trials": trials, "kinds": kinds,
            "victim": killer.victim, "rows_before": killer.rows_before}


def _of(mixed, kind: str) -> list[str]:
    return [t for t, k in mixed["kinds"].items() if k == kind]


def _study_states(mixed) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in _study(mixed["sweep"]).trials:
        out.setdefault(_kind(t.params), []).append(t)
    return out


def test_diverging_trials_stop_at_once_fail_and_the_sweep_carries_on(mixed):
    sweep, uri = mixed["sweep"], mixed["uri"]
    assert mixed["rc"] == 0
    parent, children = _runs(uri, "mixed")
    assert set(children) == set(mixed["trials"])
    for tid in _of(mixed, "diverged"):
        rows = mixed["trials"][tid]
        # One report, at the first finite-check after the loss went non-finite, long before
        # the first evaluation would have come; nothing checkpointed.
        assert len(rows) == 1 and rows[0]["diverged"] is True, rows
        assert rows[0]["step"] < EVERY
        assert not list((sweep / f"trial_{tid}").glob("checkpoint_*"))
        assert children[tid].data.tags["trial_status"] == "diverged"
        assert children[tid].info.status == "FAILED"
    states = _study_states(mixed)
    assert [t.state for t in states["diverged"]] == [TrialState.FAIL] * len(_of(mixed, "diverged"))
    assert all(t.user_attrs["failure"] == "diverged" for t in states["diverged"])
    for tid in _of(mixed, "good"):  # the others ran their whole budget
        assert [r["step"] for r in mixed["trials"][tid]][-1] == STEPS
        assert children[tid].data.tags["trial_status"] == "completed"
    assert [t.state for t in states["good"]] == [TrialState.COMPLETE] * len(_of(mixed, "good"))
    assert len(_study(sweep).trials) == len(mixed["trials"])
    assert parent.data.tags["best_trial_id"] in _of(mixed, "good")
    _assert_nothing_open(uri, sweep)


def test_out_of_memory_ends_the_trial_as_errored_once(mixed):
    sweep, uri = mixed["sweep"], mixed["uri"]
    _, children = _runs(uri, "mixed")
    for tid in _of(mixed, "oom"):
        rows = mixed["trials"][tid]
        # One attempt: a single report, the failure, from one worker; no retry.
        assert len(rows) == 1 and rows[0]["oom"] is True, rows
        assert "out of memory" in rows[0]["error"] and "1 GB" in rows[0]["error"]
        error_txt = (sweep / f"trial_{tid}" / "error.txt").read_text()
        assert error_txt.count("out of memory: the trial needed more than") == 1
        assert "can't allocate memory" in error_txt or "MemoryError" in error_txt
        child = children[tid]
        assert child.info.status == "FAILED"
        assert child.data.tags["trial_status"] == "errored"
        assert "out of memory" in child.data.tags["error"]
        assert "restarts" not in child.data.tags
        local = MlflowClient(uri).download_artifacts(child.info.run_id, "error.txt",
                                                     str(sweep.parent.parent))
        assert "out of memory" in Path(local).read_text()
    states = _study_states(mixed)
    assert [t.state for t in states["oom"]] == [TrialState.FAIL] * len(_of(mixed, "oom"))
    assert all(t.user_attrs["failure"] == "out of memory" for t in states["oom"])
    # Its neighbours ran on: every healthy trial finished; one was running at the time.
    good = [mixed["trials"][t] for t in _of(mixed, "good")]
    assert all(rows[-1]["step"] == STEPS for rows in good)
    failed_at = [mixed["trials"][t][0]["reported_at"] for t in _of(mixed, "oom")]
    assert any(rows[0]["started_at"] < when < rows[-1]["reported_at"]
               for rows in good for when in failed_at)
    _assert_nothing_open(uri, sweep)


def test_killed_worker_restarts_from_its_checkpoint_in_the_same_run(mixed):
    uri, tid = mixed["uri"], mixed["victim"]
    before, rows = mixed["rows_before"], mixed["trials"][tid]
    steps = [r["step"] for r in rows]
    assert steps == list(range(EVERY, STEPS + 1, EVERY))  # each step once, none missing
    pids = [r["pid"] for r in rows]
    killed = before[-1]["pid"]
    restart = next(i for i, p in enumerate(pids) if p != killed)
    assert set(pids[restart:]) == {pids[restart]}  # one restart, one new worker
    # The restarted segment starts right after the last checkpoint of the killed worker.
    assert rows[restart]["iterations_since_restore"] == 1
    assert rows[restart]["step"] == rows[restart - 1]["step"] + EVERY
    assert restart >= len(before) and rows[:len(before)] == before  # history kept
    _, children = _runs(uri, "mixed")
    child = children[tid]  # the same child run, continued
    assert int(child.data.tags["restarts"]) == 1
    assert "last_failure" in child.data.tags
    assert child.data.tags["trial_status"] == "completed" and child.info.status == "FINISHED"
    assert _steps(uri, child) == steps
    # One Optuna trial per Ray trial: the restart asked for no new one.
    assert len(_study(mixed["sweep"]).trials) == len(mixed["trials"])


def test_each_trial_keeps_at_most_its_best_and_latest_checkpoint(mixed):
    sweep = mixed["sweep"]
    for tid, rows in mixed["trials"].items():
        kept = sorted(p.name for p in (sweep / f"trial_{tid}").glob("checkpoint_*"))
        assert len(kept) <= 2, (tid, kept)
        if mixed["kinds"][tid] != "good":
            assert kept == []
            continue
        best = max(rows, key=lambda r: r["val_accuracy"])  # first of equals, like Ray
        expected = {best["checkpoint_dir_name"], rows[-1]["checkpoint_dir_name"]}
        assert set(kept) == expected, (tid, kept, expected)
        assert all(r["checkpoint_dir_name"] for r in rows)  # every report did checkpoint



def _snapshot_behind(sweep: Path) -> str:
    """Rewind Ray's newest snapshot of a finished one-trial sweep to the moment after its
    first report, as a driver SIGKILLed then leaves it: the trial RUNNING, its latest
    checkpoint checkpoint_000000, which a better later report has since deleted."""
    import cloudpickle
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    path = max(sweep.glob("experiment_state-*.json"))
    state = json.loads(path.read_text())
    [(trial_json, meta_json)] = state["trial_data"]
    trial, meta = json.loads(trial_json), json.loads(meta_json)
    storage = cloudpickle.loads(bytes.fromhex(trial["storage"]["value"]))
    done = cloudpickle.loads(bytes.fromhex(meta["checkpoint_manager"]["value"]))
    first = _read_rows(sweep / f"trial_{trial['trial_id']}" / "result.json")[0]
    early = _CheckpointManager(done.checkpoint_config)
    early.register_checkpoint(_TrainingResult(
        checkpoint=Checkpoint(f"{storage.trial_fs_path}/checkpoint_000000"), metrics=first))
    storage.current_checkpoint_index = 0
    trial["status"], meta["last_result"] = "RUNNING", first
    trial["storage"]["value"] = cloudpickle.dumps(storage).hex()
    meta["checkpoint_manager"]["value"] = cloudpickle.dumps(early).hex()
    state["trial_data"] = [[json.dumps(trial), json.dumps(meta)]]
    path.write_text(json.dumps(state))
    shutil.rmtree(sweep / f"trial_{trial['trial_id']}" / "checkpoint_000000",
                  ignore_errors=True)
    return trial["trial_id"]


def _latest_worse_than_best(folder: Path) -> None:
    """Make the trial's last report worse than the one before (its latest checkpoint is
    then not its best, and both stay on disk), as a trial whose accuracy dips leaves it."""
    rows = _read_rows(folder / "result.json")
    shutil.copytree(folder / rows[-1]["checkpoint_dir_name"],
                    folder / rows[-2]["checkpoint_dir_name"], dirs_exist_ok=True)
    rows[-2]["val_accuracy"], rows[-1]["val_accuracy"] = 1.0, 0.5
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("latest_is_best", [True, False])
def test_resume_restarts_from_the_checkpoints_on_disk_when_the_snapshot_is_behind(
        ray_local, tmp_path, latest_is_best):
    """Ray's snapshot can name a checkpoint that is gone (each trial keeps its best and
    latest only); `--resume` restarts the trial from the newest one on disk instead of
    failing it `max_failures` times, and records the trial once. A latest checkpoint that
    is not the best is kept for it."""
    uri, runs = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "runs"
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: categorical, choices: [0.05]}\n")  # one config, known
    sets = ["steps=60", "eval_every=20", "batch_size=16", "mu=2", "val_size=100",
            "device=cpu"]
    args = ["tune", "--name", "behind", "--storage-path", str(runs), "--tracking-uri", uri,
            "--num-samples", "1", "--gpus-per-trial", "0", "--space", str(space),
            *sum((["--set", s] for s in sets), [])]
    assert main(args) == 0
    sweep = runs / "behind"
    folder = next(sweep.glob("trial_*"))
    if not latest_is_best:
        _latest_worse_than_best(folder)
    before = _read_rows(folder / "result.json")
    tid = _snapshot_behind(sweep)
    assert main(["tune", "--name", "behind", "--storage-path", str(runs), "--resume"]) == 0
    rows = _read_rows(sweep / f"trial_{tid}" / "result.json")
    assert [r["step"] for r in rows] == [20, 40, 60]  # none redone, none lost
    assert rows == before
    from ray.tune import ExperimentAnalysis

    [trial] = ExperimentAnalysis(str(sweep)).trials
    assert trial.status == "TERMINATED" and not (sweep / f"trial_{tid}" / "error.txt").exists()
    best = max(reversed(before), key=lambda r: r["val_accuracy"])  # a tie: the later one
    kept = {d.name for d in folder.glob("checkpoint_*")}
    assert kept == {best["checkpoint_dir_name"], before[-1]["checkpoint_dir_name"]}
    _, children = _runs(uri, "behind")
    assert children[tid].data.tags["trial_status"] == "completed"
    assert _steps(uri, children[tid]) == [20, 40, 60]
    assert [t.state for t in _study(sweep).trials] == [TrialState.COMPLETE]
    _assert_nothing_open(uri, sweep)

# --- the command in subprocesses ---------------------------------------------------------
def _cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tune_smpl", "tune", "--storage-path", str(root / "runs"),
            "--tracking-uri", f"sqlite:///{root}/mlflow.db", *args]


def _start(root: Path, tag: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(root, *args), env=cli_env(tag), cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _run(root: Path, tag: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(root, *args), env=cli_env(tag), cwd=root, capture_output=True,
                          text=True, timeout=timeout)


def _wait_for(proc: subprocess.Popen, cond, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{proc.communicate()[0]}")
        time.sleep(0.1)


def _end_group(proc: subprocess.Popen, tag: str) -> None:
    """The command's process group (its Ray, when the command was killed) and its Ray
    temp dir, so that no test leaves processes or files behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    shutil.rmtree(cli_env(tag)["TUNE_SMPL_RAY_TMP"], ignore_errors=True)


def _done(rows: list[dict], steps: int) -> bool:
    return bool(rows) and rows[-1]["step"] == steps


def _sub(steps: int = 200, cpus: int = 2) -> list[str]:
    """A sweep of the default space, no early stopping, ten reports per trial."""
    sets = [f"steps={steps}", f"eval_every={steps // 10}", "batch_size=16", "mu=2",
            "val_size=100"]
    return [*sum((["--set", s] for s in sets), []), "--grace-period", "10",
            "--num-cpus", str(cpus)]


def test_killed_driver_then_resume_finishes_the_sweep(tmp_path):
    sweep = tmp_path / "runs" / "kd"
    args = ["--name", "kd", "--num-samples", "4", "--max-concurrent", "2", *_sub(),
            "--num-gpus", "1", "--gpus-per-trial", "0.5"]
    proc = _start(tmp_path, "k", *args)
    try:  # kill it once a trial has finished and another is between checkpoints
        def ready():
            t = _trials(sweep) if sweep.is_dir() else {}
            return (any(_done(r, 200) for r in t.values())
                    and any(r and not _done(r, 200) for r in t.values()))
        _wait_for(proc, ready)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        before = {tid: (sweep / f"trial_{tid}" / "result.json").read_text()
                  for tid in _trials(sweep)}
    finally:
        _end_group(proc, "k")
    assert proc.returncode == -signal.SIGKILL
    finished_before = {t for t, text in before.items()
                       if _done([json.loads(x) for x in text.splitlines()], 200)}
    done = _run(tmp_path, "k", "--name", "kd", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    after = _trials(sweep)
    for tid in finished_before:  # kept as they were, not run again
        assert (sweep / f"trial_{tid}" / "result.json").read_text() == before[tid], tid
    from ray.tune import ExperimentAnalysis

    ray_trials = {t.trial_id: t for t in ExperimentAnalysis(str(sweep)).trials}
    assert len(ray_trials) == 4 and {t.status for t in ray_trials.values()} == {"TERMINATED"}
    for tid in ray_trials:
        steps = [r["step"] for r in after[tid]]
        assert steps == list(range(20, 201, 20)), (tid, steps)  # none twice, none missing
    orphans = set(after) - set(ray_trials)  # started after Ray's last snapshot, if any
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = _runs(uri, "kd")
    assert set(children) == set(after)  # one child per trial folder
    for tid in ray_trials:
        assert children[tid].data.tags["trial_status"] == "completed"
        assert _steps(uri, children[tid]) == list(range(20, 201, 20))
    for tid in orphans:
        assert children[tid].data.tags["trial_status"] == "interrupted"
    study = _study(sweep)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4
    assert len(states) - 4 == states.count(TrialState.FAIL) >= len(orphans)
    _assert_nothing_open(uri, sweep)


def test_two_sweeps_at_once_keep_to_themselves_and_names_are_not_reused(tmp_path):
    args = [*_sub(steps=100, cpus=1), "--num-samples", "2"]
    left = _start(tmp_path, "l", "--name", "left", *args)
    right = _start(tmp_path, "r", "--name", "right", *args)
    try:
        _wait_for(left, lambda: (tmp_path / "runs" / "left" / "tuner.pkl").is_file())
        again = _run(tmp_path, "a", "--name", "left", *args, timeout=120)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "--name" in again.stderr and "left" in again.stderr
        outs = [p.communicate(timeout=300)[0] for p in (left, right)]
    finally:
        for proc, tag in ((left, "l"), (right, "r")):
            _end_group(proc, tag)
    assert left.returncode == 0 and right.returncode == 0, outs
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ids = {}
    for name in ("left", "right"):
        sweep = tmp_path / "runs" / name
        trials = _trials(sweep)
        assert len(trials) == 2 and all(_done(r, 100) for r in trials.values())
        study = _study(sweep)
        assert len(study.trials) == 2
        assert [s.study_name for s in optuna.get_all_study_summaries(
            f"sqlite:///{sweep}/optuna.db")] == [name]
        _, children = _runs(uri, name)
        assert set(children) == set(trials)
        _assert_nothing_open(uri, sweep)
        ids[name] = set(trials)
    assert not ids["left"] & ids["right"]


def test_ctrl_c_once_saves_twice_exits_and_both_resume(tmp_path):
    sweep = tmp_path / "runs" / "cc"
    args = ["--name", "cc", "--num-samples", "3", "--max-concurrent", "2", *_sub()]
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def reports() -> int:
        return sum(len(r) for r in _trials(sweep).values()) if sweep.is_dir() else 0

    # Once: Ray stops the trials, saves the sweep and we say how to resume.
    proc = _start(tmp_path, "c", *args)
    try:
        _wait_for(proc, lambda: reports() >= 3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        _end_group(proc, "c")
    assert proc.returncode == 130, out
    assert "tune-smpl tune --name cc" in out and "--resume" in out
    _, children = _runs(uri, "cc")
    assert [c.info.status for c in children.values()].count("RUNNING") == 0

    # Twice, quickly, in the resumed sweep: out at once, still resumable.
    seen = reports()
    proc = _start(tmp_path, "c", "--name", "cc", "--resume")
    try:
        _wait_for(proc, lambda: reports() >= seen + 2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        _end_group(proc, "c")
    assert proc.returncode == 130, out
    assert "--resume" in out
    assert took < 30, took

    done = _run(tmp_path, "c", "--name", "cc", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    trials = _trials(sweep)
    assert len(trials) == 3
    for tid, rows in trials.items():
        steps = [r["step"] for r in rows]
        assert steps == list(range(20, 201, 20)), (tid, steps)
    _, children = _runs(uri, "cc")
    assert set(children) == set(trials)
    assert all(c.data.tags["trial_status"] == "completed" for c in children.values())
    assert all(_steps(uri, c) == list(range(20, 201, 20)) for c in children.values())
    assert [t.state for t in _study(sweep).trials] == [TrialState.COMPLETE] * 3
    _assert_nothing_open(uri, sweep)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
