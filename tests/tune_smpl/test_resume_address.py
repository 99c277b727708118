"""The command as a user runs it with --address of another cluster (Ctrl-C and --resume:
test_reliability.py).

These run `tune-smpl` in subprocesses, each with its own Ray, so no module-wide Ray here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import cli_env, free_port, small_sets


def _env(tmp_path: Path) -> dict:
    return cli_env(tmp_path.name[-6:])


def _cmd(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tune_smpl", "tune", "--storage-path", str(tmp_path / "runs"),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--num-cpus", "2", *args]


def _rows(sweep: Path) -> dict[str, list[dict]]:
    return {d.name: json.loads((d / "trial.json").read_text())["reports"]
            for d in sorted(sweep.glob("trial_*"))}


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
        views.check_finished(tmp_path / "runs" / "addr", f"sqlite:///{tmp_path}/mlflow.db",
                             trials=2, summary=done.stdout)
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
