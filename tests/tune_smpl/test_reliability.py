"""Issue 11: one record of a sweep on every path a sweep can end by.

Each path ends with the same invariants (tests/tune_smpl/views.py): one outcome per trial,
the same in the record, the Optuna study, MLflow, the summary and `export`; nothing left
RUNNING; as many trials in the study as MLflow children as trial folders; one best.

In process (the module's Ray: 2 CPUs, 1 logical GPU): a sweep with healthy, diverging and
out-of-memory trials and a worker SIGKILLed under it; a sweep cut by its time budget.
In subprocesses (each with its own Ray): Ctrl-C with trials <= slots and > slots, SIGKILL
of the driver at several moments, then --resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import (
    cli_env,
    cli_sets,
    end_group,
    export_cli,
    kill_group,
    run_cli,
    start_cli,
    wait_for,
)
from tune_smpl.cli import main

GOOD_LR, BAD_LR = 0.03, 1.0e6
SMALL_MU, HUGE_MU = 2, 50000  # 50000: a first step that asks for ~1.6 GB, over a 1 GB cap
STEPS, EVERY = 120, 20  # six reports: time to kill a worker between two of them
# Seed 136 draws good, out of memory, diverging (random sampler): the first two run
# side by side, the third while the first restarts.
SPACE = f"lr: {{type: categorical, choices: [{GOOD_LR}, {BAD_LR:.1e}]}}\n" \
        f"mu: {{type: categorical, choices: [{SMALL_MU}, {HUGE_MU}]}}\n"
SETS = [f"steps={STEPS}", f"eval_every={EVERY}", "batch_size=16", "val_size=100", "device=cpu"]


def _sets(sets: list[str]) -> list[str]:
    return sum((["--set", s] for s in sets), [])


def _kind(params: dict) -> str:
    if params["mu"] == HUGE_MU:
        return "oom"
    return "diverged" if params["lr"] == BAD_LR else "good"


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
            try:
                rec = views.record(self.sweep) if self.sweep.is_dir() else {}
            except (OSError, ValueError):  # a file being replaced
                continue
            for key, t in rec.items():
                rows = t["reports"]
                if (_kind(t["params"]) == "good" and len(rows) >= 2
                        and rows[-1]["step"] <= STEPS - 2 * EVERY):
                    os.kill(rows[-1]["pid"], signal.SIGKILL)
                    self.victim, self.rows_before = key, rows
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
                   "--tracking-uri", uri, "--space", str(space), "--seed", "136",
                   "--sampler", "random", "--num-samples", "3", "--gpus-per-trial", "0",
                   "--memory-per-trial", "1", "--grace-period", "10", *_sets(SETS)])
    finally:
        killer.stop.set()
        killer.join()
    rec = views.record(sweep)
    kinds = {key: _kind(t["params"]) for key, t in rec.items()}
    assert sorted(set(kinds.values())) == ["diverged", "good", "oom"], (
        f"seed 136 no longer draws every kind of trial: {kinds}")
    assert killer.victim is not None, "no healthy trial was caught between two reports"
    return {"rc": rc, "sweep": sweep, "uri": uri, "rec": rec, "kinds": kinds,
            "victim": killer.victim, "rows_before": killer.rows_before}


def _of(mixed, kind: str) -> list[str]:
    return [k for k, v in mixed["kinds"].items() if v == kind]


def test_mixed_sweep_keeps_one_record(mixed):
    assert mixed["rc"] == 0
    rec = views.check_finished(mixed["sweep"], mixed["uri"], trials=3)
    expected = {"good": "completed", "diverged": "diverged", "oom": "out_of_memory"}
    assert {k: t["outcome"] for k, t in rec.items()} == {
        k: expected[v] for k, v in mixed["kinds"].items()}


def test_diverging_trials_stop_at_once_and_never_win(mixed):
    for key in _of(mixed, "diverged"):
        t = mixed["rec"][key]
        # One report, at the first finite-check after the loss went non-finite, long before
        # the first evaluation would have come; nothing checkpointed.
        assert len(t["reports"]) == 1 and t["reports"][0]["diverged"] is True
        assert t["reports"][0]["step"] < EVERY
        assert not list((mixed["sweep"] / f"trial_{key}").glob("checkpoint_*"))
    parent, _ = views.mlflow_runs(mixed["uri"], "mixed")
    assert parent.data.tags["best_trial_id"] in _of(mixed, "good")


def test_out_of_memory_ends_the_trial_once(mixed):
    from mlflow import MlflowClient

    _, children = views.mlflow_runs(mixed["uri"], "mixed")
    for key in _of(mixed, "oom"):
        t = mixed["rec"][key]
        assert t["reports"] == [] and t["restarts"] == 0  # a failure, not a measurement
        assert "out of memory: the trial needed more than 1 GB" in t["error"]
        child = children[key]
        assert "out of memory" in child.data.tags["error"] and "restarts" not in child.data.tags
        local = MlflowClient(mixed["uri"]).download_artifacts(child.info.run_id, "error.txt",
                                                               str(mixed["sweep"].parent))
        assert "out of memory" in Path(local).read_text()
    # Its neighbours ran on: every healthy trial finished; one was running at the time.
    good = [mixed["rec"][k]["reports"] for k in _of(mixed, "good")]
    assert all(rows[-1]["step"] == STEPS for rows in good)
    ended = [mixed["rec"][k]["ended_at"] for k in _of(mixed, "oom")]
    assert any(rows[0]["started_at"] < when < rows[-1]["reported_at"]
               for rows in good for when in ended)


def test_killed_worker_restarts_from_its_checkpoint_in_the_same_trial(mixed):
    key, before = mixed["victim"], mixed["rows_before"]
    t = mixed["rec"][key]
    rows = t["reports"]
    assert [r["step"] for r in rows] == list(range(EVERY, STEPS + 1, EVERY))  # each once
    pids = [r["pid"] for r in rows]
    restart = next(i for i, p in enumerate(pids) if p != before[-1]["pid"])
    assert set(pids[restart:]) == {pids[restart]}  # one restart, one new worker
    # It continued from a checkpoint, not from step 0: the reports before it are kept, and
    # only a report made after Ray's last registered checkpoint came again (replaced).
    assert restart >= 1 and rows[:restart] == before[:restart]
    assert restart >= len(before) - 1
    assert t["restarts"] == 1 and t["outcome"] == "completed"
    _, children = views.mlflow_runs(mixed["uri"], "mixed")
    assert children[key].data.tags["restarts"] == "1"
    assert "last_failure" in children[key].data.tags


def test_each_trial_keeps_at_most_its_best_latest_and_the_one_before(mixed):
    """sweep/prune.py's contract (docs/design.md): the latest checkpoint, the one before it
    (the record may still name it while its writer catches up), the best report's."""
    for key, t in mixed["rec"].items():
        kept = sorted(p.name for p in (mixed["sweep"] / f"trial_{key}").glob("checkpoint_*"))
        assert len(kept) <= 3, (key, kept)
        if mixed["kinds"][key] == "good":
            rows = t["reports"]
            best = max(rows, key=lambda r: r["val_accuracy"])  # first of equals, like Ray
            assert set(kept) == {best["checkpoint_dir_name"],
                                 *(r["checkpoint_dir_name"] for r in rows[-2:])}, (key, kept)


def test_time_budget_cuts_trials_through_the_normal_stop(ray_local, tmp_path, capsys):
    """The budget stops running trials as cut_by_budget: PRUNED with their last value in
    the study, FINISHED in MLflow, counted as such in the summary; never RUNNING."""
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    rc = main(["tune", "--name", "budget", "--storage-path", str(runs), "--tracking-uri", uri,
               "--num-samples", "4", "--gpus-per-trial", "0", "--time-budget", "30",
               "--finalists", "2", "--finalist-seeds", "1",
               # ASHA never stops a trial (grace = every report) and no trial can finish
               # 20000 steps in 30 s: whatever ends them is the budget.
               "--grace-period", "200",
               *_sets(["steps=20000", "eval_every=100", "batch_size=16", "mu=2",
                       "val_size=100"])])
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = views.check_finished(runs / "budget", uri, summary=out)
    outcomes = [t["outcome"] for t in rec.values()]
    assert outcomes.count("cut_by_budget") >= 2 and set(outcomes) == {"cut_by_budget"}
    assert f"{outcomes.count('cut_by_budget')} cut by budget" in out
    # The finalist stage found the budget spent: planned, recorded, cut, and said so; the
    # best stays the search's, one noisy estimate.
    stage = json.loads((runs / "budget" / "sweep.json").read_text())["finalists"]
    finalists = views.record(runs / "budget", "finalist_")
    assert stage["status"] == "cut_by_budget" and len(finalists) == len(stage["of"]) >= 1
    assert {t["outcome"] for t in finalists.values()} == {"cut_by_budget"}
    assert "(cut by the budget)" in out and "the finalist stage gave no final measurement" in out
    page = (runs / "budget" / "report" / "report.html").read_text()
    assert "id='finalists-cut'" in page and "stage cut_by_budget" in page


# --- the command in subprocesses (helpers: conftest.py) --------------------------------
@pytest.mark.parametrize("samples", [2, 3], ids=["trials<=slots", "trials>slots"])
def test_ctrl_c_interrupts_and_resume_finishes(tmp_path, samples):
    """Ctrl-C exits 130 whatever the trial count, leaves the unfinished trials visibly
    interrupted (study mark, MLflow KILLED) and prints our --resume line, not Ray's; two
    Ctrl-C in a row exit at once; --resume finishes the sweep with every trial once."""
    sweep, uri = tmp_path / "runs" / "cc", f"sqlite:///{tmp_path}/mlflow.db"
    proc = start_cli(tmp_path, "c", "--name", "cc", "--num-samples", str(samples),
                     "--max-concurrent", "2", *cli_sets())
    try:
        wait_for(proc, lambda: views.report_count(sweep) >= 3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        end_group(proc, "c")
    assert proc.returncode == 130, out
    assert f"tune-smpl tune --name cc --storage-path {tmp_path / 'runs'} --resume" in out
    assert "Tuner.restore" not in out and "best val_accuracy" not in out.split("interrupted")[-1]
    before = views.check_interrupted(sweep, uri)

    if samples > 2:  # twice, quickly, in the resumed sweep: out at once, still resumable
        seen = views.report_count(sweep)
        proc = start_cli(tmp_path, "c", "--name", "cc", "--resume")
        try:
            wait_for(proc, lambda: views.report_count(sweep) >= seen + 2)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            out, _ = proc.communicate(timeout=120)
            took = time.monotonic() - t0
        finally:
            end_group(proc, "c")
        assert proc.returncode == 130 and "--resume" in out, out
        assert took < 30, took
        if "not waited for (Ctrl-C twice;" in out:  # MLflow left behind, as the line says:
            # the record has everything, and the command it names fills MLflow in
            assert f"tune-smpl sync cc --storage-path {tmp_path / 'runs'}" in out, out
            synced = subprocess.run(
                [sys.executable, "-m", "tune_smpl", "sync", "cc", "--storage-path",
                 str(tmp_path / "runs"), "--tracking-uri", uri], env=cli_env("c"),
                capture_output=True, text=True, timeout=120)
            assert synced.returncode == 0, synced.stdout + synced.stderr
        before = views.check_interrupted(sweep, uri)

    done = run_cli(tmp_path, "c", "--name", "cc", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    export = export_cli(tmp_path, "c", "cc")
    after = views.check_finished(sweep, uri, trials=samples, summary=done.stdout,
                                 export=export.stdout)
    views.history_kept(before, after)
    assert all(t["outcome"] == "completed" for t in after.values())  # no ASHA stop here
    assert all(after[k]["resumes"] >= 1 for k, t in before.items() if not t["outcome"])


def _moment(what: str, rec: dict, seen_done: set, seen_reports: int) -> bool:
    done = {k for k, t in rec.items() if t["outcome"]}
    if what == "trials created":
        return len(rec) >= 1
    if what == "right after an ASHA stop":
        return any(rec[k]["outcome"] == "early_stopped" for k in done - seen_done)
    # between two checkpoints of a trial, after this run reported something new
    return (sum(len(t["reports"]) for t in rec.values()) > seen_reports
            and any(len(t["reports"]) >= 2 and not t["outcome"] for t in rec.values()))


def test_killed_driver_anywhere_then_resume_runs_each_trial_once(tmp_path):
    """SIGKILL the driver at several moments of one sweep (while the first trials start,
    right after ASHA stopped a trial, between two checkpoints of a trial), --resume after
    each: at the end exactly N trials finished, each once, and the views agree."""
    sweep, uri, n = tmp_path / "runs" / "kd", f"sqlite:///{tmp_path}/mlflow.db", 6
    args = ["--name", "kd", "--num-samples", str(n), "--max-concurrent", "2", *cli_sets(grace=1)]
    snapshots: list[dict] = []
    for what in ("trials created", "right after an ASHA stop", "between checkpoints"):
        rec = views.record(sweep) if sweep.is_dir() else {}
        seen_done = {k for k, t in rec.items() if t["outcome"]}
        seen_reports = sum(len(t["reports"]) for t in rec.values())
        proc = start_cli(tmp_path, "k", *(["--name", "kd", "--resume"] if rec else args))
        try:
            wait_for(proc, lambda w=what, d=seen_done, r=seen_reports: _moment(
                w, views.record(sweep), d, r))
        finally:
            kill_group(proc, "k")
        assert proc.returncode == -signal.SIGKILL, what
        snapshots.append(views.record(sweep))
    done = run_cli(tmp_path, "k", "--name", "kd", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    after = views.check_finished(sweep, uri, trials=n, summary=done.stdout)
    for before in snapshots:
        views.history_kept(before, after)
        for key, t in before.items():  # a trial created before a kill ran on, not replaced
            assert after[key]["params"] == t["params"]


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_finalist_stage_ctrl_c_then_kill_then_resume_runs_only_the_missing_runs(tmp_path):
    """Ctrl-C in the finalist stage exits 130 with the finalist runs that had not finished
    interrupted; a resume killed in the finalist stage leaves the record as it was; the
    last --resume runs exactly the missing finalist runs: the search and the finished runs
    untouched, each planned run once, and every view agrees."""
    sweep, uri = tmp_path / "runs" / "fs", f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--name", "fs", "--num-samples", "2", "--max-concurrent", "2", "--finalists", "1",
            "--finalist-seeds", "3", *cli_sets(steps=100)]

    def finalist_reports() -> int:
        return sum(len(t["reports"]) for t in views.record(sweep, "finalist_").values())

    proc = start_cli(tmp_path, "f", *args)
    try:
        wait_for(proc, lambda: finalist_reports() >= 2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        end_group(proc, "f")
    assert proc.returncode == 130, out
    assert "tune-smpl tune --name fs" in out and "--resume" in out
    search = views.record(sweep)
    assert len(search) == 2 and all(t["outcome"] for t in search.values())
    views.check_interrupted(sweep, uri)
    stage = json.loads((sweep / "sweep.json").read_text())["finalists"]
    assert stage["status"] == "interrupted" and len(views.record(sweep, "finalist_")) == 3

    seen = finalist_reports()
    proc = start_cli(tmp_path, "f", "--name", "fs", "--resume")
    try:
        wait_for(proc, lambda: finalist_reports() > seen)
    finally:
        kill_group(proc, "f")
    killed = views.record(sweep, "finalist_")

    done = run_cli(tmp_path, "f", "--name", "fs", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    export = export_cli(tmp_path, "f", "fs")
    after = views.check_finished(sweep, uri, trials=2, summary=done.stdout, export=export.stdout)
    assert after == search  # the search ran once
    runs = views.record(sweep, "finalist_")
    assert sorted(runs) == sorted(killed) and len(runs) == 3
    assert all(r["outcome"] == "completed" for r in runs.values())
    views.history_kept(killed, runs)  # a run finished before the last resume is untouched
    assert len(views.study(sweep).trials) == 2
    stage = json.loads((sweep / "sweep.json").read_text())["finalists"]
    assert stage["status"] == "done" and "finalists: the 1 best trial(s) x 3 fresh" in done.stdout
