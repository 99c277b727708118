"""The command as a user runs it: Ctrl-C then --resume, and --address of another cluster.

These run `tune-smpl` in subprocesses, each with its own Ray, so no module-wide Ray here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tune_smpl.conftest import cli_env, free_port, small_sets


def _env(tmp_path: Path) -> dict:
    return cli_env(tmp_path.name[-6:])


def _cmd(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tune_smpl", "tune", "--storage-path", str(tmp_path / "runs"),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--num-cpus", "2", *args]


def _rows(sweep: Path) -> dict[str, list[dict]]:
    out = {}
    for d in sorted(sweep.glob("trial_*")):
        f = d / "result.json"
        out[d.name] = [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []
    return out


def _mlflow_runs(tmp_path: Path, status: str | None = None) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tune-smpl")
    filt = f"attributes.status = '{status}'" if status else ""
    return client.search_runs([exp.experiment_id], filt, max_results=1000)


def test_sigint_then_resume_continues_trials(tmp_path):
    sweep = tmp_path / "runs" / "rs"
    args = ["--name", "rs", "--num-samples", "4", "--max-concurrent", "2", "--grace-period", "5",
            *small_sets("steps=100", "eval_every=10")]
    proc = subprocess.Popen(_cmd(tmp_path, *args), env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        # Interrupt once two trials are past their third report (they have checkpoints).
        while time.monotonic() < deadline:
            rows = _rows(sweep) if sweep.exists() else {}
            if sum(len(r) >= 3 for r in rows.values()) >= 2:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "--resume" in out
    before = _rows(sweep)
    assert _mlflow_runs(tmp_path, "RUNNING") == []  # the interrupted runs ended as KILLED

    done = subprocess.run(_cmd(tmp_path, *args[:2], "--resume"), env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _rows(sweep)
    assert len(after) == 4
    assert _mlflow_runs(tmp_path, "RUNNING") == []
    children = [r for r in _mlflow_runs(tmp_path) if r.data.tags.get("run_kind") == "trial"]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(
        rows[0]["trial_id"] for rows in after.values())  # one child per trial, no duplicate
    for name, rows in after.items():
        old = before.get(name, [])
        assert rows[: len(old)] == old  # history kept
        new = [r["step"] for r in rows[len(old):]]
        assert new == sorted(set(new)), (name, new)
        if old and new:
            # Resumed from its last checkpoint, not from step 0. (Ray may replay a report
            # made after the last experiment snapshot, never the whole trial.)
            assert new[0] > 10, (name, [r["step"] for r in old], new)
            assert new[0] >= old[-1]["step"] - 10, (name, [r["step"] for r in old], new)
        if old:
            assert rows[-1]["step"] == 100 or len(rows) < 10  # finished, or stopped by ASHA


def test_sweep_on_a_separate_cluster_through_address(tmp_path):
    port = free_port()
    env = _env(tmp_path)
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", f"--temp-dir={env['TUNE_SMPL_RAY_TMP']}h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        executable=str(Path(sys.executable).with_name("ray")))
    try:
        done = subprocess.run(
            _cmd(tmp_path, "--address", f"127.0.0.1:{port}", "--name", "addr",
                 "--num-samples", "2", *small_sets()),
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Ray cluster at 127.0.0.1:{port}: 1 node" in done.stdout
        assert len(_rows(tmp_path / "runs" / "addr")) == 2
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def test_unreachable_address_fails_fast(tmp_path):
    env = dict(_env(tmp_path), TUNE_SMPL_CONNECT_TIMEOUT_S="2")
    port = free_port()
    done = subprocess.run(_cmd(tmp_path, "--address", f"127.0.0.1:{port}", "--name", "x"),
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"127.0.0.1:{port}" in done.stderr and "did not answer" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
