"""`tune_smpl.tune` from a Python process of its own, as a notebook's kernel runs it.

- Two `tune()` calls in one process: the Ray the first started is shut down when it
  returns, and the second starts its own.
- An interrupt (SIGINT to the process alone, as Jupyter's "interrupt the kernel" sends it)
  ends the sweep as Ctrl-C ends the command: `tune` returns the interrupted Sweep, every
  view says interrupted, and `open_sweep(...).resume()` finishes it. While it runs,
  `open_sweep` reads it as it stands.
- A sweep in an S3 bucket (moto on 127.0.0.1), read back with `open_sweep` from another
  working directory, compared with the bucket's files read here through pyarrow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

import tune_smpl
from tests.tune_smpl import views
from tests.tune_smpl.conftest import cli_env, default_sigint, end_group, wait_for
from tests.tune_smpl.test_remote_storage import CREDS, s3  # noqa: F401 - the fixture

SMALL = {"steps": 40, "eval_every": 10, "batch_size": 16, "mu": 2, "val_size": 100}


def _script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text("import json, sys\nimport tune_smpl\n" + textwrap.dedent(body))
    return [sys.executable, str(path)]


def _lines(out: str, tag: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(tag + " ")]


@pytest.mark.slow
def test_two_sweeps_in_one_process(tmp_path):
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    cmd = _script(tmp_path, "twice", f"""
        import ray
        for name in ("first", "second"):
            s = tune_smpl.tune(name=name, dataset="moons", set={SMALL!r}, num_samples=2,
                               num_cpus=2, grace_period=1, storage_path={str(runs)!r},
                               tracking_uri={uri!r})
            print("SWEEP", s.name, s.status, ray.is_initialized(), flush=True)
    """)
    done = subprocess.run(cmd, env=cli_env("two"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=400)
    shutil.rmtree(cli_env("two")["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _lines(done.stdout, "SWEEP") == ["first finished False", "second finished False"]
    for name in ("first", "second"):
        views.check_finished(runs / name, uri, trials=2)


@pytest.mark.slow
def test_an_interrupt_ends_the_sweep_and_resume_finishes_it(tmp_path):
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    sweep_dir = runs / "nb"
    # digits trials of ten reports (conftest.cli_sets): long enough to be cut mid-way
    settings = dict(set={**SMALL, "steps": 200, "eval_every": 20}, num_samples=3,
                    max_concurrent=2, num_cpus=2, grace_period=10)
    cmd = _script(tmp_path, "interrupted", f"""
        s = tune_smpl.tune(name="nb", storage_path={str(runs)!r}, tracking_uri={uri!r},
                           **{settings!r})
        print("STATUS", s.status, flush=True)
    """)
    proc = subprocess.Popen(cmd, env=cli_env("nb"), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=default_sigint)
    try:
        wait_for(proc, lambda: views.report_count(sweep_dir) >= 2)
        running = tune_smpl.open_sweep("nb", runs)  # read as it stands, while it runs
        # Each property reads the record anew and the trials go on reporting, so each read
        # holds at least what the one before it held, and no more than the record after it.
        frame = running.trials
        rows = running.reports.groupby("trial").size()
        assert running.status == "running"
        now = views.record(sweep_dir)
        assert set(frame["key"]) <= set(now)
        for row in frame.itertuples():
            assert row.reports <= rows.get(row.key, 0) <= len(now[row.key]["reports"])
        assert frame["reports"].sum() >= 2 and set(rows.index) <= set(now)
        os.kill(proc.pid, signal.SIGINT)  # the kernel's interrupt: the driver alone
        out, _ = proc.communicate(timeout=240)
    finally:
        end_group(proc, "nb")
    assert proc.returncode == 0, out  # tune returned: the interrupt was the sweep's
    assert _lines(out, "STATUS") == ["interrupted"], out
    assert "Traceback" not in out and "--resume" in out, out
    before = views.check_interrupted(sweep_dir, uri)
    assert tune_smpl.open_sweep("nb", runs).status == "interrupted"

    cmd = _script(tmp_path, "resumed", f"""
        s = tune_smpl.open_sweep("nb", {str(runs)!r}).resume(num_cpus=2)
        print("STATUS", s.status, flush=True)
    """)
    done = subprocess.run(cmd, env=cli_env("nb2"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=400)
    shutil.rmtree(cli_env("nb2")["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _lines(done.stdout, "STATUS") == ["finished"]
    after = views.check_finished(sweep_dir, uri, trials=3, summary=done.stdout)
    views.history_kept(before, after)
    frame = tune_smpl.open_sweep("nb", runs).trials.set_index("key")
    assert {k: frame.loc[k, "resumes"] for k in after} == {
        k: t["resumes"] for k, t in after.items()}
    assert set(frame.index[frame["outcome"].isna()]) == set()


@pytest.mark.slow
def test_a_sweep_in_a_bucket(s3, tmp_path, monkeypatch):  # noqa: F811 - the fixture
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**cli_env("b3"), **CREDS}
    cmd = _script(tmp_path, "bucket", f"""
        s = tune_smpl.tune(name="b3", dataset="moons", set={SMALL!r}, num_samples=2,
                           num_cpus=2, grace_period=1, storage_path={s3!r},
                           tracking_uri={uri!r})
        print("STATUS", s.status, s.storage == {s3!r}, flush=True)
    """)
    done = subprocess.run(cmd, env=env, cwd=first, capture_output=True, text=True,
                          timeout=400)
    shutil.rmtree(env["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _lines(done.stdout, "STATUS") == ["finished True"]

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(second)  # another working directory: only the bucket is read
    sweep = tune_smpl.open_sweep("b3", s3)
    assert sweep.status == "finished" and sweep.storage == s3
    fs, base = pafs.FileSystem.from_uri(s3)
    raw = {}
    for info in fs.get_file_info(pafs.FileSelector(f"{base}/b3", recursive=True)):
        if info.path.endswith("/trial.json") and "/trial_" in info.path:
            with fs.open_input_stream(info.path) as fh:
                t = json.loads(fh.read())
            raw[t["key"]] = t
    frame = sweep.trials.set_index("key")
    assert sorted(frame.index) == sorted(raw) == ["0000", "0001"]
    for key, t in raw.items():
        assert frame.loc[key, "outcome"] == t["outcome"]
        assert frame.loc[key, "reports"] == len(t["reports"])
        assert frame.loc[key, "best_value"] == max(r["val_accuracy"] for r in t["reports"])
    trials, reports = sweep.to_parquet(second / "b3.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(trials), sweep.trials)
    assert len(pd.read_parquet(reports)) == sum(len(t["reports"]) for t in raw.values())
    assert sweep.best.key == views.best_of(raw)[0]
    assert sweep.mlflow_run_id == views.mlflow_runs(uri, "b3")[0].info.run_id
