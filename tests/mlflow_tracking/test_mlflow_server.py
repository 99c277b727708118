"""The fake sweep through a real `mlflow server` over http, checked with MlflowClient."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from mlflow_fake_sweep import check_fake_sweep, run_fake_sweep

from mlflow_tracking import check_store

START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, uri: str, log_path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n"
                        f"{log_path.read_text()[-3000:]}")
        try:
            check_store(uri, timeout_s=1)
            return
        except ValueError:
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after {START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)


def test_fake_sweep_through_a_tracking_server(fresh_store, tmp_path, monkeypatch):
    backend = fresh_store("server")  # already migrated: the server starts sooner
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", backend,
           "--artifacts-destination", str(tmp_path / "mlartifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # Its own session, so the finally below ends the server and its uvicorn worker together.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=tmp_path, start_new_session=True)
    try:
        _wait_until_up(proc, uri, log_path)
        # A server dying mid-test should fail the test, not stall it in MLflow's retries.
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        rec = run_fake_sweep(uri, "tune-smpl", model=model)
        check_fake_sweep(uri, "tune-smpl")
        exp = rec.client.get_experiment(rec.experiment_id)
        assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's choice
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        model_uri = rec.client.get_run(rec.parent_run_id).data.tags["best_model_uri"]
        x = torch.randn(4, 3)
        assert torch.equal(mlflow.pytorch.load_model(model_uri)(x), model(x))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
