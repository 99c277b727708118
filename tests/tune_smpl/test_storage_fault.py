"""Issue 25: a storage that fails under a running sweep (in process, the module's Ray).

The record's file writes fail (ENOSPC, from the storage layer: `SweepStorage.write_text`)
from a seeded write on:
- for a few seconds, under the bound: the sweep trains on, says so once and once when the
  record has caught up, and ends finished with a complete record that every view agrees
  with;
- past the bound (TUNE_SMPL_STORAGE_RETRY_S=3): the sweep stops as interrupted, the
  command prints the storage's one line and exits 75; the storage comes back either during
  the command's last tries (the record then says interrupted) or only after the command
  (the record stays as its last write left it); `--resume` finishes with every trial once.
And a real full disk (a small tmpfs, where the machine lets root mount one) under the whole
sweep folder, the study's SQLite file included: the sweep stops at once, exit 75.
"""

from __future__ import annotations

import errno
import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import cli_env, end_group, free_port, wait_for
from tune_smpl.cli import main
from tune_smpl.sweep.stop import STOP
from tune_smpl.sweep.storage import SweepStorage

SETS = ["steps=60", "eval_every=10", "batch_size=16", "mu=2", "val_size=100", "device=cpu"]


class Fault:
    """Record writes below `sweep` fail with ENOSPC from the `start`-th on (or from the
    first for which `start(target, text)` holds), until `off()`; `window` is (first
    failure, end) in time.time()."""

    def __init__(self, sweep: Path, start):
        self.sweep, self.start = str(sweep), start
        self.count, self.failures = 0, 0
        self.on = self.ended = False
        self.window = [None, None]
        self.original = SweepStorage.write_text
        fault = self

        def write_text(storage, text, *parts):
            target = storage.path(*parts)
            if target.startswith(fault.sweep) and target.endswith(".json"):
                fault.count += 1
                due = (fault.start(target, text) if callable(fault.start)
                       else fault.count >= fault.start)
                if due and not fault.ended:
                    fault.on = True
                if fault.on:
                    fault.failures += 1
                    fault.window[0] = fault.window[0] or time.time()
                    raise OSError(errno.ENOSPC, "No space left on device", target)
            return fault.original(storage, text, *parts)

        self.write_text = write_text

    def off(self) -> None:
        self.on, self.ended = False, True
        self.window[1] = time.time()


def _tune(root: Path, name: str, *args: str, sets: list[str] = SETS) -> list[str]:
    return ["tune", "--name", name, "--storage-path", str(root / "runs"), "--tracking-uri",
            f"sqlite:///{root}/mlflow.db", "--gpus-per-trial", "0", "--sampler", "random",
            "--grace-period", "10", *args, *sum((["--set", s] for s in sets), [])]


def _off_after(fault: Fault, cond, delay: float) -> threading.Thread:
    def run():
        deadline = time.monotonic() + 300
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        fault.off()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_short_outage_leaves_a_complete_record(ray_local, tmp_path, monkeypatch, capsys):
    sweep, uri = tmp_path / "runs" / "blip", f"sqlite:///{tmp_path}/mlflow.db"
    fault = Fault(sweep, start=random.Random(25).randint(8, 14))
    monkeypatch.setattr(SweepStorage, "write_text", fault.write_text)
    _off_after(fault, lambda: fault.on, 3.0)
    rc = main(_tune(tmp_path, "blip", "--num-samples", "3", "--max-concurrent", "2"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert fault.failures >= 2 and fault.ended, fault.failures
    assert out.count("does not take writes since") == 1, out
    assert out.count("takes writes again") == 1 and "the record has caught up" in out
    rec = views.check_finished(sweep, uri, trials=3, summary=out)
    # The trials trained on while the record could not be written: reports made then.
    start, end = fault.window
    made = [r["reported_at"] for t in rec.values() for r in t["reports"]]
    assert any(start <= at <= end for at in made), (start, end, made)
    for key, t in rec.items():
        steps = [r["step"] for r in t["reports"]]
        assert steps == sorted(set(steps)), (key, steps)
        if t["outcome"] == "completed":
            assert steps == list(range(10, 61, 10)), (key, steps)
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("back", ["during the last tries", "after the command"])
def test_an_outage_past_the_bound_exits_75_and_resume_finishes(ray_local, tmp_path,
                                                               monkeypatch, capsys, back):
    sweep, uri = tmp_path / "runs" / "down", f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("TUNE_SMPL_STORAGE_RETRY_S", "3")
    # From a write early in the first trials (the sweep's first few: its meta, the first
    # trials' starts and reports), so that the bound passes while they train: trials of
    # 10 reports (a few seconds each on an idle machine: 60 steps took 2 s, and the bound
    # passed after the last), none stopped early (grace period past the last report).
    fault = Fault(sweep, start=random.Random(75).randint(4, 9))
    monkeypatch.setattr(SweepStorage, "write_text", fault.write_text)
    STOP.reset()  # an earlier test's requests are not this one's
    if back == "during the last tries":  # once the writer has asked the sweep to stop
        _off_after(fault, lambda: any(r.startswith("storage ") for r in STOP.reasons), 1.0)
    long = [*SETS, "steps=300", "eval_every=30"]
    args = _tune(tmp_path, "down", "--num-samples", "3", "--max-concurrent", "2",
                 "--grace-period", "300", sets=long)
    t0 = time.monotonic()
    rc = main(args)
    took = time.monotonic() - t0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert rc == 75, out + err
    if back == "after the command":
        fault.off()
    lines = [ln for ln in err.splitlines() if ln.startswith("tune-smpl: the record's storage")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tune-smpl: the record's storage {sweep} failed for 3 s "
                               "(OSError: [Errno 28] No space left on device: ")
    assert "); the sweep stopped as interrupted; " in lines[0]
    assert lines[0].endswith("; run the same command with --resume when it is back: "
                             f"tune-smpl tune --name down --storage-path {tmp_path / 'runs'} "
                             "--resume")
    assert "its record is saved" not in out and "finished:" not in out
    assert took < 120, took  # bounded: the bound, the stop, the last tries
    meta = json.loads((sweep / "sweep.json").read_text())
    if back == "during the last tries":  # the last tries wrote the interrupted record
        assert "lacks" not in lines[0]
        assert meta["status"] == "interrupted"
        before = views.check_interrupted(sweep, uri)
    else:  # the record as its last write left it: what a killed driver leaves
        assert re.search(r"; the record lacks the last \d+ write\(s\) \(--resume re-runs "
                         r"what it lacks\); run", lines[0]), lines[0]
        assert meta["status"] == "running"
        before = views.record(sweep)
        assert any(t["outcome"] is None for t in before.values())

    assert main(_tune(tmp_path, "down", "--resume", sets=long)) == 0
    out = capsys.readouterr().out
    after = views.check_finished(sweep, uri, trials=3, summary=out)
    views.history_kept(before, after)
    assert all(t["outcome"] for t in after.values())


def test_a_bound_that_passes_after_the_last_trial_leaves_a_finished_sweep(
        ray_local, tmp_path, monkeypatch, capsys):
    """The storage fails from the record's `finished` write on (every trial is done), past
    the bound (the stop it asks for has nothing left to stop), and takes writes again
    during the last tries: the record is complete and says finished, and so does the
    command (exit 0, its summary, no storage line), not exit 75 over a finished record."""
    sweep, uri = tmp_path / "runs" / "late", f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("TUNE_SMPL_STORAGE_RETRY_S", "2")
    fault = Fault(sweep, start=lambda target, text: target.endswith("sweep.json")
                  and '"status": "finished"' in text)
    monkeypatch.setattr(SweepStorage, "write_text", fault.write_text)
    STOP.reset()  # an earlier test's requests are not this one's
    _off_after(fault, lambda: any(r.startswith("storage ") for r in STOP.reasons), 0.5)
    rc = main(_tune(tmp_path, "late", "--num-samples", "2", "--max-concurrent", "2"))
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert fault.failures >= 2 and fault.ended, fault.failures
    assert any(r.startswith("storage ") for r in STOP.reasons), STOP.reasons
    assert rc == 0, out + err
    assert "the record's storage" not in err, err
    assert out.count("does not take writes since") == 1, out
    assert out.count("takes writes again") == 1 and "the record has caught up" in out, out
    views.check_finished(sweep, uri, trials=2, summary=out)
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "finished"


def _failing_listing() -> None:
    """What Ray's `fit` raises when the storage is away as it lists the experiment's
    files at its end (ExperimentAnalysis; chaos rounds storage_down 38, 56 and 63): a real
    pyarrow S3 listing against a port nothing listens on."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{free_port()}", scheme="http",
                           access_key="k", secret_key="s", region="us-east-1",
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    fs.get_file_info(pafs.FileSelector("sweeps/gone/"))


def test_ray_failing_on_the_storage_at_the_end_of_fit_exits_75_and_resume_finishes(
        ray_local, tmp_path, monkeypatch, capsys):
    """Ray's `fit` runs every trial, then raises the storage's OSError out of its own
    listing: no traceback, the storage's line and exit 75 (the sweep stops as
    interrupted, its trials all recorded); `--resume` ends it finished. Any other OSError
    out of `fit` is not the storage's and keeps its traceback."""
    from ray import tune

    sweep, uri = tmp_path / "runs" / "rayfs", f"sqlite:///{tmp_path}/mlflow.db"
    real_fit = tune.Tuner.fit

    def fit(self):
        real_fit(self)
        _failing_listing()

    monkeypatch.setattr(tune.Tuner, "fit", fit)
    STOP.reset()
    rc = main(_tune(tmp_path, "rayfs", "--num-samples", "2", "--max-concurrent", "2"))
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert rc == 75, out + err
    assert "Traceback" not in out + err, out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("tune-smpl: the record's storage")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tune-smpl: the record's storage {sweep} failed (Ray's "
                               f"experiment files: OSError: "), lines[0]
    assert "the sweep stopped as interrupted; run the same command with --resume" in lines[0]
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "interrupted"
    before = views.record(sweep)
    assert len(before) == 2 and all(t["outcome"] for t in before.values()), before
    assert "Ray's fit failed on the storage" in (sweep / "ray-driver.log").read_text()

    monkeypatch.setattr(tune.Tuner, "fit", real_fit)
    assert main(_tune(tmp_path, "rayfs", "--resume")) == 0
    after = views.check_finished(sweep, uri, trials=2, summary=capsys.readouterr().out)
    views.history_kept(before, after)

    def not_storage(self):
        raise OSError("not the storage")

    monkeypatch.setattr(tune.Tuner, "fit", not_storage)
    with pytest.raises(OSError, match="not the storage"):
        main(_tune(tmp_path, "other", "--num-samples", "1"))


@pytest.fixture
def small_disk(tmp_path):
    """A 60 MB tmpfs of its own (root, with the right to mount; else the test skips)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_local_disk_that_fills_stops_the_sweep_and_resume_finishes(small_disk, tmp_path):
    """A real full disk under the whole sweep folder: the record's writes, Ray's checkpoint
    uploads and the study's SQLite file (which lives there) all fail with ENOSPC. The
    study cannot go on, so the sweep stops at once as interrupted (exit 75, the line names
    the study); the disk is freed during the last tries, so the record says interrupted;
    `--resume` rebuilds the study from the record and finishes."""
    runs, uri = small_disk / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    sweep = runs / "full"
    env = {**cli_env("disk"), "TUNE_SMPL_STORAGE_RETRY_S": "8"}
    sets = sum((["--set", s] for s in ("steps=120", "eval_every=10", "batch_size=16", "mu=2",
                                       "val_size=100")), [])
    cmd = [sys.executable, "-m", "tune_smpl", "tune", "--storage-path", str(runs),
           "--tracking-uri", uri, "--num-cpus", "2", "--name", "full", "--num-samples", "3",
           "--max-concurrent", "2", "--sampler", "random", "--grace-period", "20", *sets]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(proc, lambda: views.report_count(sweep) >= 4)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"],
                       capture_output=True)  # stops at "No space left on device"
        time.sleep(4.0)
        filler.unlink()
        out, err = proc.communicate(timeout=300)
    finally:
        end_group(proc, "disk")
    assert proc.returncode == 75, out + err
    said = [ln for ln in err.splitlines() if ln.startswith("tune-smpl: the record's storage")]
    assert said == [f"tune-smpl: the record's storage {sweep} failed (its study "
                    f"{sweep}/optuna.db: OperationalError: database or disk is full); the "
                    f"sweep stopped as interrupted; run the same command with --resume when "
                    f"it is back: tune-smpl tune --name full --storage-path {runs} --resume"], err
    assert "Traceback" not in out + err
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "interrupted"
    before = views.record(sweep)
    assert all(t["outcome"] or t["interrupted"] for t in before.values()), before

    done = subprocess.run(cmd[:cmd.index("--name") + 2] + ["--resume"], cwd=tmp_path,
                          env=cli_env("disk2"), capture_output=True, text=True, timeout=400)
    shutil.rmtree(cli_env("disk2")["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    after = views.check_finished(sweep, uri, trials=3, summary=done.stdout)
    views.history_kept(before, after)


pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
